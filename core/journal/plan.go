package journal

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// # Incremental resync plans
//
// Both nodes held the same tree at their common base; each node's ZoneMap
// says how its own tree changed since. NewPlan walks both maps together and
// produces what the target must do to hold the source's tree, touching only
// what either side changed:
//
//  1. Stage: rename each object the target already holds but at another
//     path into a staging slot (deepest first). Moving everything out first
//     makes cycles (swaps), chains (a→b, c→a) and moves out of deleted
//     directories trivially safe.
//  2. Delete: remove, recursively, what the source does not hold at those
//     paths (paths under a slot belong to a staged object).
//  3. Unstage: rename each slot to its final path (shallowest first),
//     creating missing parent directories (replacing a non-directory in the
//     way: the source holds a directory there).
//  4. Items, independent of each other (run them in parallel): Update sends
//     the changed byte ranges of an object the target holds, sets its size
//     and times, and all its metadata when Meta; Whole makes the target's
//     path identical to the source's, recursively (a file, a directory
//     tree, or nothing when the source has none; what the target holds
//     there is replaced entry by entry), leaving Except paths (moved there,
//     or already there) alone. Items create missing parent directories.
//  5. Dirs: set the times of these directories (those that exist) last,
//     deepest first: every phase changes them. Then remove StagingDir
//     recursively (an interrupted earlier resync may have left objects
//     there that the source no longer needs).
//
// The target must journal every change it makes (its own map stays exact),
// so a resync interrupted at any point is resumed by planning again. The
// plan reflects the source when it was made: what the application changes
// meanwhile is replicated as usual, and an item reads the source when it
// runs (a path gone by then is deleted on the target).

// DefaultStagingDir is the default staging directory, relative to the
// replicated directory; it must be excluded from replication.
const DefaultStagingDir = ".halo-resync"

// PlanOptions are the inputs of NewPlan besides the maps.
type PlanOptions struct {
	// Stat returns the size of path on the source ("" is the replicated
	// directory) and whether it exists; for a directory, the size of its
	// tree if known, else 0. Plans clip ranges and count bytes with it.
	Stat func(path string) (size int64, exists bool)
	// StagingDir (default DefaultStagingDir) holds phase 1's slots on the
	// target. Neither side's entries under it are planned.
	StagingDir string
}

// Move renames From to To on the target.
type Move struct{ From, To string }

// ItemKind says how an item brings a path up to date.
type ItemKind uint8

const (
	// ItemUpdate: the target holds the same object; send Ranges, set the
	// size and times, and all metadata when Meta.
	ItemUpdate ItemKind = iota + 1
	// ItemWhole: send the path whole and recursively (delete it on the
	// target if the source has none), except the Except paths below it;
	// directory times last.
	ItemWhole
)

func (k ItemKind) String() string {
	switch k {
	case ItemUpdate:
		return "update"
	case ItemWhole:
		return "whole"
	}
	return "ItemKind(" + strconv.Itoa(int(k)) + ")"
}

// ByteRange is Len bytes from Off.
type ByteRange struct{ Off, Len int64 }

// Item is one independent unit of resync work.
type Item struct {
	Path   string
	Kind   ItemKind
	Ranges []ByteRange // ItemUpdate: merged, ascending, clipped to Size
	Size   int64       // source size at planning time (see PlanOptions.Stat)
	Meta   bool        // ItemUpdate: metadata changed
	Except []string    // ItemWhole: paths below Path to leave alone (moved there, or there already)
}

// Bytes is what the item sends (an estimate for Whole directories).
func (it Item) Bytes() int64 {
	if it.Kind == ItemWhole {
		return it.Size
	}
	var n int64
	for _, r := range it.Ranges {
		n += r.Len
	}
	return n
}

// Plan is an incremental resync, phase by phase (see the package text).
type Plan struct {
	ZoneSize   int64
	StagingDir string
	Stage      []Move
	Delete     []string
	Unstage    []Move
	Items      []Item
	Dirs       []string
	Bytes      int64 // total of Items' Bytes: progress and ETA
}

// ErrBaseMismatch: the maps do not describe changes since the same base.
var ErrBaseMismatch = errors.New("zone maps have different bases")

