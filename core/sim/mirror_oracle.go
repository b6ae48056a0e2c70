package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/mirror"
)

// MirrorOracle knows the true data of both nodes and checks the mirror
// invariants after every step.
//
// Data model: every acknowledged application write gets an id; a node's data
// is the chain of writes ending at its Head (parent links), so two nodes that
// served apart hold two branches. Only acknowledged writes exist: a write a
// PRIM could not replicate never returned to the application.
type MirrorOracle struct {
	w      *MirrorWorld
	parent []int // parent[id] = the write before id on that branch; id 0 = initial data
	// quarantined: writes preserved in a quarantine folder when their node
	// lost a split brain. lostOK: writes an administrator or sync_delta
	// accepted to lose (the node that served lacked them).
	quarantined map[int]bool
	lostOK      map[int]bool
	// splitWrites: writes made on one side of a split brain (while the
	// other side served apart), or left out by a split-brain winner. A node
	// may serve without them; they must end up kept or quarantined
	// (CheckFinal, and every resync that overwrites them).
	splitWrites map[int]bool
	dirty       [2]bool // a resync into the node started and did not finish
	writeAt     []time.Time
	// writeRisky: written by a node serving on a decision that accepts a
	// split brain (halo prim or primforce without the peer, sync_delta):
	// the other node may not know of it and serve without it; the split
	// brain must then be resolved when they meet.
	writeRisky []bool
	writer     []string
	// writerSaw: the writer saw the other node when it wrote. A node that
	// continues without a peer it can see must first make the peer know
	// its copy is outdated; such writes are never excused.
	writerSaw []bool
	// aloneApart: the node went ALONE without seeing its peer; until it is
	// PRIM again (or stops serving), its writes belong to a possible split
	// brain even once it sees the peer again.
	aloneApart [2]bool

	// Contact periods: while the two agents cannot see each other, a node
	// that was in sync when contact was lost (and has run since), or that
	// already serves in this period, may serve without the writes the other
	// makes meanwhile: that is a split brain, which must be detected (and
	// the loser's writes quarantined) when contact returns.
	visible        bool
	visibleSince   time.Time
	periodStart    time.Time
	inSyncAtCut    [2]bool
	continuous     [2]bool
	servedInPeriod [2]bool

	// OverlapBound: two nodes that see each other may both serve at most
	// this long (the time to notice and step down).
	OverlapBound time.Duration
	overlapSince time.Time

	Violations []string
	Stats      MirrorStats
}

// MirrorStats counts what a run exercised.
type MirrorStats struct {
	Writes       int
	Failovers    int // a node started serving
	Quarantines  int // resyncs that quarantined divergent writes
	AcceptedLoss int // writes lost by admin choice or sync_delta
	MaxOverlap   time.Duration
	Resyncs      int
}

func newMirrorOracle(w *MirrorWorld) *MirrorOracle {
	return &MirrorOracle{w: w, parent: []int{-1}, writeAt: []time.Time{w.opt.Start}, writeRisky: []bool{false}, writer: []string{""}, writerSaw: []bool{false}, quarantined: map[int]bool{}, lostOK: map[int]bool{},
		splitWrites: map[int]bool{}, OverlapBound: w.opt.Config.HeartbeatTimeout + 3*w.opt.HeartbeatEvery, periodStart: w.opt.Start,
		inSyncAtCut: [2]bool{true, true}}
}

func (o *MirrorOracle) violate(format string, args ...any) {
	o.Violations = append(o.Violations, fmt.Sprintf("t=%v: ", o.w.now.Sub(o.w.opt.Start))+fmt.Sprintf(format, args...))
}

func (o *MirrorOracle) lineage(head int) map[int]bool {
	in := map[int]bool{}
	for id := head; id > 0; id = o.parent[id] {
		in[id] = true
	}
	return in
}

