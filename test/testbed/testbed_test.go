package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBed builds 3 hosts on 2 networks and exercises addressing,
// connectivity and every fault on the one bed.
func TestBed(t *testing.T) {
	RequireRoot(t)
	start := time.Now()
	bed, err := New(t, Options{Hosts: []string{"node1", "node2", "client"}, Networks: []string{"default", "replication"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bed %s built in %v", bed.Prefix(), time.Since(start))
	node1, node2, client := bed.Host("node1"), bed.Host("node2"), bed.Host("client")

	t.Run("addressing", func(t *testing.T) {
		want := map[string]string{"default": "198.18.0.11", "replication": "198.18.1.11"}
		for network, addr := range want {
			if got := node2.Addr(network).String(); got != addr {
				t.Errorf("node2 on %s: address %s, want %s", network, got, addr)
			}
		}
		if got := bed.NetworkPrefix("replication").String(); got != "198.18.1.0/24" {
			t.Errorf("replication prefix %s", got)
		}
		if node1.Iface("default") != "eth0" || node1.Iface("replication") != "eth1" {
			t.Errorf("interfaces %s %s, want eth0 eth1", node1.Iface("default"), node1.Iface("replication"))
		}
		// Through Command: the host's own view of its interfaces.
		out, err := client.Run(context.Background(), "ip", "-o", "-4", "addr", "show")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"lo    inet 127.0.0.1/8", "eth0    inet 198.18.0.12/24", "eth1    inet 198.18.1.12/24"} {
			if !strings.Contains(out, want) {
				t.Errorf("client's addresses lack %q:\n%s", want, out)
			}
		}
		if out, err := node2.Run(context.Background(), "hostname"); err != nil || strings.TrimSpace(out) != "node2" {
			t.Errorf("hostname in node2 = %q (%v), want node2", out, err)
		}
		// The root namespace has nothing of the bed.
		root, err := exec.Command("ip", "-o", "addr").CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(root), "198.18.") {
			t.Errorf("root namespace has a bed address:\n%s", root)
		}
		prefixes, err := node1.Addrs("default")
		if err != nil || len(prefixes) != 1 || prefixes[0].String() != "198.18.0.10/24" {
			t.Errorf("node1 Addrs = %v, %v", prefixes, err)
		}
	})

	t.Run("ping", func(t *testing.T) {
		for _, from := range bed.Hosts() {
			for _, to := range bed.Hosts() {
				if from == to {
					continue
				}
				for _, network := range bed.Networks() {
					mustPing(t, from, to.Addr(network))
				}
			}
		}
	})

	t.Run("neighbours", func(t *testing.T) {
		mustPing(t, node1, node2.Addr("default"))
		n, ok, err := node1.Neighbour("default", node2.Addr("default"))
		if err != nil || !ok {
			t.Fatalf("node1 has no ARP entry for node2: %v", err)
		}
		if n.MAC.String() != node2.MAC("default").String() {
			t.Errorf("node1's ARP entry for node2 is %s, node2's MAC is %s", n.MAC, node2.MAC("default"))
		}
		if n.State == "FAILED" || n.State == "INCOMPLETE" {
			t.Errorf("entry state %s right after a ping", n.State)
		}
	})

	t.Run("addaddr", func(t *testing.T) {
		vip := netip.MustParsePrefix("198.18.0.100/24")
		if err := node2.AddAddr("default", vip); err != nil {
			t.Fatal(err)
		}
		mustPing(t, client, vip.Addr())
		if err := node2.DelAddr("default", vip); err != nil {
			t.Fatal(err)
		}
		mustNotPing(t, client, vip.Addr())
	})

	t.Run("linkdown", func(t *testing.T) {
		if err := node1.LinkDown("default"); err != nil {
			t.Fatal(err)
		}
		mustNotPing(t, node1, node2.Addr("default"))
		mustNotPing(t, client, node1.Addr("default"))
		mustPing(t, node1, node2.Addr("replication"))
		mustPing(t, client, node2.Addr("default"))
		out, err := node1.Run(context.Background(), "ip", "link", "show", "eth0")
		if err != nil || !strings.Contains(out, "NO-CARRIER") {
			t.Errorf("node1's eth0 should have lost carrier (%v):\n%s", err, out)
		}
		if err := node1.LinkUp("default"); err != nil {
			t.Fatal(err)
		}
		mustPing(t, node1, node2.Addr("default"))

		if err := node1.CutAll(); err != nil {
			t.Fatal(err)
		}
		mustNotPing(t, client, node1.Addr("default"))
		mustNotPing(t, client, node1.Addr("replication"))
		if err := node1.HealAll(); err != nil {
			t.Fatal(err)
		}
		mustPing(t, client, node1.Addr("default"))
		mustPing(t, client, node1.Addr("replication"))
	})

	t.Run("drop", func(t *testing.T) {
		ctx := context.Background()
		if err := node1.Drop(ctx, "default"); err != nil {
			t.Fatal(err)
		}
		mustNotPing(t, client, node1.Addr("default"))
		mustPing(t, client, node1.Addr("replication"))
		out, err := node1.Run(ctx, "ip", "link", "show", "eth0")
		if err != nil || strings.Contains(out, "NO-CARRIER") {
			t.Errorf("a drop must leave the link up (%v):\n%s", err, out)
		}
		if err := node1.Undrop(ctx, "default"); err != nil {
			t.Fatal(err)
		}
		mustPing(t, client, node1.Addr("default"))

		// Dropping one peer partitions that pair only.
		if err := node1.Drop(ctx, "default", node2.Addr("default")); err != nil {
			t.Fatal(err)
		}
		mustNotPing(t, node1, node2.Addr("default"))
		mustNotPing(t, node2, node1.Addr("default"))
		mustPing(t, node1, client.Addr("default"))
		mustPing(t, node1, node2.Addr("replication"))
		if err := node1.HealAll(); err != nil {
			t.Fatal(err)
		}
		mustPing(t, node1, node2.Addr("default"))
		if out, err := node1.Run(ctx, "nft", "list", "ruleset"); err != nil || strings.Contains(out, nftTable) {
			t.Errorf("HealAll left the drop table (%v):\n%s", err, out)
		}
	})

	t.Run("freeze", func(t *testing.T) {
		sleeper, err := node2.Start("sleep", node2.Command(context.Background(), "sleep", "60"))
		if err != nil {
			t.Fatal(err)
		}
		if err := node2.Freeze(); err != nil {
			t.Fatal(err)
		}
		if st := procState(sleeper.PID()); st != 'T' {
			t.Errorf("frozen sleep is in state %q, want T", st)
		}
		if err := node2.Thaw(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "sleep to resume", func() bool { st := procState(sleeper.PID()); return st == 'S' || st == 'R' })
		if err := sleeper.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		sleeper.Wait()
	})

	// A frozen server is an outage the poller must measure: its length is
	// the freeze, less what the probe timeout hides.
	t.Run("poller", func(t *testing.T) {
		if _, err := node2.StartHTTPServer(8080); err != nil {
			t.Fatal(err)
		}
		const interval, timeout, freeze = 20 * time.Millisecond, 200 * time.Millisecond, 800 * time.Millisecond
		target := netip.AddrPortFrom(node2.Addr("default"), 8080)
		p, err := bed.Poller("client", target, PollerOptions{Interval: interval, Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.WaitFor(ctx, func(s PollStats) bool { return s.OK >= 5 }); err != nil {
			t.Fatal(err)
		}
		if err := node2.Freeze(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(freeze)
		if err := node2.Thaw(); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitFor(ctx, func(s PollStats) bool { g, ok := s.FirstGap(); return ok && !g.Open }); err != nil {
			t.Fatal(err)
		}
		s := p.Stop()
		g, _ := s.FirstGap()
		t.Logf("freeze %v: gap %v (%d failed of %d probes)", freeze, g.Duration(), g.Failed, s.Probes)
		if lo, hi := freeze-timeout-3*interval, freeze+5*interval; g.Duration() < lo || g.Duration() > hi {
			t.Errorf("gap %v for a %v freeze, want within [%v, %v]", g.Duration(), freeze, lo, hi)
		}
		if got := s.Answers(); len(got) != 1 || got[0] != "node2" {
			t.Errorf("answers %v, want [node2]", got)
		}
	})

	t.Run("kill9", func(t *testing.T) {
		sh, err := node2.Start("forker", node2.Command(context.Background(), "sh", "-c", "sleep 60 & sleep 60"))
		if err != nil {
			t.Fatal(err)
		}
		// The shell's background child is not a process Start knows of:
		// Kill9 must still find it through the namespace.
		waitFor(t, "shell and its two sleeps", func() bool { pids, _ := node2.PIDs(); return len(pids) >= 4 })
		before, _ := node2.PIDs()
		if err := node2.Kill9(); err != nil {
			t.Fatal(err)
		}
		if pids, err := node2.PIDs(); err != nil || len(pids) != 0 {
			t.Fatalf("after Kill9: %v %v", pids, err)
		}
		for _, pid := range before {
			if procState(pid) != 0 && procState(pid) != 'Z' {
				t.Errorf("pid %d survived Kill9", pid)
			}
		}
		var exit *exec.ExitError
		if err := sh.Wait(); !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("shell ended with %v, want killed by SIGKILL", err)
		}
		for _, p := range node2.Processes() {
			if !p.Exited() {
				t.Errorf("%s still running after Kill9", p.Name)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if conn, err := client.DialContext(ctx, "tcp", netip.AddrPortFrom(node2.Addr("default"), 8080).String()); err == nil {
			conn.Close()
			t.Error("http server still answers after Kill9")
		}
	})
}

// TestFailoverMeasurement moves an address from a crashed host to another
// by hand, as the product would, and checks that the poller sees one outage
// as long as the takeover took, and both servers in turn.
func TestFailoverMeasurement(t *testing.T) {
	RequireRoot(t)
	bed, _ := New(t, Options{Hosts: []string{"node1", "node2", "client"}})
	node1, node2, client := bed.Host("node1"), bed.Host("node2"), bed.Host("client")
	vip := netip.MustParsePrefix("198.18.0.100/24")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, h := range []*Host{node1, node2} {
		if _, err := h.StartHTTPServer(8080); err != nil {
			t.Fatal(err)
		}
	}
	if err := node1.AddAddr("default", vip); err != nil {
		t.Fatal(err)
	}
	p, err := bed.Poller("client", netip.AddrPortFrom(vip.Addr(), 8080), PollerOptions{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(ctx, func(s PollStats) bool { return s.OK >= 5 }); err != nil {
		t.Fatal(err)
	}
	crash := time.Now()
	if err := node1.Kill9(); err != nil {
		t.Fatal(err)
	}
	if err := node1.CutAll(); err != nil {
		t.Fatal(err)
	}
	const detection = 300 * time.Millisecond
	time.Sleep(detection)
	if err := node2.AddAddr("default", vip); err != nil {
		t.Fatal(err)
	}
	// Stands in for the gratuitous ARP the product sends.
	if _, err := client.Run(ctx, "ip", "neigh", "flush", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	takeover := time.Since(crash)
	if err := p.WaitAnswer(ctx, "node2"); err != nil {
		t.Fatal(err)
	}
	s := p.Stop()
	gap, ok := s.FirstGap()
	t.Logf("takeover after %v, outage %v (%d probes failed)", takeover, gap.Duration(), gap.Failed)
	if !ok || len(s.Gaps) != 1 || gap.Open {
		t.Fatalf("want one closed outage, got %+v", s.Gaps)
	}
	if gap.Duration() < detection || gap.Duration() > takeover+200*time.Millisecond {
		t.Errorf("outage %v, want between %v and %v", gap.Duration(), detection, takeover+200*time.Millisecond)
	}
	if got := s.Answers(); len(got) != 2 || got[0] != "node1" || got[1] != "node2" {
		t.Errorf("answers %v, want [node1 node2]", got)
	}
}

// TestLimit checks that tbf shapes both directions of one host's link and
// that Unlimit removes it.
func TestLimit(t *testing.T) {
	RequireRoot(t)
	bed, _ := New(t, Options{Hosts: []string{"a", "b"}})
	a, b := bed.Host("a"), bed.Host("b")
	const size = 1 << 20
	const rate = 8_000_000 // bit/s: 1 MB/s, so 1 MiB takes about a second

	// The first connection of a fresh bed: New must not return before the
	// links can carry it (a lost SYN costs a 1 s retransmission).
	free := transfer(t, a, b, size)
	t.Logf("unlimited, first connection: %v", free)
	if free > 300*time.Millisecond {
		t.Errorf("1 MiB over a fresh unlimited link took %v", free)
	}
	if err := a.Limit("default", rate, 0); err != nil {
		t.Fatal(err)
	}
	out, err := a.Run(context.Background(), "tc", "qdisc", "show", "dev", "eth0")
	if err != nil || !strings.Contains(out, "tbf") || !strings.Contains(out, "rate 8Mbit") {
		t.Errorf("tc shows no 8Mbit tbf on a's eth0 (%v):\n%s", err, out)
	}
	want := time.Duration(float64(size) / (rate / 8) * float64(time.Second))
	for _, dir := range []struct {
		name     string
		from, to *Host
	}{{"egress", a, b}, {"ingress", b, a}} {
		got := transfer(t, dir.from, dir.to, size)
		t.Logf("%s limited to %d bit/s: %v (ideal %v)", dir.name, rate, got, want)
		if got < want*8/10 || got > want*16/10 {
			t.Errorf("%s: 1 MiB took %v at %d bit/s, want about %v", dir.name, got, rate, want)
		}
	}
	if err := a.Unlimit("default"); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlimit("default"); err != nil {
		t.Errorf("second Unlimit: %v", err)
	}
	if got := transfer(t, a, b, size); got > want/4 {
		t.Errorf("after Unlimit 1 MiB took %v, still limited", got)
	}
}

// transfer sends size bytes over TCP from one host to the other and returns
// the time until the receiver acknowledged the last byte.
func transfer(t *testing.T, from, to *Host, size int) time.Duration {
	t.Helper()
	l, err := to.Listen("tcp4", net.JoinHostPort(to.Addr("default").String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		if n, err := io.Copy(io.Discard, c); err != nil || n != int64(size) {
			served <- fmt.Errorf("received %d bytes: %v", n, err)
			return
		}
		_, err = c.Write([]byte{1})
		served <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	c, err := from.DialContext(ctx, "tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("wait for the receiver's ack: %v", err)
	}
	elapsed := time.Since(start)
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	return elapsed
}

// TestClose checks that Close leaves nothing: no namespace, no link, no
// directory, no process, no zombie; and that it is idempotent.
func TestClose(t *testing.T) {
	RequireRoot(t)
	bed, err := New(nil, Options{Hosts: []string{"x", "y"}, Networks: []string{"default", "replication"}})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			bed.Close()
		}
	})
	prefix, dir := bed.Prefix(), bed.Dir()
	var pids []int
	for _, h := range bed.Hosts() {
		p, err := h.Start("sleep", h.Command(context.Background(), "sh", "-c", "sleep 60 & exec sleep 61"))
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, p.PID())
	}
	if _, err := bed.Poller("x", netip.AddrPortFrom(bed.Host("y").Addr("default"), 9), PollerOptions{ConnectOnly: true}); err != nil {
		t.Fatal(err)
	}
	if err := bed.Host("x").Limit("replication", 1_000_000, 0); err != nil {
		t.Fatal(err)
	}
	if err := bed.Host("y").Drop(context.Background(), "default"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "background sleeps", func() bool { p, _ := bed.Host("y").PIDs(); return len(p) == 2 })

	closed = true
	start := time.Now()
	if err := bed.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("closed in %v", time.Since(start))
	if err := bed.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	assertNoLeftovers(t, prefix, dir)
	for _, pid := range pids {
		if st := procState(pid); st != 0 {
			t.Errorf("started pid %d still exists in state %q", pid, st)
		}
	}
	if kids := childrenOf(os.Getpid()); len(kids) != 0 {
		t.Errorf("test process still has children %v", kids)
	}
	if _, err := bed.Host("x").Start("late", bed.Host("x").Command(context.Background(), "true")); err == nil {
		t.Error("Start after Close succeeded")
	}
}

// TestStartRejectsForeignCommand checks that a command not made by the host
// cannot be started as one of its processes.
func TestStartRejectsForeignCommand(t *testing.T) {
	RequireRoot(t)
	bed, _ := New(t, Options{Hosts: []string{"a", "b"}})
	if _, err := bed.Host("a").Start("x", exec.Command("sleep", "1")); err == nil {
		t.Error("started a root-namespace command")
	}
	if _, err := bed.Host("a").Start("x", bed.Host("b").Command(context.Background(), "sleep", "1")); err == nil {
		t.Error("started b's command as a's process")
	}
}

// recordingTB notes what RequireRoot asked of the test instead of doing it.
type recordingTB struct {
	testing.TB
	skipped, failed bool
}

func (r *recordingTB) Helper()           {}
func (r *recordingTB) Skip(...any)       { r.skipped = true }
func (r *recordingTB) Fatal(args ...any) { r.failed = true }

func TestRequireRoot(t *testing.T) {
	for _, c := range []struct {
		euid                int
		required            string
		wantSkip, wantFatal bool
	}{
		{0, "", false, false},
		{0, "1", false, false},
		{1000, "", true, false},
		{1000, "1", false, true},
	} {
		r := &recordingTB{TB: t}
		requireRoot(r, c.euid, c.required)
		if r.skipped != c.wantSkip || r.failed != c.wantFatal {
			t.Errorf("euid %d HALO_REQUIRE_ROOT=%q: skipped %v failed %v, want %v %v",
				c.euid, c.required, r.skipped, r.failed, c.wantSkip, c.wantFatal)
		}
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, opts := range []Options{
		{},
		{Hosts: []string{"a", "a"}},
		{Hosts: []string{"Node1"}},
		{Hosts: []string{"averyverylonghostname"}},
		{Hosts: []string{"switch"}},
		{Hosts: []string{"a"}, Networks: []string{"x", "x"}},
		{Hosts: []string{"a"}, Networks: []string{"has-dash"}},
	} {
		if err := validate(&opts); err == nil {
			t.Errorf("validate(%+v) accepted", opts)
		}
	}
	opts := Options{Hosts: []string{"a"}}
	if err := validate(&opts); err != nil || len(opts.Networks) != 1 || opts.Networks[0] != "default" {
		t.Errorf("defaults: %v %v", opts.Networks, err)
	}
}

func TestSummarise(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	probes := []Probe{
		{Sent: at(40), OK: false, Err: errors.New("x")},
		{Sent: at(0), OK: true, Answer: "a"},
		{Sent: at(20), OK: true, Answer: "a"},
		{Sent: at(60), OK: false, Err: errors.New("y")},
		{Sent: at(80), OK: true, Answer: "b"},
		{Sent: at(100), OK: true, Answer: "b"},
		{Sent: at(120), OK: false, Err: errors.New("z")},
	}
	s := summarise(probes)
	if s.Probes != 7 || s.OK != 4 || s.Failed != 3 || s.LastErr.Error() != "z" {
		t.Errorf("counts %+v", s)
	}
	if len(s.Gaps) != 2 {
		t.Fatalf("gaps %+v", s.Gaps)
	}
	if g := s.Gaps[0]; g.From != at(20) || g.To != at(80) || g.Failed != 2 || g.Open || g.Duration() != 60*time.Millisecond {
		t.Errorf("first gap %+v", g)
	}
	if g := s.Gaps[1]; !g.Open || g.From != at(100) || g.Failed != 1 {
		t.Errorf("open gap %+v", g)
	}
	if got := s.Answers(); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("answers %v", got)
	}
	if len(s.Spans) != 2 || s.Spans[0].Probes != 2 || s.Spans[1].From != at(80) || s.Spans[1].To != at(100) {
		t.Errorf("spans %+v", s.Spans)
	}
	if s.MaxGap() != 60*time.Millisecond {
		t.Errorf("max gap %v", s.MaxGap())
	}
	if _, ok := summarise(nil).FirstGap(); ok {
		t.Error("gap without probes")
	}
}

// childModeEnv makes TestChildFailingBed the body of a child process that
// fails in the given way; TestCleanupAfterFailure runs it.
const childModeEnv = "HALO_TESTBED_CHILD"

// TestCleanupAfterFailure runs a bed inside a child test binary whose subtest
// fails (t.Fatal), panics, or whose whole process is killed, and checks that
// nothing survives: by the bed's own cleanup in the first two cases, by
// CleanupStale in the last.
func TestCleanupAfterFailure(t *testing.T) {
	RequireRoot(t)
	for _, mode := range []string{"fatal", "panic", "crash"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestChildFailingBed$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), childModeEnv+"="+mode, "HALO_REQUIRE_ROOT=1")
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("child passed, want it to fail:\n%s", out)
			}
			info := parseChildReport(string(out))
			prefix, pid := info["PREFIX"], info["SLEEP"]
			if prefix == "" || pid == "" {
				t.Fatalf("child did not report its bed:\n%s", out)
			}
			sleepPID, _ := strconv.Atoi(pid)
			switch mode {
			case "fatal":
				// The child checked between the subtest and its own end.
				if info["AFTER_SUBTEST"] != "clean" {
					t.Errorf("bed not removed when the failing subtest ended: %q\n%s", info["AFTER_SUBTEST"], out)
				}
			case "crash":
				// A bed built by another test binary at this moment runs
				// CleanupStale too and may get there first; either way
				// CleanupStale did the work.
				if namespaceExists(prefix) {
					removed, err := CleanupStale()
					if err != nil {
						t.Fatal(err)
					}
					if !containsString(removed, prefix) {
						t.Errorf("CleanupStale removed %v, not %s", removed, prefix)
					}
				} else {
					t.Logf("%s was already removed by a concurrent CleanupStale", prefix)
				}
			}
			assertNoLeftovers(t, prefix, filepath.Join(scratchRoot(), prefix))
			waitFor(t, "orphaned sleep to be reaped by init", func() bool { return procState(sleepPID) == 0 })
		})
	}
}

// TestChildFailingBed is not a test on its own: it is the child process of
// TestCleanupAfterFailure, and returns at once unless that test started it.
func TestChildFailingBed(t *testing.T) {
	mode := os.Getenv(childModeEnv)
	if mode == "" {
		t.Skip("helper of TestCleanupAfterFailure; runs only as its child")
	}
	var prefix string
	t.Run("sub", func(t *testing.T) {
		bed, _ := New(t, Options{Hosts: []string{"a", "b"}})
		prefix = bed.Prefix()
		p, err := bed.Host("a").Start("sleep", bed.Host("a").Command(context.Background(), "sleep", "60"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("\nREPORT PREFIX=%s\nREPORT SLEEP=%d\n", prefix, p.PID())
		switch mode {
		case "fatal":
			t.Fatal("deliberate failure")
		case "panic":
			panic("deliberate panic")
		case "crash":
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	})
	state := "clean"
	if namespaceExists(prefix) {
		state = "namespaces left"
	}
	fmt.Printf("\nREPORT AFTER_SUBTEST=%s\n", state)
}

func parseChildReport(out string) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "REPORT "); ok {
			if k, v, ok := strings.Cut(rest, "="); ok {
				m[k] = v
			}
		}
	}
	return m
}

func assertNoLeftovers(t *testing.T, prefix, dir string) {
	t.Helper()
	if namespaceExists(prefix) {
		out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
		t.Errorf("namespaces with prefix %s remain:\n%s", prefix, out)
	}
	links, err := exec.Command("ip", "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(links), prefix) || strings.Contains(string(links), "br-default") {
		t.Errorf("root namespace has links of the bed:\n%s", links)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scratch directory %s remains (%v)", dir, err)
	}
}

func namespaceExists(prefix string) bool {
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		panic(fmt.Sprintf("ip netns list: %v: %s", err, out))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}

// childrenOf lists the live and zombie children of pid.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			kids = append(kids, child)
		}
	}
	return kids
}

func mustPing(t *testing.T, from *Host, to netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := from.Ping(ctx, to); err != nil {
		t.Errorf("%s → %s: %v", from.Name, to, err)
	}
}

func mustNotPing(t *testing.T, from *Host, to netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	if rtt, err := from.Ping(ctx, to); err == nil {
		t.Errorf("%s → %s answered in %v, want no answer", from.Name, to, rtt)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
