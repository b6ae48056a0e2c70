// Command simdemo narrates a SIMULATED mirror failover: two real
// core/mirror state machines (node1, node2) driven by the core simulator
// (core/sim) with its fake clock, network, script executor and resync. No
// real network, process or clock is involved, so the run is the same every
// time. scripts/demo.sh runs it as step 3 of the demo.
package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/core/sim"
)

// heartbeatTimeout is the module's heartbeat timeout; the world's other
// timings are core/sim's transcript defaults (tick and heartbeat every
// 100ms, 10ms network delay, scripts 100ms, resyncs 500ms).
const heartbeatTimeout = 500 * time.Millisecond

func main() {
	if _, err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "simdemo:", err)
		os.Exit(1)
	}
}

// narrator prints what the machines are fed and decide as a timeline.
type narrator struct {
	w       *sim.MirrorWorld
	out     io.Writer
	scripts map[string]map[uint64]string // node -> RunScript ID -> script
	gens    map[string]string            // generation hex ID -> g1, g2...
	// crashAt..takeoverAt is the failover the demo measures: from node1's
	// crash to node2 serving again (ALONE/Ready).
	crashAt, takeoverAt time.Time
}

var hexGen = regexp.MustCompile(`\b[0-9a-f]{16}\b`)

func (d *narrator) line(node, format string, args ...any) {
	text := hexGen.ReplaceAllStringFunc(fmt.Sprintf(format, args...), func(id string) string {
		if _, ok := d.gens[id]; !ok {
			d.gens[id] = "g" + strconv.Itoa(len(d.gens)+1)
		}
		return d.gens[id]
	})
	fmt.Fprintf(d.out, "%7.3fs  %-5s  %s\n", d.w.Now().Sub(d.w.Start()).Seconds(), node, text)
}

func (d *narrator) say(title, words string) {
	fmt.Fprintf(d.out, "\n== %s\n   %s\n", title, words)
}

func (d *narrator) onEvent(n *sim.MirrorNode, ev core.Event) {
	switch e := ev.(type) {
	case core.Command:
		d.line(n.Name, "<- halo %s (%s)", e.Kind, e.Origin)
	case core.ScriptDone:
		d.line(n.Name, "   %s finished: %s", d.scripts[n.Name][e.ID], e.Outcome)
	case mirror.ResyncDone:
		d.line(n.Name, "   resync finished")
	}
}

func (d *narrator) onAction(n *sim.MirrorNode, a core.Action) {
	switch a := a.(type) {
	case core.EnterState:
		d.line(n.Name, "=> %s/%s: %s", a.State, a.Readiness, a.Cause)
		if a.State == core.Alone && a.Readiness == core.Ready && !d.crashAt.IsZero() && d.takeoverAt.IsZero() {
			d.takeoverAt = d.w.Now()
		}
	case core.RunScript:
		d.scripts[n.Name][a.ID] = a.Script
		d.line(n.Name, "run %s %v", a.Script, a.Args)
	case core.SetVIP:
		d.line(n.Name, "VIP set")
	case core.UnsetVIP:
		d.line(n.Name, "VIP unset")
	case mirror.StartResync:
		kind := "incremental: only what changed"
		if a.Full {
			kind = "full"
		}
		d.line(n.Name, "resync from %s (%s)", a.Peer, kind)
	case core.Log:
		// Info lines repeat what state changes say; warnings explain them.
		if a.Level != "info" {
			d.line(n.Name, "%s: %s", a.Level, a.Text)
		}
	}
}

// summary prints each node's state, its VIP and, when it waits, why.
func (d *narrator) summary() {
	for _, n := range d.w.Nodes {
		switch {
		case !n.Up:
			fmt.Fprintf(d.out, "   -> %s: down\n", n.Name)
		case n.State == core.Wait:
			reason, _ := n.M.Reason()
			fmt.Fprintf(d.out, "   -> %s: %s/%s (%s)\n", n.Name, n.State, n.Ready, reason)
		default:
			vip := ""
			if n.VIP {
				vip = ", holds the VIP"
			}
			fmt.Fprintf(d.out, "   -> %s: %s/%s%s\n", n.Name, n.State, n.Ready, vip)
		}
	}
}

