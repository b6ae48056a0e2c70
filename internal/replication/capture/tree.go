package capture

import (
	"os"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/op"
)

// A plan is what one local change (a rename, a link) means for the peer
// when it moves objects into or out of the replicated set: the peer
// creates what enters and removes what leaves. Its operations are marked
// before the local change and submitted after it, in order.
type step struct {
	// o is submitted; a zero Kind only emits src's metadata under o.Path.
	o op.Op
	// src, when set, is the object's local path after the change: its
	// content (files), extended attributes and times follow o.
	src string
}

// runPlan marks the plan, makes the local change, then submits the plan.
// An empty plan is a purely local change (excluded paths). The plan is one
// operation: its first marked step is in flight (not Done) until the whole
// plan is submitted, and every later mark is nested in it.
func (f *FS) runPlan(plan []step, local func() syscall.Errno) syscall.Errno {
	tickets := make([]Ticket, len(plan))
	first := -1
	for i, s := range plan {
		if s.o.Kind == 0 {
			continue
		}
		t, err := f.mark(s.o, first >= 0)
		if first < 0 {
			first = i
		}
		if err != nil {
			f.log.Error("journal mark failed: operation refused", "op", s.o.Kind, "path", s.o.Path, "error", err)
			for j := range i {
				if plan[j].o.Kind != 0 {
					f.opts.Journal.Done(tickets[j], false)
				}
			}
			return syscall.EIO
		}
		tickets[i] = t
	}
	errno := local()
	var failed error
	for i := range plan {
		s := &plan[i]
		if errno == 0 && failed == nil {
			if s.o.Kind != 0 {
				failed = f.submit(&s.o, false)
			}
			if failed == nil && s.src != "" {
				failed = f.follow(s, first >= 0)
			}
		}
		if s.o.Kind != 0 && i != first {
			f.opts.Journal.Done(tickets[i], errno == 0)
		}
	}
	if first >= 0 {
		f.opts.Journal.Done(tickets[first], errno == 0)
	}
	if errno != 0 {
		return errno
	}
	if failed != nil {
		return syscall.EIO
	}
	return 0
}

// renamePlan is what renaming oldRel to newRel (flags: renameat2's) means
// for the peer.
func (f *FS) renamePlan(oldRel, newRel string, flags uint32) ([]step, syscall.Errno) {
	exOld, exNew := f.excl.Excluded(oldRel), f.excl.Excluded(newRel)
	exchange := flags&unix.RENAME_EXCHANGE != 0
	if exOld != exNew && (f.multiLinked(oldRel) || exchange && f.multiLinked(newRel)) {
		// A file with other names would end under a replicated and an
		// excluded one (see Link); mv copies instead.
		return nil, syscall.EXDEV
	}
	var plan []step
	add := func(s []step, err error) error {
		plan = append(plan, s...)
		return err
	}
	var err error
	switch {
	case exOld && exNew:
	case !exOld && !exNew:
		o := f.newOp(op.Rename, oldRel)
		o.Target, o.Flags = newRel, flags
		plan = append(plan, step{o: o})
		// Excludes written for one name and not the other make parts
		// of a moved directory enter or leave the replicated set.
		if f.excl.mayDiffer(oldRel, newRel) {
			err = add(f.reconcile(oldRel, newRel, oldRel, newRel))
			if err == nil && exchange {
				err = add(f.reconcile(newRel, oldRel, newRel, oldRel))
			}
		}
	case !exOld && exNew:
		// The object leaves the replicated set; with an exchange, the
		// one it swaps with enters it.
		err = add(f.removal(oldRel, oldRel, oldRel))
		if err == nil && exchange {
			err = add(f.materialize(newRel, oldRel, oldRel))
		}
	case exOld && !exNew:
		// The object enters under newRel, replacing (or, exchanged,
		// pushing out) what the peer has there.
		if _, _, serr := statx(f.rootFd, newRel, unix.AT_SYMLINK_NOFOLLOW); serr == nil && flags&unix.RENAME_NOREPLACE == 0 {
			err = add(f.removal(newRel, newRel, newRel))
		}
		if err == nil {
			err = add(f.materialize(oldRel, newRel, newRel))
		}
	}
	if err != nil {
		return nil, toErrno(err)
	}
	return plan, 0
}

// multiLinked reports whether rel is a regular file with other names.
func (f *FS) multiLinked(rel string) bool {
	st, _, err := statx(f.rootFd, rel, unix.AT_SYMLINK_NOFOLLOW)
	return err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Nlink > 1
}

// reconcile lists, for a directory moved (or about to be moved) from
// local path pre to post, whose peer name changes from `from` to `to`,
// the entries that enter or leave the replicated set with the new name.
func (f *FS) reconcile(pre, post, from, to string) ([]step, error) {
	st, _, err := statx(f.rootFd, pre, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, err
	}
	names, err := f.readDirNames(pre)
	if err != nil {
		return nil, err
	}
	var plan []step
	for _, name := range names {
		a, b := join(from, name), join(to, name)
		exA, exB := f.excl.Excluded(a), f.excl.Excluded(b)
		var s []step
		switch {
		case exA && exB:
			continue
		case !exA && !exB:
			s, err = f.reconcile(join(pre, name), join(post, name), a, b)
		case !exA && exB:
			s, err = f.removal(join(pre, name), b, a)
		default:
			s, err = f.materialize(join(pre, name), b, join(post, name))
		}
		if err != nil {
			return nil, err
		}
		plan = append(plan, s...)
	}
	return plan, nil
}

