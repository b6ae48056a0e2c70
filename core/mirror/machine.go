package mirror

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/journal"
)

// netState is what this node knows of one heartbeat network.
type netState struct {
	name     string
	seen     bool // a heartbeat was received on it since the machine started
	up       bool
	lastSeen time.Time
}

// step is one step of a plan: an immediate function, or a script run whose
// ScriptDone the plan awaits.
type step struct {
	do     func()
	script string
	args   []string
	force  bool
}

// plan is a transition in progress. Only one runs at a time; decisions are
// taken again when it ends.
type plan struct {
	what   string
	steps  []step
	wait   uint64 // ScriptDone ID awaited, 0 if none
	script string
	args   []string
	forced bool
}

type resyncState struct {
	id         uint64
	source     journal.Generation
	full       bool
	quarantine bool
	done       int64
	total      int64
}

type witnessState struct {
	pending bool
	okAt    time.Time // last time the witness answered
	down    bool      // unreachable after the peer was lost: latched until the peer is seen
	msg     string
}

type checker struct {
	spec   core.CheckerSpec
	status core.CheckStatus
	msg    string
	// armed: the next down report may trigger the action. Disarmed when the
	// action starts; re-armed by the first report received while no
	// transition runs, so a restart that did not help triggers again (and
	// counts toward max_loop) while stale reports do not.
	armed bool
}

// Machine is the state machine of one node of a mirror module.
type Machine struct {
	cfg Config
	p   Persistent
	out []core.Action

	now      time.Time
	boot     time.Time // first event: this machine's incarnation
	lastTick time.Time
	pausedAt time.Time

	state  core.State
	ready  core.Readiness
	reason string
	admin  bool
	basis  Basis
	since  time.Time
	// settled is when the last plan ended: a checker result from a check
	// that began before it describes the situation the plan changed.
	settled time.Time

	nets       []*netState
	peer       PeerStatus
	peerKnown  bool
	peerAlive  bool
	peerHeard  time.Time
	peerLostAt time.Time
	lostCause  string
	graceUntil time.Time

	plan    *plan
	nextID  uint64
	hbSeq   uint64
	pending *core.Command // stop asked while a plan runs

	repl          ReplRole
	resync        *resyncState
	resyncRetryAt time.Time
	stallSince    time.Time // replication not acknowledged since
	stallReported time.Time // when the replication layer said so
	// replReported: the replication layer reported its readiness
	// (Config.ReplReadiness); replProblem is why it cannot serve the
	// directories ("" = it can).
	replReported bool
	replProblem  string
	// heldPrim: prim or primforce received before the replication layer
	// first reported; run again once it did.
	heldPrim *core.Command

	// Elections between two nodes that see each other (see
	// PeerStatus.Candidate): the highest term seen, this node's candidacy,
	// and the last vote it gave.
	term      uint64
	candidate uint64
	voted     uint64
	votedFor  string

	witness  witnessState
	checkers []*checker
	loops    core.LoopCounter

	yield     bool   // `halo second`, or a stopstart of a PRIM: let the peer serve
	yieldWhy  string // for the event log and the peer
	yieldAuto bool   // the yield comes from a stopstart, not from halo second
	yieldFull bool
	handover  bool // we handed over in a swap
	degrading bool // stalled: waiting for the peer to mark its data outdated
	// inSyncAtLoss: this node was SECOND in sync when its peer vanished and
	// it went WAIT only because of failover off or the witness.
	inSyncAtLoss bool
	noted        map[string]bool
}

// New returns the machine of a node, from its persistent state (zero for a
// new module). The module starts in STOP; the agent sends a start command at
// boot unless p.Stopped.
func New(cfg Config, p Persistent) *Machine {
	cfg.applyDefaults()
	m := &Machine{cfg: cfg, p: p.Clone(), state: core.Stop, reason: "module not started", noted: map[string]bool{}}
	for _, n := range cfg.Networks {
		m.nets = append(m.nets, &netState{name: n})
	}
	for _, spec := range cfg.Checkers {
		m.checkers = append(m.checkers, &checker{spec: spec, armed: true})
	}
	m.loops = core.LoopCounter{Max: cfg.MaxLoop, Interval: cfg.LoopInterval}
	m.loops.Restore(p.LoopTimes)
	if p.Stopped {
		m.reason = "module stopped by the administrator"
	}
	return m
}

// ShouldStartAtBoot reports whether the agent should start the module when
// it starts.
func (m *Machine) ShouldStartAtBoot() bool { return !m.p.Stopped }

