package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/internal/bundle"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/httpapi"
	"github.com/halo-ha/halo/sdk/api"
)

// Module administration: bundles installed into <config-dir>/modules,
// uninstalls, reloads of edited module files, and the watch of those files.
//
// Modules come and go while the agent runs, so a.runners and a.names are
// guarded by a.mu; every install, uninstall and reload holds a.admin.mu
// for its whole course, so that each sees the disk and the runners as the
// previous one left them.

// stagingDirName holds bundles being validated and directories being
// replaced, beside modules/ so that renames stay on one filesystem, and
// outside it so that the agent never loads a half-written module.
const stagingDirName = ".halo-staging"

var _ httpapi.AdminBackend = (*Agent)(nil)

// adminState is the agent's module administration.
type adminState struct {
	mu sync.Mutex // one install, uninstall or reload at a time

	// Under Agent.mu:
	runCtx  context.Context // Run's module context; nil before Run
	wg      *sync.WaitGroup // Run's goroutines
	closed  bool            // Run is ending: no new runner may start
	handles map[string]*runHandle
	// applied maps every installed module to the configuration checksum
	// its runner runs (or that was validated last, for a module that does
	// not run here); reported maps a module to the on-disk checksum last
	// reported as changed and not applied.
	applied  map[string]string
	reported map[string]string
}

// runHandle stops one runner.
type runHandle struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// adminEnabled reports whether modules can be administered: the agent
// knows its configuration directory.
func (a *Agent) adminEnabled() error {
	if a.opts.ConfigDir == "" {
		return httpapi.Conflict("node %s: the agent was started without a configuration directory; modules cannot be managed through it", a.opts.Node)
	}
	return nil
}

func (a *Agent) modulesDir() string { return filepath.Join(a.opts.ConfigDir, config.ModulesDirName) }

// initAdmin records the configuration checksum of every module the agent
// loaded at start.
func (a *Agent) initAdmin() {
	a.admin.handles = map[string]*runHandle{}
	a.admin.applied = map[string]string{}
	a.admin.reported = map[string]string{}
	for _, m := range a.opts.Modules {
		if sum, err := bundle.DirChecksum(m.Dir); err == nil {
			a.admin.applied[m.Name] = sum
		}
	}
}

// startModules starts every runner under Run's context and wait group,
// and the watch of the module files.
func (a *Agent) startModules(runCtx context.Context, wg *sync.WaitGroup) {
	a.mu.Lock()
	a.admin.runCtx, a.admin.wg = runCtx, wg
	for _, name := range a.names {
		a.startRunnerLocked(a.runners[name])
	}
	a.mu.Unlock()
	if a.opts.ConfigDir != "" {
		wg.Go(func() { a.watchModules(runCtx) })
	}
}

// closeAdmin forbids new runners: Run is about to wait for its goroutines.
func (a *Agent) closeAdmin() {
	a.mu.Lock()
	a.admin.closed = true
	a.mu.Unlock()
}

func (a *Agent) startRunnerLocked(r *moduleRunner) {
	ctx, cancel := context.WithCancel(a.admin.runCtx)
	h := &runHandle{cancel: cancel, done: make(chan struct{})}
	a.admin.handles[r.mod.Name] = h
	a.admin.wg.Add(1)
	go func() {
		defer a.admin.wg.Done()
		defer close(h.done)
		r.run(ctx)
	}()
}

// lookup returns the runner of a module on this node.
func (a *Agent) lookup(module string) (*moduleRunner, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	r, ok := a.runners[module]
	return r, ok
}

// moduleRunners returns the runners in name order.
func (a *Agent) moduleRunners() []*moduleRunner {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]*moduleRunner, 0, len(a.names))
	for _, n := range a.names {
		out = append(out, a.runners[n])
	}
	return out
}

// moduleNames returns the names of this node's modules, sorted.
func (a *Agent) moduleNames() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return slices.Clone(a.names)
}

