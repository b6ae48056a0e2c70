package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/mirror"
)

// MirrorSimOptions configures one seeded mirror simulation.
type MirrorSimOptions struct {
	Seed uint64
	// FaultFor is how long faults are injected (default 30s of simulated
	// time); then every fault is repaired and the pair must converge within
	// ConvergeWithin (default 60s) unless an administrator is required.
	FaultFor       time.Duration
	ConvergeWithin time.Duration
	// Trace, when set, receives one line per notable event and action.
	Trace func(string)
}

// MirrorSimReport says what a run exercised.
type MirrorSimReport struct {
	Config       string
	Steps        int
	Crashes      int
	Freezes      int
	Cuts         int
	Commands     int
	CheckerFlaps int
	ScriptFaults int
	Converged    bool
	NeedsAdmin   string // the WAIT/STOP reason when the pair waits for an administrator
	ConvergedIn  time.Duration
	Stats        MirrorStats
	StateChanges int
}

// MirrorSimError is a broken invariant, with what replays it.
type MirrorSimError struct {
	Seed       uint64
	Violations []string
	Tail       []string // last trace lines before the failure
}

func (e *MirrorSimError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mirror simulation seed %d broke an invariant:\n", e.Seed)
	for _, v := range e.Violations {
		fmt.Fprintf(&b, "  %s\n", v)
	}
	fmt.Fprintf(&b, "replay: go test ./core/sim -run TestMirrorSim -seed=%d -v\n", e.Seed)
	if len(e.Tail) > 0 {
		b.WriteString("last events:\n")
		for _, l := range e.Tail {
			b.WriteString("  " + l + "\n")
		}
	}
	return b.String()
}

type mirrorSim struct {
	opt      MirrorSimOptions
	rng      *rand.Rand
	w        *MirrorWorld
	rep      MirrorSimReport
	tail     []string
	stop     bool // an invariant broke: stop injecting
	faulting bool // fault phase: scripts may fail
	heal     bool // fault phase over: scheduled faults do nothing
	slow     map[string]time.Duration
	lossy    map[string]float64
}

const mirrorTailLines = 60

// RunMirror runs one seeded simulation of a mirror pair: setup to
// PRIM/SECOND, random faults, repair, convergence. It returns an error
// carrying the seed if any invariant broke.
func RunMirror(opt MirrorSimOptions) (MirrorSimReport, error) {
	if opt.FaultFor == 0 {
		opt.FaultFor = 30 * time.Second
	}
	if opt.ConvergeWithin == 0 {
		opt.ConvergeWithin = 60 * time.Second
	}
	s := &mirrorSim{opt: opt, rng: rand.New(rand.NewPCG(opt.Seed, opt.Seed^0x9e3779b97f4a7c15)),
		slow: map[string]time.Duration{}, lossy: map[string]float64{}}
	cfg := s.randomConfig()
	s.w = NewMirrorWorld(s.worldOptions(cfg))
	s.w.OnEvent, s.w.OnAction = s.onEvent, s.onAction
	s.w.AfterStep = func() {
		s.rep.Steps++
		if len(s.w.Oracle.Violations) > 0 {
			s.stop = true
		}
	}
	s.tracef("config: %s", s.rep.Config)

	// Setup as an administrator does it (first_start.txt), without faults.
	a, b := s.w.Nodes[0], s.w.Nodes[1]
	s.w.Boot(a)
	s.w.Boot(b)
	s.w.RunFor(time.Second)
	s.w.Command(a, core.Command{Kind: core.CmdPrim, Origin: "sim"})
	for range 20 {
		s.w.RunFor(500 * time.Millisecond)
		if s.converged() {
			break
		}
	}
	if !s.converged() {
		s.w.Oracle.violate("setup did not reach PRIM/SECOND: %s %s/%s, %s %s/%s", a.Name, a.State, a.Ready, b.Name, b.State, b.Ready)
		return s.finish()
	}

	// Faults.
	s.faulting = true
	end := s.w.Now().Add(opt.FaultFor)
	for !s.stop && s.w.Now().Before(end) {
		s.w.RunFor(time.Duration(s.rng.Int64N(int64(1500 * time.Millisecond))))
		if !s.stop {
			s.inject()
		}
	}
	if s.stop {
		return s.finish()
	}

	// Repair everything, as the administrator of a healthy site would.
	s.heal, s.faulting = true, false
	s.repair()
	healedAt := s.w.Now()
	deadline := healedAt.Add(opt.ConvergeWithin)
	for !s.stop && s.w.Now().Before(deadline) {
		s.w.RunFor(500 * time.Millisecond)
		s.adminStart()
		if s.converged() {
			// Stay a little to see that it holds.
			s.w.RunFor(2 * time.Second)
			if s.converged() {
				s.rep.Converged, s.rep.ConvergedIn = true, s.w.Now().Sub(healedAt)
				break
			}
		}
	}
	if !s.stop && !s.rep.Converged {
		if why := s.adminNeeded(); why != "" {
			s.rep.NeedsAdmin = why
		} else {
			s.w.Oracle.violate("no progress: %s after repair (%v): %s %s/%s (%s), %s %s/%s (%s)",
				"not converged", opt.ConvergeWithin,
				a.Name, a.State, a.Ready, s.reason(a), b.Name, b.State, b.Ready, s.reason(b))
		}
	}
	if s.rep.Converged {
		s.w.Oracle.CheckFinal()
	}
	return s.finish()
}

