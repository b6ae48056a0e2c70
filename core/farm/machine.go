package farm

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/halo-ha/halo/core"
)

// Machine is one node's farm (or light) state machine for one module.
type Machine struct {
	cfg      Config
	warnings []string // configuration warnings, logged on the first step
	booted   bool
	now      time.Time

	p         Persistent
	persisted Persistent // last value handed to the caller
	loop      core.LoopCounter

	state   core.State
	ready   core.Readiness
	cause   string
	waitWhy []string // what held WAIT when its cause was last set

	checkers []*checker // in configuration order

	op      *operation    // running script sequence; nil when idle
	pending *core.Command // admin command queued behind op
	lastID  uint64

	members  map[string]member // other nodes as they announce themselves
	holdsVIP bool
	// table is the owner's bucket table: ours while we hold the VIP, else
	// the one the owner announced (the starting point if we take over).
	table        core.BucketTable
	allocatedFor map[string]int    // serving set m.table was allocated for, while we own it
	announced    *core.BucketTable // immutable copy of table handed out by Announce

	out []core.Action // actions of the current step
}

type checker struct {
	spec    core.CheckerSpec
	status  core.CheckStatus
	message string
}

type member struct {
	state   core.State
	ready   core.Readiness
	power   int
	owner   bool
	buckets *core.BucketTable
}

// stateChange is a state entered with its cause.
type stateChange struct {
	state core.State
	ready core.Readiness
	cause string
}

// step is one script run of an operation.
type step struct {
	script   string
	from, to core.State // script arguments: current and next state
	action   string     // script argument: what is happening
	enter    *stateChange
}

// operation is a sequence of script runs, one at a time, ending in done.
type operation struct {
	steps  []step
	i      int
	id     uint64 // the running script
	forced bool   // the running stop script is the forced run
	done   stateChange
}

// New returns the machine of cfg.Node, resuming from p (the zero value for
// a module never run on this node). The machine acts on its first event:
// the caller should join the membership first, so that the first events
// describe the farm as it is and a booting node does not claim a VIP that
// another node holds.
func New(cfg Config, p Persistent) *Machine {
	cfg.Power = clonePower(cfg.Power)
	cfg.Nodes = slices.Clone(cfg.Nodes)
	cfg.Checkers = slices.Clone(cfg.Checkers)
	m := &Machine{
		cfg:       cfg,
		p:         p.clone(),
		persisted: p.clone(),
		state:     core.Stop,
		ready:     core.NotReady,
		members:   make(map[string]member),
	}
	m.warnings = m.cfg.normalize()
	m.loop = core.LoopCounter{Max: m.cfg.MaxLoop, Interval: m.cfg.LoopInterval}
	m.loop.Restore(p.LoopTimes)
	for _, spec := range m.cfg.Checkers {
		m.checkers = append(m.checkers, &checker{spec: spec})
	}
	switch {
	case p.Started:
		m.cause = "agent started: resuming the module"
	case p.LastCause != "":
		m.cause = "agent started; stopped before: " + p.LastCause
	default:
		m.cause = "not started"
	}
	return m
}

func clonePower(p map[string]int) map[string]int {
	c := make(map[string]int, len(p))
	for k, v := range p {
		c[k] = v
	}
	return c
}

// Step feeds one event and returns the actions to execute, in order.
func (m *Machine) Step(ev core.Event) []core.Action {
	m.out = nil
	m.advance(eventTime(ev))
	if !m.booted {
		m.booted = true
		for _, w := range m.warnings {
			m.log("warn", w)
		}
	}
	switch ev := ev.(type) {
	case core.Tick:
	case core.CheckerResult:
		m.onChecker(ev)
	case core.Command:
		m.onCommand(ev)
	case core.ScriptDone:
		m.onScriptDone(ev)
	case core.MemberUp:
		m.onMember(ev.Node, member{ev.State, ev.Readiness, ev.Power, ev.Owner, ev.Buckets}, true)
	case core.MemberUpdate:
		m.onMember(ev.Node, member{ev.State, ev.Readiness, ev.Power, ev.Owner, ev.Buckets}, false)
	case core.MemberDown:
		m.onMemberDown(ev.Node)
	default:
		m.log("warn", fmt.Sprintf("farm: ignoring event %T", ev))
	}
	m.evaluate()
	m.reconcileOwnership()
	return m.flush()
}

