// Package mirror tests a two-node mirror module end to end, one test per
// row of SPEC §2.2 that does not need file replication: real `halo agent`
// processes in network namespaces (node1, node2), real UDP heartbeats on
// two networks, a real VIP seen by a client in a third namespace, real
// scripts protecting an HTTP service. Each test asserts both nodes'
// states, who holds the VIP as the client sees it (answers and ARP), the
// order of the scripts where it matters, and the event log's cause text.
//
// Run as root: go test ./test/mirror/ (HALO_BIN=<dir> reuses a build).
package mirror

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/test/mirror/mirrorbed"
	"github.com/halo-ha/halo/test/testbed"
)

const healthPort = 9010 // the cluster's default health_port

// SPEC: first start of a new module on both nodes: both WAIT ("data may not
// be up to date"); `halo prim` on the node with the good data → ALONE; the
// other → SECOND; the first → PRIM. Also the health endpoint (200 on the
// node that serves, 503 elsewhere) and `halo status -q`.
func TestFirstStart(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{})
	n1, n2 := c.Node("node1"), c.Node("node2")
	ctx := ctxFor(t, 2*waitLong)
	for _, n := range c.Nodes() {
		waitState(t, n, "WAIT", "NotReady")
		waitReason(t, n, "WAIT", "data may not be up to date")
		if out, code, err := n.CLI(ctx, "status", "web", "-q"); err != nil || code != 1 {
			t.Fatalf("%s: status -q = %d (%v) %s, want 1 (WAIT)", n.Name, code, err, out)
		}
		if code, err := n.Health(ctx, healthPort); err != nil || code != http.StatusServiceUnavailable {
			t.Fatalf("%s WAIT: GET /health/web = %d (%v), want 503", n.Name, code, err)
		}
	}
	assertVIPHolders(t, c)
	assertNoAnswer(t, c)
	// Both stay WAIT: nobody picks the data on its own.
	time.Sleep(4 * testTimeout)
	assertStates(t, c, map[string]string{"node1": "WAIT/NotReady", "node2": "WAIT/NotReady"})

	since := time.Now()
	out, code, err := n1.CLI(ctx, "prim", "web")
	if err != nil || code != 0 {
		t.Fatalf("halo prim web on node1: %d %v %s", code, err, out)
	}
	waitEvent(t, n1, 0, "-> ALONE", "prim")
	waitRoles(t, n1, n2)
	waitEvent(t, n1, 0, "-> PRIM")
	waitEvent(t, n2, 0, "-> SECOND")
	assertServedBy(t, c, "node1")

	runs := runsSince(t, c, since)
	if _, ok := findRun(runs, "node1", "start_prim"); !ok {
		t.Fatalf("no start_prim on node1: %v", runs)
	}
	if _, ok := findRun(runs, "node2", "start_second"); !ok {
		t.Fatalf("no start_second on node2: %v", runs)
	}
	if r, ok := findRun(runs, "node2", "start_prim"); ok {
		t.Fatalf("start_prim ran on node2, the SECOND: %v", r)
	}
	for _, x := range []struct {
		n      *mirrorbed.Node
		code   int
		health int
	}{{n1, 3, http.StatusOK}, {n2, 4, http.StatusServiceUnavailable}} {
		if out, code, err := x.n.CLI(ctx, "status", "web", "-q"); err != nil || code != x.code {
			t.Fatalf("%s: status -q = %d (%v) %s, want %d", x.n.Name, code, err, out, x.code)
		}
		if code, err := x.n.Health(ctx, healthPort); err != nil || code != x.health {
			t.Fatalf("%s: GET /health/web = %d (%v), want %d", x.n.Name, code, err, x.health)
		}
	}
	// Both nodes' status, as the admin sees it.
	for _, n := range c.Nodes() {
		out, _, _ := n.CLI(ctx, "status", "-v")
		t.Logf("halo status -v on %s:\n%s", n.Name, out)
	}
}

