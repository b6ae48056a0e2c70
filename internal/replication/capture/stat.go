package capture

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// statx stats path relative to dirfd (AT_EMPTY_PATH with "" for dirfd
// itself) and returns the birth time too: go-fuse's loopback derives inode
// generations from it, and the inodes this package creates must get the
// same identity as a later lookup of the same file.
func statx(dirfd int, path string, flags int) (syscall.Stat_t, syscall.Timespec, error) {
	var st syscall.Stat_t
	var btime syscall.Timespec
	var x unix.Statx_t
	if err := unix.Statx(dirfd, path, flags, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x); err != nil {
		return st, btime, err
	}
	st.Dev = unix.Mkdev(x.Dev_major, x.Dev_minor)
	st.Ino = x.Ino
	st.Nlink = uint64(x.Nlink)
	st.Mode = uint32(x.Mode)
	st.Uid = x.Uid
	st.Gid = x.Gid
	st.Rdev = unix.Mkdev(x.Rdev_major, x.Rdev_minor)
	st.Size = int64(x.Size)
	st.Blksize = int64(x.Blksize)
	st.Blocks = int64(x.Blocks)
	st.Atim = syscall.Timespec{Sec: x.Atime.Sec, Nsec: int64(x.Atime.Nsec)}
	st.Mtim = syscall.Timespec{Sec: x.Mtime.Sec, Nsec: int64(x.Mtime.Nsec)}
	st.Ctim = syscall.Timespec{Sec: x.Ctime.Sec, Nsec: int64(x.Ctime.Nsec)}
	if x.Mask&unix.STATX_BTIME != 0 {
		btime = syscall.Timespec{Sec: x.Btime.Sec, Nsec: int64(x.Btime.Nsec)}
	}
	return st, btime, nil
}

func fstat(fd int) (syscall.Stat_t, syscall.Timespec, error) {
	return statx(fd, "", unix.AT_EMPTY_PATH)
}

// stableAttr is go-fuse loopback's inode identity (LoopbackRoot.idFromStat
// with genFromBtime), repeated because it is unexported: the underlying
// inode number with the device mixed in, the birth time as generation.
func (f *FS) stableAttr(st *syscall.Stat_t, btime syscall.Timespec) fs.StableAttr {
	swapped := (st.Dev << 32) | (st.Dev >> 32)
	swappedRootDev := (f.rootDev << 32) | (f.rootDev >> 32)
	gen := uint64(1)
	if btime.Sec != 0 || btime.Nsec != 0 {
		gen = uint64(btime.Sec)*1e9 + uint64(btime.Nsec)
	}
	return fs.StableAttr{Mode: st.Mode, Gen: gen, Ino: (swapped ^ swappedRootDev) ^ st.Ino}
}

func nsec(ts syscall.Timespec) int64 { return ts.Sec*1e9 + ts.Nsec }