// Persistent returns a copy of the current persistent state.
func (m *Machine) Persistent() Persistent { return m.p.Clone() }

// Step feeds one event and returns the actions to execute, in order.
func (m *Machine) Step(ev core.Event) []core.Action {
	m.out = nil
	switch e := ev.(type) {
	case core.Tick:
		m.advance(e.Now)
		m.onTick()
	case PeerHeartbeat:
		m.advance(e.At)
		m.onHeartbeat(e)
	case HeartbeatLost:
		m.advance(e.At)
		if n := m.net(e.Network); n != nil && n.up {
			n.up = false
			m.netsLost([]string{n.name}, "link down")
		}
	case PeerMessage:
		m.advance(e.At)
		m.onMessage(e.Msg)
	case core.Command:
		m.advance(e.At)
		m.onCommand(e)
	case core.ScriptDone:
		m.advance(e.At)
		m.onScriptDone(e)
	case core.CheckerResult:
		m.advance(e.At)
		m.onCheckerResult(e)
	case core.WitnessResult:
		m.advance(e.At)
		m.onWitness(e)
	case ReplStalled:
		m.advance(e.At)
		if m.stallSince.IsZero() {
			m.stallSince, m.stallReported = e.Since, m.now
			m.logf("warn", "replication to %s not acknowledged since %s", m.cfg.Peer, e.Since.Format(time.RFC3339Nano))
		}
	case ReplReady:
		m.advance(e.At)
		m.onReplReady(e)
	case ReplInSync:
		m.advance(e.At)
		if !m.stallSince.IsZero() {
			m.stallSince, m.degrading = time.Time{}, false
			m.logf("info", "replication to %s acknowledged again", m.cfg.Peer)
		}
	case ResyncProgress:
		m.advance(e.At)
		if m.resync != nil && e.ID == m.resync.id {
			m.resync.done, m.resync.total = e.Done, e.Total
		}
	case ResyncDone:
		m.advance(e.At)
		m.onResyncDone(e)
	case ResyncFailed:
		m.advance(e.At)
		m.onResyncFailed(e)
	default:
		m.logf("error", "unknown event %T ignored", ev)
	}
	m.settle()
	out := m.out
	m.out = nil
	return out
}

func (m *Machine) advance(t time.Time) {
	if m.boot.IsZero() {
		m.boot = t
		m.graceUntil = t.Add(m.cfg.HeartbeatTimeout)
		for _, n := range m.nets {
			n.lastSeen = t
		}
	}
	if t.After(m.now) {
		m.now = t
	}
	if !m.lastTick.IsZero() && m.now.Sub(m.lastTick) > m.pauseThreshold() {
		m.paused()
	}
}

// paused handles a gap in ticks: this process did not run for a while
// (SIGSTOP, VM pause, swap storm). Heartbeats that arrived meanwhile wait in
// socket buffers and describe the peer as it was: judging the peer on old
// timestamps would make a frozen PRIM go ALONE beside the node that took
// over, and acting on old statuses could promote it. Heartbeat timers
// restart from now, and reconcile promotes nothing until a heartbeat
// received after the pause.
func (m *Machine) paused() {
	m.logf("warn", "no tick for %v: this node was paused; heartbeat timers restarted", m.now.Sub(m.lastTick).Round(time.Millisecond))
	for _, n := range m.nets {
		n.lastSeen = m.now
	}
	m.pausedAt, m.lastTick = m.now, m.now
	if !m.peerAlive && m.graceUntil.Before(m.now.Add(m.cfg.HeartbeatTimeout)) {
		m.graceUntil = m.now.Add(m.cfg.HeartbeatTimeout)
	}
}

// settle runs the current plan as far as it goes, then takes decisions until
// one starts a plan that must wait or nothing more is to be done.
func (m *Machine) settle() {
	for range 16 {
		m.runPlan()
		if m.plan != nil {
			return
		}
		if m.pending != nil {
			c := *m.pending
			m.pending = nil
			m.onCommand(c)
			continue
		}
		if m.heldPrim != nil && m.replReported {
			c := *m.heldPrim
			m.heldPrim = nil
			m.onCommand(c)
			continue
		}
		if !m.reconcile() {
			return
		}
	}
	m.logf("error", "decision loop did not settle; waiting for the next event")
}

func (m *Machine) emit(a core.Action) { m.out = append(m.out, a) }

