// Package sdktest lets a partner test a halo plugin in one `go test`: it
// runs the implementation in-process behind the real gRPC shims (the same
// code paths as a plugin binary, without the subprocess and handshake),
// and provides conformance suites for each plugin kind.
package sdktest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/halo-ha/halo/sdk/app"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/schema"
	"github.com/halo-ha/halo/sdk/vip"
)

// Plugin is a plugin served in-process, seen from the host side: the
// clients a host would use, and what the Base service reported.
type Plugin struct {
	Base *base.Client
	// Exactly one of Checker, VIP and App is set, by the plugin's kind.
	Checker *checker.Client
	VIP     *vip.Client
	App     *app.Client
	// Info and Schema are what the plugin answered over the wire.
	Info   base.Info
	Schema *schema.Schema
}

// ServeChecker serves a checker in-process for the duration of the test.
func ServeChecker(t testing.TB, newChecker func() checker.Checker) *Plugin {
	t.Helper()
	sets, err := checker.VersionedPlugins(newChecker, Logger(t))
	if err != nil {
		t.Fatalf("serve checker: %v", err)
	}
	p := serve(t, sets)
	p.Checker = dispense[*checker.Client](t, p.rpc, checker.PluginName)
	return p.Plugin
}

// ServeVIP serves a VIP plugin in-process for the duration of the test.
func ServeVIP(t testing.TB, newVIP func() vip.VIP) *Plugin {
	t.Helper()
	sets, err := vip.VersionedPlugins(newVIP, Logger(t))
	if err != nil {
		t.Fatalf("serve vip: %v", err)
	}
	p := serve(t, sets)
	p.VIP = dispense[*vip.Client](t, p.rpc, vip.PluginName)
	return p.Plugin
}

// ServeApp serves an app plugin in-process for the duration of the test.
func ServeApp(t testing.TB, newApp func() app.App) *Plugin {
	t.Helper()
	sets, err := app.VersionedPlugins(newApp, Logger(t))
	if err != nil {
		t.Fatalf("serve app: %v", err)
	}
	p := serve(t, sets)
	p.App = dispense[*app.Client](t, p.rpc, app.PluginName)
	return p.Plugin
}

type served struct {
	*Plugin
	rpc *plugin.GRPCClient
}

func serve(t testing.TB, sets map[int]plugin.PluginSet) served {
	t.Helper()
	set, ok := sets[base.APIVersion]
	if !ok {
		t.Fatalf("plugin does not serve API version %d", base.APIVersion)
	}
	client, _ := plugin.TestPluginGRPCConn(t, false, set)
	// Closing the client shuts the server down through go-plugin's
	// controller service, as the host's Kill does for a real plugin.
	t.Cleanup(func() { _ = client.Close() })
	p := &Plugin{Base: dispense[*base.Client](t, client, base.PluginName)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if p.Info, err = p.Base.Info(ctx); err != nil {
		t.Fatalf("plugin info: %v", err)
	}
	if p.Schema, err = p.Base.Schema(ctx); err != nil {
		t.Fatalf("plugin schema: %v", err)
	}
	return served{Plugin: p, rpc: client}
}

func dispense[C any](t testing.TB, client *plugin.GRPCClient, name string) C {
	t.Helper()
	raw, err := client.Dispense(name)
	if err != nil {
		t.Fatalf("dispense %s: %v", name, err)
	}
	c, ok := raw.(C)
	if !ok {
		t.Fatalf("dispense %s: got %T", name, raw)
	}
	return c
}

// Configure decodes src (the body of the plugin's block in a module file)
// with the plugin's schema, as the host does, and sends it to the named
// instance. HCL errors fail the test; the plugin's answer is returned (a
// *base.ConfigError when it rejects the configuration).
func (p *Plugin) Configure(t testing.TB, instanceID, src string) error {
	t.Helper()
	value := DecodeConfig(t, p.Schema, src)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.Base.SetConfig(ctx, instanceID, value, TestModule(t, instanceID))
}

// TestModule is the module context sdktest gives instances: a module named
// "sdktest", node "node1", and a fresh state directory.
func TestModule(t testing.TB, name string) base.ModuleContext {
	return base.ModuleContext{Module: "sdktest", Node: "node1", StateDir: t.TempDir(), Name: name}
}

// DecodeConfig decodes src against a schema as the host does, failing the
// test on any diagnostic.
func DecodeConfig(t testing.TB, s *schema.Schema, src string) cty.Value {
	t.Helper()
	value, diags := decodeConfig(s, src)
	if diags.HasErrors() {
		t.Fatalf("decode configuration: %s", diags.Error())
	}
	return value
}

func decodeConfig(s *schema.Schema, src string) (cty.Value, hcl.Diagnostics) {
	f, diags := hclsyntax.ParseConfig([]byte(src), "config.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	return s.Decode(f.Body, nil)
}

// Logger returns an hclog logger writing to the test's log, and silent
// once the test has finished (a late log line must not panic the run).
func Logger(t testing.TB) hclog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.Debug, Output: w})
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

var _ io.Writer = (*testWriter)(nil)

// instanceConfig makes a directly-called (not served) instance configured
// from src, for the checks that must see the implementation's own
// behaviour rather than the shims'.
func instanceConfig(t testing.TB, s *schema.Schema, src, name string) *base.Config {
	t.Helper()
	return &base.Config{
		Module: TestModule(t, name),
		Value:  DecodeConfig(t, s, src),
		Logger: Logger(t).With("instance", name),
	}
}

func oneLine(s string) error {
	if strings.ContainsAny(s, "\r\n") {
		return fmt.Errorf("message %q is not one line", s)
	}
	return nil
}
