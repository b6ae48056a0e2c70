package journal

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// TestZoneMapModel performs random operations (writes, truncates, chmods,
// creates, deletes, renames over existing entries, exchanges, failed
// operations, crashes with operations in flight and torn log tails) and
// checks after each that the map, the map replayed from the log, and the
// map rebuilt from its Snapshot all say what the provenance model says.
func TestZoneMapModel(t *testing.T) {
	for seed := range uint64(150) {
		rng := rand.New(rand.NewPCG(seed, 1))
		n := newSimNode(t, fmt.Sprintf("seed %d", seed), randomTree(rng))
		for step := range 60 {
			n.randomOp(rng)
			n.checkModel(fmt.Sprintf("step %d", step))
			if step%4 != 3 {
				continue // replaying the whole log each step is quadratic
			}
			replayed, info, err := ReplayLog(n.log, simZone)
			if err != nil || info.Damage != nil || info.Resolve != nil {
				t.Fatalf("seed %d step %d: replay: %v %+v", seed, step, err, info)
			}
			if !sameMap(replayed, n.m) {
				t.Fatalf("seed %d step %d: replayed map differs:\n%v\nlive:\n%v", seed, step, replayed.Entries(), n.m.Entries())
			}
			snap, err := Replay(Snapshot(n.m), simZone)
			if err != nil {
				t.Fatalf("seed %d step %d: replay snapshot: %v", seed, step, err)
			}
			if !sameMap(snap, n.m) {
				t.Fatalf("seed %d step %d: snapshot map differs:\n%v\nlive:\n%v", seed, step, snap.Entries(), n.m.Entries())
			}
		}
	}
}

// TestResyncSimulation: both nodes start from the same tree; the source
// changes it, the target sometimes too (a crashed primary, a split brain),
// both crash at times; then plans are applied to the target, interrupted
// and resumed (the target crashing too), until the trees are identical.
func TestResyncSimulation(t *testing.T) {
	moves, wholes, updates, resumes := 0, 0, 0, 0
	for seed := range uint64(1000) {
		rng := rand.New(rand.NewPCG(seed, 2))
		base := randomTree(rng)
		src := newSimNode(t, "source", base)
		tgt := newSimNode(t, "target", base)
		if rng.IntN(2) == 0 {
			// A shared history first: a primary and its secondary in sync
			// journal the same operations.
			opSeed := rng.Uint64()
			srcRng, tgtRng := rand.New(rand.NewPCG(opSeed, 6)), rand.New(rand.NewPCG(opSeed, 6))
			src.calm, tgt.calm = true, true
			for range rng.IntN(30) {
				src.randomOp(srcRng)
				tgt.randomOp(tgtRng)
			}
			src.calm, tgt.calm = false, false
		}
		for range rng.IntN(40) {
			src.randomOp(rng)
		}
		if rng.IntN(3) != 0 {
			for range rng.IntN(25) {
				tgt.randomOp(rng)
			}
		}
		for attempt := 0; ; attempt++ {
			pl, err := NewPlan(src.m, tgt.m, PlanOptions{Stat: src.stat})
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			if err := checkPlanShape(pl); err != nil {
				t.Fatalf("seed %d attempt %d: %v\n%s", seed, attempt, err, dumpPlan(pl))
			}
			// Deterministic: the same maps (copies, walked in another map
			// iteration order) give the same plan.
			if again, _ := NewPlan(src.m.Clone(), tgt.m.Clone(), PlanOptions{Stat: src.stat}); !reflect.DeepEqual(again, pl) {
				t.Fatalf("seed %d: two plans of the same maps differ:\n%s\n%s", seed, dumpPlan(pl), dumpPlan(again))
			}
			moves += len(pl.Unstage)
			for _, it := range pl.Items {
				if it.Kind == ItemWhole {
					wholes++
				} else {
					updates++
				}
			}
			budget := -1
			if attempt < 3 && rng.IntN(2) == 0 {
				budget = rng.IntN(12)
			}
			if tgt.applyPlan(src, pl, budget) {
				break
			}
			resumes++
			if rng.IntN(2) == 0 {
				tgt.crash(rng, rng.IntN(2) == 0)
			}
			tgt.checkModel("after an interrupted resync")
		}
		if err := sameTrees(src, tgt); err != nil {
			t.Fatalf("seed %d: after resync: %v\nsource:\n%s\ntarget:\n%s", seed, err, src.dump(), tgt.dump())
		}
	}
	t.Logf("moves %d, whole items %d, update items %d, resumed resyncs %d", moves, wholes, updates, resumes)
	if moves == 0 || wholes == 0 || updates == 0 || resumes == 0 {
		t.Fatal("the simulation does not exercise every kind of plan step")
	}
}

