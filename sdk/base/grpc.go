package base

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/go-plugin"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
	"google.golang.org/grpc"

	"github.com/halo-ha/halo/sdk/internal/rpc"
	pluginv1 "github.com/halo-ha/halo/sdk/proto/halo/plugin/v1"
	"github.com/halo-ha/halo/sdk/schema"
)

// PluginName is the Base service's name in go-plugin plugin sets.
const PluginName = "base"

// GRPCPlugin is the go-plugin glue of the Base service. In a plugin
// process Service is set (by the kind packages' Serve); on the host it is
// nil and only GRPCClient is used.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Service pluginv1.BaseServer
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers the Base service.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Service == nil {
		return errors.New("base plugin has no server implementation")
	}
	pluginv1.RegisterBaseServer(s, p.Service)
	return nil
}

// GRPCClient returns a *Client.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewClient(c), nil
}

// Client calls a plugin's Base service. Every method honours ctx's
// deadline, and applies DefaultCallTimeout when ctx has none.
type Client struct {
	rpc pluginv1.BaseClient
}

// NewClient returns a Client over an established connection.
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{rpc: pluginv1.NewBaseClient(conn)}
}

// Info asks the plugin what it is. It checks the answer is well formed
// (Info.Validate) but not that it suits the host: see package host.
func (c *Client) Info(ctx context.Context) (Info, error) {
	ctx, cancel := rpc.WithDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.Info(ctx, &pluginv1.InfoRequest{})
	if err != nil {
		return Info{}, rpc.FromStatus("get plugin info", err)
	}
	info := Info{
		Name:        resp.GetName(),
		Kind:        KindFromProto(resp.GetKind()),
		Version:     resp.GetPluginVersion(),
		Description: resp.GetDescription(),
		APIVersion:  int(resp.GetApiVersion()),
	}
	for _, v := range resp.GetSupportedApiVersions() {
		info.SupportedAPIVersions = append(info.SupportedAPIVersions, int(v))
	}
	if err := info.Validate(); err != nil {
		return info, fmt.Errorf("get plugin info: malformed answer: %w", err)
	}
	return info, nil
}

// Schema fetches and validates the plugin's configuration schema.
func (c *Client) Schema(ctx context.Context) (*schema.Schema, error) {
	ctx, cancel := rpc.WithDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.ConfigSchema(ctx, &pluginv1.ConfigSchemaRequest{})
	if err != nil {
		return nil, rpc.FromStatus("get plugin config schema", err)
	}
	s, err := schema.FromProto(resp.GetSchema())
	if err != nil {
		return nil, fmt.Errorf("get plugin config schema: %w", err)
	}
	return s, nil
}

// SetConfig creates or reconfigures an instance. value is the block as
// decoded by the plugin's schema (schema.Schema.Decode). A rejection by the
// plugin is a *ConfigError; other errors are transport or plugin failures.
func (c *Client) SetConfig(ctx context.Context, instanceID string, value cty.Value, mod ModuleContext) error {
	if !value.IsWhollyKnown() {
		return errors.New("set plugin config: configuration has unknown values")
	}
	data, err := ctyjson.Marshal(value, value.Type())
	if err != nil {
		return fmt.Errorf("set plugin config: encode: %w", err)
	}
	ctx, cancel := rpc.WithDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.SetConfig(ctx, &pluginv1.SetConfigRequest{
		InstanceId: instanceID,
		ConfigJson: data,
		Module:     mod.toProto(),
	})
	if err != nil {
		return rpc.FromStatus("set plugin config", err)
	}
	if len(resp.GetErrors()) == 0 {
		return nil
	}
	cerr := &ConfigError{}
	for _, e := range resp.GetErrors() {
		cerr.Errors = append(cerr.Errors, &schema.AttrError{Path: e.GetPath(), Err: errors.New(e.GetMessage())})
	}
	return cerr
}

// CloseInstance tells the plugin to forget an instance. Closing an unknown
// instance succeeds.
func (c *Client) CloseInstance(ctx context.Context, instanceID string) error {
	ctx, cancel := rpc.WithDefaultTimeout(ctx)
	defer cancel()
	_, err := c.rpc.CloseInstance(ctx, &pluginv1.CloseInstanceRequest{InstanceId: instanceID})
	return rpc.FromStatus("close plugin instance", err)
}
