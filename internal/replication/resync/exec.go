package resync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/op"
)

func opKind(b byte) op.Kind { return op.Kind(b) }

// opPath converts a tree path to an op path ("" is ".").
func opPath(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// handleFailures decides what the target's failures mean: a staged object
// that was missing is remembered (its destination is sent whole), a
// directory that still holds excluded entries is a warning, anything else
// fails the session.
func (s *source) handleFailures(fails []opFailure) error {
	var errs []error
	for _, f := range fails {
		switch {
		case f.Kind == op.Rename && isUnder(f.Target, journal.DefaultStagingDir) && unix.Errno(f.Errno) == unix.ENOENT:
			s.mu.Lock()
			s.missing[f.Target] = true
			s.mu.Unlock()
		case f.Kind == op.Link && unix.Errno(f.Errno) == unix.ENOENT && s.live():
			// The name to link to did not reach the target: the
			// application renamed or deleted it while it was read. The
			// next pass sends this name whole.
			s.markStale(f.Path)
		case f.Kind == op.Rmdir && unix.Errno(f.Errno) == unix.ENOTEMPTY:
			s.warn("%q is gone on the source but holds excluded entries on the target: kept", f.Path)
		default:
			errs = append(errs, fmt.Errorf("target failed to %s %q: %s", f.Kind, f.Path, f.Msg))
		}
		if len(errs) >= 10 {
			break
		}
	}
	return errors.Join(errs...)
}

// debugf, when set (tests), traces the passes.
var debugf func(format string, args ...any)

func trace(format string, args ...any) {
	if debugf != nil {
		debugf(format, args...)
	}
}

// errSourceGone: a source path listed a moment ago is gone.
var errSourceGone = errors.New("gone from the source")

// vanished tells whether err means a source path disappeared under a
// running application (the tracking map has the change: the next pass
// brings it) rather than a failure.
func (s *source) vanished(err error) bool {
	return s.live() && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP))
}

// live tells whether the application may change the source right now.
func (s *source) live() bool { return s.cfg.Changes != nil && !s.frozen.Load() }

// Stale objects. A pass can leave a target object undone when the
// application renames or deletes its source (or a parent directory) between
// the plan and the read: the tracking map records where the source object
// went, but not that this pass did not finish it. Such target paths are
// remembered, followed through the moves the next pass makes on the
// target (renamedOnTarget), and sent whole by that pass after its other
// items.

// markStale records that the target's object at p (a path of the target's
// tree as it is now) is not known to be up to date.
func (s *source) markStale(p string) {
	trace("stale %q", p)
	s.mu.Lock()
	s.stale[p] = true
	s.mu.Unlock()
}

// isStale tells whether the target's object at p is marked stale.
func (s *source) isStale(p string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stale[p]
}

// renamedOnTarget follows a rename the target applied.
func (s *source) renamedOnTarget(from, to string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.stale {
		switch {
		case p == from:
			delete(s.stale, p)
			s.stale[to] = true
		case isUnder(p, from):
			delete(s.stale, p)
			s.stale[to+p[len(from):]] = true
		}
	}
}

// goneOnTarget forgets what a delete removed from the target.
func (s *source) goneOnTarget(dir string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.stale {
		if p == dir || isUnder(p, dir) {
			delete(s.stale, p)
		}
	}
}

// takeStale returns the stale paths (and forgets them).
func (s *source) takeStale() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for p := range s.stale {
		out = append(out, p)
	}
	clear(s.stale)
	return out
}

