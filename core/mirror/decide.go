package mirror

import (
	"fmt"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/journal"
)

// reconcile takes the decision the current situation calls for. It reports
// whether it started a transition.
func (m *Machine) reconcile() bool {
	m.grantVote()
	if m.state == core.Stop {
		return false
	}
	if m.peerAlive && !m.peerFresh() {
		// Just resumed from a pause: what the peer said may be old. Step
		// down if it serves; promote nothing until a fresh heartbeat.
		if m.state.Serving() && m.peer.State.Serving() {
			return m.resolveConflict()
		}
		return false
	}
	if m.checkerAction() {
		return true
	}
	switch m.state {
	case core.Wait:
		return m.reconcileWait()
	case core.Second:
		return m.reconcileSecond()
	case core.Alone:
		return m.reconcileAlone()
	case core.Prim:
		return m.reconcilePrim()
	}
	return false
}

// ---- election ----

type decision struct {
	winner string // "" = nobody can be chosen automatically
	why    string
	admin  bool
	basis  Basis
}

// elect chooses which of two non-serving nodes that see each other should
// serve. It is symmetric (both nodes compute it from their own status and
// the other's heartbeat and must agree) and depends only on facts that do
// not change while both wait: generations, roles, eligibility.
func elect(x, y PeerStatus, cfg Config) decision {
	a, b := x, y
	if a.Node > b.Node {
		a, b = b, a
	}
	var best []PeerStatus
	why, basis := "", BasisNewest
	switch {
	case a.Yield != b.Yield && !(a.Yield && (b.Inconsistent || b.Outdated)) && !(b.Yield && (a.Inconsistent || a.Outdated)):
		// An administrator's halo second (or a stopstart handing over)
		// overrides everything else, unless the other copy is unusable.
		k, y := a, b
		if a.Yield {
			k, y = b, a
		}
		best, why = []PeerStatus{k}, fmt.Sprintf("%s yields: %s", y.Node, y.Blocker)
		if rel := journal.Compare(k.Gen, y.Gen); rel != journal.Same && rel != journal.ANewer {
			basis = BasisAdmin // the yielding node's changes are given up
		}
	case a.Forced != b.Forced:
		f := a
		if b.Forced {
			f = b
		}
		best, why, basis = []PeerStatus{f}, fmt.Sprintf("%s's data was imposed by primforce", f.Node), BasisForced
	case a.Inconsistent != b.Inconsistent || a.Outdated != b.Outdated:
		// A node whose resync (or replication) from the other was cut
		// holds a mix, or an old copy, of the other's data: the other is
		// the reference whatever their generations say (it may even have
		// won a split brain the first was being resynced for).
		g, o := a, b
		if a.Inconsistent || a.Outdated {
			g, o = b, a
		}
		best, why = []PeerStatus{g}, fmt.Sprintf("%s was being brought up to date from %s", o.Node, g.Node)
		if rel := journal.Compare(g.Gen, o.Gen); rel != journal.Same && rel != journal.ANewer {
			// The other's own changes were already given up (split-brain
			// policy, primforce, unrelated data): its resync quarantines them.
			basis = BasisPolicy
		}
	default:
		switch journal.Compare(a.Gen, b.Gen) {
		case journal.Same:
			best, why = []PeerStatus{a, b}, "same data on both nodes"
		case journal.ANewer:
			best, why = []PeerStatus{a}, fmt.Sprintf("%s has the newest data", a.Node)
		case journal.BNewer:
			best, why = []PeerStatus{b}, fmt.Sprintf("%s has the newest data", b.Node)
		case journal.SplitBrain:
			w := splitBrainWinner(a, b, cfg)
			best, basis = []PeerStatus{w}, BasisPolicy
			why = fmt.Sprintf("split brain: both nodes served since generation %016x; %s wins by policy %s", journal.CommonAncestor(a.Gen, b.Gen), w.Node, cfg.SplitBrainWinner)
		case journal.Unrelated:
			switch {
			case a.Gen.IsZero() && !b.Gen.IsZero():
				best, why = []PeerStatus{b}, fmt.Sprintf("%s has no data yet", a.Node)
			case b.Gen.IsZero() && !a.Gen.IsZero():
				best, why = []PeerStatus{a}, fmt.Sprintf("%s has no data yet", b.Node)
			default:
				return decision{admin: true, why: fmt.Sprintf("data may not be up to date: %s and %s hold unrelated data (new module, or a replaced disk): run halo prim on the node with the good data", a.Node, b.Node)}
			}
		}
	}
	var usable, able []PeerStatus
	for _, s := range best {
		if !s.Inconsistent && !s.Outdated {
			usable = append(usable, s)
		}
	}
	if len(usable) == 0 {
		return decision{admin: true, why: fmt.Sprintf("the newest data, on %s, is inconsistent or outdated (an interrupted resync or replication): run halo primforce on the node whose data should be kept", best[0].Node)}
	}
	for _, s := range usable {
		if s.CanServe {
			able = append(able, s)
		}
	}
	if len(able) == 0 {
		s := usable[0]
		return decision{admin: s.BlockerNeedsAdmin, why: fmt.Sprintf("%s has the newest data but cannot serve: %s", s.Node, s.Blocker)}
	}
	w := able[0]
	if len(able) == 2 {
		w = preferred(able[0], able[1], cfg)
		why += fmt.Sprintf("; %s %s", w.Node, preferenceReason(w, cfg))
	}
	return decision{winner: w.Node, why: why, basis: basis}
}