// loadConfig loads the cluster and every installed module, with the
// module named replaced by the one in dir when dir is set, and checks
// them as the agent does at start (plugin schemas included).
func (a *Agent) loadConfig(module, dir string) (*config.Config, hcl.Diagnostics) {
	paths := []string{}
	entries, _ := os.ReadDir(a.modulesDir()) // none yet: only the new one
	for _, e := range entries {
		if !e.IsDir() || (dir != "" && e.Name() == module) {
			continue
		}
		p := filepath.Join(a.modulesDir(), e.Name())
		if _, err := os.Stat(filepath.Join(p, config.ModuleFileName)); err == nil {
			paths = append(paths, p)
		}
	}
	if dir != "" {
		paths = append(paths, dir)
	}
	opts := config.Options{ClusterFile: filepath.Join(a.opts.ConfigDir, config.ClusterFileName)}
	if a.opts.Schemas != nil {
		opts.Plugins = a.opts.Schemas
	}
	if len(paths) == 0 {
		return &config.Config{}, nil
	}
	return config.Load(opts, paths...)
}

// diagError renders a configuration's errors, each with its location;
// staged paths are shown as the bundle's.
func diagError(diags hcl.Diagnostics, staged, shown string) error {
	var b strings.Builder
	n := 0
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		n++
		b.WriteString("\n  ")
		b.WriteString(config.FormatDiagnostic(d))
	}
	text := b.String()
	if staged != "" {
		text = strings.ReplaceAll(text, staged+string(filepath.Separator), shown+"/")
	}
	return httpapi.BadRequest("%d configuration error(s):%s", n, text)
}

// InstallBundle implements httpapi.AdminBackend.
func (a *Agent) InstallBundle(ctx context.Context, module string, data []byte) (api.AdminResult, error) {
	res := api.AdminResult{Module: module, Node: a.opts.Node}
	if err := a.adminEnabled(); err != nil {
		return res, err
	}
	b, err := bundle.Read(bytes.NewReader(data))
	if err != nil {
		return res, httpapi.BadRequest("bundle for module %s refused, nothing changed: %v", module, err)
	}
	if b.Module() != module {
		return res, httpapi.BadRequest("bundle refused, nothing changed: it holds module %q, not %q", b.Module(), module)
	}
	res.Checksum = b.Checksum()
	a.admin.mu.Lock()
	defer a.admin.mu.Unlock()

	staging := filepath.Join(a.opts.ConfigDir, stagingDirName)
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return res, fmt.Errorf("install %s: create staging directory: %w", module, err)
	}
	if err := os.MkdirAll(a.modulesDir(), 0o755); err != nil {
		return res, fmt.Errorf("install %s: create %s: %w", module, a.modulesDir(), err)
	}
	tmp, err := os.MkdirTemp(staging, module+"-")
	if err != nil {
		return res, fmt.Errorf("install %s: %w", module, err)
	}
	defer os.RemoveAll(tmp)
	// Named after the module: config requires module.hcl's directory to be.
	staged := filepath.Join(tmp, module)
	if err := b.Extract(staged); err != nil {
		return res, fmt.Errorf("install %s: %w", module, err)
	}
	cfg, diags := a.loadConfig(module, staged)
	if diags.HasErrors() {
		return res, diagError(diags, staged, module+".halo")
	}
	mod := cfg.Module(module)
	if mod == nil {
		return res, httpapi.BadRequest("bundle refused, nothing changed: its module.hcl does not define module %q", module)
	}

	r, running := a.lookup(module)
	var changes []configChange
	if running {
		changes = diffModules(r.config(), mod)
		if !liveOnly(changes) {
			return res, httpapi.Conflict("module %s runs on node %s and the bundle changes what needs it stopped; nothing was installed:%s",
				module, a.opts.Node, listChanges(changes, true))
		}
	}

	final := filepath.Join(a.modulesDir(), module)
	old := filepath.Join(tmp, "previous")
	replaced := false
	if _, err := os.Lstat(final); err == nil {
		if err := os.Rename(final, old); err != nil {
			return res, fmt.Errorf("install %s: move the installed module aside: %w", module, err)
		}
		replaced = true
	}
	rollback := func() {
		_ = os.RemoveAll(final)
		if replaced {
			if err := os.Rename(old, final); err != nil {
				a.logger.Error("cannot restore the previous module directory", "module", module, "from", old, "error", err)
			}
		}
		syncDir(a.modulesDir())
	}
	if err := os.Rename(staged, final); err != nil {
		rollback()
		return res, fmt.Errorf("install %s: move the module into place: %w", module, err)
	}
	syncDir(a.modulesDir())
	// Again from its final place: the module's paths (scripts) must be
	// the installed ones. The content was validated above.
	cfg, diags = a.loadConfig(module, "")
	if mod = cfg.Module(module); diags.HasErrors() || mod == nil {
		rollback()
		return res, diagError(diags, "", "")
	}

	res.Action = "installed"
	if replaced {
		res.Action = "replaced"
	}
	switch {
	case running:
		if len(changes) > 0 {
			if err := r.reconfigure(ctx, mod); err != nil {
				rollback()
				return res, err
			}
		} else {
			res.Action = "unchanged"
		}
		res.Applied = changeStrings(changes)
		res.Runs = true
		r.events.add("config", "info", fmt.Sprintf("bundle %s installed (%s)%s", module+bundle.Extension, res.Checksum, appliedText(changes)))
		a.markApplied(r, module, res.Checksum)
	case mod.HasNode(a.opts.Node):
		nr, err := a.newRunner(ctx, mod)
		if err != nil {
			a.metrics.RemoveModule(module) // newRunner may have added it
			rollback()
			return res, httpapi.BadRequest("bundle refused, nothing changed: module %s cannot run on node %s: %v", module, a.opts.Node, err)
		}
		if err := a.addRunner(nr); err != nil {
			nr.discard()
			a.metrics.RemoveModule(module)
			rollback()
			return res, err
		}
		res.Runs = true
		nr.events.add("config", "info", fmt.Sprintf("bundle %s installed (%s)", module+bundle.Extension, res.Checksum))
		a.markApplied(nr, module, res.Checksum)
	default:
		a.markApplied(nil, module, res.Checksum)
	}
	res.Text = fmt.Sprintf("module %s %s on node %s (%s)", module, res.Action, a.opts.Node, res.Checksum)
	if !mod.HasNode(a.opts.Node) {
		res.Text += "; it does not run on this node"
	}
	a.logger.Info("module bundle installed", "module", module, "action", res.Action, "checksum", res.Checksum)
	return res, nil
}

