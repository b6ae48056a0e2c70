package farm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/halo-ha/halo/core"
)

// checkFair fails unless every member holds floor or ceil of its exact
// share, non-members hold nothing, and every bucket is served.
func checkFair(t *testing.T, table core.BucketTable, members map[string]int) {
	t.Helper()
	total := 0
	for _, p := range members {
		if p > 0 {
			total += p
		}
	}
	counts := BucketCounts(table)
	for name, c := range counts {
		if members[name] <= 0 {
			t.Fatalf("%s holds %d buckets but is not a member with power (members %v)", name, c, members)
		}
	}
	if total == 0 {
		if len(counts) != 0 {
			t.Fatalf("no member, yet buckets are served: %v", counts)
		}
		return
	}
	served := 0
	for name, p := range members {
		if p <= 0 {
			continue
		}
		c := counts[name]
		served += c
		// |c - N*p/total| < 1, in integers.
		if diff := c*total - core.NumBuckets*p; diff >= total || -diff >= total {
			t.Fatalf("%s (power %d of %d) holds %d buckets, share is %.2f (members %v)",
				name, p, total, c, float64(core.NumBuckets*p)/float64(total), members)
		}
	}
	if served != core.NumBuckets {
		t.Fatalf("%d buckets served, want %d", served, core.NumBuckets)
	}
}

// minimalMoves computes, independently of Allocate, the fewest buckets any
// fair allocation must move from prev: every served bucket of prev stays
// unless its node left or holds more than the count it is given. It tries
// every way to hand out the leftover buckets among the members whose share
// is fractional.
func minimalMoves(prev core.BucketTable, members map[string]int) int {
	var names []string
	total := 0
	for n, p := range members {
		if p > 0 {
			names = append(names, n)
			total += p
		}
	}
	served := 0
	prevCount := map[string]int{}
	for _, o := range prev {
		if o != "" {
			served++
			prevCount[o]++
		}
	}
	if total == 0 {
		return served
	}
	floor := map[string]int{}
	var frac []string
	left := core.NumBuckets
	for _, n := range names {
		floor[n] = core.NumBuckets * members[n] / total
		left -= floor[n]
		if core.NumBuckets*members[n]%total != 0 {
			frac = append(frac, n)
		}
	}
	bestKept := -1
	for mask := 0; mask < 1<<len(frac); mask++ {
		ones := 0
		for i := range frac {
			if mask&(1<<i) != 0 {
				ones++
			}
		}
		if ones != left {
			continue
		}
		kept := 0
		for _, n := range names {
			c := floor[n]
			if i := slices.Index(frac, n); i >= 0 && mask&(1<<i) != 0 {
				c++
			}
			kept += min(c, prevCount[n])
		}
		bestKept = max(bestKept, kept)
	}
	return served - bestKept
}

func randomMembers(r *rand.Rand, pool []string, maxPower int) map[string]int {
	m := map[string]int{}
	for _, n := range pool {
		if r.IntN(3) > 0 {
			m[n] = 1 + r.IntN(maxPower)
		}
	}
	return m
}

func TestAllocateFairFromScratch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pool := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"}
	for range 2000 {
		members := randomMembers(r, pool, 7)
		checkFair(t, Allocate(core.BucketTable{}, members), members)
	}
}

// TestAllocateMinimalMovement walks random join/leave/power-change
// sequences and compares every step with the independent minimum.
func TestAllocateMinimalMovement(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	pool := []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10"}
	for walk := range 300 {
		members := randomMembers(r, pool, 4)
		table := Allocate(core.BucketTable{}, members)
		for step := range 30 {
			next := map[string]int{}
			for k, v := range members {
				next[k] = v
			}
			n := pool[r.IntN(len(pool))]
			switch {
			case next[n] == 0:
				next[n] = 1 + r.IntN(4) // join
			case r.IntN(4) == 0:
				next[n] = 1 + r.IntN(4) // power change
			default:
				delete(next, n) // leave
			}
			got := Allocate(table, next)
			checkFair(t, got, next)
			if moved, want := Moved(table, got), minimalMoves(table, next); moved != want {
				t.Fatalf("walk %d step %d: %v -> %v moved %d buckets, minimum is %d", walk, step, members, next, moved, want)
			}
			table, members = got, next
		}
	}
}

