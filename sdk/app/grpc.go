package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/internal/rpc"
	"github.com/halo-ha/halo/sdk/internal/shim"
	pluginv1 "github.com/halo-ha/halo/sdk/proto/halo/plugin/v1"
)

// Serve serves an app plugin; it is all a plugin's main needs to call.
// newApp makes one App per instance. A plugin whose Info or Schema is
// invalid exits 1 with the reason on stderr.
func Serve(newApp func() App) {
	logger := shim.NewLogger()
	sets, err := VersionedPlugins(newApp, logger)
	if err != nil {
		shim.Fatal(logger, err)
	}
	shim.Serve(sets, logger)
}

// VersionedPlugins returns the go-plugin plugin sets an app plugin serves,
// keyed by API version.
func VersionedPlugins(newApp func() App, logger hclog.Logger) (map[int]plugin.PluginSet, error) {
	reg, err := shim.NewRegistry(newApp, logger)
	if err != nil {
		return nil, err
	}
	return map[int]plugin.PluginSet{
		base.APIVersion: {
			base.PluginName: &base.GRPCPlugin{Service: shim.NewBaseServer(base.KindApp, base.APIVersion, reg)},
			PluginName:      &GRPCPlugin{Service: &server{reg: reg, runs: make(map[runKey]*activeRun)}},
		},
	}, nil
}

// GRPCPlugin is the go-plugin glue of the App service. In a plugin process
// Service is set; on the host it is nil and GRPCClient returns a *Client.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Service pluginv1.AppServer
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers the App service.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Service == nil {
		return errors.New("app plugin has no server implementation")
	}
	pluginv1.RegisterAppServer(s, p.Service)
	return nil
}

// GRPCClient returns a *Client.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewClient(c), nil
}

type runKey struct{ instance, run string }

type activeRun struct {
	cancel   context.CancelFunc
	stopping chan struct{}

	mu      sync.Mutex
	stopped string // how the host stopped it; "" while it has not
}

// stop records a Stop and passes it on: graceful closes Stopping, force
// also cancels the run's context.
func (r *activeRun) stop(force bool) {
	r.mu.Lock()
	if r.stopped == "" {
		close(r.stopping)
		r.stopped = "graceful stop"
	}
	if force {
		r.stopped = "forced stop"
	}
	r.mu.Unlock()
	if force {
		r.cancel()
	}
}

type server struct {
	pluginv1.UnimplementedAppServer
	reg *shim.Registry[App]

	mu   sync.Mutex
	runs map[runKey]*activeRun
}

var _ pluginv1.AppServer = (*server)(nil)

func (s *server) Run(req *pluginv1.RunRequest, stream pluginv1.App_RunServer) error {
	impl, err := s.reg.Lookup(req.GetInstanceId())
	if err != nil {
		return err
	}
	if req.GetRunId() == "" || req.GetScript() == "" {
		return status.Error(codes.InvalidArgument, "run ID and script name are required")
	}
	ctx := stream.Context()
	run := Run{
		ID:     req.GetRunId(),
		Script: req.GetScript(),
		Args: Args{
			Current: req.GetArgs().GetCurrent(),
			Next:    req.GetArgs().GetNext(),
			Action:  req.GetArgs().GetAction(),
		},
		Env:     req.GetEnv(),
		Timeout: time.Duration(req.GetTimeoutMillis()) * time.Millisecond,
		Force:   req.GetForce(),
	}
	var runCtx context.Context
	var cancel context.CancelFunc
	if run.Timeout > 0 {
		runCtx, cancel = context.WithTimeout(ctx, run.Timeout)
	} else {
		runCtx, cancel = context.WithCancel(ctx)
	}
	defer cancel()

	key := runKey{req.GetInstanceId(), run.ID}
	active := &activeRun{cancel: cancel, stopping: make(chan struct{})}
	run.Stopping = active.stopping
	s.mu.Lock()
	if _, busy := s.runs[key]; busy {
		s.mu.Unlock()
		return status.Errorf(codes.AlreadyExists, "run %q is already in progress", run.ID)
	}
	s.runs[key] = active
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.runs, key)
		s.mu.Unlock()
	}()

	sender, stdout, stderr := newOutput(stream.Send)
	start := time.Now()
	code := -1
	err = shim.Protect(s.reg.Logger(), "Run", func() error {
		var err error
		code, err = impl.Run(runCtx, run, Output{Stdout: stdout, Stderr: stderr})
		return err
	})
	sendErr := sender.close(stdout, stderr)
	if shim.IsPanic(err) {
		return err
	}
	if ctx.Err() != nil {
		return rpc.ToStatus(ctx, ctx.Err())
	}
	if sendErr != nil {
		return rpc.ToStatus(ctx, fmt.Errorf("stream output: %w", sendErr))
	}
	active.mu.Lock()
	stopped := active.stopped
	active.mu.Unlock()
	exit := classify(run, code, err, runCtx.Err(), stopped)
	exit.Elapsed = time.Since(start)
	return stream.Send(&pluginv1.RunEvent{Event: &pluginv1.RunEvent_Exit{Exit: exitToProto(exit)}})
}

// classify decides a run's outcome. A timeout wins over what the script
// said: a script killed at its timeout exits with some failure status,
// and "timeout" is the useful truth.
func classify(run Run, code int, err, runErr error, stopped string) Exit {
	switch {
	case errors.Is(runErr, context.DeadlineExceeded):
		return Exit{Outcome: OutcomeTimeout, ExitCode: code, Message: fmt.Sprintf("%s timed out after %s", run.Script, run.Timeout)}
	case stopped != "" && (err != nil || code != 0):
		msg := fmt.Sprintf("%s stopped by the host (%s)", run.Script, stopped)
		if err != nil {
			msg += ": " + err.Error()
		}
		return Exit{Outcome: OutcomeFailed, ExitCode: code, Message: msg}
	case err != nil:
		return Exit{Outcome: OutcomeFailed, ExitCode: code, Message: err.Error()}
	case code != 0:
		return Exit{Outcome: OutcomeFailed, ExitCode: code, Message: fmt.Sprintf("exit status %d", code)}
	default:
		return Exit{Outcome: OutcomeOK, ExitCode: 0, Message: "exit status 0"}
	}
}