func (s *mirrorSim) finish() (MirrorSimReport, error) {
	s.rep.Stats = s.w.Oracle.Stats
	if v := s.w.Oracle.Violations; len(v) > 0 {
		return s.rep, &MirrorSimError{Seed: s.opt.Seed, Violations: v, Tail: s.tail}
	}
	return s.rep, nil
}

func (s *mirrorSim) reason(n *MirrorNode) string {
	if n.M == nil {
		return "agent down"
	}
	r, _ := n.M.Reason()
	return r
}

func (s *mirrorSim) converged() bool {
	a, b := s.w.Nodes[0], s.w.Nodes[1]
	pair := a.State == core.Prim && b.State == core.Second || a.State == core.Second && b.State == core.Prim
	return pair && a.Ready == core.Ready && b.Ready == core.Ready && a.Head == b.Head
}

// adminNeeded returns the reason of a node that waits for an administrator
// and says what to run, "" if none does.
func (s *mirrorSim) adminNeeded() string {
	for _, n := range s.w.Nodes {
		if n.M == nil {
			continue
		}
		if r, admin := n.M.Reason(); admin && strings.Contains(r, "halo ") {
			return n.Name + ": " + r
		}
	}
	return ""
}

func (s *mirrorSim) pick(p float64) bool { return s.rng.Float64() < p }

func (s *mirrorSim) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
}

func (s *mirrorSim) randomConfig() mirror.Config {
	cfg := mirror.Config{
		HeartbeatTimeout: s.dur(400*time.Millisecond, 1200*time.Millisecond),
		Failover:         !s.pick(0.15),
		Witness:          s.pick(0.3),
		StallTimeout:     s.dur(0, 2*time.Second),
		MaxLoop:          3,
		LoopInterval:     20 * time.Second,
		ResyncRetry:      s.dur(500*time.Millisecond, 5*time.Second),
	}
	if s.pick(0.5) {
		cfg.Networks = []string{"default", "replication"}
	} else {
		cfg.Networks = []string{"default"}
	}
	if s.pick(0.3) {
		cfg.SyncDelta = s.dur(2*time.Second, 60*time.Second)
	}
	if s.pick(0.3) {
		cfg.DefaultPrimary = []string{"node1", "node2"}[s.rng.IntN(2)]
	}
	cfg.ReplReadiness = s.pick(0.5)
	switch r := s.rng.IntN(10); {
	case r < 6:
		cfg.SplitBrainWinner = mirror.WinnerLongestAlone
	case r < 8:
		cfg.SplitBrainWinner = mirror.WinnerDefaultPrimary
	default:
		cfg.SplitBrainWinner = []string{"node1", "node2"}[s.rng.IntN(2)]
	}
	for i := range s.rng.IntN(4) {
		cfg.Checkers = append(cfg.Checkers, core.CheckerSpec{
			Name:   fmt.Sprintf("c%d", i),
			Type:   []string{"errd", "tcp", "custom"}[s.rng.IntN(3)],
			Action: core.CheckAction(s.rng.IntN(5)),
			When:   core.When(s.rng.IntN(4)),
		})
	}
	var ch []string
	for _, c := range cfg.Checkers {
		ch = append(ch, fmt.Sprintf("%s:%s:%s:%s", c.Name, c.Action, c.When, c.Type))
	}
	s.rep.Config = fmt.Sprintf("nets=%v timeout=%v failover=%v witness=%v sync_delta=%v default_primary=%q stall=%v winner=%s checkers=%v repl_ready=%v",
		cfg.Networks, cfg.HeartbeatTimeout, cfg.Failover, cfg.Witness, cfg.SyncDelta, cfg.DefaultPrimary,
		cfg.StallTimeout, cfg.SplitBrainWinner, ch, cfg.ReplReadiness)
	return cfg
}

