package failover

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/halo-ha/halo/test/testbed"
)

// KeepalivedTimers is a VRRP timer setting for keepalived.
type KeepalivedTimers struct {
	// Name labels the setting in reports ("fast", "default"): rows of
	// different systems with the same name are meant to be compared.
	Name string
	// AdvertInt is the master's advertisement interval.
	AdvertInt time.Duration
	// Version is the VRRP version: 3 allows intervals below one second
	// (centiseconds); 2 is keepalived's default and rounds to whole seconds.
	Version int
}

var (
	// KeepalivedFast advertises every 100 ms, like halo's fast setting
	// (pulse 100 ms, timeout 500 ms). VRRP's backup gives up on the master
	// after 3 intervals plus a skew, 0.34-0.36 s here: sooner than halo's
	// 0.5 s timeout.
	KeepalivedFast = KeepalivedTimers{Name: "fast", AdvertInt: 100 * time.Millisecond, Version: 3}
	// KeepalivedDefault is keepalived's out-of-the-box setting (VRRPv2,
	// advert_int 1): a backup takes over after 3.41-3.61 s, where halo's
	// defaults (pulse 1 s, timeout 5 s) take 5 s.
	KeepalivedDefault = KeepalivedTimers{Name: "default", AdvertInt: time.Second, Version: 2}
)

// MasterDown is how long a backup of the given priority waits without
// advertisements before it takes over: 3 intervals plus a skew that lets
// the highest priority win (RFC 3768 §6.1 for VRRPv2, RFC 5798 §6.1 for v3).
func (t KeepalivedTimers) MasterDown(priority int) time.Duration {
	skew := time.Duration(256-priority) * time.Second / 256
	if t.Version == 3 {
		skew = time.Duration(256-priority) * t.AdvertInt / 256
	}
	return 3*t.AdvertInt + skew
}

// String describes the setting with the takeover delay of each node: the
// skew makes the higher-priority one quicker.
func (t KeepalivedTimers) String() string {
	return fmt.Sprintf("%s: advert_int %s, VRRPv%d, takeover after %s-%ss",
		t.Name, seconds(t.AdvertInt), t.Version,
		seconds(t.MasterDown(primaryPriority).Round(10*time.Millisecond)),
		seconds(t.MasterDown(backupPriority).Round(10*time.Millisecond)))
}

// seconds formats a duration as keepalived writes it: "0.1", "1".
func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

const (
	// The first node's priority is the higher one: it wins the first
	// election. After that nopreempt keeps the VIP where it is.
	primaryPriority = 150
	backupPriority  = 100
	virtualRouterID = 51
	vrrpInstance    = "VI_1"
)

// Keepalived runs keepalived's VRRP daemon on both nodes, with unicast
// advertisements (no dependence on multicast) and nopreempt on both sides:
// like halo without default_primary, a node that comes back stays a standby
// instead of taking the VIP back, so each crash is one failover. nopreempt
// needs both nodes to start in state BACKUP; the first node still becomes
// master first because it is started first (and has the higher priority).
//
// The daemon never runs in the root namespace: only in the bed's hosts, in
// the foreground (-n), with its own configuration and PID files in the
// host's directory and its log on its output (-l -G), which is also how
// the cluster learns the daemon's VRRP state.
type Keepalived struct {
	timers  KeepalivedTimers
	binary  string
	version string

	mu     sync.Mutex
	setup  Setup
	procs  map[string]*testbed.Process // the node's current daemon
	starts int
}

var _ Cluster = (*Keepalived)(nil)

// NewKeepalived returns a keepalived cluster with the given timers. It fails
// when keepalived is not installed (Debian package keepalived).
func NewKeepalived(t KeepalivedTimers) (*Keepalived, error) {
	if t.Version != 2 && t.Version != 3 {
		return nil, fmt.Errorf("VRRP version %d: want 2 or 3", t.Version)
	}
	if t.Version == 2 && t.AdvertInt%time.Second != 0 {
		return nil, fmt.Errorf("advert_int %s: VRRPv2 counts whole seconds", t.AdvertInt)
	}
	if t.AdvertInt < 10*time.Millisecond || t.AdvertInt%(10*time.Millisecond) != 0 {
		return nil, fmt.Errorf("advert_int %s: VRRP counts centiseconds", t.AdvertInt)
	}
	bin, err := exec.LookPath("keepalived")
	if err != nil {
		return nil, fmt.Errorf("find keepalived (Debian package keepalived): %w", err)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("run keepalived --version: %w: %s", err, out)
	}
	m := regexp.MustCompile(`Keepalived v(\S+)`).FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("read keepalived's version from %q", firstLine(string(out)))
	}
	return &Keepalived{timers: t, binary: bin, version: string(m[1]), procs: map[string]*testbed.Process{}}, nil
}

