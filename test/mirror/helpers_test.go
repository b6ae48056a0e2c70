package mirror

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/api"
	"github.com/halo-ha/halo/test/harness"
	"github.com/halo-ha/halo/test/mirror/mirrorbed"
	"github.com/halo-ha/halo/test/testbed"
)

// Timers of the tests: fast, so a failover takes about a second.
const (
	testPulse   = 100 * time.Millisecond
	testTimeout = 500 * time.Millisecond
	// waitLong bounds every wait for a state: generous against a loaded
	// CI machine, far below the test timeout.
	waitLong = 30 * time.Second
)

// bedSpec chooses the bed under a cluster.
type bedSpec struct {
	networks []string // default: default, replication
	witness  bool     // a fourth host, "witness", that answers pings
}

// newCluster builds a bed (node1, node2, client, optionally witness),
// deploys the mirror module on it with the test timers unless opts sets
// others, and starts both agents. Everything goes away with the test.
func newCluster(t *testing.T, spec bedSpec, opts mirrorbed.Options) *mirrorbed.Cluster {
	t.Helper()
	testbed.RequireRoot(t)
	if spec.networks == nil {
		spec.networks = []string{"default", "replication"}
	}
	hosts := []string{"node1", "node2", "client"}
	if spec.witness {
		hosts = append(hosts, "witness")
	}
	bed, _ := testbed.New(t, testbed.Options{Hosts: hosts, Networks: spec.networks})
	opts.Bin = harness.Bin(t)
	if spec.witness && opts.Witnesses == nil {
		opts.Witnesses = []netip.Addr{bed.Host("witness").Addr(spec.networks[0])}
	}
	if opts.Pulse == 0 {
		opts.Pulse, opts.Timeout = testPulse, testTimeout
	}
	if opts.StopDelay == 0 {
		// Long enough that a start_prim elsewhere that did not wait for
		// stop_prim shows in the order logs.
		opts.StopDelay = 300 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := mirrorbed.Deploy(ctx, bed, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the bed's cleanup, so it runs before the bed is
	// removed: the event and order logs are still there to print.
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, c)
		}
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// dumpLogs prints both nodes' event logs (read from disk: the agent may be
// dead) and the scripts' order.
func dumpLogs(t *testing.T, c *mirrorbed.Cluster) {
	for _, n := range c.Nodes() {
		path := filepath.Join(n.DataDir, c.Opts.Module, "events.jsonl")
		f, err := os.Open(path)
		if err != nil {
			t.Logf("%s: event log: %v", n.Name, err)
			continue
		}
		var b strings.Builder
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var e api.Event
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				b.WriteString(sc.Text() + "\n")
				continue
			}
			fmt.Fprintf(&b, "  %s %-7s %-5s %s\n", e.Time.Local().Format("15:04:05.000"), e.Kind, e.Level, e.Text)
		}
		f.Close()
		t.Logf("%s: event log:\n%s", n.Name, b.String())
	}
	runs, err := c.AllScriptRuns()
	if err != nil {
		t.Logf("script runs: %v", err)
		return
	}
	var b strings.Builder
	for _, r := range runs {
		b.WriteString("  " + r.String() + "\n")
	}
	t.Logf("script runs:\n%s", b.String())
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitState waits for state/readiness ("" = any) on a node.
func waitState(t *testing.T, n *mirrorbed.Node, state, readiness string) api.ModuleStatus {
	t.Helper()
	m, err := n.WaitState(ctxFor(t, waitLong), state, readiness)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// waitReason waits until the node's status is state with a reason that
// contains want: what `halo status` shows the administrator.
// A wrong reason is reported with t.Error, not t.Fatal: the rest of the
// row is still worth checking.
func waitReason(t *testing.T, n *mirrorbed.Node, state, want string) {
	t.Helper()
	ctx := ctxFor(t, 5*time.Second)
	for {
		m, err := n.Status(ctx)
		if err == nil && m.State == state && strings.Contains(m.Reason, want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("%s: status %s %s reason %q (error %v), want %s with a reason containing %q", n.Name, m.State, m.Readiness, m.Reason, err, state, want)
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitRoles waits until node prim serves (PRIM/Ready) and node second is
// its SECOND/Ready.
func waitRoles(t *testing.T, prim, second *mirrorbed.Node) {
	t.Helper()
	waitState(t, prim, "PRIM", "Ready")
	waitState(t, second, "SECOND", "Ready")
}

// firstStart takes a freshly started cluster through SPEC's first start:
// both WAIT, `halo prim` on node1, node1 PRIM and node2 SECOND. It returns
// once the client is served by node1.
func firstStart(t *testing.T, c *mirrorbed.Cluster) (n1, n2 *mirrorbed.Node) {
	t.Helper()
	n1, n2 = c.Node("node1"), c.Node("node2")
	for _, n := range []*mirrorbed.Node{n1, n2} {
		waitState(t, n, "WAIT", "")
		waitEvent(t, n, 0, "data may not be up to date")
	}
	if err := n1.Command(ctxFor(t, 10*time.Second), "prim"); err != nil {
		t.Fatal(err)
	}
	waitRoles(t, n1, n2)
	assertServedBy(t, c, "node1")
	return n1, n2
}

// waitEvent waits for an event after seq containing every part.
func waitEvent(t *testing.T, n *mirrorbed.Node, after uint64, parts ...string) api.Event {
	t.Helper()
	e, err := n.WaitEvent(ctxFor(t, waitLong), after, parts...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func lastSeq(t *testing.T, n *mirrorbed.Node) uint64 {
	t.Helper()
	s, err := n.LastSeq(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertServedBy checks the VIP from every side: the client gets answers
// from node through it, the client's ARP entry holds node's MAC, and only
// node carries the address.
func assertServedBy(t *testing.T, c *mirrorbed.Cluster, node string) {
	t.Helper()
	if err := c.WaitServedBy(ctxFor(t, waitLong), node, 5); err != nil {
		t.Fatal(err)
	}
	if owner, err := c.ARPOwner(); err != nil || owner != node {
		t.Fatalf("client's ARP entry for the VIP points to %q (error %v), want %s", owner, err, node)
	}
	assertVIPHolders(t, c, node)
}

// assertVIPHolders checks which nodes carry the VIP; the VIP may take a
// moment to go away from a node that just released it.
func assertVIPHolders(t *testing.T, c *mirrorbed.Cluster, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := c.VIPHolders()
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("VIP carried by %v, want %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// assertNoAnswer checks that the client gets no answer through the VIP.
func assertNoAnswer(t *testing.T, c *mirrorbed.Cluster) {
	t.Helper()
	if who, err := c.ServedBy(ctxFor(t, 2*time.Second)); err == nil {
		t.Fatalf("client served by %s through the VIP, want no answer", who)
	}
}

// assertStates checks both nodes' state and readiness now.
func assertStates(t *testing.T, c *mirrorbed.Cluster, want map[string]string) {
	t.Helper()
	for name, sr := range want {
		m, err := c.Node(name).Status(ctxFor(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if got := m.State + "/" + m.Readiness; got != sr {
			t.Fatalf("%s is %s (%s), want %s", name, got, m.Reason, sr)
		}
	}
}

// hasEvent reports whether the node logged an event after seq containing
// every part.
func hasEvent(t *testing.T, n *mirrorbed.Node, after uint64, parts ...string) (api.Event, bool) {
	t.Helper()
	evs, err := n.Client().Events(ctxFor(t, 5*time.Second), "web", after, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(e.Text, p)
		}
		if ok {
			return e, true
		}
	}
	return api.Event{}, false
}

// stateChanges returns the node's "state" events after seq.
func stateChanges(t *testing.T, n *mirrorbed.Node, after uint64) []api.Event {
	t.Helper()
	return stateChangesWithin(t, n, after, 5*time.Second)
}

// stateChangesWithin is stateChanges with a bound on the API call (long
// under load).
func stateChangesWithin(t *testing.T, n *mirrorbed.Node, after uint64, d time.Duration) []api.Event {
	t.Helper()
	evs, err := n.Client().Events(ctxFor(t, d), "web", after, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []api.Event
	for _, e := range evs {
		if e.Kind == "state" {
			out = append(out, e)
		}
	}
	return out
}

// runsSince returns the script runs that began at or after since.
func runsSince(t *testing.T, c *mirrorbed.Cluster, since time.Time) []mirrorbed.ScriptRun {
	t.Helper()
	all, err := c.AllScriptRuns()
	if err != nil {
		t.Fatal(err)
	}
	var out []mirrorbed.ScriptRun
	for _, r := range all {
		if !r.Begin.Before(since) {
			out = append(out, r)
		}
	}
	return out
}

// findRun returns the first run of script on node in runs.
func findRun(runs []mirrorbed.ScriptRun, node, script string) (mirrorbed.ScriptRun, bool) {
	for _, r := range runs {
		if r.Node == node && r.Script == script {
			return r, true
		}
	}
	return mirrorbed.ScriptRun{}, false
}

// assertStopBeforeStart checks the handover order: stopNode's stop_prim
// (after since) ended before startNode's start_prim began.
func assertStopBeforeStart(t *testing.T, c *mirrorbed.Cluster, since time.Time, stopNode, startNode string) {
	t.Helper()
	runs := runsSince(t, c, since)
	stop, ok1 := findRun(runs, stopNode, "stop_prim")
	start, ok2 := findRun(runs, startNode, "start_prim")
	if !ok1 || !ok2 {
		t.Fatalf("want stop_prim on %s and start_prim on %s after %s, got %v", stopNode, startNode, since.Format("15:04:05.000"), runs)
	}
	if stop.End.IsZero() || !stop.End.Before(start.Begin) {
		t.Fatalf("start_prim on %s began at %s, before stop_prim on %s ended (%s): %v",
			startNode, start.Begin.Format("15:04:05.000"), stopNode, stop.End.Format("15:04:05.000"), runs)
	}
	t.Logf("order: %s stop_prim ended %v before %s start_prim began", stopNode, start.Begin.Sub(stop.End).Round(time.Millisecond), startNode)
}

// poll starts a client poller on the VIP.
func poll(t *testing.T, c *mirrorbed.Cluster) *testbed.Poller {
	t.Helper()
	p, err := c.Bed.Poller(c.Opts.Client, c.Target(), testbed.PollerOptions{Interval: 20 * time.Millisecond, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitAnswer waits until the poller's latest answers come from node.
func waitAnswer(t *testing.T, p *testbed.Poller, node string) {
	t.Helper()
	if err := p.WaitAnswer(ctxFor(t, waitLong), node); err != nil {
		t.Fatal(err)
	}
}

func envIs(name string) bool { return os.Getenv(name) == "1" }

// stopLoad ends the busy loops (the bed would at its end; the checks after
// the load should not run under it).
func stopLoad(ps []*testbed.Process) {
	for _, p := range ps {
		_ = p.Signal(syscall.SIGKILL)
	}
	for _, p := range ps {
		<-p.Done()
	}
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// stallWatch records when this whole machine stopped running the test for
// longer than a threshold: a virtual machine whose host deschedules it
// stalls the agents, the client and the test at once. Such a stall is no
// reason for a failover (the agents must see it as a pause, and do), but
// the client's requests that straddle it fail through no fault of halo's.
type stallWatch struct {
	stop   chan struct{}
	done   chan struct{}
	stalls []testbed.Gap
}

func watchStalls(threshold time.Duration) *stallWatch {
	w := &stallWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		last := time.Now()
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			now := time.Now()
			if now.Sub(last) > threshold {
				w.stalls = append(w.stalls, testbed.Gap{From: last, To: now})
			}
			last = now
		}
	}()
	return w
}

// Stop ends the watch and returns the stalls seen.
func (w *stallWatch) Stop() []testbed.Gap {
	close(w.stop)
	<-w.done
	return w.stalls
}

// unexcusedGaps returns the client's outages that no machine stall
// explains: an outage is excused when a stall overlaps it, widened by
// margin on both sides (a request sent just before a stall times out
// during it).
func unexcusedGaps(gaps, stalls []testbed.Gap, margin time.Duration) []testbed.Gap {
	var out []testbed.Gap
	for _, g := range gaps {
		excused := false
		for _, s := range stalls {
			if g.From.Before(s.To.Add(margin)) && s.From.Add(-margin).Before(g.To) {
				excused = true
			}
		}
		if !excused {
			out = append(out, g)
		}
	}
	return out
}

// stealWatch samples, every 100 ms, the time each CPU of this (virtual)
// machine was stolen by its hypervisor (/proc/stat), to tell a node
// starved by its host from one starved by the test's load.
type stealWatch struct {
	stop    chan struct{}
	done    chan struct{}
	samples []stealSample
}

type stealSample struct {
	at    time.Time
	steal []time.Duration // cumulative, per CPU
}

func watchSteal() *stealWatch {
	w := &stealWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			if s, err := readSteal(); err == nil {
				w.samples = append(w.samples, stealSample{at: time.Now(), steal: s})
			}
			select {
			case <-w.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *stealWatch) Stop() {
	close(w.stop)
	<-w.done
}

// Between returns the time stolen from each CPU between from and to (as
// sampled), and the total of the run.
func (w *stealWatch) Between(from, to time.Time) []time.Duration {
	var first, last *stealSample
	for i := range w.samples {
		s := &w.samples[i]
		if !s.at.After(from) {
			first = s
		}
		if !s.at.After(to) {
			last = s
		}
	}
	if first == nil && len(w.samples) > 0 {
		first = &w.samples[0]
	}
	if first == nil || last == nil {
		return nil
	}
	out := make([]time.Duration, len(last.steal))
	for i := range out {
		out[i] = last.steal[i] - first.steal[i]
	}
	return out
}

// readSteal reads the cumulative steal time of every CPU.
func readSteal() ([]time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	const tick = 10 * time.Millisecond // USER_HZ = 100 on Linux
	var out []time.Duration
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		n, err := strconv.ParseUint(f[8], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parse /proc/stat steal of %s: %w", f[0], err)
		}
		out = append(out, time.Duration(n)*tick)
	}
	return out, nil
}
