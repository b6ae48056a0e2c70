// Package agent is the node daemon: it loads the cluster and module files,
// runs one event loop per module around the module's pure core machine,
// talks to plugins, persists state and event logs under the data
// directory, and serves the local API.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/internal/agent/sched"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/httpapi"
	"github.com/halo-ha/halo/internal/metrics"
	"github.com/halo-ha/halo/internal/pki"
	"github.com/halo-ha/halo/sdk/api"
)

// Plugins is what the agent needs from the plugin host.
type Plugins interface {
	// App returns the runner of the module's application plugin.
	App(ctx context.Context, mod *config.Module) (AppRunner, error)
	// Checker returns the runner of one checker instance; the plugin has
	// validated and accepted the check block's configuration.
	Checker(ctx context.Context, mod *config.Module, c *config.Check) (CheckerRunner, error)
	// VIP returns the runner of one vip block; the plugin has accepted its
	// configuration. v.Interface is resolved (the interface holding the
	// node's address on v.Network) when this host has it.
	VIP(ctx context.Context, mod *config.Module, v *config.VIP) (VIPRunner, error)
	List(ctx context.Context) []api.PluginInfo
	Close()
}

// Options configures an agent. Every path is overridable so that several
// nodes can run on one machine in tests.
type Options struct {
	Node    string
	Version string
	Cluster *config.Cluster
	Modules []*config.Module
	DataDir string // state, event logs: <DataDir>/<module>/
	Socket  string // local API Unix socket; "" = <DataDir>/halo.sock
	// APIAddrs are the TCP addresses of the API, served with APITLS
	// (mutual TLS with the cluster CA); empty disables the TCP API.
	APIAddrs []string
	APITLS   *tls.Config
	// TLS is this node's TLS material: mirror modules send coordination
	// messages to their peer's TCP API with it. nil = no control channel
	// (heartbeats still carry every fact, but `halo swap` on a SECOND
	// cannot reach its PRIM).
	TLS *pki.Material
	// ClusterKey authenticates heartbeats (pki.LoadClusterKey); mirror
	// modules need it.
	ClusterKey []byte
	// HealthHosts are the addresses the cloud health endpoint
	// (GET /health/<module>, plain HTTP) listens on, with each module's
	// health port; empty = no health endpoint.
	HealthHosts []string
	// MetricsAddrs are the plain-HTTP addresses GET /metrics is served on
	// for Prometheus (cluster.hcl's metrics block); the API serves it too.
	MetricsAddrs []string
	Plugins      Plugins
	Logger       hclog.Logger
	// ConfigDir is the configuration directory the modules were loaded
	// from ("" = none: modules cannot be installed, uninstalled or
	// reloaded through the API); Schemas validates plugin settings of
	// installed and reloaded modules as at start.
	ConfigDir string
	Schemas   config.PluginSchemas
	// KeepModulesOnExit makes Run return without stopping the modules, as
	// a crash would (tests use it to play a node's death).
	KeepModulesOnExit bool
	// Realtime keeps the agent's threads at real-time priority (nil:
	// normal priority): Run raises the threads the Go runtime creates
	// later, and the heartbeat pacers lock theirs.
	Realtime *sched.RealtimeThreads
	// SchedulingNote says why the agent runs at normal priority, for the
	// scheduling resource ("" when Realtime is set).
	SchedulingNote string
}

// threadSweepEvery paces the raising of the threads the Go runtime
// creates after the start (rare after a warm-up) to real-time priority.
const threadSweepEvery = 250 * time.Millisecond

// Agent runs the modules of one node.
type Agent struct {
	opts    Options
	logger  hclog.Logger
	runners map[string]*moduleRunner
	names   []string
	metrics *metrics.Metrics

	// mu guards runners and names: modules are installed and uninstalled
	// while the agent runs (admin.go).
	mu    sync.RWMutex
	admin adminState
}

var _ httpapi.Backend = (*Agent)(nil)

// New prepares the agent: state directories, machines, plugin instances.
// Nothing runs until Run.
func New(ctx context.Context, opts Options) (*Agent, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.New(&hclog.LoggerOptions{Name: "halo", Output: os.Stderr})
	}
	if opts.Socket == "" {
		opts.Socket = filepath.Join(opts.DataDir, "halo.sock")
	}
	a := &Agent{opts: opts, logger: opts.Logger, runners: map[string]*moduleRunner{}}
	a.metrics = a.newMetrics()
	for _, mod := range opts.Modules {
		if !mod.HasNode(opts.Node) {
			continue
		}
		r, err := a.newRunner(ctx, mod)
		if err != nil {
			for _, r := range a.runners {
				r.discard()
			}
			return nil, fmt.Errorf("module %s: %w", mod.Name, err)
		}
		a.runners[mod.Name] = r
		a.names = append(a.names, mod.Name)
	}
	sort.Strings(a.names)
	a.initAdmin()
	return a, nil
}

