package capture

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/op"
)

// node is a file, directory or other object of the capture filesystem.
// Reads (lookup, getattr, readdir, readlink, getxattr) are go-fuse's
// loopback's, through the magic link to the directory under the mount;
// every modifying operation is overridden here.
type node struct {
	fs.LoopbackNode
	f *FS
	// mu keeps one object's data and metadata operations in order, from
	// the journal mark to the peer's acknowledgement.
	mu sync.Mutex
}

var (
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeSetxattrer     = (*node)(nil)
	_ fs.NodeRemovexattrer  = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeWriter         = (*node)(nil)
	_ fs.NodeWritever       = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeAllocater      = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeIoctler        = (*node)(nil)
	_ fs.NodeTmpfiler       = (*node)(nil)
	_ fs.NodeGetxattrer     = (*node)(nil)
	_ fs.NodeListxattrer    = (*node)(nil)
	_ fs.NodeStatxer        = (*node)(nil)
)

// rel is the node's path relative to the replicated directory ("." for
// the directory itself); false for an object no directory names any more
// (unlinked while open): its changes concern nobody but its holders.
func (n *node) rel() (string, bool) {
	root := n.f.rootNode.EmbeddedInode()
	var parts []string
	for p := n.EmbeddedInode(); p != root; {
		name, parent := p.Parent()
		if parent == nil {
			return "", false
		}
		parts = append(parts, name)
		p = parent
	}
	if len(parts) == 0 {
		return ".", true
	}
	slices.Reverse(parts)
	return strings.Join(parts, "/"), true
}

// child is the path of name in directory n, and n's own path.
func (n *node) child(name string) (rel, parent string, ok bool) {
	parent, ok = n.rel()
	if !ok {
		return "", "", false
	}
	return join(parent, name), parent, true
}

func join(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

func toErrno(err error) syscall.Errno { return fs.ToErrno(err) }

// newChild registers an object just created in directory n.
func (n *node) newChild(ctx context.Context, st *syscall.Stat_t, btime syscall.Timespec, out *fuse.EntryOut) *fs.Inode {
	out.Attr.FromStat(st)
	ch := n.f.newNode(n.RootData, n.EmbeddedInode(), "", st)
	return n.NewInode(ctx, ch, n.f.stableAttr(st, btime))
}

// own gives an object just created at rel (in directory parent) to the
// caller as a kernel would: owner the caller, group the caller's unless
// the directory is setgid; and the mode asked for, which the daemon's
// umask may have narrowed. It returns the object's final attributes.
func (f *FS) own(ctx context.Context, parent, rel string, want uint32) (syscall.Stat_t, syscall.Timespec, error) {
	st, btime, err := statx(f.rootFd, rel, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return st, btime, err
	}
	typ := st.Mode & syscall.S_IFMT
	changed := false
	if c, ok := fuse.FromContext(ctx); ok && f.asRoot {
		uid, gid := c.Uid, c.Gid
		if st.Gid != gid {
			if pst, _, err := statx(f.rootFd, parent, unix.AT_SYMLINK_NOFOLLOW); err == nil && pst.Mode&syscall.S_ISGID != 0 {
				gid = st.Gid
			}
		}
		if st.Uid != uid || st.Gid != gid {
			if err := unix.Fchownat(f.rootFd, rel, int(uid), int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return st, btime, fmt.Errorf("chown new %s: %w", rel, err)
			}
			changed = true
		}
	}
	if typ != syscall.S_IFLNK {
		if typ == syscall.S_IFDIR {
			// mkdir ignores setuid and setgid; the group's setgid
			// bit comes from the parent.
			want = want&01777 | st.Mode&syscall.S_ISGID
		}
		// A chown clears setuid and setgid: compare after it.
		if changed || st.Mode&07777 != want {
			if err := unix.Fchmodat(f.rootFd, rel, want, 0); err != nil {
				return st, btime, fmt.Errorf("chmod new %s: %w", rel, err)
			}
			changed = true
		}
	}
	if changed {
		return statx(f.rootFd, rel, unix.AT_SYMLINK_NOFOLLOW)
	}
	return st, btime, nil
}

// created fills a creating operation with what the peer must reproduce.
func created(o *op.Op, st *syscall.Stat_t) {
	o.Mode = st.Mode & 07777
	o.UID, o.GID = st.Uid, st.Gid
	o.Mtime = nsec(st.Mtim)
}

// openFlags are the flags for opening the underlying file: the kernel
// already handled creation, truncation and append offsets, and direct I/O
// would demand an alignment FUSE buffers do not have.
func openFlags(flags uint32) int {
	return int(flags&^(syscall.O_APPEND|syscall.O_DIRECT|syscall.O_CREAT|syscall.O_EXCL|syscall.O_TRUNC|syscall.O_NOCTTY|fuse.FMODE_EXEC)) | unix.O_CLOEXEC | unix.O_NOFOLLOW
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := n.f
	if f.opts.ReadOnly {
		return nil, nil, 0, syscall.EROFS
	}
	f.ns.RLock()
	defer f.ns.RUnlock()
	rel, parent, ok := n.child(name)
	if !ok {
		return nil, nil, 0, syscall.ENOENT
	}
	fd := -1
	var st syscall.Stat_t
	var btime syscall.Timespec
	o := f.newOp(op.Create, rel)
	errno := f.run(&o, f.replicated(rel, true), false, func(o *op.Op) syscall.Errno {
		var err error
		// Exclusive here even when the application did not ask: the
		// kernel creates only names it found absent, and the peer must
		// create, not reuse.
		fd, err = unix.Openat(f.rootFd, rel, openFlags(flags)|unix.O_CREAT|unix.O_EXCL, mode&07777)
		if err != nil {
			return toErrno(err)
		}
		if st, btime, err = f.own(ctx, parent, rel, mode&07777); err != nil {
			unix.Close(fd)
			fd = -1
			unix.Unlinkat(f.rootFd, rel, 0)
			return toErrno(err)
		}
		created(o, &st)
		return 0
	})
	if errno != 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, nil, 0, errno
	}
	ch := n.newChild(ctx, &st, btime, out)
	return ch, newHandle(fd, flags), f.openFlags(), 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeEntry(ctx, name, op.Mkdir, "", mode&07777, unix.AT_REMOVEDIR, out,
		func(rel string) error { return unix.Mkdirat(n.f.rootFd, rel, mode&07777) },
		func(*op.Op, *syscall.Stat_t) {})
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeEntry(ctx, name, op.Mknod, "", mode&07777, 0, out,
		func(rel string) error { return unix.Mknodat(n.f.rootFd, rel, mode, int(rdev)) },
		func(o *op.Op, st *syscall.Stat_t) {
			o.Mode = st.Mode // with the file type
			o.Dev = st.Rdev
		})
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeEntry(ctx, name, op.Symlink, target, 0, 0, out,
		func(rel string) error { return unix.Symlinkat(target, n.f.rootFd, rel) },
		func(o *op.Op, _ *syscall.Stat_t) { o.Mode = 0 })
}

