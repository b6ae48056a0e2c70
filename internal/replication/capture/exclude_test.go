package capture

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/op"
)

func TestMatcher(t *testing.T) {
	m, err := NewMatcher([]string{"tmp", "*.log", "cache/*", "a/*/deep"})
	must(t, err)
	for rel, want := range map[string]bool{
		".": false, "tmp": true, "tmp/x/y": true, "tmpx": false, "x.log": true, "sub/x.log": false,
		"cache": false, "cache/a": true, "cache/a/b": true, "a/b/deep": true, "a/b/deep/er": true, "a/b": false,
	} {
		if got := m.Excluded(rel); got != want {
			t.Errorf("Excluded(%q) = %v, want %v", rel, got, want)
		}
	}
	for _, pair := range []struct {
		old, new string
		want     bool
	}{
		{"x", "y", false}, {"cache", "store", true}, {"store", "cache", true}, {"a", "b", true},
		{"a/b", "a/c", true}, {"q/r", "s", false}, {"x.log", "y", false},
	} {
		if got := m.mayDiffer(pair.old, pair.new); got != pair.want {
			t.Errorf("mayDiffer(%q, %q) = %v, want %v", pair.old, pair.new, got, pair.want)
		}
	}
	for _, bad := range []string{"/abs", "../up", "a//b", "[", ""} {
		if _, err := NewMatcher([]string{bad}); err == nil {
			t.Errorf("NewMatcher accepted %q", bad)
		}
	}
}

// makeSubtree fills dir with what a materialization must carry: nested
// directories, data with holes, hard links, a symlink, a fifo, xattrs.
func makeSubtree(t *testing.T, dir string, seed byte) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(dir, "in/deeper"), 0o751))
	must(t, os.WriteFile(filepath.Join(dir, "small"), pattern(100, seed), 0o640))
	f, err := os.Create(filepath.Join(dir, "in/sparse"))
	must(t, err)
	_, err = f.WriteAt(pattern(5000, seed+1), 3<<20)
	must(t, err)
	must(t, f.Truncate(6<<20)) // a hole at the end too
	f.Close()
	must(t, os.Link(filepath.Join(dir, "small"), filepath.Join(dir, "in/deeper/small-link")))
	must(t, os.Symlink("../small", filepath.Join(dir, "in/sym")))
	must(t, unix.Mkfifo(filepath.Join(dir, "in/fifo"), 0o600))
	must(t, unix.Setxattr(filepath.Join(dir, "small"), "user.k", []byte("v"), 0))
	must(t, os.Chown(filepath.Join(dir, "in"), 1000, 1000))
}