// SPEC: PRIM node dies (kill -9): after the heartbeat timeout, SECOND →
// ALONE: takes the VIP, runs its start scripts.
func TestPrimKilled(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{})
	n1, n2 := firstStart(t, c)
	p := poll(t, c)
	waitAnswer(t, p, "node1")
	seq := lastSeq(t, n2)
	kill := time.Now()
	if err := n1.Host.Kill9(); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, n2, seq, "peer node1 lost on all networks")
	m := waitState(t, n2, "ALONE", "Ready")
	waitEvent(t, n2, seq, "-> ALONE", "failover")
	waitAnswer(t, p, "node2")
	st := p.Stop()
	gap, ok := st.FirstGap()
	if !ok {
		t.Fatal("the client saw no outage although node1 was killed")
	}
	t.Logf("outage seen by the client: %v (%d probes failed); node2: %s", gap.Duration().Round(time.Millisecond), gap.Failed, m.Reason)
	if len(st.Gaps) != 1 || st.Answers()[0] != "node1" || st.Spans[len(st.Spans)-1].Answer != "node2" {
		t.Fatalf("client saw %d outages and answers %v, want one outage from node1 to node2", len(st.Gaps), st.Answers())
	}
	if err := c.WaitServedBy(ctxFor(t, waitLong), "node2", 5); err != nil {
		t.Fatal(err)
	}
	if owner, err := c.ARPOwner(); err != nil || owner != "node2" {
		t.Fatalf("client's ARP entry for the VIP points to %q (%v), want node2", owner, err)
	}
	if ok, err := n2.HoldsVIP(); err != nil || !ok {
		t.Fatalf("node2 does not carry the VIP (%v)", err)
	}
	runs := runsSince(t, c, kill)
	stop, ok1 := findRun(runs, "node2", "stop_second")
	start, ok2 := findRun(runs, "node2", "start_prim")
	if !ok1 || !ok2 || stop.End.IsZero() || stop.End.After(start.Begin) {
		t.Fatalf("want stop_second then start_prim on node2 after the kill, got %v", runs)
	}
	if code, err := n2.Health(ctxFor(t, 5*time.Second), healthPort); err != nil || code != http.StatusOK {
		t.Fatalf("node2 ALONE: GET /health/web = %d (%v), want 200", code, err)
	}
}

// SPEC: SECOND node dies: PRIM → ALONE, the application keeps running.
func TestSecondKilled(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{})
	n1, n2 := firstStart(t, c)
	p := poll(t, c)
	waitAnswer(t, p, "node1")
	seq := lastSeq(t, n1)
	kill := time.Now()
	if err := n2.Host.Kill9(); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, n1, seq, "peer node2 lost on all networks")
	waitState(t, n1, "ALONE", "Ready")
	waitEvent(t, n1, seq, "-> ALONE", "application keeps running")
	time.Sleep(time.Second)
	st := p.Stop()
	if st.Failed != 0 || len(st.Answers()) != 1 || st.Answers()[0] != "node1" {
		t.Fatalf("client saw %d failed probes and answers %v while the SECOND died, want none failed, only node1", st.Failed, st.Answers())
	}
	assertServedBy(t, c, "node1")
	if runs := runsSince(t, c, kill); len(runs) != 0 {
		t.Fatalf("scripts ran on node1 although its application keeps running: %v", runs)
	}
}

// SPEC: start, peer absent, local data known up to date → ALONE. node1
// was ALONE when it died: it comes back ALONE without its peer.
func TestRestartAloneWithNewestData(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{})
	n1, n2 := firstStart(t, c)
	if err := n2.Host.Kill9(); err != nil {
		t.Fatal(err)
	}
	waitState(t, n1, "ALONE", "Ready")
	if err := n1.Host.Kill9(); err != nil {
		t.Fatal(err)
	}
	if err := n1.Restart(ctxFor(t, waitLong), true); err != nil {
		t.Fatal(err)
	}
	waitState(t, n1, "ALONE", "Ready")
	waitEvent(t, n1, 0, "node1 was ALONE when it stopped: its data is the newest")
	assertServedBy(t, c, "node1")
}