func (m *Machine) logf(level, format string, args ...any) {
	m.emit(core.Log{Level: level, Text: fmt.Sprintf(format, args...)})
}

// noteOnce logs a line once per state: conditions re-evaluated on every
// event must not flood the event log.
func (m *Machine) noteOnce(level, text string) {
	if m.noted[text] {
		return
	}
	m.noted[text] = true
	m.logf(level, "%s", text)
}

func (m *Machine) persist(change func(p *Persistent)) {
	change(&m.p)
	m.emit(core.Persist{Data: m.p.Clone()})
}

// enter announces a state change with its cause.
func (m *Machine) enter(s core.State, r core.Readiness, cause string) {
	if s != m.state {
		m.since = m.now
		m.candidate = 0 // a candidacy is for the situation it was made in
		m.noted = map[string]bool{}
		m.admin = false
		if !s.Serving() {
			m.basis = BasisNone
		}
	}
	m.state, m.ready, m.reason = s, r, cause
	m.emit(core.EnterState{State: s, Readiness: r, Cause: cause})
}

// setReason updates the reason of a WAIT without a state change.
func (m *Machine) setReason(reason string, admin bool) {
	if m.reason == reason && m.admin == admin {
		return
	}
	m.reason, m.admin = reason, admin
	if m.ready != core.NotReady {
		m.enter(m.state, core.NotReady, reason)
		m.admin = admin
		return
	}
	m.logf("info", "%s: %s", m.state, reason)
}

// ---- plans ----

func (m *Machine) start(what string, steps ...step) {
	m.plan = &plan{what: what, steps: steps}
}

func doStep(f func()) step { return step{do: f} }

func (m *Machine) scriptStep(script, next, action string) step {
	return step{script: script, args: []string{m.state.String(), next, action}}
}

func (m *Machine) runPlan() {
	for m.plan != nil && m.plan.wait == 0 {
		p := m.plan
		if len(p.steps) == 0 {
			m.plan = nil
			m.settled = m.now
			return
		}
		s := p.steps[0]
		p.steps = p.steps[1:]
		if s.do != nil {
			s.do()
			continue
		}
		m.runScript(p, s.script, s.args, s.force)
	}
}

func (m *Machine) runScript(p *plan, script string, args []string, force bool) {
	m.nextID++
	p.wait, p.script, p.args, p.forced = m.nextID, script, args, force
	m.emit(core.RunScript{ID: m.nextID, Script: script, Args: args, Force: force})
}

func isStopScript(s string) bool { return strings.HasPrefix(s, "stop_") }

func (m *Machine) onScriptDone(e core.ScriptDone) {
	p := m.plan
	if p == nil || e.ID != p.wait {
		m.logf("info", "result of abandoned script run %d ignored", e.ID)
		return
	}
	p.wait = 0
	if e.Outcome == core.ScriptOK {
		return
	}
	detail := e.Outcome.String()
	if e.Message != "" {
		detail += ": " + e.Message
	}
	switch {
	case isStopScript(p.script) && !p.forced:
		m.logf("warn", "%s %s; running it again with force", p.script, detail)
		m.runScript(p, p.script, p.args, true)
	case isStopScript(p.script) || p.script == "poststop":
		// The forced run is the last resort (the script plugin kills what
		// is left); going on is better than staying half-stopped forever.
		m.logf("error", "%s %s; going on", p.script, detail)
	default:
		m.plan = nil
		m.startFailed(p.script, detail)
	}
}

// startFailed stops the module here after a start script failed: a peer in
// sync takes over when it sees this node stopped.
func (m *Machine) startFailed(script, detail string) {
	cause := fmt.Sprintf("%s did not succeed on %s (%s): module stopped here; fix the application and run halo start", script, m.cfg.Node, detail)
	m.stopModule(cause, "stop", true, false, false)
}

// ---- heartbeats ----

func (m *Machine) net(name string) *netState {
	for _, n := range m.nets {
		if n.name == name {
			return n
		}
	}
	m.logf("warn", "heartbeat on unknown network %q ignored", name)
	return nil
}

func (m *Machine) onHeartbeat(e PeerHeartbeat) {
	if e.Peer.Node != m.cfg.Peer {
		m.logf("warn", "heartbeat from unknown node %q on %s ignored", e.Peer.Node, e.Network)
		return
	}
	n := m.net(e.Network)
	if n == nil {
		return
	}
	if !n.up && n.seen {
		m.logf("info", "heartbeat from %s restored on network %s", m.cfg.Peer, n.name)
	}
	n.up, n.seen, n.lastSeen = true, true, m.now
	m.peerHeard = m.now
	if !m.peerKnown || e.Peer.after(m.peer) {
		m.setPeer(e.Peer)
	}
	if !m.peerAlive {
		m.peerAlive, m.peerKnown = true, true
		m.witness = witnessState{}
		m.logf("info", "peer %s visible (%s/%s) on network %s", m.cfg.Peer, m.peer.State, m.peer.Readiness, n.name)
	}
}

