// Package sim holds seeded whole-cluster simulators of the core state
// machines: the real machines run against a fake membership, executor and
// clock with injected faults, invariants are checked after every step, and
// a failing seed replays exactly.
package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/farm"
)

// FarmOptions configures one farm simulation.
type FarmOptions struct {
	Seed uint64
	// FaultSteps is the number of iterations with faults (default 300; each
	// advances the clock by 50 ms to 1 s).
	FaultSteps int
	// RecoverWithin bounds the time from the end of the faults (partitions
	// healed, nodes booted, checkers up, an admin start on every node) to a
	// converged farm with every node UP Ready (default 2 minutes).
	RecoverWithin time.Duration
	// Trace, when set, receives one line per event and per action.
	Trace func(string)
}

// FarmReport says what a run did, so a test can tell that the faults and
// the invariant checks actually happened.
type FarmReport struct {
	Nodes            int
	Light            bool
	MachineSteps     int
	ConvergedChecks  int // converged partitions whose invariants were checked
	Crashes          int
	Partitions       int
	Commands         int
	CheckerDowns     int
	ScriptFailures   int
	CheckerActions   int // actions taken by machines because of checkers
	MaxLoopStops     int
	OwnerChanges     int
	RecoveredAfter   time.Duration
	MaxLoopPerWindow int // highest count of checker actions seen in one window
}

// FarmViolation is an invariant the simulation found broken.
type FarmViolation struct {
	Seed uint64
	At   time.Duration // simulated time since the start
	What string
}

func (v *FarmViolation) Error() string {
	return fmt.Sprintf("seed %d at %s: %s", v.Seed, v.At, v.What)
}

var farmEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Checkers of the simulated module: one per action that matters on a farm.
var farmCheckers = []core.CheckerSpec{
	{Name: "app", Type: "errd", Action: core.ActRestart, When: core.WhenBoth},
	{Name: "db", Type: "tcp", Action: core.ActWait, When: core.WhenBoth},
	{Name: "web", Type: "custom", Action: core.ActStopStart, When: core.WhenPrim},
	{Name: "disk", Type: "custom", Action: core.ActStop, When: core.WhenBoth},
	{Name: "net", Type: "ping", Action: core.ActRestart, When: core.WhenPre},
}

type farmNode struct {
	name      string
	cfg       farm.Config
	m         *farm.Machine
	alive     bool
	part      int
	lag       time.Duration // this node's membership delay
	persisted farm.Persistent

	running *core.RunScript
	doneAt  time.Time
	outcome core.ScriptOutcome

	vip   bool
	rules *core.BucketTable

	ann   core.MemberUpdate            // what the node announces now
	known map[string]core.MemberUpdate // what it was told about the others
	due   map[string]time.Time         // when the next change about a subject arrives

	loop []time.Time // checker actions since the last admin command, as the simulator counts them
}

type farmWorld struct {
	opts     FarmOptions
	r        *rand.Rand
	now      time.Time
	light    bool
	maxLoop  int
	interval time.Duration
	nodes    []*farmNode
	faults   bool // fault phase: scripts may fail
	rep      FarmReport
	err      *FarmViolation
	owner    string // last VIP holder seen, for OwnerChanges
	// crashNext is crashed at the next fault injection (chosen right after
	// a checker action).
	crashNext *farmNode
}

