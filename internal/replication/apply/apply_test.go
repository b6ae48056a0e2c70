package apply

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/op"
)

func openTree(t *testing.T, dirs ...string) *Tree {
	t.Helper()
	if len(dirs) == 0 {
		dirs = []string{t.TempDir()}
	}
	tr, err := Open(dirs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func mustApply(t *testing.T, tr *Tree, ops ...op.Op) {
	t.Helper()
	for _, o := range ops {
		if err := tr.Apply(o); err != nil {
			t.Fatalf("apply %s %q: %v", o.Kind, o.Path, err)
		}
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func lstat(t *testing.T, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func TestEveryKind(t *testing.T) {
	root := t.TempDir()
	tr := openTree(t, root)
	at := func(p string) string { return filepath.Join(root, p) }

	mustApply(t, tr,
		op.Op{Kind: op.Mkdir, Path: "d", Mode: 0o750},
		op.Op{Kind: op.Create, Path: "d/f", Mode: 0o640},
		op.Op{Kind: op.Write, Path: "d/f", Data: []byte("hello world")},
		op.Op{Kind: op.Write, Path: "d/f", Off: 6, Data: []byte("there")},
	)
	if got := readFile(t, at("d/f")); got != "hello there" {
		t.Fatalf("content %q", got)
	}
	if st := lstat(t, at("d")); st.Mode&0o7777 != 0o750 || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Fatalf("mkdir mode %#o", st.Mode)
	}
	// The process umask (022 usually) must not reach the replicated mode.
	old := unix.Umask(0o077)
	mustApply(t, tr, op.Op{Kind: op.Create, Path: "wide", Mode: 0o666}, op.Op{Kind: op.Mkdir, Path: "wided", Mode: 0o777})
	unix.Umask(old)
	if st := lstat(t, at("wide")); st.Mode&0o7777 != 0o666 {
		t.Fatalf("create mode under umask: %#o", st.Mode&0o7777)
	}
	if st := lstat(t, at("wided")); st.Mode&0o7777 != 0o777 {
		t.Fatalf("mkdir mode under umask: %#o", st.Mode&0o7777)
	}

	mustApply(t, tr, op.Op{Kind: op.Truncate, Path: "d/f", Size: 5})
	if got := readFile(t, at("d/f")); got != "hello" {
		t.Fatalf("after truncate %q", got)
	}
	mustApply(t, tr, op.Op{Kind: op.Fallocate, Path: "d/f", Off: 0, Size: 1 << 16})
	if st := lstat(t, at("d/f")); st.Size != 1<<16 {
		t.Fatalf("fallocate size %d", st.Size)
	}
	mustApply(t, tr, op.Op{Kind: op.Fallocate, Path: "d/f", Off: 1, Size: 2, Flags: unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE})
	if got := readFile(t, at("d/f")); !strings.HasPrefix(got, "h\x00\x00lo") || len(got) != 1<<16 {
		t.Fatalf("after punch hole %q... (%d bytes)", got[:8], len(got))
	}

	mustApply(t, tr,
		op.Op{Kind: op.Mknod, Path: "fifo", Mode: unix.S_IFIFO | 0o600},
		op.Op{Kind: op.Mknod, Path: "null", Mode: unix.S_IFCHR | 0o666, Dev: unix.Mkdev(1, 3)},
		op.Op{Kind: op.Symlink, Path: "d/sl", Target: "../nowhere"},
		op.Op{Kind: op.Link, Path: "hard", Target: "d/f"},
	)
	if st := lstat(t, at("fifo")); st.Mode&unix.S_IFMT != unix.S_IFIFO || st.Mode&0o7777 != 0o600 {
		t.Fatalf("fifo mode %#o", st.Mode)
	}
	if st := lstat(t, at("null")); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		t.Fatalf("device %#o %d", st.Mode, st.Rdev)
	}
	if l, err := os.Readlink(at("d/sl")); err != nil || l != "../nowhere" {
		t.Fatalf("symlink %q %v", l, err)
	}
	if a, b := lstat(t, at("hard")), lstat(t, at("d/f")); a.Ino != b.Ino || a.Nlink != 2 {
		t.Fatalf("link: inodes %d %d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}

	mustApply(t, tr,
		op.Op{Kind: op.Chmod, Path: "d/f", Mode: 0o604},
		op.Op{Kind: op.Chown, Path: "d/f", UID: 1234, GID: op.NoID},
		op.Op{Kind: op.Chown, Path: "d/sl", UID: 99, GID: 98},
		op.Op{Kind: op.Utimes, Path: "d/f", Atime: 1_000_000_000_123, Mtime: -1_500_000_000},
		op.Op{Kind: op.Utimes, Path: "d/f", Atime: op.OmitTime, Mtime: 2_000_000_000_000_000_007},
		op.Op{Kind: op.Utimes, Path: "d/sl", Atime: 5e9, Mtime: 6e9},
	)
	st := lstat(t, at("d/f"))
	if st.Mode&0o7777 != 0o604 || st.Uid != 1234 || st.Gid != 0 {
		t.Fatalf("chmod/chown: mode %#o uid %d gid %d", st.Mode&0o7777, st.Uid, st.Gid)
	}
	if st.Atim.Sec != 1000 || st.Atim.Nsec != 123 {
		t.Fatalf("atime %v (omitted the second time)", st.Atim)
	}
	if st.Mtim.Sec != 2_000_000_000 || st.Mtim.Nsec != 7 {
		t.Fatalf("mtime %v", st.Mtim)
	}
	if sl := lstat(t, at("d/sl")); sl.Uid != 99 || sl.Gid != 98 || sl.Mtim.Sec != 6 {
		t.Fatalf("symlink's own owner/time: %d:%d %v", sl.Uid, sl.Gid, sl.Mtim)
	}
	// A negative time before the epoch, to the nanosecond.
	mustApply(t, tr, op.Op{Kind: op.Utimes, Path: "hard", Atime: op.OmitTime, Mtime: -1_500_000_000})
	if m := lstat(t, at("hard")).Mtim; m.Sec != -2 || m.Nsec != 500_000_000 {
		t.Fatalf("pre-epoch mtime %v", m)
	}

	mustApply(t, tr,
		op.Op{Kind: op.Setxattr, Path: "d/f", Name: "user.halo", Data: []byte("v1")},
		op.Op{Kind: op.Setxattr, Path: "d/f", Name: "user.halo", Data: []byte("v2"), Flags: unix.XATTR_CREATE},
		op.Op{Kind: op.Setxattr, Path: ".", Name: "user.root", Data: []byte("r")},
		op.Op{Kind: op.Setxattr, Path: "d", Name: "user.gone", Data: []byte("x")},
		op.Op{Kind: op.Removexattr, Path: "d", Name: "user.gone"},
	)
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(at("d/f"), "user.halo", buf); err != nil || string(buf[:n]) != "v2" {
		t.Fatalf("xattr %q %v", buf[:n], err)
	}
	if n, err := unix.Getxattr(root, "user.root", buf); err != nil || string(buf[:n]) != "r" {
		t.Fatalf("root xattr %q %v", buf[:n], err)
	}
	if _, err := unix.Getxattr(at("d"), "user.gone", buf); err != unix.ENODATA {
		t.Fatalf("removed xattr: %v", err)
	}

	mustApply(t, tr,
		op.Op{Kind: op.Fsync, Path: "d/f"},
		op.Op{Kind: op.Fsync, Path: "d/f", Flags: op.DataOnly},
		op.Op{Kind: op.Fsync, Path: "d"},
		op.Op{Kind: op.Fsync, Path: "."},
		op.Op{Kind: op.Fsync, Path: "d/sl"},
		op.Op{Kind: op.Chmod, Path: ".", Mode: 0o711},
		op.Op{Kind: op.Chown, Path: ".", UID: 7, GID: 8},
	)
	if st := lstat(t, root); st.Mode&0o7777 != 0o711 || st.Uid != 7 || st.Gid != 8 {
		t.Fatalf("root metadata %#o %d:%d", st.Mode&0o7777, st.Uid, st.Gid)
	}

	mustApply(t, tr,
		op.Op{Kind: op.Rename, Path: "d/f", Target: "moved"},
		op.Op{Kind: op.Write, Path: "moved", Off: 0, Data: []byte("H")},
		op.Op{Kind: op.Unlink, Path: "hard"},
		op.Op{Kind: op.Unlink, Path: "d/sl"},
		op.Op{Kind: op.Rmdir, Path: "wided"},
	)
	if got := readFile(t, at("moved")); got[:5] != "H\x00\x00lo" {
		t.Fatalf("renamed file content %q", got[:5])
	}
	for _, gone := range []string{"d/f", "hard", "d/sl", "wided"} {
		if _, err := os.Lstat(at(gone)); !os.IsNotExist(err) {
			t.Fatalf("%s still there: %v", gone, err)
		}
	}
}

func TestRenameFlags(t *testing.T) {
	root := t.TempDir()
	tr := openTree(t, root)
	mustApply(t, tr,
		op.Op{Kind: op.Create, Path: "a", Mode: 0o644},
		op.Op{Kind: op.Write, Path: "a", Data: []byte("A")},
		op.Op{Kind: op.Create, Path: "b", Mode: 0o644},
		op.Op{Kind: op.Write, Path: "b", Data: []byte("B")},
		op.Op{Kind: op.Rename, Path: "a", Target: "b", Flags: unix.RENAME_EXCHANGE},
		// The cached descriptors followed the names, not the inodes.
		op.Op{Kind: op.Write, Path: "a", Off: 1, Data: []byte("a")},
		op.Op{Kind: op.Write, Path: "b", Off: 1, Data: []byte("b")},
	)
	if a, b := readFile(t, filepath.Join(root, "a")), readFile(t, filepath.Join(root, "b")); a != "Ba" || b != "Ab" {
		t.Fatalf("after exchange: a=%q b=%q", a, b)
	}
	err := tr.Apply(op.Op{Kind: op.Rename, Path: "a", Target: "b", Flags: unix.RENAME_NOREPLACE})
	if !errors.Is(err, unix.EEXIST) {
		t.Fatalf("rename noreplace over a name: %v", err)
	}
	for _, flags := range []uint32{unix.RENAME_WHITEOUT, unix.RENAME_EXCHANGE | unix.RENAME_NOREPLACE, 1 << 10} {
		if err := tr.Apply(op.Op{Kind: op.Rename, Path: "a", Target: "c", Flags: flags}); err == nil {
			t.Fatalf("rename flags %#x accepted", flags)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "c")); !os.IsNotExist(err) {
		t.Fatalf("refused rename happened: %v", err)
	}
}

// A renamed directory takes its cached descriptors' paths with it: a
// later file at the old path is a new file.
func TestCacheFollowsNamespace(t *testing.T) {
	root := t.TempDir()
	tr := openTree(t, root)
	mustApply(t, tr,
		op.Op{Kind: op.Mkdir, Path: "d", Mode: 0o755},
		op.Op{Kind: op.Create, Path: "d/f", Mode: 0o644},
		op.Op{Kind: op.Write, Path: "d/f", Data: []byte("old")},
		op.Op{Kind: op.Rename, Path: "d", Target: "e"},
		op.Op{Kind: op.Mkdir, Path: "d", Mode: 0o755},
		op.Op{Kind: op.Create, Path: "d/f", Mode: 0o644},
		op.Op{Kind: op.Write, Path: "d/f", Data: []byte("new")},
		op.Op{Kind: op.Write, Path: "e/f", Off: 3, Data: []byte("!")},
		op.Op{Kind: op.Unlink, Path: "d/f"},
		op.Op{Kind: op.Create, Path: "d/f", Mode: 0o644},
		op.Op{Kind: op.Write, Path: "d/f", Off: 1, Data: []byte("x")},
	)
	if got := readFile(t, filepath.Join(root, "e/f")); got != "old!" {
		t.Fatalf("e/f = %q", got)
	}
	if got := readFile(t, filepath.Join(root, "d/f")); got != "\x00x" {
		t.Fatalf("d/f = %q", got)
	}
	// Many files: the cache evicts and reopens.
	for i := range 3 * defaultMaxFiles {
		p := "d/" + strings.Repeat("n", 1+i%50) + string(rune('a'+i%26)) + string(rune('a'+i/26%26))
		mustApply(t, tr, op.Op{Kind: op.Create, Path: p, Mode: 0o644})
		mustApply(t, tr, op.Op{Kind: op.Write, Path: p, Data: []byte(p)})
	}
	for i := range 3 * defaultMaxFiles {
		p := "d/" + strings.Repeat("n", 1+i%50) + string(rune('a'+i%26)) + string(rune('a'+i/26%26))
		mustApply(t, tr, op.Op{Kind: op.Write, Path: p, Off: int64(len(p)), Data: []byte("+")})
		if got := readFile(t, filepath.Join(root, p)); got != p+"+" {
			t.Fatalf("%s = %q", p, got)
		}
	}
}

// Re-applying operations establishes their result again (see the package
// doc): a replayed stream suffix converges.
func TestIdempotent(t *testing.T) {
	root := t.TempDir()
	tr := openTree(t, root)
	stream := []op.Op{
		{Kind: op.Mkdir, Path: "d", Mode: 0o755},
		{Kind: op.Create, Path: "d/f", Mode: 0o600},
		{Kind: op.Write, Path: "d/f", Data: []byte("0123456789")},
		{Kind: op.Truncate, Path: "d/f", Size: 4},
		{Kind: op.Symlink, Path: "s", Target: "d/f"},
		{Kind: op.Link, Path: "h", Target: "d/f"},
		{Kind: op.Mknod, Path: "p", Mode: unix.S_IFIFO | 0o644},
		{Kind: op.Setxattr, Path: "d/f", Name: "user.a", Data: []byte("1"), Flags: unix.XATTR_CREATE},
		{Kind: op.Removexattr, Path: "d/f", Name: "user.b"},
		{Kind: op.Create, Path: "gone", Mode: 0o600},
		{Kind: op.Unlink, Path: "gone"},
		{Kind: op.Mkdir, Path: "gd", Mode: 0o700},
		{Kind: op.Rmdir, Path: "gd"},
	}
	mustApply(t, tr, stream...)
	// The file got more data meanwhile (later operations of the stream).
	mustApply(t, tr, op.Op{Kind: op.Write, Path: "d/f", Off: 4, Data: []byte("later")})
	for from := range stream {
		mustApply(t, tr, stream[from:]...)
		if got := readFile(t, filepath.Join(root, "d/f")); got != "0123" {
			t.Fatalf("replay from %d (%s): d/f = %q", from, stream[from].Kind, got)
		}
	}
	if st := lstat(t, filepath.Join(root, "d/f")); st.Nlink != 2 || st.Mode&0o7777 != 0o600 {
		t.Fatalf("d/f: nlink %d mode %#o", st.Nlink, st.Mode&0o7777)
	}
	// What does not fit is an error, not a silent overwrite.
	for _, o := range []op.Op{
		{Kind: op.Create, Path: "d", Mode: 0o644},
		{Kind: op.Mkdir, Path: "d/f", Mode: 0o755},
		{Kind: op.Symlink, Path: "s", Target: "elsewhere"},
		{Kind: op.Link, Path: "h", Target: "s"},
		{Kind: op.Mknod, Path: "p", Mode: unix.S_IFSOCK | 0o644},
		{Kind: op.Rename, Path: "missing", Target: "x"},
	} {
		if err := tr.Apply(o); err == nil {
			t.Errorf("%s %q over a different object: no error", o.Kind, o.Path)
		}
	}
}

// sentinel is a directory outside the tree whose state must not change.
type sentinel struct {
	dir  string
	file string
	st   unix.Stat_t
}

func newSentinel(t *testing.T) *sentinel {
	dir, err := os.MkdirTemp("", "outside-dir-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &sentinel{dir: dir, file: filepath.Join(dir, "secret")}
	if err := os.WriteFile(s.file, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1000, 0)
	os.Chtimes(s.file, old, old)
	os.Chtimes(dir, old, old)
	if err := unix.Lstat(s.file, &s.st); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *sentinel) check(t *testing.T, what string) {
	t.Helper()
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "secret" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("%s: outside directory now holds %v", what, names)
	}
	var st unix.Stat_t
	if err := unix.Lstat(s.file, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != s.st.Mode || st.Uid != s.st.Uid || st.Gid != s.st.Gid || st.Size != s.st.Size || st.Mtim != s.st.Mtim || st.Ctim != s.st.Ctim {
		t.Fatalf("%s: outside file changed: %+v", what, st)
	}
	if b, _ := os.ReadFile(s.file); string(b) != "secret" {
		t.Fatalf("%s: outside file content %q", what, b)
	}
	if n, err := unix.Listxattr(s.file, make([]byte, 256)); err != nil || n != 0 {
		t.Fatalf("%s: outside file xattrs (%d bytes, %v)", what, n, err)
	}
	var dst unix.Stat_t
	unix.Lstat(s.dir, &dst)
	if dst.Mtim.Sec != 1000 {
		t.Fatalf("%s: outside directory modified", what)
	}
}

// No operation reaches outside the tree: not through a symlink to an
// absolute or a relative path out of it, not on the symlink's own name,
// not with a hostile path.
func TestConfinement(t *testing.T) {
	out := newSentinel(t)
	root := t.TempDir()
	tr := openTree(t, root)
	mustApply(t, tr,
		op.Op{Kind: op.Symlink, Path: "esc", Target: out.dir},
		op.Op{Kind: op.Symlink, Path: "escf", Target: out.file},
		op.Op{Kind: op.Mkdir, Path: "sub", Mode: 0o755},
		op.Op{Kind: op.Symlink, Path: "sub/up", Target: "../.."},
		op.Op{Kind: op.Symlink, Path: "sub/rel", Target: "../../" + filepath.Base(out.dir)},
		op.Op{Kind: op.Symlink, Path: "inside", Target: "sub"},
		op.Op{Kind: op.Create, Path: "f", Mode: 0o644},
	)
	rel, err := filepath.Rel(root, out.dir)
	if err != nil {
		t.Fatal(err)
	}
	hostile := []op.Op{}
	for _, via := range []string{"esc", "sub/up/" + filepath.Base(out.dir), "sub/rel", "inside/rel"} {
		x := via + "/x"
		secret := via + "/secret"
		hostile = append(hostile,
			op.Op{Kind: op.Write, Path: x, Data: []byte("pwned")},
			op.Op{Kind: op.Write, Path: secret, Data: []byte("pwned")},
			op.Op{Kind: op.Truncate, Path: secret},
			op.Op{Kind: op.Fallocate, Path: secret, Size: 1 << 20},
			op.Op{Kind: op.Create, Path: x, Mode: 0o644},
			op.Op{Kind: op.Mkdir, Path: x, Mode: 0o755},
			op.Op{Kind: op.Mknod, Path: x, Mode: unix.S_IFIFO | 0o644},
			op.Op{Kind: op.Symlink, Path: x, Target: "/etc/passwd"},
			op.Op{Kind: op.Link, Path: x, Target: "f"},
			op.Op{Kind: op.Link, Path: "stolen", Target: secret},
			op.Op{Kind: op.Rename, Path: "f", Target: x},
			op.Op{Kind: op.Rename, Path: secret, Target: "stolen"},
			op.Op{Kind: op.Unlink, Path: secret},
			op.Op{Kind: op.Rmdir, Path: via},
			op.Op{Kind: op.Chmod, Path: secret, Mode: 0o777},
			op.Op{Kind: op.Chown, Path: secret, UID: 1, GID: 1},
			op.Op{Kind: op.Utimes, Path: secret, Atime: 1, Mtime: 1},
			op.Op{Kind: op.Setxattr, Path: secret, Name: "user.x", Data: []byte("x")},
			op.Op{Kind: op.Removexattr, Path: secret, Name: "user.x"},
			op.Op{Kind: op.Fsync, Path: secret},
		)
	}
	// Operations on the symlink's own name act on the link, or fail:
	// never on the file it points to.
	hostile = append(hostile,
		op.Op{Kind: op.Write, Path: "escf", Data: []byte("pwned")},
		op.Op{Kind: op.Truncate, Path: "escf"},
		op.Op{Kind: op.Fallocate, Path: "escf", Size: 1 << 20},
		op.Op{Kind: op.Chmod, Path: "escf", Mode: 0o777},
		op.Op{Kind: op.Chown, Path: "escf", UID: 1, GID: 1},
		op.Op{Kind: op.Utimes, Path: "escf", Atime: 1, Mtime: 1},
		op.Op{Kind: op.Setxattr, Path: "escf", Name: "user.x", Data: []byte("x")},
		op.Op{Kind: op.Setxattr, Path: "escf", Name: "trusted.x", Data: []byte("x")},
		op.Op{Kind: op.Create, Path: "escf", Mode: 0o644},
		op.Op{Kind: op.Fsync, Path: "escf"},
		// Paths that leave the tree by name: refused by validation.
		op.Op{Kind: op.Write, Path: rel + "/secret", Data: []byte("pwned")},
		op.Op{Kind: op.Create, Path: out.file, Mode: 0o644},
		op.Op{Kind: op.Create, Path: "../x", Mode: 0o644},
		op.Op{Kind: op.Rename, Path: "f", Target: "../f"},
		op.Op{Kind: op.Link, Path: "l", Target: "/etc/passwd"},
		op.Op{Kind: op.Write, Path: "sub/../../x", Data: []byte("x")},
		op.Op{Kind: op.Create, Path: "f", Dir: 1, Mode: 0o644},
	)
	for _, o := range hostile {
		err := tr.ApplyDeferred(o, true)
		out.check(t, o.Kind.String()+" "+o.Path)
		if err := tr.Flush(); err != nil {
			t.Fatalf("flush after %s %q: %v", o.Kind, o.Path, err)
		}
		// Operations on the link's own name may succeed (chown, utimes of
		// the link itself); everything through a link must fail.
		if err == nil && strings.Contains(o.Path, "/") {
			t.Errorf("%s %q -> %q went through", o.Kind, o.Path, o.Target)
		}
	}
	if l, err := os.Readlink(filepath.Join(root, "escf")); err != nil || l != out.file {
		t.Fatalf("escf: %q %v", l, err)
	}
}

// A device node or a FIFO in the tree is never opened for a write (a
// FIFO would block, a device would be written to).
func TestSpecialFilesNotOpened(t *testing.T) {
	root := t.TempDir()
	tr := openTree(t, root)
	mustApply(t, tr,
		op.Op{Kind: op.Mknod, Path: "fifo", Mode: unix.S_IFIFO | 0o666},
		op.Op{Kind: op.Mknod, Path: "null", Mode: unix.S_IFCHR | 0o666, Dev: unix.Mkdev(1, 3)},
		op.Op{Kind: op.Mkdir, Path: "dir", Mode: 0o755},
	)
	done := make(chan error, 1)
	go func() {
		var errs []error
		for _, p := range []string{"fifo", "null", "dir"} {
			errs = append(errs, tr.Apply(op.Op{Kind: op.Write, Path: p, Data: []byte("x")}))
			errs = append(errs, tr.Apply(op.Op{Kind: op.Truncate, Path: p}))
		}
		for _, err := range errs {
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write to a special file: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write to a FIFO blocked")
	}
}

// An invalid operation changes nothing.
func TestInvalidChangesNothing(t *testing.T) {
	root := t.TempDir()
	tr := openTree(t, root)
	for _, o := range []op.Op{
		{Kind: 0, Path: "x"},
		{Kind: 99, Path: "x"},
		{Kind: op.Create, Path: ""},
		{Kind: op.Create, Path: "a//b"},
		{Kind: op.Mkdir, Path: "."},
		{Kind: op.Unlink, Path: "."},
		{Kind: op.Write, Path: "x", Off: -1},
		{Kind: op.Write, Path: "x", Data: make([]byte, op.MaxData+1)},
		{Kind: op.Symlink, Path: "x"},
		{Kind: op.Setxattr, Path: "x"},
		{Kind: op.Create, Path: "x", Mode: unix.S_IFDIR | 0o755},
		{Kind: op.Mknod, Path: "x", Mode: unix.S_IFDIR | 0o755},
		{Kind: op.Create, Path: "x", Dir: 3},
	} {
		if err := tr.Apply(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 0 {
		t.Fatalf("tree holds %d entries", len(ents))
	}
}

func TestSeveralDirs(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	tr := openTree(t, a, b)
	mustApply(t, tr,
		op.Op{Kind: op.Create, Dir: 0, Path: "f", Mode: 0o644},
		op.Op{Kind: op.Write, Dir: 0, Path: "f", Data: []byte("a")},
		op.Op{Kind: op.Create, Dir: 1, Path: "f", Mode: 0o644},
		op.Op{Kind: op.Write, Dir: 1, Path: "f", Data: []byte("b")},
	)
	if readFile(t, filepath.Join(a, "f")) != "a" || readFile(t, filepath.Join(b, "f")) != "b" {
		t.Fatal("the directories' caches were mixed up")
	}
	if tr.Dirs() != 2 {
		t.Fatalf("Dirs() = %d", tr.Dirs())
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Deferred durability holds descriptors until Flush, across renames and
// unlinks and cache evictions, and Close releases everything.
func TestDeferredSyncsHoldDescriptors(t *testing.T) {
	root := t.TempDir()
	before := openFDs(t)
	tr, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, tr, op.Op{Kind: op.Mkdir, Path: "d", Mode: 0o755})
	for i := range 2 * defaultMaxFiles {
		p := "d/f" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		for _, o := range []op.Op{
			{Kind: op.Create, Path: p, Mode: 0o644},
			{Kind: op.Write, Path: p, Data: []byte("data")},
			{Kind: op.Rename, Path: p, Target: p + ".r"},
		} {
			if err := tr.ApplyDeferred(o, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	tr.mu.Lock()
	pending := len(tr.pending)
	tr.mu.Unlock()
	// Every file (an inode each), its parent and the root.
	if pending < 2*defaultMaxFiles+1 {
		t.Fatalf("%d pending syncs for %d durable files", pending, 2*defaultMaxFiles)
	}
	if err := tr.ApplyDeferred(op.Op{Kind: op.Unlink, Path: "d/fa" + string(rune('a')) + ".r"}, false); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := openFDs(t); n > before+1+defaultMaxFiles+defaultMaxDirs {
		t.Fatalf("%d descriptors open after Flush (%d before Open)", n, before)
	}
	if err := tr.ApplyDeferred(op.Op{Kind: op.Fsync, Path: "d"}, false); err != nil {
		t.Fatal(err)
	}
	if err := tr.SyncAll(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openFDs(t); n != before {
		t.Fatalf("%d descriptors open after Close, %d before Open", n, before)
	}
}

// Fsync through Apply syncs at once; ApplyDeferred leaves it for Flush.
func TestFsyncRecorded(t *testing.T) {
	root := t.TempDir()
	tr := openTree(t, root)
	mustApply(t, tr, op.Op{Kind: op.Create, Path: "f", Mode: 0o644}, op.Op{Kind: op.Fsync, Path: "f"})
	if len(tr.pending) != 0 {
		t.Fatalf("Apply left %d syncs pending", len(tr.pending))
	}
	if err := tr.ApplyDeferred(op.Op{Kind: op.Write, Path: "f", Data: []byte("x")}, false); err != nil {
		t.Fatal(err)
	}
	if len(tr.pending) != 0 {
		t.Fatal("a write that is not durable recorded a sync")
	}
	if err := tr.ApplyDeferred(op.Op{Kind: op.Fsync, Path: "f", Flags: op.DataOnly}, false); err != nil {
		t.Fatal(err)
	}
	if err := tr.ApplyDeferred(op.Op{Kind: op.Chmod, Path: "f", Mode: 0o600}, true); err != nil {
		t.Fatal(err)
	}
	var how syncHow
	for e, h := range tr.pending {
		if e.key.path == "f" {
			how = h
		}
	}
	if len(tr.pending) != 1 || how != syncFull {
		t.Fatalf("pending %v: want one full sync of f", tr.pending)
	}
	if err := tr.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(tr.pending) != 0 {
		t.Fatal("Flush left syncs pending")
	}
}

func TestWriteLarge(t *testing.T) {
	root := t.TempDir()
	tr := openTree(t, root)
	data := bytes.Repeat([]byte("0123456789abcdef"), op.MaxData/16)
	mustApply(t, tr, op.Op{Kind: op.Create, Path: "big", Mode: 0o644},
		op.Op{Kind: op.Write, Path: "big", Off: 1 << 30, Data: data})
	st := lstat(t, filepath.Join(root, "big"))
	if st.Size != 1<<30+op.MaxData {
		t.Fatalf("size %d", st.Size)
	}
}

// Creations carry owner, mode and modification time; data changes carry
// the modification time (capture's contract).
func TestOwnerModeAndTimesCarried(t *testing.T) {
	root := t.TempDir()
	tr := openTree(t, root)
	const mt = 1_234_567_890_123_456_789
	mustApply(t, tr, op.Op{Kind: op.Mkdir, Path: "d", Mode: 0o2775, UID: 1000, GID: 1001, Mtime: mt})
	if m := lstat(t, filepath.Join(root, "d")).Mtim.Nano(); m != mt {
		t.Errorf("d: mtime %d, want %d", m, mt)
	}
	mustApply(t, tr,
		op.Op{Kind: op.Create, Path: "d/f", Mode: 0o4755, UID: 1000, GID: 1001, Mtime: mt + 1},
		op.Op{Kind: op.Mknod, Path: "d/p", Mode: unix.S_IFIFO | 0o640, UID: 5, GID: 6, Mtime: mt + 2},
		op.Op{Kind: op.Symlink, Path: "d/l", Target: "f", UID: 7, GID: 8, Mtime: mt + 3},
		op.Op{Kind: op.Create, Path: "d/g", Mode: 0o644, UID: op.NoID, GID: 9},
	)
	check := func(p string, perm, uid, gid uint32, mtime int64) {
		t.Helper()
		st := lstat(t, filepath.Join(root, p))
		if perm != 0 && st.Mode&0o7777 != perm {
			t.Errorf("%s: mode %#o, want %#o", p, st.Mode&0o7777, perm)
		}
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
		if mtime != 0 && st.Mtim.Nano() != mtime {
			t.Errorf("%s: mtime %d, want %d", p, st.Mtim.Nano(), mtime)
		}
	}
	check("d", 0o2775, 1000, 1001, 0)      // its time changed with its entries
	check("d/f", 0o4755, 1000, 1001, mt+1) // setuid kept despite the chown
	check("d/p", 0o640, 5, 6, mt+2)
	check("d/l", 0, 7, 8, mt+3)
	check("d/g", 0o644, 0, 9, 0)

	mustApply(t, tr, op.Op{Kind: op.Write, Path: "d/f", Data: []byte("x"), Mtime: mt + 10})
	check("d/f", 0o4755, 1000, 1001, mt+10)
	mustApply(t, tr, op.Op{Kind: op.Truncate, Path: "d/f", Size: 100, Mtime: mt + 11})
	check("d/f", 0, 1000, 1001, mt+11)
	mustApply(t, tr, op.Op{Kind: op.Fallocate, Path: "d/f", Size: 200, Mtime: mt + 12})
	check("d/f", 0, 1000, 1001, mt+12)
	// No time reported: the kernel's stays.
	before := time.Now()
	mustApply(t, tr, op.Op{Kind: op.Write, Path: "d/g", Data: []byte("x")})
	if m := lstat(t, filepath.Join(root, "d/g")).Mtim; time.Unix(m.Sec, m.Nsec).Before(before.Add(-time.Second)) {
		t.Errorf("d/g mtime %v, written at %v", m, before)
	}
}