func wasServing(s PeerStatus) bool { return s.Role == core.Alone || s.Role == core.Prim }

// preferred picks between two nodes holding the same data: the previous
// primary (roles resume), then the default primary, then the first name.
func preferred(a, b PeerStatus, cfg Config) PeerStatus {
	if wasServing(a) != wasServing(b) {
		if wasServing(a) {
			return a
		}
		return b
	}
	if cfg.DefaultPrimary == b.Node {
		return b
	}
	return a
}

func preferenceReason(w PeerStatus, cfg Config) string {
	switch {
	case wasServing(w):
		return fmt.Sprintf("was %s: previous roles resume", w.Role)
	case cfg.DefaultPrimary == w.Node:
		return "is the default primary"
	}
	return "comes first by name"
}

// splitBrainWinner applies the split-brain policy to two nodes whose data
// diverged.
func splitBrainWinner(a, b PeerStatus, cfg Config) PeerStatus {
	if a.Node > b.Node {
		a, b = b, a
	}
	pick := cfg.SplitBrainWinner
	if pick == WinnerDefaultPrimary {
		pick = cfg.DefaultPrimary
	}
	switch pick {
	case a.Node:
		return a
	case b.Node:
		return b
	}
	// longest_alone: the node that started serving alone first has probably
	// taken most of the clients' work. A node that never served alone loses.
	switch {
	case !a.AloneSince.IsZero() && (b.AloneSince.IsZero() || a.AloneSince.Before(b.AloneSince)):
		return a
	case !b.AloneSince.IsZero() && (a.AloneSince.IsZero() || b.AloneSince.Before(a.AloneSince)):
		return b
	}
	return a
}

// waitNote records why a non-serving node does not move: the WAIT reason,
// or an event-log line for a SECOND.
func (m *Machine) waitNote(text string, admin bool) {
	if m.state == core.Wait {
		m.setReason(text, admin)
		return
	}
	m.noteOnce("info", text)
}

// grantVote gives this node's vote to the peer's candidacy when the peer
// should serve. A vote is a promise: this node does not serve in that term.
func (m *Machine) grantVote() {
	t := m.peer.Candidate
	if !m.peerAlive || t == 0 || t <= m.voted || m.candidate != 0 || m.state.Serving() {
		return
	}
	if elect(m.self(), m.peer, m.cfg).winner != m.cfg.Peer {
		return
	}
	m.voted, m.votedFor, m.term = t, m.cfg.Peer, max(m.term, t)
	m.logf("info", "vote: %s may serve (term %d)", m.cfg.Peer, t)
}

// electAndServe: this node (WAIT or SECOND) and its peer see each other and
// neither serves. Serve if both elect this node: become a candidate, and
// serve once the peer voted for this candidacy.
func (m *Machine) electAndServe(situation string) bool {
	d := elect(m.self(), m.peer, m.cfg)
	if d.winner != m.cfg.Node {
		m.candidate = 0
	} else if m.candidate == 0 {
		m.term = max(m.term, m.voted, m.peer.Candidate, m.peer.VoteTerm) + 1
		m.candidate = m.term
	}
	granted := func() bool { return m.peer.VoteFor == m.cfg.Node && m.peer.VoteTerm == m.candidate }
	switch {
	case d.winner == m.cfg.Node && granted():
		term := m.candidate
		m.goAlone(fmt.Sprintf("%s; %s elected to serve: %s", situation, m.cfg.Node, d.why), "start", d.basis, func() bool {
			return m.peerAlive && !m.peer.State.Serving() && m.candidate == term && granted() &&
				elect(m.self(), m.peer, m.cfg).winner == m.cfg.Node
		})
		return true
	case d.winner == m.cfg.Node:
		m.waitNote(fmt.Sprintf("%s; elected to serve (%s), waiting for %s to agree", situation, d.why, m.cfg.Peer), false)
	case d.winner == m.cfg.Peer:
		m.waitNote(fmt.Sprintf("%s; %s should serve (%s), waiting for it", situation, m.cfg.Peer, d.why), false)
	default:
		m.waitNote(d.why, d.admin)
	}
	return false
}

func (m *Machine) peerSituation() string {
	return fmt.Sprintf("%s is %s", m.cfg.Peer, m.peer.State)
}

// ---- WAIT ----

func (m *Machine) reconcileWait() bool {
	if m.yield && m.yieldAuto && (!m.peerAlive && !m.inGrace() || m.peerAlive && !m.peer.State.Serving() && !m.peer.CanServe) {
		// The handover of a stopstart needs a peer able to take the
		// application; without one this node serves again.
		m.logf("warn", "%s cannot take over (%s): %s no longer yields", m.cfg.Peer, m.peerText(), m.cfg.Node)
		m.yield, m.yieldAuto = false, false
	}
	if c := m.forbidder(core.Alone); c != nil && m.forbidder(core.Second) != nil {
		m.setReason(m.checkerReason(c)+": holding in WAIT until it is up", false)
		return false
	}
	if why, admin := m.replBlocker(); why != "" {
		// Neither serving nor receiving a resync: the directories may
		// not be the data disk (must_exist). The peer sees why and takes
		// over if it can.
		m.setReason(why+": holding in WAIT", admin)
		return false
	}
	if m.inGrace() {
		m.setReason(fmt.Sprintf("waiting for a heartbeat from %s", m.cfg.Peer), false)
		return false
	}
	if m.peerAlive {
		if m.peer.State.Serving() {
			return m.joinServing()
		}
		return m.electAndServe(m.peerSituation())
	}
	return m.aloneWithoutPeer()
}

