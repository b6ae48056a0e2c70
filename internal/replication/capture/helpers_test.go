package capture

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/op"
)

// recorder is a fake Journal and Sink: it records every call in order and
// checks, at each Mark, that the underlying tree does not show the change
// yet (the journal must be durable before the data).
type recorder struct {
	under string // the replicated directory under the mount (/proc/self/fd/N)

	mu       sync.Mutex
	ops      []op.Op // submitted, in order
	syncs    []op.Op // Sync calls, in order
	marks    int
	nested   int             // MarkNested calls
	done     map[Ticket]bool // ticket -> applied
	next     Ticket
	early    []string // changes already visible at Mark time
	submitFn func(op.Op) error
	markErr  error
	lenient  bool // skip the visibility check
}

func newRecorder(under string) *recorder {
	return &recorder{under: under, done: map[Ticket]bool{}}
}

func copyOp(o op.Op) op.Op {
	o.Data = slices.Clone(o.Data)
	return o
}

func (r *recorder) Mark(o op.Op) (Ticket, error) {
	if err := o.Validate(); err != nil {
		r.fail("mark of an invalid op %+v: %v", o, err)
	}
	r.mu.Lock()
	markErr, lenient := r.markErr, r.lenient
	r.mu.Unlock()
	if markErr != nil {
		return 0, markErr
	}
	if why := r.visible(o); why != "" && !lenient {
		r.fail("%s %s already visible at Mark: %s", o.Kind, o.Path, why)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.marks++
	r.next++
	return r.next, nil
}

// MarkNested is Mark for a later step of an operation in flight: one
// must be (marked and not done).
func (r *recorder) MarkNested(o op.Op) (Ticket, error) {
	r.mu.Lock()
	inFlight := r.marks > len(r.done)
	r.nested++
	r.mu.Unlock()
	if !inFlight {
		r.fail("nested mark of %s %s with no operation in flight", o.Kind, o.Path)
	}
	return r.Mark(o)
}

func (r *recorder) fail(format string, args ...any) {
	r.mu.Lock()
	r.early = append(r.early, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// visible says why o's effect is already in the underlying tree ("" if
// it is not). Tests write data that differs from what was there.
func (r *recorder) visible(o op.Op) string {
	p := filepath.Join(r.under, o.Path)
	var st unix.Stat_t
	exists := unix.Lstat(p, &st) == nil
	switch o.Kind {
	case op.Write:
		got := make([]byte, len(o.Data))
		fd, err := unix.Open(p, unix.O_RDONLY, 0)
		if err != nil {
			return ""
		}
		defer unix.Close(fd)
		n, _ := unix.Pread(fd, got, o.Off)
		if n == len(o.Data) && bytes.Equal(got, o.Data) {
			return "data already written"
		}
	case op.Create, op.Mkdir, op.Mknod, op.Symlink, op.Link:
		if exists {
			return "already exists"
		}
	case op.Unlink, op.Rmdir:
		if !exists {
			return "already gone"
		}
	case op.Rename:
		if !exists && o.Flags&unix.RENAME_EXCHANGE == 0 {
			return "source already gone"
		}
	case op.Truncate:
		if exists && st.Size == o.Size {
			return "size already set"
		}
	}
	return ""
}

func (r *recorder) Done(t Ticket, applied bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.done[t]; dup {
		r.early = append(r.early, fmt.Sprintf("ticket %d done twice", t))
	}
	r.done[t] = applied
}

func (r *recorder) Submit(ctx context.Context, o op.Op) error {
	return r.record(o, false)
}

func (r *recorder) Sync(ctx context.Context, o op.Op) error {
	return r.record(o, true)
}

func (r *recorder) record(o op.Op, sync bool) error {
	if err := o.Validate(); err != nil {
		r.fail("submit of an invalid op %+v: %v", o, err)
	}
	r.mu.Lock()
	fn := r.submitFn
	r.ops = append(r.ops, copyOp(o))
	if sync {
		r.syncs = append(r.syncs, copyOp(o))
	}
	r.mu.Unlock()
	if fn != nil {
		return fn(o)
	}
	return nil
}

// set changes the recorder's behaviour while the filesystem runs.
func (r *recorder) set(fn func(r *recorder)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(r)
}

func (r *recorder) snapshot() []op.Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops)
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops, r.syncs = nil, nil
}

// check fails the test on any contract violation seen so far.
func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.early {
		t.Error(e)
	}
	if len(r.done) != r.marks {
		t.Errorf("%d marks, %d dones", r.marks, len(r.done))
	}
}

// mounted is a capture filesystem mounted for a test.
type mounted struct {
	dir   string // the mount point (the application's view)
	under string // the same directory under the mount
	fs    *FS
	rec   *recorder
}

// mountTest mounts a capture filesystem over a fresh directory holding
// what prepare puts there; it is unmounted when the test ends.
func mountTest(t testing.TB, opts Options, prepare func(dir string)) *mounted {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root")
	}
	dir := filepath.Join(traversableTemp(t), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(dir)
	}
	// The test's own window under the mount, opened before it.
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	// "/." makes walks follow the magic link.
	m := &mounted{dir: dir, under: fmt.Sprintf("/proc/self/fd/%d/.", fd)}
	m.rec = newRecorder(m.under)
	opts.Dir = dir
	if opts.Sink == nil && !opts.ReadOnly {
		opts.Sink = m.rec
	}
	if opts.Journal == nil && !opts.ReadOnly {
		opts.Journal = m.rec
	}
	m.fs, err = Mount(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.unmount(t) })
	return m
}