// NewPlan plans the resync of target from source. Both maps must describe
// changes since the same base (StartResync.Since; see ZoneMap.Covers) with
// the same zone size. Operations in flight are treated as possibly
// performed (on copies: the maps are not modified).
func NewPlan(source, target *ZoneMap, opt PlanOptions) (*Plan, error) {
	switch {
	case opt.Stat == nil:
		return nil, errors.New("plan resync: no Stat function")
	case source.shift != target.shift:
		return nil, fmt.Errorf("plan resync: zone sizes %d and %d differ", source.ZoneSize(), target.ZoneSize())
	case source.base != target.base:
		return nil, fmt.Errorf("plan resync: source base %016x, target base %016x: %w", source.base, target.base, ErrBaseMismatch)
	}
	if opt.StagingDir == "" {
		opt.StagingDir = DefaultStagingDir
	}
	if err := validPath(opt.StagingDir, false); err != nil {
		return nil, fmt.Errorf("plan resync: staging directory: %w", err)
	}
	if len(source.pending) > 0 {
		source = source.Clone()
		source.ResolvePending()
	}
	if len(target.pending) > 0 {
		target = target.Clone()
		target.ResolvePending()
	}
	p := &planner{
		src: source, tgt: target, opt: opt,
		byOrigin: map[string]*node{},
		claimed:  map[string]bool{},
		stageSrc: map[string]bool{},
		dirs:     map[string]bool{},
		plan:     &Plan{ZoneSize: source.ZoneSize(), StagingDir: opt.StagingDir},
	}
	target.walk(func(n *node, _ string) {
		if n.origin != nil {
			p.byOrigin[*n.origin] = n
		}
	})
	if sd := target.lookup(opt.StagingDir); sd != nil {
		p.slotsTaken = sd.kids
	}
	p.visit(visit{s: source.root, sBase: true, t: target.root, tBase: true, stable: true})
	p.finish()
	return p.plan, nil
}

type planner struct {
	src, tgt   *ZoneMap
	opt        PlanOptions
	byOrigin   map[string]*node // target nodes by explicit origin
	claimed    map[string]bool  // base objects already placed (safety net)
	slotsTaken map[string]*node // names under the staging dir the target journal knows
	nextSlot   int
	stageSrc   map[string]bool
	dirs       map[string]bool
	plan       *Plan
}

// visit pairs what the source holds at path x with the target object that
// sits at x once the moves of x's ancestors are done.
type visit struct {
	x string // final path
	// source side: node (nil: implied), base object, whether it derives from
	// the base at all, whether nothing is there
	s     *node
	sEff  string
	sBase bool
	sGone bool
	// target side: node (nil: implied), where it is before the plan, where
	// it is during phase 2, its base object
	t     *node
	tPath string
	ph2   string
	tEff  string
	tBase bool
	tGone bool
	// stable: no ancestor of x moves or is deleted on the target
	stable bool
}

func (p *planner) staging(path string) bool {
	return path == p.opt.StagingDir || isUnder(path, p.opt.StagingDir)
}

func (p *planner) visit(v visit) {
	if p.staging(v.x) {
		return
	}
	switch {
	case v.sGone:
		if !v.tGone {
			p.del(v.ph2, v.x)
		}
		return
	case !v.sBase:
		p.whole(v.x, v.s, v.ph2, v.stable)
		return
	case v.tBase && v.tEff == v.sEff && !p.claimed[v.sEff]:
		p.claimed[v.sEff] = true
		p.update(v.x, v.s, v.t)
		p.children(v.x, v.s, v.sEff, v.t, v.tPath, v.ph2, v.stable)
		return
	}
	pn, pPath, ok := p.locate(v.sEff)
	if !ok || p.claimed[v.sEff] {
		p.whole(v.x, v.s, v.ph2, v.stable)
		return
	}
	if !v.tGone {
		p.del(v.ph2, v.x) // free the destination
	}
	p.move(v.x, v.s, v.sEff, pn, pPath)
}

// move brings base object eff from the target's pPath to x.
func (p *planner) move(x string, s *node, eff string, pn *node, pPath string) {
	p.claimed[eff] = true
	slot := p.newSlot()
	p.plan.Stage = append(p.plan.Stage, Move{From: pPath, To: slot})
	p.stageSrc[pPath] = true
	p.plan.Unstage = append(p.plan.Unstage, Move{From: slot, To: x})
	p.changed(x)
	p.update(x, s, pn)
	// Below a moved object, target paths before the plan differ from the
	// final ones: nothing there is stable.
	p.children(x, s, eff, pn, pPath, slot, false)
}