// addRunner registers a new runner and starts it when the agent runs.
func (a *Agent) addRunner(r *moduleRunner) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.admin.closed {
		return httpapi.Conflict("node %s is shutting down", a.opts.Node)
	}
	a.runners[r.mod.Name] = r
	a.names = append(a.names, r.mod.Name)
	sort.Strings(a.names)
	if a.admin.runCtx != nil {
		a.startRunnerLocked(r)
	}
	return nil
}

// markApplied records the checksum a module now runs, and clears a
// "changed on disk" report.
func (a *Agent) markApplied(r *moduleRunner, module, sum string) {
	a.mu.Lock()
	a.admin.applied[module] = sum
	delete(a.admin.reported, module)
	a.mu.Unlock()
	if r != nil {
		r.mu.Lock()
		r.status.ConfigChanged = false
		r.mu.Unlock()
	}
}

func listChanges(cs []configChange, restartOnly bool) string {
	var b strings.Builder
	for _, c := range cs {
		if restartOnly && !c.Restart {
			continue
		}
		b.WriteString("\n  ")
		b.WriteString(c.String())
	}
	return b.String()
}

func changeStrings(cs []configChange) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.String())
	}
	return out
}

func appliedText(cs []configChange) string {
	if len(cs) == 0 {
		return ", no change to apply"
	}
	return ", applied live: " + strings.Join(changeStrings(cs), "; ")
}

