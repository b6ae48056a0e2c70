package resync

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/op"
)

// buildDivergentTrees makes two trees that differ in every way a resync
// must repair, and returns the differences verify saw before.
func buildDivergentTrees(t *testing.T) (src, tgt string) {
	src, tgt = t.TempDir(), t.TempDir()
	old := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, root := range []string{src, tgt} {
		write(t, root, "same.txt", []byte("identical"))
		write(t, root, "dir/same2", pattern(3*DefaultBlockSize/2, 1))
		write(t, root, "meta/mode", []byte("m"))
		write(t, root, "meta/owner", []byte("o"))
		write(t, root, "meta/times", []byte("t"))
		write(t, root, "meta/xattr", []byte("x"))
		write(t, root, "kind/file-then-dir", []byte("f"))
		mkdir(t, root, "kind/dir-then-file", 0o755)
		write(t, root, "hard/a", []byte("linked"))
		write(t, root, "hard/b", []byte("linked"))
		write(t, root, "unhard/a", []byte("was linked"))
		setTimes(t, root, "same.txt", old)
		setTimes(t, root, "dir/same2", old)
	}
	// Contents: one block of a big file, a shorter and a longer file.
	big := pattern(5*DefaultBlockSize+123, 2)
	write(t, src, "big.bin", big)
	changed := bytes.Clone(big)
	copy(changed[3*DefaultBlockSize+10:], []byte("CHANGED"))
	write(t, tgt, "big.bin", changed)
	write(t, src, "shorter", pattern(DefaultBlockSize+7, 3))
	write(t, tgt, "shorter", pattern(3*DefaultBlockSize, 3))
	write(t, src, "longer", pattern(2*DefaultBlockSize+9, 4))
	write(t, tgt, "longer", pattern(DefaultBlockSize, 4))
	write(t, src, "empty", nil)
	write(t, tgt, "empty", []byte("not empty"))
	// A sparse file with a hole in the middle and at the end.
	f, err := os.Create(filepath.Join(src, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("middle"), 8*DefaultBlockSize)
	f.Truncate(16 * DefaultBlockSize)
	f.Close()
	// Missing and extra: files, trees, symlinks, fifos.
	write(t, src, "new/deep/tree/file", []byte("new"))
	mkdir(t, src, "new/empty", 0o700)
	write(t, tgt, "extra/deep/file", []byte("extra"))
	write(t, tgt, "extra-file", []byte("extra"))
	symlink(t, src, "same.txt", "link")
	symlink(t, src, "nowhere", "link-changed")
	symlink(t, tgt, "elsewhere", "link-changed")
	symlink(t, tgt, "x", "extra-link")
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil && !isPermission(err) {
		t.Fatal(err)
	}
	// Kinds swapped.
	os.Remove(filepath.Join(src, "kind/file-then-dir"))
	write(t, src, "kind/file-then-dir/inside", []byte("now a directory"))
	os.Remove(filepath.Join(src, "kind/dir-then-file"))
	write(t, src, "kind/dir-then-file", []byte("now a file"))
	write(t, tgt, "kind/dir-then-file/child", []byte("below"))
	// Metadata.
	os.Chmod(filepath.Join(src, "meta/mode"), 0o4750)
	if err := os.Lchown(filepath.Join(src, "meta/owner"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	os.Lchown(filepath.Join(src, "link"), 42, 43)
	setTimes(t, src, "meta/times", old)
	unix.Setxattr(filepath.Join(src, "meta/xattr"), "user.new", []byte("value"), 0)
	unix.Setxattr(filepath.Join(src, "meta/xattr"), "user.changed", []byte("source"), 0)
	unix.Setxattr(filepath.Join(tgt, "meta/xattr"), "user.changed", []byte("target"), 0)
	unix.Setxattr(filepath.Join(tgt, "meta/xattr"), "user.extra", []byte("gone"), 0)
	unix.Setxattr(filepath.Join(src, "dir"), "user.dir", []byte("d"), 0)
	os.Chmod(filepath.Join(src, "dir"), 0o750)
	os.Chmod(src, 0o711)
	// Hard links: linked on the source only, on the target only.
	os.Remove(filepath.Join(src, "hard/b"))
	link(t, src, "hard/a", "hard/b")
	link(t, src, "hard/a", "hard/c")
	link(t, tgt, "unhard/a", "unhard/b")
	write(t, src, "unhard/b", []byte("was linked"))
	// A read-only directory with a new file inside.
	write(t, src, "ro/file", []byte("inside a read-only directory"))
	os.Chmod(filepath.Join(src, "ro"), 0o555)
	// Directory times last, as a real tree has them.
	setTimes(t, src, "new/deep", old)
	setTimes(t, src, "kind", old)
	return src, tgt
}

func TestFullResyncRepairsEveryDifference(t *testing.T) {
	src, tgt := buildDivergentTrees(t)
	before := diffRoots(t, src, tgt)
	kinds := map[DiffKind]bool{}
	for _, d := range before {
		kinds[d.Kind] = true
	}
	for _, k := range []DiffKind{DiffMissing, DiffExtra, DiffKindOf, DiffContent, DiffSize, DiffMode, DiffOwner,
		DiffMtime, DiffXattrs, DiffLinkTarget, DiffHardlinks} {
		if !kinds[k] {
			t.Errorf("the trees do not differ by %s: %v", k, before)
		}
	}
	for _, n := range []int{1, 3} {
		if n == 3 {
			// Once more from scratch over several connections.
			src, tgt = buildDivergentTrees(t)
		}
		r, a := fullResync(t, src, tgt, n, Options{})
		r.check(t)
		assertSame(t, src, tgt)
		// Only the changed block of big.bin travelled, not the file.
		if r.src.DataBytes > 12*DefaultBlockSize {
			t.Errorf("%d connections: %d data bytes sent", n, r.src.DataBytes)
		}
		if r.tgt.DataBytes != r.src.DataBytes || a.writes != r.src.DataBytes {
			t.Errorf("target saw %d data bytes in its result, applied %d; source sent %d", r.tgt.DataBytes, a.writes, r.src.DataBytes)
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(tgt, "sparse"), &st); err != nil {
			t.Fatal(err)
		}
		if st.Blocks*512 >= 4*DefaultBlockSize {
			t.Errorf("sparse file takes %d bytes on the target", st.Blocks*512)
		}
		// A second resync finds nothing to do.
		r2, a2 := fullResync(t, src, tgt, n, Options{})
		r2.check(t)
		if r2.src.DataBytes != 0 || r2.src.Changed != 0 || len(a2.counts) != 0 {
			t.Errorf("second resync: %d data bytes, %d changed, ops %v", r2.src.DataBytes, r2.src.Changed, a2.counts)
		}
	}
}

func TestIdenticalTreesSendOnlyListings(t *testing.T) {
	src, tgt := t.TempDir(), t.TempDir()
	for i := range 200 {
		data := pattern(1000+i*97, byte(i))
		write(t, src, filepath.Join("d", string(rune('a'+i%7)), "f"+string(rune('a'+i%26))+string(rune('a'+i/26))), data)
	}
	write(t, src, "big", pattern(7*DefaultBlockSize+5, 9))
	r0, _ := fullResync(t, src, tgt, 2, Options{})
	r0.check(t)
	assertSame(t, src, tgt)
	r, a := fullResync(t, src, tgt, 2, Options{})
	r.check(t)
	if r.src.DataBytes != 0 || len(a.counts) != 0 {
		t.Errorf("identical trees: %d data bytes, ops %v", r.src.DataBytes, a.counts)
	}
	// What crossed: the target's listing with hashes, and a few frames.
	total := r.src.SentBytes + r.src.ReceivedByte
	if total > 64<<10 {
		t.Errorf("identical trees of %d files: %d bytes crossed", 201, total)
	}
	t.Logf("identical trees (%d bytes of files): %d bytes sent, %d received", r.src.HashedBytes, r.src.SentBytes, r.src.ReceivedByte)
}

func TestChangedBlocksOnlyTravel(t *testing.T) {
	src, tgt := t.TempDir(), t.TempDir()
	const files, blocks = 8, 25
	bs := int64(64 << 10)
	var total int64
	for i := range files {
		data := pattern(int(blocks*bs), byte(i))
		write(t, src, filepath.Join("f", string(rune('a'+i))), data)
		write(t, tgt, filepath.Join("f", string(rune('a'+i))), data)
		total += int64(len(data))
	}
	// Change 1 % of the blocks (2 of 200), a few bytes each.
	var changed int64
	for _, k := range []int{37, 150} {
		f, b := k/blocks, k%blocks
		p := filepath.Join(tgt, "f", string(rune('a'+f)))
		fh, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fh.WriteAt([]byte("xx"), int64(b)*bs+100)
		fh.Close()
		changed += bs
		setTimes(t, tgt, filepath.Join("f", string(rune('a'+f))), time.Now())
	}
	r, _ := fullResync(t, src, tgt, 2, Options{BlockSize: bs})
	r.check(t)
	assertSame(t, src, tgt)
	if r.src.DataBytes != changed {
		t.Errorf("sent %d data bytes for %d changed bytes", r.src.DataBytes, changed)
	}
	ratio := float64(r.src.SentBytes) / float64(changed)
	t.Logf("%d of %d bytes in changed blocks; %d data bytes sent, %d on the wire (%.3f× the changed bytes)", changed, total, r.src.DataBytes, r.src.SentBytes, ratio)
	if ratio > 1.2 {
		t.Errorf("wire bytes %.2f× the changed bytes", ratio)
	}
}

func TestVerifyAndEstimateSessions(t *testing.T) {
	src, tgt := buildDivergentTrees(t)
	local := diffRoots(t, src, tgt)
	r := runSession(context.Background(), t, 1, SourceConfig{Root: src},
		TargetConfig{Root: tgt, Request: Request{Kind: RequestVerify, Compare: DefaultCompareOptions}})
	r.check(t)
	if len(r.tgt.Differences) != len(local) {
		t.Errorf("verify over the wire: %d differences, locally %d", len(r.tgt.Differences), len(local))
	}
	for i := range min(len(local), len(r.tgt.Differences)) {
		if local[i].String() != r.tgt.Differences[i].String() {
			t.Errorf("difference %d: %s over the wire, %s locally", i, r.tgt.Differences[i], local[i])
		}
	}
	est := runSession(context.Background(), t, 1, SourceConfig{Root: src},
		TargetConfig{Root: tgt, Request: Request{Kind: RequestEstimate, Rate: 1 << 20}})
	est.check(t)
	e := est.tgt.Estimate
	if e == nil {
		t.Fatal("no estimate")
	}
	// The dry run must predict what the real resync sends.
	snap := diffRoots(t, src, tgt)
	if len(snap) != len(local) {
		t.Fatalf("the estimate changed the target: %d differences, %d before", len(snap), len(local))
	}
	real, _ := fullResync(t, src, tgt, 1, Options{})
	real.check(t)
	if e.Bytes != real.src.DataBytes || e.Files != real.src.Changed || e.Deletes != real.src.Deleted {
		t.Errorf("estimate %+v; the resync sent %d bytes, changed %d objects, deleted %d", *e, real.src.DataBytes, real.src.Changed, real.src.Deleted)
	}
	if want := time.Duration(float64(e.Bytes) / float64(1<<20) * float64(time.Second)); e.Duration != want {
		t.Errorf("estimated duration %v, want %v", e.Duration, want)
	}
}

func TestTargetRefusesOpsOutsideItsTree(t *testing.T) {
	tgt := t.TempDir()
	outside := t.TempDir()
	a := newApplier(t, tgt)
	tg := &target{cfg: TargetConfig{Root: tgt, Apply: a, Request: Request{Kind: RequestFull}}}
	for _, o := range []op.Op{
		{Kind: op.Write, Path: "../" + filepath.Base(outside) + "/x", Data: []byte("x")},
		{Kind: op.Create, Path: "/etc/passwd"},
		{Kind: op.Symlink, Path: "l", Target: outside},
		{Kind: op.Write, Path: "l/escape", Data: []byte("x")},
	} {
		_ = tg.applyOne(&o, 0, false)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("an op reached outside the tree: %v", entries)
	}
}