// RunFarm runs one seeded simulation and returns the first violation.
func RunFarm(opts FarmOptions) (FarmReport, error) {
	if opts.FaultSteps == 0 {
		opts.FaultSteps = 300
	}
	if opts.RecoverWithin == 0 {
		opts.RecoverWithin = 2 * time.Minute
	}
	// A short loop interval, so that the window slides within a run.
	w := &farmWorld{opts: opts, r: rand.New(rand.NewPCG(opts.Seed, 0x6661726d)), now: farmEpoch,
		interval: 30 * time.Second, faults: true}
	w.maxLoop = 2 + w.r.IntN(3)
	w.light = w.r.IntN(10) == 0
	n := 3 + w.r.IntN(3)
	if w.light {
		n = 1
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("node%d", i+1)
	}
	// Powers 1..3, some seeds all equal.
	power := map[string]int{}
	if w.r.IntN(2) == 0 {
		for _, name := range names {
			power[name] = 1 + w.r.IntN(3)
		}
	}
	for _, name := range names {
		cfg := farm.Config{Node: name, Nodes: names, Power: power, MaxLoop: w.maxLoop,
			LoopInterval: w.interval, Checkers: farmCheckers, Light: w.light}
		fn := &farmNode{name: name, cfg: cfg, persisted: farm.Persistent{Started: w.r.IntN(2) == 0},
			lag: w.randomLag()}
		w.nodes = append(w.nodes, fn)
	}
	w.rep.Nodes, w.rep.Light = n, w.light
	for _, fn := range w.nodes {
		w.boot(fn)
	}
	// Start the nodes that were not already started, in a random order.
	for _, i := range w.r.Perm(n) {
		w.command(w.nodes[i], core.Command{Kind: core.CmdStart})
	}

	for i := 0; i < opts.FaultSteps && w.err == nil; i++ {
		w.now = w.now.Add(w.randomDelay())
		w.injectFaults()
		w.iterate()
	}
	if w.err != nil {
		return w.rep, w.err
	}
	w.recover()
	start := w.now
	for w.err == nil {
		w.now = w.now.Add(w.randomDelay())
		// Checkers keep reporting up, as healthy plugins do.
		for _, fn := range w.nodes {
			for _, c := range farmCheckers {
				w.step(fn, core.CheckerResult{At: w.now, Name: c.Name, Status: core.CheckUp})
			}
		}
		w.iterate()
		if w.err == nil && w.settled() {
			w.rep.RecoveredAfter = w.now.Sub(start)
			return w.rep, nil
		}
		if w.now.Sub(start) > opts.RecoverWithin {
			w.fail("no convergence within %s after the faults stopped: %s", opts.RecoverWithin, w.describe())
		}
	}
	return w.rep, w.err
}

func (w *farmWorld) randomDelay() time.Duration {
	return 50*time.Millisecond + time.Duration(w.r.IntN(950))*time.Millisecond
}

func (w *farmWorld) randomLag() time.Duration {
	return time.Duration(w.r.IntN(2000)) * time.Millisecond
}

func (w *farmWorld) tracef(format string, args ...any) {
	if w.opts.Trace != nil {
		w.opts.Trace(fmt.Sprintf("%8s ", w.now.Sub(farmEpoch)) + fmt.Sprintf(format, args...))
	}
}

func (w *farmWorld) fail(format string, args ...any) {
	if w.err == nil {
		w.err = &FarmViolation{Seed: w.opts.Seed, At: w.now.Sub(farmEpoch), What: fmt.Sprintf(format, args...)}
		w.tracef("VIOLATION: %s", w.err.What)
	}
}

// iterate runs one round: finished scripts report, membership news
// arrives, every live node ticks, then the converged partitions are checked.
func (w *farmWorld) iterate() {
	for _, fn := range w.nodes {
		if fn.alive && fn.running != nil && !fn.doneAt.After(w.now) {
			id, outcome := fn.running.ID, fn.outcome
			fn.running = nil
			if outcome != core.ScriptOK {
				w.rep.ScriptFailures++
			}
			w.step(fn, core.ScriptDone{At: w.now, ID: id, Outcome: outcome, Message: "simulated " + outcome.String()})
		}
	}
	w.gossip()
	for _, fn := range w.nodes {
		w.step(fn, core.Tick{Now: w.now})
	}
	w.gossip()
	w.checkConverged()
}

func (w *farmWorld) injectFaults() {
	r := w.r
	alive := w.alive()
	switch {
	case w.crashNext != nil && w.crashNext.alive:
		// A crash right after a checker action: the max_loop count must
		// survive the reboot.
		w.crash(w.crashNext)
		w.crashNext = nil
	case r.IntN(100) < 1 && len(alive) > 0:
		fn := alive[r.IntN(len(alive))]
		w.crash(fn)
	case r.IntN(100) < 5:
		for _, fn := range w.nodes {
			if !fn.alive {
				w.boot(fn)
				break
			}
		}
	case r.IntN(100) < 1 && len(w.nodes) > 1:
		// Split into two random groups.
		w.rep.Partitions++
		for _, fn := range w.nodes {
			fn.part = r.IntN(2)
		}
		w.tracef("partition %s", w.partitions())
	case r.IntN(100) < 2:
		for _, fn := range w.nodes {
			fn.part = 0
		}
		w.tracef("heal")
	}
	if r.IntN(100) < 3 && len(w.nodes) > 0 {
		fn := w.nodes[r.IntN(len(w.nodes))]
		fn.lag = w.randomLag()
	}
	// Checker flaps, mostly on UP nodes, where they act.
	if r.IntN(100) < 40 && len(alive) > 0 {
		fn := alive[r.IntN(len(alive))]
		if up := w.upNodes(); len(up) > 0 && r.IntN(4) > 0 {
			fn = up[r.IntN(len(up))]
		}
		c := farmCheckers[r.IntN(len(farmCheckers))]
		st := core.CheckUp
		if r.IntN(100) < 35 {
			st = core.CheckDown
			w.rep.CheckerDowns++
		}
		w.step(fn, core.CheckerResult{At: w.now, Name: c.Name, Status: st, Message: "simulated"})
	}
	// Admin commands, sometimes in storms.
	burst := 0
	switch {
	case r.IntN(1000) < 5:
		burst = 5 + r.IntN(6)
	case r.IntN(100) < 5:
		burst = 1
	}
	for range burst {
		if alive = w.alive(); len(alive) == 0 {
			break
		}
		fn := alive[r.IntN(len(alive))]
		kind := core.CommandKind(r.IntN(int(core.CmdErrdOff) + 1))
		cmd := core.Command{Kind: kind}
		if kind == core.CmdCheckerOn || kind == core.CmdCheckerOff {
			switch r.IntN(3) {
			case 0:
				cmd.Checker = farmCheckers[r.IntN(len(farmCheckers))].Name
			case 1:
				cmd.Checker = "nosuch"
			}
		}
		w.command(fn, cmd)
	}
}

