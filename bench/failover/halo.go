package failover

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/halo-ha/halo/test/harness"
	"github.com/halo-ha/halo/test/mirror/mirrorbed"
)

// HaloTimers is a heartbeat setting of a halo mirror module.
type HaloTimers struct {
	// Name labels the setting in reports, matching keepalived's ("fast",
	// "default").
	Name string
	// Pulse and Timeout are the module's heartbeat pulse and timeout; zero
	// leaves halo's defaults (1 s, 5 s).
	Pulse, Timeout time.Duration
}

var (
	// HaloFast is the fast setting: pulse 100 ms, timeout 500 ms.
	HaloFast = HaloTimers{Name: "fast", Pulse: 100 * time.Millisecond, Timeout: 500 * time.Millisecond}
	// HaloDefault is halo's out-of-the-box setting (pulse 1 s, timeout 5 s).
	HaloDefault = HaloTimers{Name: "default"}
)

func (t HaloTimers) String() string {
	if t.Pulse == 0 {
		return t.Name + ": pulse 1s, timeout 5s (defaults)"
	}
	return fmt.Sprintf("%s: pulse %v, timeout %v", t.Name, t.Pulse, t.Timeout)
}

// Halo runs a halo mirror module on the setup's two nodes
// (test/mirror/mirrorbed): a real `halo agent` per node, heartbeats on the
// bed's network, the vip plugin, and the HTTP service started by
// start_prim and stopped by stop_prim. Unlike keepalived's servers, which
// run on both nodes all along, halo's service runs only on the primary:
// its failover time includes starting the application, as it would for a
// real one.
type Halo struct {
	timers  HaloTimers
	bin     string
	version string

	mu      sync.Mutex
	cluster *mirrorbed.Cluster
}

var _ Cluster = (*Halo)(nil)

// NewHalo returns a halo cluster with the given timers, running the
// binaries in bin (halo and plugins/); "" finds or builds them as the tests
// do ($HALO_BIN, else a fresh build).
func NewHalo(t HaloTimers, bin string) (*Halo, error) {
	if (t.Pulse == 0) != (t.Timeout == 0) {
		return nil, errors.New("halo timers: set both pulse and timeout, or neither")
	}
	if bin == "" {
		var err error
		if bin, err = harness.FindBin(); err != nil {
			return nil, fmt.Errorf("find halo binaries: %w", err)
		}
	}
	out, err := exec.Command(filepath.Join(bin, "halo"), "version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("run halo version: %w: %s", err, out)
	}
	return &Halo{timers: t, bin: bin, version: strings.TrimPrefix(strings.TrimSpace(string(out)), "halo ")}, nil
}

// System implements Cluster.
func (h *Halo) System() string { return "halo " + h.version }

// Timers implements Cluster.
func (h *Halo) Timers() string { return h.timers.String() }

// Start implements Cluster: both agents, the first start's WAIT, `halo
// prim` on the first node, and a wait for PRIM/SECOND Ready.
func (h *Halo) Start(ctx context.Context, s Setup) error {
	c, err := mirrorbed.Deploy(ctx, s.Bed, mirrorbed.Options{
		Bin: h.bin, Nodes: s.Nodes, Client: s.Client,
		VIP: s.VIP, VIPNetwork: s.Network, Port: s.Port,
		Pulse: h.timers.Pulse, Timeout: h.timers.Timeout,
		LogLevel: "info",
	})
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.cluster = c
	h.mu.Unlock()
	if err := c.Start(ctx); err != nil {
		return err
	}
	first, second := c.Node(s.Nodes[0]), c.Node(s.Nodes[1])
	for _, n := range []*mirrorbed.Node{first, second} {
		if _, err := n.WaitState(ctx, "WAIT", ""); err != nil {
			return err
		}
	}
	if err := first.Command(ctx, "prim"); err != nil {
		return err
	}
	return waitRoles(ctx, first, second)
}

// Recover implements Cluster: the agent again on the restarted node, which
// must come back as SECOND of the node that took over.
func (h *Halo) Recover(ctx context.Context, node string) error {
	c := h.current()
	n := c.Node(node)
	if err := n.StartAgent(ctx); err != nil {
		return err
	}
	return waitRoles(ctx, c.Peer(n), n)
}

// Master implements Cluster: the node whose agent says it serves (PRIM or
// ALONE). A node whose agent does not answer (crashed) is not master.
func (h *Halo) Master(ctx context.Context) (string, error) {
	c := h.current()
	var masters, states []string
	for _, n := range c.Nodes() {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := n.Status(qctx)
		cancel()
		if err != nil {
			states = append(states, n.Name+": no answer")
			continue
		}
		states = append(states, fmt.Sprintf("%s: %s/%s", n.Name, m.State, m.Readiness))
		if m.State == "PRIM" || m.State == "ALONE" {
			masters = append(masters, n.Name)
		}
	}
	if len(masters) != 1 {
		return "", fmt.Errorf("want exactly one serving node, have %v (%s)", masters, strings.Join(states, ", "))
	}
	return masters[0], nil
}

func (h *Halo) current() *mirrorbed.Cluster {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cluster
}

// waitRoles waits for prim PRIM/Ready and second SECOND/Ready.
func waitRoles(ctx context.Context, prim, second *mirrorbed.Node) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := prim.WaitState(ctx, "PRIM", "Ready"); err != nil {
		return err
	}
	_, err := second.WaitState(ctx, "SECOND", "Ready")
	return err
}
