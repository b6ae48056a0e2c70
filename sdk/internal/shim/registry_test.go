package shim

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/sdk/base"
	pluginv1 "github.com/halo-ha/halo/sdk/proto/halo/plugin/v1"
	"github.com/halo-ha/halo/sdk/schema"
)

type countPlugin struct {
	closed *atomic.Int32
	mu     sync.Mutex
	name   string
}

func (p *countPlugin) Info() base.PluginInfo { return base.PluginInfo{Name: "count", Version: "1.0.0"} }
func (p *countPlugin) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{{Name: "name", Type: schema.TypeString, Required: true}}}
}

func (p *countPlugin) Configure(_ context.Context, cfg *base.Config) error {
	var c struct {
		Name string `hcl:"name"`
	}
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	switch c.Name {
	case "bad":
		return errors.Join(schema.Errorf("name", "must not be bad"), errors.New("and something else"))
	case "panic":
		panic("configure exploded")
	}
	p.mu.Lock()
	p.name = c.Name
	p.mu.Unlock()
	return nil
}

func (p *countPlugin) Close() error {
	p.closed.Add(1)
	return nil
}

func newTestRegistry(t *testing.T) (*Registry[*countPlugin], *atomic.Int32, *atomic.Int32) {
	t.Helper()
	var made, closed atomic.Int32
	reg, err := NewRegistry(func() *countPlugin {
		made.Add(1)
		return &countPlugin{closed: &closed}
	}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return reg, &made, &closed
}

func config(name string) []byte { return []byte(`{"name":"` + name + `"}`) }

func TestRegistryLifecycle(t *testing.T) {
	reg, made, closed := newTestRegistry(t)
	ctx := context.Background()
	if _, err := reg.Lookup("a"); err == nil {
		t.Fatal("Lookup of an unknown instance succeeded")
	}
	if err := reg.Configure(ctx, "a", config("one"), base.ModuleContext{}); err != nil {
		t.Fatal(err)
	}
	a, err := reg.Lookup("a")
	if err != nil || a.name != "one" {
		t.Fatalf("Lookup = %+v, %v", a, err)
	}
	// A rejected reconfiguration keeps the instance and its configuration.
	if err := reg.Configure(ctx, "a", config("bad"), base.ModuleContext{}); err == nil {
		t.Fatal("bad configuration accepted")
	}
	if again, err := reg.Lookup("a"); err != nil || again != a || again.name != "one" {
		t.Fatalf("after a rejected reconfiguration: %+v, %v", again, err)
	}
	// A rejected first configuration leaves no instance.
	if err := reg.Configure(ctx, "b", config("bad"), base.ModuleContext{}); err == nil {
		t.Fatal("bad configuration accepted")
	}
	if _, err := reg.Lookup("b"); err == nil {
		t.Fatal("an instance whose first configuration was rejected exists")
	}
	// A configuration that does not fit the schema never reaches the plugin.
	before := made.Load()
	if err := reg.Configure(ctx, "c", []byte(`{"name":null}`), base.ModuleContext{}); err == nil {
		t.Fatal("null required attribute accepted")
	}
	if made.Load() != before {
		t.Fatal("an instance was made for a configuration the schema refuses")
	}
	if err := reg.Close("a"); err != nil || closed.Load() != 1 {
		t.Fatalf("Close = %v, closed %d", err, closed.Load())
	}
	if _, err := reg.Lookup("a"); err == nil {
		t.Fatal("Lookup after Close succeeded")
	}
	if err := reg.Close("a"); err != nil || closed.Load() != 1 {
		t.Fatalf("second Close = %v, closed %d", err, closed.Load())
	}
}

func TestRegistryConcurrentConfigure(t *testing.T) {
	reg, _, _ := newTestRegistry(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "good"
			if i%2 == 0 {
				name = "bad"
			}
			_ = reg.Configure(context.Background(), "x", config(name), base.ModuleContext{})
		}()
	}
	wg.Wait()
	// At least one good configuration was applied: the instance must be
	// registered and configured, whatever the interleaving.
	if p, err := reg.Lookup("x"); err != nil || p.name != "good" {
		t.Fatalf("after concurrent configuration: %+v, %v", p, err)
	}
}

func TestBaseServerSetConfig(t *testing.T) {
	reg, _, _ := newTestRegistry(t)
	s := NewBaseServer(base.KindChecker, base.APIVersion, reg)
	ctx := context.Background()

	resp, err := s.SetConfig(ctx, &pluginv1.SetConfigRequest{InstanceId: "a", ConfigJson: config("bad")})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetErrors()) != 2 || resp.GetErrors()[0].GetPath() != "name" || resp.GetErrors()[1].GetPath() != "" {
		t.Fatalf("errors %v, want one on name and one without a path", resp.GetErrors())
	}
	if _, err := s.SetConfig(ctx, &pluginv1.SetConfigRequest{InstanceId: "", ConfigJson: config("x")}); err == nil {
		t.Fatal("empty instance ID accepted")
	}
	_, err = s.SetConfig(ctx, &pluginv1.SetConfigRequest{InstanceId: "p", ConfigJson: config("panic")})
	if !IsPanic(err) || !strings.Contains(err.Error(), "configure exploded") {
		t.Fatalf("panicking Configure = %v, want a contained panic", err)
	}
	info, _ := s.Info(ctx, &pluginv1.InfoRequest{})
	if info.GetKind() != pluginv1.PluginKind_PLUGIN_KIND_CHECKER || info.GetApiVersion() != base.APIVersion || info.GetName() != "count" {
		t.Fatalf("info %v", info)
	}
}

type invalidPlugin struct{ countPlugin }

func (*invalidPlugin) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{{Name: "x"}}}
}

func TestNewRegistryRefusesInvalidSchema(t *testing.T) {
	_, err := NewRegistry(func() *invalidPlugin { return &invalidPlugin{} }, hclog.NewNullLogger())
	if err == nil || !strings.Contains(err.Error(), "invalid schema") {
		t.Fatalf("NewRegistry = %v, want an invalid schema error", err)
	}
}
