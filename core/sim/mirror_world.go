// The mirror part of the simulator (files mirror*.go) drives two
// mirror.Machines in a simulated world: a fake clock, networks that deliver
// heartbeats with delays and losses, an executor that completes scripts and
// resyncs after delays, and an oracle that knows the true data of every
// node. Everything is deterministic for a given seed. The same world serves
// the transcript tests of core/mirror (fixed delays, faults chosen by the
// transcript) and the seeded simulator (random delays and faults).

package sim

import (
	"container/heap"
	"fmt"
	"slices"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/mirror"
)

// MirrorOptions shapes a MirrorWorld. Zero durations take the defaults of
// DefaultMirrorOptions.
type MirrorOptions struct {
	Config mirror.Config // Node and Peer are set per node
	Nodes  [2]string
	Start  time.Time

	TickEvery      time.Duration
	HeartbeatEvery time.Duration
	// ScriptRun says how long a script run takes and how it ends.
	ScriptRun func(node, script string, force bool) (time.Duration, core.ScriptOutcome)
	// ResyncTime says how long a resync takes.
	ResyncTime func(node string, full bool) time.Duration
	// NetDelay says how long a heartbeat or message takes on a network, and
	// whether it is lost.
	NetDelay     func(network string) (time.Duration, bool)
	WitnessDelay time.Duration
	// StallReport: a replicated write not acknowledged this long is reported
	// as ReplStalled.
	StallReport time.Duration
	// WriteEvery: the application on a serving node writes this often (0 =
	// only on Write calls).
	WriteEvery time.Duration
	// ReplNetwork carries replication and resyncs (default: the last
	// network).
	ReplNetwork string
	// Jitter, if set, returns the next interval of a periodic activity
	// (ticks, heartbeats, writes) of nominal period d.
	Jitter func(d time.Duration) time.Duration
}

// DefaultMirrorOptions are fixed, round timings for transcripts.
func DefaultMirrorOptions(cfg mirror.Config) MirrorOptions {
	return MirrorOptions{
		Config:         cfg,
		Nodes:          [2]string{"node1", "node2"},
		Start:          time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		TickEvery:      100 * time.Millisecond,
		HeartbeatEvery: 100 * time.Millisecond,
		ScriptRun: func(string, string, bool) (time.Duration, core.ScriptOutcome) {
			return 100 * time.Millisecond, core.ScriptOK
		},
		ResyncTime:   func(string, bool) time.Duration { return 500 * time.Millisecond },
		NetDelay:     func(string) (time.Duration, bool) { return 10 * time.Millisecond, false },
		WitnessDelay: 50 * time.Millisecond,
		StallReport:  200 * time.Millisecond,
	}
}

// MirrorNode is one simulated node: its agent (the machine), its disk and
// what the executor did for it.
type MirrorNode struct {
	Name   string
	idx    int
	M      *mirror.Machine // nil while crashed
	Disk   mirror.Persistent
	Up     bool // agent running
	Frozen bool // agent paused (SIGSTOP): events wait in inbox
	epoch  int  // bumped at each crash: results for an older agent are dropped
	inbox  []core.Event

	State core.State
	Ready core.Readiness
	VIP   bool
	App   string // "", "prim" or "second": which application scripts last started
	Repl  mirror.ReplRole

	WitnessUp bool
	// ReplBlocked: replication from this node is not acknowledged (a stuck
	// replication layer) although heartbeats flow.
	ReplBlocked bool
	// ReplProblem: this node's replicated directories are not usable (a
	// must_exist file missing); the replication layer reports it
	// (mirror.ReplReady) when the agent boots and when it changes, with
	// Config.ReplReadiness.
	ReplProblem string
	// replReported: the last problem the agent read ("" = usable).
	replReported string
	// Hold makes runs of these scripts wait for ReleaseScript; Fail makes
	// the next run of a script end with an outcome.
	Hold map[string]bool
	Fail map[string]core.ScriptOutcome

	// syncMode: this node's replication source had an in-sync target; every
	// change waits for its acknowledgement until the agent stops or
	// restarts replication (the replication layer does not fall back to
	// journaling on its own).
	syncMode bool

	held       []core.RunScript
	resync     *mirror.StartResync
	resyncHeld bool
	stallSince time.Time
	stallSent  bool

	// Head is the last write this node's data holds (see MirrorOracle).
	Head int

	// The last witness answer the agent read, and when.
	witnessAt time.Time
	witnessOK bool
	// lastHeard: when the last heartbeat this agent read was sent, and
	// whether both copies were identical then (what the agent can know
	// of its peer's data).
	lastHeard    heard
	pendingHeard []heard // read when a frozen agent resumes
}

