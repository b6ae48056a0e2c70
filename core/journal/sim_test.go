package journal

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// The simulation gives each node a real (in-memory) tree, performs random
// POSIX-like operations on it through the journal protocol (Mark*, Begin,
// Finish, records appended to a byte log), crashes nodes with operations in
// flight and torn log tails, and applies resync plans to the target tree.
// Every file entry also carries its provenance — the naive model of what the
// map must say about it (base object, dirty zones, metadata) — updated by
// the operations directly.

const (
	simZone  = 512
	simGen   = 7
	simNames = "abcdef"
)

type fent struct {
	dir  bool
	data []byte
	mode uint32

	fromBase bool   // derives from the base tree
	origin   string // its base path
	zones    map[uint64]bool
	tail     int64 // first zone of the dirty tail, -1 if none
	meta     bool
}

func (f *fent) clone() *fent {
	c := *f
	c.data = slices.Clone(f.data)
	c.zones = maps.Clone(f.zones)
	return &c
}

// modelRanges is what the map must hold for the entry.
func (f *fent) modelRanges() []ZoneRange {
	zs := slices.Sorted(maps.Keys(f.zones))
	var out []ZoneRange
	for _, z := range zs {
		if n := len(out); n > 0 && out[n-1].End == z {
			out[n-1].End++
			continue
		}
		out = append(out, ZoneRange{z, z + 1})
	}
	if f.tail >= 0 {
		t := uint64(f.tail)
		if n := len(out); n > 0 && out[n-1].End == t {
			out[n-1].End = NoEnd
		} else {
			out = append(out, ZoneRange{t, NoEnd})
		}
	}
	return out
}

type simNode struct {
	t    testing.TB
	name string
	fs   map[string]*fent
	m    *ZoneMap
	log  []byte
	seen map[string]bool // every path that ever existed
	base map[string]bool // paths of the base tree
	// budget, when >= 0, counts journaled operations left before the node
	// is interrupted (a crash in the middle of a resync).
	budget int
	trace  []string // operations performed, for failure messages
	calm   bool     // randomOp neither crashes nor fails operations
}

func (n *simNode) tracef(format string, args ...any) {
	n.trace = append(n.trace, fmt.Sprintf(format, args...))
}

func (n *simNode) history() string {
	return strings.Join(n.trace, "\n")
}

var errInterrupted = errors.New("interrupted")

func newSimNode(t testing.TB, name string, base map[string]*fent) *simNode {
	n := &simNode{t: t, name: name, fs: map[string]*fent{}, seen: map[string]bool{}, base: map[string]bool{}, budget: -1}
	for p, f := range base {
		n.base[p] = true
		c := f.clone()
		c.fromBase, c.origin, c.zones, c.tail, c.meta = true, p, map[uint64]bool{}, -1, false
		n.fs[p] = c
		n.seen[p] = true
	}
	m, err := NewZoneMap(simZone)
	if err != nil {
		t.Fatal(err)
	}
	n.m = m
	m.SetGeneration(simGen)
	rec, err := m.Checkpoint(simGen)
	if err != nil {
		t.Fatal(err)
	}
	n.logRec(rec)
	return n
}

func (n *simNode) logRec(r Record) {
	if r == nil {
		return
	}
	b, err := Append(n.log, r)
	if err != nil {
		n.t.Fatalf("%s: encode %#v: %v", n.name, r, err)
	}
	n.log = b
}

func (n *simNode) step() {
	if n.budget == 0 {
		panic(errInterrupted)
	}
	if n.budget > 0 {
		n.budget--
	}
}

func parentOf(p string) string { return parentDir(p) }

func (n *simNode) touchParent(p string) {
	if p == "" {
		return
	}
	if pe := n.fs[parentOf(p)]; pe != nil && pe.fromBase {
		pe.meta = true
	}
}

// subtree lists p and the paths below it.
func (n *simNode) subtree(p string) []string {
	var out []string
	for q := range n.fs {
		if q == p || (p == "" && q != "") || isUnder(q, p) {
			out = append(out, q)
		}
	}
	slices.SortFunc(out, ComparePaths)
	return out
}

