// Package script is halo's built-in app plugin: it runs the module's
// scripts (start_prim, stop_prim, start_second, stop_second, start_both,
// stop_both, prestart, poststop, transition) from the module's scripts
// directory.
//
// A script gets its arguments (current state, next state, action, and
// "force" for the forced pass of a stop), the module's variables and
// HALO_* variables in its environment, and its own process group. A
// module need not provide every script: a missing one succeeds. A run that
// reaches its timeout gets SIGTERM, then SIGKILL kill_grace later, sent
// to its whole process group, and is reported as timed out.
package script

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/halo-ha/halo/sdk/app"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/schema"
)

// Version is the plugin's own version.
const Version = "1.0.0"

// Scripts are the script names halo's state machines run.
var Scripts = []string{"prestart", "start_prim", "stop_prim", "start_second", "stop_second", "start_both", "stop_both", "poststop", "transition"}

// scriptName keeps a script name inside the scripts directory.
var scriptName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

type config struct {
	Scripts   string        `hcl:"scripts"`
	KillGrace time.Duration `hcl:"kill_grace"`
}

type settings struct {
	dir       string
	killGrace time.Duration
	module    base.ModuleContext
}

// Plugin is one module's script runner.
type Plugin struct {
	mu  sync.RWMutex
	cfg *settings
}

var _ app.App = (*Plugin)(nil)

// New returns an unconfigured script runner.
func New() app.App { return &Plugin{} }

// Info names the plugin.
func (p *Plugin) Info() base.PluginInfo {
	return base.PluginInfo{Name: "script", Version: Version, Description: "runs the module's start/stop scripts with state arguments, in their own process group"}
}

// Schema declares the plugin's attributes.
func (p *Plugin) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "scripts", Type: schema.TypeString, Required: true, Description: "absolute path of the module's scripts directory"},
		{Name: "kill_grace", Type: schema.TypeDuration, Default: "5s", Description: "after a run's timeout, time between SIGTERM and SIGKILL to its process group"},
	}}
}

// Configure validates and applies a configuration. The directory must
// exist; individual scripts are looked up at each run, so a module may add
// one without a reload.
func (p *Plugin) Configure(_ context.Context, cfg *base.Config) error {
	var raw config
	if err := cfg.Decode(&raw); err != nil {
		return err
	}
	var errs []error
	if !filepath.IsAbs(raw.Scripts) {
		errs = append(errs, schema.Errorf("scripts", "want an absolute path, not %q", raw.Scripts))
	} else if st, err := os.Stat(raw.Scripts); err != nil {
		errs = append(errs, schema.Errorf("scripts", "%v", err))
	} else if !st.IsDir() {
		errs = append(errs, schema.Errorf("scripts", "%s is not a directory", raw.Scripts))
	}
	if raw.KillGrace < 0 {
		errs = append(errs, schema.Errorf("kill_grace", "must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	p.mu.Lock()
	p.cfg = &settings{dir: filepath.Clean(raw.Scripts), killGrace: raw.KillGrace, module: cfg.Module}
	p.mu.Unlock()
	return nil
}

// Run runs one script to its end.
func (p *Plugin) Run(ctx context.Context, run app.Run, out app.Output) (int, error) {
	p.mu.RLock()
	s := p.cfg
	p.mu.RUnlock()
	if s == nil {
		return -1, errors.New("script: not configured")
	}
	if !scriptName.MatchString(run.Script) {
		return -1, fmt.Errorf("script name %q: want lower case letters, digits and '_'", run.Script)
	}
	path := filepath.Join(s.dir, run.Script)
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Modules provide only the scripts they need.
		fmt.Fprintf(out.Stdout, "no %s script\n", run.Script)
		return 0, nil
	case err != nil:
		return -1, fmt.Errorf("%s script: %w", run.Script, err)
	case st.IsDir():
		return -1, fmt.Errorf("%s script %s is a directory", run.Script, path)
	case st.Mode().Perm()&0o111 == 0:
		return -1, fmt.Errorf("%s script %s is not executable (mode %04o): chmod +x it", run.Script, path, st.Mode().Perm())
	}

	args := run.Args.Slice()
	if run.Force {
		args = append(args, "force")
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = s.dir
	cmd.Env = environment(os.Environ(), s, run)

	// RunCommand sends SIGTERM when stopping closes and SIGKILL when
	// killCtx ends. A timeout closes stopping at once and ends killCtx
	// kill_grace later; any other end of ctx (a forced stop, the host
	// gone) kills at once.
	stopping := make(chan struct{})
	stop := sync.OnceFunc(func() { close(stopping) })
	killCtx, kill := context.WithCancel(context.WithoutCancel(ctx))
	defer kill()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-run.Stopping:
			stop()
		case <-ctx.Done():
		case <-done:
			return
		}
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		if run.Timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) && s.killGrace > 0 {
			stop()
			t := time.NewTimer(s.killGrace)
			defer t.Stop()
			select {
			case <-t.C:
			case <-done:
				return
			}
		}
		kill()
	}()
	graceful := run
	graceful.Stopping = stopping
	return app.RunCommand(killCtx, graceful, out, cmd)
}

// reservedEnv are variables of the plugin's own environment a script must
// not inherit: go-plugin's handshake settings.
func reserved(name string) bool {
	return strings.HasPrefix(name, "PLUGIN_") || name == base.Handshake.MagicCookieKey || name == base.LogLevelEnv
}

// environment is the plugin's environment without go-plugin's variables,
// then halo's HALO_* variables, then the module's variables (run.Env).
func environment(inherited []string, s *settings, run app.Run) []string {
	env := make(map[string]string)
	for _, kv := range inherited {
		k, v, _ := strings.Cut(kv, "=")
		if !reserved(k) {
			env[k] = v
		}
	}
	force := "0"
	if run.Force {
		force = "1"
	}
	for k, v := range map[string]string{
		"HALO_MODULE":      s.module.Module,
		"HALO_NODE":        s.module.Node,
		"HALO_STATE_DIR":   s.module.StateDir,
		"HALO_SCRIPTS_DIR": s.dir,
		"HALO_SCRIPT":      run.Script,
		"HALO_STATE":       run.Args.Current,
		"HALO_NEXT_STATE":  run.Args.Next,
		"HALO_ACTION":      run.Args.Action,
		"HALO_FORCE":       force,
	} {
		env[k] = v
	}
	for k, v := range run.Env {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}