func (m *mounted) unmount(t testing.TB) {
	t.Helper()
	var err error
	for range 50 {
		if err = m.fs.Unmount(); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("unmount: %v; detaching", err)
		if err := unix.Unmount(m.dir, unix.MNT_DETACH); err != nil {
			t.Errorf("detach %s: %v", m.dir, err)
		}
	}
	done := make(chan struct{})
	go func() { m.fs.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("server of %s did not stop", m.dir)
	}
}

// applyOps applies recorded operations to dir, as a peer would.
func applyOps(dir string, ops []op.Op) error {
	for i, o := range ops {
		if err := applyOp(dir, o); err != nil {
			return fmt.Errorf("op %d (%s %s): %w", i, o.Kind, o.Path, err)
		}
	}
	return nil
}

func applyOp(dir string, o op.Op) error {
	if err := o.Validate(); err != nil {
		return err
	}
	p := filepath.Join(dir, o.Path)
	setMtime := func() error {
		if o.Mtime == 0 {
			return nil
		}
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(o.Mtime)}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	created := func() error {
		if err := unix.Lchown(p, int(o.UID), int(o.GID)); err != nil {
			return err
		}
		if o.Kind != op.Symlink {
			if err := unix.Chmod(p, o.Mode&07777); err != nil {
				return err
			}
		}
		return setMtime()
	}
	switch o.Kind {
	case op.Write:
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		_, err = unix.Pwrite(fd, o.Data, o.Off)
		unix.Close(fd)
		if err != nil {
			return err
		}
		return setMtime()
	case op.Truncate:
		if err := unix.Truncate(p, o.Size); err != nil {
			return err
		}
		return setMtime()
	case op.Fallocate:
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		err = unix.Fallocate(fd, o.Flags, o.Off, o.Size)
		unix.Close(fd)
		if err != nil {
			return err
		}
		return setMtime()
	case op.Create:
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW, o.Mode&07777)
		if err != nil {
			return err
		}
		unix.Close(fd)
		return created()
	case op.Mkdir:
		if err := unix.Mkdir(p, o.Mode&07777); err != nil {
			return err
		}
		return created()
	case op.Mknod:
		if err := unix.Mknod(p, o.Mode, int(o.Dev)); err != nil {
			return err
		}
		return created()
	case op.Symlink:
		if err := unix.Symlink(o.Target, p); err != nil {
			return err
		}
		return created()
	case op.Link:
		return unix.Link(filepath.Join(dir, o.Target), p)
	case op.Rename:
		return unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, filepath.Join(dir, o.Target), uint(o.Flags))
	case op.Unlink:
		return unix.Unlink(p)
	case op.Rmdir:
		return unix.Rmdir(p)
	case op.Chmod:
		return unix.Chmod(p, o.Mode)
	case op.Chown:
		return unix.Lchown(p, int(int32(o.UID)), int(int32(o.GID)))
	case op.Utimes:
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if o.Atime != op.OmitTime {
			ts[0] = unix.NsecToTimespec(o.Atime)
		}
		if o.Mtime != op.OmitTime {
			ts[1] = unix.NsecToTimespec(o.Mtime)
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	case op.Setxattr:
		return unix.Lsetxattr(p, o.Name, o.Data, int(o.Flags))
	case op.Removexattr:
		return unix.Lremovexattr(p, o.Name)
	case op.Fsync:
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Fsync(fd)
	}
	return fmt.Errorf("unknown kind %v", o.Kind)
}

// treeOpts says what a tree description leaves out.
type treeOpts struct {
	mtimes  bool     // compare modification times of non-directories
	exclude *Matcher // paths left out
}

// describe lists everything a replica must reproduce of the tree at dir,
// one line per object.
func describe(t testing.TB, dir string, o treeOpts) []string {
	t.Helper()
	var lines []string
	inodes := map[uint64]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if o.exclude.Excluded(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%s mode=%o uid=%d gid=%d", rel, st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			// Links are compared within the tree: a name outside it
			// (excluded) is not the replica's business.
			line += fmt.Sprintf(" size=%d sha=%x", st.Size, sha256.Sum256(data))
			if first, ok := inodes[st.Ino]; ok {
				line += " linkof=" + first
			} else {
				inodes[st.Ino] = rel
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" rdev=%d", st.Rdev)
		}
		if o.mtimes && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			line += fmt.Sprintf(" mtime=%d", st.Mtim.Nano())
		}
		line += " xattrs=" + xattrs(p)
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatalf("describe %s: %v", dir, err)
	}
	return lines
}

func xattrs(p string) string {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return "{}"
	}
	buf := make([]byte, sz)
	sz, _ = unix.Llistxattr(p, buf)
	names := strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00")
	slices.Sort(names)
	var parts []string
	for _, n := range names {
		v := make([]byte, 65536)
		vn, err := unix.Lgetxattr(p, n, v)
		if err != nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%q", n, v[:vn]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func sameTree(t testing.TB, what string, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	t.Errorf("%s: trees differ", what)
	for _, l := range want {
		if !slices.Contains(got, l) {
			t.Errorf("  missing: %s", l)
		}
	}
	for _, l := range got {
		if !slices.Contains(want, l) {
			t.Errorf("  extra:   %s", l)
		}
	}
}

// errnoOf names an error's errno ("ok" for nil) for comparisons.
func errnoOf(err error) string {
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// copyTree copies the tree at src to the new directory dst (the peer's
// starting point).
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	if out, err := runCmd("cp", "-a", src+"/.", dst); err != nil {
		t.Fatalf("copy %s: %v: %s", src, err, out)
	}
}

func runCmd(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// traversableTemp is a temporary directory other users can reach (tests
// run commands as them), unlike t.TempDir's 0700 ones.
func traversableTemp(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