// missing returns the writes not in head's data that nobody accepted to
// lose or preserved.
func (o *MirrorOracle) missing(head int) []int {
	in := o.lineage(head)
	var miss []int
	for id := 1; id < len(o.parent); id++ {
		if !in[id] && !o.quarantined[id] && !o.lostOK[id] && !o.splitWrites[id] {
			miss = append(miss, id)
		}
	}
	return miss
}

// extends reports whether head's data contains base's (base is head or one
// of its ancestors). Write ids grow along a branch, so the walk stops early.
func (o *MirrorOracle) extends(base, head int) bool {
	for id := head; id >= base; id = o.parent[id] {
		if id == base {
			return true
		}
		if id == 0 {
			break
		}
	}
	return base == 0
}

// observe follows contact between the agents: they are in contact when the
// world lets heartbeats through and both agents get them (a lossy or slow
// link can make them lose each other, which is a partition too).
func (o *MirrorOracle) observe() {
	w := o.w
	vis := w.Visible() && w.Nodes[0].M.PeerVisible() && w.Nodes[1].M.PeerVisible()
	if vis == o.visible {
		return
	}
	o.visible = vis
	if vis {
		o.visibleSince = w.now
		return
	}
	o.startPeriod()
}

// losing is called just before a node crashes: contact ends with the node
// as it was (serving or not).
func (o *MirrorOracle) losing() {
	o.observe()
	if o.visible {
		o.visible = false
		o.startPeriod()
	}
}

func (o *MirrorOracle) startPeriod() {
	w := o.w
	o.periodStart = w.now
	for i, n := range w.Nodes {
		o.inSyncAtCut[i] = n.Up && !o.dirty[i] && len(o.missing(n.Head)) == 0
		o.continuous[i] = n.Up
		o.servedInPeriod[i] = n.Up && n.State.Serving()
	}
}

// apart reports whether the nodes count as out of contact: not visible, or
// visible too recently for the machines to have noticed.
func (o *MirrorOracle) apart() bool {
	return !o.visible || o.w.now.Sub(o.visibleSince) < o.w.opt.Config.HeartbeatTimeout
}

func (o *MirrorOracle) write(n, replica *MirrorNode) {
	o.observe()
	id := len(o.parent)
	o.parent = append(o.parent, n.Head)
	o.writeAt = append(o.writeAt, o.w.now)
	o.writer = append(o.writer, n.Name)
	o.writerSaw = append(o.writerSaw, n.M.PeerVisible() && !o.aloneApart[n.idx])
	if other := o.w.peerOf(n); replica == nil && (!o.extends(other.Head, n.Head) || other.Up && other.State.Serving() && o.apart()) {
		// The two copies have diverged (each holds writes the other
		// lacks), or both serve apart: this write belongs to one side of a
		// split brain.
		o.splitWrites[id] = true
	}
	switch n.M.Basis() {
	case mirror.BasisAdmin, mirror.BasisForced, mirror.BasisSyncDelta:
		o.writeRisky = append(o.writeRisky, true)
	default:
		o.writeRisky = append(o.writeRisky, false)
	}
	o.Stats.Writes++
	if replica != nil {
		if replica.Head != n.Head {
			o.violate("%s replicates write %d to %s whose data differs (heads %d and %d)", n.Name, id, replica.Name, n.Head, replica.Head)
		}
		replica.Head = id
	}
	n.Head = id
}

func (o *MirrorOracle) crashed(n *MirrorNode) {
	o.observe()
	o.continuous[n.idx] = false
}

func (o *MirrorOracle) resyncStarted(n *MirrorNode) { o.dirty[n.idx] = true }