// result is what a run ends with, for the test.
type result struct {
	world    *sim.MirrorWorld
	failover time.Duration // node1's crash to node2 ALONE/Ready
}

// run plays the four steps of the demo, printing the timeline to out.
func run(out io.Writer) (result, error) {
	opt := sim.DefaultMirrorOptions(mirror.Config{
		Networks: []string{"default"}, HeartbeatTimeout: heartbeatTimeout, Failover: true,
	})
	opt.WriteEvery = 100 * time.Millisecond // the application writes; the oracle counts lost writes
	w := sim.NewMirrorWorld(opt)
	d := &narrator{w: w, out: out, gens: map[string]string{},
		scripts: map[string]map[uint64]string{"node1": {}, "node2": {}}}
	w.OnEvent, w.OnAction = d.onEvent, d.onAction
	node1, node2 := w.Nodes[0], w.Nodes[1]

	fmt.Fprintln(out, "SIMULATION: two real halo mirror state machines (node1, node2) on a simulated network and clock.")
	fmt.Fprintf(out, "Heartbeat every %v, heartbeat timeout %v; scripts and resyncs are simulated.\n", opt.HeartbeatEvery, heartbeatTimeout)

	d.say("1. First start", "Both nodes start with data nobody vouches for, so both wait; the admin picks node1.")
	w.Boot(node1)
	w.Boot(node2)
	w.RunFor(time.Second)
	d.summary()
	w.Command(node1, core.Command{Kind: core.CmdPrim})
	w.RunFor(2 * time.Second)
	d.summary()
	if err := expect(node1, core.Prim, node2, core.Second); err != nil {
		return result{world: w}, fmt.Errorf("first start: %w", err)
	}

	d.say("2. node1 crashes", "node1 loses power: its heartbeats stop and its memory is gone; node2 takes over once the timeout expires.")
	d.crashAt = w.Now()
	d.line(node1.Name, "** crash (power off)")
	w.Crash(node1)
	w.RunFor(2 * time.Second)
	d.summary()
	if err := expect(node1, core.Stop, node2, core.Alone); err != nil {
		return result{world: w}, fmt.Errorf("crash: %w", err)
	}

	d.say("3. node1 comes back", "node1 restarts from what it saved on disk, catches up on what changed while it was away, and becomes SECOND.")
	w.Boot(node1)
	w.RunFor(2 * time.Second)
	d.summary()
	if err := expect(node1, core.Second, node2, core.Prim); err != nil {
		return result{world: w}, fmt.Errorf("restart: %w", err)
	}

	d.say("4. halo swap", "The admin moves the application back to node1: node2 stops it first, then node1 starts it.")
	w.Command(node2, core.Command{Kind: core.CmdSwap})
	w.RunFor(time.Second)
	d.summary()
	if err := expect(node1, core.Prim, node2, core.Second); err != nil {
		return result{world: w}, fmt.Errorf("swap: %w", err)
	}

	if v := w.Oracle.Violations; len(v) > 0 {
		return result{world: w}, fmt.Errorf("simulator invariant violated: %s", v[0])
	}
	fmt.Fprintf(out, "\napplication writes acknowledged: %d; missing on node1: %d, on node2: %d\n",
		w.Oracle.Stats.Writes, w.Oracle.MissingWrites(node1), w.Oracle.MissingWrites(node2))
	failover := d.takeoverAt.Sub(d.crashAt)
	fmt.Fprintf(out, "simulated failover time: %d ms (heartbeat timeout %d ms)\n",
		failover.Milliseconds(), heartbeatTimeout.Milliseconds())
	return result{world: w, failover: failover}, nil
}

// expect checks that both nodes reached the states a step must end in, and
// are Ready (a crashed node is STOP).
func expect(a *sim.MirrorNode, sa core.State, b *sim.MirrorNode, sb core.State) error {
	for _, c := range []struct {
		n    *sim.MirrorNode
		want core.State
	}{{a, sa}, {b, sb}} {
		if c.n.State != c.want || c.n.Up && c.n.Ready != core.Ready {
			return fmt.Errorf("%s is %s/%s, want %s/Ready", c.n.Name, c.n.State, c.n.Ready, c.want)
		}
	}
	return nil
}