// makeEntry creates the entry name with mk, gives it the caller's
// ownership and perm, and replicates the creation as kind (with target,
// a symlink's; fill adds what the created entry carries). An entry that cannot be owned is removed again
// (unlinkat with undoFlags): nothing half-made stays or is replicated.
func (n *node) makeEntry(ctx context.Context, name string, kind op.Kind, target string, perm uint32, undoFlags int, out *fuse.EntryOut,
	mk func(rel string) error, fill func(o *op.Op, st *syscall.Stat_t)) (*fs.Inode, syscall.Errno) {
	f := n.f
	if f.opts.ReadOnly {
		return nil, syscall.EROFS
	}
	f.ns.RLock()
	defer f.ns.RUnlock()
	rel, parent, ok := n.child(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	var st syscall.Stat_t
	var btime syscall.Timespec
	o := f.newOp(kind, rel)
	o.Target = target
	errno := f.run(&o, f.replicated(rel, true), false, func(o *op.Op) syscall.Errno {
		if err := mk(rel); err != nil {
			return toErrno(err)
		}
		var err error
		if st, btime, err = f.own(ctx, parent, rel, perm); err != nil {
			unix.Unlinkat(f.rootFd, rel, undoFlags)
			return toErrno(err)
		}
		created(o, &st)
		fill(o, &st)
		return 0
	})
	if errno != 0 {
		return nil, errno
	}
	return n.newChild(ctx, &st, btime, out), 0
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.f
	if f.opts.ReadOnly {
		return nil, syscall.EROFS
	}
	tn, ok := target.(*node)
	if !ok || tn.f != f {
		return nil, syscall.EXDEV
	}
	f.ns.RLock()
	defer f.ns.RUnlock()
	rel, _, ok := n.child(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	trel, ok := tn.rel()
	if !ok {
		// Linking an unnamed file needs its descriptor, which LINK
		// does not carry (go-fuse's loopback answers the same).
		return nil, syscall.EXDEV
	}
	exNew, exTarget := f.excl.Excluded(rel), f.excl.Excluded(trel)
	if exNew != exTarget {
		// One file under a replicated and an excluded name: its
		// changes would be replicated or not depending on the name
		// go-fuse remembers. Refused like a link across filesystems.
		return nil, syscall.EXDEV
	}
	o := f.newOp(op.Link, rel)
	o.Target = trel
	errno := f.run(&o, !exNew, false, func(*op.Op) syscall.Errno {
		return toErrno(unix.Linkat(f.rootFd, trel, f.rootFd, rel, 0))
	})
	if errno != 0 {
		return nil, errno
	}
	st, btime, err := statx(f.rootFd, rel, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return nil, toErrno(err)
	}
	return n.newChild(ctx, &st, btime, out), 0
}

// Unlink, Rmdir and Rename run with the namespace lock held exclusively
// (rawFS).

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, op.Unlink, 0)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, op.Rmdir, unix.AT_REMOVEDIR)
}

