package checker

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

type funcChecker struct {
	check func(ctx context.Context) (Result, error)
}

func (c *funcChecker) Info() base.PluginInfo                         { return base.PluginInfo{Name: "func", Version: "1.0.0"} }
func (c *funcChecker) Schema() *schema.Schema                        { return nil }
func (c *funcChecker) Configure(context.Context, *base.Config) error { return nil }
func (c *funcChecker) Check(ctx context.Context) (Result, error)     { return c.check(ctx) }

func serve(t *testing.T, check func(ctx context.Context) (Result, error)) *Client {
	t.Helper()
	sets, err := VersionedPlugins(func() Checker { return &funcChecker{check: check} }, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	// Closing the client shuts the server down (go-plugin's controller);
	// stopping it here as well would race with that.
	client, _ := plugin.TestPluginGRPCConn(t, false, sets[base.APIVersion])
	t.Cleanup(func() { _ = client.Close() })
	rawBase, _ := client.Dispense(base.PluginName)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rawBase.(*base.Client).SetConfig(ctx, "i", cty.EmptyObjectVal, base.ModuleContext{}); err != nil {
		t.Fatal(err)
	}
	raw, _ := client.Dispense(PluginName)
	return raw.(*Client)
}

func TestCheckResults(t *testing.T) {
	tests := []struct {
		name  string
		check func(ctx context.Context) (Result, error)
		want  Result
	}{
		{"up", func(context.Context) (Result, error) { return Up("port %d open", 80), nil }, Up("port 80 open")},
		{"down", func(context.Context) (Result, error) { return Down("refused"), nil }, Down("refused")},
		{"zero value is unknown", func(context.Context) (Result, error) { return Result{}, nil }, Result{}},
		{"error is unknown", func(context.Context) (Result, error) { return Up("ignored"), errors.New("cannot probe") }, Unknown("cannot probe")},
		{"elapsed kept", func(context.Context) (Result, error) {
			return Result{Status: StatusUp, Elapsed: 3 * time.Second}, nil
		}, Result{Status: StatusUp, Elapsed: 3 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := serve(t, tt.check)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := c.Check(ctx, "i")
			if err != nil {
				t.Fatal(err)
			}
			if got.Elapsed <= 0 {
				t.Errorf("elapsed %s, want measured", got.Elapsed)
			}
			if tt.want.Elapsed == 0 {
				got.Elapsed = 0
			}
			if got != tt.want {
				t.Errorf("Check = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCheckPanicIsContained(t *testing.T) {
	var calls atomic.Int32
	c := serve(t, func(context.Context) (Result, error) {
		if calls.Add(1) == 1 {
			var m map[string]int
			m["boom"]++ // a nil map write: a typical partner bug
		}
		return Up("fine"), nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Check(ctx, "i"); err == nil || !strings.Contains(err.Error(), "panicked in Check") {
		t.Fatalf("Check of a panicking checker = %v", err)
	}
	if res, err := c.Check(ctx, "i"); err != nil || res.Status != StatusUp {
		t.Fatalf("the plugin did not survive the panic: %+v, %v", res, err)
	}
}

func TestCheckDeadlineReportedAsDeadline(t *testing.T) {
	c := serve(t, func(ctx context.Context) (Result, error) {
		<-ctx.Done()
		return Result{}, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Check(ctx, "i"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Check = %v, want context.DeadlineExceeded", err)
	}
	if _, err := c.Check(context.Background(), "nope"); !errors.Is(err, base.ErrUnknownInstance) {
		t.Fatalf("Check of an unknown instance = %v, want base.ErrUnknownInstance", err)
	}
}
