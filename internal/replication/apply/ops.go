package apply

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/op"
)

// applier applies one operation and gathers what must be synced for it.
type applier struct {
	t       *Tree
	o       *op.Op
	durable bool
	uses    []*entry           // references taken while applying
	syncs   map[*entry]syncHow // each holds a reference
	fs      bool               // sync the whole filesystem of o.Dir
}

func (a *applier) releaseUses() {
	for _, e := range a.uses {
		a.t.release(e)
	}
	a.uses = nil
}

// need records that e must be synced for the operation to be durable.
func (a *applier) need(e *entry, how syncHow) {
	if a.syncs == nil {
		a.syncs = map[*entry]syncHow{}
	}
	if old, ok := a.syncs[e]; ok {
		a.syncs[e] = max(old, how)
		return
	}
	a.t.hold(e)
	a.syncs[e] = how
}

func (a *applier) syncNow() error {
	if len(a.syncs) == 0 && !a.fs {
		return nil
	}
	fs := map[int]bool{}
	if a.fs {
		fs[int(a.o.Dir)] = true
	}
	return a.t.syncEntries(a.syncs, fs)
}

func (a *applier) deferSyncs() {
	t := a.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for e, how := range a.syncs {
		if old, ok := t.pending[e]; ok {
			t.pending[e] = max(old, how)
			t.releaseLocked(e) // pending holds its own reference already
		} else {
			t.pending[e] = how
		}
	}
	if a.fs {
		t.syncfs[int(a.o.Dir)] = true
	}
}

func (a *applier) dropSyncs() {
	for e := range a.syncs {
		a.t.release(e)
	}
}

func (a *applier) root() *entry { return a.t.roots[a.o.Dir] }

// use keeps e referenced until the operation ends.
func (a *applier) use(e *entry) *entry {
	a.uses = append(a.uses, e)
	return e
}

// openBeneath resolves p inside the tree without following any symlink.
func (a *applier) openBeneath(p string, flags uint64, mode uint64) (int, error) {
	for try := 0; ; try++ {
		fd, err := unix.Openat2(a.root().fd, p, &unix.OpenHow{
			Flags:   flags | unix.O_CLOEXEC | unix.O_NOFOLLOW,
			Mode:    mode,
			Resolve: resolveFlags,
		})
		if (err == unix.EINTR || err == unix.EAGAIN) && try < maxOpenRetries {
			// EAGAIN: a concurrent rename elsewhere on the system made the
			// kernel give up a RESOLVE_BENEATH lookup; retrying is safe.
			continue
		}
		return fd, err
	}
}

// maxOpenRetries bounds the retries of an interrupted lookup.
const maxOpenRetries = 100

// dirEntry returns a descriptor of the directory p.
func (a *applier) dirEntry(p string) (*entry, error) {
	if p == "." {
		r := a.root()
		a.t.hold(r)
		return a.use(r), nil
	}
	k := key{a.o.Dir, p}
	if e := a.t.dirs.get(k); e != nil {
		return a.use(e), nil
	}
	fd, err := a.openBeneath(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open directory %q: %w", p, err)
	}
	return a.use(a.t.dirs.add(k, fd, true)), nil
}

// parent returns the directory holding p and p's final name.
func (a *applier) parent(p string) (*entry, string, error) {
	dir, name := split(p)
	e, err := a.dirEntry(dir)
	return e, name, err
}

// fileEntry returns a read-write descriptor of the regular file p. The
// file is looked at through an O_PATH descriptor first, so that a device
// node or a FIFO is never opened.
func (a *applier) fileEntry(p string) (*entry, error) {
	k := key{a.o.Dir, p}
	if e := a.t.files.get(k); e != nil {
		return a.use(e), nil
	}
	pfd, err := a.openBeneath(p, unix.O_PATH, 0)
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", p, err)
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, fmt.Errorf("stat %q: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("open %q: %s is not a regular file", p, fileType(st.Mode))
	}
	fd, err := unix.Open(procFD(pfd), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen %q for writing: %w", p, err)
	}
	return a.use(a.t.files.add(k, fd, false)), nil
}

