package pluginhost

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/internal/agent"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/sdk/api"
)

const goodModule = `module "web" {
  kind  = "light"
  id    = 7
  nodes = ["node1"]

  app {
    plugin = "script"
    shell  = "/bin/sh"
    env    = { GREETING = "hello" }
  }

  check "testcheck" "api" {
    interval = "1s"
    port     = 8080
  }
}
`

func TestDiscoveryAndList(t *testing.T) {
	dir := pluginDir(t, "testcheck", "testapp", "testvip", "testv99")
	for name, mode := range map[string]os.FileMode{"notexec": 0o644, "README.md": 0o644, "run.sh": 0o755} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	h, logs := newHost(t, dir, Options{})
	for _, want := range []string{"path=" + filepath.Join(dir, "notexec") + " reason=\"not executable", "run.sh reason=\"file name is not a plugin name", "subdir reason=\"not a regular file\""} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}

	list := h.List(ctxTimeout(t, 30*time.Second))
	byName := map[string]api.PluginInfo{}
	var names []string
	for _, p := range list {
		byName[p.Name] = p
		names = append(names, p.Name)
	}
	if want := []string{"notexec", "testapp", "testcheck", "testv99", "testvip"}; !slices.Equal(names, want) {
		t.Fatalf("List names %v, want %v", names, want)
	}
	for name, kind := range map[string]string{"testcheck": "checker", "testapp": "app", "testvip": "vip"} {
		p := byName[name]
		want := api.PluginInfo{Name: name, Kind: kind, Version: "1.2.3", APIVersion: 1, Path: filepath.Join(dir, name)}
		if p != want {
			t.Errorf("List %s = %+v, want %+v", name, p, want)
		}
	}
	if e := byName["notexec"].Error; !strings.Contains(e, "not executable") {
		t.Errorf("notexec error %q", e)
	}
	if e := byName["testv99"].Error; !strings.Contains(e, "API version 99") || !strings.Contains(e, "this host speaks 1") {
		t.Errorf("testv99 error %q does not name both versions", e)
	}

	// A plugin installed while the host runs is found on first use.
	if err := os.Link(testPluginBin, filepath.Join(dir, "script")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ConfigSpec(config.PluginApp, "script"); err != nil {
		t.Fatalf("ConfigSpec of a newly installed plugin: %v", err)
	}
	_, err := h.ConfigSpec(config.PluginChecker, "nosuch")
	if !errors.Is(err, config.ErrUnknownPlugin) {
		t.Fatalf("ConfigSpec(nosuch) = %v, want ErrUnknownPlugin", err)
	}
	_, err = h.ConfigSpec(config.PluginChecker, "notexec")
	if !errors.Is(err, config.ErrUnknownPlugin) || !strings.Contains(err.Error(), "not executable") {
		t.Fatalf("ConfigSpec(notexec) = %v, want ErrUnknownPlugin saying it is not executable", err)
	}
	_, err = h.ConfigSpec(config.PluginApp, "testcheck")
	if err == nil || !strings.Contains(err.Error(), "plugin testcheck is of kind checker, not app") {
		t.Fatalf("ConfigSpec(app, testcheck) = %v, want a kind mismatch", err)
	}
}

func TestMissingPluginDir(t *testing.T) {
	_, err := New(Options{Dir: filepath.Join(t.TempDir(), "nope")})
	if err == nil || !strings.Contains(err.Error(), "read plugin directory") {
		t.Fatalf("New on a missing directory = %v", err)
	}
}

// diagLines renders diagnostics as "file:line,col: summary; detail".
func diagLines(diags hcl.Diagnostics) []string {
	var out []string
	for _, d := range diags {
		pos := "?"
		if d.Subject != nil {
			pos = fmt.Sprintf("%s:%d,%d", filepath.Base(d.Subject.Filename), d.Subject.Start.Line, d.Subject.Start.Column)
		}
		out = append(out, fmt.Sprintf("%s: %s; %s", pos, d.Summary, d.Detail))
	}
	return out
}