func eventTime(ev core.Event) time.Time {
	switch ev := ev.(type) {
	case core.Tick:
		return ev.Now
	case core.CheckerResult:
		return ev.At
	case core.Command:
		return ev.At
	case core.ScriptDone:
		return ev.At
	case core.MemberUp:
		return ev.At
	case core.MemberUpdate:
		return ev.At
	case core.MemberDown:
		return ev.At
	}
	return time.Time{}
}

// advance moves the machine's clock; time never goes back, whatever the
// order in which the caller stamped its events.
func (m *Machine) advance(t time.Time) {
	if t.After(m.now) {
		m.now = t
	}
}

// flush returns the step's actions, with a Persist first when the
// persistent state changed: the caller stores it before running scripts,
// so that a crash never resumes a module an admin (or max_loop) stopped.
func (m *Machine) flush() []core.Action {
	m.p.LastState, m.p.LastCause = m.state, m.cause
	m.p.LoopTimes = m.loop.Times()
	out := m.out
	m.out = nil
	if !m.p.equal(m.persisted) {
		m.persisted = m.p.clone()
		out = append([]core.Action{core.Persist{Data: m.p.clone()}}, out...)
	}
	return out
}

func (m *Machine) emit(a core.Action) { m.out = append(m.out, a) }

func (m *Machine) log(level, text string) { m.emit(core.Log{Level: level, Text: text}) }

func (m *Machine) enter(sc stateChange) {
	if sc.state == m.state && sc.ready == m.ready && sc.cause == m.cause {
		return
	}
	m.state, m.ready, m.cause = sc.state, sc.ready, sc.cause
	m.emit(core.EnterState{State: sc.state, Readiness: sc.ready, Cause: sc.cause})
	// Release the VIP as soon as we leave UP, before any stop script runs.
	m.reconcileOwnership()
}

// ---- checkers ----

func (m *Machine) checker(name string) *checker {
	for _, c := range m.checkers {
		if c.spec.Name == name {
			return c
		}
	}
	return nil
}

func (m *Machine) suspended(c *checker) bool {
	return m.p.AllCheckersOff || slices.Contains(m.p.CheckersOff, c.spec.Name) ||
		(m.p.ErrdOff && c.spec.Type == "errd")
}

// watching reports whether c's action applies while the application runs.
// "prim" means "UP" on a farm (core.When); "second" never holds; "pre" only
// gates the start.
func (m *Machine) watching(c *checker) bool {
	return !m.suspended(c) && (c.spec.When == core.WhenBoth || c.spec.When == core.WhenPrim)
}

func (m *Machine) onChecker(ev core.CheckerResult) {
	c := m.checker(ev.Name)
	if c == nil {
		m.log("warn", fmt.Sprintf("result of unknown checker %s ignored", ev.Name))
		return
	}
	c.status, c.message = ev.Status, ev.Message
	// Restart, stop and stopstart act on each down report while the module
	// is UP Ready: reports during scripts are stale, and a checker still
	// down after a restart reports again on its next run. Wait checkers and
	// pre checkers are levels, handled by evaluate.
	if ev.Status != core.CheckDown || !m.watching(c) || m.op != nil ||
		m.state != core.Up || m.ready != core.Ready || c.spec.Action == core.ActWait {
		return
	}
	m.checkerAction(c)
}

// checkerAction carries out c's action, counting it toward max_loop. Every
// cause it sets begins with "checker <name> down", so that the event log
// (and the simulator's max_loop invariant) can tell checker actions apart.
func (m *Machine) checkerAction(c *checker) {
	what := "checker " + c.spec.Name + " down"
	if c.message != "" {
		what += " (" + c.message + ")"
	}
	if !m.loop.Allow(m.now) {
		m.p.Started = false
		m.stopOp(core.Stop, "stop", false,
			fmt.Sprintf("%s: max_loop reached (%d checker actions within %s, limit %d): stopping; an admin command resets the count",
				what, m.loop.Count(), m.cfg.LoopInterval, m.cfg.MaxLoop),
			fmt.Sprintf("%s: max_loop reached: stopped", what))
		return
	}
	count := fmt.Sprintf("(%d/%d in %s)", m.loop.Count(), m.cfg.MaxLoop, m.cfg.LoopInterval)
	switch c.spec.Action {
	case core.ActRestart:
		m.restartOp("restart", what, " "+count)
	case core.ActStopStart, core.ActSwap:
		m.stopStartOp("stopstart", what, " "+count)
	case core.ActStop:
		m.p.Started = false
		m.stopOp(core.Stop, "stop", false, what+": stopping "+count, what+": stopped")
	case core.ActWait:
		m.stopOp(core.Wait, "wait", false, what+": waiting "+count, what+": waiting until it is up")
	}
}

