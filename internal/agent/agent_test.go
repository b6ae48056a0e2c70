package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/sdk/api"
)

// fakeApp records script runs and always succeeds. With a log, it also
// records when each run started and ended, across nodes.
type fakeApp struct {
	mu    sync.Mutex
	runs  []string
	node  string
	log   *scriptLog
	delay time.Duration // how long each run takes
}

func (f *fakeApp) Run(ctx context.Context, r ScriptRun, out func(string, string)) (core.ScriptOutcome, string) {
	f.mu.Lock()
	f.runs = append(f.runs, r.Script+" "+strings.Join(r.Args, " "))
	f.mu.Unlock()
	start := time.Now()
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return core.ScriptFailed, "cancelled"
		}
	}
	if f.log != nil {
		f.log.add(scriptRecord{node: f.node, script: r.Script, args: r.Args, start: start, end: time.Now()})
	}
	out("stdout", "hello from "+r.Script)
	return core.ScriptOK, "exit 0"
}

// scriptLog is the script runs of several nodes, in order of their end.
type scriptLog struct {
	mu   sync.Mutex
	runs []scriptRecord
}

type scriptRecord struct {
	node, script string
	args         []string
	start, end   time.Time
}

func (l *scriptLog) add(r scriptRecord) { l.mu.Lock(); l.runs = append(l.runs, r); l.mu.Unlock() }

// last returns the last run of script on node.
func (l *scriptLog) last(node, script string) (scriptRecord, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.runs) - 1; i >= 0; i-- {
		if r := l.runs[i]; r.node == node && r.script == script {
			return r, true
		}
	}
	return scriptRecord{}, false
}

func (f *fakeApp) count(script string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.runs {
		if strings.HasPrefix(r, script+" ") {
			n++
		}
	}
	return n
}

// fakeChecker reports whatever the test sets.
type fakeChecker struct {
	mu sync.Mutex
	st core.CheckStatus
}

func (f *fakeChecker) set(st core.CheckStatus) { f.mu.Lock(); f.st = st; f.mu.Unlock() }
func (f *fakeChecker) Check(ctx context.Context) (core.CheckStatus, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st, "fake"
}

// fakeVIP records whether its address is held, and can be told to fail.
type fakeVIP struct {
	mu        sync.Mutex
	held      bool
	fail      error
	acquires  int
	releases  int
	announces int
	// announceDelay makes Announce that slow (a hung plugin).
	announceDelay time.Duration
}

func (f *fakeVIP) Acquire(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.held = true
	f.acquires++
	return nil
}

func (f *fakeVIP) Release(context.Context, bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.held = false
	f.releases++
	return nil
}

func (f *fakeVIP) Announce(ctx context.Context) error {
	f.mu.Lock()
	f.announces++
	delay := f.announceDelay
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (f *fakeVIP) setAnnounceDelay(d time.Duration) { f.mu.Lock(); f.announceDelay = d; f.mu.Unlock() }

func (f *fakeVIP) isHeld() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.held }

func (f *fakeVIP) released() int { f.mu.Lock(); defer f.mu.Unlock(); return f.releases }

func (f *fakeVIP) setFail(err error) { f.mu.Lock(); f.fail = err; f.mu.Unlock() }

type fakePlugins struct {
	app      *fakeApp
	checkers map[string]*fakeChecker
	vips     map[string]*fakeVIP // by address
}

func (p *fakePlugins) App(context.Context, *config.Module) (AppRunner, error) { return p.app, nil }
func (p *fakePlugins) Checker(_ context.Context, _ *config.Module, c *config.Check) (CheckerRunner, error) {
	fc := &fakeChecker{st: core.CheckUp}
	p.checkers[c.Name] = fc
	return fc, nil
}
func (p *fakePlugins) VIP(_ context.Context, _ *config.Module, v *config.VIP) (VIPRunner, error) {
	fv := &fakeVIP{}
	if p.vips == nil {
		p.vips = map[string]*fakeVIP{}
	}
	p.vips[v.Address.Addr().String()] = fv
	return fv, nil
}
func (p *fakePlugins) List(context.Context) []api.PluginInfo { return nil }
func (p *fakePlugins) Close()                                {}

const testCluster = `cluster "t" {
  network "default" {}
  node "n1" { addresses = { default = "198.18.0.1" } }
}
`

const testLight = `module "svc" {
  kind  = "light"
  id    = 1
  nodes = ["n1"]
  max_loop      = 2
  loop_interval = "1h"
  check "errd" "proc" {
    interval = "100ms"
    timeout  = "50ms"
    action   = "restart"
    process  = "svc"
  }
}
`

