package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/pki"
	"github.com/halo-ha/halo/sdk/api"
)

// Two agents in one test process, on 127.0.0.1 (n1) and 127.0.0.2 (n2):
// real heartbeats over UDP, the control channel over mutual TLS with
// certificates from the same code as `halo cluster init`, fake app,
// checker and VIP plugins.

const (
	testPulse   = 100 * time.Millisecond
	testTimeout = 500 * time.Millisecond
	testVIP     = "198.18.0.100"
)

var nodeAddr = map[string]string{"n1": "127.0.0.1", "n2": "127.0.0.2"}

// secondNetAddr are the nodes' addresses on the second network ("b").
var secondNetAddr = map[string]string{"n1": "127.0.1.1", "n2": "127.0.1.2"}

type mirrorPair struct {
	t          *testing.T
	base       string
	apiPort    int
	healthPort int
	log        *scriptLog
	nodes      map[string]*mirrorNode
}

type mirrorNode struct {
	name    string
	cfg     *config.Config
	tls     *pki.Material
	key     []byte
	data    string
	plugins *fakePlugins
	agent   *Agent
	client  *api.Client
	cancel  context.CancelFunc
	done    chan error
}

// freePort returns a port free for proto on every address.
func freePort(t *testing.T, proto string, addrs ...string) int {
	t.Helper()
	for range 50 {
		var port int
		if proto == "udp" {
			c, err := net.ListenPacket("udp", addrs[0]+":0")
			if err != nil {
				t.Fatal(err)
			}
			port = c.LocalAddr().(*net.UDPAddr).Port
			c.Close()
		} else {
			l, err := net.Listen("tcp", addrs[0]+":0")
			if err != nil {
				t.Fatal(err)
			}
			port = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
		ok := true
		for _, a := range addrs[1:] {
			hp := net.JoinHostPort(a, strconv.Itoa(port))
			if proto == "udp" {
				if c, err := net.ListenPacket("udp", hp); err != nil {
					ok = false
				} else {
					c.Close()
				}
			} else if l, err := net.Listen("tcp", hp); err != nil {
				ok = false
			} else {
				l.Close()
			}
		}
		if ok {
			return port
		}
	}
	t.Fatalf("no free %s port on %v", proto, addrs)
	return 0
}

// newMirrorPair writes the cluster and the module "db" (moduleBody is
// inserted in its block), issues the TLS material and cluster key with
// pki.PlanInit, and loads each node's configuration from its own
// directory. twoNets adds a second network "b".
func newMirrorPair(t *testing.T, moduleBody string, twoNets bool) *mirrorPair {
	t.Helper()
	p := &mirrorPair{t: t, base: t.TempDir(), log: &scriptLog{}, nodes: map[string]*mirrorNode{}}
	all := []string{nodeAddr["n1"], nodeAddr["n2"]}
	p.apiPort = freePort(t, "tcp", all...)
	p.healthPort = freePort(t, "tcp", all...)
	hbPort := freePort(t, "udp", all...)
	nets := `  network "default" {}` + "\n"
	addrs := func(n string) string { return fmt.Sprintf("default = %q", nodeAddr[n]) }
	if twoNets {
		nets += `  network "b" {}` + "\n"
		addrs = func(n string) string { return fmt.Sprintf("default = %q, b = %q", nodeAddr[n], secondNetAddr[n]) }
	}
	cluster := fmt.Sprintf(`cluster "t" {
  api_port    = %d
  health_port = %d
%s  node "n1" { addresses = { %s } }
  node "n2" { addresses = { %s } }
}
`, p.apiPort, p.healthPort, nets, addrs("n1"), addrs("n2"))
	module := fmt.Sprintf(`module "db" {
  kind  = "mirror"
  id    = 7
  nodes = ["n1", "n2"]
  heartbeat {
    pulse   = %q
    timeout = %q
    port    = %d
  }
  vip {
    address = "%s/24"
  }
%s
}
`, testPulse, testTimeout, hbPort, testVIP, moduleBody)
	writeConfig := func(dir string) {
		mustWrite(t, filepath.Join(dir, "cluster.hcl"), cluster, 0o644)
		mustWrite(t, filepath.Join(dir, "modules", "db", "module.hcl"), module, 0o644)
		for _, sc := range []string{"start_prim", "stop_prim"} {
			mustWrite(t, filepath.Join(dir, "modules", "db", "scripts", sc), "#!/bin/sh\n", 0o755)
		}
	}
	writeConfig(p.base)
	cfg, diags := config.Load(config.Options{}, p.base)
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	plan, err := pki.PlanInit(pki.InitOptions{Cluster: cfg.Cluster, OutDir: filepath.Join(p.base, "pki")})
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Apply(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"n1", "n2"} {
		dir := plan.NodeDirs[name]
		writeConfig(dir)
		cfg, diags := config.Load(config.Options{}, dir)
		if diags.HasErrors() {
			t.Fatalf("config of %s: %v", name, diags)
		}
		m, err := pki.LoadNodeMaterial(cfg.Cluster, name)
		if err != nil {
			t.Fatal(err)
		}
		key, err := pki.LoadClusterKey(cfg.Cluster.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		p.nodes[name] = &mirrorNode{name: name, cfg: cfg, tls: m, key: key, data: filepath.Join(p.base, "data-"+name)}
	}
	t.Cleanup(func() {
		for _, n := range p.nodes {
			p.kill(n.name)
		}
	})
	return p
}

func mustWrite(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// start runs node name's agent (again, after kill: from its data dir).
func (p *mirrorPair) start(name string) *mirrorNode {
	p.t.Helper()
	n := p.nodes[name]
	if n.cancel != nil {
		p.t.Fatalf("%s already runs", name)
	}
	n.plugins = &fakePlugins{app: &fakeApp{node: name, log: p.log, delay: 30 * time.Millisecond}, checkers: map[string]*fakeChecker{}}
	ctx, cancel := context.WithCancel(context.Background())
	addr := nodeAddr[name]
	apiAddrs := []string{net.JoinHostPort(addr, strconv.Itoa(p.apiPort))}
	if a, ok := n.cfg.Cluster.Node(name).Addresses["b"]; ok {
		apiAddrs = append(apiAddrs, net.JoinHostPort(a.String(), strconv.Itoa(p.apiPort)))
	}
	a, err := New(ctx, Options{
		Node: name, Version: "test", Cluster: n.cfg.Cluster, Modules: n.cfg.Modules,
		DataDir: n.data, APIAddrs: apiAddrs, APITLS: n.tls.ServerConfig(pki.RequireClientCert),
		TLS: n.tls, ClusterKey: n.key, HealthHosts: []string{addr},
		Plugins: n.plugins, Logger: hclog.NewNullLogger(),
		KeepModulesOnExit: true, // kill plays a crash
	})
	if err != nil {
		cancel()
		p.t.Fatalf("start %s: %v", name, err)
	}
	n.agent, n.cancel, n.done = a, cancel, make(chan error, 1)
	go func() { n.done <- a.Run(ctx) }()
	n.client = api.NewUnixClient(filepath.Join(n.data, "halo.sock"))
	waitFor(p.t, name+" API", func() bool { _, err := n.client.Version(ctx); return err == nil })
	return n
}

// kill stops node name's agent as a crash would look to its peer: no
// more heartbeats, nothing released.
func (p *mirrorPair) kill(name string) {
	n := p.nodes[name]
	if n.cancel == nil {
		return
	}
	n.cancel()
	if err := <-n.done; err != nil {
		p.t.Errorf("agent %s: %v", name, err)
	}
	n.cancel = nil
}

func (p *mirrorPair) wait(name, state, readiness string) api.ModuleStatus {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := p.nodes[name].client.WaitState(ctx, "db", state, readiness)
	if err != nil {
		p.t.Fatalf("%s: %v\nevents:\n%s", name, err, p.events(name))
	}
	return m
}

func (p *mirrorPair) cmd(name, command string) error {
	_, err := p.nodes[name].client.Command(context.Background(), "db", api.CommandRequest{Command: command})
	return err
}

func (p *mirrorPair) status(name string) api.ModuleStatus {
	p.t.Helper()
	m, err := p.nodes[name].client.Module(context.Background(), "db")
	if err != nil {
		p.t.Fatal(err)
	}
	return m
}

func (p *mirrorPair) events(name string) string {
	evs, _ := p.nodes[name].client.Events(context.Background(), "db", 0, 0)
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s %s %s: %s\n", e.Time.Format("15:04:05.000"), e.Kind, e.Level, e.Text)
	}
	return b.String()
}

func (p *mirrorPair) hasEvent(name, text string) bool {
	evs, _ := p.nodes[name].client.Events(context.Background(), "db", 0, 0)
	return logHas(evs, text)
}

func (p *mirrorPair) waitEvent(name, text string) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !p.hasEvent(name, text) {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: no event %q in:\n%s", name, text, p.events(name))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *mirrorPair) resource(name, res string) string {
	return p.status(name).Resources[res].Value
}

func (p *mirrorPair) waitResource(name, res, value string) {
	p.t.Helper()
	waitFor(p.t, fmt.Sprintf("%s %s = %s", name, res, value), func() bool { return p.resource(name, res) == value })
}

func (p *mirrorPair) vip(name string) *fakeVIP { return p.nodes[name].plugins.vips[testVIP] }

// health probes GET /health/db on node name, as a cloud load balancer.
func (p *mirrorPair) health(name string) (int, HealthResponse) {
	p.t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/health/db", net.JoinHostPort(nodeAddr[name], strconv.Itoa(p.healthPort))))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var h HealthResponse
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		p.t.Fatalf("health body: %v", err)
	}
	return resp.StatusCode, h
}

// setupPrimSecond brings a new pair to n1 PRIM, n2 SECOND.
func (p *mirrorPair) setupPrimSecond() {
	p.t.Helper()
	p.start("n1")
	p.start("n2")
	p.wait("n1", "WAIT", "NotReady")
	p.wait("n2", "WAIT", "NotReady")
	waitFor(p.t, "both see each other", func() bool {
		return p.resource("n1", "peer") == "WAIT/NotReady" && p.resource("n2", "peer") == "WAIT/NotReady"
	})
	if err := p.cmd("n1", "prim"); err != nil {
		p.t.Fatal(err)
	}
	p.wait("n2", "SECOND", "Ready")
	p.wait("n1", "PRIM", "Ready")
}

// First start, a failed VIP acquire, health, swap asked on the SECOND
// (through the control channel), failover after the PRIM's agent dies,
// and the dead node's return as SECOND.
func TestMirrorPairLifecycle(t *testing.T) {
	p := newMirrorPair(t, "", false)
	p.start("n1")
	waitFor(t, "n1 WAIT for its peer", func() bool {
		m := p.status("n1")
		return m.State == "WAIT" && m.Readiness == "NotReady" && strings.Contains(m.Reason, "waiting for a heartbeat from n2")
	})
	p.start("n2")

	// First start of a new module: both WAIT with the reason, seeing each
	// other over heartbeats. n1's reason changes without a state change.
	for _, n := range []string{"n1", "n2"} {
		m := p.wait(n, "WAIT", "NotReady")
		waitFor(t, n+" sees its peer", func() bool { return p.resource(n, "peer") == "WAIT/NotReady" })
		m = p.status(n)
		if !strings.Contains(m.Reason, "data may not be up to date") {
			t.Fatalf("%s WAIT reason %q", n, m.Reason)
		}
		if v := m.Resources["heartbeat.default"].Value; v != "up" {
			t.Fatalf("%s heartbeat.default = %q, want up", n, v)
		}
		if code, h := p.health(n); code != http.StatusServiceUnavailable || h.State != "WAIT" || h.Serving {
			t.Fatalf("%s health in WAIT: %d %+v", n, code, h)
		}
	}
	// Both agents released any leftover address at start.
	if r1, r2 := p.vip("n1").released(), p.vip("n2").released(); r1 != 1 || r2 != 1 {
		t.Fatalf("leftover release at start: n1 %d, n2 %d", r1, r2)
	}

	// The admin picks n1, whose VIP plugin fails: the failure is in the
	// event log and the resource, and the acquire is retried.
	p.vip("n1").setFail(errors.New("netlink: operation not permitted"))
	if err := p.cmd("n1", "prim"); err != nil {
		t.Fatal(err)
	}
	p.waitResource("n1", "vip."+testVIP, "failed")
	p.waitEvent("n1", "cannot acquire VIP "+testVIP+"/24: netlink: operation not permitted")
	p.vip("n1").setFail(nil)
	p.waitResource("n1", "vip."+testVIP, "held")

	p.wait("n2", "SECOND", "Ready")
	p.wait("n1", "PRIM", "Ready")
	p.waitEvent("n2", "nothing to copy")
	if !p.vip("n1").isHeld() || p.vip("n2").isHeld() {
		t.Fatalf("VIP: n1 held %v, n2 held %v", p.vip("n1").isHeld(), p.vip("n2").isHeld())
	}
	s1, s2 := p.status("n1"), p.status("n2")
	if s1.Resources["peer"].Value != "SECOND/Ready" || s2.Resources["peer"].Value != "PRIM/Ready" {
		t.Fatalf("peers: n1 sees %q, n2 sees %q", s1.Resources["peer"].Value, s2.Resources["peer"].Value)
	}
	if g := s1.Resources["generation"].Value; g == "" || g != s2.Resources["generation"].Value {
		t.Fatalf("generations: n1 %q, n2 %q", g, s2.Resources["generation"].Value)
	}
	if code, h := p.health("n1"); code != http.StatusOK || h.State != "PRIM" || !h.Serving {
		t.Fatalf("n1 health as PRIM: %d %+v", code, h)
	}
	if code, _ := p.health("n2"); code != http.StatusServiceUnavailable {
		t.Fatalf("n2 health as SECOND: %d", code)
	}

	// halo swap typed on the SECOND: it asks the PRIM over the control
	// channel; the PRIM's stop_prim ends before the new PRIM's start_prim.
	if err := p.cmd("n2", "swap"); err != nil {
		t.Fatal(err)
	}
	p.wait("n2", "PRIM", "Ready")
	p.wait("n1", "SECOND", "Ready")
	p.waitEvent("n1", "received swap-request from n2")
	p.waitEvent("n2", "received handover from n1")
	stop, ok1 := p.log.last("n1", "stop_prim")
	start, ok2 := p.log.last("n2", "start_prim")
	if !ok1 || !ok2 || start.start.Before(stop.end) {
		t.Fatalf("script order: n1 stop_prim %v..%v, n2 start_prim from %v", stop.start, stop.end, start.start)
	}
	if p.vip("n1").isHeld() || !p.vip("n2").isHeld() {
		t.Fatalf("VIP after swap: n1 held %v, n2 held %v", p.vip("n1").isHeld(), p.vip("n2").isHeld())
	}

	// The PRIM's agent dies: n1 takes over after the heartbeat timeout.
	killed := time.Now()
	p.kill("n2")
	m := p.wait("n1", "ALONE", "Ready")
	took := time.Since(killed)
	t.Logf("n1 ALONE Ready %v after n2 died (timeout %v): %s", took.Round(time.Millisecond), testTimeout, m.Reason)
	if took < testTimeout {
		t.Fatalf("n1 took over after %v, before the heartbeat timeout %v", took, testTimeout)
	}
	p.waitEvent("n1", "peer n2 lost on all networks (default)")
	if !p.vip("n1").isHeld() {
		t.Fatal("n1 ALONE without the VIP")
	}
	if v := p.resource("n1", "heartbeat.default"); v != "down" {
		t.Fatalf("heartbeat.default = %q after the peer died", v)
	}

	// n2 comes back from its disk: it was PRIM, but n1 served since: it
	// becomes SECOND, and n1 PRIM.
	p.start("n2")
	p.wait("n2", "SECOND", "Ready")
	p.wait("n1", "PRIM", "Ready")
	if p.vip("n2").isHeld() || !p.vip("n1").isHeld() {
		t.Fatalf("VIP after return: n1 held %v, n2 held %v", p.vip("n1").isHeld(), p.vip("n2").isHeld())
	}
}

// The control channel takes messages only from the module's other node,
// over mutual TLS.
func TestMirrorPeerRouteAuthentication(t *testing.T) {
	p := newMirrorPair(t, "", false)
	p.start("n1")
	p.wait("n1", "WAIT", "")
	url := fmt.Sprintf("https://%s/v1/peer/modules/db/messages", net.JoinHostPort(nodeAddr["n1"], strconv.Itoa(p.apiPort)))
	post := func(from *pki.Material, body string) (int, string) {
		t.Helper()
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: from.ClientConfig("n1")}, Timeout: 5 * time.Second}
		resp, err := hc.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	n1, n2 := p.nodes["n1"].tls, p.nodes["n2"].tls
	good, err := encodeMessage(testMessage("n2"))
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post(n1, string(good)); code != http.StatusForbidden || !strings.Contains(body, "is not the other node") {
		t.Fatalf("n1's own certificate: %d %s", code, body)
	}
	forged, _ := encodeMessage(testMessage("n3"))
	if code, body := post(n2, string(forged)); code != http.StatusForbidden || !strings.Contains(body, "claims to come from") {
		t.Fatalf("message naming another sender: %d %s", code, body)
	}
	if code, body := post(n2, `{"v":1,"kind":"nonsense"}`); code != http.StatusBadRequest {
		t.Fatalf("malformed message: %d %s", code, body)
	}
	if code, body := post(n2, string(good)); code != http.StatusAccepted {
		t.Fatalf("message from n2: %d %s", code, body)
	}
	p.waitEvent("n1", "received handover from n2")
	// The Unix socket has no peer identity: refused there.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(p.nodes["n1"].data, "halo.sock"))
	}}}
	resp, err := hc.Post("http://halo/v1/peer/modules/db/messages", "application/json", bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("message over the Unix socket: %d", resp.StatusCode)
	}
	// A client from another CA does not get through the handshake.
	other := t.TempDir()
	mustWrite(t, filepath.Join(other, "cluster.hcl"), `cluster "x" {
  network "default" {}
  node "n2" { addresses = { default = "127.0.0.2" } }
}
`, 0o644)
	ocfg, diags := config.Load(config.Options{}, other)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	plan, err := pki.PlanInit(pki.InitOptions{Cluster: ocfg.Cluster, OutDir: filepath.Join(other, "pki")})
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Apply(); err != nil {
		t.Fatal(err)
	}
	d := plan.NodeDirs["n2"]
	om, err := pki.LoadMaterial(filepath.Join(d, "tls", "ca.pem"), filepath.Join(d, "tls", "node.pem"), filepath.Join(d, "tls", "node-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cc := om.ClientConfig("n1")
	cc.RootCAs = n1.CA // trust the server, present a certificate it does not trust
	ohc := &http.Client{Transport: &http.Transport{TLSClientConfig: cc}, Timeout: 5 * time.Second}
	if resp, err := ohc.Post(url, "application/json", bytes.NewReader(good)); err == nil {
		resp.Body.Close()
		t.Fatalf("a certificate of another CA got %d", resp.StatusCode)
	}
}

// Heartbeats lost on one of two networks: a warning, nothing else. Then a
// witness: the survivor that cannot reach it waits instead of serving.
func TestMirrorOneNetworkLostAndWitness(t *testing.T) {
	p := newMirrorPair(t, `  check "splitbrain" "witness" {
    witnesses = ["198.18.0.254"]
  }`, true)
	p.setupPrimSecond()
	for _, n := range []string{"n1", "n2"} {
		if v := p.resource(n, "heartbeat.b"); v != "up" {
			t.Fatalf("%s heartbeat.b = %q", n, v)
		}
	}
	// In a steady state a status goes out once a pulse: the heartbeats
	// sent at once on a change must not feed each other.
	time.Sleep(3 * testPulse)
	sent := func(n string) uint64 {
		return p.nodes[n].agent.runners["db"].mirror.endpoint.Stats().Networks["default"].Sent
	}
	before1, before2 := sent("n1"), sent("n2")
	time.Sleep(time.Second)
	for n, d := range map[string]uint64{"n1": sent("n1") - before1, "n2": sent("n2") - before2} {
		if want := uint64(time.Second / testPulse); d < want-2 || d > want+2 {
			t.Errorf("%s sent %d heartbeats on default in 1s of steady state, want about %d", n, d, want)
		}
	}
	cut := func(on bool) {
		for _, n := range p.nodes {
			in := n.agent.runners["db"].mirror.inbox
			in.mu.Lock()
			in.cut = map[string]bool{"b": on}
			in.mu.Unlock()
		}
	}
	cut(true)
	p.waitEvent("n1", "heartbeat from n2 lost on network b")
	p.waitEvent("n2", "still visible on default")
	p.waitResource("n1", "heartbeat.b", "down")
	time.Sleep(2 * testTimeout)
	if s1, s2 := p.status("n1"), p.status("n2"); s1.State != "PRIM" || s2.State != "SECOND" {
		t.Fatalf("after losing one network: n1 %s, n2 %s", s1.State, s2.State)
	}
	if v := p.resource("n2", "heartbeat.default"); v != "up" {
		t.Fatalf("n2 heartbeat.default = %q", v)
	}
	cut(false)
	p.waitEvent("n1", "heartbeat from n2 restored on network b")
	p.waitResource("n2", "heartbeat.b", "up")

	// n2 cannot reach the witness when n1 dies: it must not serve.
	p.nodes["n2"].plugins.checkers["witness"].set(core.CheckDown)
	p.kill("n1")
	waitFor(t, "n2 WAIT on the witness", func() bool {
		m := p.status("n2")
		return m.State == "WAIT" && strings.Contains(m.Reason, "split-brain witness unreachable")
	})
	if p.vip("n2").isHeld() {
		t.Fatal("n2 took the VIP without the witness")
	}
	if v := p.resource("n2", "checker.witness"); v != "down" {
		t.Fatalf("checker.witness = %q after the probe", v)
	}
	// The administrator knows n1 is down.
	if err := p.cmd("n2", "prim"); err != nil {
		t.Fatal(err)
	}
	p.wait("n2", "ALONE", "Ready")
	if !p.vip("n2").isHeld() {
		t.Fatal("n2 ALONE without the VIP")
	}
}

// A module with replicated directories: this build cannot copy files, and
// says so instead of pretending a resync succeeded.
func TestMirrorReplicationNotAvailable(t *testing.T) {
	dir := t.TempDir()
	p := newMirrorPair(t, fmt.Sprintf(`  replication {
    dir %q {}
  }`, dir), false)
	p.start("n1")
	p.start("n2")
	waitFor(t, "both see each other", func() bool {
		return p.resource("n1", "peer") == "WAIT/NotReady" && p.resource("n2", "peer") == "WAIT/NotReady"
	})
	if err := p.cmd("n1", "prim"); err != nil {
		t.Fatal(err)
	}
	p.wait("n1", "ALONE", "Ready")
	p.waitEvent("n2", "file replication is not available in this build")
	m := p.wait("n2", "SECOND", "NotReady")
	if !strings.Contains(m.Reason, "file replication is not available in this build") {
		t.Fatalf("n2 reason %q", m.Reason)
	}
	if s := p.status("n1"); s.State != "ALONE" {
		t.Fatalf("n1 %s with a SECOND that never synced", s.State)
	}
}

func testMessage(from string) mirror.Message {
	return mirror.Message{From: from, Kind: mirror.MsgHandover, Status: mirror.PeerStatus{Node: from, State: core.Second, Readiness: core.Ready, Role: core.Second}}
}

// A health port already in use costs the health endpoint on that address,
// not the agent: failover does not depend on it.
func TestHealthPortInUse(t *testing.T) {
	p := newMirrorPair(t, "", false)
	l, err := net.Listen("tcp", net.JoinHostPort(nodeAddr["n2"], strconv.Itoa(p.healthPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p.start("n1")
	p.start("n2")
	p.waitEvent("n2", "health endpoint unavailable on "+l.Addr().String())
	waitFor(t, "both see each other", func() bool {
		return p.resource("n1", "peer") == "WAIT/NotReady" && p.resource("n2", "peer") == "WAIT/NotReady"
	})
	if code, h := p.health("n1"); code != http.StatusServiceUnavailable || h.Node != "n1" {
		t.Fatalf("n1 health: %d %+v", code, h)
	}
	// Only GET /health/<module> is served.
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/modules", net.JoinHostPort(nodeAddr["n1"], strconv.Itoa(p.healthPort))))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /v1/modules on the health port: %d", resp.StatusCode)
	}
	resp, err = http.Get(fmt.Sprintf("http://%s/health/nosuch", net.JoinHostPort(nodeAddr["n1"], strconv.Itoa(p.healthPort))))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /health/nosuch: %d", resp.StatusCode)
	}
}

// Heartbeats are authenticated: a mirror module does not start without
// the cluster key, and says what to do.
func TestMirrorNeedsClusterKey(t *testing.T) {
	p := newMirrorPair(t, "", false)
	n := p.nodes["n1"]
	_, err := New(context.Background(), Options{
		Node: "n1", Cluster: n.cfg.Cluster, Modules: n.cfg.Modules, DataDir: n.data,
		Plugins: &fakePlugins{app: &fakeApp{}, checkers: map[string]*fakeChecker{}}, Logger: hclog.NewNullLogger(),
	})
	if err == nil || !strings.Contains(err.Error(), "needs the cluster key") || !strings.Contains(err.Error(), "halo cluster init") {
		t.Fatalf("New without the cluster key: %v", err)
	}
}

// A slow step of a node's event loop (here a VIP announcement that takes
// three heartbeat timeouts, as a hung plugin would) does not stop its
// heartbeats: the pacer sends them from its own thread, and the peer does
// not take the busy node for dead.
func TestMirrorSlowStepKeepsHeartbeats(t *testing.T) {
	p := newMirrorPair(t, "", false)
	p.setupPrimSecond()
	p.kill("n2")
	p.wait("n1", "ALONE", "Ready")
	p.vip("n1").setAnnounceDelay(3 * testTimeout)
	p.start("n2")
	// n2 back, not serving: n1 announces its address again, and its event
	// loop is stuck in the announcement meanwhile.
	p.waitEvent("n1", "announced again: n2 is")
	p.wait("n2", "SECOND", "Ready")
	p.wait("n1", "PRIM", "Ready")
	time.Sleep(2 * testTimeout)
	if p.hasEvent("n2", "peer n1 lost") {
		t.Fatalf("n2 lost n1 while n1's event loop was busy:\n%s", p.events("n2"))
	}
	if g := p.nodes["n1"].agent.runners["db"].mirror.pacer.longestGap(); g > 2*testPulse+testPulse/2 {
		t.Errorf("n1's heartbeats were %v apart while its loop was stuck, want about the pulse (%v)", g, testPulse)
	}
	if !strings.Contains(p.status("n1").Resources[schedulingResource].Message, "between heartbeats sent") {
		t.Errorf("scheduling resource: %+v", p.status("n1").Resources[schedulingResource])
	}
}