// System implements Cluster.
func (k *Keepalived) System() string { return "keepalived " + k.version }

// Timers implements Cluster.
func (k *Keepalived) Timers() string { return k.timers.String() }

// Start implements Cluster: HTTP servers on both nodes (a VRRP router has
// the application running everywhere; only the VIP moves), then keepalived
// on the first node until it is master, then on the second.
func (k *Keepalived) Start(ctx context.Context, s Setup) error {
	k.mu.Lock()
	k.setup = s
	k.procs = map[string]*testbed.Process{}
	k.mu.Unlock()
	for _, node := range s.Nodes {
		if _, err := s.Bed.Host(node).StartHTTPServer(s.Port); err != nil {
			return fmt.Errorf("start the HTTP server on %s: %w", node, err)
		}
	}
	first, second := s.Nodes[0], s.Nodes[1]
	if err := k.startDaemon(first); err != nil {
		return err
	}
	if err := k.waitState(ctx, first, "MASTER", k.timers.MasterDown(primaryPriority)+10*time.Second); err != nil {
		return err
	}
	return k.startStandby(ctx, second)
}

// Recover implements Cluster: the HTTP server and keepalived again, as a
// standby.
func (k *Keepalived) Recover(ctx context.Context, node string) error {
	s := k.currentSetup()
	if _, err := s.Bed.Host(node).StartHTTPServer(s.Port); err != nil {
		return fmt.Errorf("start the HTTP server on %s: %w", node, err)
	}
	return k.startStandby(ctx, node)
}

// startStandby starts keepalived on a node while its peer is master, and
// returns once the node has stayed BACKUP for longer than it would take it
// to declare the master dead: proof that it hears the master's adverts.
func (k *Keepalived) startStandby(ctx context.Context, node string) error {
	if err := k.startDaemon(node); err != nil {
		return err
	}
	if err := k.waitState(ctx, node, "BACKUP", 10*time.Second); err != nil {
		return err
	}
	settle := k.timers.MasterDown(k.priority(node)) + 2*k.timers.AdvertInt + 200*time.Millisecond
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(settle):
	}
	states, alive, err := k.states(node)
	if err != nil {
		return err
	}
	if !alive {
		return fmt.Errorf("keepalived on %s exited while starting as a standby", node)
	}
	for _, st := range states {
		if st == "MASTER" {
			return fmt.Errorf("keepalived on %s became MASTER while starting as a standby: it does not hear its peer (states %v)", node, states)
		}
	}
	return nil
}

// Master implements Cluster: the node whose live daemon last logged that it
// entered MASTER state.
func (k *Keepalived) Master(context.Context) (string, error) {
	s := k.currentSetup()
	var masters []string
	for _, node := range s.Nodes {
		state, err := k.state(node)
		if err != nil {
			return "", err
		}
		if state == "MASTER" {
			masters = append(masters, node)
		}
	}
	switch len(masters) {
	case 1:
		return masters[0], nil
	case 0:
		return "", errors.New("no keepalived is MASTER")
	default:
		return "", fmt.Errorf("keepalived is MASTER on %v: split brain", masters)
	}
}

func (k *Keepalived) currentSetup() Setup {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.setup
}

func (k *Keepalived) priority(node string) int {
	if node == k.currentSetup().Nodes[0] {
		return primaryPriority
	}
	return backupPriority
}

// config is the keepalived.conf of one node.
func (k *Keepalived) config(node string) string {
	s := k.currentSetup()
	bed := s.Bed
	self, peer := bed.Host(node), bed.Host(s.Peer(node))
	var b strings.Builder
	fmt.Fprintf(&b, "# keepalived on %s for halo's failover benchmark; timers %s.\n", node, k.timers)
	fmt.Fprintf(&b, "global_defs {\n\trouter_id %s\n}\n\n", node)
	fmt.Fprintf(&b, "vrrp_instance %s {\n", vrrpInstance)
	// nopreempt only works from state BACKUP; see the type's comment.
	b.WriteString("\tstate BACKUP\n\tnopreempt\n")
	fmt.Fprintf(&b, "\tinterface %s\n", self.Iface(s.Network))
	fmt.Fprintf(&b, "\tvirtual_router_id %d\n", virtualRouterID)
	fmt.Fprintf(&b, "\tpriority %d\n", k.priority(node))
	fmt.Fprintf(&b, "\tversion %d\n", k.timers.Version)
	fmt.Fprintf(&b, "\tadvert_int %s\n", seconds(k.timers.AdvertInt))
	fmt.Fprintf(&b, "\tunicast_src_ip %s\n", self.Addr(s.Network))
	fmt.Fprintf(&b, "\tunicast_peer {\n\t\t%s\n\t}\n", peer.Addr(s.Network))
	fmt.Fprintf(&b, "\tvirtual_ipaddress {\n\t\t%s dev %s\n\t}\n", s.VIP, self.Iface(s.Network))
	b.WriteString("}\n")
	return b.String()
}