func TestExcludes(t *testing.T) {
	globs := []string{"tmp", "*.log", "cache/*"}
	excl, err := NewMatcher(globs)
	must(t, err)
	m, peer := replica(t, Options{Excludes: globs}, func(dir string) {
		os.WriteFile(filepath.Join(dir, "victim"), []byte("replaced"), 0o644)
	})
	p := func(s string) string { return filepath.Join(m.dir, s) }
	// Objects entering the replicated set are created on the peer after the
	// local rename (their journal entry is the creation, marked before), so
	// the recorder's check that nothing is visible at Mark does not apply.
	m.rec.set(func(r *recorder) { r.lenient = true })

	// Changes to excluded paths are local only.
	must(t, os.Mkdir(p("tmp"), 0o755))
	must(t, os.WriteFile(p("tmp/a"), pattern(3000, 1), 0o644))
	must(t, os.WriteFile(p("x.log"), []byte("log"), 0o644))
	must(t, os.Mkdir(p("cache"), 0o755))
	must(t, os.WriteFile(p("cache/c1"), []byte("cached"), 0o644))
	must(t, os.MkdirAll(p("sub"), 0o755))
	must(t, os.WriteFile(p("sub/y.log"), []byte("replicated: not top-level"), 0o644))
	if n := len(m.rec.snapshot()); n != 4 { // mkdir cache, mkdir sub, create+write sub/y.log
		t.Errorf("%d ops for 2 replicated creations, want 4: %+v", n, m.rec.snapshot())
	}
	nested := func() int { m.rec.mu.Lock(); defer m.rec.mu.Unlock(); return m.rec.nested }
	if n := nested(); n != 0 {
		t.Errorf("%d nested marks for operations of one step", n)
	}

	// Into the tree: a file, a whole subtree, a link, over an existing file.
	must(t, os.Rename(p("tmp/a"), p("kept")))
	makeSubtree(t, p("tmp/tree"), 20)
	before := nested()
	must(t, os.Rename(p("tmp/tree"), p("tree")))
	// The subtree's creations after the first, and the data, xattrs and
	// times that follow them, belong to the rename in flight: a resync's
	// freeze must not hold them.
	if nested() == before {
		t.Error("a rename that materializes a subtree marked none of its later steps nested")
	}
	must(t, os.WriteFile(p("tmp/src"), pattern(700, 30), 0o600))
	if err := os.Link(p("tmp/src"), p("linked")); !errors.Is(err, unix.EXDEV) {
		t.Errorf("link from an excluded file: %v, want EXDEV", err)
	}
	if err := os.Link(p("sub/y.log"), p("tmp/y")); !errors.Is(err, unix.EXDEV) {
		t.Errorf("link to an excluded name: %v, want EXDEV", err)
	}
	must(t, os.Link(p("tmp/src"), p("tmp/src2")))
	if err := os.Rename(p("tmp/src"), p("linked")); !errors.Is(err, unix.EXDEV) {
		t.Errorf("rename of a multiply linked file into the tree: %v, want EXDEV", err)
	}
	must(t, os.Remove(p("tmp/src2")))
	must(t, os.Rename(p("tmp/src"), p("linked")))
	must(t, os.WriteFile(p("tmp/over"), pattern(50, 40), 0o600))
	must(t, os.Rename(p("tmp/over"), p("victim")))

	// Out of the tree.
	must(t, os.Rename(p("kept"), p("tmp/back")))
	makeSubtree(t, p("leaving"), 50)
	must(t, os.Rename(p("leaving"), p("tmp/left")))

	// Exchanges across the boundary.
	makeSubtree(t, p("tmp/ex"), 60)
	makeSubtree(t, p("inside"), 70)
	must(t, unix.Renameat2(unix.AT_FDCWD, p("tmp/ex"), unix.AT_FDCWD, p("inside"), unix.RENAME_EXCHANGE))
	must(t, unix.Renameat2(unix.AT_FDCWD, p("tree/in"), unix.AT_FDCWD, p("tmp/ex/in"), unix.RENAME_EXCHANGE))

	// A directory whose entries the new name excludes or includes.
	must(t, os.Rename(p("cache"), p("store"))) // cache/c1 enters as store/c1
	must(t, os.Mkdir(p("store2"), 0o755))
	must(t, os.WriteFile(p("store2/s"), []byte("leaves as cache/s"), 0o644))
	must(t, os.Rename(p("store2"), p("cache")))

	// Writes to excluded files stay local, even through old descriptors.
	must(t, os.WriteFile(p("tmp/back"), []byte("changed while excluded"), 0o644))

	for _, o := range m.rec.snapshot() {
		// A removal names what the peer has: a directory renamed under a
		// name that excludes some of its entries loses them there.
		if o.Kind == op.Unlink || o.Kind == op.Rmdir {
			continue
		}
		if excl.Excluded(o.Path) || (o.Kind == op.Rename || o.Kind == op.Link) && excl.Excluded(o.Target) {
			t.Errorf("op on an excluded path: %+v", o)
		}
	}
	converge(t, m, peer, excl)
	for _, gone := range []string{"kept", "leaving", "cache/s"} {
		if _, err := os.Lstat(filepath.Join(peer, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left the replicated set but the peer has it: %v", gone, err)
		}
	}
	for _, there := range []string{"store/c1", "tree/in/sparse", "linked", "inside/in/deeper/small-link"} {
		if _, err := os.Lstat(filepath.Join(peer, there)); err != nil {
			t.Errorf("%s entered the replicated set but the peer lacks it: %v", there, err)
		}
	}
}

func TestReadOnly(t *testing.T) {
	m := mountTest(t, Options{ReadOnly: true}, func(dir string) {
		os.WriteFile(filepath.Join(dir, "f"), []byte("v1"), 0o644)
		os.Mkdir(filepath.Join(dir, "d"), 0o755)
	})
	p := func(s string) string { return filepath.Join(m.dir, s) }
	if b, err := os.ReadFile(p("f")); err != nil || string(b) != "v1" {
		t.Fatalf("read: %q %v", b, err)
	}
	attempts := map[string]error{
		"write":       func() error { _, err := os.OpenFile(p("f"), os.O_WRONLY, 0); return err }(),
		"create":      os.WriteFile(p("new"), nil, 0o644),
		"mkdir":       os.Mkdir(p("d2"), 0o755),
		"unlink":      os.Remove(p("f")),
		"rmdir":       os.Remove(p("d")),
		"rename":      os.Rename(p("f"), p("g")),
		"chmod":       os.Chmod(p("f"), 0o600),
		"chown":       os.Chown(p("f"), 1, 1),
		"truncate":    os.Truncate(p("f"), 0),
		"utimes":      os.Chtimes(p("f"), time.Now(), time.Now()),
		"setxattr":    unix.Setxattr(p("f"), "user.x", []byte("y"), 0),
		"removexattr": unix.Removexattr(p("f"), "user.x"),
		"symlink":     os.Symlink("f", p("l")),
		"link":        os.Link(p("f"), p("l2")),
		"mknod":       unix.Mkfifo(p("fifo"), 0o644),
	}
	for what, err := range attempts {
		if !errors.Is(err, unix.EROFS) {
			t.Errorf("%s on a read-only mount: %v, want EROFS", what, err)
		}
	}
	// What replication writes underneath shows at once.
	must(t, os.WriteFile(filepath.Join(m.under, "f"), []byte("version 2"), 0o644))
	must(t, os.WriteFile(filepath.Join(m.under, "d/new"), []byte("n"), 0o644))
	if b, err := os.ReadFile(p("f")); err != nil || string(b) != "version 2" {
		t.Errorf("read after an underlying change: %q %v", b, err)
	}
	if _, err := os.Stat(p("d/new")); err != nil {
		t.Errorf("new underlying file not visible: %v", err)
	}
}

// Concurrent writers on open descriptors, creators and a renamer moving
// their directories: the recorded stream must still replay to the same
// tree (no operation named a path the stream had already renamed).
func TestConcurrentOrder(t *testing.T) {
	m, peer := replica(t, Options{}, nil)
	p := func(s string) string { return filepath.Join(m.dir, s) }
	for _, d := range []string{"a", "b"} {
		must(t, os.Mkdir(p(d), 0o755))
	}
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			var files []*os.File
			defer func() {
				for _, f := range files {
					f.Close()
				}
			}()
			for i := 0; time.Now().Before(deadline); i++ {
				switch r := rng.IntN(10); {
				case r < 3:
					// The directories move: a create may miss.
					dir := []string{"a", "b"}[rng.IntN(2)]
					f, err := os.OpenFile(p(fmt.Sprintf("%s/w%d-%d", dir, w, i)), os.O_CREATE|os.O_RDWR, 0o644)
					if err == nil {
						files = append(files, f)
					}
				case r < 9 && len(files) > 0:
					f := files[rng.IntN(len(files))]
					data := make([]byte, 1+rng.IntN(9000))
					for k := range data {
						data[k] = byte(rng.Uint32())
					}
					if _, err := f.WriteAt(data, int64(rng.IntN(1<<16))); err != nil {
						errs <- fmt.Errorf("write: %w", err)
						return
					}
				case len(files) > 0:
					// Unlink one while it stays open and written.
					f := files[rng.IntN(len(files))]
					os.Remove(f.Name())
					_ = os.Remove(filepath.Join(filepath.Dir(f.Name()), "x"))
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; time.Now().Before(deadline); i++ {
			// Swap a and b, or move one into the other and back.
			if i%2 == 0 {
				unix.Renameat2(unix.AT_FDCWD, p("a"), unix.AT_FDCWD, p("b"), unix.RENAME_EXCHANGE)
			} else {
				if os.Rename(p("a"), p("b/a")) == nil {
					must(t, os.Rename(p("b/a"), p("a")))
				}
			}
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d operations recorded", len(m.rec.snapshot()))
	converge(t, m, peer, nil)
}
