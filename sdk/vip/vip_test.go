package vip

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/zclconf/go-cty/cty"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/schema"
)

// recordingVIP records what reaches it, and panics on its first Announce.
type recordingVIP struct {
	reset     atomic.Bool
	announces atomic.Int32
}

func (v *recordingVIP) Info() base.PluginInfo                         { return base.PluginInfo{Name: "rec", Version: "1.0.0"} }
func (v *recordingVIP) Schema() *schema.Schema                        { return nil }
func (v *recordingVIP) Configure(context.Context, *base.Config) error { return nil }
func (v *recordingVIP) Acquire(context.Context) error                 { return nil }
func (v *recordingVIP) Release(_ context.Context, o ReleaseOptions) error {
	v.reset.Store(o.ResetConnections)
	return errors.New("netlink: operation not permitted")
}

func (v *recordingVIP) Status(context.Context) (Status, error) {
	return Status{Present: true, Duplicated: true, InterfaceUp: false, Message: "198.18.0.10 answered by 02:00:00:00:00:02"}, nil
}

func (v *recordingVIP) Announce(context.Context) error {
	if v.announces.Add(1) == 1 {
		panic("announce bug")
	}
	return nil
}

func TestShimCarriesEverything(t *testing.T) {
	impl := &recordingVIP{}
	sets, err := VersionedPlugins(func() VIP { return impl }, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	client, _ := plugin.TestPluginGRPCConn(t, false, sets[base.APIVersion])
	t.Cleanup(func() { _ = client.Close() })
	rawBase, _ := client.Dispense(base.PluginName)
	raw, _ := client.Dispense(PluginName)
	c := raw.(*Client)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	if err := c.Acquire(ctx, "v"); !errors.Is(err, base.ErrUnknownInstance) {
		t.Fatalf("Acquire before SetConfig = %v, want ErrUnknownInstance", err)
	}
	if err := rawBase.(*base.Client).SetConfig(ctx, "v", cty.EmptyObjectVal, base.ModuleContext{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Acquire(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, "v")
	want := Status{Present: true, Duplicated: true, Message: "198.18.0.10 answered by 02:00:00:00:00:02"}
	if err != nil || st != want {
		t.Fatalf("Status = %+v, %v; want %+v", st, err, want)
	}
	err = c.Release(ctx, "v", ReleaseOptions{ResetConnections: true})
	if err == nil || !strings.Contains(err.Error(), "operation not permitted") || !impl.reset.Load() {
		t.Fatalf("Release = %v (reset %v), want the plugin's error and the reset flag carried", err, impl.reset.Load())
	}
	if err := c.Announce(ctx, "v"); err == nil || !strings.Contains(err.Error(), "panicked in Announce") {
		t.Fatalf("Announce = %v, want a contained panic", err)
	}
	if err := c.Announce(ctx, "v"); err != nil {
		t.Fatalf("Announce after a contained panic = %v", err)
	}
}
