package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/farm"
	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/internal/config"
)

// reconfState is the runner's part of live reconfiguration.
type reconfState struct {
	// reconf carries a new configuration to the event loop, which applies
	// it between two steps: the machine, the checkers and the script
	// timeouts change with no step seeing half of it.
	reconf chan reconfReq
	live   liveState
}

type reconfReq struct {
	mod   *config.Module
	reply chan error
}

// liveState is what live reconfiguration changes in a runner.
type liveState struct {
	// mod is the configuration applied last (nil: r.mod, the one the
	// runner was built with). r.mod itself never changes: what differs
	// between them is only what may change live, which its readers take
	// from config().
	mod atomic.Pointer[config.Module]
	// running is set once the event loop runs; before, a change is
	// applied by the caller (nothing else touches the runner yet).
	running atomic.Bool
	// Checker goroutines of the current configuration: cancelled and
	// replaced when their timings change. Event loop only.
	checkersWG     *sync.WaitGroup
	cancelCheckers context.CancelFunc
}

// config returns the module's configuration as applied now.
func (r *moduleRunner) config() *config.Module {
	if m := r.live.mod.Load(); m != nil {
		return m
	}
	return r.mod
}

// startCheckers starts one goroutine per checker, in wg; the event loop
// calls it when it starts and after a live change of checker timings.
func (r *moduleRunner) startCheckers(ctx context.Context, wg *sync.WaitGroup) {
	cctx, cancel := context.WithCancel(ctx)
	r.live.checkersWG, r.live.cancelCheckers = wg, cancel
	for _, c := range r.checkers {
		wg.Add(1)
		go func() { defer wg.Done(); r.runChecker(cctx, c) }()
	}
	r.live.running.Store(true)
}

// reconfigure applies mod, which differs from the running configuration
// only in what may change live (diffModules), on the event loop.
func (r *moduleRunner) reconfigure(ctx context.Context, mod *config.Module) error {
	if !r.live.running.Load() {
		return r.applyLive(ctx, mod)
	}
	req := reconfReq{mod: mod, reply: make(chan error, 1)}
	select {
	case r.reconf <- req:
	case <-ctx.Done():
		return fmt.Errorf("apply configuration: %w", ctx.Err())
	}
	// The loop has it and answers once applied (between two steps, so
	// promptly): waiting regardless keeps the caller's view of what was
	// applied true, which an install's rollback depends on.
	return <-req.reply
}

// applyLive switches the runner to mod: max_loop, failover, checker
// actions and scopes in the machine; checker timings (their goroutines
// restart, keeping their plugin instances and last results); script
// timeouts. It runs on the event loop (or before it starts).
func (r *moduleRunner) applyLive(ctx context.Context, mod *config.Module) error {
	var specs []core.CheckerSpec
	for _, c := range mod.Checks {
		specs = append(specs, c.Spec())
	}
	statePath := filepath.Join(r.stateDir, "state.json")
	switch m := r.machine.(type) {
	case *mirror.Machine:
		m.SetLive(mirror.Live{Failover: mod.Failover, MaxLoop: mod.MaxLoop, LoopInterval: mod.LoopInterval, Checkers: specs})
		describe, persist := mirrorPersistence(mod, statePath)
		r.persist = persist
		sw, n := describe(m.Persistent())
		r.mu.Lock()
		r.status.Switches, r.status.Loop.Count = sw, n
		r.mu.Unlock()
	case *farm.Machine:
		m.SetLive(farm.Live{MaxLoop: mod.MaxLoop, LoopInterval: mod.LoopInterval, Checkers: specs})
		_, r.persist = farmPersistence(mod, statePath)
	default:
		return fmt.Errorf("apply configuration: %T machines cannot be reconfigured", r.machine)
	}
	r.mu.Lock()
	r.status.Loop.Max, r.status.Loop.Interval = mod.MaxLoop, mod.LoopInterval.String()
	r.mu.Unlock()

	retimed := false
	checkers := make([]Checker, len(r.checkers))
	for i, c := range r.checkers {
		if nc := mod.Check(c.Name); nc != nil && (nc.Interval != c.Interval || nc.Timeout != c.Timeout) {
			c.Interval, c.Timeout = nc.Interval, nc.Timeout
			retimed = true
		}
		checkers[i] = c
	}
	r.checkers = checkers
	r.live.mod.Store(mod)
	if retimed && r.live.running.Load() {
		// The old goroutines end at their next select (a result one was
		// handing over may still arrive: it is a genuine result).
		r.live.cancelCheckers()
		r.startCheckers(ctx, r.live.checkersWG)
	}
	// A tick lets the machine act on the new values now (a failover
	// switched back on while the peer is gone) rather than at the next.
	if r.live.running.Load() {
		r.step(ctx, core.Tick{Now: time.Now()})
	}
	return nil
}
