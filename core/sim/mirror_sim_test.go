package sim

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const defaultMirrorSeeds = 1000

// TestMirrorSim runs the mirror simulator over many seeds (default 1000):
// two real machines, random faults (crashes, freezes, partitions of one or
// all networks, slow and lossy links, witness loss, stuck replication,
// checker flaps, failing scripts, command storms), invariants after every
// step, then repair and convergence. A failure prints the seed and the
// command that replays it with a full trace.
func TestMirrorSim(t *testing.T) {
	if seed, ok := flagValue(t, "seed"); ok {
		opt := MirrorSimOptions{Seed: seed}
		if testing.Verbose() {
			opt.Trace = func(line string) { t.Log(line) }
		}
		rep, err := RunMirror(opt)
		t.Logf("seed %d: %s", seed, rep.Config)
		t.Logf("converged=%v in %v; needs admin: %q; stats %+v", rep.Converged, rep.ConvergedIn, rep.NeedsAdmin, rep.Stats)
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	seeds := uint64(defaultMirrorSeeds)
	if n, ok := flagValue(t, "seeds"); ok {
		seeds = n
	}
	start := time.Now()
	reports := make([]MirrorSimReport, seeds+1)
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
				reports[seed], errs[seed] = RunMirror(MirrorSimOptions{Seed: seed})
				if errs[seed] != nil {
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	var total MirrorSimReport
	converged, admin := 0, 0
	var slowest time.Duration
	for seed := uint64(1); seed <= seeds; seed++ {
		if err := errs[seed]; err != nil {
			var se *MirrorSimError
			if errors.As(err, &se) {
				t.Fatalf("%v", se)
			}
			t.Fatalf("seed %d: %v", seed, err)
		}
		r := reports[seed]
		total.Steps += r.Steps
		total.Crashes += r.Crashes
		total.Freezes += r.Freezes
		total.Cuts += r.Cuts
		total.Commands += r.Commands
		total.CheckerFlaps += r.CheckerFlaps
		total.ScriptFaults += r.ScriptFaults
		total.Stats.Writes += r.Stats.Writes
		total.Stats.Failovers += r.Stats.Failovers
		total.Stats.Quarantines += r.Stats.Quarantines
		total.Stats.Resyncs += r.Stats.Resyncs
		total.Stats.AcceptedLoss += r.Stats.AcceptedLoss
		total.Stats.MaxOverlap = max(total.Stats.MaxOverlap, r.Stats.MaxOverlap)
		if r.Converged {
			converged++
			slowest = max(slowest, r.ConvergedIn)
		} else {
			admin++
		}
	}
	t.Logf("%d seeds in %v: %d machine steps; %d crashes, %d freezes, %d cuts, %d commands, %d checker flaps, %d script faults",
		seeds, time.Since(start).Round(time.Millisecond), total.Steps, total.Crashes, total.Freezes, total.Cuts,
		total.Commands, total.CheckerFlaps, total.ScriptFaults)
	t.Logf("%d writes, %d serving starts, %d resyncs, %d quarantines, %d writes lost by admin/sync_delta choice; longest both-serving overlap %v",
		total.Stats.Writes, total.Stats.Failovers, total.Stats.Resyncs, total.Stats.Quarantines, total.Stats.AcceptedLoss, total.Stats.MaxOverlap)
	t.Logf("%d converged to PRIM/SECOND (slowest %v after repair), %d wait for an administrator", converged, slowest, admin)
	// A simulator whose faults never happen proves nothing.
	if seeds >= 100 {
		for what, n := range map[string]int{"crashes": total.Crashes, "freezes": total.Freezes, "cuts": total.Cuts,
			"commands": total.Commands, "checker flaps": total.CheckerFlaps, "quarantines": total.Stats.Quarantines,
			"converged runs": converged} {
			if n == 0 {
				t.Errorf("no %s over %d seeds: the simulator does not exercise what it checks", what, seeds)
			}
		}
	}
}

// TestMirrorSimDeterministic: a seed replays exactly.
func TestMirrorSimDeterministic(t *testing.T) {
	for _, seed := range []uint64{1, 7, 42} {
		var a, b []string
		RunMirror(MirrorSimOptions{Seed: seed, Trace: func(l string) { a = append(a, l) }})
		RunMirror(MirrorSimOptions{Seed: seed, Trace: func(l string) { b = append(b, l) }})
		if len(a) != len(b) {
			t.Fatalf("seed %d: %d trace lines, then %d", seed, len(a), len(b))
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("seed %d: traces differ at line %d:\n%s\n%s", seed, i, a[i], b[i])
			}
		}
	}
}
