// Package mirrorbed runs a two-node halo mirror module for real on a test
// bed (package testbed): two `halo agent` processes in two network
// namespaces with their own configuration, data and TLS material, a mirror
// module protecting a small HTTP service behind a VIP, and the helpers
// the tests, the demo and the failover benchmark share to look at it:
// both nodes' states, who holds the VIP as a client sees it, the order in
// which the module's scripts ran, and the event logs.
//
// It returns errors instead of failing a test, so that the demo (no
// testing.T) can use it too.
//
// The protected service is an HTTP server answering its node's name on
// Port, started by start_prim and stopped by stop_prim. Every script
// appends "<unix time> <node> <script> begin|end <args>" lines to the
// node's order log (Node.OrderLog), from which ScriptRuns tells which
// script ran when.
package mirrorbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/halo-ha/halo/sdk/api"
	"github.com/halo-ha/halo/test/testbed"
)

// Options describe the cluster to deploy. Zero values pick the defaults.
type Options struct {
	// Bin is the directory holding halo and plugins/ (harness.FindBin).
	Bin string
	// Nodes are the bed's hosts that run the module; default node1, node2.
	Nodes [2]string
	// Client is the bed's host that plays the client; default "client".
	Client string
	// Module is the module's name; default "web".
	Module string
	// ID is the module's id (its heartbeat port is 20000+ID); default 7.
	ID int
	// HeartbeatNetworks are the networks heartbeats use; default every
	// network of the bed.
	HeartbeatNetworks []string
	// Pulse and Timeout are the heartbeat timers; zero leaves halo's
	// defaults (1s, 5s).
	Pulse, Timeout time.Duration
	// VIP is the virtual address; default 198.18.0.100/24 on VIPNetwork.
	VIP netip.Prefix
	// VIPNetwork carries the VIP; default the bed's first network.
	VIPNetwork string
	// Port is the protected service's TCP port; default 8080.
	Port uint16
	// FailoverOff writes failover = false.
	FailoverOff bool
	// DefaultPrimary, SyncDelta and SplitBrainWinner are written when set.
	DefaultPrimary   string
	SyncDelta        time.Duration
	SplitBrainWinner string
	// Witnesses, when set, add a splitbrain checker probing them (ICMP).
	Witnesses []netip.Addr
	// StopDelay makes stop_prim and stop_second take this long before
	// stopping anything, so that a start on the other node that did not
	// wait for the stop shows in the order logs; zero: no delay (failover
	// measurements).
	StopDelay time.Duration
	// LogLevel of the agents; default "debug".
	LogLevel string
	// ExtraModule is HCL appended inside the module block.
	ExtraModule string
}

func (o *Options) defaults(bed *testbed.Bed) {
	if o.Nodes == [2]string{} {
		o.Nodes = [2]string{"node1", "node2"}
	}
	if o.Client == "" {
		o.Client = "client"
	}
	if o.Module == "" {
		o.Module = "web"
	}
	if o.ID == 0 {
		o.ID = 7
	}
	if len(o.HeartbeatNetworks) == 0 {
		o.HeartbeatNetworks = bed.Networks()
	}
	if o.VIPNetwork == "" {
		o.VIPNetwork = bed.Networks()[0]
	}
	if !o.VIP.IsValid() {
		o.VIP = netip.MustParsePrefix("198.18.0.100/24")
	}
	if o.Port == 0 {
		o.Port = 8080
	}
	if o.LogLevel == "" {
		o.LogLevel = "debug"
	}
}

// Cluster is a deployed mirror module on a bed.
type Cluster struct {
	Bed    *testbed.Bed
	Opts   Options
	Dir    string // configuration of every node, PKI, order logs
	Client *testbed.Host
	nodes  [2]*Node
}

// Node is one of the two nodes.
type Node struct {
	Name      string
	Host      *testbed.Host
	ConfigDir string
	DataDir   string
	Socket    string
	// OrderLog receives one line per script begin and end.
	OrderLog string
	// Agent is the running agent, nil before StartAgent.
	Agent *testbed.Process
	c     *Cluster
}

