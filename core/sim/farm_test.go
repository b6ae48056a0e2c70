package sim

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const defaultFarmSeeds = 1000

// TestFarmSim runs the farm simulator over many seeds. A failure prints the
// seed, the exact command that replays it, and the end of its trace.
func TestFarmSim(t *testing.T) {
	if seed, ok := flagValue(t, "seed"); ok {
		runFarmSeed(t, seed, testing.Verbose())
		return
	}
	seeds := uint64(defaultFarmSeeds)
	if n, ok := flagValue(t, "seeds"); ok {
		seeds = n
	}
	// Seeds are independent and each run is deterministic: run them on
	// every core, then report the lowest failing seed.
	start := time.Now()
	reports := make([]FarmReport, seeds+1)
	errs := make([]error, seeds+1)
	var next atomic.Uint64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				seed := next.Add(1)
				if seed > seeds {
					return
				}
				reports[seed], errs[seed] = RunFarm(FarmOptions{Seed: seed})
				if errs[seed] != nil {
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	var total FarmReport
	for seed := uint64(1); seed <= seeds; seed++ {
		if errs[seed] != nil {
			runFarmSeed(t, seed, false) // replays it with a trace and fails
			return
		}
		rep := reports[seed]
		total.MachineSteps += rep.MachineSteps
		total.ConvergedChecks += rep.ConvergedChecks
		total.Crashes += rep.Crashes
		total.Partitions += rep.Partitions
		total.Commands += rep.Commands
		total.CheckerDowns += rep.CheckerDowns
		total.ScriptFailures += rep.ScriptFailures
		total.CheckerActions += rep.CheckerActions
		total.MaxLoopStops += rep.MaxLoopStops
		total.OwnerChanges += rep.OwnerChanges
		total.RecoveredAfter = max(total.RecoveredAfter, rep.RecoveredAfter)
		total.MaxLoopPerWindow = max(total.MaxLoopPerWindow, rep.MaxLoopPerWindow)
		if rep.Light {
			total.Nodes++ // count light runs here
		}
	}
	t.Logf("%d seeds in %s: %d machine steps, %d converged-partition checks, %d crashes, %d partitions, "+
		"%d commands, %d checker downs, %d script failures, %d checker actions, %d max_loop stops, "+
		"%d owner changes, %d light runs; slowest recovery %s",
		seeds, time.Since(start).Round(time.Millisecond), total.MachineSteps, total.ConvergedChecks, total.Crashes,
		total.Partitions, total.Commands, total.CheckerDowns, total.ScriptFailures, total.CheckerActions,
		total.MaxLoopStops, total.OwnerChanges, total.Nodes, total.RecoveredAfter)
	// A simulator whose faults never happen, or whose invariants are never
	// checked, proves nothing: make sure they did.
	if seeds >= 100 {
		for what, n := range map[string]int{"converged checks": total.ConvergedChecks, "crashes": total.Crashes,
			"partitions": total.Partitions, "script failures": total.ScriptFailures, "max_loop stops": total.MaxLoopStops,
			"owner changes": total.OwnerChanges, "checker actions": total.CheckerActions} {
			if n == 0 {
				t.Errorf("no %s over %d seeds: the simulator does not exercise what it checks", what, seeds)
			}
		}
	}
}

func runFarmSeed(t *testing.T, seed uint64, verbose bool) FarmReport {
	t.Helper()
	opts := FarmOptions{Seed: seed}
	if verbose {
		opts.Trace = func(line string) { t.Log(line) }
	}
	rep, err := RunFarm(opts)
	if err == nil {
		if verbose {
			t.Logf("seed %d: %+v", seed, rep)
		}
		return rep
	}
	// Replay with a trace (the run is deterministic) and show its end.
	var trace []string
	opts.Trace = func(line string) { trace = append(trace, line) }
	if _, err2 := RunFarm(opts); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("seed %d does not replay the same way: first %v, then %v", seed, err, err2)
	}
	if !verbose {
		if len(trace) > 80 {
			trace = trace[len(trace)-80:]
		}
		for _, line := range trace {
			t.Log(line)
		}
	}
	t.Fatalf("%v\nreplay: go test ./core/sim -run TestFarmSim -seed=%d -v", err, seed)
	return rep
}

// TestFarmSimDeterministic: the same seed gives the same run.
func TestFarmSimDeterministic(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		var a, b []string
		ra, errA := RunFarm(FarmOptions{Seed: seed, Trace: func(l string) { a = append(a, l) }})
		rb, errB := RunFarm(FarmOptions{Seed: seed, Trace: func(l string) { b = append(b, l) }})
		if fmt.Sprint(errA) != fmt.Sprint(errB) || ra != rb || len(a) != len(b) {
			t.Fatalf("seed %d: two runs differ (%d vs %d trace lines)", seed, len(a), len(b))
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("seed %d: runs diverge at line %d:\n%s\n%s", seed, i, a[i], b[i])
			}
		}
	}
}