// outermost sorts paths and drops those below another.
func outermost(paths []string) []string {
	paths = slices.Clone(paths)
	slices.SortFunc(paths, journal.ComparePaths)
	var out []string
	for _, p := range paths {
		if n := len(out); n > 0 && (out[n-1] == p || out[n-1] == "" || isUnder(p, out[n-1])) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// ---- sending ops ----

// batch accumulates ops for one connection. One batch is used by one
// goroutine; each flush sends a frame.
type batch struct {
	s       *source
	c       *clientConn
	flags   byte
	e       enc
	n       int   // ops in e
	count   int   // ops added in all
	written int64 // end of the furthest write (sendFile resets it)
}

func (s *source) newBatch(c *clientConn, flags byte) *batch {
	return &batch{s: s, c: c, flags: flags}
}

func (b *batch) add(o op.Op) error {
	o.Dir = b.s.cfg.DirIndex
	if err := o.Validate(); err != nil {
		return fmt.Errorf("build %s of %q: %w", o.Kind, o.Path, err)
	}
	if o.Kind == op.Write {
		b.s.stats.data.Add(int64(len(o.Data)))
		b.written = max(b.written, o.Off+int64(len(o.Data)))
	}
	b.count++
	if b.s.dryRun {
		return nil
	}
	b.e.op(&o)
	b.n++
	if len(b.e.b) >= batchBytes {
		return b.send(false)
	}
	return nil
}

// send writes the pending ops as one frame; flush also pushes it out.
func (b *batch) send(flush bool) error {
	if b.n > 0 {
		head := enc{b: make([]byte, 0, 12+len(b.e.b))}
		head.u8(b.flags)
		head.uv(uint64(b.n))
		head.b = append(head.b, b.e.b...)
		if err := b.c.fc.writeFrame(b.s.ctx, msgOps, head.b); err != nil {
			return err
		}
		b.e.b, b.n = b.e.b[:0], 0
	}
	if flush && !b.s.dryRun {
		return b.c.fc.flush()
	}
	return nil
}

// ---- whole subtrees (full resync, Whole items) ----

// work is what a subtree synchronisation does with one source entry.
type work struct {
	src *Entry
	tgt *Entry // nil: the target has nothing there (or it is deleted first)
}

// treeDiff is a subtree synchronisation, phase by phase.
type treeDiff struct {
	deletes []*Entry // target entries, parents before children
	mkdirs  []*Entry
	objects []work // files, symlinks, others: contents and metadata
	links   []linkWork
	dirs    []work // directory metadata, parents before children
	touched map[string]bool
}

type linkWork struct{ path, leader string }

type devIno struct{ dev, ino uint64 }

// groups maps the hard-linked files of a listing to their visible names.
func groups(es []Entry) map[devIno][]string {
	g := map[devIno][]string{}
	for i := range es {
		if es[i].Kind == journal.KindFile && es[i].Nlink > 1 {
			k := devIno{es[i].Dev, es[i].Ino}
			g[k] = append(g[k], es[i].Path)
		}
	}
	return g
}

func groupOf(g map[devIno][]string, e *Entry) []string {
	if e.Kind != journal.KindFile || e.Nlink <= 1 {
		return []string{e.Path}
	}
	return g[devIno{e.Dev, e.Ino}]
}

func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// sameObject reports whether a target entry can stay as the source
// entry's object (contents and metadata may still differ).
func sameObject(s, t *Entry) bool {
	if s.Kind != t.Kind {
		return false
	}
	switch s.Kind {
	case journal.KindSymlink:
		return s.Target == t.Target
	case journal.KindOther:
		return s.Mode&unix.S_IFMT == t.Mode&unix.S_IFMT && s.Rdev == t.Rdev
	}
	return true
}

// diffTrees plans the synchronisation of a subtree from both listings
// (sorted, same prefix).
func diffTrees(src, tgt []Entry) *treeDiff {
	d := &treeDiff{touched: map[string]bool{}}
	sg, tg := groups(src), groups(tgt)
	tgtAt := make(map[string]*Entry, len(tgt)/4)
	deleted := map[string]bool{}
	leaderOf := func(e *Entry) string { return groupOf(sg, e)[0] }

	// Pair entries by merging both sorted listings.
	i, j := 0, 0
	var delRoot string
	hasDel := false
	pairs := make([]work, 0, len(src))
	for i < len(src) || j < len(tgt) {
		var s, t *Entry
		switch {
		case j >= len(tgt) || (i < len(src) && journal.ComparePaths(src[i].Path, tgt[j].Path) < 0):
			s = &src[i]
			i++
		case i >= len(src) || journal.ComparePaths(src[i].Path, tgt[j].Path) > 0:
			t = &tgt[j]
			j++
		default:
			s, t = &src[i], &tgt[j]
			i++
			j++
		}
		if t != nil {
			del := false
			switch {
			case hasDel && isUnder(t.Path, delRoot):
				del = true
			case s == nil || !sameObject(s, t):
				del = true
			case t.Kind == journal.KindFile && t.Nlink > 1:
				tgroup, sgroup := groupOf(tg, t), groupOf(sg, s)
				// Another name of the target's inode is not one of the
				// source's: writing it would change that name too.
				del = !subset(tgroup, sgroup) || (t.Nlink > uint32(len(tgroup)) && s.Nlink != t.Nlink)
			}
			if s != nil && !del && s.Kind == journal.KindFile && s.Nlink > 1 && leaderOf(s) != s.Path {
				// A follower must be the leader's inode on the target.
				lt := tgtAt[leaderOf(s)]
				del = lt == nil || deleted[lt.Path] || lt.Ino != t.Ino || lt.Dev != t.Dev
			}
			if del {
				if !(hasDel && isUnder(t.Path, delRoot)) {
					d.deletes = append(d.deletes, t)
					d.touched[parentOf(t.Path)] = true
				}
				deleted[t.Path] = true
				if t.Kind == journal.KindDir && !(hasDel && isUnder(t.Path, delRoot)) {
					delRoot, hasDel = t.Path, true
				}
				t = nil
			} else {
				tgtAt[t.Path] = t
			}
		}
		if s != nil {
			pairs = append(pairs, work{s, t})
		}
	}
	for _, w := range pairs {
		s, t := w.src, w.tgt
		switch {
		case s.Kind == journal.KindDir:
			if t == nil {
				d.mkdirs = append(d.mkdirs, s)
				d.touched[parentOf(s.Path)] = true
			}
			d.dirs = append(d.dirs, w)
		case s.Kind == journal.KindFile && s.Nlink > 1 && leaderOf(s) != s.Path:
			if t == nil {
				d.links = append(d.links, linkWork{s.Path, leaderOf(s)})
				d.touched[parentOf(s.Path)] = true
			}
		default:
			if t == nil {
				d.touched[parentOf(s.Path)] = true
			}
			d.objects = append(d.objects, w)
		}
	}
	return d
}

func parentOf(p string) string {
	dir, _ := splitRel(p)
	return dir
}

// excepted reports whether p is one of the paths, or below one.
func excepted(p string, except []string) bool {
	for _, x := range except {
		if p == x || isUnder(p, x) {
			return true
		}
	}
	return false
}

func dropExcepted(es []Entry, except []string) []Entry {
	if len(except) == 0 {
		return es
	}
	out := es[:0]
	for _, e := range es {
		if !excepted(e.Path, except) {
			out = append(out, e)
		}
	}
	return out
}

// syncTree makes the target's subtree at prefix identical to the source's
// (nothing there when the source has nothing), leaving the except paths
// alone. home carries the ordered phases; file contents use every
// connection.
func (s *source) syncTree(prefix string, except []string, home *clientConn) error {
	var src *Tree
	var tgt []Entry
	var serr, terr error
	var wg sync.WaitGroup
	wg.Go(func() {
		src, serr = Scan(s.ctx, s.cfg.Root, ScanOptions{Prefix: prefix, Hash: true, BlockSize: s.opt.BlockSize,
			Excludes: s.cfg.Excludes, keepBlocks: true})
	})
	wg.Go(func() { tgt, terr = home.list(prefix, false, true) })
	wg.Wait()
	if serr != nil {
		return fmt.Errorf("list the source: %w", serr)
	}
	if terr != nil {
		return fmt.Errorf("list the target: %w", terr)
	}
	if len(src.Entries) == 0 && prefix != "" && s.live() {
		// Gone from the source since planned: renamed or deleted by the
		// application (possibly with a parent). The next pass finishes
		// this item wherever the object is then, or deletes it.
		s.markStale(prefix)
		return nil
	}
	// Directories that vanished while the source was listed: what the
	// target holds there is left alone now and sent whole next pass.
	for _, v := range src.vanished {
		s.markStale(v)
	}
	srcEntries := dropExcepted(src.Entries, except)
	tgt = dropExcepted(dropExcepted(tgt, except), src.vanished)
	s.stats.hashed.Add(src.Bytes)
	var files, bytes int64
	for i := range srcEntries {
		if srcEntries[i].Kind == journal.KindFile {
			files++
			bytes += srcEntries[i].Size
		}
	}
	s.stats.files.Add(int64(len(srcEntries)))
	s.prog.filesTot.Add(files)
	s.prog.bytesTot.Add(bytes)
	d := diffTrees(srcEntries, tgt)
	s.leaveLinked(d, srcEntries)
	if prefix == "" {
		s.setPhase("send")
	}

	// Phase 1 (home): parents, deletes (children first), directories.
	b := s.newBatch(home, 0)
	if prefix != "" && len(srcEntries) > 0 {
		if err := s.ensureParents(home, prefix); err != nil {
			return err
		}
	}
	for k := len(d.deletes) - 1; k >= 0; k-- {
		if err := s.removeOps(b, d.deletes[k], tgt); err != nil {
			return err
		}
		s.goneOnTarget(d.deletes[k].Path)
	}
	for _, e := range d.mkdirs {
		if err := b.add(op.Op{Kind: op.Mkdir, Path: e.Path, Mode: e.Perm() | 0o700}); err != nil {
			return err
		}
		s.stats.changed.Add(1)
	}
	if err := b.send(true); err != nil {
		return err
	}
	if err := home.barrier(); err != nil {
		return err
	}

	// Phase 2 (every connection): contents and metadata of non-directories.
	if err := s.parallel(s.fileSlots, len(d.objects), func(k int, c *clientConn) error {
		return s.syncObject(c, d.objects[k])
	}); err != nil {
		return err
	}
	if err := s.barrierAll(); err != nil {
		return err
	}

	// Phase 3 (home): hard links, then directory metadata deepest first.
	b = s.newBatch(home, 0)
	for _, l := range d.links {
		if s.isStale(l.leader) {
			// The leader was gone from the source when its contents were
			// read: the target object at its path is not the source's
			// file, and linking to it would give this name wrong data.
			s.markStale(l.path)
			continue
		}
		if err := b.add(op.Op{Kind: op.Link, Path: l.path, Target: l.leader}); err != nil {
			return err
		}
		s.stats.changed.Add(1)
	}
	for k := len(d.dirs) - 1; k >= 0; k-- {
		w := d.dirs[k]
		if err := s.metaOps(b, w.src, w.tgt, d.touched[w.src.Path]); err != nil {
			return err
		}
	}
	if err := b.send(true); err != nil {
		return err
	}
	return home.barrier()
}

// removeOps deletes a target entry (its listed subtree was listed after
// it: children are removed first because deletes run in reverse order and
// every descendant of a deleted directory is in tgt).
func (s *source) removeOps(b *batch, t *Entry, tgt []Entry) error {
	if t.Kind == journal.KindDir {
		// Remove what lies below it, deepest first.
		i, ok := slices.BinarySearchFunc(tgt, t.Path, func(e Entry, p string) int { return journal.ComparePaths(e.Path, p) })
		if ok {
			end := i + 1
			for end < len(tgt) && isUnder(tgt[end].Path, t.Path) {
				end++
			}
			for k := end - 1; k > i; k-- {
				if err := s.removeOne(b, &tgt[k]); err != nil {
					return err
				}
			}
		}
	}
	return s.removeOne(b, t)
}

func (s *source) removeOne(b *batch, t *Entry) error {
	kind := op.Unlink
	if t.Kind == journal.KindDir {
		kind = op.Rmdir
	}
	s.stats.changed.Add(1)
	s.stats.deleted.Add(1)
	return b.add(op.Op{Kind: kind, Path: t.Path})
}

// parallel runs n units of work on slots of sem, each on a connection of
// its own choosing, and returns the first error. Items (which may run a
// subtree's files in parallel) and files use different semaphores, so an
// item waiting for its files never holds a slot they need.
func (s *source) parallel(sem chan struct{}, n int, fn func(k int, c *clientConn) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return first != nil
	}
	for k := 0; k < n && !failed(); k++ {
		select {
		case sem <- struct{}{}:
		case <-s.ctx.Done():
			wg.Wait()
			return context.Cause(s.ctx)
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(k, s.pick()); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// syncObject brings one non-directory to the source's state.
func (s *source) syncObject(c *clientConn, w work) error {
	e, t := w.src, w.tgt
	b := s.newBatch(c, 0)
	changed := t == nil
	switch e.Kind {
	case journal.KindFile:
		if t == nil || !(t.Hashed && e.Hashed && t.Size == e.Size && t.Hash == e.Hash) {
			err := s.sendFile(b, e, t) // counts its blocks as done
			if errors.Is(err, errSourceGone) {
				s.markStale(e.Path)
				return nil
			}
			if err != nil {
				return err
			}
			changed = true
		} else {
			s.prog.bytesDone.Add(e.Size)
		}
		s.prog.filesDone.Add(1)
	case journal.KindSymlink:
		if t == nil {
			if err := b.add(op.Op{Kind: op.Symlink, Path: e.Path, Target: e.Target}); err != nil {
				return err
			}
		}
	case journal.KindOther:
		if t == nil {
			if err := b.add(op.Op{Kind: op.Mknod, Path: e.Path, Mode: e.Mode, Dev: e.Rdev}); err != nil {
				return err
			}
		}
	}
	if changed {
		s.stats.changed.Add(1)
	}
	if err := s.metaOps(b, e, t, changed); err != nil {
		return err
	}
	return b.send(true)
}

// sendFile sends what the target's file lacks: blocks whose hashes differ
// from the target's, and the blocks past its end unless they are zeros
// (the final size then makes holes of them).
func (s *source) sendFile(b *batch, e, t *Entry) error {
	bs := s.opt.BlockSize
	fd, err := openBeneath(s.rootFD, e.Path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME|unix.O_NONBLOCK)
	if err != nil {
		if s.vanished(err) {
			return errSourceGone
		}
		return fmt.Errorf("open %q: %w", e.Path, err)
	}
	defer unix.Close(fd)
	if t == nil {
		if err := b.add(op.Op{Kind: op.Create, Path: e.Path, Mode: 0o600}); err != nil {
			return err
		}
	}
	b.written = 0
	nb := (e.Size + bs - 1) / bs
	if t != nil {
		trace("send file %q: source size %d, target size %d", e.Path, e.Size, t.Size)
	} else {
		trace("send file %q: source size %d, new", e.Path, e.Size)
	}
	var cmp int64 // leading blocks compared with the target's
	var tsize int64
	if t != nil {
		tsize = t.Size
		cmp = (min(e.Size, t.Size) + bs - 1) / bs
	}
	buf := getBuf(bs)
	defer putBuf(buf)
	var window []Sum
	var winFirst int64
	// A block counts as done once dealt with (compared, or handed to the
	// connection, which the bandwidth cap paces).
	var pending int64
	defer func() { s.prog.bytesDone.Add(pending) }()
	for i := int64(0); i < nb; i++ {
		off := i * bs
		blen := min(bs, e.Size-off)
		s.prog.bytesDone.Add(pending)
		pending = blen
		if i < cmp && cmp > 1 {
			if i >= winFirst+int64(len(window)) {
				// Ask for the next window of the target's block hashes.
				sums, _, ok, err := b.c.hashes(e.Path, i, min(maxHashWindow, cmp-i))
				if err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("target's %q vanished while compared", e.Path)
				}
				window, winFirst = sums, i
			}
			var tsum Sum
			if k := i - winFirst; k < int64(len(window)) {
				tsum = window[k]
			}
			if e.blocks != nil && int64(len(e.blocks)) == nb {
				if e.blocks[i] == tsum && i < int64(len(window))+winFirst {
					continue // equal: nothing to read or send
				}
			} else {
				n, err := preadFull(fd, buf[:blen], off)
				if err != nil {
					return fmt.Errorf("read %q: %w", e.Path, err)
				}
				if blockSum(buf[:n]) == tsum {
					continue
				}
				if err := s.sendBlock(b, e.Path, buf[:n], off); err != nil {
					return err
				}
				continue
			}
		}
		n, err := preadFull(fd, buf[:blen], off)
		if err != nil {
			return fmt.Errorf("read %q: %w", e.Path, err)
		}
		if off >= tsize && isZero(buf[:n]) {
			continue // a hole once the size is set
		}
		if err := s.sendBlock(b, e.Path, buf[:n], off); err != nil {
			return err
		}
	}
	// The size the writes left: the target's, or the end of the last
	// block written past it.
	if max(tsize, b.written) != e.Size {
		return b.add(op.Op{Kind: op.Truncate, Path: e.Path, Size: e.Size})
	}
	return nil
}

// sendBlock sends data at off in writes of at most op.MaxData bytes.
func (s *source) sendBlock(b *batch, path string, data []byte, off int64) error {
	for len(data) > 0 {
		n := min(len(data), op.MaxData)
		if err := b.add(op.Op{Kind: op.Write, Path: path, Off: off, Data: data[:n]}); err != nil {
			return err
		}
		data, off = data[n:], off+int64(n)
	}
	return nil
}

var bufPool sync.Map // block size → *sync.Pool

func getBuf(size int64) []byte {
	p, _ := bufPool.LoadOrStore(size, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	return *(p.(*sync.Pool).Get().(*[]byte))
}

func putBuf(b []byte) {
	if p, ok := bufPool.Load(int64(len(b))); ok {
		p.(*sync.Pool).Put(&b)
	}
}

// metaOps sets the target's ownership, xattrs, mode and times to the
// source's where they differ (all of them for an object just made: t nil).
// Order matters: chown clears setuid bits and capabilities, so it comes
// first, and times come last (access times with them). force: the times
// changed (contents written, entries added or removed).
func (s *source) metaOps(b *batch, e, t *Entry, force bool) error {
	p := opPath(e.Path)
	n0 := b.count
	owned := false
	if t == nil || t.UID != e.UID || t.GID != e.GID {
		if err := b.add(op.Op{Kind: op.Chown, Path: p, UID: e.UID, GID: e.GID}); err != nil {
			return err
		}
		owned = true
	}
	var have []Xattr
	if t != nil && !owned {
		have = t.Xattrs
	}
	for _, x := range e.Xattrs {
		k := slices.IndexFunc(have, func(h Xattr) bool { return h.Name == x.Name })
		if k >= 0 && string(have[k].Value) == string(x.Value) {
			continue
		}
		if err := b.add(op.Op{Kind: op.Setxattr, Path: p, Name: x.Name, Data: x.Value}); err != nil {
			return err
		}
	}
	if t != nil {
		for _, x := range t.Xattrs {
			if !slices.ContainsFunc(e.Xattrs, func(h Xattr) bool { return h.Name == x.Name }) {
				if err := b.add(op.Op{Kind: op.Removexattr, Path: p, Name: x.Name}); err != nil {
					return err
				}
			}
		}
	}
	if e.Kind != journal.KindSymlink && (t == nil || owned || t.Perm() != e.Perm()) {
		if err := b.add(op.Op{Kind: op.Chmod, Path: p, Mode: e.Perm()}); err != nil {
			return err
		}
	}
	// Access times alone do not count: reading changes them (directories
	// too, when listed).
	if force || t == nil || b.count > n0 || t.Mtime != e.Mtime {
		if err := b.add(op.Op{Kind: op.Utimes, Path: p, Atime: e.Atime, Mtime: e.Mtime}); err != nil {
			return err
		}
	}
	if t != nil && b.count > n0 && !force {
		s.stats.changed.Add(1)
	}
	return nil
}

// ensureParents makes sure the target holds every parent directory of p
// (a non-directory in the way is replaced: the source holds a directory
// there), with the source's modes; their times are set later.
func (s *source) ensureParents(c *clientConn, p string) error {
	s.parentsMu.Lock()
	defer s.parentsMu.Unlock()
	var parents []string
	for dir := parentOf(p); dir != ""; dir = parentOf(dir) {
		parents = append(parents, dir)
	}
	slices.Reverse(parents)
	b := s.newBatch(c, 0)
	for _, dir := range parents {
		if s.knownDirs[dir] {
			continue
		}
		es, err := c.list(dir, true, false)
		if err != nil {
			return err
		}
		if len(es) == 1 && es[0].Kind == journal.KindDir {
			s.knownDirs[dir] = true
			continue
		}
		if len(es) == 1 {
			if err := b.add(op.Op{Kind: op.Unlink, Path: dir}); err != nil {
				return err
			}
		}
		mode := uint32(0o755)
		var st unix.Stat_t
		if statBeneath(s.rootFD, dir, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			mode = st.Mode & 0o7777
		}
		if err := b.add(op.Op{Kind: op.Mkdir, Path: dir, Mode: mode | 0o700}); err != nil {
			return err
		}
		s.stats.changed.Add(1)
		// Send now: the next parent's listing must see it.
		if err := b.send(true); err != nil {
			return err
		}
		if err := c.barrier(); err != nil {
			return err
		}
		s.knownDirs[dir] = true
	}
	return nil
}

// ---- incremental plans ----

// statSource is the plans' view of the source tree.
func (s *source) statSource(p string) (int64, bool) {
	var st unix.Stat_t
	if err := statBeneath(s.rootFD, p, &st); err != nil {
		return 0, false
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		return st.Size, true
	}
	return 0, true
}

// runPlan executes an incremental plan (see the package text).
func (s *source) runPlan(p *journal.Plan) error {
	trace("plan: stage %v delete %v unstage %v items %+v", p.Stage, p.Delete, p.Unstage, p.Items)
	s.mu.Lock()
	clear(s.missing) // slot names are reused by every plan
	s.wholeLater = nil
	s.mu.Unlock()
	c0 := s.conns[0]
	for _, it := range p.Items {
		// Whole items count their files when they list them.
		if it.Kind == journal.ItemUpdate {
			s.prog.bytesTot.Add(it.Bytes())
			s.prog.filesTot.Add(1)
		}
	}
	s.setPhase("stage")
	if len(p.Stage) > 0 {
		b := s.newBatch(c0, 0)
		if err := b.add(op.Op{Kind: op.Mkdir, Path: p.StagingDir, Mode: 0o700}); err != nil {
			return err
		}
		for _, m := range p.Stage {
			if err := b.add(op.Op{Kind: op.Rename, Path: m.From, Target: m.To}); err != nil {
				return err
			}
		}
		if err := b.send(true); err != nil {
			return err
		}
		if err := c0.barrier(); err != nil {
			return err
		}
		for _, m := range p.Stage {
			s.mu.Lock()
			lost := s.missing[m.To]
			s.mu.Unlock()
			if !lost {
				s.renamedOnTarget(m.From, m.To)
			}
		}
	}
	s.setPhase("delete")
	for _, d := range p.Delete {
		s.goneOnTarget(d)
	}
	if len(p.Delete) > 0 {
		if err := s.parallel(s.itemSlots, len(p.Delete), func(k int, c *clientConn) error {
			_, err := s.removeTree(c, p.Delete[k])
			return err
		}); err != nil {
			return err
		}
		if err := s.barrierAll(); err != nil {
			return err
		}
	}
	s.setPhase("unstage")
	items := slices.Clone(p.Items)
	if len(p.Unstage) > 0 {
		b := s.newBatch(c0, 0)
		for _, m := range p.Unstage {
			s.mu.Lock()
			lost := s.missing[m.From]
			s.mu.Unlock()
			if lost {
				// The object was not where the plan expected: send it whole.
				items = append(items, journal.Item{Path: m.To, Kind: journal.ItemWhole})
				continue
			}
			if err := b.send(true); err != nil {
				return err
			}
			if err := s.ensureParents(c0, m.To); err != nil {
				return err
			}
			if err := b.add(op.Op{Kind: op.Rename, Path: m.From, Target: m.To}); err != nil {
				return err
			}
			s.renamedOnTarget(m.From, m.To)
			s.stats.changed.Add(1)
		}
		if err := b.send(true); err != nil {
			return err
		}
		if err := c0.barrier(); err != nil {
			return err
		}
	}
	carried := s.takeStale()
	trace("items %+v, stale %q", items, carried)
	s.setPhase("send")
	if err := s.parallel(s.itemSlots, len(items), func(k int, c *clientConn) error {
		it := items[k]
		var err error
		if it.Kind == journal.ItemUpdate {
			err = s.updateItem(c, it)
		} else {
			err = s.syncTree(it.Path, it.Except, c)
		}
		if err != nil {
			return fmt.Errorf("%s %q: %w", it.Kind, it.Path, err)
		}
		if it.Kind == journal.ItemUpdate {
			s.prog.filesDone.Add(1)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := s.barrierAll(); err != nil {
		return err
	}
	// The objects the previous pass left undone, and the Update items that
	// found something else than the plan expected, sent whole now that no
	// other item runs below them.
	s.mu.Lock()
	later := append(s.wholeLater, carried...)
	s.wholeLater = nil
	s.mu.Unlock()
	outer := outermost(later)
	if err := s.parallel(s.itemSlots, len(outer), func(k int, c *clientConn) error {
		return s.syncTree(outer[k], nil, c)
	}); err != nil {
		return err
	}
	if err := s.barrierAll(); err != nil {
		return err
	}
	if err := s.relink(c0); err != nil {
		return fmt.Errorf("restore hard links: %w", err)
	}
	// Whatever an interrupted resync left in the staging directory, and
	// the directory itself, go before the times are set.
	s.setPhase("directories")
	dirs := p.Dirs
	staged, err := s.removeTree(c0, p.StagingDir)
	if err != nil {
		return err
	}
	if staged || len(p.Stage) > 0 {
		parent := parentOf(p.StagingDir)
		if !slices.Contains(dirs, parent) {
			dirs = append(slices.Clone(dirs), parent) // shallowest: last
		}
	}
	if err := c0.barrier(); err != nil {
		return err
	}
	b := s.newBatch(c0, batchTolerateMissing)
	if err := s.sendDirTimes(b, dirs); err != nil {
		return err
	}
	return c0.barrier()
}

// removeTree removes path on the target, recursively, and tells whether
// there was anything.
func (s *source) removeTree(c *clientConn, path string) (bool, error) {
	es, err := c.list(path, false, false)
	if err != nil {
		return false, err
	}
	b := s.newBatch(c, batchTolerateMissing)
	for k := len(es) - 1; k >= 0; k-- {
		if err := s.removeOne(b, &es[k]); err != nil {
			return false, err
		}
	}
	return len(es) > 0, b.send(true)
}

// updateItem sends the changed ranges of an object both sides hold.
func (s *source) updateItem(c *clientConn, it journal.Item) error {
	var st *Tree
	var tes []Entry
	var serr, terr error
	var wg sync.WaitGroup
	wg.Go(func() {
		st, serr = Scan(s.ctx, s.cfg.Root, ScanOptions{Prefix: it.Path, Single: true, Excludes: s.cfg.Excludes})
	})
	wg.Go(func() { tes, terr = c.list(it.Path, true, false) })
	wg.Wait()
	if serr != nil {
		return serr
	}
	if terr != nil {
		return terr
	}
	s.stats.files.Add(1)
	if len(st.Entries) == 0 && s.live() {
		// Renamed or deleted by the application since the plan: the
		// tracking map says where it went, and the next pass finishes
		// what this item was to do, wherever the object then is.
		s.markStale(it.Path)
		return nil
	}
	if len(st.Entries) != 1 || len(tes) != 1 || !sameObject(&st.Entries[0], &tes[0]) {
		// Not what the plan expected on one side: send it whole, once
		// the other items (some may lie below it) are done.
		s.mu.Lock()
		s.wholeLater = append(s.wholeLater, it.Path)
		s.mu.Unlock()
		return nil
	}
	e, t := &st.Entries[0], &tes[0]
	trace("update %q: source size %d target size %d ranges %v", it.Path, e.Size, t.Size, it.Ranges)
	b := s.newBatch(c, 0)
	changed := false
	if e.Kind == journal.KindFile {
		fd, err := openBeneath(s.rootFD, it.Path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME|unix.O_NONBLOCK)
		if err != nil {
			if s.vanished(err) {
				s.markStale(it.Path)
				return nil
			}
			return fmt.Errorf("open %q: %w", it.Path, err)
		}
		defer unix.Close(fd)
		if t.Size > it.Size {
			// The source was it.Size bytes long when planned: whatever the
			// target holds past it is not the source's. Bytes the source
			// gains later are either written (the tracking map has them)
			// or holes, which this truncation makes holes on the target
			// too.
			if err := b.add(op.Op{Kind: op.Truncate, Path: it.Path, Size: it.Size}); err != nil {
				return err
			}
		}
		buf := getBuf(op.MaxData)
		defer putBuf(buf)
		for _, r := range it.Ranges {
			for off, end := r.Off, min(r.Off+r.Len, e.Size); off < end; {
				n, err := preadFull(fd, buf[:min(int64(len(buf)), end-off)], off)
				if err != nil {
					return fmt.Errorf("read %q: %w", it.Path, err)
				}
				if n == 0 {
					break
				}
				if err := b.add(op.Op{Kind: op.Write, Path: it.Path, Off: off, Data: buf[:n]}); err != nil {
					return err
				}
				off += int64(n)
				s.prog.bytesDone.Add(int64(n))
			}
		}
		if err := b.add(op.Op{Kind: op.Truncate, Path: it.Path, Size: e.Size}); err != nil {
			return err
		}
		changed = true
		s.stats.changed.Add(1)
	}
	if err := s.metaOps(b, e, t, changed); err != nil {
		return err
	}
	return b.send(true)
}

// ---- passes ----

// resync runs the passes (see "Writes during a resync").
func (s *source) resync() (Result, error) {
	var res Result
	var track Tracking
	if s.cfg.Changes != nil {
		var err error
		if track, err = s.cfg.Changes.Track(); err != nil {
			return res, fmt.Errorf("track the source's changes: %w", err)
		}
		defer func() {
			if track != nil {
				_, _ = track.Stop()
			}
		}()
	}
	var passData int64 // file bytes the last pass sent
	pass := func(run func() error) error {
		res.Passes++
		s.prog.pass.Store(int64(res.Passes))
		if res.Passes == 2 {
			// Every connection learns it before the pass's ops (the
			// previous pass ended with barriers on all of them).
			for _, c := range s.conns {
				if err := c.fc.send(s.ctx, msgPass, nil); err != nil {
					return err
				}
			}
		}
		before := s.stats.data.Load()
		err := run()
		passData = s.stats.data.Load() - before
		return err
	}
	// Pass 1: everything either node changed, or everything.
	err := pass(func() error {
		if s.hello.Kind == RequestFull {
			s.setPhase("scan")
			return s.syncTree("", nil, s.conns[0])
		}
		return s.incremental()
	})
	if err != nil {
		return res, err
	}
	if s.cfg.Changes == nil {
		if s.cfg.Synced != nil {
			if err := s.cfg.Synced(s.ctx); err != nil {
				return res, fmt.Errorf("go live: %w", err)
			}
		}
		return res, nil
	}
	for passData >= s.opt.FreezeBelow && res.Passes < s.opt.MaxPasses {
		next, err := s.cfg.Changes.Track()
		if err != nil {
			return res, fmt.Errorf("track the source's changes: %w", err)
		}
		m, err := track.Stop()
		track = next
		if err != nil {
			return res, fmt.Errorf("read the source's changes: %w", err)
		}
		if err := pass(func() error { return s.planFrom(m) }); err != nil {
			return res, err
		}
	}
	// The final pass, frozen: nothing changes between its plan and the
	// live stream's start.
	s.setPhase("final")
	frozeAt := timeNow()
	thaw, err := s.cfg.Changes.Freeze(s.ctx)
	if err != nil {
		return res, fmt.Errorf("freeze the source: %w", err)
	}
	s.frozen.Store(true)
	defer func() {
		if thaw != nil {
			thaw()
		}
	}()
	m, err := track.Stop()
	track = nil
	if err != nil {
		return res, fmt.Errorf("read the source's changes: %w", err)
	}
	if err := pass(func() error { return s.planFrom(m) }); err != nil {
		return res, err
	}
	s.mu.Lock()
	left := len(s.stale)
	s.mu.Unlock()
	if left > 0 {
		return res, fmt.Errorf("%d source objects vanished during the frozen pass: the freeze does not hold the application", left)
	}
	if s.cfg.Synced != nil {
		if err := s.cfg.Synced(s.ctx); err != nil {
			return res, fmt.Errorf("go live: %w", err)
		}
	}
	thaw()
	thaw = nil
	res.Frozen = timeNow().Sub(frozeAt)
	return res, nil
}

// incremental runs the first pass of an incremental resync from both
// journals.
func (s *source) incremental() error {
	if s.cfg.Map == nil {
		return errors.New("incremental resync: the source has no journal map")
	}
	m, err := s.cfg.Map()
	if err != nil {
		return fmt.Errorf("read the source's journal: %w", err)
	}
	since := s.hello.Since
	if !m.Covers(since) || !s.tmap.Covers(since) {
		return fmt.Errorf("incremental resync: journals do not both start at generation %016x (source %016x, target %016x): %w",
			since, m.Base(), s.tmap.Base(), journal.ErrBaseMismatch)
	}
	plan, err := journal.NewPlan(m, s.tmap, journal.PlanOptions{Stat: s.statSource})
	if err != nil {
		return err
	}
	return s.runPlan(plan)
}

// planFrom runs a pass planned from what the source changed since the
// previous pass was planned (the target changed nothing meanwhile but
// what the resync wrote).
func (s *source) planFrom(m *journal.ZoneMap) error {
	empty, err := journal.NewZoneMap(m.ZoneSize())
	if err != nil {
		return err
	}
	if _, err := empty.Checkpoint(m.Base()); err != nil {
		return err
	}
	plan, err := journal.NewPlan(m, empty, journal.PlanOptions{Stat: s.statSource})
	if err != nil {
		return fmt.Errorf("plan a pass: %w", err)
	}
	return s.runPlan(plan)
}

// ---- read-only sessions ----

func (s *source) verify() (Result, error) {
	var res Result
	s.setPhase("scan")
	var src *Tree
	var tgt []Entry
	var serr, terr error
	var wg sync.WaitGroup
	wg.Go(func() {
		src, serr = Scan(s.ctx, s.cfg.Root, ScanOptions{Hash: true, BlockSize: s.opt.BlockSize, Excludes: s.cfg.Excludes})
	})
	wg.Go(func() { tgt, terr = s.conns[0].list("", false, true) })
	wg.Wait()
	if serr != nil {
		return res, fmt.Errorf("scan the source: %w", serr)
	}
	if terr != nil {
		return res, fmt.Errorf("list the target: %w", terr)
	}
	s.stats.files.Add(int64(len(src.Entries)))
	s.stats.hashed.Add(src.Bytes)
	res.Differences = Compare(src, &Tree{Entries: tgt}, s.hello.Compare)
	return res, nil
}

func (s *source) estimate() (Result, error) {
	var res Result
	// The same choice a resync makes: a plan from both journals when both
	// start at the common generation, a full comparison otherwise.
	est := &Estimate{Full: true}
	switch {
	case s.tmap == nil:
		est.Reason = "full resync: the target offers no journal map (first synchronization, journal not trusted, or its last incremental resync failed)"
	case s.cfg.Map == nil:
		est.Reason = "full resync: the source offers no trusted journal map"
	default:
		m, err := s.cfg.Map()
		switch {
		case err != nil:
			est.Reason = fmt.Sprintf("full resync: the source's journal cannot be read: %v", err)
		case s.hello.Since == 0:
			est.Reason = "full resync: no common generation (first synchronization)"
		case !m.Covers(s.hello.Since) || !s.tmap.Covers(s.hello.Since):
			est.Reason = fmt.Sprintf("full resync: the journals do not start at the same generation (source %016x, target %016x)", m.Base(), s.tmap.Base())
		default:
			plan, err := journal.NewPlan(m, s.tmap, journal.PlanOptions{Stat: s.statSource})
			if err != nil {
				return res, fmt.Errorf("plan the estimated incremental resync: %w", err)
			}
			e, err := s.estimatePlan(plan)
			if err != nil {
				return res, err
			}
			e.Reason = fmt.Sprintf("incremental resync since generation %016x from both journals: the dirty ranges of files both nodes hold (sent without comparing), and what differs below new or replaced paths (compared block by block, as the resync does)", s.hello.Since)
			res.Estimate = &e
			return res, nil
		}
	}
	// A dry run of a full resync: everything but the ops.
	s.dryRun = true
	if err := s.syncTree("", nil, s.conns[0]); err != nil {
		return res, err
	}
	est.Files = s.stats.changed.Load()
	est.Deletes = s.stats.deleted.Load()
	est.Bytes = s.stats.data.Load()
	est.Hashed = s.stats.hashed.Load()
	if s.hello.Rate > 0 {
		est.Duration = time.Duration(float64(est.Bytes) / s.hello.Rate * float64(time.Second))
	}
	res.Estimate = est
	return res, nil
}

// estimatePlan counts what runPlan's first pass would send, in a dry run:
// an update item's dirty ranges whole (runPlan sends them without
// comparing), a whole item's differences found by comparing its subtree
// with the target's (what syncTree sends). Staged renames are not applied
// on the target, so a whole item that would receive one may count it as
// missing: the estimate errs high, never low.
func (s *source) estimatePlan(p *journal.Plan) (Estimate, error) {
	s.dryRun = true
	e := Estimate{Deletes: int64(len(p.Delete)), Files: int64(len(p.Delete) + len(p.Unstage))}
	updated := map[string]bool{}
	for _, it := range p.Items {
		if it.Kind == journal.ItemUpdate {
			e.Files++
			e.Bytes += it.Bytes()
			updated[it.Path] = true
			continue
		}
		if err := s.syncTree(it.Path, it.Except, s.conns[0]); err != nil {
			return e, fmt.Errorf("compare %q for the estimate: %w", it.Path, err)
		}
	}
	// Hard-linked files the whole items left to relink: compare each
	// inode's contents once, unless an update item already counted its
	// changes (the dry run did not apply them, so comparing again would
	// count them twice).
	sets, err := s.linkedNames()
	if err != nil {
		return e, err
	}
	for _, ns := range sets {
		if slices.ContainsFunc(ns, func(n string) bool { return updated[n] }) {
			continue
		}
		if err := s.joinNames(s.conns[0], ns); err != nil {
			return e, fmt.Errorf("compare the hard-linked %q for the estimate: %w", ns[0], err)
		}
	}
	e.Files += s.stats.changed.Load()
	e.Deletes += s.stats.deleted.Load()
	e.Bytes += s.stats.data.Load()
	e.Hashed = s.stats.hashed.Load()
	e.Duration = atRate(e.Bytes, s.hello.Rate)
	return e, nil
}

// sendDirTimes sends the times of dirs as they are on the source and
// flushes the batch: creating or linking entries in a directory changed
// its times on the target after its own item had set them.
func (s *source) sendDirTimes(b *batch, dirs []string) error {
	for _, dir := range dirs {
		var st unix.Stat_t
		if statBeneath(s.rootFD, dir, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		if err := b.add(op.Op{Kind: op.Utimes, Path: opPath(dir), Atime: st.Atim.Nano(), Mtime: st.Mtim.Nano()}); err != nil {
			return err
		}
	}
	if err := b.send(true); err != nil {
		return err
	}
	return nil
}