// Deploy lays out both nodes' configuration (cluster file, TLS material
// from `halo cluster init`, the module and its scripts) under the bed's
// directory. It starts nothing: see Start.
func Deploy(ctx context.Context, bed *testbed.Bed, opts Options) (*Cluster, error) {
	opts.defaults(bed)
	if opts.Bin == "" {
		return nil, errors.New("deploy mirror: Options.Bin is required")
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable (the protected service): %w", err)
	}
	c := &Cluster{Bed: bed, Opts: opts, Dir: filepath.Join(bed.Dir(), "mirror"), Client: bed.Host(opts.Client)}
	for i, name := range opts.Nodes {
		h := bed.Host(name)
		d := filepath.Join(c.Dir, name)
		c.nodes[i] = &Node{
			Name: name, Host: h, c: c,
			ConfigDir: filepath.Join(d, "etc"), DataDir: filepath.Join(d, "data"),
			Socket: filepath.Join(d, "data", "halo.sock"), OrderLog: filepath.Join(d, "order.log"),
		}
	}
	clusterFile := filepath.Join(c.Dir, "cluster.hcl")
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("deploy mirror: %w", err)
	}
	// `halo cluster init` reads the cluster file; every node gets a copy.
	if err := os.WriteFile(clusterFile, []byte(c.clusterHCL()), 0o644); err != nil {
		return nil, fmt.Errorf("deploy mirror: write cluster file: %w", err)
	}
	pki := filepath.Join(c.Dir, "pki")
	initCmd := exec.CommandContext(ctx, filepath.Join(opts.Bin, "halo"), "cluster", "init", "--cluster", clusterFile, "--out", pki)
	if out, err := initCmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("deploy mirror: halo cluster init: %w: %s", err, out)
	}
	for _, n := range c.nodes {
		if err := n.layout(ctx, c.clusterHCL(), pki, self); err != nil {
			return nil, fmt.Errorf("deploy mirror on %s: %w", n.Name, err)
		}
	}
	return c, nil
}

func (c *Cluster) clusterHCL() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster %q {\n", "mirrorbed")
	for _, n := range c.Bed.Networks() {
		fmt.Fprintf(&b, "  network %q {}\n", n)
	}
	for _, n := range c.nodes {
		var addrs []string
		for _, net := range c.Bed.Networks() {
			addrs = append(addrs, fmt.Sprintf("%s = %q", net, n.Host.Addr(net)))
		}
		fmt.Fprintf(&b, "  node %q { addresses = { %s } }\n", n.Name, strings.Join(addrs, ", "))
	}
	b.WriteString("}\n")
	return b.String()
}

func (c *Cluster) moduleHCL(n *Node, self string) string {
	o := c.Opts
	var b strings.Builder
	fmt.Fprintf(&b, "module %q {\n  kind = \"mirror\"\n  id = %d\n  nodes = [%q, %q]\n", o.Module, o.ID, o.Nodes[0], o.Nodes[1])
	if o.FailoverOff {
		b.WriteString("  failover = false\n")
	}
	if o.DefaultPrimary != "" {
		fmt.Fprintf(&b, "  default_primary = %q\n", o.DefaultPrimary)
	}
	if o.SyncDelta > 0 {
		fmt.Fprintf(&b, "  sync_delta = %q\n", o.SyncDelta)
	}
	if o.SplitBrainWinner != "" {
		fmt.Fprintf(&b, "  split_brain_winner = %q\n", o.SplitBrainWinner)
	}
	b.WriteString("  heartbeat {\n")
	if o.Pulse > 0 {
		fmt.Fprintf(&b, "    pulse = %q\n", o.Pulse)
	}
	if o.Timeout > 0 {
		fmt.Fprintf(&b, "    timeout = %q\n", o.Timeout)
	}
	fmt.Fprintf(&b, "    networks = [%s]\n  }\n", quoteList(o.HeartbeatNetworks))
	fmt.Fprintf(&b, "  vip {\n    address = %q\n    network = %q\n  }\n", o.VIP, o.VIPNetwork)
	fmt.Fprintf(&b, `  app {
    start_timeout = "20s"
    stop_timeout  = "20s"
    env = {
      SVC_BIN     = %q
      SVC_PORT    = "%d"
      SVC_DIR     = %q
      ORDER_LOG   = %q
      STOP_DELAY  = "%.3f"
    }
  }
`, self, o.Port, filepath.Join(filepath.Dir(n.OrderLog), "svc"), n.OrderLog, o.StopDelay.Seconds())
	if len(o.Witnesses) > 0 {
		ws := make([]string, len(o.Witnesses))
		for i, w := range o.Witnesses {
			ws[i] = w.String()
		}
		// The plugin waits up to 1s for each echo reply (its own
		// "timeout" attribute cannot be set: the check block's timeout is
		// halo's), two requests 200ms apart: 1.5s bounds it.
		fmt.Fprintf(&b, `  check "splitbrain" "witness" {
    interval  = "2s"
    timeout   = "1500ms"
    witnesses = [%s]
    count     = 2
    socket    = "raw"
  }
`, quoteList(ws))
	}
	b.WriteString(o.ExtraModule)
	b.WriteString("}\n")
	return b.String()
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	return strings.Join(q, ", ")
}