// children visits the names either side says something about below a
// paired object (same base object eff on both sides). stable: no ancestor
// of x moves or is deleted on the target (its paths are final already).
func (p *planner) children(x string, s *node, eff string, t *node, tPath, ph2 string, stable bool) {
	var names []string
	if s != nil {
		for n := range s.kids {
			names = append(names, n)
		}
	}
	if t != nil {
		for n := range t.kids {
			if s == nil || s.kids[n] == nil {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	for _, name := range names {
		v := visit{x: joinPath(x, name), tPath: joinPath(tPath, name), ph2: joinPath(ph2, name), stable: stable}
		if s != nil {
			v.s = s.kids[name]
		}
		if t != nil {
			v.t = t.kids[name]
		}
		v.sEff, v.sBase, v.sGone = childOf(v.s, eff, name)
		v.tEff, v.tBase, v.tGone = childOf(v.t, eff, name)
		p.visit(v)
	}
}

// childOf describes the child named name of an object derived from base
// object eff: its base object, whether it derives from the base, whether it
// is gone.
func childOf(k *node, eff, name string) (string, bool, bool) {
	switch {
	case k == nil:
		return joinPath(eff, name), true, false
	case k.is(flagGone):
		return "", false, true
	case k.is(flagNew):
		return "", false, false
	case k.origin != nil:
		return *k.origin, true, false
	}
	return joinPath(eff, name), true, false
}

// locate finds where the target holds base object o: the deepest node
// whose explicit origin is a prefix of o (or the root), then down through
// nodes that inherit their position. Returns the node (nil when implied) and
// its path.
func (p *planner) locate(o string) (*node, string, bool) {
	comps := strings.Split(o, "/")
	if o == "" {
		comps = nil
	}
	for k := len(comps); k >= 0; k-- {
		anchor := p.tgt.root
		if k > 0 {
			anchor = p.byOrigin[strings.Join(comps[:k], "/")]
			if anchor == nil {
				continue
			}
		}
		n, path, ok := anchor, anchor.path(), true
		for _, c := range comps[k:] {
			path = joinPath(path, c)
			if n == nil {
				continue
			}
			kid := n.kids[c]
			if kid != nil && (kid.is(flagNew|flagGone) || kid.origin != nil) {
				ok = false
				break
			}
			n = kid
		}
		if ok {
			return n, path, true
		}
	}
	return nil, "", false
}

// treeWalk looks below a path sent whole for base objects the source moved
// there and the target holds: they are moved (or left in place) rather than
// sent, and excepted from the item. xPh2 is where the target's x is during
// phase 2.
func (p *planner) treeWalk(s *node, x, xPh2 string, stable bool, item *Item) {
	if s == nil {
		return
	}
	for _, k := range s.sortedKids() {
		kx, kPh2 := joinPath(x, k.name), joinPath(xPh2, k.name)
		if p.staging(kx) || k.is(flagGone) {
			continue
		}
		if k.origin != nil && !k.is(flagNew) {
			eff := *k.origin
			if pn, pPath, ok := p.locate(eff); ok && !p.claimed[eff] {
				item.Except = append(item.Except, kx)
				if stable && pPath == kx {
					p.claimed[eff] = true
					p.update(kx, k, pn)
					p.children(kx, k, eff, pn, pPath, kPh2, true)
				} else {
					p.del(kPh2, kx) // free the destination
					p.move(kx, k, eff, pn, pPath)
				}
				continue
			}
		}
		p.treeWalk(k, kx, kPh2, stable, item)
	}
}

func (p *planner) newSlot() string {
	for {
		name := strconv.Itoa(p.nextSlot)
		p.nextSlot++
		if p.slotsTaken[name] == nil {
			return joinPath(p.opt.StagingDir, name)
		}
	}
}

func (p *planner) del(ph2, x string) {
	p.plan.Delete = append(p.plan.Delete, ph2)
	p.changed(x)
}

func (p *planner) changed(x string) {
	if x != "" {
		p.dirs[parentDir(x)] = true
	}
}

func parentDir(x string) string {
	if i := strings.LastIndexByte(x, '/'); i >= 0 {
		return x[:i]
	}
	return ""
}

// whole sends x whole. The item replaces what the target holds there
// (ph2 during phase 2) entry by entry, so nothing is deleted beforehand.
func (p *planner) whole(x string, s *node, ph2 string, stable bool) {
	size, exists := p.opt.Stat(x)
	if !exists && s == nil {
		// Nothing on the source, nothing moved below: just delete.
		p.del(ph2, x)
		return
	}
	p.plan.Items = append(p.plan.Items, Item{Path: x, Kind: ItemWhole, Size: size})
	p.changed(x)
	// Items grow while walking: fill a copy, store its exceptions after.
	i := len(p.plan.Items) - 1
	item := p.plan.Items[i]
	p.treeWalk(s, x, ph2, stable, &item)
	p.plan.Items[i].Except = item.Except
}

// update adds an item for an object both sides hold, if either changed it.
func (p *planner) update(x string, s, t *node) {
	var zs []ZoneRange
	meta := false
	for _, n := range []*node{s, t} {
		if n != nil {
			zs = unionRanges(zs, n.zones.ranges())
			meta = meta || n.is(flagMeta)
		}
	}
	if len(zs) == 0 && !meta {
		return
	}
	size, exists := p.opt.Stat(x)
	if !exists {
		// Gone from the source since the maps were taken: Whole removes it.
		p.plan.Items = append(p.plan.Items, Item{Path: x, Kind: ItemWhole})
		p.changed(x)
		return
	}
	it := Item{Path: x, Kind: ItemUpdate, Size: size, Meta: meta}
	for _, z := range zs {
		off := int64(min(z.Start, uint64(maxOffset)>>p.src.shift) << p.src.shift)
		end := int64(maxOffset)
		if z.End != NoEnd && z.End <= uint64(maxOffset)>>p.src.shift {
			end = int64(z.End << p.src.shift)
		}
		end = min(end, size)
		if off < end {
			it.Ranges = append(it.Ranges, ByteRange{Off: off, Len: end - off})
		}
	}
	// Even with no range left (changes only past the source's end of file)
	// the size and times need setting.
	p.plan.Items = append(p.plan.Items, it)
}

// unionRanges merges two sorted canonical range lists.
func unionRanges(a, b []ZoneRange) []ZoneRange {
	all := append(slices.Clone(a), b...)
	slices.SortFunc(all, func(x, y ZoneRange) int {
		switch {
		case x.Start < y.Start:
			return -1
		case x.Start > y.Start:
			return 1
		}
		return 0
	})
	var out []ZoneRange
	for _, r := range all {
		if n := len(out); n > 0 && r.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, r.End)
			continue
		}
		out = append(out, r)
	}
	return out
}

// ComparePaths orders paths so that a directory comes right before its
// subtree ('/' sorts first): the order of plans and of tree scans.
func ComparePaths(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if x == '/' {
			return -1
		}
		if y == '/' {
			return 1
		}
		return int(x) - int(y)
	}
	return len(a) - len(b)
}