// recover ends the faults: heal, boot every node, turn checkers back on and
// ask every node to start (which also resets max_loop).
func (w *farmWorld) recover() {
	w.faults = false
	w.tracef("faults stop")
	for _, fn := range w.nodes {
		fn.part = 0
		fn.lag = time.Duration(w.r.IntN(1000)) * time.Millisecond
		if fn.running != nil {
			fn.outcome = core.ScriptOK
		}
	}
	for _, fn := range w.nodes {
		if !fn.alive {
			w.boot(fn)
		}
	}
	for _, fn := range w.nodes {
		w.command(fn, core.Command{Kind: core.CmdCheckerOn})
		w.command(fn, core.Command{Kind: core.CmdErrdOn})
		w.command(fn, core.Command{Kind: core.CmdStart})
	}
}

func (w *farmWorld) alive() []*farmNode {
	var a []*farmNode
	for _, fn := range w.nodes {
		if fn.alive {
			a = append(a, fn)
		}
	}
	return a
}

func (w *farmWorld) upNodes() []*farmNode {
	var a []*farmNode
	for _, fn := range w.nodes {
		if fn.alive && fn.ann.State == core.Up {
			a = append(a, fn)
		}
	}
	return a
}

func (w *farmWorld) partitions() string {
	var groups [2][]string
	for _, fn := range w.nodes {
		groups[fn.part] = append(groups[fn.part], fn.name)
	}
	return fmt.Sprint(groups[0], groups[1])
}

func (w *farmWorld) crash(fn *farmNode) {
	w.rep.Crashes++
	w.tracef("%s crashes (power loss: application, VIP and rules gone)", fn.name)
	fn.alive, fn.m, fn.running, fn.vip, fn.rules = false, nil, nil, false, nil
	fn.known, fn.due = nil, nil
}

func (w *farmWorld) boot(fn *farmNode) {
	w.tracef("%s boots (started=%t loop=%d)", fn.name, fn.persisted.Started, len(fn.persisted.LoopTimes))
	fn.m = farm.New(fn.cfg, fn.persisted)
	fn.alive = true
	fn.known, fn.due = map[string]core.MemberUpdate{}, map[string]time.Time{}
	fn.ann = fn.m.Announce()
	w.step(fn, core.Tick{Now: w.now})
}

func (w *farmWorld) command(fn *farmNode, cmd core.Command) {
	if !fn.alive {
		return
	}
	cmd.At, cmd.Origin = w.now, "sim"
	w.rep.Commands++
	switch cmd.Kind {
	case core.CmdStart, core.CmdStop, core.CmdForceStop, core.CmdRestart, core.CmdStopStart:
		// The machine resets max_loop when it runs one of these (at once,
		// or when the running scripts finish; no checker acts meanwhile).
		fn.loop = nil
	}
	w.step(fn, cmd)
}

// visible: membership between two live nodes of the same partition.
func (w *farmWorld) visible(a, b *farmNode) bool {
	return a != b && a.alive && b.alive && a.part == b.part && !w.light
}