// SPEC: failed node returns: it becomes SECOND while the application keeps
// running on the other node; then ALONE → PRIM. The returning node does
// not serve, and drops the VIP its crash left on its interface.
func TestNodeReturns(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{})
	n1, n2 := firstStart(t, c)
	if err := n1.Host.Kill9(); err != nil {
		t.Fatal(err)
	}
	waitState(t, n2, "ALONE", "Ready")
	assertServedByAfterCrash(t, c, "node2")
	p := poll(t, c)
	waitAnswer(t, p, "node2")
	back := time.Now()
	seq2 := lastSeq(t, n2)
	// Only the agent comes back: node1's kernel still carries the VIP the
	// killed agent had set.
	if err := n1.Restart(ctxFor(t, waitLong), false); err != nil {
		t.Fatal(err)
	}
	waitRoles(t, n2, n1)
	waitEvent(t, n1, 0, "-> SECOND", "node2 serves newer data")
	waitEvent(t, n2, seq2, "-> PRIM")
	time.Sleep(time.Second)
	st := p.Stop()
	if st.Failed != 0 || len(st.Answers()) != 1 || st.Answers()[0] != "node2" {
		t.Fatalf("client saw %d failed probes and answers %v while node1 came back, want none failed, only node2", st.Failed, st.Answers())
	}
	assertServedBy(t, c, "node2") // also: node1 no longer carries the VIP
	runs := runsSince(t, c, back)
	if _, ok := findRun(runs, "node1", "start_second"); !ok {
		t.Fatalf("no start_second on node1 after its return: %v", runs)
	}
	for _, r := range runs {
		if r.Script == "start_prim" || r.Script == "stop_prim" {
			t.Fatalf("%s ran while node1 came back: %v", r.Script, runs)
		}
	}
}

// assertServedByAfterCrash is assertServedBy for a crash that left the VIP
// on the dead node's interface: only the answers and the client's ARP
// entry count.
func assertServedByAfterCrash(t *testing.T, c *mirrorbed.Cluster, node string) {
	t.Helper()
	if err := c.WaitServedBy(ctxFor(t, waitLong), node, 5); err != nil {
		t.Fatal(err)
	}
	if owner, err := c.ARPOwner(); err != nil || owner != node {
		t.Fatalf("client's ARP entry for the VIP points to %q (%v), want %s", owner, err, node)
	}
}

// SPEC: halo swap: the application stops on PRIM, roles exchange, the
// application starts on the other node; stop_prim on the old primary ends
// before start_prim on the new one begins. Asked on the PRIM, then on the
// SECOND.
func TestSwap(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{})
	n1, n2 := firstStart(t, c)
	ctx := ctxFor(t, 2*waitLong)

	for _, x := range []struct {
		ask, from, to *mirrorbed.Node
	}{{n1, n1, n2}, {n1, n2, n1}} { // asked on the PRIM, then on the SECOND
		p := poll(t, c)
		waitAnswer(t, p, x.from.Name)
		since := time.Now()
		seq := lastSeq(t, x.to)
		if out, code, err := x.ask.CLI(ctx, "swap", "web"); err != nil || code != 0 {
			t.Fatalf("halo swap web on %s: %d %v %s", x.ask.Name, code, err, out)
		}
		waitRoles(t, x.to, x.from)
		// It serves ALONE until the old primary has resynced, then PRIM.
		waitEvent(t, x.to, seq, "-> ALONE", "swap")
		assertStopBeforeStart(t, c, since, x.from.Name, x.to.Name)
		waitAnswer(t, p, x.to.Name)
		st := p.Stop()
		if a := st.Answers(); len(a) != 2 || a[0] != x.from.Name || a[1] != x.to.Name || len(st.Gaps) > 1 {
			t.Fatalf("client saw answers %v with %d outages, want %s then %s with at most one outage", a, len(st.Gaps), x.from.Name, x.to.Name)
		}
		if g, ok := st.FirstGap(); ok {
			t.Logf("swap %s → %s asked on %s: outage %v", x.from.Name, x.to.Name, x.ask.Name, g.Duration().Round(time.Millisecond))
		}
		assertServedBy(t, c, x.to.Name)
	}
}

// SPEC: default_primary: after the failed default primary returns and is in
// sync, the roles swap back to it automatically, stop before start.
func TestDefaultPrimary(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{DefaultPrimary: "node1"})
	n1, n2 := firstStart(t, c)
	if err := n1.Host.Kill9(); err != nil {
		t.Fatal(err)
	}
	waitState(t, n2, "ALONE", "Ready")
	assertServedByAfterCrash(t, c, "node2")
	back := time.Now()
	if err := n1.Restart(ctxFor(t, waitLong), true); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, n1, 0, "-> SECOND")
	waitEvent(t, n2, 0, "default_primary is node1")
	waitRoles(t, n1, n2)
	assertStopBeforeStart(t, c, back, "node2", "node1")
	assertServedBy(t, c, "node1")
}