func (n *simNode) kids(p string) []string {
	var out []string
	for q := range n.fs {
		if q != "" && parentOf(q) == p {
			out = append(out, q)
		}
	}
	slices.Sort(out)
	return out
}

// ---- data operations ----

func (n *simNode) write(p string, off int64, data []byte) {
	n.step()
	n.tracef("write %q %d+%d", p, off, len(data))
	rec, err := n.m.MarkWrite(p, off, int64(len(data)))
	if err != nil {
		n.t.Fatalf("%s: %v", n.name, err)
	}
	n.logRec(rec)
	f := n.fs[p]
	if end := int(off) + len(data); end > len(f.data) {
		f.data = append(f.data, make([]byte, end-len(f.data))...)
	}
	copy(f.data[off:], data)
	if f.fromBase && len(data) > 0 {
		for z := uint64(off) / simZone; z <= uint64(off+int64(len(data))-1)/simZone; z++ {
			if f.tail < 0 || z < uint64(f.tail) {
				f.zones[z] = true
			}
		}
	}
}

func (n *simNode) truncate(p string, size int64) {
	n.step()
	n.tracef("truncate %q %d", p, size)
	rec, err := n.m.MarkTruncate(p, size)
	if err != nil {
		n.t.Fatalf("%s: %v", n.name, err)
	}
	n.logRec(rec)
	f := n.fs[p]
	if int(size) <= len(f.data) {
		f.data = f.data[:size]
	} else {
		f.data = append(f.data, make([]byte, int(size)-len(f.data))...)
	}
	if f.fromBase {
		t := size / simZone
		if f.tail < 0 || t < f.tail {
			f.tail = t
		}
		for z := range f.zones {
			if z >= uint64(f.tail) {
				delete(f.zones, z)
			}
		}
	}
}

func (n *simNode) setMode(p string, mode uint32) {
	n.step()
	n.tracef("chmod %q", p)
	rec, err := n.m.MarkMeta(p)
	if err != nil {
		n.t.Fatalf("%s: %v", n.name, err)
	}
	n.logRec(rec)
	f := n.fs[p]
	f.mode = mode
	if f.fromBase {
		f.meta = true
	}
}

// ---- structural operations ----

// applyFS performs op on the tree and on the provenance model.
func (n *simNode) applyFS(op Op) {
	switch op.Kind {
	case OpCreate:
		n.t.Fatalf("use create")
	case OpDelete:
		for _, q := range n.subtree(op.Path) {
			delete(n.fs, q)
		}
		n.touchParent(op.Path)
	case OpRename:
		moved := map[string]*fent{}
		for _, q := range n.subtree(op.Path) {
			moved[op.To+q[len(op.Path):]] = n.fs[q]
			delete(n.fs, q)
		}
		for _, q := range n.subtree(op.To) {
			delete(n.fs, q)
		}
		for q, f := range moved {
			n.fs[q] = f
			n.seen[q] = true
		}
		n.touchParent(op.Path)
		n.touchParent(op.To)
	case OpExchange:
		a, b := map[string]*fent{}, map[string]*fent{}
		for _, q := range n.subtree(op.Path) {
			a[op.To+q[len(op.Path):]] = n.fs[q]
			delete(n.fs, q)
		}
		for _, q := range n.subtree(op.To) {
			b[op.Path+q[len(op.To):]] = n.fs[q]
			delete(n.fs, q)
		}
		for q, f := range a {
			n.fs[q] = f
			n.seen[q] = true
		}
		for q, f := range b {
			n.fs[q] = f
			n.seen[q] = true
		}
		n.touchParent(op.Path)
		n.touchParent(op.To)
	}
}

// structural performs op through Begin/Finish.
func (n *simNode) structural(op Op, create *fent) {
	n.step()
	n.tracef("%v %q %q", op.Kind, op.Path, op.To)
	in, err := n.m.Begin(op)
	if err != nil {
		n.t.Fatalf("%s: %v", n.name, err)
	}
	n.logRec(in)
	n.performFS(op, create)
	done, err := n.m.Finish(in.ID, true)
	if err != nil {
		n.t.Fatalf("%s: %v", n.name, err)
	}
	n.logRec(done)
}

