package wire

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/apply"
	"github.com/halo-ha/halo/internal/replication/op"
)

// testHello is the hello both ends of a test stream announce.
func testHello(node string, dirs uint16) Hello {
	return Hello{Module: "db", Node: node, Generation: 42, Dirs: dirs}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

// stream is a sender and a receiver serving a target over a connection.
type stream struct {
	s       *Sender
	served  chan error // Serve's result
	cancel  context.CancelFunc
	servErr error
}

// startStream runs Serve on server and opens a Sender on client.
func startStream(t testing.TB, client, server net.Conn, target Target, dirs uint16, so SenderOptions, ro ReceiverOptions) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st := &stream{served: make(chan error, 1), cancel: cancel}
	if ro.Hello.Module == "" {
		ro.Hello = testHello("node2", dirs)
	}
	go func() { st.served <- Serve(ctx, server, target, ro) }()
	if so.Hello.Module == "" {
		so.Hello = testHello("node1", dirs)
	}
	if so.Mode == 0 {
		so.Mode = ModeSync
	}
	s, err := NewSender(context.Background(), client, so)
	if err != nil {
		cancel()
		t.Fatalf("NewSender: %v (Serve: %v)", err, <-st.served)
	}
	st.s = s
	t.Cleanup(func() {
		s.Close()
		cancel()
		<-st.served
	})
	return st
}

// closeAndWait closes the sender and returns Serve's result.
func (st *stream) closeAndWait(t testing.TB) error {
	t.Helper()
	st.s.Close()
	select {
	case err := <-st.served:
		st.served <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after the sender closed")
		return nil
	}
}

// fakeTarget records what it is asked to do; gates block its calls.
type fakeTarget struct {
	mu        sync.Mutex
	applied   []op.Op
	durable   []bool
	recorded  []string // paths waiting for a flush
	synced    []string // paths a completed flush made durable
	flushes   int
	syncAlls  int
	applyErr  error
	applyGate chan struct{} // receive before applying (nil: none)
	flushGate chan struct{} // receive before flushing (nil: none)
}

func (f *fakeTarget) ApplyDeferred(o op.Op, durable bool) error {
	f.mu.Lock()
	gate := f.applyGate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applyErr != nil {
		return f.applyErr
	}
	o.Data = slices.Clone(o.Data)
	f.applied = append(f.applied, o)
	f.durable = append(f.durable, durable)
	if durable || o.Kind == op.Fsync {
		f.recorded = append(f.recorded, o.Path)
	}
	return nil
}

func (f *fakeTarget) flush(all bool) error {
	f.mu.Lock()
	gate := f.flushGate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.synced = append(f.synced, f.recorded...)
	f.recorded = nil
	if all {
		f.syncAlls++
	} else {
		f.flushes++
	}
	return nil
}

func (f *fakeTarget) Flush() error   { return f.flush(false) }
func (f *fakeTarget) SyncAll() error { return f.flush(true) }

func (f *fakeTarget) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.applied)
}

func (f *fakeTarget) has(path string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.applied {
		if o.Path == path {
			return true
		}
	}
	return false
}

func (f *fakeTarget) isSynced(path string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.synced, path)
}

// eventually polls cond for up to d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// --- Trees ---

// entrySnap is what two trees must agree on for one path.
type entrySnap struct {
	Type       uint32
	Perm       uint32
	UID, GID   uint32
	Size       int64
	Rdev       uint64
	Nlink      uint64
	Mtime      unix.Timespec // access times are not replicated (but by Utimes)
	Content    [32]byte
	Link       string
	Xattrs     string
	HardLinkOf string // first path (in walk order) of the same inode
}