// gossip delivers membership news whose delay has passed: each observer
// learns the latest announcement of each subject it sees (intermediate
// states may be skipped, as with gossip), or that it is gone.
func (w *farmWorld) gossip() {
	for pass := 0; pass < 50; pass++ {
		delivered := false
		for _, obs := range w.nodes {
			if !obs.alive {
				continue
			}
			for _, sub := range w.nodes {
				if sub == obs {
					continue
				}
				old, known := obs.known[sub.name]
				see := w.visible(obs, sub)
				if (see && known && sameFarmAnnounce(old, sub.ann)) || (!see && !known) {
					delete(obs.due, sub.name)
					continue
				}
				due, ok := obs.due[sub.name]
				if !ok {
					due = w.now.Add(obs.lag)
					if !see {
						// Failure detection takes longer than gossip.
						due = due.Add(500 * time.Millisecond)
					}
					obs.due[sub.name] = due
				}
				if due.After(w.now) {
					continue
				}
				delete(obs.due, sub.name)
				delivered = true
				switch {
				case !see:
					delete(obs.known, sub.name)
					w.step(obs, core.MemberDown{At: w.now, Node: sub.name})
				case !known:
					obs.known[sub.name] = sub.ann
					up := core.MemberUp(sub.ann)
					up.At = w.now
					w.step(obs, up)
				default:
					obs.known[sub.name] = sub.ann
					u := sub.ann
					u.At = w.now
					w.step(obs, u)
				}
			}
		}
		if !delivered {
			return
		}
	}
	w.fail("membership did not settle within 50 delivery passes")
}

func sameFarmAnnounce(a, b core.MemberUpdate) bool {
	if a.State != b.State || a.Readiness != b.Readiness || a.Power != b.Power || a.Owner != b.Owner {
		return false
	}
	if (a.Buckets == nil) != (b.Buckets == nil) {
		return false
	}
	return a.Buckets == b.Buckets || *a.Buckets == *b.Buckets
}

// step feeds one event to a live node, executes its actions in the fake
// executor and checks the per-step invariants.
func (w *farmWorld) step(fn *farmNode, ev core.Event) {
	if !fn.alive || w.err != nil {
		return
	}
	w.rep.MachineSteps++
	if w.opts.Trace != nil {
		w.tracef("%s <- %s", fn.name, describeFarmEvent(ev))
	}
	acts := fn.m.Step(ev)
	for _, a := range acts {
		if w.opts.Trace != nil {
			w.tracef("%s -> %s", fn.name, describeFarmAction(a))
		}
		w.execute(fn, a)
	}
	// Keep the previous announcement when nothing changed, so that the
	// membership compares pointers instead of tables.
	if ann := fn.m.Announce(); !sameFarmAnnounce(ann, fn.ann) {
		fn.ann = ann
	}
	// The VIP and the rules go together, only on an UP node, and the
	// machine's view of them matches what it asked the executor for.
	if fn.vip != (fn.rules != nil) {
		w.fail("%s holds the VIP=%t but balancing rules=%t", fn.name, fn.vip, fn.rules != nil)
	}
	if fn.vip && fn.ann.State != core.Up {
		w.fail("%s holds the VIP while %s", fn.name, fn.ann.State)
	}
	if fn.ann.Owner != fn.vip {
		w.fail("%s announces owner=%t but holds the VIP=%t", fn.name, fn.ann.Owner, fn.vip)
	}
	if fn.vip && *fn.ann.Buckets != *fn.rules {
		w.fail("%s announces a table that differs from its installed rules", fn.name)
	}
}

func (w *farmWorld) execute(fn *farmNode, a core.Action) {
	switch a := a.(type) {
	case core.EnterState:
		if a.Cause == "" {
			w.fail("%s entered %s %s without a cause", fn.name, a.State, a.Readiness)
		}
		w.countLoop(fn, a)
	case core.RunScript:
		if fn.running != nil {
			w.fail("%s starts %s #%d while %s #%d runs", fn.name, a.Script, a.ID, fn.running.Script, fn.running.ID)
		}
		r := a
		fn.running = &r
		fn.doneAt = w.now.Add(time.Duration(100+w.r.IntN(4900)) * time.Millisecond)
		fn.outcome = core.ScriptOK
		if w.faults {
			switch p := w.r.IntN(100); {
			case p < 7:
				fn.outcome = core.ScriptFailed
			case p < 10:
				fn.outcome = core.ScriptTimedOut
			}
		}
	case core.SetVIP:
		if w.light {
			w.fail("light module %s asked for a VIP", fn.name)
		}
		if fn.vip {
			w.fail("%s: SetVIP while it holds the VIP", fn.name)
		}
		fn.vip = true
	case core.UnsetVIP:
		if !fn.vip {
			w.fail("%s: UnsetVIP without the VIP", fn.name)
		}
		fn.vip = false
	case core.SetBalancing:
		if w.light {
			w.fail("light module %s asked for balancing rules", fn.name)
		}
		if a.Owner != fn.name {
			w.fail("%s installs rules for owner %s", fn.name, a.Owner)
		}
		t := a.Buckets
		fn.rules = &t
	case core.ClearBalancing:
		fn.rules = nil
	case core.Persist:
		p, ok := a.Data.(farm.Persistent)
		if !ok {
			w.fail("%s persists %T", fn.name, a.Data)
			return
		}
		fn.persisted = p
	case core.Log, core.Refuse:
	default:
		w.fail("%s: unexpected action %T", fn.name, a)
	}
}

