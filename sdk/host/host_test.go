package host

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/internal/shim"
	"github.com/halo-ha/halo/sdk/schema"
)

// The test binary doubles as the plugin: with helperEnv set, TestMain
// serves a plugin instead of running tests, so these tests exercise the
// real subprocess, handshake, AutoMTLS and version negotiation.
const helperEnv = "HALO_SDK_HOST_TEST_PLUGIN"

func TestMain(m *testing.M) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		// go-plugin puts a plugin's socket in TMPDIR, and a plugin killed
		// by a test cannot remove it: keep them in a directory removed here.
		dir, err := os.MkdirTemp("", "halo-sdk-host-test-")
		if err != nil {
			panic(err)
		}
		os.Setenv("TMPDIR", dir)
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	servePlugin(mode)
	os.Exit(0)
}

type sleepyChecker struct {
	mu    sync.Mutex
	sleep time.Duration
}

func (c *sleepyChecker) Info() base.PluginInfo {
	return base.PluginInfo{Name: "hosttest", Version: "2.1.0", Description: "host test checker"}
}

func (c *sleepyChecker) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "sleep", Type: schema.TypeDuration, Default: "0s", Description: "how long Check ignores its context"},
	}}
}

func (c *sleepyChecker) Configure(_ context.Context, cfg *base.Config) error {
	var conf struct {
		Sleep time.Duration `hcl:"sleep"`
	}
	if err := cfg.Decode(&conf); err != nil {
		return err
	}
	if conf.Sleep < 0 {
		return schema.Errorf("sleep", "must not be negative")
	}
	c.mu.Lock()
	c.sleep = conf.Sleep
	c.mu.Unlock()
	cfg.Logger.Info("configured", "sleep", conf.Sleep)
	return nil
}

func (c *sleepyChecker) Check(context.Context) (checker.Result, error) {
	c.mu.Lock()
	d := c.sleep
	c.mu.Unlock()
	time.Sleep(d) // deliberately deaf to its context: the host must cope
	return checker.Up("slept %s", d), nil
}

func servePlugin(mode string) {
	newChecker := func() checker.Checker { return &sleepyChecker{} }
	logger := shim.NewLogger()
	switch mode {
	case "checker":
		checker.Serve(newChecker)
	case "slow-start":
		time.Sleep(2 * time.Second)
		checker.Serve(newChecker)
	case "bad-info":
		checker.Serve(func() checker.Checker { return &badInfoChecker{} })
	case "v2-only":
		// A future plugin that dropped API version 1.
		sets, err := checker.VersionedPlugins(newChecker, logger)
		if err != nil {
			shim.Fatal(logger, err)
		}
		shim.Serve(map[int]plugin.PluginSet{2: sets[base.APIVersion]}, logger)
	case "lying-info":
		// Handshakes as version 1 but claims version 2 in Info.
		reg, err := shim.NewRegistry(newChecker, logger)
		if err != nil {
			shim.Fatal(logger, err)
		}
		lying := shim.NewBaseServer(base.KindChecker, 2, reg)
		lying.Supported = []int{1, 2}
		shim.Serve(map[int]plugin.PluginSet{base.APIVersion: {
			base.PluginName: &base.GRPCPlugin{Service: lying},
		}}, logger)
	}
}

type badInfoChecker struct{ sleepyChecker }

func (*badInfoChecker) Info() base.PluginInfo {
	return base.PluginInfo{Name: "hosttest", Version: "two"}
}

// launch starts the test binary as a plugin in the given mode, with its
// log captured.
func launch(t *testing.T, mode string) (*plugin.Client, *syncBuffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg := ClientConfig(exe, hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}))
	cfg.Cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	c := plugin.NewClient(cfg)
	t.Cleanup(c.Kill)
	return c, logs
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func connect(t *testing.T, mode string, want Expect) (*Plugin, *plugin.Client, *syncBuffer, error) {
	t.Helper()
	c, logs := launch(t, mode)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := Connect(ctx, c, want)
	return p, c, logs, err
}

func decode(t *testing.T, s *schema.Schema, src string) *hclsyntax.Body {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(src), "module.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return f.Body.(*hclsyntax.Body)
}