func (o *MirrorOracle) resynced(target, src *MirrorNode, rs mirror.StartResync) {
	o.Stats.Resyncs++
	srcData := o.lineage(src.Head)
	var divergent []int
	for id := range o.lineage(target.Head) {
		if !srcData[id] && !o.quarantined[id] && !o.lostOK[id] {
			divergent = append(divergent, id)
		}
	}
	slices.Sort(divergent)
	if len(divergent) > 0 {
		if !rs.Quarantine {
			o.violate("resync of %s from %s discarded acknowledged writes %v without quarantine (full=%v): undetected split brain", target.Name, src.Name, divergent, rs.Full)
		} else {
			o.Stats.Quarantines++
		}
		for _, id := range divergent {
			o.quarantined[id] = true
		}
	}
	target.Head = src.Head
	o.dirty[target.idx] = false
	if o.apart() {
		// A resync that completes out of contact (its ResyncDone read
		// later) leaves the target in sync as of now.
		o.inSyncAtCut[target.idx] = len(o.missing(target.Head)) == 0
	}
}

// entered checks a state change as the executor applies it.
func (o *MirrorOracle) entered(n *MirrorNode, prev core.State, a core.EnterState) {
	switch {
	case a.State == core.Alone && prev != core.Alone && !n.M.PeerVisible():
		o.aloneApart[n.idx] = true
	case a.State != core.Alone:
		o.aloneApart[n.idx] = false
	}
	if (a.State == core.Wait || a.State == core.Stop) && a.Cause == "" {
		o.violate("%s entered %s without a cause", n.Name, a.State)
	}
	if (a.State == core.Alone || a.State == core.Second) && (prev == core.Wait || prev == core.Stop) && n.replReported != "" {
		// Not the data disk, or not captured: neither serve nor receive
		// a resync there.
		o.violate("%s entered %s from %s while its replication layer reports %q", n.Name, a.State, prev, n.replReported)
	}
	peer := o.w.peerOf(n)
	if a.State == core.Prim && prev != core.Prim && peer.Head != n.Head {
		o.violate("%s became PRIM but %s's data differs (heads %d and %d)", n.Name, peer.Name, n.Head, peer.Head)
	}
	if a.State == core.Alone && prev != core.Alone && o.w.opt.Config.Witness {
		o.observe()
		switch basis := n.M.Basis(); {
		case basis == mirror.BasisAdmin || basis == mirror.BasisForced:
		case !n.M.PeerVisible() && (!n.witnessOK || n.witnessAt.Before(o.periodStart)):
			// Serving without seeing the peer needs the witness: no split
			// brain while the witness answers only one side.
			o.violate("%s became ALONE without seeing %s and without reaching the witness since contact was lost (%q)", n.Name, peer.Name, a.Cause)
		}
	}
	if !a.State.Serving() || prev.Serving() {
		return
	}
	if b := n.M.Basis(); b != mirror.BasisAdmin && b != mirror.BasisForced &&
		peer.Up && peer.State.Serving() && n.M.PeerVisible() && peer.M.PeerVisible() && o.w.Visible() {
		// Two nodes that see each other must agree on who serves: a node
		// never starts serving beside a serving peer it can see.
		o.violate("%s became %s while %s serves and both see each other (%q)", n.Name, a.State, peer.Name, a.Cause)
	}
	o.Stats.Failovers++
	o.observe()
	i := n.idx
	defer func() {
		if o.apart() {
			o.servedInPeriod[i] = true
		}
	}()
	basis := n.M.Status().Basis
	if o.dirty[n.idx] && basis != mirror.BasisForced {
		o.violate("%s serves (%s, basis %s) on inconsistent data (interrupted resync)", n.Name, a.State, basis)
	}
	if basis == mirror.BasisForced {
		o.dirty[n.idx] = false // primforce made this data the reference
	}
	miss := o.missing(n.Head)
	if len(miss) == 0 {
		return
	}
	switch basis {
	case mirror.BasisSyncDelta, mirror.BasisAdmin, mirror.BasisForced:
		o.Stats.AcceptedLoss += len(miss)
		for _, id := range miss {
			o.lostOK[id] = true
		}
	case mirror.BasisPolicy:
		// A split-brain winner lacks the loser's writes: the loser must
		// quarantine them when it resyncs (checked then, and at the end).
		for _, id := range miss {
			o.splitWrites[id] = true
		}
	default:
		entitled := o.apart() && (o.inSyncAtCut[i] && o.continuous[i] || o.servedInPeriod[i])
		// Or: the last heartbeat it read was sent while both copies were
		// identical, and it has not heard from the peer since (its agent
		// kept running: a reboot clears lastHeard). Writes made after that
		// are out of its sight: serving without them is a split brain.
		lh := n.lastHeard
		sight := !n.M.PeerVisible() && lh.inSync && !lh.at.IsZero()
		var unexcused []int
		for _, id := range miss {
			during := o.apart() && !o.writeAt[id].Before(o.periodStart)
			unseen := sight && o.writeAt[id].After(lh.at) && !o.writerSaw[id]
			if !(during && (entitled || o.writeRisky[id]) || unseen) {
				unexcused = append(unexcused, id)
				continue
			}
			o.splitWrites[id] = true
		}
		if len(unexcused) > 0 {
			o.violate("%s became %s (basis %s: %q) without acknowledged writes %s (out of contact since %v)",
				n.Name, a.State, basis, a.Cause, o.describe(unexcused), o.periodStart.Sub(o.w.opt.Start))
		}
	}
}

