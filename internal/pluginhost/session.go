package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/halo-ha/halo/sdk/app"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/host"
	"github.com/halo-ha/halo/sdk/schema"
	"github.com/halo-ha/halo/sdk/vip"
)

// stopGrace is how long Close lets go-plugin's graceful shutdown run
// before killing the process: go-plugin's Kill waits forever for a
// stopped (SIGSTOP) plugin to answer its Shutdown call.
const stopGrace = 2 * time.Second

// session is one running plugin process, launched and checked.
type session struct {
	client  *plugin.Client
	cmd     *exec.Cmd
	pid     int
	info    base.Info
	schema  *schema.Schema
	base    *base.Client
	checker *checker.Client // set for checker plugins
	app     *app.Client     // set for app plugins
	vip     *vip.Client     // set for vip plugins
	// done is closed once the process has exited and been reaped.
	done    <-chan struct{}
	sockDir string
	started time.Time

	killReason atomic.Pointer[string]
}

func (s *session) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// exitCause describes how the process ended; call it once done is closed.
func (s *session) exitCause() string {
	if r := s.killReason.Load(); r != nil {
		return "was killed by the host: " + *r
	}
	ps := s.cmd.ProcessState
	switch {
	case ps == nil:
		return "exited"
	case ps.Success():
		return "exited unexpectedly (exit status 0)"
	default:
		return "crashed (" + ps.String() + ")"
	}
}

// killFor kills the process, recording why for exitCause. os.Process
// signals through a pidfd, so a pid reused after the exit is never hit.
func (s *session) killFor(reason string) {
	s.killReason.CompareAndSwap(nil, &reason)
	_ = s.cmd.Process.Kill()
}

// stop ends the process and waits until it is reaped and go-plugin's
// goroutines are done, then removes the socket directory. A stopped
// process is killed at once; one that does not exit within stopGrace of
// go-plugin's graceful shutdown is killed.
func (s *session) stop() {
	if processStopped(s.pid) && !s.exited() {
		s.killFor("stopped process at shutdown")
	}
	killed := make(chan struct{})
	go func() {
		s.client.Kill()
		close(killed)
	}()
	select {
	case <-killed:
	case <-time.After(stopGrace):
		s.killFor("did not exit at shutdown")
		<-killed
	}
	_ = os.RemoveAll(s.sockDir)
}

// exitWatchName is a host-only member of the plugin set: dispensing it
// never reaches the plugin, and returns go-plugin's context that ends when
// the process has exited — the only exit notification go-plugin offers
// short of polling Client.Exited.
const exitWatchName = "halo-host-exit-watch"

type exitWatch struct {
	plugin.NetRPCUnsupportedPlugin
}

func (exitWatch) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("the exit watch exists on the host side only")
}

func (exitWatch) GRPCClient(ctx context.Context, _ *plugin.GRPCBroker, _ *grpc.ClientConn) (any, error) {
	return ctx, nil
}

// refusal is a launch failure that a relaunch cannot cure: the plugin
// speaks no API version of ours, or is not the plugin its file name says.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

var pluginVersionRE = regexp.MustCompile(`Plugin version: (\d+)`)

