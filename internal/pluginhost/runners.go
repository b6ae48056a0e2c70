package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/internal/agent"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/sdk/app"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
)

// Checker implements agent.Plugins: it decodes the check block's own
// settings with the plugin's schema, has the plugin accept them as
// instance "<module>/<check>", and returns the instance's runner. An
// invalid block is reported as hcl.Diagnostics (an error) located in the
// module file.
func (h *Host) Checker(ctx context.Context, mod *config.Module, c *config.Check) (agent.CheckerRunner, error) {
	ctx, cancel := h.withStartTimeout(ctx)
	defer cancel()
	p, s, err := h.started(ctx, base.KindChecker, c.Type)
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", c.Name, err)
	}
	value, diags := decodeBlock(s.schema, c.Config)
	if diags.HasErrors() {
		return nil, diags
	}
	instName := "checker." + c.Name
	dir, err := h.instanceStateDir(mod.Name, instName)
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", c.Name, err)
	}
	in := &instance{
		id:    mod.Name + "/" + c.Name,
		mod:   base.ModuleContext{Module: mod.Name, Node: h.opts.Node, StateDir: dir, Name: c.Name},
		value: value,
	}
	if err := h.configureNew(ctx, p, s, in); err != nil {
		var cerr *base.ConfigError
		if errors.As(err, &cerr) {
			return nil, rejection(s.schema, c.Config, cerr.Errors, c.Range, nil)
		}
		return nil, fmt.Errorf("check %s: %w", c.Name, err)
	}
	return &CheckerRunner{p: p, in: in}, nil
}

// configureNew configures a new instance and keeps it for replay. If the
// plugin died under the call, the instance is configured in its
// relaunched process.
func (h *Host) configureNew(ctx context.Context, p *proc, s *session, in *instance) error {
	err := p.configure(ctx, s, in)
	if err != nil && s.exited() {
		if s, err = p.session(ctx, true); err == nil {
			err = p.configure(ctx, s, in)
		}
	}
	if err == nil {
		p.register(in)
	}
	return err
}

func (h *Host) withStartTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, h.opts.StartTimeout+h.opts.CallTimeout)
}

// CheckerRunner runs one checker instance.
type CheckerRunner struct {
	p  *proc
	in *instance
}

var _ agent.CheckerRunner = (*CheckerRunner)(nil)

// Check runs the check once. It never waits past ctx's deadline (or
// CallTimeout when ctx has none); whatever keeps the plugin from
// answering is reported as unknown with the cause.
func (r *CheckerRunner) Check(ctx context.Context) (core.CheckStatus, string) {
	ctx, cancel := r.p.h.withCallTimeout(ctx)
	defer cancel()
	dl, _ := ctx.Deadline()
	budget := time.Until(dl)
	s, err := r.p.current()
	if err != nil {
		return core.CheckUnknown, err.Error()
	}
	res, err := s.checker.Check(ctx, r.in.id)
	if errors.Is(err, base.ErrUnknownInstance) {
		// The process was relaunched between its replay and our
		// registration, or lost the instance: configure it again.
		if err = r.p.configure(ctx, s, r.in); err == nil {
			res, err = s.checker.Check(ctx, r.in.id)
		} else if cerr := (*base.ConfigError)(nil); errors.As(err, &cerr) {
			return core.CheckUnknown, fmt.Sprintf("plugin %s rejects the check's configuration: %v", r.p.name, err)
		}
	}
	if err != nil {
		return core.CheckUnknown, r.p.callFailed(ctx, s, err, budget)
	}
	switch res.Status {
	case checker.StatusUp:
		return core.CheckUp, res.Message
	case checker.StatusDown:
		return core.CheckDown, res.Message
	default:
		return core.CheckUnknown, res.Message
	}
}

// Close forgets the instance, here and in the plugin (a check removed by
// a reload).
func (r *CheckerRunner) Close(ctx context.Context) error {
	return r.p.forget(ctx, r.in.id)
}