// objectEntry returns a descriptor to sync for a metadata change of p
// (a regular file or a directory); nil with the whole filesystem recorded
// for anything else.
func (a *applier) needObject(p string, how syncHow) error {
	if p == "." {
		a.need(a.root(), syncFull)
		return nil
	}
	pfd, err := a.openBeneath(p, unix.O_PATH, 0)
	if err != nil {
		return fmt.Errorf("open %q: %w", p, err)
	}
	var st unix.Stat_t
	err = unix.Fstat(pfd, &st)
	unix.Close(pfd)
	if err != nil {
		return fmt.Errorf("stat %q: %w", p, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e, err := a.fileEntry(p)
		if err != nil {
			return err
		}
		a.need(e, how)
	case unix.S_IFDIR:
		e, err := a.dirEntry(p)
		if err != nil {
			return err
		}
		a.need(e, syncFull)
	default:
		// A symlink or a special file cannot be opened to be synced; its
		// inode lives in the filesystem's journal, which syncfs commits.
		a.fs = true
	}
	return nil
}

func procFD(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("file of type %#o", mode&unix.S_IFMT)
}

// lstatAt stats name in dir without following it.
func lstatAt(dir *entry, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dir.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

func (a *applier) run() error {
	o := a.o
	switch o.Kind {
	case op.Write:
		return a.write()
	case op.Truncate:
		e, err := a.fileEntry(o.Path)
		if err != nil {
			return err
		}
		if err := unix.Ftruncate(e.fd, o.Size); err != nil {
			return err
		}
		if err := a.keepMtime(e); err != nil {
			return err
		}
		a.needIf(e, syncData)
	case op.Fallocate:
		return a.fallocate()
	case op.Create:
		return a.create()
	case op.Mkdir:
		return a.mkdir()
	case op.Mknod:
		return a.mknod()
	case op.Symlink:
		return a.symlink()
	case op.Link:
		return a.link()
	case op.Rename:
		return a.rename()
	case op.Unlink, op.Rmdir:
		return a.remove()
	case op.Chmod:
		return a.chmod()
	case op.Chown:
		return a.metadata(func(dir *entry, name string, flags int) error {
			return unix.Fchownat(dir.fd, name, id(o.UID), id(o.GID), flags)
		})
	case op.Utimes:
		ts := []unix.Timespec{timespec(o.Atime), timespec(o.Mtime)}
		return a.metadata(func(dir *entry, name string, flags int) error {
			return unix.UtimesNanoAt(dir.fd, name, ts, flags)
		})
	case op.Setxattr:
		return a.xattr(func(dir *entry, name string) error {
			if name == "" {
				return unix.Fsetxattr(dir.fd, o.Name, o.Data, 0)
			}
			return unix.Lsetxattr(procFD(dir.fd)+"/"+name, o.Name, o.Data, 0)
		})
	case op.Removexattr:
		return a.xattr(func(dir *entry, name string) error {
			var err error
			if name == "" {
				err = unix.Fremovexattr(dir.fd, o.Name)
			} else {
				err = unix.Lremovexattr(procFD(dir.fd)+"/"+name, o.Name)
			}
			if err == unix.ENODATA {
				return nil
			}
			return err
		})
	case op.Fsync:
		how := syncFull
		if o.Flags&op.DataOnly != 0 {
			how = syncData
		}
		return a.needObject(o.Path, how)
	default:
		return fmt.Errorf("%w: unknown kind %d", op.ErrInvalid, o.Kind)
	}
	return nil
}

// needIf records e when the operation must be durable.
func (a *applier) needIf(e *entry, how syncHow) {
	if a.durable {
		a.need(e, how)
	}
}

func (a *applier) write() error {
	o := a.o
	e, err := a.fileEntry(o.Path)
	if err != nil {
		return err
	}
	data, off := o.Data, o.Off
	for len(data) > 0 {
		n, err := unix.Pwrite(e.fd, data, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write %d bytes at %d: %w", len(data), off, err)
		}
		if n == 0 {
			return fmt.Errorf("write %d bytes at %d: no progress", len(data), off)
		}
		data, off = data[n:], off+int64(n)
	}
	if err := a.keepMtime(e); err != nil {
		return err
	}
	a.needIf(e, syncData)
	return nil
}

// zeroChunk is what a fallocate that the target filesystem cannot do is
// emulated with.
var zeroChunk = make([]byte, 1<<20)

func (a *applier) fallocate() error {
	o := a.o
	e, err := a.fileEntry(o.Path)
	if err != nil {
		return err
	}
	err = unix.Fallocate(e.fd, o.Flags, o.Off, o.Size)
	if err == unix.EOPNOTSUPP {
		// The primary's filesystem could, this one cannot: reproduce the
		// bytes, not the allocation.
		err = a.emulateFallocate(e)
	}
	if err != nil {
		return fmt.Errorf("fallocate mode %#x, %d bytes at %d: %w", o.Flags, o.Size, o.Off, err)
	}
	if err := a.keepMtime(e); err != nil {
		return err
	}
	a.needIf(e, syncData)
	return nil
}

func (a *applier) emulateFallocate(e *entry) error {
	o := a.o
	var st unix.Stat_t
	if err := unix.Fstat(e.fd, &st); err != nil {
		return err
	}
	keepSize := o.Flags&unix.FALLOC_FL_KEEP_SIZE != 0
	end := o.Off + o.Size
	switch o.Flags &^ unix.FALLOC_FL_KEEP_SIZE {
	case 0:
		if !keepSize && end > st.Size {
			return unix.Ftruncate(e.fd, end)
		}
		return nil
	case unix.FALLOC_FL_PUNCH_HOLE, unix.FALLOC_FL_ZERO_RANGE:
		zeroEnd := end
		if keepSize || o.Flags&unix.FALLOC_FL_PUNCH_HOLE != 0 {
			zeroEnd = min(end, st.Size)
		}
		for off := o.Off; off < zeroEnd; {
			n := int(min(int64(len(zeroChunk)), zeroEnd-off))
			w, err := unix.Pwrite(e.fd, zeroChunk[:n], off)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return err
			}
			off += int64(w)
		}
		if !keepSize && o.Flags&unix.FALLOC_FL_PUNCH_HOLE == 0 && end > st.Size {
			return unix.Ftruncate(e.fd, end)
		}
		return nil
	}
	return unix.EOPNOTSUPP
}

func (a *applier) create() error {
	o := a.o
	if t := o.Mode & unix.S_IFMT; t != 0 && t != unix.S_IFREG {
		return fmt.Errorf("create with mode %#o: not a regular file", o.Mode)
	}
	perm := o.Mode & 0o7777
	a.t.invalidate(o.Dir, o.Path)
	fd, err := a.openBeneath(o.Path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, uint64(perm))
	var e *entry
	switch {
	case err == nil:
		e = a.use(a.t.files.add(key{o.Dir, o.Path}, fd, false))
	case err == unix.EEXIST:
		// Applied before: leave what Create leaves, an empty file.
		if e, err = a.fileEntry(o.Path); err != nil {
			return err
		}
		if err := unix.Ftruncate(e.fd, 0); err != nil {
			return err
		}
	default:
		return err
	}
	// Owner first: chown clears the set-user and set-group ID bits. Then
	// the exact mode (the process umask applied to the creation's).
	if err := unix.Fchown(e.fd, id(o.UID), id(o.GID)); err != nil {
		return err
	}
	if err := unix.Fchmod(e.fd, perm); err != nil {
		return err
	}
	if err := a.keepMtime(e); err != nil {
		return err
	}
	if a.durable {
		a.need(e, syncFull)
		return a.needParent(o.Path)
	}
	return nil
}

// needParent records p's directory for a durable namespace change.
func (a *applier) needParent(p string) error {
	if !a.durable {
		return nil
	}
	dir, _, err := a.parent(p)
	if err != nil {
		return err
	}
	a.need(dir, syncFull)
	return nil
}

func (a *applier) mkdir() error {
	o := a.o
	if t := o.Mode & unix.S_IFMT; t != 0 && t != unix.S_IFDIR {
		return fmt.Errorf("mkdir with mode %#o: not a directory", o.Mode)
	}
	dir, name, err := a.parent(o.Path)
	if err != nil {
		return err
	}
	a.t.invalidate(o.Dir, o.Path)
	if err := unix.Mkdirat(dir.fd, name, o.Mode&0o7777); err == unix.EEXIST {
		st, serr := lstatAt(dir, name)
		if serr != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return err
		}
	} else if err != nil {
		return err
	}
	if err := a.finishCreated(dir, name, true); err != nil {
		return err
	}
	a.needIf(dir, syncFull)
	return nil
}

