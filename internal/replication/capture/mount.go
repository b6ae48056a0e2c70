package capture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/op"
)

// FS is a mounted capture filesystem.
type FS struct {
	opts    Options
	excl    *Matcher
	log     hclog.Logger
	rootFd  int    // the replicated directory, opened before the mount hid it
	root    string // /proc/self/fd/<rootFd>: a path that reaches under the mount
	rootDev uint64
	asRoot  bool // created objects are given to the caller

	rootNode *node
	server   *fuse.Server
	// ctx bounds Submit and Sync: not the request's, so an interrupted
	// application cannot cut an operation out of the stream half-sent.
	ctx    context.Context
	cancel context.CancelFunc

	// ns orders namespace changes against everything that names a path:
	// rename, unlink and rmdir hold it exclusively (in rawFS, so go-fuse's
	// tree is updated before anyone else computes a path); the others
	// hold it shared.
	ns sync.RWMutex

	closeOnce sync.Once
	done      chan struct{}
}

// Mount opens opts.Dir, mounts the capture filesystem over it and serves
// the directory's previous content through the descriptor.
func Mount(opts Options) (*FS, error) {
	if !filepath.IsAbs(opts.Dir) || filepath.Clean(opts.Dir) != opts.Dir {
		return nil, fmt.Errorf("mount capture: %q is not a clean absolute path", opts.Dir)
	}
	if !opts.ReadOnly && (opts.Sink == nil || opts.Journal == nil) {
		return nil, errors.New("mount capture: a writable mount needs a sink and a journal")
	}
	excl, err := NewMatcher(opts.Excludes)
	if err != nil {
		return nil, fmt.Errorf("mount capture on %s: %w", opts.Dir, err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	fd, err := unix.Open(opts.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mount capture: open %s: %w", opts.Dir, err)
	}
	st, _, err := fstat(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount capture: stat %s: %w", opts.Dir, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount capture: statfs %s: %w", opts.Dir, err)
	}
	f := &FS{
		opts:    opts,
		excl:    excl,
		log:     logger,
		rootFd:  fd,
		root:    fmt.Sprintf("/proc/self/fd/%d", fd),
		rootDev: st.Dev,
		asRoot:  os.Geteuid() == 0,
		done:    make(chan struct{}),
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())

	lr := &fs.LoopbackRoot{Path: f.root, Dev: st.Dev, NewNode: f.newNode}
	f.rootNode = f.newNode(lr, nil, "", &st).(*node)
	lr.RootNode = f.rootNode

	// The application's view must follow the underlying tree at once
	// when something else writes it (replication on the secondary);
	// on the primary this mount is the only writer, so the kernel may
	// cache.
	timeout := time.Second
	if opts.ReadOnly {
		timeout = 0
	}
	// Mirror the underlying mount's restrictions rather than add some.
	var flags uintptr
	for _, m := range []struct{ st, ms uintptr }{{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC}} {
		if uintptr(sfs.Flags)&m.st != 0 {
			flags |= m.ms
		}
	}
	if opts.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	var stdLogger = logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	fsOpts := &fs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		Logger:          stdLogger,
		MountOptions: fuse.MountOptions{
			// Applications run as any user: the kernel checks
			// permissions against the attributes, as on the plain
			// directory, since the daemon (root) would allow anything.
			AllowOther:        true,
			Options:           []string{"default_permissions"},
			FsName:            opts.Dir,
			Name:              "halo",
			DirectMount:       true,
			DirectMountStrict: true,
			DirectMountFlags:  flags,
			MaxWrite:          op.MaxData,
			// Kernel passthrough would send writes straight to the
			// underlying file, past the journal and the peer; and the
			// kernel refuses to mix passthrough and ordinary opens of
			// one inode, so read-only opens cannot use it either.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
			Debug:                opts.Debug,
			Logger:               stdLogger,
		},
	}
	if flags == 0 {
		// go-fuse replaces 0 by its own default (nosuid, nodev).
		fsOpts.MountOptions.Options = append(fsOpts.MountOptions.Options, "suid", "dev")
	}
	raw := &rawFS{RawFileSystem: fs.NewNodeFS(f.rootNode, fsOpts), f: f}
	server, err := fuse.NewServer(raw, opts.Dir, &fsOpts.MountOptions)
	if err != nil {
		unix.Close(fd)
		f.cancel()
		return nil, fmt.Errorf("mount capture on %s: %w", opts.Dir, err)
	}
	f.server = server
	go func() {
		server.Serve()
		f.release()
	}()
	if err := server.WaitMount(); err != nil {
		server.Unmount()
		return nil, fmt.Errorf("mount capture on %s: %w", opts.Dir, err)
	}
	return f, nil
}

// Unmount unmounts the filesystem; it fails (EBUSY) while applications
// hold files open in it.
func (f *FS) Unmount() error {
	if err := f.server.Unmount(); err != nil {
		return fmt.Errorf("unmount capture %s: %w", f.opts.Dir, err)
	}
	return nil
}

// Wait returns when the filesystem was unmounted (by Unmount or from
// outside) and stopped serving.
func (f *FS) Wait() { <-f.done }

// Dir is the mounted directory.
func (f *FS) Dir() string { return f.opts.Dir }

func (f *FS) release() {
	f.closeOnce.Do(func() {
		f.cancel()
		unix.Close(f.rootFd)
		close(f.done)
	})
}