// aloneWithoutPeer: WAIT and the peer is absent.
func (m *Machine) aloneWithoutPeer() bool {
	if m.p.Inconsistent {
		m.setReason(m.inconsistentReason(), true)
		return false
	}
	if m.p.Outdated {
		m.setReason(fmt.Sprintf("data on %s is outdated: %s continued without it when replication stalled; waiting for %s (halo prim here accepts losing its changes)", m.cfg.Node, m.cfg.Peer, m.cfg.Peer), false)
		return false
	}
	if m.yield {
		m.setReason(fmt.Sprintf("%s: waiting for %s to serve", m.yieldWhy, m.cfg.Peer), false)
		return false
	}
	if c := m.forbidder(core.Alone); c != nil {
		m.setReason(m.checkerReason(c)+": holding in WAIT until it is up", false)
		return false
	}
	if m.witness.down {
		m.setReason(m.witnessReason(), true)
		return false
	}
	ok, basis, why, admin := m.aloneAllowed()
	if !ok {
		m.setReason(why, admin)
		return false
	}
	if m.cfg.Witness && !m.witnessOK() {
		m.askWitness()
		m.setReason(why+"; checking the split-brain witness first", false)
		return false
	}
	m.goAlone(why, "start", basis, m.peerStillAbsent)
	return true
}

// peerHadBetterData tells, from what this node last learnt of its peer's
// data, why the peer's data should be preferred to its own (better), or
// that both diverged and this node wins the split brain by policy (won).
func (m *Machine) peerHadBetterData() (better, won string) {
	pd := m.p.Peer
	if pd.Gen.IsZero() {
		return "", ""
	}
	rel := journal.Compare(m.p.Gen, pd.Gen)
	if m.peerKnown && (m.peer.Inconsistent || m.peer.Outdated) {
		// It was being brought up to date from this node.
		if rel == journal.SplitBrain || rel == journal.Unrelated {
			return "", fmt.Sprintf("%s was being brought up to date from %s (its own changes are quarantined)", m.cfg.Peer, m.cfg.Node)
		}
		return "", ""
	}
	switch {
	case pd.Forced && !m.p.Forced:
		return fmt.Sprintf("%s serves data imposed by primforce", m.cfg.Peer), ""
	case rel == journal.BNewer:
		return fmt.Sprintf("%s had newer data when last seen (generation %v)", m.cfg.Peer, pd.Gen), ""
	case rel == journal.SplitBrain:
		peer := PeerStatus{Node: m.cfg.Peer, Gen: pd.Gen, AloneSince: pd.AloneSince}
		if w := splitBrainWinner(m.self(), peer, m.cfg).Node; w == m.cfg.Peer {
			return fmt.Sprintf("split brain with %s, which wins by policy %s", m.cfg.Peer, m.cfg.SplitBrainWinner), ""
		}
		return "", fmt.Sprintf("split brain with %s, which %s wins by policy %s", m.cfg.Peer, m.cfg.Node, m.cfg.SplitBrainWinner)
	}
	return "", ""
}

func (m *Machine) inconsistentReason() string {
	return fmt.Sprintf("data on %s is inconsistent (a resync from %s was interrupted): waiting for %s; halo primforce serves this data anyway and forces a full resync of %s later", m.cfg.Node, m.cfg.Peer, m.cfg.Peer, m.cfg.Peer)
}

// aloneAllowed tells whether this node may serve while its peer is absent,
// why, and whether only an administrator can change that.
func (m *Machine) aloneAllowed() (ok bool, basis Basis, why string, admin bool) {
	absent := m.lostCause
	if !m.peerKnown || absent == "" {
		absent = fmt.Sprintf("%s not seen since %s started", m.cfg.Peer, m.cfg.Node)
	}
	// What the peer said before it vanished (persisted) beats what this
	// node remembers of its own role.
	better, won := m.peerHadBetterData()
	if better != "" {
		return false, BasisNone, fmt.Sprintf("%s; %s: waiting for it (halo prim here if %s is lost for good)", absent, better, m.cfg.Peer), false
	}
	// ALONE knows its data is the newest only if no SECOND may have caught
	// up with it (Shared): a SECOND in sync may have taken over since.
	aloneNewest := m.p.Role == core.Alone && !m.p.Shared
	if won != "" && (aloneNewest || m.inSyncAtLoss) {
		return true, BasisPolicy, fmt.Sprintf("%s; %s", absent, won), false
	}
	switch {
	case aloneNewest:
		return true, BasisNewest, fmt.Sprintf("%s; %s was ALONE when it stopped: its data is the newest", absent, m.cfg.Node), false
	case m.inSyncAtLoss && !m.failoverOff():
		return true, BasisNewest, fmt.Sprintf("%s; %s was in sync when %s was lost", absent, m.cfg.Node, m.cfg.Peer), false
	case m.failoverOff():
		return false, BasisNone, fmt.Sprintf("%s; failover is off: only halo prim promotes %s", absent, m.cfg.Node), true
	case m.cfg.SyncDelta > 0 && !m.p.LastInSync.IsZero() && m.now.Sub(m.p.LastInSync) <= m.cfg.SyncDelta:
		return true, BasisSyncDelta, fmt.Sprintf("%s; sync_delta %v allows it: last in sync with %s %v ago", absent, m.cfg.SyncDelta, m.cfg.Peer, m.now.Sub(m.p.LastInSync).Round(time.Millisecond)), false
	}
	role := "never running"
	switch {
	case m.p.Role == core.Alone:
		role = fmt.Sprintf("ALONE with %s catching up", m.cfg.Peer)
	case m.p.Role != core.Stop:
		role = m.p.Role.String()
	}
	return false, BasisNone, fmt.Sprintf("data may not be up to date: %s; %s was %s when it stopped: waiting for %s (halo prim here if %s is lost for good)", absent, m.cfg.Node, role, m.cfg.Peer, m.cfg.Peer), false
}

