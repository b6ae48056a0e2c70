package capture

import (
	"context"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fsyncDataOnly is FUSE's FSYNC_FDATASYNC flag: fdatasync rather than fsync.
const fsyncDataOnly = 1

// handle is an open file. It forwards reads to go-fuse's loopback file
// and deliberately lacks its write, setattr, allocate, fsync, ioctl and
// passthrough methods: those are the node's, which replicates them.
type handle struct {
	lf   *fs.LoopbackFile
	fd   int  // lf's descriptor, valid until Release
	sync bool // opened O_SYNC or O_DSYNC: every write is durable on both nodes
}

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileLseeker   = (*handle)(nil)
	_ fs.FileFlusher   = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileGetattrer = (*handle)(nil)
	_ fs.FileStatxer   = (*handle)(nil)
)

func newHandle(fd int, flags uint32) *handle {
	return &handle{
		lf:   fs.NewLoopbackFileFromOS(os.NewFile(uintptr(fd), "")),
		fd:   fd,
		sync: flags&(syscall.O_SYNC|syscall.O_DSYNC) != 0,
	}
}

func (h *handle) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return h.lf.Read(ctx, buf, off)
}

func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return h.lf.Lseek(ctx, off, whence)
}

func (h *handle) Flush(ctx context.Context) syscall.Errno { return h.lf.Flush(ctx) }

func (h *handle) Release(ctx context.Context) syscall.Errno { return h.lf.Release(ctx) }

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.lf.Getattr(ctx, out)
}

func (h *handle) Statx(ctx context.Context, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return h.lf.Statx(ctx, flags, mask, out)
}

// dirHandle is an open directory. It has no Fsyncdir, so that fsync on a
// directory reaches the node, which replicates it.
type dirHandle struct {
	ds fs.DirStream
	fd int
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.ds.(fs.FileReaddirenter).Readdirent(ctx)
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.ds.(fs.FileSeekdirer).Seekdir(ctx, off)
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	d.ds.(fs.FileReleasedirer).Releasedir(ctx, flags)
}