// App implements agent.Plugins: the runner of the module's app plugin
// (script by default), instance "<module>", configured with the plugin's
// own settings from the app block and the host-provided ones (scripts
// directory, env, timeouts) that the plugin declares.
func (h *Host) App(ctx context.Context, mod *config.Module) (agent.AppRunner, error) {
	ctx, cancel := h.withStartTimeout(ctx)
	defer cancel()
	name := mod.App.Plugin
	if name == "" {
		name = config.DefaultAppPlugin
	}
	p, s, err := h.started(ctx, base.KindApp, name)
	if err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	value, diags, incompatible := appValue(s, mod)
	if diags = append(diags, incompatible...); diags.HasErrors() {
		return nil, diags
	}
	dir, err := h.instanceStateDir(mod.Name, "app")
	if err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	in := &instance{
		id:    mod.Name,
		mod:   base.ModuleContext{Module: mod.Name, Node: h.opts.Node, StateDir: dir, Name: "app"},
		value: value,
	}
	if err := h.configureNew(ctx, p, s, in); err != nil {
		var cerr *base.ConfigError
		if errors.As(err, &cerr) {
			return nil, appRejection(s, mod, cerr)
		}
		return nil, fmt.Errorf("app: %w", err)
	}
	env := map[string]string{"HALO_MODULE": mod.Name, "HALO_NODE": h.opts.Node}
	for k, v := range mod.App.Env {
		env[k] = v
	}
	return &AppRunner{p: p, in: in, env: env}, nil
}

// appValue decodes the app block for the plugin: its own settings from
// the block, the host-provided ones from the module. Errors are either
// the block's (decoding) or the plugin's (a host-provided attribute
// declared with another type).
func appValue(s *session, mod *config.Module) (value cty.Value, decoding, incompatible hcl.Diagnostics) {
	own, diags := decodeBlock(withoutHostProvided(s.schema, base.KindApp), mod.App.Config)
	if diags.HasErrors() {
		return cty.NilVal, diags, nil
	}
	env := cty.MapValEmpty(cty.String)
	if len(mod.App.Env) > 0 {
		m := make(map[string]cty.Value, len(mod.App.Env))
		for k, v := range mod.App.Env {
			m[k] = cty.StringVal(v)
		}
		env = cty.MapVal(m)
	}
	provided := map[string]cty.Value{
		"env":           env,
		"start_timeout": cty.StringVal(mod.App.StartTimeout.String()),
		"stop_timeout":  cty.StringVal(mod.App.StopTimeout.String()),
	}
	if mod.App.Scripts != "" { // only the script plugin has a scripts directory
		provided["scripts"] = cty.StringVal(mod.App.Scripts)
	}
	value, err := withHostValues(s.schema, base.KindApp, own, provided)
	if err != nil {
		return cty.NilVal, diags, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Incompatible app plugin",
			Detail:   fmt.Sprintf("App plugin %s cannot be configured: %v.", s.info.Name, err),
			Subject:  mod.App.AttrRange("plugin").Ptr(),
		}}
	}
	return value, diags, nil
}

func appRejection(s *session, mod *config.Module, cerr *base.ConfigError) hcl.Diagnostics {
	own := withoutHostProvided(s.schema, base.KindApp)
	return rejection(own, mod.App.Config, cerr.Errors, mod.App.Range, func(path string) (hcl.Range, bool) {
		if _, ok := HostProvided[base.KindApp][path]; ok {
			return mod.App.AttrRange(path), true
		}
		return hcl.Range{}, false
	})
}

// AppRunner runs the module's scripts through its app plugin.
type AppRunner struct {
	p   *proc
	in  *instance
	env map[string]string
	seq atomic.Uint64
}

var _ agent.AppRunner = (*AppRunner)(nil)

// Run runs one script to its end. The plugin enforces the script's
// timeout and reports it; the call's deadline gives it CallTimeout more
// to do so. A run asked while the plugin is being relaunched waits for it
// within that deadline.
func (r *AppRunner) Run(ctx context.Context, sr agent.ScriptRun, output func(stream, line string)) (core.ScriptOutcome, string) {
	budget := sr.Timeout + r.p.h.opts.CallTimeout
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	if dl, ok := ctx.Deadline(); ok {
		budget = time.Until(dl)
	}
	s, err := r.p.session(ctx, true)
	if err != nil {
		return core.ScriptFailed, fmt.Sprintf("%s not run: %v", sr.Script, err)
	}
	run := app.Run{
		ID:      fmt.Sprintf("%s-%d", sr.Script, r.seq.Add(1)),
		Script:  sr.Script,
		Env:     r.env,
		Timeout: sr.Timeout,
		Force:   sr.Force,
	}
	args := append(append([]string(nil), sr.Args...), "", "", "")
	run.Args = app.Args{Current: args[0], Next: args[1], Action: args[2]}
	onLine := func(l app.Line) {
		if output != nil {
			output(l.Stream.String(), l.Text)
		}
	}
	exit, err := s.app.Run(ctx, r.in.id, run, onLine)
	if errors.Is(err, base.ErrUnknownInstance) {
		if err = r.p.configure(ctx, s, r.in); err == nil {
			exit, err = s.app.Run(ctx, r.in.id, run, onLine)
		}
	}
	if err != nil {
		return core.ScriptFailed, fmt.Sprintf("%s: %s", sr.Script, r.p.callFailed(ctx, s, err, budget))
	}
	switch exit.Outcome {
	case app.OutcomeOK:
		return core.ScriptOK, exit.Message
	case app.OutcomeTimeout:
		return core.ScriptTimedOut, exit.Message
	default:
		return core.ScriptFailed, exit.Message
	}
}