// removal lists the operations removing from the peer, under peer name
// `peer`, the object at local path pre, deepest first. had is the name
// that decided what the peer received: entries excluded under it are
// not there.
func (f *FS) removal(pre, peer, had string) ([]step, error) {
	st, _, err := statx(f.rootFd, pre, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return nil, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return []step{{o: f.newOp(op.Unlink, peer)}}, nil
	}
	names, err := f.readDirNames(pre)
	if err != nil {
		return nil, err
	}
	var plan []step
	for _, name := range names {
		if f.excl.Excluded(join(had, name)) {
			continue
		}
		s, err := f.removal(join(pre, name), join(peer, name), join(had, name))
		if err != nil {
			return nil, err
		}
		plan = append(plan, s...)
	}
	return append(plan, step{o: f.newOp(op.Rmdir, peer)}), nil
}

// materialize lists the operations creating on the peer, under name dst,
// the object at local path pre (before the change; post after it), with
// everything below it that dst's names do not exclude. Hard links inside
// the subtree stay links.
func (f *FS) materialize(pre, dst, post string) ([]step, error) {
	var plan []step
	links := map[uint64]string{}
	var walk func(pre, dst, post string) error
	walk = func(pre, dst, post string) error {
		st, _, err := statx(f.rootFd, pre, unix.AT_SYMLINK_NOFOLLOW)
		if err != nil {
			return err
		}
		o := f.newOp(0, dst)
		created(&o, &st)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			o.Kind = op.Mkdir
			plan = append(plan, step{o: o})
			names, err := f.readDirNames(pre)
			if err != nil {
				return err
			}
			for _, name := range names {
				d := join(dst, name)
				if f.excl.Excluded(d) {
					continue
				}
				if err := walk(join(pre, name), d, join(post, name)); err != nil {
					return err
				}
			}
			// Times last: creating the entries changed them.
			plan = append(plan, step{o: op.Op{Path: dst}, src: post})
		case syscall.S_IFREG:
			if st.Nlink > 1 {
				if first, ok := links[st.Ino]; ok {
					o = f.newOp(op.Link, dst)
					o.Target = first
					plan = append(plan, step{o: o})
					return nil
				}
				links[st.Ino] = dst
			}
			o.Kind = op.Create
			plan = append(plan, step{o: o, src: post})
		case syscall.S_IFLNK:
			buf := make([]byte, op.MaxPath+1)
			n, err := unix.Readlinkat(f.rootFd, pre, buf)
			if err != nil {
				return err
			}
			o.Kind, o.Target, o.Mode = op.Symlink, string(buf[:n]), 0
			plan = append(plan, step{o: o, src: post})
		default:
			o.Kind, o.Mode, o.Dev = op.Mknod, st.Mode, st.Rdev
			plan = append(plan, step{o: o, src: post})
		}
		return nil
	}
	if err := walk(pre, dst, post); err != nil {
		return nil, err
	}
	return plan, nil
}

// follow sends what comes after a materialized object's creation: a
// file's data, then extended attributes and times. nested: the plan's
// operation is in flight (see runPlan).
func (f *FS) follow(s *step, nested bool) error {
	dst := s.o.Path
	if s.o.Kind == op.Create {
		if err := f.sendContent(s.src, dst, nested); err != nil {
			return err
		}
	}
	if err := f.sendXattrs(s.src, dst, nested); err != nil {
		return err
	}
	st, _, err := statx(f.rootFd, s.src, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return err
	}
	o := f.newOp(op.Utimes, dst)
	o.Atime, o.Mtime = nsec(st.Atim), nsec(st.Mtim)
	return f.send(o, nested)
}

// sendContent sends the data of local file src as writes to dst, skipping
// holes, and its size.
func (f *FS) sendContent(src, dst string, nested bool) error {
	fd, err := unix.Openat(f.rootFd, src, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	st, _, err := fstat(fd)
	if err != nil {
		return err
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var end int64 // end of the data sent so far
	for off := int64(0); off < st.Size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // a hole to the end
		}
		if err != nil {
			data = off // no SEEK_DATA here: read everything
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = st.Size
		}
		for off = data; off < hole; {
			n, err := unix.Pread(fd, buf[:min(int64(len(buf)), hole-off)], off)
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			o := f.newOp(op.Write, dst)
			o.Off, o.Data, o.Mtime = off, buf[:n], nsec(st.Mtim)
			if err := f.send(o, nested); err != nil {
				return err
			}
			off += int64(n)
			end = off
		}
		if off < hole {
			break // the file shrank: impossible under the namespace lock
		}
	}
	if end < st.Size {
		o := f.newOp(op.Truncate, dst)
		o.Size, o.Mtime = st.Size, nsec(st.Mtim)
		return f.send(o, nested)
	}
	return nil
}

func (f *FS) sendXattrs(src, dst string, nested bool) error {
	p := f.abs(src)
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		if err == unix.ENOTSUP {
			return nil
		}
		return err
	}
	list := make([]byte, size)
	if size, err = unix.Llistxattr(p, list); err != nil {
		return err
	}
	for _, name := range strings.Split(strings.TrimRight(string(list[:size]), "\x00"), "\x00") {
		n, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return err
		}
		val := make([]byte, n)
		if n, err = unix.Lgetxattr(p, name, val); err != nil {
			return err
		}
		o := f.newOp(op.Setxattr, dst)
		o.Name, o.Data = name, val[:n]
		if err := f.send(o, nested); err != nil {
			return err
		}
	}
	return nil
}

// readDirNames lists a local directory, sorted so that plans are
// reproducible.
func (f *FS) readDirNames(rel string) ([]string, error) {
	fd, err := unix.Openat(f.rootFd, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	d := os.NewFile(uintptr(fd), rel)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}