func (f *FS) newNode(r *fs.LoopbackRoot, parent *fs.Inode, name string, st *syscall.Stat_t) fs.InodeEmbedder {
	return &node{LoopbackNode: fs.LoopbackNode{RootData: r}, f: f}
}

// abs is a path reaching rel under the mount, for the calls that have no
// *at form. "/." makes the magic link itself be followed.
func (f *FS) abs(rel string) string {
	if rel == "." {
		return f.root + "/."
	}
	return f.root + "/" + rel
}

func (f *FS) newOp(k op.Kind, rel string) op.Op {
	return op.Op{Kind: k, Dir: f.opts.DirIndex, Path: rel}
}

// replicated reports whether an operation on rel goes to the peer.
func (f *FS) replicated(rel string, ok bool) bool { return ok && !f.excl.Excluded(rel) }

// run performs one modifying operation: journal mark, local apply (which
// may complete o: bytes written, resulting mode and times), submit. When
// repl is false only apply runs.
func (f *FS) run(o *op.Op, repl bool, sync bool, apply func(o *op.Op) syscall.Errno) syscall.Errno {
	if !repl {
		return apply(o)
	}
	t, err := f.mark(*o, false)
	if err != nil {
		f.log.Error("journal mark failed: operation refused", "op", o.Kind, "path", o.Path, "error", err)
		return syscall.EIO
	}
	if errno := apply(o); errno != 0 {
		f.opts.Journal.Done(t, false)
		return errno
	}
	err = f.submit(o, sync)
	f.opts.Journal.Done(t, true)
	if err != nil {
		return syscall.EIO
	}
	return 0
}

// mark marks o in the journal; nested says that o is a later step of an
// operation in flight (see NestedMarker).
func (f *FS) mark(o op.Op, nested bool) (Ticket, error) {
	if nm, ok := f.opts.Journal.(NestedMarker); ok && nested {
		return nm.MarkNested(o)
	}
	return f.opts.Journal.Mark(o)
}

// send submits an operation whose local effect is already on disk and
// journaled (content reproduced for the peer), marking it first; nested
// when it belongs to an operation in flight.
func (f *FS) send(o op.Op, nested bool) error {
	t, err := f.mark(o, nested)
	if err != nil {
		f.log.Error("journal mark failed", "op", o.Kind, "path", o.Path, "error", err)
		return err
	}
	err = f.submit(&o, false)
	f.opts.Journal.Done(t, true)
	return err
}

func (f *FS) submit(o *op.Op, sync bool) error {
	var err error
	if sync {
		err = f.opts.Sink.Sync(f.ctx, *o)
	} else {
		err = f.opts.Sink.Submit(f.ctx, *o)
	}
	if err != nil {
		f.log.Error("replication failed: operation applied locally but not promised", "op", o.Kind, "path", o.Path, "error", err)
	}
	return err
}

// rawFS serialises the namespace changes against every path computation
// until go-fuse has updated its tree, which it does after the node method
// returns.
type rawFS struct {
	fuse.RawFileSystem
	f *FS
}

func (r *rawFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	r.f.ns.Lock()
	defer r.f.ns.Unlock()
	return r.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (r *rawFS) Unlink(cancel <-chan struct{}, in *fuse.InHeader, name string) fuse.Status {
	r.f.ns.Lock()
	defer r.f.ns.Unlock()
	return r.RawFileSystem.Unlink(cancel, in, name)
}

func (r *rawFS) Rmdir(cancel <-chan struct{}, in *fuse.InHeader, name string) fuse.Status {
	r.f.ns.Lock()
	defer r.f.ns.Unlock()
	return r.RawFileSystem.Rmdir(cancel, in, name)
}

// The calls below reach the underlying tree by a path computed from
// go-fuse's tree; a rename between that computation and their answer
// would attach another object's attributes (or, for lookups, another
// object) to the name. They hold the namespace lock shared until go-fuse
// has recorded the answer.

func (r *rawFS) Lookup(cancel <-chan struct{}, in *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	r.f.ns.RLock()
	defer r.f.ns.RUnlock()
	return r.RawFileSystem.Lookup(cancel, in, name, out)
}

func (r *rawFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	r.f.ns.RLock()
	defer r.f.ns.RUnlock()
	return r.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (r *rawFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	r.f.ns.RLock()
	defer r.f.ns.RUnlock()
	return r.RawFileSystem.GetAttr(cancel, in, out)
}

func (r *rawFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	r.f.ns.RLock()
	defer r.f.ns.RUnlock()
	return r.RawFileSystem.Statx(cancel, in, out)
}

func (r *rawFS) Readlink(cancel <-chan struct{}, in *fuse.InHeader) ([]byte, fuse.Status) {
	r.f.ns.RLock()
	defer r.f.ns.RUnlock()
	return r.RawFileSystem.Readlink(cancel, in)
}

func (r *rawFS) GetXAttr(cancel <-chan struct{}, in *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	r.f.ns.RLock()
	defer r.f.ns.RUnlock()
	return r.RawFileSystem.GetXAttr(cancel, in, attr, dest)
}

func (r *rawFS) ListXAttr(cancel <-chan struct{}, in *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	r.f.ns.RLock()
	defer r.f.ns.RUnlock()
	return r.RawFileSystem.ListXAttr(cancel, in, dest)
}