func (a *Agent) newRunner(ctx context.Context, mod *config.Module) (*moduleRunner, error) {
	stateDir := filepath.Join(a.opts.DataDir, mod.Name)
	if err := os.MkdirAll(stateDir, 0o750); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	app, err := a.opts.Plugins.App(ctx, mod)
	if err != nil {
		return nil, err
	}
	var checkers []Checker
	for _, c := range mod.Checks {
		cr, err := a.opts.Plugins.Checker(ctx, mod, c)
		if err != nil {
			return nil, err
		}
		checkers = append(checkers, Checker{Name: c.Name, Interval: c.Interval, Timeout: c.Timeout, Runner: cr})
	}
	var witness []Checker
	if mod.Kind == config.KindMirror {
		// Witness checks run when the machine asks, not periodically.
		checkers = slices.DeleteFunc(checkers, func(c Checker) bool {
			if mod.Check(c.Name).Type == witnessType {
				witness = append(witness, c)
				return true
			}
			return false
		})
	}
	ms, err := newMachine(mod, a.opts.Node, filepath.Join(stateDir, "state.json"))
	if err != nil {
		return nil, err
	}
	r, err := newModuleRunner(mod, a.opts.Node, ms.machine, app, checkers, stateDir, ms.persist, a.logger)
	if err != nil {
		return nil, err
	}
	r.status.Switches, r.status.Loop.Count = ms.switches, ms.loopCount
	r.metrics = a.metrics
	a.metrics.AddModule(mod.Name, checkerNames(checkers))
	r.realtime = a.opts.Realtime != nil
	r.schedText = a.schedulingText()
	for _, c := range witness {
		r.resources["checker."+c.Name] = api.Resource{Value: core.CheckInit.String(), Message: "split-brain witness, probed before serving without the peer", Since: time.Now().UTC()}
	}
	if mod.Kind == config.KindMirror || mod.Kind == config.KindFarm {
		for _, v := range mod.VIPs {
			v = a.resolveVIP(v)
			vr, err := a.opts.Plugins.VIP(ctx, mod, v)
			if err != nil {
				r.discard()
				return nil, fmt.Errorf("vip %s: %w", v.Address, err)
			}
			s := &vipSlot{cfg: v, runner: vr, lateAfter: v.AnnounceInterval / 2}
			if mod.Heartbeat != nil {
				// Overdue by what the machine takes for a pause of this
				// node: the peer may have taken the address meanwhile.
				s.lateAfter = min(s.lateAfter, mod.Heartbeat.Timeout/2)
			}
			r.vips = append(r.vips, s)
			r.resources[s.resourceName()] = api.Resource{Value: "unknown", Message: "not yet released or acquired", Since: time.Now().UTC()}
		}
	}
	if ms.mirror != nil {
		mi, err := a.newMirrorIO(mod, ms.mirror, r)
		if err != nil {
			r.discard()
			return nil, err
		}
		mi.witness = witness
		r.mirror = mi
	}
	return r, nil
}

// resolveVIP returns v with its interface named: the one holding this
// node's address on the VIP's network, when v leaves it out and this host
// has that address.
func (a *Agent) resolveVIP(v *config.VIP) *config.VIP {
	if v.Interface != "" || a.opts.Cluster == nil {
		return v
	}
	n := a.opts.Cluster.Node(a.opts.Node)
	if n == nil {
		return v
	}
	addr, ok := n.Addresses[v.Network]
	if !ok {
		return v
	}
	ifc := localInterface(addr)
	if ifc == "" {
		return v
	}
	c := *v
	c.Interface = ifc
	return &c
}

// Run serves the API and runs every module until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer a.opts.Plugins.Close()

	router := httpapi.NewRouter(a)
	router.HandleFunc(PeerMessagePath, a.handlePeerMessage).Methods(http.MethodPost)
	srv := &http.Server{
		Handler: withOrigin(router), ReadHeaderTimeout: 10 * time.Second,
		// Handshake failures (a client without a cluster certificate) are
		// worth seeing, not on the agent's raw stderr.
		ErrorLog: a.logger.Named("api").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Info}),
	}
	_ = os.Remove(a.opts.Socket) // a stale socket from a crashed agent
	ln, err := net.Listen("unix", a.opts.Socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.opts.Socket, err)
	}
	defer os.Remove(a.opts.Socket)
	if err := os.Chmod(a.opts.Socket, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("restrict %s: %w", a.opts.Socket, err)
	}
	var errc chan error
	// Every server goroutine sends once; none may block after Run returns.
	errc = make(chan error, 1+len(a.opts.APIAddrs)+len(a.opts.HealthHosts)*len(a.healthPorts())+len(a.opts.MetricsAddrs))
	go func() { errc <- srv.Serve(ln) }()
	for _, addr := range a.opts.APIAddrs {
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			srv.Close()
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		go func() { errc <- srv.Serve(tls.NewListener(tl, a.opts.APITLS)) }()
	}
	health := a.serveHealth(errc)
	if m := a.serveMetrics(errc); m != nil {
		health = append(health, m) // shut down with them
	}

	// Modules outlive ctx: on shutdown they are stopped first (below), then
	// their loops end.
	runCtx, stopRunners := context.WithCancel(context.Background())
	defer stopRunners()
	var wg sync.WaitGroup
	a.startModules(runCtx, &wg)
	if rt := a.opts.Realtime; rt != nil {
		wg.Go(func() { rt.Maintain(runCtx, threadSweepEvery, a.logger.Named("sched")) })
	}
	a.logger.Info("agent running", "node", a.opts.Node, "modules", a.moduleNames(), "socket", a.opts.Socket, "scheduling", a.schedulingText())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	a.closeAdmin()
	if !a.opts.KeepModulesOnExit {
		a.stopModules()
	}
	stopRunners()
	cancel()
	wg.Wait()
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	for _, h := range health {
		_ = h.Shutdown(sctx)
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve API: %w", serveErr)
	}
	return nil
}