func (s *mirrorSim) worldOptions(cfg mirror.Config) MirrorOptions {
	opt := DefaultMirrorOptions(cfg)
	opt.WriteEvery = 100 * time.Millisecond
	// Periodic activities drift: writes, heartbeats and ticks do not line
	// up, so races between them get explored.
	opt.Jitter = func(d time.Duration) time.Duration { return d/2 + time.Duration(s.rng.Int64N(int64(d))) }
	opt.ScriptRun = func(node, script string, force bool) (time.Duration, core.ScriptOutcome) {
		d := s.dur(10*time.Millisecond, 400*time.Millisecond)
		if s.faulting && !force && s.rng.Float64() < 0.02 {
			return d, []core.ScriptOutcome{core.ScriptFailed, core.ScriptTimedOut}[s.rng.IntN(2)]
		}
		return d, core.ScriptOK
	}
	opt.ResyncTime = func(string, bool) time.Duration { return s.dur(100*time.Millisecond, 3*time.Second) }
	opt.NetDelay = func(net string) (time.Duration, bool) {
		d := s.dur(time.Millisecond, 20*time.Millisecond) + s.slow[net]
		return d, s.rng.Float64() < s.lossy[net]
	}
	return opt
}

// inject starts one random fault (repaired later by a scheduled action, or
// at the end of the fault phase).
func (s *mirrorSim) inject() {
	w := s.w
	n := w.Nodes[s.rng.IntN(2)]
	nets := w.opt.Config.Networks
	switch r := s.rng.IntN(100); {
	case r < 12: // crash, reboot later
		if n.Up {
			s.rep.Crashes++
			s.tracef("FAULT crash %s", n.Name)
			w.Crash(n)
			w.after(s.dur(200*time.Millisecond, 6*time.Second), func() {
				if !s.heal {
					s.tracef("FAULT boot %s", n.Name)
					w.Boot(n)
				}
			})
		}
	case r < 20: // freeze the agent
		if n.Up && !n.Frozen {
			s.rep.Freezes++
			s.tracef("FAULT freeze %s", n.Name)
			w.Freeze(n)
			w.after(s.dur(100*time.Millisecond, 4*time.Second), func() {
				if !s.heal {
					s.tracef("FAULT thaw %s", n.Name)
					w.Thaw(n)
				}
			})
		}
	case r < 34: // cut one network or all
		s.rep.Cuts++
		net := ""
		if s.pick(0.5) {
			net = nets[s.rng.IntN(len(nets))]
		}
		s.tracef("FAULT cut %q", net)
		w.SetNetwork(net, false)
		w.after(s.dur(200*time.Millisecond, 6*time.Second), func() {
			if !s.heal {
				s.tracef("FAULT heal %q", net)
				w.SetNetwork(net, true)
			}
		})
	case r < 40: // slow or lossy network for a while
		net := nets[s.rng.IntN(len(nets))]
		s.slow[net] = s.dur(0, 300*time.Millisecond)
		s.lossy[net] = s.rng.Float64() * 0.3
		s.tracef("FAULT network %s slow %v lossy %.2f", net, s.slow[net], s.lossy[net])
		w.after(s.dur(time.Second, 5*time.Second), func() {
			s.slow[net], s.lossy[net] = 0, 0
		})
	case r < 46: // witness unreachable from one node
		if w.opt.Config.Witness {
			n.WitnessUp = false
			s.tracef("FAULT witness down from %s", n.Name)
			w.after(s.dur(500*time.Millisecond, 6*time.Second), func() {
				if !s.heal {
					n.WitnessUp = true
				}
			})
		}
	case r < 52: // replication stuck while heartbeats flow
		n.ReplBlocked = true
		s.tracef("FAULT replication from %s blocked", n.Name)
		w.after(s.dur(200*time.Millisecond, 5*time.Second), func() {
			if !s.heal {
				n.ReplBlocked = false
			}
		})
	case r < 66: // checker flap
		if cs := w.opt.Config.Checkers; len(cs) > 0 && n.Up {
			c := cs[s.rng.IntN(len(cs))]
			s.rep.CheckerFlaps++
			s.tracef("FAULT checker %s down on %s", c.Name, n.Name)
			w.Checker(n, c.Name, core.CheckDown, "simulated failure")
			w.after(s.dur(100*time.Millisecond, 4*time.Second), func() {
				if n.Up {
					w.Checker(n, c.Name, core.CheckUp, "")
				}
			})
		}
	case r < 73: // replication stuck on the primary, which dies soon after
		// The SECOND must not take over without the writes the primary
		// acknowledged after giving up on it.
		if n.Up && n.State == core.Prim {
			n.ReplBlocked = true
			s.rep.Crashes++
			s.tracef("FAULT replication from %s blocked, crash follows", n.Name)
			w.after(w.opt.Config.StallTimeout+s.dur(200*time.Millisecond, 600*time.Millisecond), func() {
				n.ReplBlocked = false
				if !s.heal {
					s.tracef("FAULT crash %s", n.Name)
					w.Crash(n)
					w.after(s.dur(time.Second, 4*time.Second), func() {
						if !s.heal {
							w.Boot(n)
						}
					})
				}
			})
		}
	case r < 80: // replicated directories unusable (must_exist) for a while
		if w.opt.Config.ReplReadiness {
			s.tracef("FAULT replicated directories of %s unusable", n.Name)
			w.SetReplProblem(n, "must_exist file missing")
			w.after(s.dur(200*time.Millisecond, 6*time.Second), func() {
				if !s.heal {
					s.tracef("FAULT replicated directories of %s usable", n.Name)
					w.SetReplProblem(n, "")
				}
			})
		}
	case r < 83: // next run of a script fails
		script := []string{"start_prim", "stop_prim", "start_second", "stop_second", "prestart"}[s.rng.IntN(5)]
		n.Fail[script] = []core.ScriptOutcome{core.ScriptFailed, core.ScriptTimedOut}[s.rng.IntN(2)]
		s.rep.ScriptFaults++
		s.tracef("FAULT next %s on %s fails", script, n.Name)
	default: // command storm
		for range 1 + s.rng.IntN(3) {
			s.randomCommand(w.Nodes[s.rng.IntN(2)])
		}
	}
}

