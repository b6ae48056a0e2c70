package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/httpapi"
	"github.com/halo-ha/halo/internal/metrics"
	"github.com/halo-ha/halo/sdk/api"
)

// Machine is a core state machine (core/farm, core/mirror) as the runner
// drives it.
type Machine interface {
	Step(core.Event) []core.Action
}

// AppRunner runs the module's application scripts (the app plugin).
type AppRunner interface {
	// Run runs one script to its end. output receives each line it prints.
	Run(ctx context.Context, r ScriptRun, output func(stream, line string)) (core.ScriptOutcome, string)
}

// ScriptRun is one script execution asked by the machine.
type ScriptRun struct {
	Script  string
	Args    []string // current state, next state, action
	Force   bool
	Timeout time.Duration
}

// CheckerRunner runs one checker instance (a checker plugin).
type CheckerRunner interface {
	Check(ctx context.Context) (core.CheckStatus, string)
}

// Checker is a checker instance with its timing.
type Checker struct {
	Name     string
	Interval time.Duration
	Timeout  time.Duration
	Runner   CheckerRunner
}

// tickEvery is how often the runner feeds the machine the time. Machines
// evaluate their timeouts on ticks, so this bounds timer precision.
const tickEvery = 100 * time.Millisecond

// moduleRunner owns one module's machine: a single goroutine steps it with
// events (ticks, checker results, script completions, commands) and
// executes the actions, so the machine never sees concurrent calls.
type moduleRunner struct {
	mod      *config.Module
	node     string
	logger   hclog.Logger
	machine  Machine
	app      AppRunner
	checkers []Checker
	stateDir string
	events   *eventLog

	// persist encodes the machine's Persist payload to disk and returns
	// what the API shows of it.
	persist persistFunc

	in   chan core.Event
	cmds chan commandReq

	mu        sync.Mutex
	status    api.ModuleStatus
	resources map[string]api.Resource
	external  map[string]bool // checkers whose status was set through the API

	// scripts counts the goroutines of script runs and witness probes,
	// so that run returns only when they are done.
	scripts sync.WaitGroup

	// vips are the module's vip blocks (mirror and farm modules).
	vips []*vipSlot
	// mirror is set for a mirror module.
	mirror *mirrorIO
	// posted holds events that answer actions (a resync, a witness probe);
	// they are stepped on the event loop, those posted during a step right
	// after it.
	posted *eventQueue

	// realtime: the agent's threads run at real-time priority; schedText
	// describes the policy. lag measures the event loop's ticks, every
	// tickEvery.
	realtime  bool
	schedText string
	lag       loopLag
	tickEvery time.Duration

	// reconfState: live configuration changes (admin_live.go).
	reconfState

	// metrics records transitions, checker results and script runs (nil:
	// none). replication is the daemon's latest status, under mu.
	metrics     *metrics.Metrics
	replication *api.ReplicationStatus
}

type commandReq struct {
	cmd   core.Command
	reply chan error
}

func newModuleRunner(mod *config.Module, node string, m Machine, app AppRunner, checkers []Checker,
	stateDir string, persist persistFunc, logger hclog.Logger) (*moduleRunner, error) {
	el, err := openEventLog(filepath.Join(stateDir, "events.jsonl"), mod.Name, node)
	if err != nil {
		return nil, err
	}
	r := &moduleRunner{
		mod: mod, node: node, logger: logger.Named(mod.Name), machine: m, app: app,
		checkers: checkers, stateDir: stateDir, events: el, persist: persist,
		in:        make(chan core.Event, 64),
		posted:    newEventQueue(),
		cmds:      make(chan commandReq),
		resources: map[string]api.Resource{},
		external:  map[string]bool{},
		status: api.ModuleStatus{
			Module: mod.Name, Kind: string(mod.Kind), Node: node,
			State: core.Stop.String(), Readiness: core.NotReady.String(), Since: time.Now().UTC(),
			Loop: api.LoopInfo{Max: mod.MaxLoop, Interval: mod.LoopInterval.String()},
		},
	}
	r.reconf = make(chan reconfReq)
	for _, c := range checkers {
		r.resources["checker."+c.Name] = api.Resource{Value: core.CheckInit.String(), Since: time.Now().UTC()}
	}
	return r, nil
}