// SPEC: failover = false: SECOND → WAIT instead of ALONE; only halo prim
// promotes it.
func TestFailoverOff(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{FailoverOff: true})
	n1, n2 := firstStart(t, c)
	seq := lastSeq(t, n2)
	if err := n1.Host.Kill9(); err != nil {
		t.Fatal(err)
	}
	waitState(t, n2, "WAIT", "NotReady")
	waitReason(t, n2, "WAIT", "failover is off")
	waitEvent(t, n2, seq, "-> WAIT", "failover is off")
	time.Sleep(4 * testTimeout)
	assertStates(t, c, map[string]string{"node2": "WAIT/NotReady"})
	if ok, err := n2.HoldsVIP(); err != nil || ok {
		t.Fatalf("node2 carries the VIP while failover is off (%v)", err)
	}
	assertNoAnswer(t, c)
	if out, code, err := n2.CLI(ctxFor(t, 10*time.Second), "prim", "web"); err != nil || code != 0 {
		t.Fatalf("halo prim web on node2: %d %v %s", code, err, out)
	}
	waitState(t, n2, "ALONE", "Ready")
	assertServedByAfterCrash(t, c, "node2")
}

// crashBoth cuts both nodes' power at the same instant: every process of
// both stopped before any is killed, then links and VIPs gone.
func crashBoth(t *testing.T, c *mirrorbed.Cluster) {
	t.Helper()
	for _, n := range c.Nodes() {
		if err := n.Host.Freeze(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes() {
		if err := n.PowerOff(); err != nil {
			t.Fatal(err)
		}
	}
}

// SPEC: both nodes lose power: each returns WAIT until the other appears
// (the SECOND cannot know whether the PRIM served after it; the PRIM that
// had a SECOND cannot know whether it took over), then previous roles
// resume. Also SPEC "start, peer absent, local data not known up to date":
// WAIT until the peer appears.
func TestBothNodesKilled(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{})
	n1, n2 := firstStart(t, c)
	crashBoth(t, c)
	for _, n := range []*mirrorbed.Node{n2, n1} {
		other := c.Peer(n)
		if err := n.Restart(ctxFor(t, waitLong), true); err != nil {
			t.Fatal(err)
		}
		if n == n1 {
			break // node2 waits, node1 appears: the roles resume
		}
		waitState(t, n, "WAIT", "NotReady")
		waitReason(t, n, "WAIT", "data may not be up to date: "+other.Name+" not seen since "+n.Name+" started; "+n.Name+" was SECOND when it stopped: waiting for "+other.Name)
		time.Sleep(4 * testTimeout)
		assertStates(t, c, map[string]string{n.Name: "WAIT/NotReady"})
		assertNoAnswer(t, c)
	}
	waitRoles(t, n1, n2)
	assertServedBy(t, c, "node1")
}

// SPEC: sync_delta: after both nodes lost power, the first one back serves
// its data if it was in sync at most sync_delta ago; the other becomes
// SECOND.
func TestSyncDelta(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{SyncDelta: time.Minute})
	n1, n2 := firstStart(t, c)
	crashBoth(t, c)
	if err := n2.Restart(ctxFor(t, waitLong), true); err != nil {
		t.Fatal(err)
	}
	waitState(t, n2, "ALONE", "Ready")
	waitEvent(t, n2, 0, "-> ALONE", "sync_delta 1m0s allows it")
	assertServedBy(t, c, "node2")
	if err := n1.Restart(ctxFor(t, waitLong), true); err != nil {
		t.Fatal(err)
	}
	waitRoles(t, n2, n1)
	waitEvent(t, n1, 0, "-> SECOND", "node2 serves newer data")
	assertServedBy(t, c, "node2")
}

var winnerRE = regexp.MustCompile(`(node[12]) wins by policy ([a-z0-9_]+)`)