func (s *mirrorSim) randomCommand(n *MirrorNode) {
	if !n.Up {
		return
	}
	kinds := []core.CommandKind{core.CmdStart, core.CmdStop, core.CmdRestart, core.CmdStopStart,
		core.CmdForceStop, core.CmdSwap, core.CmdSecond, core.CmdFailoverOn, core.CmdFailoverOff,
		core.CmdCheckerOn, core.CmdCheckerOff, core.CmdErrdOn, core.CmdErrdOff}
	kind := kinds[s.rng.IntN(len(kinds))]
	switch {
	case s.pick(0.03):
		kind = core.CmdPrim
	case s.pick(0.01):
		kind = core.CmdPrimForce
	}
	c := core.Command{Kind: kind, Origin: "sim", FullSync: s.pick(0.1)}
	if (kind == core.CmdCheckerOn || kind == core.CmdCheckerOff) && len(s.w.opt.Config.Checkers) > 0 && s.pick(0.5) {
		c.Checker = s.w.opt.Config.Checkers[s.rng.IntN(len(s.w.opt.Config.Checkers))].Name
	}
	s.rep.Commands++
	s.tracef("FAULT command %s %s", n.Name, kind)
	s.w.Command(n, c)
}

// repair ends every fault and undoes the administrator's switches.
func (s *mirrorSim) repair() {
	w := s.w
	s.tracef("REPAIR: heal, thaw, boot, checkers up, admin switches back on")
	w.SetNetwork("", true)
	for net := range s.slow {
		s.slow[net], s.lossy[net] = 0, 0
	}
	for _, n := range w.Nodes {
		n.WitnessUp, n.ReplBlocked = true, false
		if n.ReplProblem != "" {
			w.SetReplProblem(n, "")
		}
		clear(n.Fail)
		if !n.Up {
			w.Boot(n)
		}
		w.Thaw(n)
		for _, c := range w.opt.Config.Checkers {
			w.Checker(n, c.Name, core.CheckUp, "")
		}
		for _, k := range []core.CommandKind{core.CmdFailoverOn, core.CmdCheckerOn, core.CmdErrdOn} {
			if k == core.CmdFailoverOn && !w.opt.Config.Failover {
				continue
			}
			w.Command(n, core.Command{Kind: k, Origin: "sim-repair"})
		}
	}
}