// syncDir makes renames in dir durable; a failure only weakens that.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// UninstallModule implements httpapi.AdminBackend.
func (a *Agent) UninstallModule(ctx context.Context, module string) (api.AdminResult, error) {
	res := api.AdminResult{Module: module, Node: a.opts.Node, Action: "uninstalled"}
	if err := a.adminEnabled(); err != nil {
		return res, err
	}
	a.admin.mu.Lock()
	defer a.admin.mu.Unlock()
	final := filepath.Join(a.modulesDir(), module)
	_, statErr := os.Lstat(final)
	r, running := a.lookup(module)
	if !running && errors.Is(statErr, os.ErrNotExist) {
		return res, httpapi.NotFound("module %s is not installed on node %s", module, a.opts.Node)
	}
	if running {
		if st := r.snapshot(false).State; st != core.Stop.String() {
			return res, httpapi.Conflict("module %s is %s on node %s: stop it first (halo stop %s on this node), then uninstall", module, st, a.opts.Node, module)
		}
		a.mu.Lock()
		h := a.admin.handles[module]
		delete(a.runners, module)
		delete(a.admin.handles, module)
		a.names = slices.DeleteFunc(a.names, func(n string) bool { return n == module })
		a.mu.Unlock()
		if h != nil {
			h.cancel()
			select {
			case <-h.done:
			case <-ctx.Done():
				return res, fmt.Errorf("uninstall %s: the module's loop did not end: %w", module, ctx.Err())
			}
		} else {
			r.discard()
		}
	}
	if statErr == nil {
		staging := filepath.Join(a.opts.ConfigDir, stagingDirName)
		if err := os.MkdirAll(staging, 0o750); err != nil {
			return res, fmt.Errorf("uninstall %s: %w", module, err)
		}
		tmp, err := os.MkdirTemp(staging, module+"-")
		if err != nil {
			return res, fmt.Errorf("uninstall %s: %w", module, err)
		}
		defer os.RemoveAll(tmp)
		// One rename: the module is there or gone, never half removed.
		if err := os.Rename(final, filepath.Join(tmp, module)); err != nil {
			return res, fmt.Errorf("uninstall %s: %w", module, err)
		}
		syncDir(a.modulesDir())
	}
	a.mu.Lock()
	delete(a.admin.applied, module)
	delete(a.admin.reported, module)
	a.mu.Unlock()
	if running {
		a.metrics.RemoveModule(module)
	}
	res.Text = fmt.Sprintf("module %s uninstalled from node %s", module, a.opts.Node)
	if running {
		// Kept: a mirror's data generation must survive a reinstall, or
		// the node could no longer tell whether its data is the newest.
		res.Text += fmt.Sprintf(" (its state and event log stay in %s: installed again, it resumes from them, stopped)", filepath.Join(a.opts.DataDir, module))
	}
	a.logger.Info("module uninstalled", "module", module)
	return res, nil
}

// Reload implements httpapi.AdminBackend.
func (a *Agent) Reload(ctx context.Context, module string) (api.AdminResult, error) {
	res := api.AdminResult{Module: module, Node: a.opts.Node, Action: "reloaded"}
	if err := a.adminEnabled(); err != nil {
		return res, err
	}
	a.admin.mu.Lock()
	defer a.admin.mu.Unlock()
	dir := filepath.Join(a.modulesDir(), module)
	sum, err := bundle.DirChecksum(dir)
	if err != nil {
		if _, running := a.lookup(module); !running {
			return res, httpapi.NotFound("module %s is not installed on node %s", module, a.opts.Node)
		}
		return res, httpapi.BadRequest("reload %s: %v", module, err)
	}
	res.Checksum = sum
	cfg, diags := a.loadConfig(module, "")
	if diags.HasErrors() {
		return res, diagError(diags, "", "")
	}
	mod := cfg.Module(module)
	if mod == nil {
		return res, httpapi.BadRequest("reload %s: %s does not define module %q", module, filepath.Join(dir, config.ModuleFileName), module)
	}
	r, running := a.lookup(module)
	if !running {
		if mod.HasNode(a.opts.Node) {
			return res, httpapi.Conflict("module %s now lists node %s but does not run there: a new module starts with the agent or with halo module install", module, a.opts.Node)
		}
		a.markApplied(nil, module, sum)
		res.Text = fmt.Sprintf("module %s validated on node %s (%s); it does not run here", module, a.opts.Node, sum)
		return res, nil
	}
	changes := diffModules(r.config(), mod)
	if !liveOnly(changes) {
		r.events.add("config", "warn", "reload refused, nothing applied: restart needed for"+strings.ReplaceAll(listChanges(changes, true), "\n  ", " | "))
		return res, httpapi.Conflict("reload of %s refused on node %s, nothing applied: these changes need the module stopped and started again:%s",
			module, a.opts.Node, listChanges(changes, true))
	}
	res.Runs = true
	if len(changes) > 0 {
		if err := r.reconfigure(ctx, mod); err != nil {
			return res, err
		}
	}
	res.Applied = changeStrings(changes)
	r.events.add("config", "info", fmt.Sprintf("configuration reloaded (%s)%s", sum, appliedText(changes)))
	a.markApplied(r, module, sum)
	res.Text = fmt.Sprintf("module %s reloaded on node %s (%s)", module, a.opts.Node, sum)
	if len(changes) == 0 {
		res.Text += ": no change to apply"
	}
	return res, nil
}

