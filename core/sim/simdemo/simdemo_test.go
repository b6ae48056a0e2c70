package main

import (
	"strings"
	"testing"

	"github.com/halo-ha/halo/core"
)

// TestDemo runs the demo as scripts/demo.sh does and checks that it still
// tells the story it claims: node2 takes over ALONE after node1's crash, the
// swap stops the application on node2 before starting it on node1, no
// acknowledged write is lost, and the output is the same on every run.
func TestDemo(t *testing.T) {
	var out strings.Builder
	res, err := run(&out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()

	node1, node2 := res.world.Nodes[0], res.world.Nodes[1]
	if node1.State != core.Prim || node1.Ready != core.Ready || !node1.VIP {
		t.Errorf("node1 ends %s/%s vip=%v, want PRIM/Ready holding the VIP", node1.State, node1.Ready, node1.VIP)
	}
	if node2.State != core.Second || node2.Ready != core.Ready || node2.VIP {
		t.Errorf("node2 ends %s/%s vip=%v, want SECOND/Ready without the VIP", node2.State, node2.Ready, node2.VIP)
	}

	if !strings.Contains(text, "node2  => ALONE/Ready: start_prim done") {
		t.Errorf("output does not show node2 taking over ALONE:\n%s", text)
	}
	if !strings.Contains(text, "resync from node2 (incremental") {
		t.Errorf("output does not show node1's incremental resync:\n%s", text)
	}
	swap := text[strings.Index(text, "== 4."):]
	stopped := strings.Index(swap, "node2     stop_prim finished: ok")
	started := strings.Index(swap, "node1  run start_prim")
	if stopped < 0 || started < 0 || stopped > started {
		t.Errorf("swap: want node2's stop_prim to finish before node1 runs start_prim:\n%s", swap)
	}

	timeout := heartbeatTimeout
	if res.failover < timeout || res.failover > 3*timeout {
		t.Errorf("failover took %v, want between the heartbeat timeout %v and 3x it", res.failover, timeout)
	}
	if !strings.Contains(text, "simulated failover time: ") {
		t.Errorf("output lacks the failover time line:\n%s", text)
	}
	if res.world.Oracle.Stats.Writes == 0 {
		t.Error("the simulated application acknowledged no write: the no-loss claim is empty")
	}
	for _, n := range res.world.Nodes {
		if miss := res.world.Oracle.MissingWrites(n); miss != 0 {
			t.Errorf("%s lacks %d acknowledged writes", n.Name, miss)
		}
	}

	var again strings.Builder
	if _, err := run(&again); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if again.String() != text {
		t.Errorf("output differs between two runs: the demo is not deterministic")
	}
}