// startDaemon writes the node's configuration and starts keepalived there.
func (k *Keepalived) startDaemon(node string) error {
	s := k.currentSetup()
	h := s.Bed.Host(node)
	conf := filepath.Join(h.Dir(), "keepalived.conf")
	pid := filepath.Join(h.Dir(), "keepalived.pid")
	vrrpPID := filepath.Join(h.Dir(), "keepalived-vrrp.pid")
	if err := os.WriteFile(conf, []byte(k.config(node)), 0o644); err != nil {
		return fmt.Errorf("write keepalived configuration for %s: %w", node, err)
	}
	// A kill -9 leaves the PID files behind, and keepalived refuses to start
	// if the PID in them has been reused by a live process.
	for _, f := range []string{pid, vrrpPID} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale %s: %w", f, err)
		}
	}
	// Checked inside the host too: the check looks up the interface.
	check := h.Command(context.Background(), k.binary, "--config-test", "--use-file", conf)
	if out, err := check.CombinedOutput(); err != nil {
		return fmt.Errorf("keepalived rejects the configuration of %s: %w: %s", node, err, out)
	}
	cmd := h.Command(context.Background(), k.binary,
		"--vrrp", "--dont-fork", "--log-console", "--no-syslog", "--log-detail",
		"--use-file", conf, "--pid", pid, "--vrrp_pid", vrrpPID)
	k.mu.Lock()
	k.starts++
	name := fmt.Sprintf("keepalived-%d", k.starts)
	k.mu.Unlock()
	p, err := h.Start(name, cmd)
	if err != nil {
		return fmt.Errorf("start keepalived on %s: %w", node, err)
	}
	k.mu.Lock()
	k.procs[node] = p
	k.mu.Unlock()
	return nil
}

// stateRE matches keepalived's state transitions, e.g.
// "(VI_1) Entering MASTER STATE" or "(VI_1) Entering BACKUP STATE (init)".
var stateRE = regexp.MustCompile(`\(` + vrrpInstance + `\) Entering ([A-Z]+) STATE`)

// states returns the VRRP states the node's current daemon has entered, in
// order, and whether it is still running.
func (k *Keepalived) states(node string) (states []string, alive bool, err error) {
	k.mu.Lock()
	p := k.procs[node]
	k.mu.Unlock()
	if p == nil {
		return nil, false, nil
	}
	log, err := os.ReadFile(p.LogPath)
	if err != nil {
		return nil, false, fmt.Errorf("read keepalived's log on %s: %w", node, err)
	}
	for _, m := range stateRE.FindAllSubmatch(log, -1) {
		states = append(states, string(m[1]))
	}
	return states, !p.Exited(), nil
}

// state is the node's current VRRP state, "" before the daemon logged any,
// "DEAD" when it is not running.
func (k *Keepalived) state(node string) (string, error) {
	states, alive, err := k.states(node)
	if err != nil {
		return "", err
	}
	if !alive {
		return "DEAD", nil
	}
	if len(states) == 0 {
		return "", nil
	}
	return states[len(states)-1], nil
}

// waitState waits until the node's daemon is in the given state.
func (k *Keepalived) waitState(ctx context.Context, node, want string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := k.state(node)
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		if got == "DEAD" {
			return fmt.Errorf("keepalived on %s exited before entering %s state (see %s)", node, want, k.logPath(node))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for keepalived on %s to enter %s state (now %q, see %s): %w",
				node, want, got, k.logPath(node), ctx.Err())
		case <-tick.C:
		}
	}
}

func (k *Keepalived) logPath(node string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p := k.procs[node]; p != nil {
		return p.LogPath
	}
	return "no log"
}

// processes returns every keepalived the cluster started, for tests that
// check nothing outlives the bed.
func (k *Keepalived) processes() []*testbed.Process {
	var out []*testbed.Process
	for _, h := range k.currentSetup().Bed.Hosts() {
		for _, p := range h.Processes() {
			if strings.HasPrefix(p.Name, "keepalived-") {
				out = append(out, p)
			}
		}
	}
	return out
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