func depth(p string) int {
	if p == "" {
		return 0
	}
	return strings.Count(p, "/") + 1
}

// finish orders the phases deterministically and computes totals.
func (p *planner) finish() {
	pl := p.plan
	// Deepest first: a nested source is staged before its ancestor moves.
	slices.SortFunc(pl.Stage, func(a, b Move) int {
		if d := depth(b.From) - depth(a.From); d != 0 {
			return d
		}
		return strings.Compare(a.From, b.From)
	})
	slices.SortFunc(pl.Unstage, func(a, b Move) int {
		if d := depth(a.To) - depth(b.To); d != 0 {
			return d
		}
		return strings.Compare(a.To, b.To)
	})
	// Deletes: drop what staging already emptied and what an ancestor's
	// delete covers.
	slices.SortFunc(pl.Delete, ComparePaths)
	var dels []string
	for _, d := range slices.Compact(pl.Delete) {
		if p.stageSrc[d] {
			continue
		}
		if n := len(dels); n > 0 && isUnder(d, dels[n-1]) {
			continue
		}
		dels = append(dels, d)
	}
	pl.Delete = dels
	slices.SortFunc(pl.Items, func(a, b Item) int { return ComparePaths(a.Path, b.Path) })
	for i := range pl.Items {
		slices.SortFunc(pl.Items[i].Except, ComparePaths)
		pl.Bytes += pl.Items[i].Bytes()
	}
	for d := range p.dirs {
		pl.Dirs = append(pl.Dirs, d)
	}
	slices.SortFunc(pl.Dirs, func(a, b string) int {
		if d := depth(b) - depth(a); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
}