func (n *simNode) performFS(op Op, create *fent) {
	if op.Kind == OpCreate {
		create.fromBase, create.zones, create.tail = false, map[uint64]bool{}, -1
		n.fs[op.Path] = create
		n.seen[op.Path] = true
		n.touchParent(op.Path)
		return
	}
	n.applyFS(op)
}

func (n *simNode) createFile(p string, mode uint32) {
	n.structural(Op{Kind: OpCreate, Path: p}, &fent{mode: mode})
}

func (n *simNode) mkdir(p string, mode uint32) {
	n.structural(Op{Kind: OpCreate, Path: p}, &fent{dir: true, mode: mode})
}

// failedOp begins an operation that fails: the tree does not change.
func (n *simNode) failedOp(op Op) {
	n.tracef("failed %v %q %q", op.Kind, op.Path, op.To)
	in, err := n.m.Begin(op)
	if err != nil {
		n.t.Fatalf("%s: %v", n.name, err)
	}
	n.logRec(in)
	done, err := n.m.Finish(in.ID, false)
	if err != nil {
		n.t.Fatalf("%s: %v", n.name, err)
	}
	n.logRec(done)
}

// inflightCrash begins op, maybe performs it, and crashes before its Done.
func (n *simNode) inflightCrash(rng *rand.Rand, op Op, create *fent) {
	n.tracef("in flight at crash: %v %q %q", op.Kind, op.Path, op.To)
	in, err := n.m.Begin(op)
	if err != nil {
		n.t.Fatalf("%s: %v", n.name, err)
	}
	n.logRec(in)
	if rng.IntN(2) == 0 {
		n.performFS(op, create)
	}
	// The map must now assume anything at the op's paths.
	for _, p := range op.paths() {
		if _, ok := n.fs[p]; ok {
			for _, q := range n.subtree(p) {
				f := n.fs[q]
				f.fromBase, f.origin, f.zones, f.tail, f.meta = false, "", map[uint64]bool{}, -1, false
			}
		}
		n.touchParent(p)
	}
	n.crash(rng, rng.IntN(2) == 0)
}

// crash replays the log as a restarted node would, optionally after a torn
// tail (a record that was being appended), and checks the model.
func (n *simNode) crash(rng *rand.Rand, torn bool) {
	n.tracef("crash (torn tail %v)", torn)
	valid := len(n.log)
	if torn {
		b, err := Encode(Dirty{Gen: simGen, Path: "torn", Shift: 9, Zones: []ZoneRange{{1, 5}}})
		if err != nil {
			n.t.Fatal(err)
		}
		n.log = append(n.log, b[:1+rng.IntN(len(b)-1)]...)
	}
	m, info, err := ReplayLog(n.log, simZone)
	if err != nil {
		n.t.Fatalf("%s: replay: %v", n.name, err)
	}
	if info.Valid != valid || !info.Trusted() || (torn != (info.Damage != nil)) {
		n.t.Fatalf("%s: replay info %+v, valid prefix is %d (torn %v)", n.name, info, valid, torn)
	}
	n.log = n.log[:info.Valid]
	n.logRec(info.Resolve)
	m.SetGeneration(simGen)
	n.m = m
	n.checkModel("after crash")
	// The log now replays to the same map.
	again, info2, err := ReplayLog(n.log, simZone)
	if err != nil || info2.Resolve != nil || info2.Damage != nil {
		n.t.Fatalf("%s: second replay: %v %+v", n.name, err, info2)
	}
	if !sameMap(again, m) {
		n.t.Fatalf("%s: second replay differs", n.name)
	}
}