// TestAllocateArbitraryPrev: whatever table is installed (even a corrupt
// or foreign one), the result is fair and moves the minimum.
func TestAllocateArbitraryPrev(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	pool := []string{"a", "b", "c", "d", "e", "f"}
	owners := append([]string{"", "zz"}, pool...)
	for range 2000 {
		var prev core.BucketTable
		for b := range prev {
			prev[b] = owners[r.IntN(len(owners))]
		}
		members := randomMembers(r, pool, 5)
		got := Allocate(prev, members)
		checkFair(t, got, members)
		if moved, want := Moved(prev, got), minimalMoves(prev, members); moved != want {
			t.Fatalf("moved %d, minimum %d (members %v)", moved, want, members)
		}
		if again := Allocate(got, members); again != got {
			t.Fatalf("not a fixed point: reallocating the same members moved %d buckets", Moved(got, again))
		}
	}
}

// TestAllocateDeterministic: the result depends on the content of the map,
// not on how it was built; Go randomizes map iteration, so repeated runs
// over maps filled in different orders exercise it.
func TestAllocateDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	pool := []string{"web1", "web2", "web3", "web4", "web5", "web6"}
	for range 200 {
		members := randomMembers(r, pool, 3)
		var prev core.BucketTable
		for b := range prev {
			if r.IntN(2) == 0 {
				prev[b] = pool[r.IntN(len(pool))]
			}
		}
		want := Allocate(prev, members)
		for range 10 {
			names := make([]string, 0, len(members))
			for n := range members {
				names = append(names, n)
			}
			r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
			copyOf := make(map[string]int, len(members))
			for _, n := range names {
				copyOf[n] = members[n]
			}
			if got := Allocate(prev, copyOf); got != want {
				t.Fatalf("same input, different tables (%d buckets differ)", Moved(want, got))
			}
		}
	}
}

// TestAllocateMovementReport logs the movement of typical farm events next
// to the minimum, and checks the joining node takes only its share.
func TestAllocateMovementReport(t *testing.T) {
	type ev struct {
		name    string
		members map[string]int
	}
	seq := []ev{
		{"start 3 equal", map[string]int{"n1": 1, "n2": 1, "n3": 1}},
		{"n4 joins", map[string]int{"n1": 1, "n2": 1, "n3": 1, "n4": 1}},
		{"n2 leaves", map[string]int{"n1": 1, "n3": 1, "n4": 1}},
		{"n2 returns", map[string]int{"n1": 1, "n2": 1, "n3": 1, "n4": 1}},
		{"n5 (power 4) joins", map[string]int{"n1": 1, "n2": 1, "n3": 1, "n4": 1, "n5": 4}},
		{"n5 leaves", map[string]int{"n1": 1, "n2": 1, "n3": 1, "n4": 1}},
		{"n1 power 3", map[string]int{"n1": 3, "n2": 1, "n3": 1, "n4": 1}},
		{"all but n3 leave", map[string]int{"n3": 1}},
	}
	var table core.BucketTable
	for _, e := range seq {
		next := Allocate(table, e.members)
		checkFair(t, next, e.members)
		moved, minimum := Moved(table, next), minimalMoves(table, e.members)
		if moved != minimum {
			t.Errorf("%s: moved %d, minimum %d", e.name, moved, minimum)
		}
		// A node that was not serving receives only its own quota, and the
		// buckets it receives are the only ones that changed node besides
		// those of leaving nodes.
		for b := range next {
			if table[b] != "" && next[b] != table[b] {
				if _, stays := e.members[table[b]]; stays && BucketCounts(table)[table[b]] <= BucketCounts(next)[table[b]] {
					t.Errorf("%s: bucket %d moved from %s, which did not shrink", e.name, b, table[b])
				}
			}
		}
		t.Logf("%-20s moved %3d (minimum %3d) counts %v", e.name, moved, minimum, fmt.Sprint(BucketCounts(next)))
		table = next
	}
}

func BenchmarkAllocate(b *testing.B) {
	members := map[string]int{"n1": 1, "n2": 2, "n3": 1, "n4": 3, "n5": 1}
	table := Allocate(core.BucketTable{}, members)
	delete(members, "n3")
	for b.Loop() {
		Allocate(table, members)
	}
}