// InstalledModules implements httpapi.AdminBackend.
func (a *Agent) InstalledModules() ([]api.InstalledModule, error) {
	if err := a.adminEnabled(); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	entries, _ := os.ReadDir(a.modulesDir())
	for _, e := range entries {
		if e.IsDir() {
			names[e.Name()] = true
		}
	}
	for _, r := range a.moduleRunners() {
		names[r.mod.Name] = true
	}
	out := []api.InstalledModule{}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		im := api.InstalledModule{Module: n, Node: a.opts.Node}
		sum, err := bundle.DirChecksum(filepath.Join(a.modulesDir(), n))
		if err != nil {
			im.Error = err.Error()
		}
		im.Checksum = sum
		a.mu.RLock()
		im.Applied = a.admin.applied[n]
		a.mu.RUnlock()
		im.Changed = im.Applied != "" && im.Checksum != im.Applied
		if r, ok := a.lookup(n); ok {
			st := r.snapshot(false)
			im.Runs, im.State, im.Kind, im.Nodes = true, st.State, st.Kind, slices.Clone(r.mod.Nodes)
		} else if m, _ := config.LoadModule(filepath.Join(a.modulesDir(), n, config.ModuleFileName), a.opts.Cluster); m != nil {
			// What decodes is enough to name its nodes, valid or not.
			im.Kind, im.Nodes = string(m.Kind), m.Nodes
		}
		out = append(out, im)
	}
	return out, nil
}

// RecoverStaging finishes what an agent that died during an install or an
// uninstall left in <configDir>/.halo-staging, before the configuration is
// loaded: a module directory moved aside by an install that did not put
// the new one in place is moved back (the install did not happen); a
// module being uninstalled, or a bundle being validated, is removed.
func RecoverStaging(configDir string, logger hclog.Logger) {
	staging := filepath.Join(configDir, stagingDirName)
	entries, err := os.ReadDir(staging)
	if err != nil {
		return // none: nothing was in progress
	}
	for _, e := range entries {
		i := strings.LastIndex(e.Name(), "-")
		if !e.IsDir() || i <= 0 {
			continue
		}
		module := e.Name()[:i]
		prev := filepath.Join(staging, e.Name(), "previous")
		final := filepath.Join(configDir, config.ModulesDirName, module)
		if _, err := os.Stat(prev); err != nil {
			continue
		}
		if _, err := os.Lstat(final); !errors.Is(err, os.ErrNotExist) {
			continue // the new module made it into place
		}
		if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
			logger.Error("cannot restore a module directory an interrupted install moved aside", "module", module, "from", prev, "error", err)
			continue
		}
		if err := os.Rename(prev, final); err != nil {
			logger.Error("cannot restore a module directory an interrupted install moved aside", "module", module, "from", prev, "error", err)
			continue
		}
		logger.Warn("restored a module directory an interrupted install moved aside", "module", module)
	}
	if err := os.RemoveAll(staging); err != nil {
		logger.Warn("cannot clean the module staging directory", "dir", staging, "error", err)
	}
}