// scriptHeader is shared by every script: log begin/end lines with the
// time, so the order of scripts across both nodes can be checked (both
// nodes share this machine's clock).
const scriptHeader = `#!/bin/sh
# Written by test/mirror/mirrorbed. Arguments: current state, next state, action.
mark() { echo "$(date +%s.%N) $HALO_NODE $HALO_SCRIPT $*" >>"$ORDER_LOG"; }
mark begin "$@"
trap 'mark end "$@"' EXIT
# ours PID: PID is this node's service, not a process that reused the PID
# of one killed with its node (the pid file survives a simulated crash).
ours() {
	[ -n "$1" ] && [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$(readlink -f "$SVC_BIN")" ] &&
		[ "$(readlink "/proc/$1/ns/net" 2>/dev/null)" = "$(readlink /proc/$$/ns/net)" ]
}
`

// start_prim starts the service in its own session (it outlives the
// script) unless it already runs, and returns once it accepts connections.
const startPrim = scriptHeader + `mkdir -p "$SVC_DIR"
pid=$(cat "$SVC_DIR/pid" 2>/dev/null)
if ours "$pid"; then
	echo "service already running (pid $pid)"
else
	HALO_MIRRORBED_SERVE=":$SVC_PORT" HALO_MIRRORBED_LABEL="$HALO_NODE" \
		setsid "$SVC_BIN" </dev/null >>"$SVC_DIR/log" 2>&1 &
	echo $! >"$SVC_DIR/pid"
	echo "service started (pid $!)"
fi
HALO_MIRRORBED_PROBE="127.0.0.1:$SVC_PORT" "$SVC_BIN" || { echo "service does not answer"; exit 1; }
`

// stop_prim waits STOP_DELAY (so a start elsewhere that did not wait for
// it shows in the order logs), then stops the service and waits for it to
// be gone.
const stopPrim = scriptHeader + `sleep "$STOP_DELAY"
pid=$(cat "$SVC_DIR/pid" 2>/dev/null)
if ours "$pid"; then
	kill "$pid"
	i=0
	while ours "$pid" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
	ours "$pid" && kill -9 "$pid"
	echo "service stopped (pid $pid)"
else
	echo "service not running"
fi
rm -f "$SVC_DIR/pid"
`

const secondScript = scriptHeader + `echo "$HALO_SCRIPT $*"
`

const stopSecond = scriptHeader + `sleep "$STOP_DELAY"
echo "$HALO_SCRIPT $*"
`

