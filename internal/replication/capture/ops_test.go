package capture

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/op"
)

// pattern is n bytes that differ from any earlier content of the same
// length written by the tests (the recorder checks writes against it).
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/251)
	}
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// replica starts a peer copy of the tree prepare makes, mounts the capture
// over the original, and returns both.
func replica(t *testing.T, opts Options, prepare func(dir string)) (*mounted, string) {
	t.Helper()
	seed := filepath.Join(t.TempDir(), "seed")
	must(t, os.Mkdir(seed, 0o755))
	if prepare != nil {
		prepare(seed)
	}
	peer := filepath.Join(t.TempDir(), "peer")
	must(t, os.Mkdir(peer, 0o755))
	copyTree(t, seed, peer)
	m := mountTest(t, opts, func(dir string) { copyTree(t, seed, dir) })
	return m, peer
}

// converge applies what the capture recorded to the peer and compares the
// trees.
func converge(t *testing.T, m *mounted, peer string, excl *Matcher) {
	t.Helper()
	m.rec.check(t)
	if err := applyOps(peer, m.rec.snapshot()); err != nil {
		t.Fatalf("replay on the peer: %v", err)
	}
	o := treeOpts{mtimes: true, exclude: excl}
	sameTree(t, "peer vs primary", describe(t, peer, o), describe(t, m.under, o))
}

func kinds(ops []op.Op) map[op.Kind]int {
	k := map[op.Kind]int{}
	for _, o := range ops {
		k[o.Kind]++
	}
	return k
}