// countLoop enforces max_loop from outside the machine: checker actions
// (their causes begin with "checker <name> down") since the last admin
// command, within the loop interval, never exceed max_loop, and the
// max_loop stop is a stop.
func (w *farmWorld) countLoop(fn *farmNode, a core.EnterState) {
	if !strings.HasPrefix(a.Cause, "checker ") || a.Readiness != core.Transient {
		return
	}
	if strings.Contains(a.Cause, "max_loop reached") {
		w.rep.MaxLoopStops++
		if a.State != core.Stop {
			w.fail("%s: max_loop reached but it enters %s", fn.name, a.State)
		}
		return
	}
	if a.State == core.Up && strings.Contains(a.Cause, "starting again") {
		return // second half of a stopstart
	}
	w.rep.CheckerActions++
	if w.faults && w.r.IntN(100) < 15 {
		w.crashNext = fn
	}
	cut := w.now.Add(-w.interval)
	fn.loop = slices.DeleteFunc(fn.loop, func(t time.Time) bool { return !t.After(cut) })
	fn.loop = append(fn.loop, w.now)
	w.rep.MaxLoopPerWindow = max(w.rep.MaxLoopPerWindow, len(fn.loop))
	if len(fn.loop) > w.maxLoop {
		w.fail("%s: %d checker actions within %s (max_loop %d): %s", fn.name, len(fn.loop), w.interval, w.maxLoop, a.Cause)
	}
}

// converged reports whether every node of the partition has been told the
// latest about every node.
func (w *farmWorld) converged(part []*farmNode) bool {
	for _, obs := range part {
		for _, sub := range w.nodes {
			if sub == obs {
				continue
			}
			old, known := obs.known[sub.name]
			see := w.visible(obs, sub)
			if see != known || (see && !sameFarmAnnounce(old, sub.ann)) {
				return false
			}
		}
	}
	return true
}

// checkConverged checks the invariants that hold once views agree, in each
// partition whose views have converged.
func (w *farmWorld) checkConverged() {
	if w.err != nil || w.light {
		return
	}
	for p := range 2 {
		var part []*farmNode
		for _, fn := range w.nodes {
			if fn.alive && fn.part == p {
				part = append(part, fn)
			}
		}
		if len(part) == 0 || !w.converged(part) {
			continue
		}
		w.rep.ConvergedChecks++
		w.checkPartition(part)
	}
}

func (w *farmWorld) checkPartition(part []*farmNode) {
	var holders []string
	ready := map[string]int{}
	for _, fn := range part {
		if fn.vip {
			holders = append(holders, fn.name)
		}
		if fn.ann.State == core.Up && fn.ann.Readiness == core.Ready {
			ready[fn.name] = fn.ann.Power
		}
	}
	for _, fn := range part {
		if st := fn.ann.State; st == core.Stop || st == core.Wait {
			if s := fn.m.Status(); s.Cause == "" {
				w.fail("%s is %s without a cause", fn.name, st)
			}
		}
	}
	if len(holders) > 1 {
		w.fail("converged partition %v: %d nodes hold the VIP: %v", farmNodeNames(part), len(holders), holders)
		return
	}
	if len(ready) > 0 && len(holders) == 0 {
		w.fail("converged partition %v: UP Ready nodes %v but nobody holds the VIP", farmNodeNames(part), ready)
		return
	}
	if len(holders) == 0 {
		return
	}
	holder := holders[0]
	if holder != w.owner {
		w.rep.OwnerChanges++
		w.owner = holder
	}
	var want core.BucketTable
	for _, fn := range part {
		if fn.name == holder {
			want = *fn.rules
		}
	}
	for _, fn := range part {
		s := fn.m.Status()
		if s.Owner != holder {
			w.fail("converged partition %v: %s sees owner %q, %s holds the VIP", farmNodeNames(part), fn.name, s.Owner, holder)
			return
		}
		if s.Buckets != want {
			w.fail("converged partition %v: %s's table differs from the rules %s installed (%d buckets)",
				farmNodeNames(part), fn.name, holder, farm.Moved(want, s.Buckets))
			return
		}
	}
	counts := farm.BucketCounts(want)
	total := 0
	for _, p := range ready {
		total += p
	}
	for name, c := range counts {
		if _, ok := ready[name]; !ok {
			w.fail("converged partition %v: the table gives %d buckets to %s, which is not UP Ready", farmNodeNames(part), c, name)
			return
		}
	}
	if len(ready) > 0 {
		served := 0
		for name, p := range ready {
			c := counts[name]
			served += c
			if d := c*total - core.NumBuckets*p; d >= total || -d >= total {
				w.fail("converged partition %v: %s (power %d of %d) serves %d buckets", farmNodeNames(part), name, p, total, c)
				return
			}
		}
		if served != core.NumBuckets {
			w.fail("converged partition %v: %d buckets served", farmNodeNames(part), served)
		}
	}
}