func (n *Node) layout(ctx context.Context, clusterHCL, pki, self string) error {
	modDir := filepath.Join(n.ConfigDir, "modules", n.c.Opts.Module)
	for _, d := range []string{filepath.Join(modDir, "scripts"), n.DataDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	files := []struct {
		path, body string
		mode       os.FileMode
	}{
		{filepath.Join(n.ConfigDir, "cluster.hcl"), clusterHCL, 0o644},
		{filepath.Join(modDir, "module.hcl"), n.c.moduleHCL(n, self), 0o644},
		{filepath.Join(modDir, "scripts", "start_prim"), startPrim, 0o755},
		{filepath.Join(modDir, "scripts", "stop_prim"), stopPrim, 0o755},
		{filepath.Join(modDir, "scripts", "start_second"), secondScript, 0o755},
		{filepath.Join(modDir, "scripts", "stop_second"), stopSecond, 0o755},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, []byte(f.body), f.mode); err != nil {
			return err
		}
	}
	// The node's TLS directory, as `halo cluster init` wrote it (0700
	// directory, 0600 secrets): cp -p keeps the modes.
	if out, err := exec.CommandContext(ctx, "cp", "-rp", filepath.Join(pki, n.Name, "tls"), n.ConfigDir).CombinedOutput(); err != nil {
		return fmt.Errorf("install TLS material: %w: %s", err, out)
	}
	return nil
}

// Nodes returns both nodes, in Options.Nodes order.
func (c *Cluster) Nodes() [2]*Node { return c.nodes }

// Node returns a node by name; nil if it is not one of the two.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Peer returns the other node.
func (c *Cluster) Peer(n *Node) *Node {
	if n == c.nodes[0] {
		return c.nodes[1]
	}
	return c.nodes[0]
}

// Start starts the agent on both nodes.
func (c *Cluster) Start(ctx context.Context) error {
	for _, n := range c.nodes {
		if err := n.StartAgent(ctx); err != nil {
			return err
		}
	}
	return nil
}

// StartAgent runs `halo agent` inside the node's host (so Kill9, Freeze and
// link cuts hit it and its plugins) and waits for its API.
func (n *Node) StartAgent(ctx context.Context) error {
	o := n.c.Opts
	cmd := n.Host.Command(context.Background(), filepath.Join(o.Bin, "halo"), "agent",
		"--config-dir", n.ConfigDir, "--data-dir", n.DataDir, "--plugin-dir", filepath.Join(o.Bin, "plugins"),
		"--node", n.Name, "--socket", n.Socket, "--log-level", o.LogLevel)
	cmd.Env = cleanEnv()
	p, err := n.Host.Start("agent", cmd)
	if err != nil {
		return err
	}
	n.Agent = p
	for {
		vctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := n.Client().Version(vctx)
		cancel()
		if err == nil {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("agent on %s exited at start (%v); see %s", n.Name, p.Wait(), p.LogPath)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent on %s: API not up: %w (last error %v); see %s", n.Name, ctx.Err(), err, p.LogPath)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cleanEnv is the test's environment without HALO_* variables, so an
// agent started from a shell that set some does not pick up another
// node's paths.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HALO_") {
			env = append(env, kv)
		}
	}
	return env
}

// Client is the API client on the node's Unix socket (a path: reachable
// from the test's namespace).
func (n *Node) Client() *api.Client { return api.NewUnixClient(n.Socket) }

// CLI runs `halo args…` against the node's agent and returns its combined
// output and exit code.
func (n *Node) CLI(ctx context.Context, args ...string) (string, int, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(n.c.Opts.Bin, "halo"), args...)
	cmd.Env = append(cleanEnv(), "HALO_SOCKET="+n.Socket, "HALO_DATA_DIR="+n.DataDir, "HALO_CONFIG_DIR="+n.ConfigDir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode(), nil
	}
	if err != nil {
		return string(out), -1, fmt.Errorf("run halo %s: %w", strings.Join(args, " "), err)
	}
	return string(out), 0, nil
}

// Status is the module's status on the node, with resources.
func (n *Node) Status(ctx context.Context) (api.ModuleStatus, error) {
	return n.Client().Module(ctx, n.c.Opts.Module)
}

// WaitState waits until the module is in state (and readiness, if not
// empty) on the node.
func (n *Node) WaitState(ctx context.Context, state, readiness string) (api.ModuleStatus, error) {
	m, err := n.Client().WaitState(ctx, n.c.Opts.Module, state, readiness)
	if err != nil {
		return m, fmt.Errorf("%s: %w", n.Name, err)
	}
	return m, nil
}