// snapshotTree records every entry of root, stating each one before
// reading it (a read changes the access time).
func snapshotTree(t testing.TB, root string) map[string]entrySnap {
	t.Helper()
	snap := map[string]entrySnap{}
	inodes := map[uint64]string{}
	var walk func(rel string)
	walk = func(rel string) {
		p := filepath.Join(root, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		e := entrySnap{
			Type: st.Mode & unix.S_IFMT, Perm: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
			Rdev: st.Rdev, Nlink: st.Nlink, Mtime: st.Mtim,
		}
		if e.Type != unix.S_IFDIR {
			e.Size = st.Size
		}
		if e.Type == unix.S_IFREG {
			if first, ok := inodes[st.Ino]; ok {
				e.HardLinkOf = first
			} else {
				inodes[st.Ino] = rel
			}
		}
		if e.Type == unix.S_IFLNK {
			l, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			e.Link = l
		}
		e.Xattrs = xattrs(t, p)
		snap[rel] = e
		if e.Type == unix.S_IFDIR {
			ents, err := os.ReadDir(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range ents {
				walk(filepath.Join(rel, d.Name()))
			}
		}
	}
	walk(".")
	// Contents last: reading a file changes the access time of every
	// name of its inode.
	for rel, e := range snap {
		if e.Type == unix.S_IFREG {
			b, err := os.ReadFile(filepath.Join(root, rel))
			if err != nil {
				t.Fatal(err)
			}
			e.Content = sha256.Sum256(b)
			snap[rel] = e
		}
	}
	return snap
}

func xattrs(t testing.TB, p string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("list xattrs of %s: %v", p, err)
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		if name == "" || name == "security.selinux" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("get xattr %s of %s: %v", name, p, err)
		}
		fmt.Fprintf(&b, "%s=%q;", name, v[:m])
	}
	return b.String()
}

