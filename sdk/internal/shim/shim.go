package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/internal/rpc"
	pluginv1 "github.com/halo-ha/halo/sdk/proto/halo/plugin/v1"
	"github.com/halo-ha/halo/sdk/schema"
)

// Protect runs a call into partner code and turns a panic into an error,
// logged with its stack: one instance's bug must not kill the process
// that serves the others.
func Protect(logger hclog.Logger, method string, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			logger.Error("plugin panicked", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = &PanicError{Method: method, Value: fmt.Sprint(p)}
		}
	}()
	return fn()
}

// PanicError is a panic caught by Protect. It reaches the host as an
// Internal status: a plugin bug, never a check result or a configuration
// error.
type PanicError struct {
	Method string
	Value  string
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("plugin panicked in %s: %s", e.Method, e.Value)
}

// GRPCStatus lets gRPC send the error as codes.Internal.
func (e *PanicError) GRPCStatus() *status.Status {
	return status.New(codes.Internal, e.Error())
}

// IsPanic reports whether err is or wraps a PanicError.
func IsPanic(err error) bool {
	var pe *PanicError
	return errors.As(err, &pe)
}

// Instances is the Base service's view of a Registry, whatever its kind.
type Instances interface {
	Info() base.PluginInfo
	Schema() *schema.Schema
	Configure(ctx context.Context, id string, data []byte, mod base.ModuleContext) error
	Close(id string) error
}

// BaseServer serves the Base service for one API version.
type BaseServer struct {
	pluginv1.UnimplementedBaseServer
	kind       base.Kind
	apiVersion int
	instances  Instances
	// Supported is what Info lists as supported API versions;
	// base.SupportedAPIVersions when nil. Tests set it to impersonate
	// other SDK versions.
	Supported []int
}

// NewBaseServer returns the Base service of a plugin of the given kind.
func NewBaseServer(kind base.Kind, apiVersion int, instances Instances) *BaseServer {
	return &BaseServer{kind: kind, apiVersion: apiVersion, instances: instances}
}

func (s *BaseServer) Info(context.Context, *pluginv1.InfoRequest) (*pluginv1.InfoResponse, error) {
	info := s.instances.Info()
	resp := &pluginv1.InfoResponse{
		Name:          info.Name,
		Kind:          s.kind.ToProto(),
		PluginVersion: info.Version,
		ApiVersion:    uint32(s.apiVersion),
		Description:   info.Description,
	}
	supported := s.Supported
	if supported == nil {
		supported = base.SupportedAPIVersions
	}
	for _, v := range supported {
		resp.SupportedApiVersions = append(resp.SupportedApiVersions, uint32(v))
	}
	return resp, nil
}

func (s *BaseServer) ConfigSchema(context.Context, *pluginv1.ConfigSchemaRequest) (*pluginv1.ConfigSchemaResponse, error) {
	p, err := s.instances.Schema().ToProto()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode schema: %v", err)
	}
	return &pluginv1.ConfigSchemaResponse{Schema: p}, nil
}

func (s *BaseServer) SetConfig(ctx context.Context, req *pluginv1.SetConfigRequest) (*pluginv1.SetConfigResponse, error) {
	if req.GetInstanceId() == "" {
		return nil, status.Error(codes.InvalidArgument, "instance ID is empty")
	}
	err := s.instances.Configure(ctx, req.GetInstanceId(), req.GetConfigJson(), base.ModuleContextFromProto(req.GetModule()))
	if err == nil {
		return &pluginv1.SetConfigResponse{}, nil
	}
	if ctx.Err() != nil {
		// The host gave up: what Configure said is moot.
		return nil, rpc.ToStatus(ctx, err)
	}
	if IsPanic(err) {
		return nil, err // a plugin bug, not a configuration error
	}
	resp := &pluginv1.SetConfigResponse{}
	for _, ae := range schema.AttrErrors(err) {
		resp.Errors = append(resp.Errors, &pluginv1.ConfigError{Path: ae.Path, Message: ae.Err.Error()})
	}
	return resp, nil
}

func (s *BaseServer) CloseInstance(ctx context.Context, req *pluginv1.CloseInstanceRequest) (*pluginv1.CloseInstanceResponse, error) {
	if err := s.instances.Close(req.GetInstanceId()); err != nil {
		return nil, rpc.ToStatus(ctx, fmt.Errorf("close instance %q: %w", req.GetInstanceId(), err))
	}
	return &pluginv1.CloseInstanceResponse{}, nil
}

// NewLogger returns the plugin process's logger: JSON on stderr, which
// go-plugin's host parses into its own log with levels intact; never
// stdout, which carries the handshake.
func NewLogger() hclog.Logger {
	level := hclog.LevelFromString(strings.TrimSpace(os.Getenv(base.LogLevelEnv)))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Level:      level,
		Output:     os.Stderr,
		JSONFormat: true,
	})
}

// Serve serves the plugin sets until the host ends the process. It is the
// body of the kind packages' Serve functions.
func Serve(sets map[int]plugin.PluginSet, logger hclog.Logger) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  base.Handshake,
		VersionedPlugins: sets,
		GRPCServer:       plugin.DefaultGRPCServer,
		Logger:           logger,
	})
}

// Fatal reports a plugin that cannot start, on stderr, and exits: the host
// sees the message in its log next to "plugin exited before handshake".
func Fatal(logger hclog.Logger, err error) {
	logger.Error("plugin cannot start", "error", err.Error())
	os.Exit(1)
}