func startTestAgent(t *testing.T) (*api.Client, *fakePlugins, func()) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "modules", "svc", "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sc := range []string{"start_both", "stop_both"} {
		os.WriteFile(filepath.Join(dir, "modules", "svc", "scripts", sc), []byte("#!/bin/sh\n"), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "cluster.hcl"), []byte(testCluster), 0o644)
	os.WriteFile(filepath.Join(dir, "modules", "svc", "module.hcl"), []byte(testLight), 0o644)
	cfg, diags := config.Load(config.Options{}, dir)
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	fp := &fakePlugins{app: &fakeApp{}, checkers: map[string]*fakeChecker{}}
	data := filepath.Join(dir, "data")
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, Options{Node: "n1", Version: "test", Cluster: cfg.Cluster, Modules: cfg.Modules,
		DataDir: data, Plugins: fp, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	c := api.NewUnixClient(filepath.Join(data, "halo.sock"))
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	for {
		if _, err := c.Version(wctx); err == nil {
			break
		}
		if wctx.Err() != nil {
			t.Fatal("agent API never came up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c, fp, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A light module through the agent: start, a checker-driven restart with
// its cause in the event log, max_loop stopping the module, commands
// refused with a reason, and a checker suspended.
func TestAgentLightModule(t *testing.T) {
	c, fp, stop := startTestAgent(t)
	defer stop()
	ctx := context.Background()

	if _, err := c.Command(ctx, "svc", api.CommandRequest{Command: "start"}); err != nil {
		t.Fatal(err)
	}
	m, err := c.WaitState(ctxT(t), "svc", "UP", "Ready")
	if err != nil {
		t.Fatal(err)
	}
	if m.ExitCode != 2 || fp.app.count("start_both") != 1 {
		t.Fatalf("after start: %+v, runs %v", m, fp.app.runs)
	}

	// The process checker goes down: the app is restarted, and the log says why.
	fp.checkers["proc"].set(core.CheckDown)
	waitFor(t, "a restart", func() bool { return fp.app.count("start_both") == 2 })
	fp.checkers["proc"].set(core.CheckUp)
	if _, err := c.WaitState(ctxT(t), "svc", "UP", "Ready"); err != nil {
		t.Fatal(err)
	}
	evs, _ := c.Events(ctx, "svc", 0, 0)
	if !logHas(evs, "checker proc down") {
		t.Fatalf("event log does not name the checker: %v", texts(evs))
	}

	// swap makes no sense on a light module: refused with a reason, nothing changes.
	_, err = c.Command(ctx, "svc", api.CommandRequest{Command: "swap"})
	if se, ok := err.(*api.StatusError); !ok || se.Code != 409 {
		t.Fatalf("swap: got %v, want a 409 refusal", err)
	}

	// Two more failures exceed max_loop = 2: the module stops with the reason.
	for i := 0; i < 2; i++ {
		fp.checkers["proc"].set(core.CheckDown)
		want := 3 + i
		waitFor(t, "restart or stop", func() bool {
			m, _ := c.Module(ctx, "svc")
			return fp.app.count("start_both") == want || m.State == "STOP"
		})
		fp.checkers["proc"].set(core.CheckUp)
		time.Sleep(250 * time.Millisecond)
	}
	m, err = c.WaitState(ctxT(t), "svc", "STOP", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped: %s", m.Reason)
	if !strings.Contains(m.Reason, "max_loop") {
		t.Fatalf("stop reason %q does not mention max_loop", m.Reason)
	}

	// checker off is persisted and shown.
	if _, err := c.Command(ctx, "svc", api.CommandRequest{Command: "checker-off"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "switch shown", func() bool { m, _ := c.Module(ctx, "svc"); return !m.Switches.Checkers })
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func logHas(evs []api.Event, s string) bool {
	for _, e := range evs {
		if strings.Contains(e.Text, s) {
			return true
		}
	}
	return false
}

func texts(evs []api.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Text)
	}
	return out
}

// SIGTERM (the agent's context ending) stops the application first, without
// marking the module stopped: the next agent start resumes it.
func TestAgentShutdownStopsModules(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "modules", "svc", "scripts"), 0o755)
	for _, sc := range []string{"start_both", "stop_both"} {
		os.WriteFile(filepath.Join(dir, "modules", "svc", "scripts", sc), []byte("#!/bin/sh\n"), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "cluster.hcl"), []byte(testCluster), 0o644)
	os.WriteFile(filepath.Join(dir, "modules", "svc", "module.hcl"), []byte(testLight), 0o644)
	cfg, diags := config.Load(config.Options{}, dir)
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	data := filepath.Join(dir, "data")
	run := func() (*fakePlugins, *api.Client, func()) {
		fp := &fakePlugins{app: &fakeApp{}, checkers: map[string]*fakeChecker{}}
		ctx, cancel := context.WithCancel(context.Background())
		a, err := New(ctx, Options{Node: "n1", Version: "test", Cluster: cfg.Cluster, Modules: cfg.Modules,
			DataDir: data, Plugins: fp, Logger: hclog.NewNullLogger()})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		c := api.NewUnixClient(filepath.Join(data, "halo.sock"))
		waitFor(t, "API", func() bool { _, err := c.Version(ctx); return err == nil })
		return fp, c, func() { cancel(); <-done }
	}
	fp, c, stop := run()
	if _, err := c.Command(context.Background(), "svc", api.CommandRequest{Command: "start"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitState(ctxT(t), "svc", "UP", "Ready"); err != nil {
		t.Fatal(err)
	}
	stop()
	if fp.app.count("stop_both") != 1 {
		t.Fatalf("shutdown ran stop_both %d times, want 1: %v", fp.app.count("stop_both"), fp.app.runs)
	}
	fp2, c2, stop2 := run()
	defer stop2()
	if _, err := c2.WaitState(ctxT(t), "svc", "UP", "Ready"); err != nil {
		t.Fatalf("module did not resume after the agent restarted: %v", err)
	}
	if fp2.app.count("start_both") != 1 {
		t.Fatalf("restart ran start_both %d times, want 1", fp2.app.count("start_both"))
	}
}