// settled: after the faults, every node is UP Ready and idle, and the farm
// is one converged partition (whose invariants checkConverged verified).
func (w *farmWorld) settled() bool {
	for _, fn := range w.nodes {
		if !fn.alive || fn.running != nil || fn.ann.State != core.Up || fn.ann.Readiness != core.Ready {
			return false
		}
	}
	if w.light {
		return true
	}
	if !w.converged(w.nodes) {
		return false
	}
	holders := 0
	for _, fn := range w.nodes {
		if fn.vip {
			holders++
			if c := farm.BucketCounts(*fn.rules); len(c) != len(w.nodes) {
				return false
			}
		}
	}
	return holders == 1
}

func (w *farmWorld) describe() string {
	var parts []string
	for _, fn := range w.nodes {
		if !fn.alive {
			parts = append(parts, fn.name+" down")
			continue
		}
		s := fn.m.Status()
		d := fmt.Sprintf("%s %s %s owner=%q vip=%t running=%q (%s)", fn.name, s.State, s.Readiness, s.Owner, fn.vip, s.Running, s.Cause)
		parts = append(parts, d)
	}
	return strings.Join(parts, "; ")
}

func farmNodeNames(ns []*farmNode) []string {
	out := make([]string, len(ns))
	for i, fn := range ns {
		out[i] = fn.name
	}
	return out
}

func describeFarmEvent(ev core.Event) string {
	switch ev := ev.(type) {
	case core.Tick:
		return "tick"
	case core.CheckerResult:
		return fmt.Sprintf("checker %s %s", ev.Name, ev.Status)
	case core.Command:
		if ev.Checker != "" {
			return fmt.Sprintf("command %s %s", ev.Kind, ev.Checker)
		}
		return "command " + ev.Kind.String()
	case core.ScriptDone:
		return fmt.Sprintf("script #%d %s", ev.ID, ev.Outcome)
	case core.MemberUp:
		return fmt.Sprintf("member-up %s %s %s owner=%t", ev.Node, ev.State, ev.Readiness, ev.Owner)
	case core.MemberUpdate:
		return fmt.Sprintf("member-update %s %s %s owner=%t", ev.Node, ev.State, ev.Readiness, ev.Owner)
	case core.MemberDown:
		return "member-down " + ev.Node
	}
	return fmt.Sprintf("%T", ev)
}

func describeFarmAction(a core.Action) string {
	switch a := a.(type) {
	case core.EnterState:
		return fmt.Sprintf("enter %s %s: %s", a.State, a.Readiness, a.Cause)
	case core.RunScript:
		return fmt.Sprintf("run #%d %s %s force=%t", a.ID, a.Script, strings.Join(a.Args, " "), a.Force)
	case core.Log:
		return fmt.Sprintf("log %s: %s", a.Level, a.Text)
	case core.SetBalancing:
		return fmt.Sprintf("set-balancing %v", farm.BucketCounts(a.Buckets))
	case core.Refuse:
		return fmt.Sprintf("refuse %s: %s", a.Command, a.Reason)
	case core.Persist:
		p, _ := a.Data.(farm.Persistent)
		return fmt.Sprintf("persist started=%t loop=%d", p.Started, len(p.LoopTimes))
	}
	return fmt.Sprintf("%T", a)
}