// checkPlanShape checks what makes a plan executable: every slot staged
// once and unstaged once, deletes minimal and outside each other, items
// sorted, independent (nothing under a Whole item but its exceptions), and
// ranges zone-aligned, merged and inside the file.
func checkPlanShape(pl *Plan) error {
	slots := map[string]int{}
	for _, mv := range pl.Stage {
		if !isUnder(mv.To, pl.StagingDir) {
			return fmt.Errorf("stage %v: not into the staging directory", mv)
		}
		slots[mv.To]++
	}
	for _, mv := range pl.Unstage {
		slots[mv.From]--
		if isUnder(mv.To, pl.StagingDir) || mv.To == pl.StagingDir {
			return fmt.Errorf("unstage %v: into the staging directory", mv)
		}
	}
	for s, n := range slots {
		if n != 0 {
			return fmt.Errorf("slot %q staged and unstaged unevenly", s)
		}
	}
	for i, d := range pl.Delete {
		for j, e := range pl.Delete {
			if i != j && (d == e || isUnder(d, e)) {
				return fmt.Errorf("delete %q is covered by delete %q", d, e)
			}
		}
	}
	for i, it := range pl.Items {
		if i > 0 && ComparePaths(pl.Items[i-1].Path, it.Path) >= 0 {
			return fmt.Errorf("items not sorted or duplicated at %q", it.Path)
		}
		for _, w := range pl.Items {
			if w.Kind != ItemWhole || !isUnder(it.Path, w.Path) {
				continue
			}
			excepted := false
			for _, e := range w.Except {
				excepted = excepted || e == it.Path || isUnder(it.Path, e)
			}
			if !excepted {
				return fmt.Errorf("item %q lies inside whole item %q", it.Path, w.Path)
			}
		}
		prevEnd := int64(-1)
		for _, r := range it.Ranges {
			end := r.Off + r.Len
			switch {
			case r.Len <= 0 || r.Off < 0 || end > it.Size:
				return fmt.Errorf("item %q: range %v outside [0, %d)", it.Path, r, it.Size)
			case r.Off%pl.ZoneSize != 0 || (end%pl.ZoneSize != 0 && end != it.Size):
				return fmt.Errorf("item %q: range %v not zone-aligned", it.Path, r)
			case r.Off <= prevEnd:
				return fmt.Errorf("item %q: ranges not merged and ascending", it.Path)
			}
			prevEnd = end
		}
	}
	return nil
}

func dumpPlan(pl *Plan) string {
	return fmt.Sprintf("stage %v\ndelete %v\nunstage %v\nitems %+v\ndirs %v", pl.Stage, pl.Delete, pl.Unstage, pl.Items, pl.Dirs)
}