type heard struct {
	at     time.Time
	inSync bool
}

type queued struct {
	at  time.Time
	seq uint64
	fn  func()
}

type eventQueue []*queued

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*queued)) }
func (q *eventQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

// MirrorWorld is two mirror nodes, their networks, executor and oracle.
type MirrorWorld struct {
	opt   MirrorOptions
	now   time.Time
	seq   uint64
	queue eventQueue
	Nodes [2]*MirrorNode
	netUp map[string]bool

	Oracle *MirrorOracle

	// OnEvent and OnAction observe what each machine is fed and returns.
	OnEvent  func(n *MirrorNode, ev core.Event)
	OnAction func(n *MirrorNode, a core.Action)
	// AfterStep runs after each event a machine processed (invariants).
	AfterStep func()
}

// NewMirrorWorld builds a world with both agents down; Boot starts them.
func NewMirrorWorld(opt MirrorOptions) *MirrorWorld {
	def := DefaultMirrorOptions(opt.Config)
	if opt.Nodes[0] == "" {
		opt.Nodes = def.Nodes
	}
	if opt.Start.IsZero() {
		opt.Start = def.Start
	}
	if opt.TickEvery == 0 {
		opt.TickEvery = def.TickEvery
	}
	if opt.HeartbeatEvery == 0 {
		opt.HeartbeatEvery = def.HeartbeatEvery
	}
	if opt.ScriptRun == nil {
		opt.ScriptRun = def.ScriptRun
	}
	if opt.ResyncTime == nil {
		opt.ResyncTime = def.ResyncTime
	}
	if opt.NetDelay == nil {
		opt.NetDelay = def.NetDelay
	}
	if opt.WitnessDelay == 0 {
		opt.WitnessDelay = def.WitnessDelay
	}
	if opt.StallReport == 0 {
		opt.StallReport = def.StallReport
	}
	if len(opt.Config.Networks) == 0 {
		opt.Config.Networks = []string{"default"}
	}
	if opt.ReplNetwork == "" {
		opt.ReplNetwork = opt.Config.Networks[len(opt.Config.Networks)-1]
	}
	w := &MirrorWorld{opt: opt, now: opt.Start, netUp: map[string]bool{}}
	for _, n := range opt.Config.Networks {
		w.netUp[n] = true
	}
	for i, name := range opt.Nodes {
		w.Nodes[i] = &MirrorNode{Name: name, idx: i, State: core.Stop, WitnessUp: true,
			Hold: map[string]bool{}, Fail: map[string]core.ScriptOutcome{}}
	}
	w.Oracle = newMirrorOracle(w)
	for i := range w.Nodes {
		w.every(opt.TickEvery, func() { w.tick(i) })
		w.every(opt.HeartbeatEvery, func() { w.sendHeartbeats(i) })
	}
	if opt.WriteEvery > 0 {
		w.every(opt.WriteEvery, func() {
			for _, n := range w.Nodes {
				w.Write(n)
			}
		})
	}
	return w
}

// Now is the simulated time.
func (w *MirrorWorld) Now() time.Time { return w.now }

// Start is the time the world began.
func (w *MirrorWorld) Start() time.Time { return w.opt.Start }

// Options returns the options in force (defaults filled in).
func (w *MirrorWorld) Options() MirrorOptions { return w.opt }

// Node returns a node by name, nil if unknown.
func (w *MirrorWorld) Node(name string) *MirrorNode {
	for _, n := range w.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func (w *MirrorWorld) peerOf(n *MirrorNode) *MirrorNode { return w.Nodes[1-n.idx] }

// Config returns node n's machine configuration.
func (w *MirrorWorld) Config(n *MirrorNode) mirror.Config {
	cfg := w.opt.Config
	cfg.Node, cfg.Peer = n.Name, w.peerOf(n).Name
	cfg.Networks = slices.Clone(w.opt.Config.Networks)
	return cfg
}

func (w *MirrorWorld) at(t time.Time, fn func()) {
	w.seq++
	heap.Push(&w.queue, &queued{at: t, seq: w.seq, fn: fn})
}

func (w *MirrorWorld) after(d time.Duration, fn func()) { w.at(w.now.Add(d), fn) }

func (w *MirrorWorld) every(d time.Duration, fn func()) {
	next := func() time.Duration {
		if w.opt.Jitter != nil {
			return w.opt.Jitter(d)
		}
		return d
	}
	var again func()
	again = func() {
		fn()
		w.after(next(), again)
	}
	w.after(next(), again)
}

// RunFor advances the world by d, processing everything due.
func (w *MirrorWorld) RunFor(d time.Duration) { w.RunUntil(w.now.Add(d)) }

// RunUntil processes everything due up to t.
func (w *MirrorWorld) RunUntil(t time.Time) {
	for len(w.queue) > 0 && !w.queue[0].at.After(t) {
		it := heap.Pop(&w.queue).(*queued)
		if it.at.After(w.now) {
			w.now = it.at
		}
		it.fn()
	}
	if t.After(w.now) {
		w.now = t
	}
}

// ---- faults and admin actions ----

// Boot starts node n's agent from its disk, and the module unless it was
// stopped by the administrator.
func (w *MirrorWorld) Boot(n *MirrorNode) {
	if n.Up {
		return
	}
	n.Up, n.Frozen, n.inbox = true, false, nil
	n.replReported = ""
	n.M = mirror.New(w.Config(n), n.Disk)
	n.State, n.Ready = core.Stop, core.NotReady
	w.step(n, core.Tick{Now: w.now})
	if n.M.ShouldStartAtBoot() {
		w.step(n, core.Command{At: w.now, Kind: core.CmdStart, Origin: mirror.OriginBoot})
	}
	w.reportRepl(n)
}

// SetReplProblem makes node n's replicated directories unusable (problem
// not "") or usable again; the replication layer reports it.
func (w *MirrorWorld) SetReplProblem(n *MirrorNode, problem string) {
	n.ReplProblem = problem
	w.reportRepl(n)
}

// reportRepl: the replication layer checks the directories shortly after
// it starts (the agent's daemon) and on every change.
func (w *MirrorWorld) reportRepl(n *MirrorNode) {
	if !w.opt.Config.ReplReadiness || !n.Up {
		return // Boot reports
	}
	epoch, problem := n.epoch, n.ReplProblem
	w.after(w.opt.StallReport, func() { w.deliver(n, epoch, mirror.ReplReady{At: w.now, Problem: problem}) })
}

// Crash kills node n's agent and application: volatile state is lost, the
// disk (Persistent and data) stays.
func (w *MirrorWorld) Crash(n *MirrorNode) {
	if !n.Up {
		return
	}
	w.Oracle.losing()
	n.Up, n.Frozen, n.M, n.inbox = false, false, nil, nil
	n.lastHeard, n.pendingHeard = heard{}, nil
	n.epoch++
	n.VIP, n.App, n.Repl = false, "", mirror.ReplNone
	n.held, n.resync, n.resyncHeld = nil, nil, false
	n.stallSince, n.stallSent = time.Time{}, false
	n.State, n.Ready = core.Stop, core.NotReady
	w.Oracle.crashed(n)
}

// Freeze pauses node n's agent; Thaw resumes it and delivers what arrived.
func (w *MirrorWorld) Freeze(n *MirrorNode) {
	if n.Up {
		n.Frozen = true
	}
}

// Thaw resumes a frozen agent.
func (w *MirrorWorld) Thaw(n *MirrorNode) {
	if !n.Up || !n.Frozen {
		return
	}
	n.Frozen = false
	inbox := n.inbox
	n.inbox = nil
	if k := len(n.pendingHeard); k > 0 {
		n.lastHeard = n.pendingHeard[k-1]
		n.pendingHeard = nil
	}
	for _, ev := range inbox {
		if !n.Up || n.Frozen {
			break
		}
		w.step(n, restamp(ev, w.now))
	}
	w.tick(n.idx)
}

// restamp sets an event's time to when the agent reads it.
func restamp(ev core.Event, t time.Time) core.Event {
	switch e := ev.(type) {
	case mirror.PeerHeartbeat:
		e.At = t
		return e
	case mirror.PeerMessage:
		e.At = t
		return e
	case core.ScriptDone:
		e.At = t
		return e
	case core.WitnessResult:
		e.At = t
		return e
	case mirror.ResyncDone:
		e.At = t
		return e
	case mirror.ResyncFailed:
		e.At = t
		return e
	case mirror.ReplStalled:
		e.At = t
		return e
	case mirror.ReplInSync:
		e.At = t
		return e
	case mirror.ReplReady:
		e.At = t
		return e
	case core.CheckerResult:
		e.At = t
		return e
	case core.Command:
		e.At = t
		return e
	}
	return ev
}

// SetNetwork cuts or heals one network ("" = all).
func (w *MirrorWorld) SetNetwork(name string, up bool) {
	for n := range w.netUp {
		if name == "" || n == name {
			w.netUp[n] = up
		}
	}
}

// NetworkUp reports whether a network links the two nodes.
func (w *MirrorWorld) NetworkUp(name string) bool { return w.netUp[name] }

// Command sends an admin command to node n.
func (w *MirrorWorld) Command(n *MirrorNode, c core.Command) {
	c.At = w.now
	if c.Origin == "" {
		c.Origin = "cli"
	}
	w.deliver(n, n.epoch, c)
}

// Checker reports a checker result on node n.
func (w *MirrorWorld) Checker(n *MirrorNode, name string, st core.CheckStatus, msg string) {
	w.deliver(n, n.epoch, core.CheckerResult{At: w.now, Name: name, Status: st, Message: msg})
}

// ReleaseScript completes held runs of script on node n with outcome.
func (w *MirrorWorld) ReleaseScript(n *MirrorNode, script string, outcome core.ScriptOutcome) int {
	count := 0
	keep := n.held[:0]
	for _, rs := range n.held {
		if rs.Script == script {
			w.finishScript(n, n.epoch, rs, outcome)
			count++
			continue
		}
		keep = append(keep, rs)
	}
	n.held = keep
	return count
}

// HoldResync makes node n's resyncs wait for FinishResync.
func (w *MirrorWorld) HoldResync(n *MirrorNode, hold bool) { n.resyncHeld = hold }

// FinishResync ends node n's running resync now.
func (w *MirrorWorld) FinishResync(n *MirrorNode, ok bool, reason string) bool {
	if n.resync == nil {
		return false
	}
	w.completeResync(n, n.epoch, n.resync.ID, ok, reason)
	return true
}

// ---- machine stepping and the executor ----

func (w *MirrorWorld) deliver(n *MirrorNode, epoch int, ev core.Event) {
	if !n.Up || n.epoch != epoch {
		return
	}
	if n.Frozen {
		n.inbox = append(n.inbox, ev)
		return
	}
	w.step(n, ev)
}

func (w *MirrorWorld) step(n *MirrorNode, ev core.Event) {
	if w.OnEvent != nil {
		w.OnEvent(n, ev)
	}
	switch e := ev.(type) {
	case core.WitnessResult:
		n.witnessAt, n.witnessOK = w.now, e.Reachable
	case mirror.ReplReady:
		n.replReported = e.Problem
	}
	acts := n.M.Step(ev)
	for _, a := range acts {
		w.execute(n, a)
	}
	w.Oracle.check()
	if w.AfterStep != nil {
		w.AfterStep()
	}
}

func (w *MirrorWorld) tick(i int) {
	n := w.Nodes[i]
	if n.Up && !n.Frozen {
		w.step(n, core.Tick{Now: w.now})
	}
}

func (w *MirrorWorld) linked() bool {
	for _, up := range w.netUp {
		if up {
			return true
		}
	}
	return false
}

// Visible reports whether the two agents can exchange heartbeats now.
func (w *MirrorWorld) Visible() bool {
	a, b := w.Nodes[0], w.Nodes[1]
	return a.Up && b.Up && !a.Frozen && !b.Frozen && w.linked()
}

func (w *MirrorWorld) sendHeartbeats(i int) {
	n, peer := w.Nodes[i], w.Nodes[1-i]
	if !n.Up || n.Frozen {
		return
	}
	for _, net := range w.opt.Config.Networks {
		if !w.netUp[net] {
			continue
		}
		delay, lost := w.opt.NetDelay(net)
		if lost {
			continue
		}
		st := n.M.Heartbeat()
		epoch := peer.epoch
		sent := heard{at: w.now, inSync: n.Head == peer.Head}
		w.after(delay, func() {
			if w.netUp[net] && peer.Up && peer.epoch == epoch {
				if peer.Frozen {
					peer.pendingHeard = append(peer.pendingHeard, sent)
				} else {
					peer.lastHeard = sent
				}
				w.deliver(peer, epoch, mirror.PeerHeartbeat{At: w.now, Network: net, Peer: st})
			}
		})
	}
}

func (w *MirrorWorld) execute(n *MirrorNode, a core.Action) {
	if w.OnAction != nil {
		w.OnAction(n, a)
	}
	switch a := a.(type) {
	case core.Persist:
		n.Disk = a.Data.(mirror.Persistent).Clone()
	case core.EnterState:
		prev := n.State
		n.State, n.Ready = a.State, a.Readiness
		w.Oracle.entered(n, prev, a)
	case core.RunScript:
		w.runScript(n, a)
	case core.SetVIP:
		n.VIP = true
	case core.UnsetVIP:
		n.VIP = false
	case core.CheckWitness:
		epoch := n.epoch
		w.after(w.opt.WitnessDelay, func() {
			msg := "witness answered"
			if !n.WitnessUp {
				msg = "no answer from the witness"
			}
			w.deliver(n, epoch, core.WitnessResult{At: w.now, Reachable: n.WitnessUp, Message: msg})
		})
	case mirror.StartReplication:
		n.Repl = a.Role
		n.stallSince, n.stallSent, n.syncMode = time.Time{}, false, false
	case mirror.StopReplication:
		n.Repl = mirror.ReplNone
		n.stallSince, n.stallSent, n.syncMode = time.Time{}, false, false
	case mirror.StartResync:
		rs := a
		n.resync = &rs
		w.Oracle.resyncStarted(n)
		if !n.resyncHeld {
			epoch := n.epoch
			w.after(w.opt.ResyncTime(n.Name, a.Full), func() { w.completeResync(n, epoch, rs.ID, true, "") })
		}
	case mirror.SendPeer:
		peer := w.peerOf(n)
		for _, net := range w.opt.Config.Networks {
			if !w.netUp[net] {
				continue
			}
			delay, lost := w.opt.NetDelay(net)
			if lost {
				continue
			}
			epoch := peer.epoch
			msg := a.Msg
			w.after(delay, func() {
				if w.netUp[net] {
					w.deliver(peer, epoch, mirror.PeerMessage{At: w.now, Msg: msg})
				}
			})
			break
		}
	case core.Log, core.Refuse:
	default:
		panic(fmt.Sprintf("sim: %s returned unknown action %T", n.Name, a))
	}
}

func (w *MirrorWorld) runScript(n *MirrorNode, rs core.RunScript) {
	if n.Hold[rs.Script] {
		n.held = append(n.held, rs)
		return
	}
	d, outcome := w.opt.ScriptRun(n.Name, rs.Script, rs.Force)
	if o, ok := n.Fail[rs.Script]; ok {
		outcome = o
		delete(n.Fail, rs.Script)
	}
	epoch := n.epoch
	w.after(d, func() { w.finishScript(n, epoch, rs, outcome) })
}

func (w *MirrorWorld) finishScript(n *MirrorNode, epoch int, rs core.RunScript, outcome core.ScriptOutcome) {
	if !n.Up || n.epoch != epoch {
		return
	}
	// The application follows its scripts; a forced stop always stops it.
	switch {
	case rs.Script == "start_prim" && outcome == core.ScriptOK:
		n.App = "prim"
	case rs.Script == "start_second" && outcome == core.ScriptOK:
		n.App = "second"
	case (rs.Script == "stop_prim" || rs.Script == "stop_second") && (outcome == core.ScriptOK || rs.Force):
		n.App = ""
	}
	msg := ""
	if outcome != core.ScriptOK {
		msg = "exit status 1"
	}
	w.deliver(n, epoch, core.ScriptDone{At: w.now, ID: rs.ID, Outcome: outcome, Message: msg})
}

func (w *MirrorWorld) completeResync(n *MirrorNode, epoch int, id uint64, ok bool, reason string) {
	if !n.Up || n.epoch != epoch || n.resync == nil || n.resync.ID != id {
		return
	}
	src := w.peerOf(n)
	switch {
	case !ok:
	case !src.Up:
		ok, reason = false, src.Name+" is down"
	case !w.netUp[w.opt.ReplNetwork]:
		ok, reason = false, "network "+w.opt.ReplNetwork+" is down"
	case src.Repl != mirror.ReplSource:
		ok, reason = false, src.Name+" does not serve replication"
	}
	rs := *n.resync
	n.resync = nil
	if !ok {
		w.deliver(n, epoch, mirror.ResyncFailed{At: w.now, ID: id, Reason: reason})
		return
	}
	w.Oracle.resynced(n, src, rs)
	src.syncMode = src.Repl == mirror.ReplSource
	w.deliver(n, epoch, mirror.ResyncDone{At: w.now, ID: id})
}

// Write makes the application on node n write once if it serves. A PRIM's
// write needs the SECOND's acknowledgement (synchronous replication); if it
// cannot get it the write blocks and, after StallReport, the replication
// layer reports a stall.
func (w *MirrorWorld) Write(n *MirrorNode) (acked bool) {
	if !n.Up || !n.VIP || n.App != "prim" || !n.State.Serving() {
		return false
	}
	peer := w.peerOf(n)
	if n.Repl == mirror.ReplNone {
		n.stallSince, n.stallSent = time.Time{}, false
		w.Oracle.write(n, nil)
		return true
	}
	// Replication source. A target streams live changes only once its data
	// equals the source's (the replication layer checks generations when
	// they connect); before that, and while it resyncs, changes are
	// journaled and the resync carries them. A PRIM, or an ALONE whose
	// peer is an in-sync target (it turns PRIM a heartbeat later), waits
	// for the peer's acknowledgement of every change.
	target := peer.Up && peer.Repl == mirror.ReplTarget && peer.Head == n.Head &&
		peer.Disk.Gen.Current == n.Disk.Gen.Current
	if target && peer.resync == nil {
		n.syncMode = true
	}
	if target && peer.resync != nil || !target && n.State != core.Prim && !n.syncMode {
		n.stallSince, n.stallSent = time.Time{}, false
		w.Oracle.write(n, nil)
		return true
	}
	if target && w.netUp[w.opt.ReplNetwork] && !n.ReplBlocked {
		if n.stallSent {
			w.deliver(n, n.epoch, mirror.ReplInSync{At: w.now})
		}
		n.stallSince, n.stallSent = time.Time{}, false
		w.Oracle.write(n, peer)
		return true
	}
	if n.stallSince.IsZero() {
		n.stallSince = w.now
	}
	if !n.stallSent && w.now.Sub(n.stallSince) >= w.opt.StallReport {
		n.stallSent = true
		w.deliver(n, n.epoch, mirror.ReplStalled{At: w.now, Since: n.stallSince})
	}
	return false
}