func (n *node) remove(name string, k op.Kind, flags int) syscall.Errno {
	f := n.f
	if f.opts.ReadOnly {
		return syscall.EROFS
	}
	rel, _, ok := n.child(name)
	if !ok {
		return syscall.ENOENT
	}
	o := f.newOp(k, rel)
	return f.run(&o, f.replicated(rel, true), false, func(*op.Op) syscall.Errno {
		return toErrno(unix.Unlinkat(f.rootFd, rel, flags))
	})
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	f := n.f
	if f.opts.ReadOnly {
		return syscall.EROFS
	}
	np, ok := newParent.(*node)
	if !ok || np.f != f {
		return syscall.EXDEV
	}
	oldRel, _, ok1 := n.child(name)
	newRel, _, ok2 := np.child(newName)
	if !ok1 || !ok2 {
		return syscall.ENOENT
	}
	plan, errno := f.renamePlan(oldRel, newRel, flags)
	if errno != 0 {
		return errno
	}
	return f.runPlan(plan, func() syscall.Errno {
		return toErrno(unix.Renameat2(f.rootFd, oldRel, f.rootFd, newRel, uint(flags)))
	})
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f := n.f
	if f.opts.ReadOnly && (flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0) {
		return nil, 0, syscall.EROFS
	}
	f.ns.RLock()
	rel, ok := n.rel()
	fd, err := unix.Openat(f.rootFd, rel, openFlags(flags), 0)
	f.ns.RUnlock()
	if !ok {
		return nil, 0, syscall.ENOENT
	}
	if err != nil {
		return nil, 0, toErrno(err)
	}
	return newHandle(fd, flags), f.openFlags(), 0
}

// openFlags are the FOPEN flags of every open: on the primary the mount is
// the only writer, so the page cache stays valid across opens; on the
// secondary replication writes underneath and nothing is kept.
func (f *FS) openFlags() uint32 {
	if f.opts.ReadOnly {
		return 0
	}
	return fuse.FOPEN_KEEP_CACHE
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f := n.f
	f.ns.RLock()
	rel, ok := n.rel()
	fd, err := unix.Openat(f.rootFd, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	f.ns.RUnlock()
	if !ok {
		return nil, 0, syscall.ENOENT
	}
	if err != nil {
		return nil, 0, toErrno(err)
	}
	ds, errno := fs.NewLoopbackDirStreamFd(fd)
	if errno != 0 {
		unix.Close(fd)
		return nil, 0, errno
	}
	return &dirHandle{ds: ds, fd: fd}, 0, 0
}

func (n *node) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	h, ok := fh.(*handle)
	if !ok {
		return 0, syscall.EBADF
	}
	f := n.f
	if f.opts.ReadOnly {
		return 0, syscall.EROFS
	}
	f.ns.RLock()
	defer f.ns.RUnlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	rel, ok := n.rel()
	repl := f.replicated(rel, ok)
	written := 0
	for written < len(data) {
		chunk := data[written:min(len(data), written+op.MaxData)]
		o := f.newOp(op.Write, rel)
		o.Off, o.Data = off+int64(written), chunk
		nw := 0
		errno := f.run(&o, repl, h.sync, func(o *op.Op) syscall.Errno {
			var err error
			if nw, err = unix.Pwrite(h.fd, o.Data, o.Off); nw <= 0 {
				if err == nil {
					err = syscall.EIO
				}
				nw = 0
				return toErrno(err)
			}
			o.Data = o.Data[:nw]
			if repl {
				o.Mtime = fdMtime(h.fd)
			}
			return 0
		})
		if errno != 0 {
			if written > 0 {
				break
			}
			return 0, errno
		}
		written += nw
		if nw < len(chunk) {
			break
		}
	}
	return uint32(written), 0
}