// checkModel compares what the map says with the provenance model.
func (n *simNode) checkModel(when string) {
	n.t.Helper()
	when += "\nhistory:\n" + n.history() + "\nmap:\n" + fmt.Sprint(n.m.Entries()) + "\n"
	for p, f := range n.fs {
		d := n.m.describe(p)
		switch {
		case d.gone:
			n.t.Fatalf("%s %s: map says %q is gone", n.name, when, p)
		case !f.fromBase:
			if d.fromBase {
				n.t.Fatalf("%s %s: %q is new but the map says base %q", n.name, when, p, d.origin)
			}
		case !d.fromBase:
			n.t.Fatalf("%s %s: %q is base %q but the map says new", n.name, when, p, f.origin)
		case d.origin != f.origin:
			n.t.Fatalf("%s %s: %q is base %q, map says %q", n.name, when, p, f.origin, d.origin)
		case !slices.Equal(d.zones, f.modelRanges()):
			n.t.Fatalf("%s %s: %q zones %v, model %v", n.name, when, p, d.zones, f.modelRanges())
		case d.meta != f.meta:
			n.t.Fatalf("%s %s: %q meta %v, model %v", n.name, when, p, d.meta, f.meta)
		}
	}
	for p := range n.seen {
		if _, ok := n.fs[p]; ok {
			continue
		}
		// The map may place a base object that never existed at an empty
		// path (it cannot know), never one that did.
		if d := n.m.describe(p); !d.gone && d.fromBase && n.base[d.origin] {
			n.t.Fatalf("%s %s: nothing at %q but the map says base %q", n.name, when, p, d.origin)
		}
	}
}

func sameMap(a, b *ZoneMap) bool {
	ea, eb := a.Entries(), b.Entries()
	if len(ea) != len(eb) || a.base != b.base || !maps.Equal(a.pending, b.pending) {
		return false
	}
	for i := range ea {
		x, y := ea[i], eb[i]
		if x.Path != y.Path || x.New != y.New || x.Gone != y.Gone || x.Meta != y.Meta ||
			x.Origin != y.Origin || x.Moved != y.Moved || !slices.Equal(x.Zones, y.Zones) {
			return false
		}
	}
	return true
}

// ---- random trees and operations ----

func randomName(rng *rand.Rand) string { return string(simNames[rng.IntN(len(simNames))]) }

func randomData(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return b
}

func randomTree(rng *rand.Rand) map[string]*fent {
	t := map[string]*fent{"": {dir: true, mode: 0o755}}
	dirs := []string{""}
	for range 4 + rng.IntN(14) {
		parent := dirs[rng.IntN(len(dirs))]
		if depth(parent) >= 3 {
			continue
		}
		p := joinPath(parent, randomName(rng))
		if t[p] != nil {
			continue
		}
		if rng.IntN(3) == 0 {
			t[p] = &fent{dir: true, mode: 0o755}
			dirs = append(dirs, p)
		} else {
			t[p] = &fent{data: randomData(rng, rng.IntN(5*simZone)), mode: 0o644}
		}
	}
	return t
}

func (n *simNode) pick(rng *rand.Rand, want func(p string, f *fent) bool) (string, bool) {
	var c []string
	for p, f := range n.fs {
		if want(p, f) {
			c = append(c, p)
		}
	}
	if len(c) == 0 {
		return "", false
	}
	slices.Sort(c)
	return c[rng.IntN(len(c))], true
}

func isFile(p string, f *fent) bool   { return !f.dir }
func isDirEnt(p string, f *fent) bool { return f.dir }
func notRoot(p string, f *fent) bool  { return p != "" }