// run steps the machine until ctx ends. Checkers run in their own
// goroutines and report through r.in.
func (r *moduleRunner) run(ctx context.Context) {
	var wg sync.WaitGroup
	r.startCheckers(ctx, &wg)
	every := tickEvery
	var received <-chan struct{}
	if mi := r.mirror; mi != nil {
		// The machine judges heartbeat timeouts, and its own pauses
		// (timeout/2 without a tick), on ticks: tick at least twice a pulse.
		// Its status, published after every step, is never older than a
		// tick when the pacer sends it.
		every = min(every, mi.pulse/2)
		wg.Go(func() {
			if err := mi.endpoint.Run(ctx); err != nil {
				r.events.add("log", "error", "heartbeats stopped: "+err.Error())
			}
		})
		wg.Go(func() { mi.pacer.run(ctx) })
		if mi.sender != nil {
			wg.Go(func() { mi.sender.run(ctx) })
		}
		received = mi.inbox.notify
	}
	r.releaseLeftoverVIPs(ctx)
	r.tickEvery = every
	t := time.NewTicker(every)
	defer t.Stop()
	r.step(ctx, core.Tick{Now: time.Now()})
	if r.mirror != nil && r.mirror.m.ShouldStartAtBoot() {
		r.events.add("command", "info", "start from "+mirror.OriginBoot)
		r.step(ctx, core.Command{At: time.Now(), Kind: core.CmdStart, Origin: mirror.OriginBoot})
	}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			r.scripts.Wait()
			r.events.close()
			return
		case now := <-t.C:
			r.lag.tick(time.Now())
			r.step(ctx, core.Tick{Now: now})
			r.maintainVIPs(ctx, time.Now())
			r.refreshScheduling(time.Now())
		case <-received:
			if !r.mirror.m.PeerVisible() {
				// The peer is back (or first seen): tell it at once what
				// this node is, before acting on what it says. A node
				// that steps down on seeing its peer (a split brain's
				// loser) then first shows the peer it was serving, so
				// that both sides see the conflict, and a reconnection
				// does not wait for the next pulse.
				r.mirror.pacer.sendCurrent(time.Now())
			}
			for _, hb := range r.mirror.inbox.take() {
				// Stamped when the machine reads it, not when it arrived:
				// after a pause of this process, statuses that waited in
				// the socket buffers must not look fresher than the pause.
				r.step(ctx, mirror.PeerHeartbeat{At: time.Now(), Network: hb.network, Peer: hb.status})
			}
		case <-r.posted.notify:
			r.stepPosted(ctx)
			r.afterStep(ctx)
		case ev := <-r.in:
			r.step(ctx, ev)
		case req := <-r.cmds:
			req.reply <- r.step(ctx, req.cmd)
		case req := <-r.reconf:
			req.reply <- r.applyLive(ctx, req.mod)
		}
	}
}

// step feeds one event, executes the resulting actions in order, then the
// events those actions answered at once. It returns the refusal of a
// command, if any.
func (r *moduleRunner) step(ctx context.Context, ev core.Event) error {
	refused := r.apply(ctx, ev)
	r.stepPosted(ctx)
	r.afterStep(ctx)
	return refused
}

// stepPosted steps the posted events, including those their actions post.
func (r *moduleRunner) stepPosted(ctx context.Context) {
	for evs := r.posted.take(); len(evs) > 0; evs = r.posted.take() {
		for _, ev := range evs {
			if wd, ok := ev.(witnessDone); ok {
				r.mirror.witnessBusy = false
				ev = wd.WitnessResult
			}
			r.apply(ctx, ev)
		}
	}
}

// afterStep publishes what a step changed: a mirror's view for the API,
// its status to the heartbeat pacer (sent at once when it changed), and a
// new announcement of its addresses when another node may have claimed
// them.
func (r *moduleRunner) afterStep(ctx context.Context) {
	if r.mirror != nil {
		st := r.refreshMirrorStatus()
		r.publishHeartbeat()
		r.reannounceAfterPeer(ctx, st)
	}
}