func (n *node) Writev(ctx context.Context, fh fs.FileHandle, data [][]byte, off int64) (uint32, syscall.Errno) {
	// One operation carries one buffer.
	return n.Write(ctx, fh, slices.Concat(data...), off)
}

// fdMtime is the modification time the peer must give the file after the
// operation (0: unknown, the peer's own clock then).
func fdMtime(fd int) int64 {
	st, _, err := fstat(fd)
	if err != nil {
		return 0
	}
	return nsec(st.Mtim)
}

func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	f := n.f
	fd := -1
	switch h := fh.(type) {
	case *handle:
		fd = h.fd
	case *dirHandle:
		fd = h.fd
	}
	f.ns.RLock()
	defer f.ns.RUnlock()
	rel, ok := n.rel()
	if fd < 0 {
		if !ok {
			return syscall.ENOENT
		}
		var err error
		if fd, err = unix.Openat(f.rootFd, rel, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0); err != nil {
			return toErrno(err)
		}
		defer unix.Close(fd)
	}
	dataOnly := flags&fsyncDataOnly != 0
	var err error
	if dataOnly {
		err = unix.Fdatasync(fd)
	} else {
		err = unix.Fsync(fd)
	}
	if err != nil {
		return toErrno(err)
	}
	if f.opts.ReadOnly || !f.replicated(rel, ok) {
		return 0
	}
	o := f.newOp(op.Fsync, rel)
	if dataOnly {
		o.Flags = op.DataOnly
	}
	if err := f.submit(&o, true); err != nil {
		return syscall.EIO
	}
	return 0
}

func (n *node) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	h, ok := fh.(*handle)
	if !ok {
		return syscall.EBADF
	}
	f := n.f
	if f.opts.ReadOnly {
		return syscall.EROFS
	}
	f.ns.RLock()
	defer f.ns.RUnlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	rel, ok := n.rel()
	repl := f.replicated(rel, ok)
	o := f.newOp(op.Fallocate, rel)
	o.Off, o.Size, o.Flags = int64(off), int64(size), mode
	return f.run(&o, repl, false, func(o *op.Op) syscall.Errno {
		if err := unix.Fallocate(h.fd, mode, int64(off), int64(size)); err != nil {
			return toErrno(err)
		}
		if repl {
			o.Mtime = fdMtime(h.fd)
		}
		return 0
	})
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, op.MaxData); return &b }}

// CopyFileRange copies through the daemon as a write: the peer needs the
// bytes, and a short copy is allowed (callers loop).
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	hin, ok1 := fhIn.(*handle)
	dst, ok2 := out.Operations().(*node)
	if !ok1 || !ok2 || flags != 0 {
		return 0, syscall.EINVAL
	}
	if n.f.opts.ReadOnly {
		return 0, syscall.EROFS
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := (*bp)[:min(length, op.MaxData)]
	nr, err := unix.Pread(hin.fd, buf, int64(offIn))
	if err != nil {
		return 0, toErrno(err)
	}
	if nr == 0 {
		return 0, 0
	}
	return dst.Write(ctx, fhOut, buf[:nr], int64(offOut))
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := n.f
	if f.opts.ReadOnly {
		return syscall.EROFS
	}
	f.ns.RLock()
	defer f.ns.RUnlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	rel, named := n.rel()
	repl := f.replicated(rel, named)
	fd := -1
	if h, ok := fh.(*handle); ok {
		fd = h.fd
	}
	if !named && fd < 0 {
		return syscall.ENOENT
	}
	isLink := n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFLNK

	// Owner before mode: a chown clears setuid and setgid.
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		o := f.newOp(op.Chown, rel)
		o.UID, o.GID = op.NoID, op.NoID
		if uok {
			o.UID = uid
		}
		if gok {
			o.GID = gid
		}
		errno := f.run(&o, repl, false, func(o *op.Op) syscall.Errno {
			if fd >= 0 {
				return toErrno(unix.Fchown(fd, int(int32(o.UID)), int(int32(o.GID))))
			}
			return toErrno(unix.Fchownat(f.rootFd, rel, int(int32(o.UID)), int(int32(o.GID)), unix.AT_SYMLINK_NOFOLLOW))
		})
		if errno != 0 {
			return errno
		}
	}
	if mode, ok := in.GetMode(); ok {
		if isLink {
			return syscall.EOPNOTSUPP
		}
		o := f.newOp(op.Chmod, rel)
		o.Mode = mode
		errno := f.run(&o, repl, false, func(o *op.Op) syscall.Errno {
			if fd >= 0 {
				return toErrno(unix.Fchmod(fd, mode))
			}
			return toErrno(unix.Fchmodat(f.rootFd, rel, mode, 0))
		})
		if errno != 0 {
			return errno
		}
	}
	// Size before times, so that an explicit mtime is not clobbered.
	if size, ok := in.GetSize(); ok {
		o := f.newOp(op.Truncate, rel)
		o.Size = int64(size)
		errno := f.run(&o, repl, false, func(o *op.Op) syscall.Errno {
			var err error
			if fd >= 0 {
				err = unix.Ftruncate(fd, o.Size)
			} else {
				err = unix.Truncate(f.abs(rel), o.Size)
			}
			if err != nil {
				return toErrno(err)
			}
			if repl {
				if st, _, err := statx(f.rootFd, rel, unix.AT_SYMLINK_NOFOLLOW); err == nil {
					o.Mtime = nsec(st.Mtim)
				}
			}
			return 0
		})
		if errno != 0 {
			return errno
		}
	}
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if mok || aok {
		o := f.newOp(op.Utimes, rel)
		o.Atime, o.Mtime = op.OmitTime, op.OmitTime
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		// "Now" is resolved here (go-fuse reads the clock), so the
		// peer gets the same instant.
		if aok {
			o.Atime = atime.UnixNano()
			ts[0] = unix.NsecToTimespec(o.Atime)
		}
		if mok {
			o.Mtime = mtime.UnixNano()
			ts[1] = unix.NsecToTimespec(o.Mtime)
		}
		errno := f.run(&o, repl, false, func(o *op.Op) syscall.Errno {
			if !named {
				return toErrno(unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), ts, 0))
			}
			return toErrno(unix.UtimesNanoAt(f.rootFd, rel, ts, unix.AT_SYMLINK_NOFOLLOW))
		})
		if errno != 0 {
			return errno
		}
	}
	var st syscall.Stat_t
	var err error
	if fd >= 0 {
		st, _, err = fstat(fd)
	} else {
		st, _, err = statx(f.rootFd, rel, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return toErrno(err)
	}
	out.FromStat(&st)
	return 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.xattr(op.Setxattr, attr, data, flags)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.xattr(op.Removexattr, attr, nil, 0)
}