// TestPlanRangesExact: for objects both nodes hold in place, an update
// sends exactly the union of both nodes' dirty zones, merged and clipped to
// the source's size — no more, no less.
func TestPlanRangesExact(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 3))
		src, _ := NewZoneMap(simZone)
		tgt, _ := NewZoneMap(simZone)
		files := []string{"a", "b", "d/c"}
		want := map[string]*zoneModel{}
		for _, f := range files {
			want[f] = &zoneModel{z: make([]bool, 64)}
		}
		for range rng.IntN(30) {
			m := src
			if rng.IntN(2) == 0 {
				m = tgt
			}
			f := files[rng.IntN(len(files))]
			if rng.IntN(6) == 0 {
				size := rng.Int64N(40 * simZone)
				if _, err := m.MarkTruncate(f, size); err != nil {
					t.Fatal(err)
				}
				want[f].set(uint64(size/simZone), NoEnd, true)
				continue
			}
			off, n := rng.Int64N(40*simZone), 1+rng.Int64N(4*simZone)
			if _, err := m.MarkWrite(f, off, n); err != nil {
				t.Fatal(err)
			}
			want[f].set(uint64(off/simZone), uint64((off+n-1)/simZone)+1, true)
		}
		sizes := map[string]int64{"": 0, "d": 0}
		for _, f := range files {
			sizes[f] = rng.Int64N(50 * simZone)
		}
		pl, err := NewPlan(src, tgt, PlanOptions{Stat: func(p string) (int64, bool) { s, ok := sizes[p]; return s, ok }})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]ByteRange{}
		var total int64
		for _, it := range pl.Items {
			if it.Kind != ItemUpdate || it.Meta {
				t.Fatalf("seed %d: unexpected item %+v", seed, it)
			}
			got[it.Path] = it.Ranges
			total += it.Bytes()
		}
		var wantTotal int64
		for _, f := range files {
			var exp []ByteRange
			for _, r := range want[f].ranges() {
				off := int64(r.Start) * simZone
				end := sizes[f]
				if r.End != NoEnd {
					end = min(end, int64(r.End)*simZone)
				}
				if off < end {
					exp = append(exp, ByteRange{off, end - off})
					wantTotal += end - off
				}
			}
			if !slices.Equal(got[f], exp) {
				t.Fatalf("seed %d: %q ranges %v, want %v", seed, f, got[f], exp)
			}
		}
		if total != wantTotal || pl.Bytes != wantTotal {
			t.Fatalf("seed %d: plan bytes %d (items %d), want %d", seed, pl.Bytes, total, wantTotal)
		}
		if len(pl.Stage)+len(pl.Delete)+len(pl.Unstage) != 0 {
			t.Fatalf("seed %d: structural steps without structural changes: %s", seed, dumpPlan(pl))
		}
	}
}

// TestPlanMinimal: when only the source changed, or both nodes performed
// the same operations (a primary and its secondary in sync, both
// journaling), the plan moves, deletes and sends whole nothing but what was
// created or renamed, and resyncs the trees.
func TestPlanMinimal(t *testing.T) {
	for seed := range uint64(300) {
		same := seed%2 == 1
		rng := rand.New(rand.NewPCG(seed, 4))
		base := randomTree(rng)
		src := newSimNode(t, "source", base)
		tgt := newSimNode(t, "target", base)
		src.calm, tgt.calm = true, true
		ops := 1 + rng.IntN(40)
		opSeed := rng.Uint64()
		srcRng := rand.New(rand.NewPCG(opSeed, 5))
		tgtRng := rand.New(rand.NewPCG(opSeed, 5))
		for range ops {
			src.randomOp(srcRng)
			if same {
				tgt.randomOp(tgtRng)
			}
		}
		if same {
			if err := sameTrees(src, tgt); err != nil {
				t.Fatalf("seed %d: identical operations gave different trees: %v", seed, err)
			}
		}
		pl, err := NewPlan(src.m, tgt.m, PlanOptions{Stat: src.stat})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range pl.Items {
			if it.Kind == ItemWhole && src.m.describe(it.Path).fromBase {
				t.Fatalf("seed %d: %q sent whole, but both sides hold its base object\n%s\n%s", seed, it.Path, src.history(), dumpPlan(pl))
			}
		}
		renamed := 0
		for _, e := range src.m.Entries() {
			if e.Moved {
				renamed++
			}
		}
		if same && len(pl.Stage)+len(pl.Delete)+len(pl.Unstage) != 0 {
			t.Fatalf("seed %d: both sides did the same; the plan still moves or deletes:\n%s", seed, dumpPlan(pl))
		}
		if !same && len(pl.Unstage) > renamed {
			t.Fatalf("seed %d: %d moves for %d renamed objects:\n%s", seed, len(pl.Unstage), renamed, dumpPlan(pl))
		}
		if !tgt.applyPlan(src, pl, -1) {
			t.Fatal("interrupted without a budget")
		}
		if err := sameTrees(src, tgt); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}