// ---- SECOND ----

func (m *Machine) reconcileSecond() bool {
	if m.handover && m.peerAlive && m.peer.State.Serving() {
		m.handover = false
	}
	if m.handover && m.peerAlive && (m.peer.State != core.Second || m.peer.Inconsistent || m.peer.Outdated) {
		// The peer left SECOND instead of taking over: the swap is off.
		m.logf("warn", "swap: %s is %s and will not take over; handover cancelled", m.cfg.Peer, m.peerText())
		m.handover = false
	}
	if m.resync != nil || m.p.Inconsistent {
		return m.reconcileResyncing()
	}
	if !m.peerAlive {
		return m.failover(m.lostCause)
	}
	if m.peer.State.Serving() && m.peer.Degrading && !m.p.Outdated {
		m.logf("warn", "%s cannot replicate to %s and continues without it: data on %s outdated until a resync", m.cfg.Peer, m.cfg.Node, m.cfg.Node)
		m.persist(func(p *Persistent) { p.Outdated = true })
		m.enter(core.Second, core.NotReady, fmt.Sprintf("replication from %s stalled: data outdated until a resync", m.cfg.Peer))
		return false
	}
	switch {
	case m.peer.State.Serving():
		if journal.Compare(m.peer.Gen, m.p.Gen) == journal.Same {
			m.stampInSync()
			return false
		}
		return m.joinServing()
	case m.handover:
		return false // our own swap handover: the peer takes over
	case m.peer.State == core.Second && m.peer.Handover && journal.Compare(m.p.Gen, m.peer.Gen) == journal.Same:
		m.takeOver(fmt.Sprintf("swap: %s stopped its application and hands over", m.cfg.Peer))
		return true
	case m.peer.State != core.Second && m.failoverOff():
		m.inSyncAtLoss = true
		m.toWait(fmt.Sprintf("%s; failover is off: run halo prim to promote %s", m.peerSituation(), m.cfg.Node), true)
		return true
	}
	return m.electAndServe(m.peerSituation())
}

// reconcileResyncing: SECOND whose data is not yet the source's.
func (m *Machine) reconcileResyncing() bool {
	if !m.peerAlive || !m.peer.State.Serving() {
		what := m.lostCause
		if m.peerAlive {
			what = m.peerSituation()
		}
		m.logf("warn", "resync from %s interrupted: %s", m.cfg.Peer, what)
		m.toWait(m.inconsistentReason(), true)
		return true
	}
	if m.resync != nil {
		if m.peer.Gen.Current != m.resync.source.Current {
			m.logf("warn", "%s changed generation during the resync (%v -> %v): restarting it", m.cfg.Peer, m.resync.source, m.peer.Gen)
			return m.joinServing()
		}
		return false
	}
	if m.now.Before(m.resyncRetryAt) {
		return false
	}
	return m.joinServing()
}

// failover: consistent SECOND whose peer vanished.
func (m *Machine) failover(cause string) bool {
	if m.p.Outdated {
		m.toWait(fmt.Sprintf("%s; data on %s is outdated (replication had stalled): not taking over", cause, m.cfg.Node), false)
		return true
	}
	if m.handover {
		// This node handed over in a swap: the peer may have served (and
		// acknowledged writes) before this node heard of it.
		m.toWait(fmt.Sprintf("%s; %s handed the application over to %s, which may have served since: not taking over", cause, m.cfg.Node, m.cfg.Peer), true)
		return true
	}
	if better, _ := m.peerHadBetterData(); better != "" {
		// The peer went on without this node (seen just before it
		// vanished, e.g. right after this node resumed from a pause).
		_, _, why, admin := m.aloneAllowed()
		m.toWait(why, admin)
		return true
	}
	if m.failoverOff() {
		m.inSyncAtLoss = true
		_, _, why, admin := m.aloneAllowed()
		m.toWait(why, admin)
		return true
	}
	if c := m.forbidder(core.Alone); c != nil {
		m.inSyncAtLoss = true
		m.toWait(fmt.Sprintf("%s; %s: cannot take over", cause, m.checkerReason(c)), false)
		return true
	}
	if why, admin := m.replBlocker(); why != "" {
		m.inSyncAtLoss = true
		m.toWait(fmt.Sprintf("%s; %s: cannot take over", cause, why), admin)
		return true
	}
	if m.cfg.Witness {
		if m.witness.down {
			m.inSyncAtLoss = true
			m.toWait(m.witnessReason(), true)
			return true
		}
		if !m.witnessOK() {
			m.askWitness()
			return false
		}
	}
	m.goAlone(cause+": failover", "failover", BasisNewest, m.peerStillAbsent)
	return true
}