// randomOp performs one random valid operation, sometimes crashing.
func (n *simNode) randomOp(rng *rand.Rand) {
	for {
		switch k := rng.IntN(100); {
		case k < 25:
			if p, ok := n.pick(rng, isFile); ok {
				off := rng.Int64N(6 * simZone)
				n.write(p, off, randomData(rng, 1+rng.IntN(3*simZone)))
				return
			}
		case k < 32:
			if p, ok := n.pick(rng, isFile); ok {
				n.truncate(p, rng.Int64N(7*simZone))
				return
			}
		case k < 38:
			if p, ok := n.pick(rng, func(string, *fent) bool { return true }); ok {
				n.setMode(p, n.fs[p].mode+1)
				return
			}
		case k < 52:
			d, _ := n.pick(rng, isDirEnt)
			p := joinPath(d, randomName(rng))
			if n.fs[p] != nil || depth(p) > 4 {
				continue
			}
			if rng.IntN(3) == 0 {
				n.mkdir(p, 0o700)
			} else {
				n.createFile(p, 0o600)
			}
			return
		case k < 62:
			p, ok := n.pick(rng, func(p string, f *fent) bool { return p != "" && (!f.dir || len(n.kids(p)) == 0) })
			if ok {
				n.structural(Op{Kind: OpDelete, Path: p}, nil)
				return
			}
		case k < 82:
			a, ok := n.pick(rng, notRoot)
			d, _ := n.pick(rng, isDirEnt)
			b := joinPath(d, randomName(rng))
			if !ok || a == b || isUnder(b, a) || depth(b) > 5 {
				continue
			}
			if t := n.fs[b]; t != nil && (t.dir != n.fs[a].dir || (t.dir && len(n.kids(b)) > 0) || isUnder(a, b)) {
				continue
			}
			n.structural(Op{Kind: OpRename, Path: a, To: b}, nil)
			return
		case k < 88:
			a, ok1 := n.pick(rng, notRoot)
			b, ok2 := n.pick(rng, notRoot)
			if !ok1 || !ok2 || a == b || isUnder(a, b) || isUnder(b, a) {
				continue
			}
			n.structural(Op{Kind: OpExchange, Path: a, To: b}, nil)
			return
		case k >= 88 && n.calm:
			continue
		case k < 92:
			if a, ok := n.pick(rng, notRoot); ok {
				n.failedOp(Op{Kind: OpRename, Path: a, To: "z/z"})
				return
			}
		case k < 96:
			// Crash with a structural operation in flight.
			a, ok := n.pick(rng, notRoot)
			d, _ := n.pick(rng, isDirEnt)
			b := joinPath(d, randomName(rng))
			if !ok || a == b || isUnder(b, a) || n.fs[b] != nil {
				continue
			}
			if rng.IntN(2) == 0 {
				n.inflightCrash(rng, Op{Kind: OpRename, Path: a, To: b}, nil)
			} else {
				n.inflightCrash(rng, Op{Kind: OpCreate, Path: b}, &fent{mode: 0o600})
			}
			return
		default:
			n.crash(rng, rng.IntN(2) == 0)
			return
		}
	}
}

// ---- applying a plan on the target ----

// mkdirAll creates missing directories; replace allows replacing a file in
// the way (phase 3 may), otherwise that is a plan bug.
func (n *simNode) mkdirAll(p string, replace bool) {
	if p == "" {
		return
	}
	n.mkdirAll(parentOf(p), replace)
	f := n.fs[p]
	if f != nil && !f.dir {
		if !replace {
			n.t.Fatalf("%s: %q must be a directory, is a file", n.name, p)
		}
		n.removeAll(p)
		f = nil
	}
	if f == nil {
		n.mkdir(p, 0o700)
	}
}

func (n *simNode) removeAll(p string) {
	if n.fs[p] != nil {
		n.structural(Op{Kind: OpDelete, Path: p}, nil)
	}
}

func (n *simNode) rename(a, b string) {
	if n.fs[a] == nil {
		n.t.Fatalf("%s: plan moves %q, which the target does not hold", n.name, a)
	}
	if n.fs[b] != nil {
		n.t.Fatalf("%s: plan moves %q onto %q, which still exists", n.name, a, b)
	}
	n.structural(Op{Kind: OpRename, Path: a, To: b}, nil)
}

// syncWhole makes p identical to the source, recursively, except paths in
// except.
func (n *simNode) syncWhole(src *simNode, p string, except map[string]bool) {
	s, t := src.fs[p], n.fs[p]
	if s == nil {
		n.removeAll(p)
		return
	}
	if t != nil && t.dir != s.dir {
		n.removeAll(p)
		t = nil
	}
	if s.dir {
		if t == nil {
			n.mkdirAll(parentOf(p), false)
			n.mkdir(p, s.mode)
		}
		if n.fs[p].mode != s.mode {
			n.setMode(p, s.mode)
		}
		names := map[string]bool{}
		for _, k := range src.kids(p) {
			names[k] = true
		}
		for _, k := range n.kids(p) {
			names[k] = true
		}
		for _, k := range slices.Sorted(maps.Keys(names)) {
			if !except[k] {
				n.syncWhole(src, k, except)
			}
		}
		return
	}
	if t == nil {
		n.mkdirAll(parentOf(p), false)
		n.createFile(p, s.mode)
	}
	n.truncate(p, 0)
	if len(s.data) > 0 {
		n.write(p, 0, s.data)
	}
	if n.fs[p].mode != s.mode {
		n.setMode(p, s.mode)
	}
}

