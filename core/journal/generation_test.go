package journal

import (
	"fmt"
	"testing"
	"time"
)

// pairModel is two nodes whose data is modelled as the set of writes they
// hold (a bit mask), next to the generations the real rules give them. The
// write sets are the ground truth Compare must reproduce.
type pairModel struct {
	gen    [2]Generation
	shared [2]bool
	writes [2]uint64
	nextW  int
	nextID uint64
}

// serveAlone is a node serving without its peer and writing once: it forks
// if its generation is shared or unknown, as the mirror machine does when it goes
// ALONE.
func (m *pairModel) serveAlone(n int) {
	if m.shared[n] || m.gen[n].IsZero() {
		m.nextID++
		m.gen[n] = m.gen[n].Fork(m.nextID)
		m.shared[n] = false
	}
	m.writes[n] |= 1 << m.nextW
	m.nextW++
}

// resync makes dst adopt src's data and generation.
func (m *pairModel) resync(src, dst int) {
	m.gen[dst] = m.gen[src].Clone()
	m.writes[dst] = m.writes[src]
	m.shared[src], m.shared[dst] = true, true
}

// wipe is a replaced disk: no data, no generation.
func (m *pairModel) wipe(n int) {
	m.gen[n] = Generation{}
	m.writes[n] = 0
	m.shared[n] = false
}

func (m *pairModel) clone() *pairModel {
	c := *m
	c.gen = [2]Generation{m.gen[0].Clone(), m.gen[1].Clone()}
	return &c
}

// truth is the relation of the write sets.
func (m *pairModel) truth() Relation {
	a, b := m.writes[0], m.writes[1]
	switch {
	case a == 0 || b == 0:
		return Unrelated
	case a == b:
		return Same
	case a&b == b:
		return ANewer
	case a&b == a:
		return BNewer
	case a&b != 0:
		return SplitBrain
	}
	return Unrelated
}

var mirrorRelation = map[Relation]Relation{Same: Same, ANewer: BNewer, BNewer: ANewer, SplitBrain: SplitBrain, Unrelated: Unrelated}

// TestCompareExhaustive walks every sequence of up to 8 operations (serve
// alone and write on either node, resync either way, wipe either disk) from
// a pair in sync, and checks after each step that Compare agrees with the
// write sets in both directions.
func TestCompareExhaustive(t *testing.T) {
	start := &pairModel{nextID: 1, nextW: 1}
	start.gen = [2]Generation{{Current: 1}, {Current: 1}}
	start.shared = [2]bool{true, true}
	start.writes = [2]uint64{1, 1}

	ops := []struct {
		name string
		do   func(*pairModel)
	}{
		{"A-alone", func(m *pairModel) { m.serveAlone(0) }},
		{"B-alone", func(m *pairModel) { m.serveAlone(1) }},
		{"A->B", func(m *pairModel) { m.resync(0, 1) }},
		{"B->A", func(m *pairModel) { m.resync(1, 0) }},
		{"wipe-A", func(m *pairModel) { m.wipe(0) }},
		{"wipe-B", func(m *pairModel) { m.wipe(1) }},
	}
	seen := map[Relation]int{}
	var walk func(m *pairModel, path []string, depth int)
	walk = func(m *pairModel, path []string, depth int) {
		want := m.truth()
		got := Compare(m.gen[0], m.gen[1])
		seen[got]++
		if got != want {
			t.Fatalf("after %v: Compare(%v, %v) = %v, want %v", path, m.gen[0], m.gen[1], got, want)
		}
		if back := Compare(m.gen[1], m.gen[0]); back != mirrorRelation[want] {
			t.Fatalf("after %v: Compare(b, a) = %v, want %v", path, back, mirrorRelation[want])
		}
		if want == SplitBrain && CommonAncestor(m.gen[0], m.gen[1]) == 0 {
			t.Fatalf("after %v: split brain without a common ancestor", path)
		}
		if depth == 0 {
			return
		}
		for _, op := range ops {
			c := m.clone()
			op.do(c)
			walk(c, append(path, op.name), depth-1)
		}
	}
	walk(start, nil, 8)
	for r := Same; r <= Unrelated; r++ {
		if seen[r] == 0 {
			t.Errorf("relation %v never reached: the walk does not cover it", r)
		}
	}
	t.Logf("states checked per relation: %v", seen)
}

func TestCompareCases(t *testing.T) {
	g1 := Generation{Current: 1}
	g2 := g1.Fork(2)
	g3 := g1.Fork(3)
	g4 := g2.Fork(4)
	cases := []struct {
		a, b Generation
		want Relation
	}{
		{Generation{}, Generation{}, Unrelated}, // first start: nothing proves either side
		{g1, Generation{}, Unrelated},           // replaced disk
		{g1, g1, Same},
		{g2, g1, ANewer},
		{g1, g2, BNewer},
		{g4, g1, ANewer}, // several forks ahead
		{g2, g3, SplitBrain},
		{g4, g3, SplitBrain},
		{Generation{Current: 7}, g1, Unrelated},
	}
	for _, c := range cases {
		if got := Compare(c.a, c.b); got != c.want {
			t.Errorf("Compare(%v %v, %v %v) = %v, want %v", c.a.Current, c.a.Ancestors, c.b.Current, c.b.Ancestors, got, c.want)
		}
	}
	if got := CommonAncestor(g4, g3); got != 1 {
		t.Errorf("CommonAncestor(g4, g3) = %d, want 1", got)
	}
}

// TestForkBound checks that history is bounded and that losing the link to
// an old generation degrades to Unrelated (full resync), never to a wrong
// "newer".
func TestForkBound(t *testing.T) {
	old := Generation{Current: 1}
	g := old
	for i := range MaxAncestors {
		g = g.Fork(uint64(100 + i))
		if len(g.Ancestors) > MaxAncestors {
			t.Fatalf("fork %d: %d ancestors, bound is %d", i, len(g.Ancestors), MaxAncestors)
		}
	}
	if got := Compare(g, old); got != ANewer {
		t.Fatalf("after %d forks: Compare = %v, want a-newer", MaxAncestors, got)
	}
	g = g.Fork(999)
	if len(g.Ancestors) != MaxAncestors {
		t.Fatalf("ancestors = %d, want %d", len(g.Ancestors), MaxAncestors)
	}
	if got := Compare(g, old); got != Unrelated {
		t.Fatalf("past the bound: Compare = %v, want unrelated", got)
	}
}

func TestForkDoesNotAlias(t *testing.T) {
	g := Generation{Current: 1}.Fork(2)
	a := g.Fork(3)
	b := g.Fork(4)
	a.Ancestors[0] = 42
	if b.Ancestors[0] != 2 || g.Ancestors[0] != 1 {
		t.Fatalf("forks share memory: g=%v b=%v", g.Ancestors, b.Ancestors)
	}
}

func TestNewID(t *testing.T) {
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ids := map[uint64]string{}
	for _, node := range []string{"node1", "node2"} {
		for i := range 1000 {
			for _, parent := range []uint64{0, 7} {
				id := NewID(node, at.Add(time.Duration(i)*time.Millisecond), parent)
				key := fmt.Sprint(node, i, parent)
				if id == 0 {
					t.Fatalf("NewID(%s) = 0, which means no data", key)
				}
				if prev, dup := ids[id]; dup {
					t.Fatalf("NewID collision: %s and %s", prev, key)
				}
				ids[id] = key
			}
		}
	}
	if NewID("node1", at, 0) != NewID("node1", at, 0) {
		t.Fatal("NewID is not deterministic")
	}
}
