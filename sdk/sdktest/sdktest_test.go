package sdktest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/app"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/vip"
)

func goodCheckerConfig(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "flag")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return `path = "` + path + `"`
}

func TestCheckerConformance(t *testing.T) {
	CheckerConformance(t, func() checker.Checker { return &fakeChecker{} }, goodCheckerConfig(t),
		WithBadConfig(`path = "relative/path"`))
}

func TestVIPConformance(t *testing.T) {
	VIPConformance(t, func() vip.VIP { return &fakeVIP{} }, `address = "198.18.0.10/24"`,
		WithBadConfig(`address = ""`))
}

func TestAppConformance(t *testing.T) {
	cfg, scripts := appScripts(t.TempDir())
	AppConformance(t, func() app.App { return &fakeApp{} }, cfg, scripts,
		WithBadConfig(`dir = "/nonexistent/scripts"`))
}

// TestHarnessWirePath exercises the in-process harness directly: values
// cross the real shims, and the host-side errors are the documented ones.
func TestHarnessWirePath(t *testing.T) {
	p := ServeChecker(t, func() checker.Checker { return &fakeChecker{} })
	if p.Info.Name != "fake" || p.Info.Kind != base.KindChecker || p.Info.APIVersion != base.APIVersion {
		t.Fatalf("info %+v", p.Info)
	}
	dir := t.TempDir()
	flag := filepath.Join(dir, "flag")
	if err := p.Configure(t, "one", `path = "`+flag+`"`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := p.Checker.Check(ctx, "one")
	if err != nil || res.Status != checker.StatusDown {
		t.Fatalf("Check with the file absent = %+v, %v; want down", res, err)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err = p.Checker.Check(ctx, "one"); err != nil || res.Status != checker.StatusUp {
		t.Fatalf("Check with the file present = %+v, %v; want up", res, err)
	}

	err = p.Configure(t, "two", `path = "rel"`)
	var cerr *base.ConfigError
	if !errors.As(err, &cerr) || len(cerr.Errors) != 1 || cerr.Errors[0].Path != "path" {
		t.Fatalf("SetConfig with a relative path = %v, want a ConfigError on path", err)
	}
	if _, err := p.Checker.Check(ctx, "two"); !errors.Is(err, base.ErrUnknownInstance) {
		t.Fatalf("Check of a rejected new instance = %v, want ErrUnknownInstance", err)
	}
	if err := p.App; err != nil {
		t.Fatal("a checker plugin has an App client")
	}
}

// The conformance suites must fail for broken plugins. Each broken plugin
// runs in a child `go test` process (the suite calls t.Fatal/t.Error on
// the child's *testing.T); the parent checks that it failed, and why.
func TestConformanceCatchesBrokenPlugins(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child test processes")
	}
	tests := []struct {
		name string
		want string
		only string // the suite's subtest to run, to keep slow failures short
	}{
		{"checker ignores context", "Check with a 50ms deadline: still running", "honours_context"},
		{"checker writes stdout", `to stdout (go-plugin's handshake channel; log with the hclog logger): "checking\nchecking`, ""},
		{"checker accepts bad config", "want a *base.ConfigError", ""},
		{"checker bad version", `plugin version "1.0"`, ""},
		{"vip ignores context", "Acquire with a 50ms deadline: still running", "honours_context"},
		{"app ignores graceful stop", "did not end within 5s of Stop", "stop_force=false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			run := "^TestBrokenPluginHelper$"
			if tt.only != "" {
				run += "/^" + tt.only + "$"
			}
			cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.v")
			cmd.Env = append(os.Environ(), "SDKTEST_BROKEN="+tt.name)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if err == nil {
				t.Fatalf("the suite passed a broken plugin:\n%s", out.String())
			}
			if !strings.Contains(out.String(), tt.want) {
				t.Fatalf("the suite failed, but not with %q:\n%s", tt.want, out.String())
			}
		})
	}
}

// TestBrokenPluginHelper is the child side of
// TestConformanceCatchesBrokenPlugins; it does nothing in a normal run.
func TestBrokenPluginHelper(t *testing.T) {
	broken := os.Getenv("SDKTEST_BROKEN")
	if broken == "" {
		return
	}
	good := goodCheckerConfig(t)
	bad := WithBadConfig(`path = "relative"`)
	switch broken {
	case "checker ignores context":
		CheckerConformance(t, func() checker.Checker { return &fakeChecker{ignoreCtx: true} }, good, bad)
	case "checker writes stdout":
		CheckerConformance(t, func() checker.Checker { return &fakeChecker{printStdout: true} }, good, bad)
	case "checker accepts bad config":
		CheckerConformance(t, func() checker.Checker { return &fakeChecker{acceptAll: true} }, good, bad)
	case "checker bad version":
		CheckerConformance(t, func() checker.Checker { return &fakeChecker{version: "1.0"} }, good, bad)
	case "vip ignores context":
		VIPConformance(t, func() vip.VIP { return &fakeVIP{ignoreCtx: true} }, `address = "198.18.0.10/24"`)
	case "app ignores graceful stop":
		cfg, scripts := appScripts(t.TempDir())
		AppConformance(t, func() app.App { return &fakeApp{ignoreStop: true} }, cfg, scripts)
	default:
		t.Fatalf("unknown broken plugin %q", broken)
	}
}