// blockers lists what keeps the module from running here: pre checkers
// not up and wait checkers down (suspended checkers block nothing).
func (m *Machine) blockers() []string {
	var why []string
	for _, c := range m.checkers {
		if m.suspended(c) {
			continue
		}
		switch {
		case c.spec.When == core.WhenPre && c.status != core.CheckUp:
			why = append(why, fmt.Sprintf("pre checker %s is %s", c.spec.Name, c.status))
		case c.spec.Action == core.ActWait && m.watching(c) && c.status == core.CheckDown:
			why = append(why, fmt.Sprintf("checker %s is down", c.spec.Name))
		}
	}
	return why
}

// waitDown returns the first watched wait checker that is down.
func (m *Machine) waitDown() *checker {
	for _, c := range m.checkers {
		if c.spec.Action == core.ActWait && m.watching(c) && c.status == core.CheckDown {
			return c
		}
	}
	return nil
}

// evaluate applies the level-triggered rules when no script runs: leave
// WAIT when nothing blocks, enter WAIT when a wait checker is down, and
// start a module that should run.
func (m *Machine) evaluate() {
	if m.op != nil {
		return
	}
	switch {
	case m.state == core.Up && m.ready == core.Ready:
		if c := m.waitDown(); c != nil {
			m.checkerAction(c)
		}
	case m.state == core.Wait && m.p.Started:
		why := m.blockers()
		switch {
		case len(why) == 0:
			was := strings.Join(m.waitWhy, ", ")
			if was == "" {
				was = m.cause
			}
			m.startOp(core.Wait, "start", "no longer waiting (was: "+was+"): starting")
		case !slices.Equal(why, m.waitWhy):
			m.waitWhy = why
			m.enter(stateChange{core.Wait, core.NotReady, "waiting: " + strings.Join(why, ", ")})
		}
	case m.state == core.Stop && m.ready == core.NotReady && m.p.Started:
		m.startOrWait("agent started: resuming the module")
	}
}

// startOrWait starts from STOP, or enters WAIT when something blocks.
func (m *Machine) startOrWait(cause string) {
	if why := m.blockers(); len(why) > 0 {
		m.waitWhy = why
		m.enter(stateChange{core.Wait, core.NotReady, "waiting: " + strings.Join(why, ", ")})
		return
	}
	m.startOp(core.Stop, "start", cause)
}

// ---- operations ----

func (m *Machine) startOp(from core.State, action, cause string) {
	m.run(&operation{
		steps: []step{{script: ScriptStart, from: from, to: core.Up, action: action,
			enter: &stateChange{core.Up, core.Transient, cause}}},
		done: stateChange{core.Up, core.Ready, "running: " + ScriptStart + " succeeded"},
	}, false)
}

// stopOp leaves UP for to (STOP or WAIT), running stop_both.
func (m *Machine) stopOp(to core.State, action string, force bool, cause, doneCause string) {
	m.run(&operation{
		steps: []step{{script: ScriptStop, from: core.Up, to: to, action: action,
			enter: &stateChange{to, core.Transient, cause}}},
		done: stateChange{to, core.NotReady, doneCause},
	}, force)
}

// restartOp stops and starts the application while staying UP: the node
// keeps its membership role (and the VIP if it owns it); only its buckets
// move to the other nodes while it is not Ready. why says what asked for it,
// count is the max_loop count for checker actions.
func (m *Machine) restartOp(action, why, count string) {
	m.run(&operation{
		steps: []step{
			{script: ScriptStop, from: core.Up, to: core.Up, action: action,
				enter: &stateChange{core.Up, core.Transient, why + ": restarting" + count}},
			{script: ScriptStart, from: core.Up, to: core.Up, action: action},
		},
		done: stateChange{core.Up, core.Ready, "running: restarted (" + why + ")"},
	}, false)
}

