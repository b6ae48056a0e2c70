// Package failover measures how long a client loses a virtual IP when the
// node serving it crashes, for any HA system that can be driven through the
// Cluster interface: keepalived as the baseline, halo's mirror module next to
// it.
//
// One run builds a test bed (node1, node2 and a client on 198.18.0.0/24),
// lets the cluster bring the VIP up on node1, then repeats: a client polls
// http://VIP:port every 20 ms; the node serving the VIP is crashed; the
// failover time is the first outage the client sees (from the last answer
// before the crash to the first answer from the other node, as
// testbed.PollStats measures it); the crashed node comes back as a standby
// while the client keeps polling, so a failback or a flap shows. The next
// crash hits the node that took over, so the VIP moves back and
// forth without ever failing back on its own: that is halo's behaviour
// without default_primary, and each crash then costs exactly one failover.
//
// The harness, not the cluster, applies the fault, so every system gets the
// same one (see Fault).
package failover

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/halo-ha/halo/test/testbed"
)

// Setup is the stage every cluster gets: the bed, its two server nodes, the
// client, and the VIP and port the client polls.
type Setup struct {
	Bed     *testbed.Bed
	Nodes   [2]string // the first is where the VIP must start
	Client  string
	Network string
	VIP     netip.Prefix
	Port    uint16
}

// Peer returns the other server node.
func (s Setup) Peer(node string) string {
	if node == s.Nodes[0] {
		return s.Nodes[1]
	}
	return s.Nodes[0]
}

// Cluster is an HA system under test.
type Cluster interface {
	// System names the product and version, e.g. "keepalived 2.2.7".
	System() string
	// Timers describes the timer setting in the system's own terms.
	Timers() string
	// Start brings the system up on the setup's nodes, with the VIP on
	// Nodes[0] and, on whichever node holds the VIP, an HTTP server on Port
	// answering the node's name (testbed's StartHTTPServer). It returns once
	// the VIP is served and the other node is ready to take over.
	Start(ctx context.Context, s Setup) error
	// Master returns the node that holds the VIP, as the system itself
	// reports it (not as the client sees it: the harness compares the two).
	Master(ctx context.Context) (string, error)
	// Recover starts the system again on a node the harness crashed and
	// restarted (its links are back up, the VIP is no longer on it). It
	// returns once the node is a standby ready to take over, without having
	// taken the VIP back.
	Recover(ctx context.Context, node string) error
}

// Fault is how the harness crashes the node serving the VIP.
type Fault string

const (
	// Kill9 sends SIGKILL to every process of the host at once (testbed's
	// Host.Freeze, then Host.Kill9). Its kernel keeps running: the VIP stays configured there,
	// and the host keeps answering ARP for it and resetting connections
	// until the survivor's gratuitous ARP redirects the client.
	Kill9 Fault = "kill9"
	// PowerOff is Kill9 plus every link cut at once: the host vanishes from
	// the network like a machine losing power. Connections to it time out
	// instead of being reset.
	PowerOff Fault = "poweroff"
)

// ParseFault parses a fault name.
func ParseFault(s string) (Fault, error) {
	switch f := Fault(s); f {
	case Kill9, PowerOff:
		return f, nil
	}
	return "", fmt.Errorf("unknown fault %q: want %q or %q", s, Kill9, PowerOff)
}

// Options tune a run. Zero values pick the defaults.
type Options struct {
	// Kills is the number of crashes; default 10.
	Kills int
	// Fault is how the master is crashed; default Kill9.
	Fault Fault
	// PollInterval is the client's probe interval, and so the resolution of
	// the measurement; default 20 ms.
	PollInterval time.Duration
	// ProbeTimeout bounds one probe; default 500 ms.
	ProbeTimeout time.Duration
	// SteadyProbes is how many answers in a row the client must get from
	// the master before a crash; default 10.
	SteadyProbes int
	// CrashJitter is the bound of a random wait before each crash, so that
	// crashes land at a uniformly random phase of the cluster's heartbeat:
	// without it every crash of a run falls at nearly the same time after
	// the last heartbeat and the outages cluster around one value. It should
	// be at least the longest heartbeat interval measured; default 1 s.
	CrashJitter time.Duration
	// FailoverTimeout bounds the wait for the other node to answer after a
	// crash; default 30 s.
	FailoverTimeout time.Duration
	// TB, when set, builds the bed for a test (cleanup registered with the
	// test, process logs printed when it fails).
	TB testing.TB
	// Logf, when set, receives one line per crash.
	Logf func(format string, args ...any)
}

