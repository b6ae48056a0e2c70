package journal

import (
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

func mustMap(t *testing.T, zoneSize int64) *ZoneMap {
	t.Helper()
	m, err := NewZoneMap(zoneSize)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestNewZoneMapSizes(t *testing.T) {
	for _, bad := range []int64{0, -4096, 1000, 256, 2 << 30} {
		if _, err := NewZoneMap(bad); err == nil {
			t.Errorf("zone size %d accepted", bad)
		}
	}
	for _, good := range []int64{512, DefaultZoneSize, 8 << 20, 1 << 30} {
		if m, err := NewZoneMap(good); err != nil || m.ZoneSize() != good {
			t.Errorf("zone size %d: %v", good, err)
		}
	}
}

func TestMarkArguments(t *testing.T) {
	m := mustMap(t, DefaultZoneSize)
	for _, c := range []struct {
		path   string
		off, n int64
	}{{"", 0, 1}, {"a//b", 0, 1}, {"a/.", 0, 1}, {"a", -1, 1}, {"a", 0, -1}, {"a", maxOffset, 2}} {
		if _, err := m.MarkWrite(c.path, c.off, c.n); err == nil {
			t.Errorf("MarkWrite(%q, %d, %d) accepted", c.path, c.off, c.n)
		}
	}
	if r, err := m.MarkWrite("a", 5, 0); r != nil || err != nil {
		t.Errorf("empty write: %v %v", r, err)
	}
	if _, err := m.MarkTruncate("a", -1); err == nil {
		t.Error("negative truncate accepted")
	}
	if _, err := m.Begin(Op{Kind: OpRename, Path: "a", To: "a/b"}); err == nil {
		t.Error("rename into itself accepted")
	}
	if _, err := m.Finish(77, true); err == nil {
		t.Error("finish of an unknown operation accepted")
	}
}

// TestMarkOnlyWhatIsNew: a zone or fact already recorded needs no record.
func TestMarkOnlyWhatIsNew(t *testing.T) {
	m := mustMap(t, 4096)
	if r, _ := m.MarkWrite("f", 0, 10000); r == nil {
		t.Fatal("first write not recorded")
	}
	if r, _ := m.MarkWrite("f", 4096, 100); r != nil {
		t.Fatalf("write inside dirty zones recorded again: %#v", r)
	}
	if r, _ := m.MarkWrite("f", 3*4096, 1); r == nil {
		t.Fatal("write to a clean zone not recorded")
	}
	if r, _ := m.MarkTruncate("f", 100000); r == nil {
		t.Fatal("truncate not recorded")
	}
	if r, _ := m.MarkTruncate("f", 200000); r != nil {
		t.Fatal("truncate inside the dirty tail recorded again")
	}
	if r, _ := m.MarkWrite("f", 1<<40, 5); r != nil {
		t.Fatal("write inside the dirty tail recorded again")
	}
	if r, _ := m.MarkMeta("f"); r == nil {
		t.Fatal("chmod not recorded")
	}
	if r, _ := m.MarkMeta("f"); r != nil {
		t.Fatal("second chmod recorded")
	}
	in, _ := m.Begin(Op{Kind: OpCreate, Path: "n"})
	m.Finish(in.ID, true)
	for _, r := range []func() (Record, error){
		func() (Record, error) { return m.MarkWrite("n", 0, 1) },
		func() (Record, error) { return m.MarkTruncate("n", 0) },
		func() (Record, error) { return m.MarkMeta("n") },
	} {
		if rec, err := r(); rec != nil || err != nil {
			t.Fatalf("change to a new file recorded: %#v %v", rec, err)
		}
	}
}

func TestClear(t *testing.T) {
	m := mustMap(t, 4096)
	m.MarkWrite("f", 0, 10*4096)
	m.MarkTruncate("f", 20*4096)
	var log []Record
	for _, r := range []ZoneRange{{2, 4}, {8, 12}, {30, NoEnd}} {
		rec, err := m.Clear("f", r)
		if err != nil || rec == nil {
			t.Fatalf("clear %v: %v %v", r, rec, err)
		}
		log = append(log, rec)
	}
	want := []ZoneRange{{0, 2}, {4, 8}, {20, 30}}
	if got := m.describe("f").zones; !slices.Equal(got, want) {
		t.Fatalf("after clears: %v, want %v", got, want)
	}
	if r, _ := m.Clear("f", ZoneRange{0, NoEnd}); r == nil {
		t.Fatal("clearing everything not recorded")
	}
	if st := m.Stats(); st.Paths != 0 || st.Nodes != 1 {
		t.Fatalf("a clean file stays in the map: %+v", st)
	}
	if r, _ := m.Clear("f", ZoneRange{0, 1}); r != nil {
		t.Fatal("clearing a clean file recorded")
	}
	// Zones of another size: dirty rounds outward, clean inward.
	m2 := mustMap(t, 4096)
	if err := m2.Apply(Dirty{Path: "g", Shift: 9, Zones: []ZoneRange{{7, 9}}}); err != nil { // bytes 3584-4607
		t.Fatal(err)
	}
	if got := m2.describe("g").zones; !slices.Equal(got, []ZoneRange{{0, 2}}) {
		t.Fatalf("512-byte zones 7-8 in 4 KiB zones: %v", got)
	}
	if err := m2.Apply(Clean{Path: "g", Shift: 9, Zones: []ZoneRange{{4, 12}}}); err != nil { // bytes 2048-6143
		t.Fatal(err)
	}
	if got := m2.describe("g").zones; !slices.Equal(got, []ZoneRange{{0, 2}}) {
		t.Fatalf("a clean range covering no whole zone cleaned: %v", got)
	}
	if err := m2.Apply(Clean{Path: "g", Shift: 16, Zones: []ZoneRange{{0, 1}}}); err != nil {
		t.Fatal(err)
	}
	if got := m2.describe("g").zones; len(got) != 0 {
		t.Fatalf("a 64 KiB clean zone left %v", got)
	}
}

func TestCheckpointAndCovers(t *testing.T) {
	m := mustMap(t, DefaultZoneSize)
	if m.Covers(0) || m.Covers(5) {
		t.Fatal("a map without a checkpoint covers nothing")
	}
	m.Checkpoint(5)
	m.SetGeneration(6)
	m.MarkWrite("a", 0, 1)
	if !m.Covers(5) || m.Covers(6) || m.Base() != 5 || m.Last() != 6 {
		t.Fatalf("base %d last %d", m.Base(), m.Last())
	}
	in, _ := m.Begin(Op{Kind: OpDelete, Path: "a"})
	if _, err := m.Checkpoint(9); !errors.Is(err, ErrPending) {
		t.Fatalf("checkpoint with an operation in flight: %v", err)
	}
	m.Finish(in.ID, false)
	if _, err := m.Checkpoint(9); err != nil {
		t.Fatal(err)
	}
	if len(m.Entries()) != 0 || m.Base() != 9 {
		t.Fatalf("after checkpoint: %v base %d", m.Entries(), m.Base())
	}
}

func TestStats(t *testing.T) {
	m := mustMap(t, 4096)
	m.MarkWrite("d/f", 0, 3*4096)
	m.MarkTruncate("d/g", 4096)
	m.MarkMeta("h")
	for _, op := range []Op{{Kind: OpCreate, Path: "n"}, {Kind: OpDelete, Path: "x"}, {Kind: OpRename, Path: "a", To: "b"}} {
		in, _ := m.Begin(op)
		m.Finish(in.ID, true)
	}
	m.Begin(Op{Kind: OpDelete, Path: "y"})
	got := m.Stats()
	// d/f, d/g, h, n, x (gone), a (gone), b (moved), and the root (its
	// entries changed: metadata); d only holds its files (a node, no
	// change).
	want := Stats{Paths: 8, New: 1, Gone: 2, Moved: 1, Meta: 2, Tails: 1, Zones: 3, Bytes: 3 * 4096, Pending: 1, Nodes: 9}
	if got != want {
		t.Fatalf("stats\n got %+v\nwant %+v\nentries %+v", got, want, m.Entries())
	}
}

// TestPlanLeavesMapsAlone: planning with operations in flight works on
// copies.
func TestPlanLeavesMapsAlone(t *testing.T) {
	src, tgt := mustMap(t, 4096), mustMap(t, 4096)
	src.MarkWrite("a", 0, 1)
	in, _ := src.Begin(Op{Kind: OpRename, Path: "a", To: "b"})
	snap := Snapshot(src)
	pl, err := NewPlan(src, tgt, PlanOptions{Stat: func(string) (int64, bool) { return 100, true }})
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(src.Pending(), map[uint64]Op{in.ID: {Kind: OpRename, Path: "a", To: "b"}}) {
		t.Fatal("the plan settled the source's pending operation")
	}
	again, _ := Replay(snap, 4096)
	if !sameMap(again, src) {
		t.Fatal("the plan changed the source map")
	}
	// In flight: a and b may be anything, both are sent whole.
	var wholes []string
	for _, it := range pl.Items {
		if it.Kind == ItemWhole {
			wholes = append(wholes, it.Path)
		}
	}
	if !slices.Equal(wholes, []string{"a", "b"}) {
		t.Fatalf("whole items %v, want a and b\n%s", wholes, dumpPlan(pl))
	}
	other := mustMap(t, 4096)
	other.Checkpoint(3)
	if _, err := NewPlan(src, other, PlanOptions{Stat: func(string) (int64, bool) { return 0, false }}); !errors.Is(err, ErrBaseMismatch) {
		t.Fatalf("different bases: %v", err)
	}
	if _, err := NewPlan(src, mustMap(t, 8192), PlanOptions{Stat: func(string) (int64, bool) { return 0, false }}); err == nil {
		t.Fatal("different zone sizes accepted")
	}
}

func TestFullPlan(t *testing.T) {
	src := []FileInfo{
		{Path: "d", Kind: KindDir},
		{Path: "d/f", Kind: KindFile, Size: 10000},
		{Path: "g", Kind: KindFile, Size: 5000},
		{Path: "l", Kind: KindSymlink},
		{Path: "x", Kind: KindFile, Size: 300},
		{Path: "new", Kind: KindFile, Size: 7},
	}
	tgt := []FileInfo{
		{Path: "x", Kind: KindDir}, // another kind: replaced
		{Path: "x/y", Kind: KindFile, Size: 1},
		{Path: "d", Kind: KindDir},
		{Path: "d/f", Kind: KindFile, Size: 4096},
		{Path: "g", Kind: KindFile, Size: 9000},
		{Path: "old", Kind: KindDir},
		{Path: "old/z", Kind: KindFile, Size: 1},
		{Path: "l", Kind: KindSymlink},
	}
	p, err := NewFullPlan(src, tgt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Delete, []string{"old", "x"}) {
		t.Fatalf("deletes %v", p.Delete)
	}
	byPath := map[string]FullItem{}
	for _, it := range p.Items {
		byPath[it.Path] = it
	}
	f, g := byPath["d/f"], byPath["g"]
	if !f.Compare || p.Blocks(f) != 3 || p.CompareBlocks(f) != 1 || p.Block(f, 2) != (ByteRange{8192, 10000 - 8192}) {
		t.Fatalf("d/f: %+v blocks %d compare %d", f, p.Blocks(f), p.CompareBlocks(f))
	}
	if !g.Compare || p.CompareBlocks(g) != 2 || byPath["x"].Compare || byPath["new"].Compare || byPath["l"].Compare {
		t.Fatalf("items %+v", p.Items)
	}
	if p.HashBytes != 4096+5000 || p.SendBytes != (10000-4096)+300+7 {
		t.Fatalf("hash %d send %d", p.HashBytes, p.SendBytes)
	}
	if _, err := NewFullPlan([]FileInfo{{Path: "a", Kind: KindFile}, {Path: "a", Kind: KindFile}}, nil, 4096); err == nil {
		t.Fatal("duplicate path accepted")
	}
	if _, err := NewFullPlan([]FileInfo{{Path: "../a", Kind: KindFile}}, nil, 4096); err == nil {
		t.Fatal("unclean path accepted")
	}
}

// TestFullPlanSimulation: a full resync planned from two unrelated trees
// and applied block by block leaves identical trees, sending only blocks
// that differ or that the target lacks.
func TestFullPlanSimulation(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 21))
		base := randomTree(rng)
		src := newSimNode(t, "source", base)
		tgt := newSimNode(t, "target", randomTree(rng))
		if seed%2 == 0 {
			tgt = newSimNode(t, "target", base) // related: most blocks equal
		}
		for range rng.IntN(20) {
			src.randomOp(rng)
		}
		list := func(n *simNode) []FileInfo {
			var out []FileInfo
			for p, f := range n.fs {
				if p == "" {
					continue
				}
				fi := FileInfo{Path: p, Kind: KindFile, Size: int64(len(f.data))}
				if f.dir {
					fi.Kind = KindDir
				}
				out = append(out, fi)
			}
			return out
		}
		p, err := NewFullPlan(list(src), list(tgt), 1024)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range p.Delete {
			for _, q := range tgt.subtree(d) {
				delete(tgt.fs, q)
			}
		}
		var sent, differing int64
		for _, it := range p.Items {
			s := src.fs[it.Path]
			if it.Kind == KindDir {
				if tgt.fs[it.Path] == nil {
					tgt.fs[it.Path] = &fent{dir: true}
				}
				tgt.fs[it.Path].mode = s.mode
				continue
			}
			if !it.Compare {
				if tgt.fs[it.Path] != nil {
					t.Fatalf("seed %d: %q sent whole over an existing entry", seed, it.Path)
				}
				tgt.fs[it.Path] = s.clone()
				sent += int64(len(s.data))
				continue
			}
			tf := tgt.fs[it.Path]
			for i := range p.Blocks(it) {
				b := p.Block(it, i)
				sb := s.data[b.Off : b.Off+b.Len]
				if i < p.CompareBlocks(it) {
					end := min(b.Off+b.Len, int64(len(tf.data)))
					if string(tf.data[b.Off:end]) == string(sb) {
						continue
					}
				}
				differing += b.Len
				if need := b.Off + b.Len; need > int64(len(tf.data)) {
					tf.data = append(tf.data, make([]byte, need-int64(len(tf.data)))...)
				}
				copy(tf.data[b.Off:], sb)
				sent += b.Len
			}
			tf.data = tf.data[:len(s.data)]
			tf.mode = s.mode
		}
		tgt.fs[""].mode = src.fs[""].mode
		if err := sameTrees(src, tgt); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if sent < p.SendBytes {
			t.Fatalf("seed %d: sent %d bytes, the plan said at least %d", seed, sent, p.SendBytes)
		}
	}
}