// joinServing: WAIT or SECOND, the peer serves and this node's data is not
// known equal to it: become its SECOND with the right kind of resync.
func (m *Machine) joinServing() bool {
	if c := m.forbidder(core.Second); c != nil {
		if m.state == core.Wait {
			m.setReason(m.checkerReason(c)+": holding in WAIT until it is up", false)
			return false
		}
		m.toWait(m.checkerReason(c)+": holding in WAIT until it is up", false)
		return true
	}
	rel := journal.Compare(m.peer.Gen, m.p.Gen) // a = peer
	divergent := !m.p.Gen.IsZero()
	var full, quarantine bool
	var why string
	switch {
	case m.peer.Forced:
		full = true
		quarantine = divergent && rel != journal.ANewer && rel != journal.Same
		why = fmt.Sprintf("%s serves data imposed by primforce", m.cfg.Peer)
	case rel == journal.ANewer:
		full = m.p.Inconsistent && m.p.ResyncFull
		why = fmt.Sprintf("%s serves newer data (generation %v)", m.cfg.Peer, m.peer.Gen)
	case rel == journal.Same:
		full = m.p.Inconsistent && m.p.ResyncFull
		why = fmt.Sprintf("%s serves generation %v, which this node holds: resync what changed", m.cfg.Peer, m.peer.Gen)
	case rel == journal.SplitBrain:
		full, quarantine = true, true
		why = fmt.Sprintf("split brain: %s and %s both served since generation %016x; %s serves, this node's divergent files are quarantined", m.cfg.Node, m.cfg.Peer, journal.CommonAncestor(m.p.Gen, m.peer.Gen), m.cfg.Peer)
		m.logf("error", "%s", why)
	case rel == journal.Unrelated:
		full, quarantine = true, divergent
		why = fmt.Sprintf("%s serves data unrelated to this node's", m.cfg.Peer)
	case m.yield:
		full, quarantine = true, true
		why = fmt.Sprintf("halo second: %s discards its newer changes (quarantined)", m.cfg.Node)
	default: // this node holds newer data than what the peer serves
		reason := fmt.Sprintf("%s serves older data (generation %v) than %s's (%v): run halo second here to discard this node's changes (they are quarantined), or stop %s", m.cfg.Peer, m.peer.Gen, m.cfg.Node, m.p.Gen, m.cfg.Peer)
		if m.state == core.Wait {
			m.setReason(reason, true)
			return false
		}
		m.toWait(reason, true)
		return true
	}
	if m.yield && m.yieldFull {
		full = true
	}
	m.becomeSecond(why, full, quarantine)
	return true
}

// ---- ALONE / PRIM ----

func (m *Machine) reconcileAlone() bool {
	peerSecond := m.peerAlive && m.peer.State == core.Second
	if !peerSecond {
		m.ensureRepl(ReplNone)
		if m.p.Shared {
			// The peer was resyncing from us and may have adopted our
			// generation before leaving: what we write from now on must
			// not carry the same identifier.
			m.persist(func(p *Persistent) { m.fork(p) })
		}
	}
	if !m.peerAlive {
		return false
	}
	if m.peer.State.Serving() {
		return m.resolveConflict()
	}
	if !peerSecond {
		return false
	}
	same := journal.Compare(m.p.Gen, m.peer.Gen) == journal.Same
	if same && m.peer.Outdated {
		// Replication to the SECOND stalled and it knows its data is
		// outdated: drop it and journal under a new generation.
		m.ensureRepl(ReplNone)
		m.logf("warn", "%s marked its data outdated: replication to it stopped, changes journaled under a new generation", m.cfg.Peer)
		m.stallSince, m.degrading = time.Time{}, false
		m.persist(func(p *Persistent) { m.fork(p) })
		return false
	}
	if m.stalled() && same && !m.peer.Inconsistent {
		m.outdatePeer()
		return false
	}
	if !m.p.Shared {
		// From the moment this node feeds a resync, the peer may adopt Gen
		// (even if this node never hears that it did): serving without the
		// peer later must fork.
		m.persist(func(p *Persistent) { p.Shared = true })
	}
	m.ensureRepl(ReplSource)
	if same && !m.peer.Inconsistent && !m.peer.Outdated && m.peer.Readiness == core.Ready && m.stallSince.IsZero() {
		m.toPrim()
		return true
	}
	return false
}

func (m *Machine) reconcilePrim() bool {
	if !m.peerAlive {
		cause := m.lostCause
		if m.cfg.Witness {
			if m.witness.down {
				m.toWait(m.witnessReason(), true)
				return true
			}
			if !m.witnessOK() {
				m.askWitness()
				return false
			}
		}
		m.primToAlone(cause + ": application keeps running, changes journaled for the resync")
		return true
	}
	if m.peer.State.Serving() {
		return m.resolveConflict()
	}
	inSync := m.peer.State == core.Second && !m.peer.Inconsistent && !m.peer.Outdated && journal.Compare(m.p.Gen, m.peer.Gen) == journal.Same
	switch {
	case !inSync && m.degrading:
		m.primToAlone(fmt.Sprintf("replication to %s not acknowledged for %v (stall_timeout %v) and %s knows its data is outdated: degraded to ALONE, changes journaled", m.cfg.Peer, m.now.Sub(m.stallSince).Round(time.Millisecond), m.cfg.StallTimeout, m.cfg.Peer))
		return true
	case !inSync:
		m.primToAlone(fmt.Sprintf("%s is %s/%s: replication stopped, changes journaled", m.cfg.Peer, m.peer.State, m.peer.Readiness))
		return true
	case m.stalled():
		m.outdatePeer()
		return false
	}
	m.stampInSync()
	return false
}

