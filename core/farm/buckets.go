package farm

import (
	"cmp"
	"slices"

	"github.com/halo-ha/halo/core"
)

// Allocate spreads the core.NumBuckets load-balancing buckets over members
// (node name -> power), starting from the table prev that is installed now.
//
// Properties, each covered by a test:
//   - fair: every member gets floor or ceil of its power share of the
//     buckets (within one bucket of NumBuckets*power/total);
//   - minimal movement: a bucket changes node only when its node left, or
//     when its node holds more than its new share; no allocation within the
//     fairness bound moves fewer buckets than this one;
//   - deterministic: the result depends only on the arguments, never on map
//     iteration order, so every node computes the same table.
//
// Members with a power <= 0 receive no bucket. With no member every bucket
// is "" (nobody serves).
//
// Why a table update rather than pure weighted rendezvous hashing: with 256
// buckets, rendezvous hashing is only fair on average (a node can be several
// buckets off its share), while a quota per node keeps every node within one
// bucket of its share and still moves only what must move. The price is that
// the result depends on prev, so nodes must agree on prev: the VIP owner's
// installed table is announced to every member, which adopts it.
func Allocate(prev core.BucketTable, members map[string]int) core.BucketTable {
	var next core.BucketTable
	names := make([]string, 0, len(members))
	total := 0
	for name, power := range members {
		if power > 0 {
			names = append(names, name)
			total += power
		}
	}
	if len(names) == 0 {
		return next
	}
	slices.Sort(names)
	index := make(map[string]int, len(names))
	for i, name := range names {
		index[name] = i
	}

	// owner[b] is the member index of prev[b], -1 when not a member.
	var owner [core.NumBuckets]int
	prevCount := make([]int, len(names))
	for b, name := range prev {
		i, ok := index[name]
		if !ok {
			i = -1
		} else {
			prevCount[i]++
		}
		owner[b] = i
	}
	quota := quotas(names, members, total, prevCount)

	// Keep every bucket whose node is still a member, up to the node's
	// quota. A node over its quota gives up its highest-numbered buckets.
	kept := make([]int, len(names))
	free := make([]int, 0, core.NumBuckets)
	for b, i := range owner {
		if i >= 0 && kept[i] < quota[i] {
			next[b] = names[i]
			kept[i]++
			continue
		}
		free = append(free, b)
	}
	if len(free) == 0 {
		return next
	}

	// Give each freed bucket to the member with the highest rendezvous score
	// among those still under quota: a node's new buckets are scattered
	// rather than one contiguous range, and the choice needs no state.
	nameHash := make([]uint64, len(names))
	for i, name := range names {
		nameHash[i] = hashName(name)
	}
	for _, b := range free {
		best, bestScore := -1, uint64(0)
		for i := range names {
			if kept[i] >= quota[i] {
				continue
			}
			// Equal scores are vanishingly rare; the lower name wins them
			// because names are sorted and only a higher score replaces.
			if s := score(b, nameHash[i]); best < 0 || s > bestScore {
				best, bestScore = i, s
			}
		}
		next[b] = names[best]
		kept[best]++
	}
	return next
}

// quotas returns how many buckets each member gets: the floor of its exact
// share, plus one for as many members as there are buckets left over. The
// extra buckets go first to members that already hold more than their floor
// (giving one to a member that would have to take it from someone else
// moves a bucket for nothing), then to the largest fractional shares, then
// by a hash of the name so that no name is favoured everywhere.
func quotas(names []string, power map[string]int, total int, prevCount []int) []int {
	quota := make([]int, len(names))
	type candidate struct {
		i         int
		name      string
		holdsMore bool // already holds more than its floor
		frac      int  // fractional share, in units of 1/total bucket
	}
	var cands []candidate
	left := core.NumBuckets
	for i, name := range names {
		share := core.NumBuckets * power[name]
		quota[i] = share / total
		left -= share / total
		if frac := share % total; frac != 0 {
			cands = append(cands, candidate{i, name, prevCount[i] > share/total, frac})
		}
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if a.holdsMore != b.holdsMore {
			if a.holdsMore {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(b.frac, a.frac); c != 0 {
			return c
		}
		if c := cmp.Compare(hashName(b.name), hashName(a.name)); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
	// The fractional shares sum to exactly left, and each is below one, so
	// there are always more than left candidates when left > 0.
	for _, c := range cands[:left] {
		quota[c.i]++
	}
	return quota
}

// score is the rendezvous weight of bucket b for the node whose name hashes
// to nameHash.
func score(b int, nameHash uint64) uint64 {
	return mix(nameHash ^ (uint64(b)+1)*0x9e3779b97f4a7c15)
}

// hashName is FNV-1a: stable across platforms and Go releases, unlike
// hash/maphash, which is seeded per process.
func hashName(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is the splitmix64 finalizer, so that names differing in one character
// get unrelated scores.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// BucketCounts returns how many buckets each node serves in t ("" excluded).
func BucketCounts(t core.BucketTable) map[string]int {
	counts := make(map[string]int)
	for _, owner := range t {
		if owner != "" {
			counts[owner]++
		}
	}
	return counts
}

// Moved counts the buckets whose node differs between a and b, not counting
// buckets that nobody served in a (giving an unserved bucket a node moves
// no flow).
func Moved(a, b core.BucketTable) int {
	n := 0
	for i := range a {
		if a[i] != "" && a[i] != b[i] {
			n++
		}
	}
	return n
}