// setPeer records a newer status of the peer, and persists what must
// survive a restart when it changed.
func (m *Machine) setPeer(s PeerStatus) {
	m.peer = s
	m.peer.Gen = s.Gen.Clone()
	pd := m.p.Peer
	if !pd.Gen.Equal(s.Gen) || pd.Forced != s.Forced || !pd.AloneSince.Equal(s.AloneSince) {
		m.persist(func(p *Persistent) {
			p.Peer = PeerData{Gen: s.Gen.Clone(), Forced: s.Forced, AloneSince: s.AloneSince}
		})
	}
}

func (m *Machine) pauseThreshold() time.Duration { return m.cfg.HeartbeatTimeout / 2 }

func (m *Machine) onTick() {
	m.lastTick = m.now
	var lost []string
	for _, n := range m.nets {
		if n.up && m.now.Sub(n.lastSeen) > m.cfg.HeartbeatTimeout {
			n.up = false
			lost = append(lost, n.name)
		}
	}
	if len(lost) > 0 {
		m.netsLost(lost, fmt.Sprintf("no heartbeat for %v", m.cfg.HeartbeatTimeout))
	}
}

// netsLost handles networks that just went down.
func (m *Machine) netsLost(names []string, why string) {
	var up []string
	for _, n := range m.nets {
		if n.up {
			up = append(up, n.name)
		}
	}
	if len(up) > 0 {
		for _, name := range names {
			m.logf("warn", "heartbeat from %s lost on network %s (%s); still visible on %s", m.cfg.Peer, name, why, strings.Join(up, ", "))
		}
		return
	}
	if !m.peerAlive {
		return
	}
	m.peerAlive = false
	m.candidate = 0
	m.peerLostAt = m.now
	var all []string
	for _, n := range m.nets {
		all = append(all, n.name)
	}
	m.lostCause = fmt.Sprintf("peer %s lost on all networks (%s): %s", m.cfg.Peer, strings.Join(all, ", "), why)
	m.logf("warn", "%s", m.lostCause)
}

// inGrace: just started and no heartbeat yet; give the peer one timeout to
// show up before deciding it is absent.
func (m *Machine) inGrace() bool { return !m.peerAlive && m.now.Before(m.graceUntil) }

// peerFresh: the last peer status was received after this node last paused
// (strictly after: statuses read at once on resuming were buffered during
// the pause and may be old).
func (m *Machine) peerFresh() bool { return m.peerAlive && m.peerHeard.After(m.pausedAt) }

// ---- witness ----

func (m *Machine) askWitness() {
	if m.witness.pending {
		return
	}
	m.witness.pending = true
	m.logf("info", "checking the split-brain witness before serving without %s", m.cfg.Peer)
	m.emit(core.CheckWitness{})
}

func (m *Machine) onWitness(e core.WitnessResult) {
	if !m.witness.pending {
		return
	}
	m.witness.pending = false
	if e.Reachable {
		m.witness.okAt, m.witness.down = m.now, false
		m.logf("info", "split-brain witness reachable")
		return
	}
	m.witness.down, m.witness.msg = true, e.Message
	m.logf("warn", "split-brain witness unreachable: %s", e.Message)
}

// witnessOK: the witness answered after the peer was last lost (or after
// this machine started, if the peer was never seen).
func (m *Machine) witnessOK() bool {
	ref := m.peerLostAt
	if ref.IsZero() || ref.Before(m.boot) {
		ref = m.boot
	}
	return !m.witness.okAt.IsZero() && !m.witness.okAt.Before(ref)
}

func (m *Machine) witnessReason() string {
	msg := m.witness.msg
	if msg == "" {
		msg = "no answer"
	}
	return fmt.Sprintf("split-brain witness unreachable (%s) while %s is lost: not serving to avoid a split brain; run halo prim here if %s is really down", msg, m.cfg.Peer, m.cfg.Peer)
}

// ---- replication ----