// resolveConflict: both nodes serve and see each other.
func (m *Machine) resolveConflict() bool {
	rel := journal.Compare(m.p.Gen, m.peer.Gen)
	var winner, why string
	switch {
	case m.p.Forced != m.peer.Forced:
		winner = m.cfg.Node
		if m.peer.Forced {
			winner = m.cfg.Peer
		}
		why = fmt.Sprintf("both nodes serve; %s's data was imposed by primforce", winner)
	case rel == journal.BNewer:
		winner = m.cfg.Peer
		why = fmt.Sprintf("%s took over while %s was unresponsive (its generation %v descends from ours %v)", m.cfg.Peer, m.cfg.Node, m.peer.Gen, m.p.Gen)
	case rel == journal.ANewer:
		winner = m.cfg.Node
		why = fmt.Sprintf("%s serves stale data (generation %v; ours %v descends from it)", m.cfg.Peer, m.peer.Gen, m.p.Gen)
	default:
		winner = splitBrainWinner(m.self(), m.peer, m.cfg).Node
		why = fmt.Sprintf("split brain: %s and %s both served since they parted (generations %v and %v, %s); %s wins by policy %s",
			m.cfg.Node, m.cfg.Peer, m.p.Gen, m.peer.Gen, rel, winner, m.cfg.SplitBrainWinner)
	}
	if winner == m.cfg.Node {
		m.noteOnce("error", why+fmt.Sprintf("; %s keeps serving, %s must step down", m.cfg.Node, m.cfg.Peer))
		return false
	}
	full := rel != journal.BNewer || m.peer.Forced
	quarantine := full && rel != journal.BNewer && !m.p.Gen.IsZero()
	m.logf("error", "%s; %s steps down", why, m.cfg.Node)
	m.becomeSecond(why, full, quarantine)
	return true
}

// outdatePeer asks the SECOND to mark its data outdated. Until it does,
// writes stay blocked: continuing alone before the peer
// knows would let it fail over without the writes acknowledged meanwhile.
func (m *Machine) outdatePeer() {
	if !m.degrading {
		m.degrading = true
		m.logf("warn", "replication to %s not acknowledged for %v (stall_timeout %v): asking %s to mark its data outdated before continuing without it",
			m.cfg.Peer, m.now.Sub(m.stallSince).Round(time.Millisecond), m.cfg.StallTimeout, m.cfg.Peer)
		m.sendPeer(MsgOutdate)
	}
}

// stalled: replication has not been acknowledged for stall_timeout. A stall
// alone does not tell a stuck replication link from a dead or cut-off peer:
// it counts only with a heartbeat received after the stall was reported,
// which shows the peer alive. Otherwise the heartbeat timeout decides, with
// the witness if there is one.
func (m *Machine) stalled() bool {
	return !m.stallSince.IsZero() && m.now.Sub(m.stallSince) >= m.cfg.StallTimeout &&
		m.peerFresh() && m.peerHeard.After(m.stallReported)
}

func (m *Machine) stampInSync() {
	if m.cfg.SyncDelta <= 0 {
		return
	}
	every := max(m.cfg.SyncDelta/10, time.Second)
	if m.now.Sub(m.p.LastInSync) >= every {
		m.persist(func(p *Persistent) { p.LastInSync = m.now })
	}
}

// fork starts a new data generation if the current one may be held by the
// peer (or there is none). Call inside persist.
func (m *Machine) fork(p *Persistent) {
	if !p.Shared && !p.Gen.IsZero() {
		return
	}
	old := p.Gen
	p.Gen = old.Fork(journal.NewID(m.cfg.Node, m.now, old.Current))
	p.Shared = false
	m.logf("info", "new data generation %v (from %v): changes made from now on are not on %s", p.Gen, old, m.cfg.Peer)
}

// forkAlone records that this node serves without its peer: a new
// generation if needed, and when this alone period started (split-brain
// policy longest_alone). Serving again on a generation of its own continues
// the same period. Call inside persist.
func (m *Machine) forkAlone(p *Persistent) {
	old := p.Gen.Current
	m.fork(p)
	if p.Gen.Current != old || p.AloneSince.IsZero() {
		p.AloneSince = m.now
	}
	p.Role = core.Alone
}

// abandonTakeover: the situation changed while the secondary was being
// stopped to take over. Restart it (a SECOND stays a SECOND) and decide
// again.
func (m *Machine) abandonTakeover(from core.State) {
	m.logf("warn", "taking over abandoned: %s is %s now", m.cfg.Peer, m.peerText())
	if from != core.Second {
		m.plan = nil
		return
	}
	m.start("restart secondary",
		doStep(func() { m.enter(core.Second, core.Transient, "taking over abandoned: restarting the secondary") }),
		step{script: "start_second", args: []string{"SECOND", "SECOND", "abandon"}},
		doStep(func() { m.enter(core.Second, m.settledReadiness(), "secondary restarted") }))
}

// ---- transitions ----

func (m *Machine) peerStillAbsent() bool { return !m.peerAlive }