func (n *simNode) update(src *simNode, it Item) {
	s, t := src.fs[it.Path], n.fs[it.Path]
	if t == nil || s == nil || t.dir != s.dir {
		n.t.Fatalf("%s: update of %q: target %v, source %v", n.name, it.Path, t != nil, s != nil)
	}
	for _, r := range it.Ranges {
		n.write(it.Path, r.Off, s.data[r.Off:r.Off+r.Len])
	}
	if !s.dir && int64(len(n.fs[it.Path].data)) != it.Size {
		n.truncate(it.Path, it.Size)
	}
	if it.Meta {
		n.setMode(it.Path, s.mode)
	}
}

// applyPlan runs the plan on n (the target) until done or interrupted by
// the budget.
func (n *simNode) applyPlan(src *simNode, pl *Plan, budget int) (done bool) {
	n.budget = budget
	defer func() {
		n.budget = -1
		if r := recover(); r != nil {
			if r != errInterrupted {
				panic(r)
			}
			done = false
		}
	}()
	for _, mv := range pl.Stage {
		n.mkdirAll(pl.StagingDir, false)
		n.rename(mv.From, mv.To)
	}
	for _, d := range pl.Delete {
		n.removeAll(d)
	}
	for _, mv := range pl.Unstage {
		n.mkdirAll(parentOf(mv.To), true)
		n.rename(mv.From, mv.To)
	}
	for _, it := range pl.Items {
		if it.Kind == ItemWhole {
			except := map[string]bool{}
			for _, e := range it.Except {
				except[e] = true
			}
			n.syncWhole(src, it.Path, except)
		} else {
			n.update(src, it)
		}
	}
	if sd := n.fs[pl.StagingDir]; sd != nil {
		// The source does not change between attempts here: every staged
		// object is needed and unstaged, nothing may be left.
		if k := n.kids(pl.StagingDir); len(k) > 0 {
			n.t.Fatalf("%s: staging left with %v", n.name, k)
		}
		n.removeAll(pl.StagingDir)
	}
	return true
}

func (n *simNode) stat(p string) (int64, bool) {
	f := n.fs[p]
	if f == nil {
		return 0, false
	}
	return int64(len(f.data)), true
}

func (n *simNode) dump() string {
	var b strings.Builder
	for _, p := range slices.SortedFunc(maps.Keys(n.fs), ComparePaths) {
		f := n.fs[p]
		if f.dir {
			fmt.Fprintf(&b, "  %q/ mode %o\n", p, f.mode)
		} else {
			fmt.Fprintf(&b, "  %q %d bytes mode %o\n", p, len(f.data), f.mode)
		}
	}
	return b.String()
}

func sameTrees(a, b *simNode) error {
	for _, p := range slices.SortedFunc(maps.Keys(a.fs), ComparePaths) {
		x, y := a.fs[p], b.fs[p]
		switch {
		case y == nil:
			return fmt.Errorf("%q missing on %s", p, b.name)
		case x.dir != y.dir:
			return fmt.Errorf("%q: dir %v on %s, %v on %s", p, x.dir, a.name, y.dir, b.name)
		case !bytes.Equal(x.data, y.data):
			return fmt.Errorf("%q: content differs (%d and %d bytes)", p, len(x.data), len(y.data))
		case x.mode != y.mode:
			return fmt.Errorf("%q: mode %o on %s, %o on %s", p, x.mode, a.name, y.mode, b.name)
		}
	}
	for p := range b.fs {
		if a.fs[p] == nil {
			return fmt.Errorf("%q exists only on %s", p, b.name)
		}
	}
	return nil
}