func (m *Machine) ensureRepl(r ReplRole) {
	if m.repl == r {
		return
	}
	if m.repl != ReplNone {
		m.emit(StopReplication{})
	}
	m.repl = r
	if r != ReplNone {
		m.emit(StartReplication{Role: r, Peer: m.cfg.Peer})
	}
}

func (m *Machine) startResync(full, quarantine bool, why string) {
	m.nextID++
	src := m.peer.Gen.Clone()
	m.resync = &resyncState{id: m.nextID, source: src, full: full, quarantine: quarantine}
	m.resyncRetryAt = time.Time{}
	m.persist(func(p *Persistent) {
		// A resync target gives up its own data, forced or not.
		p.Inconsistent, p.ResyncFull, p.Role, p.Forced = true, full, core.Second, false
	})
	m.ensureRepl(ReplTarget)
	kind := "incremental"
	if full {
		kind = "full"
	}
	if quarantine {
		kind += ", divergent files quarantined first"
	}
	m.logf("info", "resync from %s (%s): %s", m.cfg.Peer, kind, why)
	m.emit(StartResync{ID: m.nextID, Peer: m.cfg.Peer, Full: full, Quarantine: quarantine,
		Source: src, Since: journal.CommonAncestor(m.p.Gen, src)})
}

func (m *Machine) onResyncDone(e ResyncDone) {
	if m.resync == nil || e.ID != m.resync.id {
		m.logf("info", "result of abandoned resync %d ignored", e.ID)
		return
	}
	rs := m.resync
	m.resync = nil
	m.persist(func(p *Persistent) {
		p.Gen = rs.source.Clone()
		p.Shared, p.Inconsistent, p.ResyncFull, p.Outdated = true, false, false, false
		p.LastInSync = m.now
	})
	m.enter(core.Second, core.Ready, fmt.Sprintf("resync from %s complete: data up to date (generation %v)", m.cfg.Peer, rs.source))
}

func (m *Machine) onResyncFailed(e ResyncFailed) {
	if m.resync == nil || e.ID != m.resync.id {
		m.logf("info", "failure of abandoned resync %d ignored", e.ID)
		return
	}
	m.resync = nil
	m.resyncRetryAt = m.now.Add(m.cfg.ResyncRetry)
	m.enter(core.Second, core.NotReady, fmt.Sprintf("resync from %s failed (%s): data inconsistent; retrying in %v", m.cfg.Peer, e.Reason, m.cfg.ResyncRetry))
}

// onReplReady records the replication layer's readiness.
func (m *Machine) onReplReady(e ReplReady) {
	if m.replReported && e.Problem == m.replProblem {
		return
	}
	was := m.replReported && m.replProblem != ""
	m.replReported, m.replProblem = true, e.Problem
	switch {
	case e.Problem != "":
		level := "error"
		if m.state.Serving() {
			// must_exist is checked before a start: the application
			// that runs goes on.
			level = "warn"
		}
		m.logf(level, "replicated directories not usable on %s: %s", m.cfg.Node, e.Problem)
	case was:
		m.logf("info", "replicated directories usable again on %s", m.cfg.Node)
	}
}

// replBlocker tells why the replication layer keeps this node from
// serving or becoming SECOND ("" if nothing does), and whether an
// administrator must act.
func (m *Machine) replBlocker() (string, bool) {
	switch {
	case !m.cfg.ReplReadiness:
		return "", false
	case !m.replReported:
		return fmt.Sprintf("waiting for the replication layer of %s to check its directories", m.cfg.Node), false
	case m.replProblem != "":
		return fmt.Sprintf("replicated directories not usable on %s: %s", m.cfg.Node, m.replProblem), true
	}
	return "", false
}

// ---- status ----

// canServe tells whether this node could serve now if elected, if not why,
// and whether only an administrator can change that.
func (m *Machine) canServe() (ok bool, blocker string, admin bool) {
	switch {
	case m.state == core.Stop:
		return false, fmt.Sprintf("module stopped on %s (halo start)", m.cfg.Node), true
	case m.p.Inconsistent:
		return false, fmt.Sprintf("data on %s is inconsistent (resync interrupted)", m.cfg.Node), false
	case m.p.Outdated:
		return false, fmt.Sprintf("data on %s is outdated (%s continued without it)", m.cfg.Node, m.cfg.Peer), false
	case m.yield:
		// Waits for the peer to serve; if it cannot, only halo prim here
		// undoes the yield.
		return false, m.yieldWhy, true
	case m.failoverOff() && m.p.Role != core.Alone && m.p.Role != core.Prim:
		return false, fmt.Sprintf("failover is off on %s: only halo prim promotes it", m.cfg.Node), true
	}
	if c := m.forbidder(core.Alone); c != nil {
		return false, m.checkerReason(c), false
	}
	if why, admin := m.replBlocker(); why != "" && !m.state.Serving() {
		return false, why, admin
	}
	return true, "", false
}

