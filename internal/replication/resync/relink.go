package resync

import (
	"fmt"
	"slices"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/op"
)

// Hard links across an incremental resync. The journal records a link as
// the creation of its new name, so the plan sends that name as a Whole
// item, whose listing holds only that name: alone it would reach the
// target as a separate copy. A Whole item therefore notes every source
// file it lists with fewer names than its link count (noteLinked); after
// the pass's items, relink finds all the names of those inodes in the
// source tree, makes them one file on the target (linking them to one of
// them, the leader), and brings that file's contents and metadata to the
// source's: a write made through one name was journaled under that name
// only, and the leader's copy on the target may lack it.

// leaveLinked takes out of a Whole item's work the source files it lists
// with fewer names than their link count. On a source that may change
// (a pass before the freeze) their target paths are marked stale: the
// names found now may be moved by the application before the next pass
// replays the moves, so the target objects are left alone and the next
// pass takes them again, until the frozen pass. Their inodes are
// remembered for relink at the end of the first pass on a source that does
// not change: a write through a name that is gone by then was journaled
// under that name only, and the file's other names must still get it.
func (s *source) leaveLinked(d *treeDiff, es []Entry) {
	g := groups(es)
	leaders := map[string]bool{}
	live := s.live()
	for i := range es {
		e := &es[i]
		if e.Kind != journal.KindFile || e.Nlink <= 1 {
			continue
		}
		group := groupOf(g, e)
		if int(e.Nlink) <= len(group) {
			continue
		}
		leaders[group[0]] = true
		if live {
			s.markStale(e.Path)
		}
		s.mu.Lock()
		if s.linked == nil {
			s.linked = map[devIno]bool{}
		}
		s.linked[devIno{e.Dev, e.Ino}] = true
		s.mu.Unlock()
	}
	if len(leaders) == 0 {
		return
	}
	d.objects = slices.DeleteFunc(d.objects, func(w work) bool { return leaders[w.src.Path] })
	d.links = slices.DeleteFunc(d.links, func(l linkWork) bool { return leaders[l.leader] })
}

// relink joins the names of the inodes leaveLinked remembered (see
// above). It runs on c after every item of a pass on a source that does
// not change, so the names it finds are the ones the target must hold.
func (s *source) relink(c *clientConn) error {
	if s.live() || s.dryRun {
		return nil
	}
	sets, err := s.linkedNames()
	if err != nil {
		return err
	}
	for _, ns := range sets {
		trace("relink %q", ns)
		if err := s.joinNames(c, ns); err != nil {
			return err
		}
	}
	return nil
}

// linkedNames takes the inodes leaveLinked remembered and returns each
// one's names in the source tree, sorted.
func (s *source) linkedNames() ([][]string, error) {
	s.mu.Lock()
	want := s.linked
	s.linked = nil
	s.mu.Unlock()
	if len(want) == 0 {
		return nil, nil
	}
	// Only a walk of the whole source finds an inode's other names; it
	// lists metadata only, and runs only when links were made.
	tree, err := Scan(s.ctx, s.cfg.Root, ScanOptions{Excludes: s.cfg.Excludes})
	if err != nil {
		return nil, fmt.Errorf("list the source: %w", err)
	}
	names := map[devIno][]string{}
	for i := range tree.Entries {
		e := &tree.Entries[i]
		if k := (devIno{e.Dev, e.Ino}); e.Kind == journal.KindFile && want[k] {
			names[k] = append(names[k], e.Path)
		}
	}
	var sets [][]string
	for _, ns := range names {
		// Sorted (the scan's order). A single name (the others are
		// excluded or gone) is still compared whole.
		sets = append(sets, ns)
	}
	slices.SortFunc(sets, func(a, b []string) int { return journal.ComparePaths(a[0], b[0]) })
	return sets, nil
}

// joinNames makes the target's objects at names (one source file's names,
// sorted) one file identical to the source's.
func (s *source) joinNames(c *clientConn, names []string) error {
	tgt := make(map[string]*Entry, len(names))
	for _, n := range names {
		es, err := c.list(n, true, false)
		if err != nil {
			return err
		}
		if len(es) == 1 && es[0].Path == n {
			tgt[n] = &es[0]
		}
	}
	// The leader is a name the target holds as a file, preferably one no
	// other target name shares. A target name outside the group that
	// shares it can only be one the source moved or deleted since this
	// pass was planned: the next pass replays that on the target, where
	// the object must then still be this file.
	leader := ""
	for _, n := range names {
		t := tgt[n]
		if t == nil || t.Kind != journal.KindFile {
			continue
		}
		in := 0
		for _, m := range names {
			if u := tgt[m]; u != nil && u.Dev == t.Dev && u.Ino == t.Ino {
				in++
			}
		}
		if leader == "" || int(t.Nlink) == in {
			leader = n
		}
		if int(t.Nlink) == in {
			break
		}
	}
	if leader == "" {
		leader = names[0] // made by syncFile
	}
	b := s.newBatch(c, 0)
	if err := s.syncFile(c, leader, tgt[leader]); err != nil {
		return err
	}
	lt, err := c.list(leader, true, false)
	if err != nil {
		return err
	}
	if len(lt) != 1 || lt[0].Kind != journal.KindFile {
		// Gone from the source meanwhile: the tracking map has it.
		return nil
	}
	var dirs []string
	for _, n := range names {
		t := tgt[n]
		if n == leader || (t != nil && t.Dev == lt[0].Dev && t.Ino == lt[0].Ino) {
			continue
		}
		if t != nil {
			if err := s.removeOps(b, t, []Entry{*t}); err != nil {
				return err
			}
		} else if err := s.ensureParents(c, n); err != nil {
			return err
		}
		if err := b.add(op.Op{Kind: op.Link, Path: n, Target: leader}); err != nil {
			return err
		}
		s.stats.changed.Add(1)
		if dir := parentOf(n); !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	// The links changed their directories' times, which their items
	// had set already.
	if err := s.sendDirTimes(b, dirs); err != nil {
		return err
	}
	return c.barrier()
}

// syncFile brings the target's file at p (t: its listing, nil if none) to
// the source's contents and metadata, comparing blocks.
func (s *source) syncFile(c *clientConn, p string, t *Entry) error {
	src, err := Scan(s.ctx, s.cfg.Root, ScanOptions{Prefix: p, Single: true, Hash: true, BlockSize: s.opt.BlockSize,
		Excludes: s.cfg.Excludes, keepBlocks: true})
	if err != nil {
		return fmt.Errorf("list %q on the source: %w", p, err)
	}
	if len(src.Entries) != 1 || src.Entries[0].Kind != journal.KindFile {
		if s.live() {
			s.markStale(p)
			return nil
		}
		return fmt.Errorf("%q: %w", p, errSourceGone)
	}
	if t != nil {
		es, err := c.list(p, true, true)
		if err != nil {
			return err
		}
		t = nil
		if len(es) == 1 && es[0].Kind == journal.KindFile {
			t = &es[0]
		}
	}
	if t == nil {
		if err := s.ensureParents(c, p); err != nil {
			return err
		}
	}
	return s.syncObject(c, work{src: &src.Entries[0], tgt: t})
}
