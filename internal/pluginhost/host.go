// Package pluginhost runs the agent's plugins: it discovers plugin binaries
// in a directory, launches them with go-plugin (gRPC, AutoMTLS) through
// sdk/host, refuses those whose API version or identity does not fit,
// validates module blocks against the schema each plugin declares, and
// keeps plugins serving: every call carries a deadline, and a plugin that
// dies (or stops answering) is relaunched with backoff and its instances'
// configurations replayed.
//
// One process serves every instance of a plugin (all tcp checkers of all
// modules), so the process count follows the number of plugins in use, not
// the number of modules.
package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2/hcldec"

	"github.com/halo-ha/halo/internal/agent"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/sdk/api"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/host"
)

// Defaults of Options.
const (
	DefaultCallTimeout  = 10 * time.Second
	DefaultStartTimeout = host.StartTimeout
	DefaultHangTimeout  = 30 * time.Second
)

// Options configures a Host.
type Options struct {
	// Dir is the plugin directory (/usr/lib/halo/plugins): every executable
	// regular file in it is a plugin named after the file.
	Dir    string
	Logger hclog.Logger
	// StateDir is the agent's data directory: a module's instances get
	// <StateDir>/<module>/plugins/checker.<check> and .../app as their
	// state directories. Empty when validating only.
	StateDir string
	// Node is this node's name, passed to every instance.
	Node string
	// CallTimeout bounds calls made without a deadline of their own: Info,
	// Schema, SetConfig, CloseInstance, and checks whose context has none.
	CallTimeout time.Duration
	// StartTimeout bounds a launch: process start, handshake, Info, Schema
	// and the replay of the instances' configurations.
	StartTimeout time.Duration
	// HangTimeout: a plugin whose calls time out and that does not answer a
	// liveness probe for this long (SIGSTOPped, deadlocked) is killed and
	// relaunched. Negative disables it.
	HangTimeout time.Duration
	// Restart is the relaunch backoff after a plugin died.
	Restart Backoff
	// SocketDir holds the plugins' Unix sockets, each launch in its own
	// subdirectory removed when the process is gone (a plugin killed with
	// SIGKILL cannot remove its socket itself). Default: os.TempDir().
	SocketDir string
}

// Backoff is the relaunch schedule of a plugin that died: the first
// relaunch waits Initial, each next one twice as long up to Max; a plugin
// that served for ResetAfter starts again from Initial.
type Backoff struct {
	Initial    time.Duration // default 100ms
	Max        time.Duration // default 10s
	ResetAfter time.Duration // default 30s
}

// Host runs the plugins of one agent (or of one `halo validate`). It
// implements agent.Plugins and config.PluginSchemas. Close it to end every
// plugin process.
type Host struct {
	opts     Options
	logger   hclog.Logger
	sockRoot string

	mu      sync.Mutex
	procs   map[string]*proc
	skipped map[string]skip // file name → why it is not a plugin
	closed  bool

	// wg counts the goroutines that own plugin processes (launches, exit
	// watchers, cleanups, probes), so Close returns only when every
	// process is reaped and every socket directory removed.
	wg sync.WaitGroup
}

var (
	_ agent.Plugins        = (*Host)(nil)
	_ config.PluginSchemas = (*Host)(nil)
)

// ErrClosed is returned for calls made after Close.
var ErrClosed = errors.New("plugin host is closed")

// New scans the plugin directory. Plugins are launched on first use.
func New(opts Options) (*Host, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.HangTimeout == 0 {
		opts.HangTimeout = DefaultHangTimeout
	}
	if opts.Restart.Initial <= 0 {
		opts.Restart.Initial = 100 * time.Millisecond
	}
	if opts.Restart.Max <= 0 {
		opts.Restart.Max = 10 * time.Second
	}
	if opts.Restart.Max < opts.Restart.Initial {
		opts.Restart.Max = opts.Restart.Initial
	}
	if opts.Restart.ResetAfter <= 0 {
		opts.Restart.ResetAfter = 30 * time.Second
	}
	h := &Host{
		opts:    opts,
		logger:  opts.Logger.Named("plugins"),
		procs:   map[string]*proc{},
		skipped: map[string]skip{},
	}
	if err := h.scan(); err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp(opts.SocketDir, "halo-plugins-")
	if err != nil {
		return nil, fmt.Errorf("create plugin socket directory: %w", err)
	}
	h.sockRoot = root
	return h, nil
}