// stopStartOp goes through STOP: the node leaves the serving set, so its
// VIP (if it owns it) moves to another node, then starts again.
func (m *Machine) stopStartOp(action, why, count string) {
	m.run(&operation{
		steps: []step{
			{script: ScriptStop, from: core.Up, to: core.Stop, action: action,
				enter: &stateChange{core.Stop, core.Transient, why + ": stopping, then starting again" + count}},
			{script: ScriptStart, from: core.Stop, to: core.Up, action: action,
				enter: &stateChange{core.Up, core.Transient, why + ": starting again"}},
		},
		done: stateChange{core.Up, core.Ready, "running: started again (" + why + ")"},
	}, false)
}

func (m *Machine) run(op *operation, force bool) {
	m.op = op
	m.runStep(force)
}

func (m *Machine) runStep(force bool) {
	st := m.op.steps[m.op.i]
	if st.enter != nil {
		m.enter(*st.enter)
	}
	m.lastID++
	m.op.id, m.op.forced = m.lastID, force
	m.emit(core.RunScript{ID: m.op.id, Script: st.script,
		Args: []string{st.from.String(), st.to.String(), st.action}, Force: force})
}

func (m *Machine) onScriptDone(ev core.ScriptDone) {
	if m.op == nil || ev.ID != m.op.id {
		m.log("warn", fmt.Sprintf("completion of unknown script run #%d ignored", ev.ID))
		return
	}
	st := m.op.steps[m.op.i]
	failed := ev.Outcome != core.ScriptOK
	// "stop_both timed out", "start_both failed: exit status 3"
	what := st.script + " " + verb(ev.Outcome)
	if ev.Message != "" {
		what += ": " + ev.Message
	}
	switch {
	case failed && st.script == ScriptStop && !m.op.forced:
		m.log("warn", what+"; running it again with force")
		m.runStep(true)
		return
	case failed && st.script == ScriptStop:
		// Nothing more the machine can do: carry on, and say that the
		// application may still hold its resources.
		m.log("error", "forced "+what+"; the application may still be running")
	case failed && st.script == ScriptStart:
		m.log("error", what)
		m.p.Started = false
		m.op = nil
		m.stopOp(core.Stop, "stop", false, what+"; stopping",
			what+"; stopped: fix the application, then start the module")
		return
	}
	if m.op.i+1 < len(m.op.steps) {
		m.op.i++
		m.runStep(false)
		return
	}
	done := m.op.done
	m.op = nil
	if done.state == core.Wait {
		m.waitWhy = m.blockers()
	}
	m.enter(done)
	if cmd := m.pending; cmd != nil {
		m.pending = nil
		m.onCommand(*cmd)
	}
}

func verb(o core.ScriptOutcome) string {
	if o == core.ScriptTimedOut {
		return "timed out"
	}
	return "failed"
}

// ---- commands ----

func (m *Machine) onCommand(cmd core.Command) {
	origin := ""
	if cmd.Origin != "" {
		origin = " from " + cmd.Origin
	}
	admin := "admin " + cmd.Kind.String() + origin
	switch cmd.Kind {
	case core.CmdSwap, core.CmdPrim, core.CmdSecond, core.CmdPrimForce:
		m.refuse(cmd, cmd.Kind.String()+" applies to mirror modules: "+m.kind()+" has no primary and no secondary")
		return
	case core.CmdFailoverOn, core.CmdFailoverOff:
		m.refuse(cmd, "failover on|off applies to mirror modules: "+m.kind()+" has no standby to fail over to")
		return
	case core.CmdCheckerOn, core.CmdCheckerOff, core.CmdErrdOn, core.CmdErrdOff:
		m.onSwitch(cmd, admin)
		return
	}
	if m.op != nil {
		m.queue(cmd)
		return
	}
	switch cmd.Kind {
	case core.CmdStart:
		m.resetLoop()
		m.p.Started = true
		switch m.state {
		case core.Stop:
			m.startOrWait(admin + ": starting")
		case core.Wait:
			m.log("info", admin+": already started, "+m.cause)
		case core.Up:
			m.log("info", admin+": already UP")
		}
	case core.CmdStop, core.CmdForceStop:
		m.resetLoop()
		// An agent shutdown stops the application but keeps the module
		// started: it resumes when the agent starts again.
		if cmd.Origin != core.OriginShutdown {
			m.p.Started = false
		}
		switch m.state {
		case core.Stop:
			m.log("info", admin+": already stopped")
		case core.Wait:
			// stop_both ran when the node entered WAIT, or the module never
			// started: nothing runs here.
			m.enter(stateChange{core.Stop, core.NotReady, admin + ": stopped"})
		case core.Up:
			action := cmd.Kind.String()
			m.stopOp(core.Stop, action, cmd.Kind == core.CmdForceStop, admin+": stopping", admin+": stopped")
		}
	case core.CmdRestart, core.CmdStopStart:
		if m.state != core.Up {
			m.refuse(cmd, fmt.Sprintf("%s needs the module UP; it is %s (%s): use start", cmd.Kind, m.state, m.cause))
			return
		}
		m.resetLoop()
		if cmd.Kind == core.CmdRestart {
			m.restartOp("restart", admin, "")
		} else {
			m.stopStartOp("stopstart", admin, "")
		}
	default:
		m.refuse(cmd, "unknown command "+cmd.Kind.String())
	}
}