func (r *moduleRunner) apply(ctx context.Context, ev core.Event) error {
	var refused error
	for _, a := range r.machine.Step(ev) {
		switch a := a.(type) {
		case core.Persist:
			// The machine asked for this to be durable before what follows;
			// if it cannot be, acting anyway could contradict the state a
			// restart would resume from.
			sw, loops, err := r.persist(a.Data)
			if err != nil {
				r.events.add("log", "error", "cannot persist module state: "+err.Error())
				r.logger.Error("persist failed", "error", err)
				continue
			}
			r.mu.Lock()
			r.status.Switches, r.status.Loop.Count = sw, loops
			r.mu.Unlock()
		case core.EnterState:
			r.enter(a)
		case core.Log:
			r.events.add("log", a.Level, a.Text)
			r.logger.Info(a.Text, "level", a.Level)
		case core.RunScript:
			r.startScript(ctx, a)
		case core.Refuse:
			refused = httpapi.Conflict("%s refused: %s", a.Command, a.Reason)
			r.events.add("command", "warn", fmt.Sprintf("%s refused: %s", a.Command, a.Reason))
		case core.SetVIP:
			r.setVIPs(ctx, true)
		case core.UnsetVIP:
			r.setVIPs(ctx, false)
		case core.CheckWitness:
			r.checkWitness(ctx)
		case mirror.SendPeer:
			r.sendPeer(a.Msg)
		case mirror.StartReplication:
			r.mirror.repl.Start(a.Role, a.Peer)
		case mirror.StopReplication:
			r.mirror.repl.Stop()
		case mirror.StartResync:
			r.mirror.repl.Resync(a)
		case core.SetBalancing, core.ClearBalancing:
			// Farm load balancing lands with its issue.
			r.events.add("log", "error", fmt.Sprintf("action %T is not supported by this agent yet", a))
		default:
			r.events.add("log", "error", fmt.Sprintf("unknown action %T", a))
		}
	}
	return refused
}

// discard releases what a runner that never ran holds: its event log and
// heartbeat sockets.
func (r *moduleRunner) discard() {
	if r.mirror != nil {
		_ = r.mirror.endpoint.Close()
	}
	_ = r.events.close()
}

func (r *moduleRunner) enter(a core.EnterState) {
	r.mu.Lock()
	prev := r.status.State + " " + r.status.Readiness
	r.status.State, r.status.Readiness = a.State.String(), a.Readiness.String()
	r.status.ExitCode = a.State.ExitCode()
	r.status.Reason = a.Cause
	r.status.Since = time.Now().UTC()
	r.mu.Unlock()
	r.metrics.Transition(r.mod.Name, strings.Fields(prev)[0], a.State.String())
	r.events.add("state", "info", fmt.Sprintf("%s -> %s %s: %s", prev, a.State, a.Readiness, a.Cause))
	r.logger.Info("state", "state", a.State, "readiness", a.Readiness, "cause", a.Cause)
}

func isStopScript(name string) bool {
	return strings.HasPrefix(name, "stop") || name == "poststop"
}

func (r *moduleRunner) startScript(ctx context.Context, a core.RunScript) {
	app := r.config().App // its timeouts may change live
	run := ScriptRun{Script: a.Script, Args: a.Args, Force: a.Force, Timeout: app.StartTimeout}
	if isStopScript(a.Script) {
		run.Timeout = app.StopTimeout
	}
	desc := a.Script + " " + strings.Join(a.Args, " ")
	if a.Force {
		desc += " (force)"
	}
	r.events.add("script", "info", "run "+desc)
	r.scripts.Add(1)
	go func() {
		defer r.scripts.Done()
		started := time.Now()
		outcome, msg := r.app.Run(ctx, run, func(stream, line string) {
			r.events.add("output", "info", a.Script+": "+line)
		})
		r.metrics.ScriptDone(r.mod.Name, a.Script, time.Since(started), outcome == core.ScriptOK)
		level := "info"
		if outcome != core.ScriptOK {
			level = "error"
		}
		r.events.add("script", level, fmt.Sprintf("%s %s: %s", a.Script, outcome, msg))
		select {
		case r.in <- core.ScriptDone{At: time.Now(), ID: a.ID, Outcome: outcome, Message: msg}:
		case <-ctx.Done():
		}
	}()
}