// SPEC: all heartbeats lost on all networks, no witness: both ALONE (split
// brain). When they reconnect it is detected, one side wins by policy, the
// loser stops serving and becomes SECOND.
func TestSplitBrainWithoutWitness(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{})
	n1, n2 := firstStart(t, c)
	seq1, seq2 := lastSeq(t, n1), lastSeq(t, n2)
	if err := n1.Host.CutAll(); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, n1, seq1, "peer node2 lost on all networks (default, replication)")
	waitEvent(t, n2, seq2, "peer node1 lost on all networks (default, replication)")
	waitState(t, n1, "ALONE", "Ready")
	waitState(t, n2, "ALONE", "Ready")
	assertServedByAfterCrash(t, c, "node2") // node1 is cut from the client too
	assertVIPHolders(t, c, "node1", "node2")

	heal := time.Now()
	if err := n1.Host.HealAll(); err != nil {
		t.Fatal(err)
	}
	e := waitEvent(t, n1, seq1, "split brain")
	waitEvent(t, n2, seq2, "split brain")
	mm := winnerRE.FindStringSubmatch(e.Text)
	if mm == nil {
		t.Fatalf("node1's split-brain event does not name the winner: %q", e.Text)
	}
	if mm[2] != "longest_alone" {
		t.Fatalf("split brain resolved by policy %q, want the default longest_alone: %q", mm[2], e.Text)
	}
	winner := c.Node(mm[1])
	loser := c.Peer(winner)
	t.Logf("split brain: %s", e.Text)
	waitEvent(t, loser, 0, "split brain", loser.Name+" steps down")
	waitRoles(t, winner, loser)
	// The client followed the loser's announcement during the split: the
	// winner must announce the VIP again once the loser released it, or
	// clients keep knocking at the loser until their ARP entry expires.
	if err := c.WaitServedBy(ctxFor(t, 3*time.Second), winner.Name, 5); err != nil {
		owner, _ := c.ARPOwner()
		t.Errorf("client not back on the winner %s 3s after the split brain was resolved (its ARP entry for the VIP points to %q): %v", winner.Name, owner, err)
	}
	assertServedBy(t, c, winner.Name)
	t.Logf("client served by the winner %s %v after the heal", winner.Name, time.Since(heal).Round(time.Millisecond))
	if r, ok := findRun(runsSince(t, c, heal), loser.Name, "stop_prim"); !ok || r.End.IsZero() {
		t.Fatalf("the loser %s did not stop its application: %v", loser.Name, runsSince(t, c, heal))
	}
}

// SPEC: split-brain checker with witness addresses: before going ALONE a
// node must reach a witness; the one that cannot goes WAIT. First the
// SECOND is cut from its peer and the witness, then the PRIM.
func TestSplitBrainWithWitness(t *testing.T) {
	c := newCluster(t, bedSpec{witness: true}, mirrorbed.Options{})
	n1, n2 := firstStart(t, c)
	for _, x := range []struct{ cut, other *mirrorbed.Node }{{n2, n1}, {n1, n2}} {
		// Before a cut: x.other is PRIM, x.cut SECOND, or the reverse.
		seqCut, seqOther := lastSeq(t, x.cut), lastSeq(t, x.other)
		if err := x.cut.Host.CutAll(); err != nil {
			t.Fatal(err)
		}
		waitState(t, x.cut, "WAIT", "NotReady")
		waitReason(t, x.cut, "WAIT", "split-brain witness unreachable")
		waitEvent(t, x.cut, seqCut, "-> WAIT", "witness unreachable")
		waitState(t, x.other, "ALONE", "Ready")
		waitEvent(t, x.other, seqOther, "split-brain witness reachable")
		assertServedByAfterCrash(t, c, x.other.Name)
		if ok, err := x.cut.HoldsVIP(); err != nil || ok {
			t.Fatalf("%s, cut off, still carries the VIP (%v)", x.cut.Name, err)
		}
		if err := x.cut.Host.HealAll(); err != nil {
			t.Fatal(err)
		}
		waitRoles(t, x.other, x.cut)
		assertServedBy(t, c, x.other.Name)
		for _, n := range c.Nodes() {
			if e, ok := hasEvent(t, n, 0, "split brain: ", "both served"); ok {
				t.Fatalf("split brain on %s although the witness answered one side only: %s", n.Name, e.Text)
			}
		}
	}
}