func TestLaunchConfigureCheck(t *testing.T) {
	p, c, logs, err := connect(t, "checker", Expect{Kind: base.KindChecker, Name: "hosttest"})
	if err != nil {
		t.Fatalf("Connect: %v\nplugin log:\n%s", err, logs)
	}
	if c.NegotiatedVersion() != base.APIVersion || p.Info.APIVersion != base.APIVersion || p.Info.Version != "2.1.0" {
		t.Fatalf("negotiated %d, info %+v", c.NegotiatedVersion(), p.Info)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := p.Base.Schema(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The host decodes the module's block; the plugin validates values.
	body := decode(t, s, `sleep = "-1s"`)
	value, diags := s.Decode(body, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	mod := base.ModuleContext{Module: "web", Node: "n1", StateDir: t.TempDir(), Name: "app"}
	err = p.Base.SetConfig(ctx, "web/app", value, mod)
	var cerr *base.ConfigError
	if !errors.As(err, &cerr) {
		t.Fatalf("SetConfig with a negative sleep = %v, want a ConfigError", err)
	}
	d := s.Diagnostics(body, cerr.Errors)
	if len(d) != 1 || d[0].Subject.Start.Line != 1 || d[0].Subject.Start.Column != 9 {
		t.Fatalf("diagnostics %v, want one at module.hcl:1,9", d)
	}

	value, diags = s.Decode(decode(t, s, ``), nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if err := p.Base.SetConfig(ctx, "web/app", value, mod); err != nil {
		t.Fatal(err)
	}
	chk, err := p.Checker()
	if err != nil {
		t.Fatal(err)
	}
	res, err := chk.Check(ctx, "web/app")
	if err != nil || res.Status != checker.StatusUp || res.Message != "slept 0s" {
		t.Fatalf("Check = %+v, %v", res, err)
	}
	if _, err := p.VIP(); !errors.Is(err, ErrUnexpectedPlugin) {
		t.Fatalf("VIP() of a checker = %v, want ErrUnexpectedPlugin", err)
	}
	// The plugin's hclog lines reach the host's logger, levels intact.
	if !strings.Contains(logs.String(), "[INFO]") || !strings.Contains(logs.String(), "configured") {
		t.Fatalf("plugin log line not forwarded:\n%s", logs)
	}
}

// TestDeadlineBeatsADeafPlugin: a plugin that ignores its context, then one
// that is frozen (SIGSTOP), cannot hold a host call past its deadline.
func TestDeadlineBeatsADeafPlugin(t *testing.T) {
	p, c, logs, err := connect(t, "checker", Expect{Kind: base.KindChecker})
	if err != nil {
		t.Fatalf("Connect: %v\n%s", err, logs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := p.Base.Schema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	value, _ := s.Decode(decode(t, s, `sleep = "5s"`), nil)
	if err := p.Base.SetConfig(ctx, "deaf", value, base.ModuleContext{}); err != nil {
		t.Fatal(err)
	}
	chk, err := p.Checker()
	if err != nil {
		t.Fatal(err)
	}
	const deadline, slack = 200 * time.Millisecond, 300 * time.Millisecond

	call := func(what, instance string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		_, err := chk.Check(ctx, instance)
		took := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: Check = %v, want context.DeadlineExceeded", what, err)
		}
		if took > deadline+slack {
			t.Errorf("%s: Check took %s with a %s deadline", what, took, deadline)
		}
	}
	call("deaf checker", "deaf")

	pid := c.ReattachConfig().Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(pid, syscall.SIGCONT) }()
	call("frozen plugin", "deaf")
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		mode string
		want Expect
		is   error
		text string
	}{
		{"v2-only", Expect{}, ErrIncompatible, "Plugin version: 2"},
		{"lying-info", Expect{}, ErrIncompatible, "Info says 2"},
		{"checker", Expect{Kind: base.KindVIP}, ErrUnexpectedPlugin, "want a vip plugin"},
		{"checker", Expect{Name: "other"}, ErrUnexpectedPlugin, `want plugin "other"`},
	}
	for _, tt := range tests {
		t.Run(tt.mode+" "+tt.text, func(t *testing.T) {
			_, c, logs, err := connect(t, tt.mode, tt.want)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("Connect = %v, want %v mentioning %q\nplugin log:\n%s", err, tt.is, tt.text, logs)
			}
			waitExited(t, c)
		})
	}
}

func TestBadPluginInfoFailsAtStart(t *testing.T) {
	_, c, logs, err := connect(t, "bad-info", Expect{})
	if err == nil {
		t.Fatal("Connect accepted a plugin with an invalid version")
	}
	waitExited(t, c)
	if !strings.Contains(logs.String(), `plugin version \"two\"`) && !strings.Contains(logs.String(), `plugin version "two"`) {
		t.Fatalf("the plugin's reason is not in the host log:\n%s", logs)
	}
}

func TestConnectHonoursContext(t *testing.T) {
	c, _ := launch(t, "slow-start")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Connect(ctx, c, Expect{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Connect took %s with a 300ms deadline", took)
	}
	waitExited(t, c)
}

func waitExited(t *testing.T, c *plugin.Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !c.Exited() {
		if time.Now().After(deadline) {
			t.Fatal("the plugin process is still running")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