// resetLoop: admin commands that act on the application (and are not
// refused) reset max_loop, since an admin has looked at the module.
func (m *Machine) resetLoop() { m.loop.Reset() }

// queue keeps cmd until the running scripts finish: scripts never run
// concurrently, and the caller cannot cancel one (its timeout bounds it).
func (m *Machine) queue(cmd core.Command) {
	running := m.op.steps[m.op.i].script
	heading := m.op.done.state
	startsLast := m.op.steps[len(m.op.steps)-1].script == ScriptStart
	// The latest command wins: one that the running scripts already carry
	// out drops whatever was queued before it.
	already := ""
	switch {
	case (cmd.Kind == core.CmdStop || cmd.Kind == core.CmdForceStop) && heading == core.Stop:
		already = fmt.Sprintf("%s: already stopping (%s running; a failed or timed-out graceful run is forced)", cmd.Kind, running)
	case cmd.Kind == core.CmdStart && heading == core.Up && startsLast:
		m.p.Started = true
		already = fmt.Sprintf("start: already starting (%s running)", running)
	}
	if already != "" {
		if m.pending != nil {
			already += "; the queued " + m.pending.Kind.String() + " is dropped"
			m.pending = nil
		}
		m.log("info", already)
		return
	}
	// Started changes when the command runs, not now: a queued stop that a
	// later command replaces must not leave the module marked stopped.
	if m.pending != nil {
		m.log("info", fmt.Sprintf("%s replaces the queued %s", cmd.Kind, m.pending.Kind))
	}
	c := cmd
	m.pending = &c
	m.log("info", fmt.Sprintf("%s queued until %s finishes", cmd.Kind, running))
}

func (m *Machine) kind() string {
	if m.cfg.Light {
		return "a light module"
	}
	return "a farm (every UP node serves; the VIP and buckets move by themselves)"
}

func (m *Machine) refuse(cmd core.Command, reason string) {
	m.emit(core.Refuse{Command: cmd.Kind, Reason: reason})
}

// onSwitch handles checker on|off and errd on|off (persisted).
func (m *Machine) onSwitch(cmd core.Command, admin string) {
	on := cmd.Kind == core.CmdCheckerOn || cmd.Kind == core.CmdErrdOn
	if cmd.Kind == core.CmdErrdOn || cmd.Kind == core.CmdErrdOff {
		m.p.ErrdOff = !on
		m.log("info", admin+": errd checkers "+onOff(on))
		return
	}
	if cmd.Checker == "" {
		m.p.AllCheckersOff = !on
		m.p.CheckersOff = nil
		m.log("info", admin+": all checkers "+onOff(on))
		return
	}
	if m.checker(cmd.Checker) == nil {
		m.refuse(cmd, fmt.Sprintf("no checker named %s in this module", cmd.Checker))
		return
	}
	if on && m.p.AllCheckersOff {
		// "checker on X" after "checker off": only X comes back.
		m.p.AllCheckersOff = false
		for _, c := range m.checkers {
			if c.spec.Name != cmd.Checker {
				m.p.CheckersOff = append(m.p.CheckersOff, c.spec.Name)
			}
		}
	}
	m.p.CheckersOff = slices.DeleteFunc(m.p.CheckersOff, func(n string) bool { return n == cmd.Checker })
	if !on {
		m.p.CheckersOff = append(m.p.CheckersOff, cmd.Checker)
	}
	slices.Sort(m.p.CheckersOff)
	m.p.CheckersOff = slices.Compact(m.p.CheckersOff)
	m.log("info", admin+": checker "+cmd.Checker+" "+onOff(on))
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off (suspended)"
}
