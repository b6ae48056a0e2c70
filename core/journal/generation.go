// Package journal holds what halo knows about the replicated data of a
// mirror module on one node: its data generation (this file), the map of
// what changed since both nodes last held the same tree (zonemap.go), the
// crash-safe records that journal it (record.go), and the resync plans built
// from two such maps or from two tree listings (plan.go, fullplan.go).
//
// # Data generations
//
// The scheme follows DRBD's generation UUIDs. Every node persists the
// identifier of the data it holds (Current) and the identifiers its data
// descends from (Ancestors, most recent first). A node that starts serving
// without its peer (ALONE) while its generation is shared with the peer
// forks: it creates a new identifier whose ancestors are the shared one and
// its ancestors. A node that completes a resync adopts its source's
// generation. Comparing two nodes' generations then tells which one holds
// the newest data without looking at the data:
//
//   - same Current: same data (both were in sync when they last parted);
//   - b's Current is one of a's Ancestors: a is newer, b's data is an older
//     state of a's, an incremental resync from a brings b up to date;
//   - both descend from a common ancestor but neither from the other: both
//     served on their own since they parted — a split brain;
//   - nothing in common (or no data yet): unrelated, only a full resync
//     chosen by the administrator (or a policy) can join them.
package journal

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"
)

// MaxAncestors bounds the history kept in a Generation. Generations fork only
// when a node serves without its peer after having been in sync with it, so
// a long chain means many failovers without a resync in between; past this
// bound the oldest links are forgotten and Compare answers Unrelated, which
// is the safe answer (full resync, decided by an administrator or policy).
const MaxAncestors = 16

// Generation identifies the data a node holds. The zero value means "no data
// known": a new module, or a node whose disk was replaced.
type Generation struct {
	Current   uint64
	Ancestors []uint64 // most recent first, at most MaxAncestors
}

// IsZero reports whether the generation is unknown (no data yet).
func (g Generation) IsZero() bool { return g.Current == 0 }

// Fork returns the generation of data that starts diverging from g under the
// new identifier id (a node starting to serve without its peer).
func (g Generation) Fork(id uint64) Generation {
	anc := make([]uint64, 0, min(len(g.Ancestors)+1, MaxAncestors))
	if g.Current != 0 {
		anc = append(anc, g.Current)
	}
	for _, a := range g.Ancestors {
		if len(anc) == MaxAncestors {
			break
		}
		anc = append(anc, a)
	}
	return Generation{Current: id, Ancestors: anc}
}

// Clone returns a copy that shares no memory with g (Persistent values are
// handed to the caller and must not change under it).
func (g Generation) Clone() Generation {
	return Generation{Current: g.Current, Ancestors: slices.Clone(g.Ancestors)}
}

// Equal reports whether both generations are identical, history included.
func (g Generation) Equal(o Generation) bool {
	return g.Current == o.Current && slices.Equal(g.Ancestors, o.Ancestors)
}

// DescendsFrom reports whether g's data is a later state of the data
// identified by id (id is one of g's ancestors).
func (g Generation) DescendsFrom(id uint64) bool {
	return id != 0 && slices.Contains(g.Ancestors, id)
}

func (g Generation) String() string {
	if g.IsZero() {
		return "none"
	}
	return fmt.Sprintf("%016x", g.Current)
}

// Relation is how two nodes' data relate, as told by their generations.
type Relation uint8

const (
	Same       Relation = iota // identical data
	ANewer                     // a's data descends from b's: incremental resync a -> b
	BNewer                     // b's data descends from a's: incremental resync b -> a
	SplitBrain                 // both diverged from a common ancestor
	Unrelated                  // no common history, or no data on one side
)

var relationNames = [...]string{"same", "a-newer", "b-newer", "split-brain", "unrelated"}

func (r Relation) String() string {
	if int(r) < len(relationNames) {
		return relationNames[r]
	}
	return "Relation(" + strconv.Itoa(int(r)) + ")"
}

// Compare tells how a's data relates to b's.
func Compare(a, b Generation) Relation {
	switch {
	case a.IsZero() || b.IsZero():
		// An empty side is not "older": it may be a replaced disk or a module
		// that never ran, and nothing proves the other side's data is the
		// one to keep.
		return Unrelated
	case a.Current == b.Current:
		return Same
	case a.DescendsFrom(b.Current):
		return ANewer
	case b.DescendsFrom(a.Current):
		return BNewer
	case CommonAncestor(a, b) != 0:
		return SplitBrain
	}
	return Unrelated
}

// CommonAncestor returns the most recent generation both a and b descend
// from (or hold), 0 if none. For a split brain it is where they parted.
func CommonAncestor(a, b Generation) uint64 {
	if a.IsZero() || b.IsZero() {
		return 0
	}
	chainA := append([]uint64{a.Current}, a.Ancestors...)
	chainB := append([]uint64{b.Current}, b.Ancestors...)
	for _, x := range chainA {
		if slices.Contains(chainB, x) {
			return x
		}
	}
	return 0
}

// NewID derives a new generation identifier from the node's name, the time
// and the generation it replaces. The core has no randomness; the inputs make
// collisions between the two nodes of a pair (different names) and across
// forks of one node (different time or parent) vanishingly unlikely, and a
// replayed event sequence yields the same identifiers.
func NewID(node string, now time.Time, parent uint64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	var buf [16]byte
	binary.LittleEndian.PutUint64(buf[:8], uint64(now.UnixNano()))
	binary.LittleEndian.PutUint64(buf[8:], parent)
	h.Write(buf[:])
	if id := h.Sum64(); id != 0 {
		return id
	}
	return 1
}