// compareTrees fails the test with the differences between two trees.
func compareTrees(t testing.TB, a, b string) {
	t.Helper()
	sa, sb := snapshotTree(t, a), snapshotTree(t, b)
	var diffs []string
	for p, ea := range sa {
		eb, ok := sb[p]
		switch {
		case !ok:
			diffs = append(diffs, "only in source: "+p)
		case ea != eb:
			diffs = append(diffs, fmt.Sprintf("%s:\n  source %+v\n  target %+v", p, ea, eb))
		}
	}
	for p := range sb {
		if _, ok := sa[p]; !ok {
			diffs = append(diffs, "only in target: "+p)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		if len(diffs) > 10 {
			diffs = append(diffs[:10], fmt.Sprintf("... %d more", len(diffs)-10))
		}
		t.Fatalf("trees differ (%d entries in source):\n%s", len(sa), strings.Join(diffs, "\n"))
	}
}

// --- Random workload ---

// workload generates random operations that mostly succeed, keeping a
// model of one tree's names per replicated directory.
type workload struct {
	rng   *rand.Rand
	dirs  [][]string // per Dir: directories (with ".")
	files [][]string // per Dir: regular files
	links [][]string // per Dir: symlinks and special files
	seq   int
}

func newWorkload(seed uint64, ndirs int) *workload {
	w := &workload{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	for range ndirs {
		w.dirs = append(w.dirs, []string{"."})
		w.files = append(w.files, nil)
		w.links = append(w.links, nil)
	}
	return w
}

func (w *workload) pick(list []string) string {
	if len(list) == 0 {
		return ""
	}
	return list[w.rng.IntN(len(list))]
}

func (w *workload) newName(d int) string {
	w.seq++
	parent := w.pick(w.dirs[d])
	name := fmt.Sprintf("n%d", w.seq)
	if parent == "." {
		return name
	}
	return parent + "/" + name
}

func (w *workload) data(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(w.rng.IntN(4)) + 'a' // compressible, but not constant
	}
	return b
}

// next returns a random operation (Dir set) to try.
func (w *workload) next() op.Op {
	d := w.rng.IntN(len(w.dirs))
	o := op.Op{Dir: uint16(d)}
	file := w.pick(w.files[d])
	any := w.pick(slices.Concat(w.files[d], w.dirs[d][1:], w.links[d]))
	r := w.rng.IntN(100)
	switch {
	case r < 10 || file == "":
		o.Kind, o.Path, o.Mode = op.Create, w.newName(d), uint32(0o600+w.rng.IntN(0o200))
	case r < 40:
		n := 1 + w.rng.IntN(16<<10)
		if w.rng.IntN(50) == 0 {
			n = op.MaxData
		}
		o.Kind, o.Path, o.Off, o.Data = op.Write, file, int64(w.rng.IntN(256<<10)), w.data(n)
	case r < 45:
		o.Kind, o.Path, o.Size = op.Truncate, file, int64(w.rng.IntN(300<<10))
	case r < 47:
		o.Kind, o.Path, o.Off, o.Size = op.Fallocate, file, int64(w.rng.IntN(64<<10)), int64(1+w.rng.IntN(64<<10))
		if w.rng.IntN(2) == 0 {
			o.Flags = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
		}
	case r < 52:
		o.Kind, o.Path, o.Mode = op.Mkdir, w.newName(d), uint32(0o700+w.rng.IntN(0o100))
	case r < 54:
		o.Kind, o.Path, o.Target = op.Symlink, w.newName(d), w.pick([]string{"target", "../up", "/abs/path", file})
	case r < 55:
		o.Kind, o.Path, o.Mode = op.Mknod, w.newName(d), unix.S_IFIFO|0o644
	case r < 58:
		o.Kind, o.Path, o.Target = op.Link, w.newName(d), file
	case r < 63:
		o.Kind, o.Path, o.Target = op.Rename, any, w.newName(d)
		if w.rng.IntN(4) == 0 {
			if other := w.pick(w.files[d]); other != file {
				o.Path, o.Target, o.Flags = file, other, unix.RENAME_EXCHANGE
			}
		} else if w.rng.IntN(4) == 0 {
			// Over an existing file.
			o.Path, o.Target = file, w.pick(w.files[d])
		}
	case r < 67:
		o.Kind, o.Path = op.Unlink, w.pick(slices.Concat(w.files[d], w.links[d]))
	case r < 69:
		o.Kind, o.Path = op.Rmdir, w.pick(w.dirs[d][1:])
	case r < 74:
		o.Kind, o.Path, o.Mode = op.Chmod, w.pick(slices.Concat(w.files[d], w.dirs[d][1:])), uint32(0o700+w.rng.IntN(0o100))
	case r < 77:
		o.Kind, o.Path, o.UID, o.GID = op.Chown, any, uint32(w.rng.IntN(3)), op.NoID
		if w.rng.IntN(2) == 0 {
			o.GID = uint32(1000 + w.rng.IntN(3))
		}
	case r < 80:
		o.Kind, o.Path, o.Atime, o.Mtime = op.Utimes, any, w.rng.Int64N(4e18), w.rng.Int64N(4e18)
		if w.rng.IntN(3) == 0 {
			o.Atime = op.OmitTime
		}
	case r < 85:
		o.Kind, o.Path, o.Name, o.Data = op.Setxattr, w.pick(slices.Concat(w.files[d], w.dirs[d])), fmt.Sprintf("user.k%d", w.rng.IntN(4)), w.data(w.rng.IntN(100))
	case r < 87:
		o.Kind, o.Path, o.Name = op.Removexattr, w.pick(slices.Concat(w.files[d], w.dirs[d])), fmt.Sprintf("user.k%d", w.rng.IntN(4))
	default:
		o.Kind, o.Path = op.Fsync, w.pick(slices.Concat(w.files[d], w.dirs[d]))
		if w.rng.IntN(2) == 0 {
			o.Flags = op.DataOnly
		}
	}
	if o.Path == "" {
		o.Kind, o.Path, o.Mode = op.Create, w.newName(d), 0o644
	}
	// What capture adds: owner and mtime of creations, mtime after a
	// data change. With them, file times match without help; directory
	// times do not (finalTimes).
	switch o.Kind {
	case op.Create, op.Mkdir, op.Mknod, op.Symlink:
		o.UID, o.GID = uint32(w.rng.IntN(3)), uint32(w.rng.IntN(3))
		if o.Kind == op.Mkdir && w.rng.IntN(4) == 0 {
			o.Mode |= 0o2000
		}
		fallthrough
	case op.Write, op.Truncate, op.Fallocate:
		o.Mtime = 1 + w.rng.Int64N(4e18)
	}
	return o
}

// applied updates the model after o succeeded.
func (w *workload) applied(o op.Op) {
	d := int(o.Dir)
	remove := func(list []string, p string) []string {
		return slices.DeleteFunc(list, func(x string) bool { return x == p || strings.HasPrefix(x, p+"/") })
	}
	switch o.Kind {
	case op.Create, op.Link:
		w.files[d] = append(w.files[d], o.Path)
	case op.Mkdir:
		w.dirs[d] = append(w.dirs[d], o.Path)
	case op.Symlink, op.Mknod:
		w.links[d] = append(w.links[d], o.Path)
	case op.Unlink:
		w.files[d] = remove(w.files[d], o.Path)
		w.links[d] = remove(w.links[d], o.Path)
	case op.Rmdir:
		w.dirs[d] = remove(w.dirs[d], o.Path)
	case op.Rename:
		if o.Flags&unix.RENAME_EXCHANGE != 0 {
			return // two files swapped names: the name lists are the same
		}
		move := func(list []string) []string {
			list = slices.DeleteFunc(list, func(x string) bool { return x == o.Target || strings.HasPrefix(x, o.Target+"/") })
			for i, x := range list {
				if x == o.Path || strings.HasPrefix(x, o.Path+"/") {
					list[i] = o.Target + x[len(o.Path):]
				}
			}
			return list
		}
		w.files[d], w.dirs[d], w.links[d] = move(w.files[d]), move(w.dirs[d]), move(w.links[d])
	}
}

// finalTimes returns Utimes operations giving every directory of the tree
// at root (Dir d) random times, children before their parent, so that
// directory times can be compared too (they change with their entries on
// each side, and are not replicated).
func finalTimes(t testing.TB, rng *rand.Rand, root string, d uint16) []op.Op {
	var ops []op.Op
	var walk func(rel string)
	walk = func(rel string) {
		ents, err := os.ReadDir(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			p := e.Name()
			if rel != "." {
				p = rel + "/" + p
			}
			if e.IsDir() {
				walk(p)
				ops = append(ops, op.Op{Kind: op.Utimes, Dir: d, Path: p, Atime: rng.Int64N(4e18), Mtime: rng.Int64N(4e18)})
			}
		}
	}
	walk(".")
	return append(ops, op.Op{Kind: op.Utimes, Dir: d, Path: ".", Atime: rng.Int64N(4e18), Mtime: rng.Int64N(4e18)})
}

// replicate applies n random operations to src and submits each that
// succeeded to s, then gives every entry fixed times; it returns how many
// operations were replicated.
func replicate(t testing.TB, ctx context.Context, s *Sender, src *apply.Tree, srcDirs []string, n int, seed uint64) int {
	t.Helper()
	w := newWorkload(seed, len(srcDirs))
	sent := 0
	submit := func(o op.Op) {
		var err error
		if o.Kind == op.Fsync || w.rng.IntN(50) == 0 {
			err = s.Sync(ctx, o)
		} else {
			err = s.Submit(ctx, o)
		}
		if err != nil {
			t.Fatalf("submit %s %q: %v", o.Kind, o.Path, err)
		}
		sent++
	}
	for range n {
		o := w.next()
		if err := src.Apply(o); err != nil {
			if errors.Is(err, op.ErrInvalid) {
				t.Fatalf("generated an invalid op: %v", err)
			}
			continue // as on the primary: a failed operation is not replicated
		}
		w.applied(o)
		submit(o)
	}
	for d, dir := range srcDirs {
		for _, o := range finalTimes(t, w.rng, dir, uint16(d)) {
			if err := src.Apply(o); err != nil {
				t.Fatal(err)
			}
			submit(o)
		}
	}
	return sent
}

// payloadOps builds an Ops payload by hand.
func payloadOps(first uint64, ops ...op.Op) []byte {
	b := appendUvarints(nil, first, uint64(len(ops)))
	for i := range ops {
		b = appendEntry(b, &ops[i], false)
	}
	return b
}

// lockedWriter lets a test read what goroutines log.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func newTestLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(&lockedWriter{w: buf}, nil))
}