func TestEveryOperationReplays(t *testing.T) {
	m, peer := replica(t, Options{}, func(dir string) {
		os.WriteFile(filepath.Join(dir, "existing"), pattern(10000, 1), 0o644)
		os.Mkdir(filepath.Join(dir, "olddir"), 0o755)
	})
	p := func(s string) string { return filepath.Join(m.dir, s) }

	must(t, os.Mkdir(p("d"), 0o750))
	must(t, os.Mkdir(p("d/sub"), 0o700))
	f, err := os.OpenFile(p("d/f"), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	must(t, err)
	_, err = f.Write(pattern(5000, 2))
	must(t, err)
	_, err = f.WriteAt(pattern(300, 3), 1<<20) // sparse
	must(t, err)
	_, err = f.WriteAt(pattern(op.MaxData, 4), 2<<20) // one full-size request
	must(t, err)
	must(t, f.Truncate(5<<20))   // extend
	must(t, f.Truncate(3<<20+5)) // shrink
	must(t, unix.Fallocate(int(f.Fd()), 0, 4<<20, 8192))
	must(t, unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 100, 4096))
	must(t, f.Sync())
	must(t, unix.Fdatasync(int(f.Fd())))
	must(t, f.Close())

	// Append and copy_file_range.
	a, err := os.OpenFile(p("d/append"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(t, err)
	for i := range 3 {
		_, err = a.Write(pattern(1000, byte(10+i)))
		must(t, err)
	}
	must(t, a.Close())
	src, err := os.Open(p("existing"))
	must(t, err)
	dst, err := os.OpenFile(p("d/copy"), os.O_CREATE|os.O_WRONLY, 0o644)
	must(t, err)
	offIn, offOut := int64(100), int64(50)
	n, err := unix.CopyFileRange(int(src.Fd()), &offIn, int(dst.Fd()), &offOut, 5000, 0)
	must(t, err)
	if n != 5000 {
		t.Errorf("copy_file_range copied %d bytes", n)
	}
	src.Close()
	dst.Close()

	// Special files, links.
	must(t, unix.Mkfifo(p("d/fifo"), 0o640))
	must(t, unix.Mknod(p("d/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, os.Symlink("f", p("d/ln")))
	must(t, os.Link(p("d/f"), p("d/hard")))
	must(t, os.Link(p("existing"), p("d/sub/existing-link")))

	// Renames.
	must(t, os.Rename(p("d/f"), p("d/sub/f2")))     // across directories
	must(t, os.Rename(p("d/append"), p("d/copy")))  // over an existing file
	must(t, os.Rename(p("olddir"), p("d/movedir"))) // a directory
	must(t, unix.Renameat2(unix.AT_FDCWD, p("d/hard"), unix.AT_FDCWD, p("d/ln"), unix.RENAME_EXCHANGE))
	must(t, unix.Renameat2(unix.AT_FDCWD, p("d/fifo"), unix.AT_FDCWD, p("d/fifo2"), unix.RENAME_NOREPLACE))
	if err := unix.Renameat2(unix.AT_FDCWD, p("d/fifo2"), unix.AT_FDCWD, p("d/null"), unix.RENAME_NOREPLACE); err != unix.EEXIST {
		t.Errorf("RENAME_NOREPLACE over an existing name: %v", err)
	}

	// Metadata.
	must(t, unix.Chmod(p("d/sub/f2"), 0o4751))
	must(t, os.Chown(p("d/sub/f2"), 1000, 1001))
	must(t, os.Lchown(p("d/hard"), 1002, 1003)) // a symlink now
	must(t, os.Chtimes(p("d/copy"), time.Unix(1000, 5), time.Unix(2000, 7)))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p("d/ln"), []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_NOW}}, 0))
	must(t, unix.Setxattr(p("d/sub/f2"), "user.color", []byte("blue"), 0))
	must(t, unix.Setxattr(p("d/sub/f2"), "user.gone", []byte("x"), unix.XATTR_CREATE))
	must(t, unix.Removexattr(p("d/sub/f2"), "user.gone"))
	must(t, unix.Setxattr(p("d"), "user.dir", []byte("yes"), 0))
	must(t, os.Chmod(m.dir, 0o775)) // the replicated directory itself
	must(t, os.Truncate(p("existing"), 7777))

	// Removals.
	must(t, os.Mkdir(p("d/empty"), 0o755))
	must(t, os.Remove(p("d/empty")))
	must(t, os.Remove(p("d/fifo2")))

	// Fsync of a directory.
	dfd, err := os.Open(p("d"))
	must(t, err)
	must(t, dfd.Sync())
	dfd.Close()

	converge(t, m, peer, nil)

	got := kinds(m.rec.snapshot())
	for k := op.Write; k <= op.Fsync; k++ {
		if got[k] == 0 {
			t.Errorf("no %s recorded: %v", k, got)
		}
	}
	// fsync, fdatasync and the directory's fsync all went through Sync.
	var syncs []string
	for _, o := range m.rec.syncs {
		syncs = append(syncs, o.Path+":"+o.Kind.String())
	}
	for _, want := range []string{"d/f:fsync", "d:fsync"} {
		if !slices.Contains(syncs, want) {
			t.Errorf("Sync calls %v lack %s", syncs, want)
		}
	}
	var dataOnly bool
	for _, o := range m.rec.syncs {
		dataOnly = dataOnly || o.Flags&op.DataOnly != 0
	}
	if !dataOnly {
		t.Errorf("fdatasync not marked DataOnly in %v", syncs)
	}
}

// A write must be in the journal before it is on the disk, and a failed
// mark must leave the disk untouched.
func TestJournalFailureWritesNothing(t *testing.T) {
	m := mountTest(t, Options{}, func(dir string) {
		os.WriteFile(filepath.Join(dir, "f"), []byte("original"), 0o644)
	})
	f, err := os.OpenFile(filepath.Join(m.dir, "f"), os.O_WRONLY, 0)
	must(t, err)
	defer f.Close()
	m.rec.set(func(r *recorder) { r.markErr = errors.New("disk full") })
	_, werr := f.WriteAt([]byte("CHANGED!"), 0)
	merr := os.Mkdir(filepath.Join(m.dir, "d"), 0o755)
	m.rec.set(func(r *recorder) { r.markErr = nil })
	if !errors.Is(werr, unix.EIO) || !errors.Is(merr, unix.EIO) {
		t.Errorf("write: %v, mkdir: %v; want EIO", werr, merr)
	}
	if b, _ := os.ReadFile(filepath.Join(m.under, "f")); string(b) != "original" {
		t.Errorf("file holds %q after a refused write", b)
	}
	if _, err := os.Lstat(filepath.Join(m.under, "d")); !os.IsNotExist(err) {
		t.Errorf("refused mkdir left %v", err)
	}
	if ops := m.rec.snapshot(); len(ops) != 0 {
		t.Errorf("refused operations submitted: %+v", ops)
	}
}

// A peer failure fails the application's call but the change is local and
// journaled; a sink that continues alone returns success.
func TestSinkFailure(t *testing.T) {
	m := mountTest(t, Options{}, nil)
	m.rec.set(func(r *recorder) {
		r.submitFn = func(op.Op) error { return errors.New("peer gone, not degraded yet") }
	})
	err := os.WriteFile(filepath.Join(m.dir, "f"), []byte("x"), 0o644)
	if !errors.Is(err, unix.EIO) {
		t.Errorf("create with a failing sink: %v, want EIO", err)
	}
	if _, err := os.Lstat(filepath.Join(m.under, "f")); err != nil {
		t.Errorf("the change is not local: %v", err)
	}
	m.rec.set(func(r *recorder) { r.submitFn = nil }) // the daemon went alone: Submit returns nil
	must(t, os.WriteFile(filepath.Join(m.dir, "g"), []byte("y"), 0o644))
	m.rec.check(t)
	m.rec.mu.Lock()
	defer m.rec.mu.Unlock()
	for tk, applied := range m.rec.done {
		if !applied {
			t.Errorf("ticket %d done as not applied", tk)
		}
	}
}

func TestFsyncAndOSyncReachSync(t *testing.T) {
	m := mountTest(t, Options{}, nil)
	f, err := os.OpenFile(filepath.Join(m.dir, "wal"), os.O_CREATE|os.O_WRONLY|os.O_SYNC, 0o600)
	must(t, err)
	_, err = f.Write(pattern(4096, 9))
	must(t, err)
	must(t, f.Close())
	g, err := os.OpenFile(filepath.Join(m.dir, "data"), os.O_CREATE|os.O_WRONLY, 0o600)
	must(t, err)
	_, err = g.Write(pattern(4096, 10))
	must(t, err)
	must(t, unix.Fdatasync(int(g.Fd())))
	must(t, g.Close())

	m.rec.mu.Lock()
	defer m.rec.mu.Unlock()
	var walWrites, dataSyncs int
	for _, o := range m.rec.syncs {
		switch {
		case o.Path == "wal" && o.Kind == op.Write:
			walWrites++
		case o.Path == "data" && o.Kind == op.Fsync && o.Flags == op.DataOnly:
			dataSyncs++
		case o.Path == "data":
			t.Errorf("unexpected Sync %+v", o)
		}
	}
	if walWrites != 1 || dataSyncs != 1 {
		t.Errorf("O_SYNC writes through Sync: %d, fdatasyncs: %d; want 1 and 1 (syncs %v)", walWrites, dataSyncs, m.rec.syncs)
	}
	// The write on the ordinary handle went through Submit only.
	for _, o := range m.rec.syncs {
		if o.Path == "data" && o.Kind == op.Write {
			t.Errorf("ordinary write went through Sync")
		}
	}
	if b, _ := os.ReadFile(filepath.Join(m.under, "wal")); !bytes.Equal(b, pattern(4096, 9)) {
		t.Errorf("wal content wrong")
	}
}

// Stores through a shared mapping reach the capture as writes when the
// kernel writes the pages back, at the latest on msync.
func TestMmapWrites(t *testing.T) {
	m, peer := replica(t, Options{}, func(dir string) {
		os.WriteFile(filepath.Join(dir, "mapped"), pattern(3*4096, 1), 0o644)
	})
	f, err := os.OpenFile(filepath.Join(m.dir, "mapped"), os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, 3*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	must(t, err)
	copy(mem[4096+10:], pattern(100, 50))
	must(t, unix.Msync(mem, unix.MS_SYNC))
	must(t, unix.Munmap(mem))
	var synced bool
	for _, o := range m.rec.snapshot() {
		synced = synced || o.Kind == op.Fsync && o.Path == "mapped"
	}
	if !synced {
		t.Errorf("msync did not reach Sync: %v", kinds(m.rec.snapshot()))
	}
	converge(t, m, peer, nil)
}