// scan adds the plugins found in the directory since the last scan. Known
// plugins are kept even if their file went away: a running plugin serves
// on, and a relaunch reports the missing file.
func (h *Host) scan() error {
	entries, err := os.ReadDir(h.opts.Dir)
	if err != nil {
		return fmt.Errorf("read plugin directory: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	skipped := map[string]skip{}
	defer func() { h.skipped = skipped }()
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || h.procs[name] != nil {
			continue
		}
		path := filepath.Join(h.opts.Dir, name)
		sk := notAPlugin(path, name)
		if sk.why == "" {
			h.procs[name] = newProc(h, name, path)
			h.logger.Debug("found plugin", "plugin", name, "path", path)
			continue
		}
		if h.skipped[name] != sk {
			h.logger.Warn("ignoring file in plugin directory", "path", path, "reason", sk.why)
		}
		skipped[name] = sk
	}
	return nil
}

// skip is why a file of the plugin directory is not a plugin.
type skip struct {
	why string
	// listed: the file is meant as a plugin (a plugin name, a regular
	// file) but cannot run; `halo plugin list` shows it with why.
	listed bool
}

// notAPlugin says why the file cannot be a plugin; why is "" when it can.
func notAPlugin(path, name string) skip {
	if err := (base.PluginInfo{Name: name, Version: "0.0.0"}).Validate(); err != nil {
		return skip{why: "file name is not a plugin name (lower case letters, digits, '-' and '_', starting with a letter)"}
	}
	fi, err := os.Stat(path) // follows symbolic links: a link to a binary is fine
	switch {
	case err != nil:
		return skip{why: err.Error(), listed: true}
	case !fi.Mode().IsRegular():
		return skip{why: "not a regular file"}
	case fi.Mode().Perm()&0o111 == 0:
		return skip{why: fmt.Sprintf("not executable (mode %v)", fi.Mode().Perm()), listed: true}
	}
	return skip{}
}

// lookup returns the plugin of that name, rescanning the directory once
// when it is not known (a plugin installed while the agent runs).
func (h *Host) lookup(kind base.Kind, name string) (*proc, error) {
	for rescanned := false; ; rescanned = true {
		h.mu.Lock()
		closed, p, sk := h.closed, h.procs[name], h.skipped[name]
		h.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case p != nil:
			return p, nil
		case sk.listed && rescanned:
			return nil, fmt.Errorf("%w: %s plugin %q: %s: %s", config.ErrUnknownPlugin, kind, name, filepath.Join(h.opts.Dir, name), sk.why)
		case rescanned:
			return nil, fmt.Errorf("%w: no %s plugin %q in %s", config.ErrUnknownPlugin, kind, name, h.opts.Dir)
		}
		if err := h.scan(); err != nil {
			return nil, err
		}
	}
}

// started returns a live session of the named plugin, launching it if
// needed or waiting for a pending relaunch, and checks it is of the kind
// the caller needs.
func (h *Host) started(ctx context.Context, kind base.Kind, name string) (*proc, *session, error) {
	p, err := h.lookup(kind, name)
	if err != nil {
		return nil, nil, err
	}
	s, err := p.session(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	if s.info.Kind != kind {
		return nil, nil, fmt.Errorf("plugin %s is of kind %s, not %s", name, s.info.Kind, kind)
	}
	return p, s, nil
}

// ConfigSpec implements config.PluginSchemas: the spec of the settings the
// plugin declares, launching the plugin if needed. For app and vip plugins
// the attributes halo itself fills in (see HostProvided) are left out: they
// are halo's attributes of the block, checked by internal/config.
func (h *Host) ConfigSpec(kind config.PluginKind, name string) (hcldec.Spec, error) {
	k, err := baseKind(kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.StartTimeout+h.opts.CallTimeout)
	defer cancel()
	_, s, err := h.started(ctx, k, name)
	if err != nil {
		return nil, err
	}
	own := withoutHostProvided(s.schema, k)
	if len(own.Attributes) == 0 && len(own.Blocks) == 0 {
		return nil, nil
	}
	return own.Spec(), nil
}

func baseKind(k config.PluginKind) (base.Kind, error) {
	switch k {
	case config.PluginChecker:
		return base.KindChecker, nil
	case config.PluginApp:
		return base.KindApp, nil
	case config.PluginVIP:
		return base.KindVIP, nil
	}
	return "", fmt.Errorf("unknown plugin kind %q", k)
}

// List implements agent.Plugins: every plugin in the directory, launched
// if needed to learn what it is, and the files that look like plugins but
// cannot run. A plugin that cannot start is listed with the reason.
func (h *Host) List(ctx context.Context) []api.PluginInfo {
	if err := h.scan(); err != nil {
		h.logger.Warn("cannot rescan plugin directory", "error", err)
	}
	h.mu.Lock()
	procs := make([]*proc, 0, len(h.procs))
	for _, p := range h.procs {
		procs = append(procs, p)
	}
	var out []api.PluginInfo
	for name, sk := range h.skipped {
		if sk.listed {
			out = append(out, api.PluginInfo{Name: name, Path: filepath.Join(h.opts.Dir, name), Error: sk.why})
		}
	}
	h.mu.Unlock()

	infos := make([]api.PluginInfo, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() { infos[i] = p.describe(ctx) })
	}
	wg.Wait()
	out = append(out, infos...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Close ends every plugin process and waits until each is reaped and its
// socket directory removed. A plugin that does not exit after go-plugin's
// graceful shutdown (a stopped process) is killed.
func (h *Host) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	procs := make([]*proc, 0, len(h.procs))
	for _, p := range h.procs {
		procs = append(procs, p)
	}
	h.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(p.close)
	}
	wg.Wait()
	h.wg.Wait()
	if err := os.RemoveAll(h.sockRoot); err != nil {
		h.logger.Warn("cannot remove plugin socket directory", "path", h.sockRoot, "error", err)
	}
}

// withCallTimeout bounds ctx by CallTimeout unless it has a deadline.
func (h *Host) withCallTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, h.opts.CallTimeout)
}

// instanceStateDir returns (and creates) the state directory of an
// instance, or "" when the host has no state directory.
func (h *Host) instanceStateDir(module, instance string) (string, error) {
	if h.opts.StateDir == "" {
		return "", nil
	}
	dir := filepath.Join(h.opts.StateDir, module, "plugins", instance)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("create plugin state directory: %w", err)
	}
	return dir, nil
}