// Command sends an admin command (prim, swap, …) to the node's agent.
func (n *Node) Command(ctx context.Context, command string) error {
	_, err := n.Client().Command(ctx, n.c.Opts.Module, api.CommandRequest{Command: command})
	if err != nil {
		return fmt.Errorf("halo %s on %s: %w", command, n.Name, err)
	}
	return nil
}

// Events returns the node's event log for the module.
func (n *Node) Events(ctx context.Context) ([]api.Event, error) {
	return n.Client().Events(ctx, n.c.Opts.Module, 0, 0)
}

// WaitEvent waits for an event at or after seq whose text contains every
// one of parts, and returns it.
func (n *Node) WaitEvent(ctx context.Context, after uint64, parts ...string) (api.Event, error) {
	for {
		evs, err := n.Client().Events(ctx, n.c.Opts.Module, after, 0)
		if err == nil {
			for _, e := range evs {
				if containsAll(e.Text, parts) {
					return e, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return api.Event{}, fmt.Errorf("%s: no event containing %q: %w", n.Name, parts, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// LastSeq is the sequence number of the node's latest event (0 if none),
// to look only at what happens after a fault.
func (n *Node) LastSeq(ctx context.Context) (uint64, error) {
	evs, err := n.Events(ctx)
	if err != nil {
		return 0, err
	}
	if len(evs) == 0 {
		return 0, nil
	}
	return evs[len(evs)-1].Seq, nil
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// HoldsVIP reports whether the VIP is configured on the node's interface.
func (n *Node) HoldsVIP() (bool, error) {
	o := n.c.Opts
	addrs, err := n.Host.Addrs(o.VIPNetwork)
	if err != nil {
		return false, err
	}
	return slices.Contains(addrs, o.VIP), nil
}

// ScriptRun is one script execution read from a node's order log.
type ScriptRun struct {
	Node, Script string
	Args         []string
	Begin, End   time.Time // End is zero while it runs (or if it was killed)
}

func (r ScriptRun) String() string {
	end := "running"
	if !r.End.IsZero() {
		end = r.End.Format("15:04:05.000")
	}
	return fmt.Sprintf("%s %s %v %s..%s", r.Node, r.Script, r.Args, r.Begin.Format("15:04:05.000"), end)
}

// ScriptRuns reads the node's order log.
func (n *Node) ScriptRuns() ([]ScriptRun, error) {
	f, err := os.Open(n.OrderLog)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var runs []ScriptRun
	open := map[string]int{} // script -> index of its running run
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		secs, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("order log %s: bad time in %q", n.OrderLog, sc.Text())
		}
		at := time.Unix(0, int64(secs*1e9))
		script, phase := fields[2], fields[3]
		switch phase {
		case "begin":
			open[script] = len(runs)
			runs = append(runs, ScriptRun{Node: fields[1], Script: script, Args: fields[4:], Begin: at})
		case "end":
			if i, ok := open[script]; ok {
				runs[i].End = at
				delete(open, script)
			}
		}
	}
	return runs, sc.Err()
}

// AllScriptRuns merges both nodes' order logs by start time.
func (c *Cluster) AllScriptRuns() ([]ScriptRun, error) {
	var all []ScriptRun
	for _, n := range c.nodes {
		runs, err := n.ScriptRuns()
		if err != nil {
			return nil, err
		}
		all = append(all, runs...)
	}
	slices.SortFunc(all, func(a, b ScriptRun) int { return a.Begin.Compare(b.Begin) })
	return all, nil
}

// Target is the VIP and port the client uses.
func (c *Cluster) Target() netip.AddrPort { return netip.AddrPortFrom(c.Opts.VIP.Addr(), c.Opts.Port) }

// ServedBy makes one request from the client to the VIP and returns the
// name of the node that answered.
func (c *Cluster) ServedBy(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: c.Client.DialContext, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Target().String()+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", c.Target(), resp.Status)
	}
	return strings.TrimSpace(string(body)), nil
}

// WaitServedBy waits until the client gets n answers in a row from node
// through the VIP.
func (c *Cluster) WaitServedBy(ctx context.Context, node string, n int) error {
	streak := 0
	var last string
	var lastErr error
	for streak < n {
		got, err := c.ServedBy(ctx)
		switch {
		case err != nil:
			streak, lastErr = 0, err
		case got == node:
			streak++
		default:
			streak, last = 0, got
		}
		if streak >= n {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("client not served by %s through %s (last answer %q, last error %v): %w", node, c.Target(), last, lastErr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// ARPOwner returns the node whose MAC address the client's ARP entry for
// the VIP holds ("" when it has no entry or the MAC is no node's).
func (c *Cluster) ARPOwner() (string, error) {
	net := c.Opts.VIPNetwork
	nb, ok, err := c.Client.Neighbour(net, c.Opts.VIP.Addr())
	if err != nil || !ok {
		return "", err
	}
	for _, n := range c.nodes {
		if n.Host.MAC(net).String() == nb.MAC.String() {
			return n.Name, nil
		}
	}
	return "", nil
}

// VIPHolders lists the nodes whose interface carries the VIP.
func (c *Cluster) VIPHolders() ([]string, error) {
	var out []string
	for _, n := range c.nodes {
		ok, err := n.HoldsVIP()
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, n.Name)
		}
	}
	return out, nil
}

// Health asks GET /health/<module> on the node's health port, from the
// client host, and returns the HTTP status code.
func (n *Node) Health(ctx context.Context, port int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: n.c.Client.DialContext, DisableKeepAlives: true}}
	url := fmt.Sprintf("http://%s/health/%s", net.JoinHostPort(n.Host.Addr(n.c.Opts.VIPNetwork).String(), strconv.Itoa(port)), n.c.Opts.Module)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// PowerOff makes the node vanish like a machine losing power: every
// process stopped then killed, every link cut, and the VIP gone from its
// interface (a rebooted kernel does not remember it). Restart brings it
// back.
func (n *Node) PowerOff() error {
	if err := n.Host.Freeze(); err != nil {
		return err
	}
	if err := n.Host.Kill9(); err != nil {
		return err
	}
	if err := n.Host.CutAll(); err != nil {
		return err
	}
	return n.dropVIP()
}

func (n *Node) dropVIP() error {
	ok, err := n.HoldsVIP()
	if err != nil || !ok {
		return err
	}
	return n.Host.DelAddr(n.c.Opts.VIPNetwork, n.c.Opts.VIP)
}

// Restart brings a host whose processes were killed back like a reboot
// would: links up and drops removed, the VIP it may still carry removed,
// then the agent started again.
func (n *Node) Restart(ctx context.Context, dropVIP bool) error {
	if err := n.Host.HealAll(); err != nil {
		return err
	}
	if dropVIP {
		if err := n.dropVIP(); err != nil {
			return err
		}
	}
	return n.StartAgent(ctx)
}

// ARPChange is a change of the node the client's ARP entry for the VIP
// points to ("" = no entry, or a MAC that is no node's).
type ARPChange struct {
	At    time.Time
	Owner string
}

// ARPWatch samples the client's ARP entry for the VIP until stopped.
type ARPWatch struct {
	cancel  context.CancelFunc
	done    chan struct{}
	changes []ARPChange
	err     error
}

// WatchARP samples the client's ARP entry for the VIP every interval and
// records every change of owner: a stale gratuitous ARP that points the
// client back at a node for a few milliseconds shows here even when no
// request happened to be sent in that window.
func (c *Cluster) WatchARP(interval time.Duration) *ARPWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &ARPWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		last := "\x00" // differs from every owner: the first sample is recorded
		for {
			owner, err := c.ARPOwner()
			if err != nil {
				w.err = err
				return
			}
			if owner != last {
				w.changes = append(w.changes, ARPChange{At: time.Now(), Owner: owner})
				last = owner
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(interval):
			}
		}
	}()
	return w
}

// Stop ends the sampling and returns the changes seen, the first being the
// entry at the start.
func (w *ARPWatch) Stop() ([]ARPChange, error) {
	w.cancel()
	<-w.done
	return w.changes, w.err
}