func (m *Machine) self() PeerStatus {
	can, blocker, blockerAdmin := m.canServe()
	s := PeerStatus{
		Node: m.cfg.Node, Incarnation: m.boot.UnixNano(), Seq: m.hbSeq,
		State: m.state, Readiness: m.ready, Gen: m.p.Gen.Clone(), Role: m.p.Role,
		Inconsistent: m.p.Inconsistent, Outdated: m.p.Outdated, Forced: m.p.Forced,
		Degrading: m.degrading,
		CanServe:  can, Blocker: blocker, BlockerNeedsAdmin: blockerAdmin,
		Yield: m.yield, Handover: m.handover,
		AloneSince: m.p.AloneSince,
		Candidate:  m.candidate, VoteFor: m.votedFor, VoteTerm: m.voted,
	}
	return s
}

// Heartbeat returns the status to send to the peer now. Each call takes a
// new sequence number.
func (m *Machine) Heartbeat() PeerStatus {
	m.hbSeq++
	return m.self()
}

// State returns the current state and readiness.
func (m *Machine) State() (core.State, core.Readiness) { return m.state, m.ready }

// PeerVisible reports whether the peer's heartbeats arrive on some network.
func (m *Machine) PeerVisible() bool { return m.peerAlive }

// Basis returns why a serving node serves.
func (m *Machine) Basis() Basis { return m.basis }

// Reason returns why the node is in its state, and whether only an
// administrator can change it (a cheap part of Status).
func (m *Machine) Reason() (string, bool) { return m.reason, m.admin }

// Status returns the node's view for the API and the console.
func (m *Machine) Status() Status {
	res := map[string]string{}
	for _, c := range m.checkers {
		v := c.status.String()
		if off, why := m.suspended(c); off {
			v += " (suspended: " + why + ")"
		}
		res["checker."+c.spec.Name] = v
	}
	for _, n := range m.nets {
		switch {
		case n.up:
			res["heartbeat."+n.name] = "up"
		case n.seen:
			res["heartbeat."+n.name] = "down"
		default:
			res["heartbeat."+n.name] = "unknown"
		}
	}
	upToDate := m.state.Serving() || (m.state == core.Second && m.ready == core.Ready && !m.p.Inconsistent && !m.p.Outdated)
	res["replication.uptodate"] = fmt.Sprint(upToDate)
	res["replication.role"] = m.repl.String()
	res["replication.inconsistent"] = fmt.Sprint(m.p.Inconsistent)
	res["replication.outdated"] = fmt.Sprint(m.p.Outdated)
	if m.resync != nil {
		res["replication.resync"] = fmt.Sprintf("%d/%d", m.resync.done, m.resync.total)
	}
	if m.cfg.ReplReadiness {
		switch {
		case !m.replReported:
			res["replication.ready"] = "unknown"
		case m.replProblem != "":
			res["replication.ready"] = "no: " + m.replProblem
		default:
			res["replication.ready"] = "yes"
		}
	}
	if !m.stallSince.IsZero() {
		res["replication.stalled_since"] = m.stallSince.Format(time.RFC3339Nano)
	}
	res["generation"] = m.p.Gen.String()
	res["failover"] = map[bool]string{true: "off", false: "on"}[m.failoverOff()]
	res["loop"] = fmt.Sprintf("%d/%d", m.loops.Count(), m.cfg.MaxLoop)
	if m.peerAlive {
		res["peer"] = fmt.Sprintf("%s/%s", m.peer.State, m.peer.Readiness)
	} else {
		res["peer"] = "lost"
	}
	return Status{
		Node: m.cfg.Node, State: m.state, Readiness: m.ready, Since: m.since,
		Reason: m.reason, NeedsAdmin: m.admin, Basis: m.basis,
		Gen: m.p.Gen.Clone(), PeerVisible: m.peerAlive, Peer: m.peer, Resources: res,
	}
}

func (m *Machine) failoverOff() bool { return m.p.FailoverOff || !m.cfg.Failover }

func sortedNames(a, b string) (string, string) {
	s := []string{a, b}
	slices.Sort(s)
	return s[0], s[1]
}
