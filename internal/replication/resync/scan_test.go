package resync

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/core/journal"
)

func TestScanListsEveryKind(t *testing.T) {
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "a/b/file"), []byte("hello"), 0o640)
	mustWrite(t, filepath.Join(root, "a/big"), make([]byte, 3*DefaultBlockSize+5), 0o600)
	mustWrite(t, filepath.Join(root, "skip.tmp"), []byte("x"), 0o600)
	if err := os.Symlink("b/file", filepath.Join(root, "a/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(root, "a/b/file"), filepath.Join(root, "hard")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(root, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(root, "a/b/file"), "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	tr, err := Scan(context.Background(), root, ScanOptions{Hash: true, Excludes: []string{"*.tmp"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Entry{}
	var order []string
	for _, e := range tr.Entries {
		got[e.Path] = e
		order = append(order, e.Path)
	}
	want := []string{"", "a", "a/b", "a/b/file", "a/big", "a/link", "fifo", "hard"}
	if len(order) != len(want) {
		t.Fatalf("paths %q, want %q", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("paths %q, want %q", order, want)
		}
	}
	f := got["a/b/file"]
	if f.Kind != journal.KindFile || f.Size != 5 || f.Perm() != 0o640 || !f.Hashed || f.Nlink != 2 {
		t.Errorf("file entry %+v", f)
	}
	if len(f.Xattrs) != 1 || f.Xattrs[0].Name != "user.k" || string(f.Xattrs[0].Value) != "v" {
		t.Errorf("xattrs %+v", f.Xattrs)
	}
	if h := got["hard"]; h.Ino != f.Ino || h.Hash != f.Hash {
		t.Errorf("hard link %+v vs %+v", h, f)
	}
	if l := got["a/link"]; l.Kind != journal.KindSymlink || l.Target != "b/file" {
		t.Errorf("symlink %+v", l)
	}
	if got["fifo"].Kind != journal.KindOther {
		t.Errorf("fifo %+v", got["fifo"])
	}
	big := got["a/big"]
	w, _, _, err := HashReader(zeroReader{}, big.Size, DefaultBlockSize)
	if err != nil || !big.Hashed || big.Hash != w {
		t.Errorf("big file hash %v (hashed %v), want %v (%v)", big.Hash, big.Hashed, w, err)
	}
	if tr.Files != 3 || tr.Bytes != 5+5+big.Size {
		t.Errorf("totals %d files %d bytes", tr.Files, tr.Bytes)
	}
	// A prefix that is a file, one that is missing, one that is excluded.
	for prefix, n := range map[string]int{"a/b/file": 1, "nope": 0, "skip.tmp": 0, "a/b": 2} {
		tr, err := Scan(context.Background(), root, ScanOptions{Hash: true, Prefix: prefix, Excludes: []string{"*.tmp"}})
		if err != nil || len(tr.Entries) != n {
			t.Errorf("prefix %q: %d entries (%v), want %d", prefix, len(tr.Entries), err, n)
		}
	}
}

type zeroReader struct{}

func (zeroReader) ReadAt(b []byte, _ int64) (int, error) {
	clear(b)
	return len(b), nil
}

func mustWrite(t testing.TB, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}