// stopModules stops every running module before the agent exits: stop
// scripts run and VIPs are released, so a mirror peer takes over at once
// and never while this node still holds the VIP. The stop is not an
// administrator's (core.OriginShutdown): modules start again with the agent.
func (a *Agent) stopModules() {
	var wg sync.WaitGroup
	for _, r := range a.moduleRunners() {
		name := r.mod.Name
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Graceful stop, forced rerun, poststop: bounded by the module's
			// stop timeout twice, plus slack for the VIP release.
			budget := 2*r.config().App.StopTimeout + 10*time.Second
			ctx, cancel := context.WithTimeout(context.Background(), budget)
			defer cancel()
			if r.snapshot(false).State == core.Stop.String() {
				return
			}
			err := r.command(ctx, core.Command{At: time.Now(), Kind: core.CmdStop, Origin: core.OriginShutdown})
			if err != nil {
				a.logger.Warn("module not stopped at shutdown", "module", name, "error", err)
				return
			}
			for r.snapshot(false).State != core.Stop.String() {
				select {
				case <-ctx.Done():
					a.logger.Error("module still running at shutdown", "module", name, "after", budget)
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
			a.logger.Info("module stopped for shutdown", "module", name)
		}()
	}
	wg.Wait()
}

func (a *Agent) runner(module string) (*moduleRunner, error) {
	r, ok := a.lookup(module)
	if !ok {
		return nil, httpapi.NotFound("no module %q on node %s", module, a.opts.Node)
	}
	return r, nil
}

// Version implements httpapi.Backend.
func (a *Agent) Version() api.VersionInfo {
	v := api.VersionInfo{Version: a.opts.Version, Node: a.opts.Node}
	if a.opts.Cluster != nil {
		v.Cluster = a.opts.Cluster.Name
	}
	return v
}

// Modules implements httpapi.Backend.
func (a *Agent) Modules() []api.ModuleStatus {
	rs := a.moduleRunners()
	out := make([]api.ModuleStatus, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.snapshot(false))
	}
	return out
}

// Module implements httpapi.Backend.
func (a *Agent) Module(name string) (api.ModuleStatus, error) {
	r, err := a.runner(name)
	if err != nil {
		return api.ModuleStatus{}, err
	}
	return r.snapshot(true), nil
}

// Command implements httpapi.Backend.
func (a *Agent) Command(ctx context.Context, module string, req api.CommandRequest) (api.CommandResult, error) {
	r, err := a.runner(module)
	if err != nil {
		return api.CommandResult{}, err
	}
	kind, err := core.ParseCommand(req.Command)
	if err != nil {
		return api.CommandResult{}, httpapi.BadRequest("%v", err)
	}
	if req.Checker != "" && r.mod.Check(req.Checker) == nil {
		return api.CommandResult{}, httpapi.NotFound("module %s has no checker %q", module, req.Checker)
	}
	cmd := core.Command{At: time.Now(), Kind: kind, FullSync: req.FullSync, Checker: req.Checker, Origin: originOf(ctx)}
	if err := r.command(ctx, cmd); err != nil {
		return api.CommandResult{}, err
	}
	return api.CommandResult{Module: module, Node: a.opts.Node, Text: kind.String() + " accepted"}, nil
}

// Events implements httpapi.Backend.
func (a *Agent) Events(module string, after uint64, limit int) ([]api.Event, error) {
	r, err := a.runner(module)
	if err != nil {
		return nil, err
	}
	return r.events.since(after, limit), nil
}

// Subscribe implements httpapi.Backend.
func (a *Agent) Subscribe(module string, after uint64) (<-chan api.Event, func(), error) {
	r, err := a.runner(module)
	if err != nil {
		return nil, nil, err
	}
	ch, cancel := r.events.subscribe(after)
	return ch, cancel, nil
}

// Resource implements httpapi.Backend.
func (a *Agent) Resource(module, name string) (api.Resource, error) {
	r, err := a.runner(module)
	if err != nil {
		return api.Resource{}, err
	}
	v, ok := r.resource(name)
	if !ok {
		return api.Resource{}, httpapi.NotFound("module %s has no resource %q", module, name)
	}
	return v, nil
}

// SetResource implements httpapi.Backend.
func (a *Agent) SetResource(module, name string, set api.ResourceSet) error {
	r, err := a.runner(module)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.setResource(ctx, name, set)
}

// Plugins implements httpapi.Backend.
func (a *Agent) Plugins() []api.PluginInfo {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return a.opts.Plugins.List(ctx)
}