// describe lists writes with when and where they were made.
func (o *MirrorOracle) describe(ids []int) string {
	var parts []string
	for i, id := range ids {
		if i == 8 {
			parts = append(parts, fmt.Sprintf("... (%d in all)", len(ids)))
			break
		}
		parts = append(parts, fmt.Sprintf("%d@%v/%s", id, o.writeAt[id].Sub(o.w.opt.Start).Round(time.Millisecond), o.writer[id]))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// check runs after every step.
func (o *MirrorOracle) check() {
	o.observe()
	w := o.w
	a, b := w.Nodes[0], w.Nodes[1]
	if a.State.Serving() && b.State.Serving() && w.Visible() {
		if o.overlapSince.IsZero() {
			o.overlapSince = w.now
		}
		d := w.now.Sub(o.overlapSince)
		if d > o.Stats.MaxOverlap {
			o.Stats.MaxOverlap = d
		}
		if d > o.OverlapBound {
			o.violate("%s and %s both serve and see each other for %v (bound %v)", a.Name, b.Name, d, o.OverlapBound)
			o.overlapSince = w.now // report again only after another bound
		}
	} else {
		o.overlapSince = time.Time{}
	}
	for _, n := range w.Nodes {
		if n.M == nil {
			continue
		}
		st, _ := n.M.State()
		if reason, _ := n.M.Reason(); (st == core.Wait || st == core.Stop) && reason == "" {
			o.violate("%s is %s without a reason", n.Name, st)
		}
	}
}

// CheckFinal checks, once the pair settled, that every acknowledged write is
// in the serving node's data, quarantined, or lost by an accepted decision.
func (o *MirrorOracle) CheckFinal() {
	for _, n := range o.w.Nodes {
		if !n.State.Serving() {
			continue
		}
		if miss := o.missing(n.Head); len(miss) > 0 {
			o.violate("acknowledged writes %v lost: not in %s's data, not quarantined", miss, n.Name)
		}
		in := o.lineage(n.Head)
		var lost []int
		for id := range o.splitWrites {
			if !in[id] && !o.quarantined[id] && !o.lostOK[id] {
				lost = append(lost, id)
			}
		}
		if len(lost) > 0 {
			slices.Sort(lost)
			o.violate("split-brain writes %v neither in %s's data nor quarantined", lost, n.Name)
		}
	}
}

// MissingWrites is the number of acknowledged writes node n's data lacks
// (quarantined and accepted losses included).
func (o *MirrorOracle) MissingWrites(n *MirrorNode) int {
	in := o.lineage(n.Head)
	return len(o.parent) - 1 - len(in)
}

// Quarantined is the number of writes preserved in quarantine folders.
func (o *MirrorOracle) Quarantined() int { return len(o.quarantined) }

// AcceptedLost is the number of writes lost by an accepted decision (admin
// prim, primforce, sync_delta).
func (o *MirrorOracle) AcceptedLost() int { return len(o.lostOK) }