// goAlone starts serving without a SECOND. still is checked again once the
// secondary is stopped, just before this node starts serving: stop_second
// may take long, and the peer may have reappeared (or changed its mind)
// meanwhile.
func (m *Machine) goAlone(cause, action string, basis Basis, still func() bool) {
	from := m.state
	var steps []step
	if from == core.Second {
		steps = append(steps, m.scriptStep("stop_second", "ALONE", action))
	}
	steps = append(steps,
		doStep(func() {
			if !still() {
				m.abandonTakeover(from)
				return
			}
			if from == core.Second {
				m.ensureRepl(ReplNone)
				m.resync = nil
			}
			m.persist(func(p *Persistent) {
				m.forkAlone(p)
				// The data served becomes the reference (prim, primforce).
				p.Stopped, p.Outdated, p.Inconsistent = false, false, false
			})
			m.yield, m.inSyncAtLoss, m.handover = false, false, false
			m.enter(core.Alone, core.Transient, cause)
			m.basis = basis
			m.emit(core.SetVIP{})
		}),
		m.scriptStep("start_prim", "ALONE", action),
		doStep(func() { m.enter(core.Alone, core.Ready, "start_prim done: application serving") }))
	m.start("go ALONE", steps...)
}

func (m *Machine) primToAlone(cause string) {
	m.start("PRIM to ALONE", doStep(func() {
		m.persist(func(p *Persistent) { m.forkAlone(p) })
		m.ensureRepl(ReplNone)
		m.stallSince, m.degrading = time.Time{}, false
		m.enter(core.Alone, core.Ready, cause)
	}))
}

func (m *Machine) toPrim() {
	m.start("ALONE to PRIM", doStep(func() {
		m.persist(func(p *Persistent) {
			p.Role, p.Shared, p.Forced, p.LastInSync = core.Prim, true, false, m.now
		})
		how := "replication is synchronous"
		if m.cfg.Async {
			how = "replication is asynchronous: a failover may lose the latest acknowledged writes (max_lag)"
		}
		m.enter(core.Prim, core.Ready, fmt.Sprintf("%s is SECOND and in sync: %s", m.cfg.Peer, how))
		if m.cfg.DefaultPrimary == m.cfg.Peer {
			m.swap(fmt.Sprintf("default_primary is %s: swapping back after the resync", m.cfg.Peer))
		}
	}))
}

// becomeSecond makes this node the SECOND of its serving peer, stepping
// down first if it serves.
func (m *Machine) becomeSecond(why string, full, quarantine bool) {
	from := m.state
	resync := doStep(func() {
		m.yield, m.yieldFull, m.inSyncAtLoss = false, false, false
		m.startResync(full, quarantine, why)
	})
	switch {
	case from == core.Second:
		m.start("resync", doStep(func() { m.enter(core.Second, core.Transient, why) }), resync)
	case from.Serving():
		m.start("step down to SECOND",
			doStep(func() {
				// The VIP goes first: the peer already serves.
				m.emit(core.UnsetVIP{})
				m.persist(func(p *Persistent) { p.Role = core.Second })
				m.ensureRepl(ReplNone)
				m.stallSince, m.degrading = time.Time{}, false
				m.enter(core.Second, core.Transient, why)
			}),
			step{script: "stop_prim", args: []string{from.String(), "SECOND", "stepdown"}},
			step{script: "start_second", args: []string{from.String(), "SECOND", "resync"}},
			resync)
	default:
		m.start("join as SECOND",
			doStep(func() {
				m.persist(func(p *Persistent) { p.Role = core.Second })
				m.enter(core.Second, core.Transient, why)
			}),
			step{script: "start_second", args: []string{from.String(), "SECOND", "resync"}},
			resync)
	}
}

// toWait stops the application (if it runs) and holds the node in WAIT.
func (m *Machine) toWait(reason string, admin bool) {
	from := m.state
	var steps []step
	switch {
	case from.Serving():
		steps = append(steps, m.scriptStep("stop_prim", "WAIT", "wait"), doStep(func() { m.emit(core.UnsetVIP{}) }))
	case from == core.Second:
		steps = append(steps, m.scriptStep("stop_second", "WAIT", "wait"))
	}
	steps = append(steps, doStep(func() {
		m.ensureRepl(ReplNone)
		m.resync, m.handover = nil, false
		m.stallSince, m.degrading = time.Time{}, false
		m.enter(core.Wait, core.NotReady, reason)
		m.admin = admin
	}))
	m.start("go WAIT", steps...)
}

// stopModule stops the module on this node. stopped is persisted (no start
// at boot); thenStart starts it again afterwards (stopstart).
func (m *Machine) stopModule(cause, action string, stopped, force, thenStart bool) {
	m.heldPrim = nil
	from := m.state
	args := []string{from.String(), "STOP", action}
	var steps []step
	switch {
	case from.Serving():
		steps = append(steps, step{script: "stop_prim", args: args, force: force}, doStep(func() { m.emit(core.UnsetVIP{}) }))
	case from == core.Second:
		steps = append(steps, step{script: "stop_second", args: args, force: force})
	}
	if from != core.Stop {
		steps = append(steps, step{script: "poststop", args: args})
	}
	steps = append(steps, doStep(func() {
		m.ensureRepl(ReplNone)
		m.resync, m.handover, m.yield, m.inSyncAtLoss = nil, false, false, false
		m.witness = witnessState{}
		m.stallSince, m.degrading = time.Time{}, false
		if m.p.Stopped != stopped {
			m.persist(func(p *Persistent) { p.Stopped = stopped })
		}
		m.enter(core.Stop, core.NotReady, cause)
	}))
	if thenStart {
		// Stopping a PRIM whose SECOND is in sync hands the application
		// over: come back as its SECOND rather than take it back.
		handOver := from == core.Prim && m.canSwap()
		steps = append(steps, doStep(func() {
			m.startModule("stopstart: starting again")
			if handOver {
				m.yield, m.yieldAuto = true, true
				m.yieldWhy = fmt.Sprintf("stopstart of the PRIM hands the application over to %s", m.cfg.Peer)
			}
		}))
	}
	m.start("stop", steps...)
}

