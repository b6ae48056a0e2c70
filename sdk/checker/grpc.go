package checker

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/internal/rpc"
	"github.com/halo-ha/halo/sdk/internal/shim"
	pluginv1 "github.com/halo-ha/halo/sdk/proto/halo/plugin/v1"
)

// Serve serves a checker plugin; it is all a plugin's main needs to call.
// newChecker makes one Checker per instance. Serve returns only when the
// host ends the plugin; a plugin whose Info or Schema is invalid exits 1
// with the reason on stderr.
func Serve(newChecker func() Checker) {
	logger := shim.NewLogger()
	sets, err := VersionedPlugins(newChecker, logger)
	if err != nil {
		shim.Fatal(logger, err)
	}
	shim.Serve(sets, logger)
}

// VersionedPlugins returns the go-plugin plugin sets a checker plugin
// serves, keyed by API version (go-plugin's ServeConfig.VersionedPlugins).
// Serve uses it; so does sdktest, to run a plugin in-process.
func VersionedPlugins(newChecker func() Checker, logger hclog.Logger) (map[int]plugin.PluginSet, error) {
	reg, err := shim.NewRegistry(newChecker, logger)
	if err != nil {
		return nil, err
	}
	return map[int]plugin.PluginSet{
		base.APIVersion: {
			base.PluginName: &base.GRPCPlugin{Service: shim.NewBaseServer(base.KindChecker, base.APIVersion, reg)},
			PluginName:      &GRPCPlugin{Service: &server{reg: reg}},
		},
	}, nil
}

// GRPCPlugin is the go-plugin glue of the Checker service. In a plugin
// process Service is set; on the host it is nil and GRPCClient returns a
// *Client.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Service pluginv1.CheckerServer
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers the Checker service.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Service == nil {
		return errors.New("checker plugin has no server implementation")
	}
	pluginv1.RegisterCheckerServer(s, p.Service)
	return nil
}

// GRPCClient returns a *Client.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewClient(c), nil
}

// server is the plugin-side shim: it finds the instance and calls the
// partner's Check.
type server struct {
	pluginv1.UnimplementedCheckerServer
	reg *shim.Registry[Checker]
}

var _ pluginv1.CheckerServer = (*server)(nil)

func (s *server) Check(ctx context.Context, req *pluginv1.CheckRequest) (*pluginv1.CheckResponse, error) {
	impl, err := s.reg.Lookup(req.GetInstanceId())
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var res Result
	err = shim.Protect(s.reg.Logger(), "Check", func() error {
		var err error
		res, err = impl.Check(ctx)
		return err
	})
	if ctx.Err() != nil {
		// Past the deadline nobody reads the answer; say why instead.
		return nil, rpc.ToStatus(ctx, ctx.Err())
	}
	if err != nil {
		if shim.IsPanic(err) {
			return nil, err
		}
		res = Result{Status: StatusUnknown, Message: err.Error()}
	}
	if res.Elapsed == 0 {
		res.Elapsed = time.Since(start)
	}
	return res.toProto(), nil
}

// Client calls a checker plugin's Checker service.
type Client struct {
	rpc pluginv1.CheckerClient
}

// NewClient returns a Client over an established connection.
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{rpc: pluginv1.NewCheckerClient(conn)}
}

// Check runs one check of an instance. It honours ctx's deadline, and
// applies base.DefaultCallTimeout when ctx has none; a check that runs out
// of time is an error satisfying errors.Is(err, context.DeadlineExceeded).
func (c *Client) Check(ctx context.Context, instanceID string) (Result, error) {
	ctx, cancel := rpc.WithDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.Check(ctx, &pluginv1.CheckRequest{InstanceId: instanceID})
	if err != nil {
		return Result{}, rpc.FromStatus("check", err)
	}
	return resultFromProto(resp)
}
