// Package host is the host side of the plugin protocol, for halo's agent
// (internal/pluginhost) and for tools that drive plugins: the go-plugin
// client configuration, API version negotiation, and checked access to a
// plugin's services.
//
// Launching a plugin:
//
//	client := plugin.NewClient(host.ClientConfig(path, logger))
//	p, err := host.Connect(ctx, client, host.Expect{Kind: base.KindChecker, Name: "filecheck"})
//	if err != nil { ... }               // the process is already killed
//	schema, err := p.Base.Schema(ctx)   // → schema.Decode(module block body)
//	err = p.Base.SetConfig(ctx, id, value, module)
//	chk, _ := p.Checker()
//	res, err := chk.Check(ctxWithDeadline, id)
//
// go-plugin does not restart a plugin that died: the host notices
// (client.Exited(), or errors from calls), launches it again, and replays
// SetConfig for its instances.
package host

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/halo-ha/halo/sdk/app"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/vip"
)

var (
	// ErrIncompatible: the plugin and the host share no API version, or
	// the plugin's Info contradicts the version negotiated in the
	// handshake. The host refuses such a plugin.
	ErrIncompatible = errors.New("incompatible plugin API version")
	// ErrUnexpectedPlugin: the plugin is not the kind or name expected.
	ErrUnexpectedPlugin = errors.New("unexpected plugin")
)

// StartTimeout bounds the handshake of a plugin launched with
// ClientConfig: a healthy plugin answers in milliseconds.
const StartTimeout = 10 * time.Second

// VersionedPlugins returns the plugin sets a host gives go-plugin, keyed by
// API version: for each version, the Base service and every kind's client
// glue. go-plugin picks the highest version both sides list.
func VersionedPlugins() map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		base.APIVersion: {
			base.PluginName:    &base.GRPCPlugin{},
			checker.PluginName: &checker.GRPCPlugin{},
			vip.PluginName:     &vip.GRPCPlugin{},
			app.PluginName:     &app.GRPCPlugin{},
		},
	}
}

// ClientConfig returns the go-plugin client configuration for the plugin
// binary at path: halo's handshake and versions, gRPC only, AutoMTLS, and
// the plugin's stderr (its hclog JSON) parsed into logger. The caller may
// adjust it (Cmd.Env, SyncStdout, StartTimeout) before plugin.NewClient.
func ClientConfig(path string, logger hclog.Logger) *plugin.ClientConfig {
	return &plugin.ClientConfig{
		HandshakeConfig:  base.Handshake,
		VersionedPlugins: VersionedPlugins(),
		Cmd:              exec.Command(path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           logger,
		StartTimeout:     StartTimeout,
	}
}

// Expect is what the host requires of a plugin; zero fields are not
// checked.
type Expect struct {
	Kind base.Kind
	Name string
}

// Plugin is a started, checked plugin.
type Plugin struct {
	// Info is the plugin's own description, consistent with the handshake.
	Info base.Info
	// Base is the Base service: Schema, SetConfig, CloseInstance.
	Base *base.Client

	rpc plugin.ClientProtocol
}

// Connect starts the plugin process if needed, completes the handshake
// within ctx, and checks the plugin: the negotiated API version is one
// this SDK speaks, Info repeats it, and kind and name are as expected. On
// any failure the process is killed (in the background when ctx ended
// during the handshake) and the error says why: ErrIncompatible and
// ErrUnexpectedPlugin can be tested with errors.Is.
func Connect(ctx context.Context, c *plugin.Client, want Expect) (p *Plugin, err error) {
	type started struct {
		rpc plugin.ClientProtocol
		err error
	}
	ch := make(chan started, 1)
	go func() {
		rpc, err := c.Client()
		ch <- started{rpc, err}
	}()
	var s started
	select {
	case s = <-ch:
	case <-ctx.Done():
		// go-plugin's Kill waits for a handshake in progress (bounded by
		// StartTimeout), so the process is killed in the background and
		// the caller gets its answer now.
		go func() {
			<-ch
			c.Kill()
		}()
		return nil, fmt.Errorf("start plugin: %w", ctx.Err())
	}
	defer func() {
		if err != nil {
			c.Kill()
		}
	}()
	if s.err != nil {
		if strings.Contains(strings.ToLower(s.err.Error()), "incompatible api version") {
			return nil, fmt.Errorf("start plugin: %w: %v", ErrIncompatible, s.err)
		}
		return nil, fmt.Errorf("start plugin: %w", s.err)
	}

	negotiated := c.NegotiatedVersion()
	if !slices.Contains(base.SupportedAPIVersions, negotiated) {
		return nil, fmt.Errorf("start plugin: %w: negotiated version %d, host supports %v", ErrIncompatible, negotiated, base.SupportedAPIVersions)
	}
	raw, err := s.rpc.Dispense(base.PluginName)
	if err != nil {
		return nil, fmt.Errorf("dispense base service: %w", err)
	}
	p = &Plugin{Base: raw.(*base.Client), rpc: s.rpc}
	if p.Info, err = p.Base.Info(ctx); err != nil {
		return nil, err
	}
	if p.Info.APIVersion != negotiated {
		return nil, fmt.Errorf("plugin %s: %w: handshake negotiated version %d, Info says %d",
			p.Info.Name, ErrIncompatible, negotiated, p.Info.APIVersion)
	}
	if want.Kind != "" && p.Info.Kind != want.Kind {
		return nil, fmt.Errorf("plugin %s: %w: a %s plugin, want a %s plugin", p.Info.Name, ErrUnexpectedPlugin, p.Info.Kind, want.Kind)
	}
	if want.Name != "" && p.Info.Name != want.Name {
		return nil, fmt.Errorf("plugin %s: %w: want plugin %q", p.Info.Name, ErrUnexpectedPlugin, want.Name)
	}
	return p, nil
}

// Checker returns the Checker service of a checker plugin.
func (p *Plugin) Checker() (*checker.Client, error) {
	return dispense[*checker.Client](p, base.KindChecker, checker.PluginName)
}

// VIP returns the VIP service of a VIP plugin.
func (p *Plugin) VIP() (*vip.Client, error) {
	return dispense[*vip.Client](p, base.KindVIP, vip.PluginName)
}

// App returns the App service of an app plugin.
func (p *Plugin) App() (*app.Client, error) {
	return dispense[*app.Client](p, base.KindApp, app.PluginName)
}

func dispense[C any](p *Plugin, kind base.Kind, name string) (C, error) {
	var zero C
	if p.Info.Kind != kind {
		return zero, fmt.Errorf("plugin %s: %w: a %s plugin has no %s service", p.Info.Name, ErrUnexpectedPlugin, p.Info.Kind, kind)
	}
	raw, err := p.rpc.Dispense(name)
	if err != nil {
		return zero, fmt.Errorf("dispense %s service: %w", name, err)
	}
	c, ok := raw.(C)
	if !ok {
		return zero, fmt.Errorf("dispense %s service: got %T", name, raw)
	}
	return c, nil
}