func expectDiags(t *testing.T, diags hcl.Diagnostics, want []string) {
	t.Helper()
	got := diagLines(diags)
	if len(got) != len(want) {
		t.Fatalf("got %d diagnostics, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("diagnostic %d:\n got %s\nwant %s...", i, got[i], want[i])
		}
	}
}

// TestSchemaValidation: `halo validate --plugin-dir` and agent start-up
// check each plugin block against the schema the plugin declares, with
// the module file's positions.
func TestSchemaValidation(t *testing.T) {
	h, _ := newHost(t, pluginDir(t, "testcheck", "script"), Options{})
	confDir, _ := writeConfig(t, `module "web" {
  kind  = "light"
  id    = 7
  nodes = ["node1"]

  app {
    plugin = "script"
    shel   = "/bin/sh"
  }

  check "testcheck" "api" {
    interval = "1s"
    port     = "eighty"
    hots     = "db1"
  }
  check "testcheck" "noport" {
    host = "db1"
  }
  check "testcheck" "nested" {
    port  = 80
    sleep = "5 seconds"
    expect {
      status = "ok"
    }
  }
}
`, nil)
	_, diags := config.Load(config.Options{Plugins: h}, confDir)
	expectDiags(t, diags, []string{
		`module.hcl:8,5: Unsupported argument; An argument named "shel" is not expected here. Did you mean "shell"?`,
		`module.hcl:13,16: Incorrect attribute value type; Inappropriate value for attribute "port": a number is required.`,
		`module.hcl:14,5: Unsupported argument; An argument named "hots" is not expected here. Did you mean "host"?`,
		`module.hcl:16,30: Missing required argument; The argument "port" is required`,
		`module.hcl:21,13: Invalid duration; The sleep argument must be a duration`,
		`module.hcl:23,16: Incorrect attribute value type; Inappropriate value for attribute "status": a number is required.`,
	})
}

// TestPluginRejection: what the plugin itself rejects (values of the right
// type but wrong) is reported at the attribute, through ConfigError paths.
func TestPluginRejection(t *testing.T) {
	h, _ := newHost(t, pluginDir(t, "testcheck", "script"), Options{StateDir: t.TempDir()})
	confDir, _ := writeConfig(t, `module "web" {
  kind  = "light"
  id    = 7
  nodes = ["node1"]

  app {
    plugin = "script"
    shell  = "sh"
  }

  check "testcheck" "api" {
    port   = 70000
    result = "sideways"
    expect {
      status = 700
    }
  }
}
`, nil)
	mod := loadModule(t, h, confDir)
	ctx := ctxTimeout(t, 30*time.Second)

	wantCheck := []string{
		`module.hcl:12,14: Invalid plugin configuration; port: 70000 is not a port number (1 to 65535)`,
		`module.hcl:13,14: Invalid plugin configuration; result: "sideways" is not up, down, unknown or error`,
		`module.hcl:15,16: Invalid plugin configuration; expect.status: 700 is not an HTTP status`,
	}
	wantApp := []string{`module.hcl:8,14: Invalid plugin configuration; shell: "sh" is not an absolute path`}

	_, err := h.Checker(ctx, mod, mod.Checks[0])
	var diags hcl.Diagnostics
	if !errors.As(err, &diags) {
		t.Fatalf("Checker = %v, want diagnostics", err)
	}
	expectDiags(t, diags, wantCheck)
	_, err = h.App(ctx, mod)
	if !errors.As(err, &diags) {
		t.Fatalf("App = %v, want diagnostics", err)
	}
	expectDiags(t, diags, wantApp)

	// Validate gives the same verdict without keeping instances.
	expectDiags(t, h.Validate(ctx, mod), append(wantCheck, wantApp...))
	p, _ := h.lookup("checker", "testcheck")
	p.mu.Lock()
	n := len(p.instances)
	p.mu.Unlock()
	if n != 0 {
		t.Errorf("%d instances kept after rejections and Validate", n)
	}
}