func (s *server) Stop(_ context.Context, req *pluginv1.StopRequest) (*pluginv1.StopResponse, error) {
	if _, err := s.reg.Lookup(req.GetInstanceId()); err != nil {
		return nil, err
	}
	var targets []*activeRun
	s.mu.Lock()
	for k, r := range s.runs {
		if k.instance == req.GetInstanceId() && (req.GetRunId() == "" || k.run == req.GetRunId()) {
			targets = append(targets, r)
		}
	}
	s.mu.Unlock()
	if len(targets) == 0 && req.GetRunId() != "" {
		return nil, status.Errorf(codes.FailedPrecondition, "run %q is not in progress", req.GetRunId())
	}
	for _, r := range targets {
		r.stop(req.GetForce())
	}
	return &pluginv1.StopResponse{}, nil
}

func exitToProto(e Exit) *pluginv1.RunExit {
	out := pluginv1.RunOutcome_RUN_OUTCOME_FAILED
	switch e.Outcome {
	case OutcomeOK:
		out = pluginv1.RunOutcome_RUN_OUTCOME_OK
	case OutcomeTimeout:
		out = pluginv1.RunOutcome_RUN_OUTCOME_TIMEOUT
	}
	return &pluginv1.RunExit{Outcome: out, ExitCode: int32(e.ExitCode), Message: e.Message, ElapsedNanos: int64(e.Elapsed)}
}

func exitFromProto(p *pluginv1.RunExit) (Exit, error) {
	e := Exit{ExitCode: int(p.GetExitCode()), Message: p.GetMessage(), Elapsed: time.Duration(p.GetElapsedNanos())}
	switch p.GetOutcome() {
	case pluginv1.RunOutcome_RUN_OUTCOME_OK:
		e.Outcome = OutcomeOK
	case pluginv1.RunOutcome_RUN_OUTCOME_FAILED:
		e.Outcome = OutcomeFailed
	case pluginv1.RunOutcome_RUN_OUTCOME_TIMEOUT:
		e.Outcome = OutcomeTimeout
	default:
		return Exit{}, fmt.Errorf("plugin returned outcome %s", p.GetOutcome())
	}
	return e, nil
}

// Client calls an app plugin's App service.
type Client struct {
	rpc pluginv1.AppClient
}

// NewClient returns a Client over an established connection.
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{rpc: pluginv1.NewAppClient(conn)}
}

// Run runs a script of an instance, calling onLine (if not nil) for each
// line of output as it arrives, and returns how the run ended. The
// plugin enforces run.Timeout and reports OutcomeTimeout; ctx's deadline
// should therefore be a little later than run.Timeout. Without a deadline
// on ctx, Run applies run.Timeout + base.DefaultCallTimeout.
func (c *Client) Run(ctx context.Context, instanceID string, run Run, onLine func(Line)) (Exit, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, run.Timeout+rpc.DefaultTimeout)
		defer cancel()
	}
	// Cancelling on return releases the stream even if the plugin
	// misbehaves and sends past its exit event.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.Run(ctx, &pluginv1.RunRequest{
		InstanceId:    instanceID,
		RunId:         run.ID,
		Script:        run.Script,
		Args:          &pluginv1.ScriptArgs{Current: run.Args.Current, Next: run.Args.Next, Action: run.Args.Action},
		Env:           run.Env,
		TimeoutMillis: run.Timeout.Milliseconds(),
		Force:         run.Force,
	})
	if err != nil {
		return Exit{}, runError(run.Script, err)
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return Exit{}, fmt.Errorf("run %s: plugin ended the run without an exit status", run.Script)
		}
		if err != nil {
			return Exit{}, runError(run.Script, err)
		}
		switch e := ev.GetEvent().(type) {
		case *pluginv1.RunEvent_Line:
			if onLine != nil {
				stream := Stdout
				if e.Line.GetStream() == pluginv1.OutputStream_OUTPUT_STREAM_STDERR {
					stream = Stderr
				}
				onLine(Line{Stream: stream, Text: string(e.Line.GetText())})
			}
		case *pluginv1.RunEvent_Exit:
			exit, err := exitFromProto(e.Exit)
			if err != nil {
				return Exit{}, fmt.Errorf("run %s: %w", run.Script, err)
			}
			return exit, nil
		}
	}
}

func runError(script string, err error) error {
	if status.Code(err) == codes.AlreadyExists {
		return fmt.Errorf("run %s: %w: %s", script, ErrRunInProgress, status.Convert(err).Message())
	}
	return rpc.FromStatus("run "+script, err)
}

// Stop asks the plugin to end a run in progress (every run of the
// instance when runID is empty), gracefully or with force. Stopping a
// named run that is not in progress (not started yet, or already ended)
// returns ErrNoSuchRun.
func (c *Client) Stop(ctx context.Context, instanceID, runID string, force bool) error {
	ctx, cancel := rpc.WithDefaultTimeout(ctx)
	defer cancel()
	_, err := c.rpc.Stop(ctx, &pluginv1.StopRequest{InstanceId: instanceID, RunId: runID, Force: force})
	if status.Code(err) == codes.FailedPrecondition {
		return fmt.Errorf("stop run %s: %w", runID, ErrNoSuchRun)
	}
	return rpc.FromStatus("stop run", err)
}