// adminStart starts modules stopped by the administrator, max_loop or a
// failed script: the repaired site runs both.
func (s *mirrorSim) adminStart() {
	for _, n := range s.w.Nodes {
		if n.Up && n.State == core.Stop {
			if st, _ := n.M.State(); st == core.Stop {
				s.w.Command(n, core.Command{Kind: core.CmdStart, Origin: "sim-repair"})
			}
		}
	}
}

func (s *mirrorSim) tracef(format string, args ...any) {
	line := fmt.Sprintf("%9.3fs ", s.w.Now().Sub(s.w.Start()).Seconds()) + fmt.Sprintf(format, args...)
	if s.opt.Trace != nil {
		s.opt.Trace(line)
	}
	s.tail = append(s.tail, line)
	if len(s.tail) > 2*mirrorTailLines {
		s.tail = append(s.tail[:0], s.tail[len(s.tail)-mirrorTailLines:]...)
	}
}

func (s *mirrorSim) onEvent(n *MirrorNode, ev core.Event) {
	switch e := ev.(type) {
	case core.Command:
		s.tracef("%s <- command %s (%s)", n.Name, e.Kind, e.Origin)
	case core.ScriptDone:
		if e.Outcome != core.ScriptOK {
			s.tracef("%s <- script #%d %s", n.Name, e.ID, e.Outcome)
		}
	case core.CheckerResult:
		s.tracef("%s <- checker %s %s", n.Name, e.Name, e.Status)
	case core.WitnessResult:
		s.tracef("%s <- witness reachable=%v", n.Name, e.Reachable)
	case mirror.ResyncDone:
		s.tracef("%s <- resync %d done", n.Name, e.ID)
	case mirror.ResyncFailed:
		s.tracef("%s <- resync %d failed: %s", n.Name, e.ID, e.Reason)
	case mirror.ReplStalled:
		s.tracef("%s <- replication stalled", n.Name)
	case mirror.ReplInSync:
		s.tracef("%s <- replication in sync", n.Name)
	case mirror.ReplReady:
		s.tracef("%s <- replication ready: %q", n.Name, e.Problem)
	case mirror.PeerMessage:
		s.tracef("%s <- %s from %s", n.Name, e.Msg.Kind, e.Msg.From)
	}
}

func (s *mirrorSim) onAction(n *MirrorNode, a core.Action) {
	switch a := a.(type) {
	case core.EnterState:
		s.rep.StateChanges++
		s.tracef("%s => %s/%s: %s", n.Name, a.State, a.Readiness, a.Cause)
	case core.RunScript:
		s.tracef("%s run %s %v force=%v #%d", n.Name, a.Script, a.Args, a.Force, a.ID)
	case core.Persist:
		p := a.Data.(mirror.Persistent)
		s.tracef("%s persist gen=%v role=%s shared=%v inconsistent=%v outdated=%v forced=%v stopped=%v",
			n.Name, p.Gen, p.Role, p.Shared, p.Inconsistent, p.Outdated, p.Forced, p.Stopped)
	case core.SetVIP:
		s.tracef("%s vip set", n.Name)
	case core.UnsetVIP:
		s.tracef("%s vip unset", n.Name)
	case core.CheckWitness:
		s.tracef("%s check witness", n.Name)
	case core.Log:
		s.tracef("%s log %s: %s", n.Name, a.Level, a.Text)
	case core.Refuse:
		s.tracef("%s REFUSED %s: %s", n.Name, a.Command, a.Reason)
	case mirror.StartReplication:
		s.tracef("%s replication %s", n.Name, a.Role)
	case mirror.StopReplication:
		s.tracef("%s replication stop", n.Name)
	case mirror.StartResync:
		s.tracef("%s resync #%d full=%v quarantine=%v to %v", n.Name, a.ID, a.Full, a.Quarantine, a.Source)
	case mirror.SendPeer:
		s.tracef("%s send %s", n.Name, a.Msg.Kind)
	}
}