func (m *Machine) startModule(cause string) {
	m.start("start",
		doStep(func() {
			if m.p.Stopped {
				m.persist(func(p *Persistent) { p.Stopped = false })
			}
			if !m.peerAlive {
				m.graceUntil = m.now.Add(m.cfg.HeartbeatTimeout)
			}
			m.enter(core.Wait, core.Transient, cause)
		}),
		step{script: "prestart", args: []string{"STOP", "WAIT", "start"}})
}

// restartApp restarts the application in place (checker action restart,
// halo restart).
func (m *Machine) restartApp(cause string) {
	s := m.state
	stop, start := "stop_second", "start_second"
	if s.Serving() {
		stop, start = "stop_prim", "start_prim"
	}
	m.start("restart",
		doStep(func() { m.enter(s, core.Transient, cause) }),
		m.scriptStep(stop, s.String(), "restart"),
		m.scriptStep(start, s.String(), "restart"),
		doStep(func() { m.enter(s, m.settledReadiness(), "application restarted") }))
}

// settledReadiness is the readiness of the current state once no script
// runs (a resync may have started or ended meanwhile).
func (m *Machine) settledReadiness() core.Readiness {
	switch {
	case m.state != core.Second:
		return core.Ready
	case m.resync != nil:
		return core.Transient
	case m.p.Inconsistent || m.p.Outdated:
		return core.NotReady
	}
	return core.Ready
}

func (m *Machine) canSwap() bool {
	return m.state == core.Prim && m.ready == core.Ready && m.peerAlive &&
		m.peer.State == core.Second && m.peer.Readiness == core.Ready && !m.peer.Inconsistent && !m.peer.Outdated &&
		journal.Compare(m.p.Gen, m.peer.Gen) == journal.Same
}

// swap hands the application over to the SECOND: stop it here first, then
// tell the peer.
func (m *Machine) swap(cause string) {
	m.start("swap",
		doStep(func() { m.enter(core.Prim, core.Transient, cause) }),
		m.scriptStep("stop_prim", "SECOND", "swap"),
		doStep(func() {
			m.emit(core.UnsetVIP{})
			m.persist(func(p *Persistent) { p.Role = core.Second })
			m.ensureRepl(ReplTarget)
			m.handover = true
			m.enter(core.Second, core.Transient, fmt.Sprintf("swap: application stopped, %s takes over", m.cfg.Peer))
			m.sendPeer(MsgHandover)
		}),
		m.scriptStep("start_second", "SECOND", "swap"),
		doStep(func() { m.enter(core.Second, core.Ready, "swap: secondary started") }))
}

// takeOver: the peer handed over in a swap. This node serves ALONE, in a
// new generation, until the peer has resynced (incrementally: nothing but
// what changed since the handover) and is SECOND in sync again; only then
// PRIM. The replication layer has no live stream to the peer before such a
// resync: a write acknowledged meanwhile is on this node alone, and the
// peer, were this node to die, must not believe itself up to date (it
// stays inconsistent until its resync ends, and does not take over).
//
// It serves replication from the moment it serves, so that the peer's
// resync, asked as soon as it sees the new generation, finds a source.
func (m *Machine) takeOver(cause string) {
	m.start("take over",
		m.scriptStep("stop_second", "ALONE", "swap"),
		doStep(func() {
			if !m.peerAlive || m.peer.State.Serving() {
				m.abandonTakeover(core.Second)
				return
			}
			m.persist(func(p *Persistent) {
				m.forkAlone(p)
				// The peer resyncs from this generation at once: serving
				// without it later must fork (see reconcileAlone).
				p.Shared = true
				p.Stopped, p.Outdated, p.Inconsistent = false, false, false
			})
			m.ensureRepl(ReplSource)
			m.yield, m.inSyncAtLoss, m.handover = false, false, false
			m.enter(core.Alone, core.Transient, cause)
			m.basis = BasisNewest
			m.emit(core.SetVIP{})
		}),
		m.scriptStep("start_prim", "ALONE", "swap"),
		doStep(func() { m.enter(core.Alone, core.Ready, "start_prim done: application serving") }))
}

func (m *Machine) sendPeer(kind MessageKind) {
	m.emit(SendPeer{Msg: Message{From: m.cfg.Node, Kind: kind, Gen: m.p.Gen.Clone(), Status: m.Heartbeat()}})
}

func (m *Machine) onMessage(msg Message) {
	if msg.From != m.cfg.Peer {
		m.logf("warn", "%s message from unknown node %q ignored", msg.Kind, msg.From)
		return
	}
	if msg.Status.Node == m.cfg.Peer && msg.Status.after(m.peer) {
		m.setPeer(msg.Status)
	}
	switch msg.Kind {
	case MsgSwapRequest:
		if m.plan != nil || !m.canSwap() {
			m.logf("warn", "swap requested by %s ignored: %s is %s/%s and %s %s/%s", m.cfg.Peer, m.cfg.Node, m.state, m.ready, m.cfg.Peer, m.peer.State, m.peer.Readiness)
			return
		}
		m.swap(fmt.Sprintf("halo swap (requested by %s): stopping the application", m.cfg.Peer))
	case MsgHandover, MsgOutdate:
		// The status it carries (Handover or Degrading set) is what
		// reconcileSecond acts on.
	default:
		m.logf("warn", "unknown message %v from %s ignored", msg.Kind, msg.From)
	}
}