// SPEC: heartbeats lost on one network only: nothing happens except a
// warning.
func TestHeartbeatLostOnOneNetwork(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{})
	n1, n2 := firstStart(t, c)
	p := poll(t, c)
	waitAnswer(t, p, "node1")
	seq1, seq2 := lastSeq(t, n1), lastSeq(t, n2)
	if err := n1.Host.LinkDown("replication"); err != nil {
		t.Fatal(err)
	}
	e := waitEvent(t, n1, seq1, "heartbeat from node2 lost on network replication", "still visible on default")
	waitEvent(t, n2, seq2, "heartbeat from node1 lost on network replication", "still visible on default")
	if e.Level != "warn" {
		t.Fatalf("loss of one network logged at level %q, want warn: %s", e.Level, e.Text)
	}
	time.Sleep(6 * testTimeout)
	if err := n1.Host.LinkUp("replication"); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, n1, seq1, "heartbeat from node2 restored on network replication")
	waitEvent(t, n2, seq2, "heartbeat from node1 restored on network replication")
	for n, seq := range map[*mirrorbed.Node]uint64{n1: seq1, n2: seq2} {
		if ch := stateChanges(t, n, seq); len(ch) != 0 {
			t.Fatalf("%s changed state although one network was still up: %v", n.Name, ch)
		}
	}
	assertStates(t, c, map[string]string{"node1": "PRIM/Ready", "node2": "SECOND/Ready"})
	st := p.Stop()
	if st.Failed != 0 || len(st.Answers()) != 1 {
		t.Fatalf("client saw %d failed probes and answers %v, want none failed, only node1", st.Failed, st.Answers())
	}
	assertServedBy(t, c, "node1")
}

// SPEC/issue: a stale primary (frozen past the heartbeat timeout, then
// resumed) steps down as soon as it sees its peer took over, before it
// serves anything: the client never gets an answer from it again.
func TestStalePrimary(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{})
	n1, n2 := firstStart(t, c)
	p := poll(t, c)
	waitAnswer(t, p, "node1")
	seq1 := lastSeq(t, n1)
	freeze := time.Now()
	if err := n1.Host.Freeze(); err != nil {
		t.Fatal(err)
	}
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			n1.Host.Thaw()
		}
	})
	waitState(t, n2, "ALONE", "Ready")
	waitAnswer(t, p, "node2")
	// From now on the client's ARP entry must point to node2 only: a
	// stale announcement from node1 would send the client to it.
	arp := c.WatchARP(2 * time.Millisecond)
	// Frozen well past the timeout, as a VM paused by its hypervisor.
	time.Sleep(2 * time.Second)
	if err := n1.Host.Thaw(); err != nil {
		t.Fatal(err)
	}
	thawed = true
	e := waitEvent(t, n1, seq1, "node2 took over while node1 was unresponsive")
	t.Logf("node1: %s", e.Text)
	waitRoles(t, n2, n1)
	time.Sleep(time.Second)
	st := p.Stop()
	changes, err := arp.Stop()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range st.Gaps[1:] {
		t.Errorf("the client lost the VIP again for %v from %s, after node2 had taken over", g.Duration().Round(time.Millisecond), g.From.Format("15:04:05.000"))
	}
	for _, ch := range changes {
		if ch.Owner != "node2" {
			t.Errorf("after node2 took over, the client's ARP entry for the VIP pointed to %q at %s (thawed node1 announced the VIP?): %+v",
				ch.Owner, ch.At.Format("15:04:05.000"), changes)
			break
		}
	}
	// Once node2 answered, node1 must never answer again.
	firstNode2 := -1
	for i, sp := range st.Spans {
		if sp.Answer == "node2" && firstNode2 < 0 {
			firstNode2 = i
		}
		if firstNode2 >= 0 && sp.Answer == "node1" {
			t.Fatalf("node1 answered the client at %s, after node2 took over at %s (spans %+v)",
				sp.From.Format("15:04:05.000"), st.Spans[firstNode2].From.Format("15:04:05.000"), st.Spans)
		}
	}
	assertServedBy(t, c, "node2")
	runs := runsSince(t, c, freeze)
	if _, ok := findRun(runs, "node1", "start_prim"); ok {
		t.Fatalf("node1 ran start_prim after its freeze: %v", runs)
	}
	if r, ok := findRun(runs, "node1", "stop_prim"); !ok || r.End.IsZero() {
		t.Fatalf("node1 did not stop its application when it stepped down: %v", runs)
	}
}