func (o Options) withDefaults() Options {
	if o.Kills <= 0 {
		o.Kills = 10
	}
	if o.Fault == "" {
		o.Fault = Kill9
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 20 * time.Millisecond
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 500 * time.Millisecond
	}
	if o.SteadyProbes <= 0 {
		o.SteadyProbes = 10
	}
	if o.CrashJitter <= 0 {
		o.CrashJitter = time.Second
	}
	if o.FailoverTimeout <= 0 {
		o.FailoverTimeout = 30 * time.Second
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// Sample is one crash.
type Sample struct {
	Killed, TookOver string // the crashed node and the one that took over
	// Before and After are who answered the client just before the outage
	// and right after it: Killed and TookOver when the VIP moved.
	Before, After string
	// Gap is the outage the client saw: from its last answered probe before
	// the crash to its first answered probe after it.
	Gap time.Duration
	// Failed is the number of probes that failed during the gap.
	Failed int
	// ExtraGaps counts the outages after that one, until the crashed node
	// was back as a standby and the client had SteadyProbes answers in a
	// row from TookOver: a flapping VIP or a failback. Zero when clean.
	ExtraGaps int
}

// Result is one run: one system, one timer setting, one fault.
type Result struct {
	System, Timers string
	Fault          Fault
	Samples        []Sample
}

// Gaps returns the samples' gaps.
func (r Result) Gaps() []time.Duration {
	out := make([]time.Duration, len(r.Samples))
	for i, s := range r.Samples {
		out[i] = s.Gap
	}
	return out
}

const (
	defaultNetwork = "default"
	benchPort      = 8080
)

// benchVIP is the VIP every cluster manages: on the bed's network 0, above
// the hosts' own addresses (.10, .11, .12).
var benchVIP = netip.MustParsePrefix("198.18.0.100/24")

// Run builds a bed, starts the cluster on it, crashes the master Kills times
// and returns the samples. The bed, and with it every process the cluster
// started, is removed before Run returns (on error with Options.TB set, by
// the test's cleanup). On error the samples taken so far are returned with
// it.
func Run(ctx context.Context, c Cluster, opts Options) (_ Result, err error) {
	opts = opts.withDefaults()
	res := Result{System: c.System(), Timers: c.Timers(), Fault: opts.Fault}
	bed, err := testbed.New(opts.TB, testbed.Options{Hosts: []string{"node1", "node2", "client"}})
	if err != nil {
		return res, fmt.Errorf("build test bed: %w", err)
	}
	defer func() {
		// A failing test's cleanup closes the bed after printing the tails
		// of the process logs, which closing here would delete.
		if err == nil || opts.TB == nil {
			bed.Close()
		}
	}()
	s := Setup{
		Bed:     bed,
		Nodes:   [2]string{"node1", "node2"},
		Client:  "client",
		Network: defaultNetwork,
		VIP:     benchVIP,
		Port:    benchPort,
	}
	if err := c.Start(ctx, s); err != nil {
		return res, fmt.Errorf("start %s: %w", c.System(), err)
	}
	for i := 1; i <= opts.Kills; i++ {
		sample, err := crashOnce(ctx, c, s, opts)
		if err != nil {
			return res, fmt.Errorf("crash %d of %d: %w", i, opts.Kills, err)
		}
		res.Samples = append(res.Samples, sample)
		opts.Logf("%s [%s, %s] crash %d/%d: %s → %s, outage %v (%d probes failed), %d more outages",
			res.System, res.Timers, res.Fault, i, opts.Kills, sample.Killed, sample.TookOver,
			sample.Gap.Round(time.Millisecond), sample.Failed, sample.ExtraGaps)
	}
	if err := bed.Close(); err != nil {
		return res, fmt.Errorf("remove test bed: %w", err)
	}
	return res, nil
}

// crashOnce crashes the master while the client polls the VIP, restarts
// the crashed node and lets the cluster recover it. The client polls until
// the end, so an outage while the node comes back (a failback, a flap) is
// seen too.
func crashOnce(ctx context.Context, c Cluster, s Setup, opts Options) (Sample, error) {
	master, err := c.Master(ctx)
	if err != nil {
		return Sample{}, fmt.Errorf("ask for the master: %w", err)
	}
	survivor := s.Peer(master)
	poller, err := s.Bed.Poller(s.Client, netip.AddrPortFrom(s.VIP.Addr(), s.Port),
		testbed.PollerOptions{Interval: opts.PollInterval, Timeout: opts.ProbeTimeout})
	if err != nil {
		return Sample{}, fmt.Errorf("poll the VIP: %w", err)
	}
	defer poller.Stop()
	waitServed := func(node string, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return poller.WaitFor(ctx, steadilyServedBy(node, opts.SteadyProbes))
	}

	if err := waitServed(master, 10*time.Second); err != nil {
		return Sample{}, fmt.Errorf("wait for %s, the master, to serve the VIP: %w", master, err)
	}
	select {
	case <-ctx.Done():
		return Sample{}, ctx.Err()
	case <-time.After(rand.N(opts.CrashJitter)):
	}
	crash := time.Now()
	if err := crashHost(s.Bed.Host(master), opts.Fault); err != nil {
		return Sample{}, err
	}
	if err := waitServed(survivor, opts.FailoverTimeout); err != nil {
		return Sample{}, fmt.Errorf("wait for %s to serve the VIP after %s crashed: %w", survivor, master, err)
	}
	if err := restart(ctx, s.Bed.Host(master), s); err != nil {
		return Sample{}, fmt.Errorf("restart %s: %w", master, err)
	}
	if err := c.Recover(ctx, master); err != nil {
		return Sample{}, fmt.Errorf("recover %s: %w", master, err)
	}
	if err := waitServed(survivor, opts.FailoverTimeout); err != nil {
		return Sample{}, fmt.Errorf("wait for %s to keep serving the VIP once %s is back: %w", survivor, master, err)
	}

	sample, err := sampleOf(poller.Stop(), crash)
	if err != nil {
		return Sample{}, err
	}
	sample.Killed, sample.TookOver = master, survivor
	if sample.Before != master || sample.After != survivor {
		return sample, fmt.Errorf("client saw %q then %q across the outage, want %s then %s",
			sample.Before, sample.After, master, survivor)
	}
	if now, err := c.Master(ctx); err != nil || now != survivor {
		return sample, fmt.Errorf("with %s back, %s reports master %q (error %v), the client is served by %s",
			master, c.System(), now, err, survivor)
	}
	return sample, nil
}

// steadilyServedBy holds once the last n probes all got node's answer.
func steadilyServedBy(node string, n int) func(testbed.PollStats) bool {
	return func(st testbed.PollStats) bool {
		k := len(st.Spans)
		if k == 0 || st.Spans[k-1].Answer != node || st.Spans[k-1].Probes < n {
			return false
		}
		// A span ends at an outage, so an open gap means the last span is
		// not the latest state.
		g := len(st.Gaps)
		return g == 0 || !st.Gaps[g-1].Open
	}
}

// sampleOf picks, from the statistics of one crash, the outage the crash
// caused: the first one still open at the crash. Outages that closed before
// the crash are not the cluster's doing and are ignored.
func sampleOf(st testbed.PollStats, crash time.Time) (Sample, error) {
	i := slices.IndexFunc(st.Gaps, func(g testbed.Gap) bool { return g.To.After(crash) })
	if i < 0 {
		return Sample{}, errors.New("the client saw no outage: the crash did not reach the VIP")
	}
	g := st.Gaps[i]
	if g.Open {
		return Sample{}, errors.New("the outage is still open")
	}
	smp := Sample{Gap: g.Duration(), Failed: g.Failed, ExtraGaps: len(st.Gaps) - i - 1}
	// The answer that closed the gap starts a span at g.To; the one before
	// it ended at g.From.
	for _, sp := range st.Spans {
		if sp.To.Equal(g.From) {
			smp.Before = sp.Answer
		}
		if sp.From.Equal(g.To) {
			smp.After = sp.Answer
		}
	}
	return smp, nil
}

// crashHost applies the fault to a host. Every process is stopped before
// any is killed, so that all die at the same instant, as in a real crash:
// SIGKILLs sent one process at a time let a daemon whose parent dies first
// react. keepalived's VRRP child gets SIGTERM through PR_SET_PDEATHSIG and
// resigns with a priority-0 advertisement, a graceful handover that took
// 60 ms instead of 300 in a third of the fast-timer crashes.
func crashHost(h *testbed.Host, f Fault) error {
	if err := h.Freeze(); err != nil {
		return fmt.Errorf("stop everything on %s: %w", h.Name, err)
	}
	if err := h.Kill9(); err != nil {
		return fmt.Errorf("kill -9 everything on %s: %w", h.Name, err)
	}
	if f == PowerOff {
		if err := h.CutAll(); err != nil {
			return fmt.Errorf("cut the links of %s: %w", h.Name, err)
		}
	}
	return nil
}

// restart brings a crashed host back the way a reboot would: links up, and
// only its own address on its interface (the VIP it held is gone). It
// returns once the host has exchanged a ping with every other host on every
// network. That stands in for a booting machine's first traffic, and it
// matters: the peers' ARP entries for the host failed while it was gone,
// and a neighbour being resolved again is probed only once per second, so
// without it a peer's unicast heartbeats might not reach the host for up to
// a second, long enough for a standby with fast timers to believe its
// master dead and take the VIP (seen with keepalived).
func restart(ctx context.Context, h *testbed.Host, s Setup) error {
	addrs, err := h.Addrs(s.Network)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if a.Addr() == h.Addr(s.Network) {
			continue
		}
		if err := h.DelAddr(s.Network, a); err != nil {
			return err
		}
	}
	if err := h.HealAll(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, network := range s.Bed.Networks() {
		for _, other := range s.Bed.Hosts() {
			if other == h {
				continue
			}
			if _, err := h.Ping(ctx, other.Addr(network)); err != nil {
				return err
			}
		}
	}
	return nil
}