func (r *moduleRunner) runChecker(ctx context.Context, c Checker) {
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, c.Timeout)
		began := time.Now()
		st, msg := c.Runner.Check(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		// Once a checker's status was set through the API (a long-running
		// custom reporter), the plugin's periodic "up" only vouches that the
		// reporter lives: it must not overwrite the reported value. Its
		// down/unknown (the reporter died) still counts.
		if st != core.CheckUp || !r.externallyReported(c.Name) {
			r.reportAt(ctx, began, c.Name, st, msg)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// report records a checker result as the resource checker.<name> and feeds
// it to the machine.
func (r *moduleRunner) report(ctx context.Context, name string, st core.CheckStatus, msg string) {
	r.reportAt(ctx, time.Now(), name, st, msg)
}

// reportAt is report for a check that began at began (the machine ignores
// what a check that began before a state change saw).
func (r *moduleRunner) reportAt(ctx context.Context, began time.Time, name string, st core.CheckStatus, msg string) {
	r.recordChecker(name, st, msg)
	r.deliver(ctx, core.CheckerResult{At: began, Name: name, Status: st, Message: msg})
}

// deliver hands an event to the event loop unless ctx ends first.
func (r *moduleRunner) deliver(ctx context.Context, ev core.Event) {
	select {
	case r.in <- ev:
	case <-ctx.Done():
	}
}

// recordChecker records a checker result as the resource checker.<name>,
// and a change of status in the event log.
func (r *moduleRunner) recordChecker(name string, st core.CheckStatus, msg string) {
	r.metrics.CheckResult(r.mod.Name, name, st.String())
	key := "checker." + name
	r.mu.Lock()
	old := r.resources[key]
	prev, suffix := splitSuspended(old.Value)
	switch {
	case prev != st.String():
		r.resources[key] = api.Resource{Value: st.String() + suffix, Message: msg, Since: time.Now().UTC()}
	case old.Message != msg:
		old.Message = msg
		r.resources[key] = old
	}
	r.mu.Unlock()
	if prev != st.String() {
		r.events.add("log", "info", fmt.Sprintf("checker %s: %s -> %s %s", name, prev, st, msg))
	}
}

// splitSuspended splits a checker resource value into the checker's status
// and the " (suspended: ...)" the machine adds while it is suspended.
func splitSuspended(v string) (status, suffix string) {
	if i := strings.Index(v, " (suspended"); i >= 0 {
		return v[:i], v[i:]
	}
	return v, ""
}

// command runs an admin command through the machine and returns its
// refusal, if any.
func (r *moduleRunner) command(ctx context.Context, cmd core.Command) error {
	req := commandReq{cmd: cmd, reply: make(chan error, 1)}
	// Logged before the machine sees it, so the log reads cause then effect.
	r.events.add("command", "info", fmt.Sprintf("%s from %s", cmd.Kind, cmd.Origin))
	select {
	case r.cmds <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *moduleRunner) snapshot(withResources bool) api.ModuleStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status
	if r.replication != nil {
		v := *r.replication
		if v.Resync != nil {
			p := *v.Resync
			v.Resync = &p
		}
		s.Replication = &v
	}
	if withResources {
		s.Resources = make(map[string]api.Resource, len(r.resources))
		for k, v := range r.resources {
			s.Resources[k] = v
		}
	}
	return s
}

func (r *moduleRunner) resource(name string) (api.Resource, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.resources[name]
	return v, ok
}

// setResource sets a resource from the API. checker.<name> resources feed
// the machine like a checker result (long-running custom checkers report
// this way).
func (r *moduleRunner) setResource(ctx context.Context, name string, set api.ResourceSet) error {
	if cname, ok := strings.CutPrefix(name, "checker."); ok {
		st, err := core.ParseCheckStatus(set.Value)
		if err != nil {
			return httpapi.BadRequest("resource %s: %v", name, err)
		}
		if !r.hasChecker(cname) {
			return httpapi.NotFound("module %s has no checker %q", r.mod.Name, cname)
		}
		r.mu.Lock()
		r.external[cname] = true
		r.mu.Unlock()
		r.report(ctx, cname, st, set.Message)
		return nil
	}
	r.mu.Lock()
	r.resources[name] = api.Resource{Value: set.Value, Message: set.Message, Since: time.Now().UTC()}
	r.mu.Unlock()
	return nil
}

func (r *moduleRunner) externallyReported(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.external[name]
}

func (r *moduleRunner) hasChecker(name string) bool {
	return r.mod.Check(name) != nil
}