// Zero false failovers: both nodes' CPUs fully loaded (nproc busy loops
// per node, at normal priority, next to the agents) for 30 s, or 5 min
// with HALO_SOAK=1, with pulse 100 ms / timeout 500 ms: no state change,
// no VIP move, and no failed request that a stall of the whole machine
// does not explain.
func TestNoFalseFailoverUnderLoad(t *testing.T) {
	d := 30 * time.Second
	if soak() {
		d = 5 * time.Minute
	}
	c := newCluster(t, bedSpec{}, mirrorbed.Options{})
	n1, n2 := firstStart(t, c)
	seq1, seq2 := lastSeq(t, n1), lastSeq(t, n2)
	const probeTimeout = 2 * time.Second
	stalls := watchStalls(300 * time.Millisecond)
	steal := watchSteal()
	loaders := loadCPUs(t, c.Bed.Host("node1"), c.Bed.Host("node2"))
	p, err := c.Bed.Poller(c.Opts.Client, c.Target(), testbed.PollerOptions{Interval: 20 * time.Millisecond, Timeout: probeTimeout})
	if err != nil {
		t.Fatal(err)
	}
	arp := c.WatchARP(50 * time.Millisecond)
	t.Logf("load: %d busy loops (sh -c 'while :; do :; done'), %d per node on %d CPUs, normal priority, for %v",
		len(loaders), len(loaders)/2, runtime.NumCPU(), d)
	start := time.Now()
	var changed []string
	for time.Since(start) < d && len(changed) == 0 {
		time.Sleep(time.Second)
		for _, x := range []struct {
			n   *mirrorbed.Node
			seq uint64
		}{{n1, seq1}, {n2, seq2}} {
			for _, e := range stateChangesWithin(t, x.n, x.seq, 30*time.Second) {
				changed = append(changed, fmt.Sprintf("%s at %s: %s (CPU time stolen by the hypervisor in the 2 s before: %v)",
					x.n.Name, e.Time.Local().Format("15:04:05.000"), e.Text, steal.Between(e.Time.Add(-2*time.Second), e.Time)))
			}
		}
	}
	loadedFor := time.Since(start).Round(time.Second)
	st := p.Stop()
	stopLoad(loaders)
	machineStalls := stalls.Stop()
	steal.Stop()
	changes, err := arp.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("under load for %v: %d requests, %d failed, max outage %v, load average %s, CPU time stolen by the hypervisor %v",
		loadedFor, st.Probes, st.Failed, st.MaxGap(), loadAvg(), steal.Between(start, time.Now()))
	for _, s := range machineStalls {
		t.Logf("the test process did not run for %v at %s (machine stall or starvation)", s.Duration().Round(time.Millisecond), s.From.Format("15:04:05.000"))
	}
	for n, seq := range map[*mirrorbed.Node]uint64{n1: seq1, n2: seq2} {
		evs, _ := n.Client().Events(ctxFor(t, 30*time.Second), "web", seq, 0)
		for _, e := range evs {
			if e.Level != "info" {
				t.Logf("%s at %s: %s %s", n.Name, e.Time.Local().Format("15:04:05.000"), e.Level, e.Text) // warnings are allowed, and worth seeing
			}
		}
	}
	if len(changed) > 0 {
		t.Fatalf("state changed under CPU load after %v:\n%s", loadedFor, strings.Join(changed, "\n"))
	}
	if a := st.Answers(); len(a) != 1 || a[0] != "node1" {
		t.Fatalf("client answered by %v under load, want node1 only", a)
	}
	if len(changes) != 1 || changes[0].Owner != "node1" {
		t.Fatalf("client's ARP entry for the VIP moved under load: %+v", changes)
	}
	if bad := unexcusedGaps(st.Gaps, machineStalls, probeTimeout); len(bad) != 0 {
		t.Fatalf("client lost the VIP %d times outside machine stalls under load (first: %v at %s)",
			len(bad), bad[0].Duration().Round(time.Millisecond), bad[0].From.Format("15:04:05.000"))
	}
	assertStates(t, c, map[string]string{"node1": "PRIM/Ready", "node2": "SECOND/Ready"})
	assertServedBy(t, c, "node1")
}

func soak() bool { return envIs("HALO_SOAK") }

// loadCPUs starts nproc busy loops in each host.
func loadCPUs(t *testing.T, hosts ...*testbed.Host) []*testbed.Process {
	t.Helper()
	var ps []*testbed.Process
	for _, h := range hosts {
		for i := range runtime.NumCPU() {
			p, err := h.Start("busy"+strconv.Itoa(i), h.Command(context.Background(), "sh", "-c", "while :; do :; done"))
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
	}
	return ps
}