func (n *node) xattr(k op.Kind, attr string, data []byte, flags uint32) syscall.Errno {
	f := n.f
	if f.opts.ReadOnly {
		return syscall.EROFS
	}
	f.ns.RLock()
	defer f.ns.RUnlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	rel, ok := n.rel()
	if !ok {
		return syscall.ENOENT
	}
	o := f.newOp(k, rel)
	o.Name, o.Data, o.Flags = attr, data, flags
	return f.run(&o, f.replicated(rel, true), false, func(o *op.Op) syscall.Errno {
		if k == op.Setxattr {
			return toErrno(unix.Lsetxattr(f.abs(rel), attr, data, int(flags)))
		}
		return toErrno(unix.Lremovexattr(f.abs(rel), attr))
	})
}

// The loopback reaches the directory itself through the magic link, which
// the l* calls would not follow.

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if n.EmbeddedInode() != n.f.rootNode.EmbeddedInode() {
		return n.LoopbackNode.Getxattr(ctx, attr, dest)
	}
	sz, err := unix.Getxattr(n.f.abs("."), attr, dest)
	return uint32(sz), toErrno(err)
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if n.EmbeddedInode() != n.f.rootNode.EmbeddedInode() {
		return n.LoopbackNode.Listxattr(ctx, dest)
	}
	sz, err := unix.Listxattr(n.f.abs("."), dest)
	return uint32(sz), toErrno(err)
}

func (n *node) Statx(ctx context.Context, fh fs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if n.EmbeddedInode() != n.f.rootNode.EmbeddedInode() {
		return n.LoopbackNode.Statx(ctx, fh, flags, mask, out)
	}
	var st unix.Statx_t
	if err := unix.Statx(n.f.rootFd, "", unix.AT_EMPTY_PATH|int(flags)&^unix.AT_SYMLINK_NOFOLLOW, int(mask), &st); err != nil {
		return toErrno(err)
	}
	out.FromStatx(&st)
	return 0
}

// Ioctl refuses every ioctl: the loopback would pass them to the
// underlying file, where some (chattr, reflinks) change it unseen.
func (n *node) Ioctl(ctx context.Context, fh fs.FileHandle, cmd uint32, arg uint64, input, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}

// Tmpfile is refused: an O_TMPFILE file has no name to replicate, and
// linking it later (linkat through /proc) reaches FUSE without its
// descriptor. Applications fall back to create and rename.
func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}
