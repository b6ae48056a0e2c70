package farm

import (
	"testing"
	"time"

	"github.com/halo-ha/halo/core"
)

// liveDriver steps a light machine and completes every script at once.
type liveDriver struct {
	t     *testing.T
	m     *Machine
	now   time.Time
	state core.State
	ready core.Readiness
}

func (d *liveDriver) step(ev core.Event) {
	d.t.Helper()
	queue := []core.Event{ev}
	for len(queue) > 0 {
		ev, queue = queue[0], queue[1:]
		for _, a := range d.m.Step(ev) {
			switch a := a.(type) {
			case core.EnterState:
				d.state, d.ready = a.State, a.Readiness
			case core.RunScript:
				queue = append(queue, core.ScriptDone{At: d.now, ID: a.ID, Outcome: core.ScriptOK})
			}
		}
	}
}

func (d *liveDriver) check(st core.CheckStatus) {
	d.now = d.now.Add(time.Second)
	d.step(core.CheckerResult{At: d.now, Name: "app", Status: st})
}

func newLiveDriver(t *testing.T, maxLoop int) *liveDriver {
	cfg := Config{Node: "n1", Nodes: []string{"n1"}, Light: true, MaxLoop: maxLoop, LoopInterval: time.Hour,
		Checkers: []core.CheckerSpec{{Name: "app", Type: "errd", Action: core.ActRestart, When: core.WhenBoth}}}
	d := &liveDriver{t: t, m: New(cfg, Persistent{}), now: time.Unix(1000, 0)}
	d.step(core.Tick{Now: d.now})
	d.step(core.Command{At: d.now, Kind: core.CmdStart, Origin: "test"})
	d.check(core.CheckUp)
	if d.state != core.Up || d.ready != core.Ready {
		t.Fatalf("after start: %v %v", d.state, d.ready)
	}
	return d
}

// SetLive changes max_loop and checker actions of a running machine: the
// next checker failure follows the new values.
func TestSetLive(t *testing.T) {
	restartTwice := func(d *liveDriver) {
		d.check(core.CheckDown) // 1st action: restart
		if d.state != core.Up {
			t.Fatalf("first failure: %v", d.state)
		}
		d.check(core.CheckUp)
		d.check(core.CheckDown) // 2nd action
	}

	// Control: max_loop 1 stops the module at the second action.
	d := newLiveDriver(t, 1)
	restartTwice(d)
	if d.state != core.Stop {
		t.Fatalf("max_loop 1, second failure: %v, want STOP", d.state)
	}

	// Raised live to 2: the second action restarts.
	d = newLiveDriver(t, 1)
	d.m.SetLive(Live{MaxLoop: 2, LoopInterval: time.Hour, Checkers: []core.CheckerSpec{{Name: "app", Action: core.ActRestart, When: core.WhenBoth}}})
	restartTwice(d)
	if d.state != core.Up || d.ready != core.Ready {
		t.Fatalf("max_loop raised to 2, second failure: %v %v, want UP Ready", d.state, d.ready)
	}

	// The checker's action changed live to stop: the first failure stops.
	d = newLiveDriver(t, 3)
	d.m.SetLive(Live{MaxLoop: 3, LoopInterval: time.Hour, Checkers: []core.CheckerSpec{{Name: "app", Action: core.ActStop, When: core.WhenBoth}}})
	d.check(core.CheckDown)
	if d.state != core.Stop {
		t.Fatalf("action changed to stop: %v, want STOP", d.state)
	}
}