// connect launches the plugin's binary and checks it: API version, name,
// and a well-formed schema. On error nothing of the launch is left.
func (h *Host) connect(ctx context.Context, p *proc) (*session, error) {
	sockDir, err := os.MkdirTemp(h.sockRoot, p.name+"-")
	if err != nil {
		return nil, fmt.Errorf("launch plugin %s: create socket directory: %w", p.name, err)
	}
	cfg := host.ClientConfig(p.path, h.logger)
	cfg.StartTimeout = h.opts.StartTimeout
	cfg.SkipHostEnv = true
	cfg.Cmd.Env = h.pluginEnv(sockDir)
	setProcAttr(cfg.Cmd)
	for _, set := range cfg.VersionedPlugins {
		set[exitWatchName] = exitWatch{}
	}
	stderr := &tailWriter{}
	cfg.Stderr = stderr
	c := plugin.NewClient(cfg)
	started := time.Now()
	fail := func(err error) (*session, error) {
		c.Kill()
		_ = os.RemoveAll(sockDir)
		return nil, err
	}

	hp, err := host.Connect(ctx, c, host.Expect{Name: p.name})
	if err != nil {
		c.Kill() // Connect killed it, possibly in the background: wait for it
		refused := errors.Is(err, host.ErrIncompatible) || errors.Is(err, host.ErrUnexpectedPlugin)
		if ps := cfg.Cmd.ProcessState; ps != nil && !ps.Success() && !killed(ps) && !refused {
			// It ended by itself: say how, and what it said last, rather
			// than go-plugin's many-line guesses (logged at debug level, as
			// are stderr lines that are not hclog JSON).
			h.logger.Debug("plugin handshake failed", "plugin", p.name, "error", err)
			msg := fmt.Sprintf("plugin process ended during the handshake (%s)", ps)
			if last := stderr.last(); last != "" {
				msg += "; its stderr ends with: " + last
			}
			err = errors.New(msg)
		}
		return fail(h.launchError(p, err))
	}
	rpc, err := c.Client() // cached by Connect
	if err != nil {
		return fail(fmt.Errorf("launch plugin %s: %w", p.name, err))
	}
	raw, err := rpc.Dispense(exitWatchName)
	if err != nil {
		return fail(fmt.Errorf("launch plugin %s: watch process exit: %w", p.name, err))
	}
	s := &session{
		client:  c,
		cmd:     cfg.Cmd,
		pid:     cfg.Cmd.Process.Pid,
		info:    hp.Info,
		base:    hp.Base,
		done:    raw.(context.Context).Done(),
		sockDir: sockDir,
		started: started,
	}
	if s.schema, err = hp.Base.Schema(ctx); err != nil {
		return fail(fmt.Errorf("launch plugin %s: %w", p.name, err))
	}
	switch hp.Info.Kind {
	case base.KindChecker:
		s.checker, err = hp.Checker()
	case base.KindApp:
		s.app, err = hp.App()
	case base.KindVIP:
		s.vip, err = hp.VIP()
	}
	if err != nil {
		return fail(fmt.Errorf("launch plugin %s: %w", p.name, err))
	}
	return s, nil
}

// launchError words a failed launch, making refusals permanent.
func (h *Host) launchError(p *proc, err error) error {
	switch {
	case errors.Is(err, host.ErrIncompatible):
		ours := apiVersions(base.SupportedAPIVersions)
		if m := pluginVersionRE.FindStringSubmatch(err.Error()); m != nil {
			return &refusal{fmt.Errorf("plugin %s (%s) refused: it speaks plugin API version %s, this host speaks %s (%w)",
				p.name, p.path, m[1], ours, err)}
		}
		return &refusal{fmt.Errorf("plugin %s (%s) refused: this host speaks plugin API version %s: %w", p.name, p.path, ours, err)}
	case errors.Is(err, host.ErrUnexpectedPlugin):
		return &refusal{fmt.Errorf("plugin %s (%s) refused: %w", p.name, p.path, err)}
	}
	return fmt.Errorf("launch plugin %s: %w", p.name, err)
}

// killed reports whether the process ended by SIGKILL, as go-plugin ends
// a plugin it gives up on.
func killed(ps *os.ProcessState) bool {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func apiVersions(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ", ")
}

// pluginEnv is the plugin's environment: the agent's, with the socket
// directory and log level set by the host.
func (h *Host) pluginEnv(sockDir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != plugin.EnvUnixSocketDir && k != base.LogLevelEnv {
			env = append(env, kv)
		}
	}
	env = append(env, plugin.EnvUnixSocketDir+"="+sockDir)
	if lvl := h.logger.GetLevel(); lvl != hclog.NoLevel {
		env = append(env, base.LogLevelEnv+"="+lvl.String())
	}
	return env
}

// tailWriter keeps the end of a plugin's raw stderr, for the message of a
// launch that fails.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

const tailMax = 512

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > 2*tailMax {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-tailMax:]...)
	}
	return len(p), nil
}

// last returns the last non-empty line written, at most tailMax bytes.
func (w *tailWriter) last() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(w.buf)), "\n")
	line := strings.TrimSpace(lines[len(lines)-1])
	if len(line) > tailMax {
		line = line[len(line)-tailMax:]
	}
	return line
}
