package vip

import (
	"context"
	"errors"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/internal/rpc"
	"github.com/halo-ha/halo/sdk/internal/shim"
	pluginv1 "github.com/halo-ha/halo/sdk/proto/halo/plugin/v1"
)

// Serve serves a VIP plugin; it is all a plugin's main needs to call.
// newVIP makes one VIP per instance. A plugin whose Info or Schema is
// invalid exits 1 with the reason on stderr.
func Serve(newVIP func() VIP) {
	logger := shim.NewLogger()
	sets, err := VersionedPlugins(newVIP, logger)
	if err != nil {
		shim.Fatal(logger, err)
	}
	shim.Serve(sets, logger)
}

// VersionedPlugins returns the go-plugin plugin sets a VIP plugin serves,
// keyed by API version.
func VersionedPlugins(newVIP func() VIP, logger hclog.Logger) (map[int]plugin.PluginSet, error) {
	reg, err := shim.NewRegistry(newVIP, logger)
	if err != nil {
		return nil, err
	}
	return map[int]plugin.PluginSet{
		base.APIVersion: {
			base.PluginName: &base.GRPCPlugin{Service: shim.NewBaseServer(base.KindVIP, base.APIVersion, reg)},
			PluginName:      &GRPCPlugin{Service: &server{reg: reg}},
		},
	}, nil
}

// GRPCPlugin is the go-plugin glue of the VIP service. In a plugin process
// Service is set; on the host it is nil and GRPCClient returns a *Client.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Service pluginv1.VIPServer
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers the VIP service.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Service == nil {
		return errors.New("vip plugin has no server implementation")
	}
	pluginv1.RegisterVIPServer(s, p.Service)
	return nil
}

// GRPCClient returns a *Client.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewClient(c), nil
}

type server struct {
	pluginv1.UnimplementedVIPServer
	reg *shim.Registry[VIP]
}

var _ pluginv1.VIPServer = (*server)(nil)

// call runs one partner method on an instance with panic containment and
// the SDK's error mapping.
func (s *server) call(ctx context.Context, id, method string, fn func(VIP) error) error {
	impl, err := s.reg.Lookup(id)
	if err != nil {
		return err
	}
	err = shim.Protect(s.reg.Logger(), method, func() error { return fn(impl) })
	if shim.IsPanic(err) {
		return err
	}
	return rpc.ToStatus(ctx, err)
}

func (s *server) Acquire(ctx context.Context, req *pluginv1.AcquireRequest) (*pluginv1.AcquireResponse, error) {
	err := s.call(ctx, req.GetInstanceId(), "Acquire", func(v VIP) error { return v.Acquire(ctx) })
	if err != nil {
		return nil, err
	}
	return &pluginv1.AcquireResponse{}, nil
}

func (s *server) Release(ctx context.Context, req *pluginv1.ReleaseRequest) (*pluginv1.ReleaseResponse, error) {
	opts := ReleaseOptions{ResetConnections: req.GetResetConnections()}
	err := s.call(ctx, req.GetInstanceId(), "Release", func(v VIP) error { return v.Release(ctx, opts) })
	if err != nil {
		return nil, err
	}
	return &pluginv1.ReleaseResponse{}, nil
}

func (s *server) Status(ctx context.Context, req *pluginv1.VIPStatusRequest) (*pluginv1.VIPStatusResponse, error) {
	var st Status
	err := s.call(ctx, req.GetInstanceId(), "Status", func(v VIP) error {
		var err error
		st, err = v.Status(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pluginv1.VIPStatusResponse{
		Present:     st.Present,
		Duplicated:  st.Duplicated,
		InterfaceUp: st.InterfaceUp,
		Message:     st.Message,
	}, nil
}

func (s *server) Announce(ctx context.Context, req *pluginv1.AnnounceRequest) (*pluginv1.AnnounceResponse, error) {
	err := s.call(ctx, req.GetInstanceId(), "Announce", func(v VIP) error { return v.Announce(ctx) })
	if err != nil {
		return nil, err
	}
	return &pluginv1.AnnounceResponse{}, nil
}

// Client calls a VIP plugin's VIP service. Every method honours ctx's
// deadline, and applies base.DefaultCallTimeout when ctx has none.
type Client struct {
	rpc pluginv1.VIPClient
}

// NewClient returns a Client over an established connection.
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{rpc: pluginv1.NewVIPClient(conn)}
}

// Acquire adds and announces an instance's address.
func (c *Client) Acquire(ctx context.Context, instanceID string) error {
	ctx, cancel := rpc.WithDefaultTimeout(ctx)
	defer cancel()
	_, err := c.rpc.Acquire(ctx, &pluginv1.AcquireRequest{InstanceId: instanceID})
	return rpc.FromStatus("acquire vip", err)
}

// Release removes an instance's address.
func (c *Client) Release(ctx context.Context, instanceID string, opts ReleaseOptions) error {
	ctx, cancel := rpc.WithDefaultTimeout(ctx)
	defer cancel()
	_, err := c.rpc.Release(ctx, &pluginv1.ReleaseRequest{InstanceId: instanceID, ResetConnections: opts.ResetConnections})
	return rpc.FromStatus("release vip", err)
}

// Status reports what the node sees of an instance's address.
func (c *Client) Status(ctx context.Context, instanceID string) (Status, error) {
	ctx, cancel := rpc.WithDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.Status(ctx, &pluginv1.VIPStatusRequest{InstanceId: instanceID})
	if err != nil {
		return Status{}, rpc.FromStatus("vip status", err)
	}
	return Status{
		Present:     resp.GetPresent(),
		Duplicated:  resp.GetDuplicated(),
		InterfaceUp: resp.GetInterfaceUp(),
		Message:     resp.GetMessage(),
	}, nil
}

// Announce announces an instance's address now.
func (c *Client) Announce(ctx context.Context, instanceID string) error {
	ctx, cancel := rpc.WithDefaultTimeout(ctx)
	defer cancel()
	_, err := c.rpc.Announce(ctx, &pluginv1.AnnounceRequest{InstanceId: instanceID})
	return rpc.FromStatus("announce vip", err)
}