// TestIncompatibleApp: an app plugin that declares a host-provided
// attribute with another type than halo's cannot be configured.
func TestIncompatibleApp(t *testing.T) {
	h, _ := newHost(t, pluginDir(t, "testbadapp"), Options{})
	confDir, _ := writeConfig(t, `module "web" {
  kind  = "light"
  id    = 7
  nodes = ["node1"]
  app {
    plugin = "testbadapp"
  }
}
`, nil)
	mod := loadModule(t, h, confDir)
	want := []string{`module.hcl:6,14: Incompatible app plugin; App plugin testbadapp cannot be configured: the plugin declares scripts as number, but halo provides it as string.`}
	_, err := h.App(ctxTimeout(t, 30*time.Second), mod)
	var diags hcl.Diagnostics
	if !errors.As(err, &diags) {
		t.Fatalf("App = %v, want diagnostics", err)
	}
	expectDiags(t, diags, want)
	expectDiags(t, h.Validate(ctxTimeout(t, 30*time.Second), mod), want)
}

func TestCheckerAndApp(t *testing.T) {
	stateDir := t.TempDir()
	h, logs := newHost(t, pluginDir(t, "testcheck", "script"), Options{StateDir: stateDir})
	confDir, _ := writeConfig(t, goodModule, map[string]string{
		"hello":   `echo "$GREETING from $HALO_MODULE on $HALO_NODE: $1 $2 $3 $4"; echo oops >&2`,
		"fail":    "exit 3",
		"sleeper": "sleep 30",
	})
	mod := loadModule(t, h, confDir)
	ctx := ctxTimeout(t, 60*time.Second)
	cr, err := h.Checker(ctx, mod, mod.Checks[0])
	if err != nil {
		t.Fatalf("Checker: %v", err)
	}
	st, msg := cr.Check(ctxTimeout(t, 5*time.Second))
	if st != core.CheckUp || !strings.HasPrefix(msg, "localhost:8080 answered") {
		t.Fatalf("Check = %v %q", st, msg)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "web", "plugins", "checker.api")); err != nil {
		t.Errorf("instance state directory: %v", err)
	}
	// The plugin's own log (hclog JSON on its stderr) reaches the host's
	// logger under the plugin's name.
	// go-plugin writes the fields in no fixed order.
	waitFor(t, 5*time.Second, "the plugin's log line", func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "[INFO]  halo.plugins.testcheck: configured: ") &&
				strings.Contains(line, " instance=api ") && strings.Contains(line, " module=web ") &&
				strings.Contains(line, " state_dir="+filepath.Join(stateDir, "web", "plugins", "checker.api")+" ") {
				return true
			}
		}
		return false
	})

	ar, err := h.App(ctx, mod)
	if err != nil {
		t.Fatalf("App: %v", err)
	}
	var lines []string
	out, msg := ar.Run(ctx, agent.ScriptRun{Script: "hello", Args: []string{"STOP", "UP", "start"}, Timeout: 10 * time.Second},
		func(stream, line string) { lines = append(lines, stream+": "+line) })
	// The two streams are read concurrently: their relative order is lost.
	slices.Sort(lines)
	want := []string{"stderr: oops", "stdout: hello from web on node1: STOP UP start "}
	if out != core.ScriptOK || !slices.Equal(lines, want) {
		t.Fatalf("hello = %v %q, lines %q; want ok, %q", out, msg, lines, want)
	}
	lines = nil
	out, _ = ar.Run(ctx, agent.ScriptRun{Script: "hello", Args: []string{"UP", "STOP", "stop"}, Force: true, Timeout: 10 * time.Second},
		func(stream, line string) { lines = append(lines, stream+": "+line) })
	slices.Sort(lines)
	if out != core.ScriptOK || len(lines) != 2 || lines[1] != "stdout: hello from web on node1: UP STOP stop force" {
		t.Fatalf("forced run = %v, lines %q", out, lines)
	}
	if out, msg := ar.Run(ctx, agent.ScriptRun{Script: "fail", Timeout: 10 * time.Second}, nil); out != core.ScriptFailed || msg != "exit status 3" {
		t.Fatalf("fail = %v %q", out, msg)
	}
	start := time.Now()
	out, msg = ar.Run(ctx, agent.ScriptRun{Script: "sleeper", Timeout: 300 * time.Millisecond}, nil)
	if out != core.ScriptTimedOut || time.Since(start) > 5*time.Second {
		t.Fatalf("sleeper = %v %q after %s, want a timeout", out, msg, time.Since(start))
	}
}