// Close forgets the module's app instance.
func (r *AppRunner) Close(ctx context.Context) error {
	return r.p.forget(ctx, r.in.id)
}

// Validate has the plugins judge a module's blocks as they would at
// start-up, without keeping anything: each check and the app block whose
// settings decode is configured as a throw-away instance and closed. It
// returns the plugins' rejections (and unavailable plugins), located in
// the module file. Decoding errors are not repeated: config.Load reports
// them when its Options.Plugins is this host.
func (h *Host) Validate(ctx context.Context, mod *config.Module) hcl.Diagnostics {
	var diags hcl.Diagnostics
	// Instances get a state directory, as at start-up, thrown away after.
	stateDir, err := os.MkdirTemp("", "halo-validate-")
	if err != nil {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot validate plugin settings",
			Detail: fmt.Sprintf("Create a temporary state directory: %v.", err), Subject: mod.Range.Ptr()}}
	}
	defer os.RemoveAll(stateDir)
	// try configures one block's instance: instName is its name in the
	// module, dirName its state directory's.
	try := func(kind base.Kind, name string, header hcl.Range, instName, dirName string,
		value func(*session) (cty.Value, bool), reject func(*session, *base.ConfigError) hcl.Diagnostics) {
		cctx, cancel := h.withStartTimeout(ctx)
		defer cancel()
		p, s, err := h.started(cctx, kind, name)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Plugin unavailable",
				Detail: fmt.Sprintf("Cannot check the settings with %s plugin %q: %v.", kind, name, err), Subject: header.Ptr()})
			return
		}
		v, ok := value(s)
		if !ok {
			return
		}
		dir := filepath.Join(stateDir, dirName)
		if err := os.Mkdir(dir, 0o700); err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot validate plugin settings",
				Detail: fmt.Sprintf("Create a temporary state directory: %v.", err), Subject: header.Ptr()})
			return
		}
		in := &instance{
			id:    "validate:" + mod.Name + "/" + dirName,
			mod:   base.ModuleContext{Module: mod.Name, Node: h.opts.Node, StateDir: dir, Name: instName},
			value: v,
		}
		err = p.configure(cctx, s, in)
		var cerr *base.ConfigError
		switch {
		case errors.As(err, &cerr):
			diags = append(diags, reject(s, cerr)...)
		case err != nil:
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Plugin unavailable",
				Detail: fmt.Sprintf("%s plugin %q could not check its settings: %v.", kind, name, err), Subject: header.Ptr()})
		}
		if err := p.forget(cctx, in.id); err != nil {
			h.logger.Warn("cannot close validation instance", "plugin", name, "instance", in.id, "error", err)
		}
	}
	for _, c := range mod.Checks {
		try(base.KindChecker, c.Type, c.Range, c.Name, "checker."+c.Name,
			func(s *session) (cty.Value, bool) {
				v, ds := decodeBlock(s.schema, c.Config)
				return v, !ds.HasErrors()
			},
			func(s *session, cerr *base.ConfigError) hcl.Diagnostics {
				return rejection(s.schema, c.Config, cerr.Errors, c.Range, nil)
			})
	}
	name := mod.App.Plugin
	if name == "" {
		name = config.DefaultAppPlugin
	}
	try(base.KindApp, name, mod.App.AttrRange("plugin"), "app", "app",
		func(s *session) (cty.Value, bool) {
			v, decoding, incompatible := appValue(s, mod)
			diags = append(diags, incompatible...)
			return v, !decoding.HasErrors() && !incompatible.HasErrors()
		},
		func(s *session, cerr *base.ConfigError) hcl.Diagnostics { return appRejection(s, mod, cerr) })
	return diags
}
