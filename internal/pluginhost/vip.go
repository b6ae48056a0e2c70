package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/halo-ha/halo/internal/agent"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/vip"
)

// VIP implements agent.Plugins: the runner of one vip block, instance
// "<module>/vip.<address>", configured with the plugin's own settings
// from the block and halo's values of the attributes the plugin declares
// among HostProvided (address, network, interface, announce_count,
// announce_interval). announce_count is at most 1: the agent repeats the
// announcements itself.
func (h *Host) VIP(ctx context.Context, mod *config.Module, v *config.VIP) (agent.VIPRunner, error) {
	ctx, cancel := h.withStartTimeout(ctx)
	defer cancel()
	name := v.Plugin
	if name == "" {
		name = config.DefaultVIPPlugin
	}
	p, s, err := h.started(ctx, base.KindVIP, name)
	if err != nil {
		return nil, err
	}
	value, diags := vipValue(s, v)
	if diags.HasErrors() {
		return nil, diags
	}
	instName := "vip." + v.Address.Addr().String()
	dir, err := h.instanceStateDir(mod.Name, instName)
	if err != nil {
		return nil, err
	}
	in := &instance{
		id:    mod.Name + "/" + instName,
		mod:   base.ModuleContext{Module: mod.Name, Node: h.opts.Node, StateDir: dir, Name: instName},
		value: value,
	}
	if err := h.configureNew(ctx, p, s, in); err != nil {
		var cerr *base.ConfigError
		if errors.As(err, &cerr) {
			own := withoutHostProvided(s.schema, base.KindVIP)
			return nil, rejection(own, v.Config, cerr.Errors, v.Range, func(path string) (hcl.Range, bool) {
				if _, ok := HostProvided[base.KindVIP][path]; ok {
					return v.AttrRange(path), true
				}
				return hcl.Range{}, false
			})
		}
		return nil, err
	}
	return &VIPRunner{p: p, in: in}, nil
}

// vipValue decodes the vip block for the plugin: its own settings from the
// block, halo's from the configuration.
func vipValue(s *session, v *config.VIP) (cty.Value, hcl.Diagnostics) {
	own, diags := decodeBlock(withoutHostProvided(s.schema, base.KindVIP), v.Config)
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	// The plugin announces once at Acquire; the agent repeats with Announce
	// (agent.VIPRunner), so that a node resuming from a freeze does not
	// announce an address its peer took meanwhile.
	announceOnce := int64(min(v.AnnounceCount, 1))
	provided := map[string]cty.Value{
		"address":           cty.StringVal(v.Address.String()),
		"network":           cty.StringVal(v.Network),
		"interface":         cty.StringVal(v.Interface),
		"announce_count":    cty.NumberIntVal(announceOnce),
		"announce_interval": cty.StringVal(v.AnnounceInterval.String()),
	}
	value, err := withHostValues(s.schema, base.KindVIP, own, provided)
	if err != nil {
		return cty.NilVal, append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Incompatible VIP plugin",
			Detail:   fmt.Sprintf("VIP plugin %s cannot be configured: %v.", s.info.Name, err),
			Subject:  v.AttrRange("plugin").Ptr(),
		})
	}
	return value, diags
}

// VIPRunner holds one address through its VIP plugin.
type VIPRunner struct {
	p  *proc
	in *instance
}

var _ agent.VIPRunner = (*VIPRunner)(nil)

// Acquire adds the address and announces it once.
func (r *VIPRunner) Acquire(ctx context.Context) error {
	return r.call(ctx, "acquire", func(ctx context.Context, c *vip.Client) error {
		return c.Acquire(ctx, r.in.id)
	})
}

// Release removes the address, resetting the connections that used it
// when asked.
func (r *VIPRunner) Release(ctx context.Context, resetConnections bool) error {
	return r.call(ctx, "release", func(ctx context.Context, c *vip.Client) error {
		return c.Release(ctx, r.in.id, vip.ReleaseOptions{ResetConnections: resetConnections})
	})
}

// call runs one VIP call within ctx's deadline (CallTimeout when it has
// none), waiting for a relaunch in progress, and configures the instance
// again in a process that lost it.
func (r *VIPRunner) call(ctx context.Context, what string, fn func(context.Context, *vip.Client) error) error {
	ctx, cancel := r.p.h.withCallTimeout(ctx)
	defer cancel()
	dl, _ := ctx.Deadline()
	budget := time.Until(dl)
	s, err := r.p.session(ctx, true)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, r.in.id, err)
	}
	err = fn(ctx, s.vip)
	if errors.Is(err, base.ErrUnknownInstance) {
		if err = r.p.configure(ctx, s, r.in); err == nil {
			err = fn(ctx, s.vip)
		}
	}
	if err != nil {
		var cerr *base.ConfigError
		if errors.As(err, &cerr) {
			return fmt.Errorf("%s %s: plugin %s rejects the configuration: %w", what, r.in.id, r.p.name, err)
		}
		if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%s %s: %s", what, r.in.id, r.p.callFailed(ctx, s, err, budget))
		}
		return fmt.Errorf("%s %s: %w", what, r.in.id, err)
	}
	return nil
}

// Announce announces the address once more.
func (r *VIPRunner) Announce(ctx context.Context) error {
	return r.call(ctx, "announce", func(ctx context.Context, c *vip.Client) error {
		return c.Announce(ctx, r.in.id)
	})
}

// Close forgets the instance, here and in the plugin (a vip block removed
// by a reload). The address stays as it is.
func (r *VIPRunner) Close(ctx context.Context) error {
	return r.p.forget(ctx, r.in.id)
}