// TestCheckResults: every status the plugin can give maps onto the core's.
func TestCheckResults(t *testing.T) {
	h, _ := newHost(t, pluginDir(t, "testcheck", "script"), Options{})
	confDir, _ := writeConfig(t, strings.Replace(goodModule, "port     = 8080", `port     = 8080
  }
  check "testcheck" "down" {
    port = 1
    result = "down"
  }
  check "testcheck" "unknown" {
    port = 2
    result = "unknown"
  }
  check "testcheck" "error" {
    port = 3
    result = "error"`, 1), nil)
	mod := loadModule(t, h, confDir)
	ctx := ctxTimeout(t, 30*time.Second)
	want := map[string]struct {
		st  core.CheckStatus
		msg string
	}{
		"api":     {core.CheckUp, "localhost:8080 answered"},
		"down":    {core.CheckDown, "localhost:1 refused"},
		"unknown": {core.CheckUnknown, "cannot tell"},
		"error":   {core.CheckUnknown, "probe failed"},
	}
	for _, c := range mod.Checks {
		cr, err := h.Checker(ctx, mod, c)
		if err != nil {
			t.Fatal(err)
		}
		st, msg := cr.Check(ctx)
		if w := want[c.Name]; st != w.st || !strings.HasPrefix(msg, w.msg) {
			t.Errorf("check %s = %v %q, want %v %q", c.Name, st, msg, w.st, w.msg)
		}
	}
}

func TestRefusals(t *testing.T) {
	h, _ := newHost(t, pluginDir(t, "testv99", "testliar", "testfail"), Options{})

	start := time.Now()
	_, err := h.ConfigSpec(config.PluginChecker, "testv99")
	var ref *refusal
	if !errors.As(err, &ref) {
		t.Fatalf("ConfigSpec(testv99) = %v, want a refusal", err)
	}
	t.Logf("version mismatch: %v (after %s)", err, time.Since(start))
	if !strings.Contains(err.Error(), "speaks plugin API version 99, this host speaks 1") {
		t.Errorf("message does not name both versions: %v", err)
	}
	// Refusals are permanent: no relaunch, the same answer at once.
	start = time.Now()
	_, err2 := h.ConfigSpec(config.PluginChecker, "testv99")
	if err2 == nil || err2.Error() != err.Error() || time.Since(start) > 50*time.Millisecond {
		t.Errorf("second ConfigSpec = %v after %s", err2, time.Since(start))
	}

	_, err = h.ConfigSpec(config.PluginChecker, "testliar")
	if !errors.As(err, &ref) || !strings.Contains(err.Error(), `want plugin "testliar"`) {
		t.Errorf("ConfigSpec(testliar) = %v, want a refusal naming the expected plugin", err)
	}

	_, err = h.ConfigSpec(config.PluginChecker, "testfail")
	if err == nil || errors.As(err, &ref) || !strings.Contains(err.Error(), "exit status 3") ||
		!strings.HasSuffix(err.Error(), "its stderr ends with: testfail: cannot start: missing dependency") {
		t.Errorf("ConfigSpec(testfail) = %v, want a launch failure with the exit status", err)
	}
	// Until the backoff passes, the failure is repeated without a launch.
	start = time.Now()
	if _, err2 := h.ConfigSpec(config.PluginChecker, "testfail"); err2 == nil || time.Since(start) > 50*time.Millisecond {
		t.Errorf("second ConfigSpec(testfail) = %v after %s", err2, time.Since(start))
	}
	if c := children(t); len(c) != 0 {
		t.Errorf("refused and failed plugins left processes: %q", c)
	}
}