// finishCreated gives a new object made through its parent its owner,
// mode (unless a symlink) and modification time, as the operation says.
func (a *applier) finishCreated(dir *entry, name string, chmod bool) error {
	o := a.o
	if err := unix.Fchownat(dir.fd, name, id(o.UID), id(o.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if chmod {
		if err := chmodAt(dir, name, o.Mode&0o7777); err != nil {
			return err
		}
	}
	if o.Mtime == 0 || o.Mtime == op.OmitTime {
		return nil
	}
	ts := []unix.Timespec{timespec(op.OmitTime), timespec(o.Mtime)}
	return unix.UtimesNanoAt(dir.fd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// keepMtime gives a file the modification time the primary reported after
// the same change (Op.Mtime; 0: none reported).
func (a *applier) keepMtime(e *entry) error {
	o := a.o
	if o.Mtime == 0 || o.Mtime == op.OmitTime {
		return nil
	}
	ts := []unix.Timespec{timespec(op.OmitTime), timespec(o.Mtime)}
	return unix.UtimesNanoAt(e.fd, "", ts, unix.AT_EMPTY_PATH)
}

func (a *applier) mknod() error {
	o := a.o
	typ := o.Mode & unix.S_IFMT
	switch typ {
	case unix.S_IFREG, unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFCHR, unix.S_IFBLK:
	default:
		return fmt.Errorf("mknod with mode %#o: not a file type mknod makes", o.Mode)
	}
	dir, name, err := a.parent(o.Path)
	if err != nil {
		return err
	}
	a.t.invalidate(o.Dir, o.Path)
	if err := unix.Mknodat(dir.fd, name, typ|o.Mode&0o7777, int(o.Dev)); err == unix.EEXIST {
		st, serr := lstatAt(dir, name)
		isDev := typ == unix.S_IFCHR || typ == unix.S_IFBLK
		if serr != nil || st.Mode&unix.S_IFMT != typ || (isDev && st.Rdev != o.Dev) {
			return err
		}
	} else if err != nil {
		return err
	}
	if err := a.finishCreated(dir, name, true); err != nil {
		return err
	}
	a.needIf(dir, syncFull)
	return nil
}

func (a *applier) symlink() error {
	o := a.o
	dir, name, err := a.parent(o.Path)
	if err != nil {
		return err
	}
	a.t.invalidate(o.Dir, o.Path)
	if err := unix.Symlinkat(o.Target, dir.fd, name); err == unix.EEXIST {
		if got, rerr := readlinkAt(dir, name); rerr != nil || got != o.Target {
			return err
		}
	} else if err != nil {
		return err
	}
	if err := a.finishCreated(dir, name, false); err != nil {
		return err
	}
	a.needIf(dir, syncFull)
	return nil
}

func readlinkAt(dir *entry, name string) (string, error) {
	buf := make([]byte, op.MaxPath+1)
	n, err := unix.Readlinkat(dir.fd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func (a *applier) link() error {
	o := a.o
	oldDir, oldName, err := a.parent(o.Target)
	if err != nil {
		return err
	}
	newDir, newName, err := a.parent(o.Path)
	if err != nil {
		return err
	}
	a.t.invalidate(o.Dir, o.Path)
	// Flags 0: link the name itself, never what a symlink points to.
	if err := unix.Linkat(oldDir.fd, oldName, newDir.fd, newName, 0); err == unix.EEXIST {
		st1, err1 := lstatAt(oldDir, oldName)
		st2, err2 := lstatAt(newDir, newName)
		if err1 != nil || err2 != nil || st1.Dev != st2.Dev || st1.Ino != st2.Ino {
			return err
		}
	} else if err != nil {
		return err
	}
	a.needIf(newDir, syncFull)
	return nil
}

func (a *applier) rename() error {
	o := a.o
	const allowed = unix.RENAME_NOREPLACE | unix.RENAME_EXCHANGE
	if o.Flags&^allowed != 0 || o.Flags == allowed {
		return fmt.Errorf("rename flags %#x not supported", o.Flags)
	}
	if o.Path == "." || o.Target == "." {
		return fmt.Errorf("%w: rename of the replicated directory", op.ErrInvalid)
	}
	oldDir, oldName, err := a.parent(o.Path)
	if err != nil {
		return err
	}
	newDir, newName, err := a.parent(o.Target)
	if err != nil {
		return err
	}
	// Whatever happens, cached descriptors under both names may now be
	// wrong.
	a.t.invalidate(o.Dir, o.Path)
	a.t.invalidate(o.Dir, o.Target)
	if err := unix.Renameat2(oldDir.fd, oldName, newDir.fd, newName, uint(o.Flags)); err != nil {
		return err
	}
	a.needIf(oldDir, syncFull)
	a.needIf(newDir, syncFull)
	return nil
}

func (a *applier) remove() error {
	o := a.o
	dir, name, err := a.parent(o.Path)
	if err != nil {
		return err
	}
	a.t.invalidate(o.Dir, o.Path)
	flags := 0
	if o.Kind == op.Rmdir {
		flags = unix.AT_REMOVEDIR
	}
	if err := unix.Unlinkat(dir.fd, name, flags); err != nil && err != unix.ENOENT {
		return err
	}
	a.needIf(dir, syncFull)
	return nil
}

// chmodAt sets the permission bits of name in dir without following a
// symlink.
func chmodAt(dir *entry, name string, perm uint32) error {
	err := unix.Fchmodat(dir.fd, name, perm, unix.AT_SYMLINK_NOFOLLOW)
	if err != unix.EOPNOTSUPP && err != unix.ENOSYS {
		return err
	}
	// EOPNOTSUPP: a symlink (whose mode means nothing on Linux), or a
	// kernel without fchmodat2 (before 6.6). Look at the name itself and
	// change the inode it designates through its O_PATH descriptor.
	pfd, err := unix.Openat(dir.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return errors.New("chmod of a symlink")
	}
	return unix.Chmod(procFD(pfd), perm)
}

func (a *applier) chmod() error {
	o := a.o
	if o.Path == "." {
		if err := unix.Fchmod(a.root().fd, o.Mode&0o7777); err != nil {
			return err
		}
	} else {
		dir, name, err := a.parent(o.Path)
		if err != nil {
			return err
		}
		if err := chmodAt(dir, name, o.Mode&0o7777); err != nil {
			return err
		}
	}
	if a.durable {
		return a.needObject(o.Path, syncFull)
	}
	return nil
}

// metadata runs an *at call on the operation's name (not following it;
// the replicated directory itself through AT_EMPTY_PATH).
func (a *applier) metadata(call func(dir *entry, name string, flags int) error) error {
	o := a.o
	if o.Path == "." {
		if err := call(a.root(), "", unix.AT_EMPTY_PATH); err != nil {
			return err
		}
	} else {
		dir, name, err := a.parent(o.Path)
		if err != nil {
			return err
		}
		if err := call(dir, name, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if a.durable {
		return a.needObject(o.Path, syncFull)
	}
	return nil
}

// xattr runs an xattr call on the operation's name: through the parent's
// descriptor in /proc (the l* calls do not follow the final name), or on
// the replicated directory's own descriptor (name "").
func (a *applier) xattr(call func(dir *entry, name string) error) error {
	o := a.o
	if o.Path == "." {
		if err := call(a.root(), ""); err != nil {
			return err
		}
	} else {
		dir, name, err := a.parent(o.Path)
		if err != nil {
			return err
		}
		if err := call(dir, name); err != nil {
			return err
		}
	}
	if a.durable {
		return a.needObject(o.Path, syncFull)
	}
	return nil
}

// id converts a replicated owner to fchownat's argument (-1: unchanged).
func id(v uint32) int {
	if v == op.NoID {
		return -1
	}
	return int(v)
}

// timespec converts nanoseconds since the epoch (or op.OmitTime).
func timespec(ns int64) unix.Timespec {
	if ns == op.OmitTime {
		return unix.Timespec{Sec: 0, Nsec: unix.UTIME_OMIT}
	}
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return unix.Timespec{Sec: sec, Nsec: nsec}
}
