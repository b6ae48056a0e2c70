// Package custom is the custom checker. It runs an executable:
//
//   - per check (the default): exit 0 is up, anything else down with the
//     last line the program printed; at the timeout its whole process
//     group is killed.
//   - as a reporter (reporter = true): the program is started once and
//     kept running (restarted with backoff when it exits). It reports the
//     checker's status itself with `halo resource set <module>
//     checker.<name> up|down`; Check only vouches that it lives. The agent
//     gives a value set that way precedence over the plugin's "up".
//
// The program gets HALO_MODULE, HALO_CHECKER, HALO_NODE, HALO_STATE_DIR
// and, when the plugin has it, HALO_SOCKET (the agent's API socket) in its
// environment, plus the configured env.
package custom

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/sdk/app"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/schema"
)

// Version is the plugin's own version.
const Version = "1.0.0"

// tailSize bounds the output kept to find a run's last line.
const tailSize = 4 << 10

// passThrough are variables of the plugin's environment handed on to the
// program: the agent sets them for the plugin so that `halo resource set`
// finds the agent.
var passThrough = []string{"HALO_SOCKET", "HALO_DATA_DIR", "HALO_CONFIG_DIR"}

type config struct {
	Command         string            `hcl:"command"`
	Args            []string          `hcl:"args"`
	Env             map[string]string `hcl:"env"`
	Timeout         time.Duration     `hcl:"timeout"`
	Reporter        bool              `hcl:"reporter"`
	RestartDelay    time.Duration     `hcl:"restart_delay"`
	MaxRestartDelay time.Duration     `hcl:"max_restart_delay"`
}

// Checker is the custom checker.
type Checker struct {
	mu       sync.Mutex
	cfg      *config
	env      []string
	logger   hclog.Logger
	reporter *reporter // running in reporter mode
}

var _ checker.Checker = (*Checker)(nil)

// New returns an unconfigured custom checker.
func New() checker.Checker { return &Checker{} }

// Info names the plugin.
func (c *Checker) Info() base.PluginInfo {
	return base.PluginInfo{Name: "custom", Version: Version, Description: "runs an executable: exit 0 = up; or keeps a reporter running that sets the status itself"}
}

// Schema declares the checker's attributes.
func (c *Checker) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "command", Type: schema.TypeString, Required: true, Description: "absolute path of the executable"},
		{Name: "args", Type: schema.TypeListOfString, Default: []string{}, Description: "its arguments"},
		{Name: "env", Type: schema.TypeMapOfString, Default: map[string]string{}, Description: "variables added to its environment (HALO_* is reserved)"},
		{Name: "timeout", Type: schema.TypeDuration, Default: "0s", Description: `per-check mode: kill the program's process group after this long; "0s" = at the check's own deadline`},
		{Name: "reporter", Type: schema.TypeBool, Default: false, Description: "keep the program running; it reports with `halo resource set`"},
		{Name: "restart_delay", Type: schema.TypeDuration, Default: "1s", Description: "reporter mode: first delay before restarting an exited program, doubled at each quick exit"},
		{Name: "max_restart_delay", Type: schema.TypeDuration, Default: "30s", Description: "reporter mode: the longest restart delay; a program that ran this long restarts after restart_delay again"},
	}}
}

// Configure validates and applies a configuration. In reporter mode it
// (re)starts the program when the configuration changed.
func (c *Checker) Configure(_ context.Context, cfg *base.Config) error {
	var raw config
	if err := cfg.Decode(&raw); err != nil {
		return err
	}
	var errs []error
	if !filepath.IsAbs(raw.Command) {
		errs = append(errs, schema.Errorf("command", "want an absolute path, not %q", raw.Command))
	} else if st, err := os.Stat(raw.Command); err != nil {
		errs = append(errs, schema.Errorf("command", "%v", err))
	} else if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		errs = append(errs, schema.Errorf("command", "%s is not an executable file", raw.Command))
	}
	for k := range raw.Env {
		if strings.HasPrefix(k, "HALO_") {
			errs = append(errs, schema.Errorf("env", "%s: HALO_* variables are set by halo", k))
		}
		if k == "" || strings.ContainsAny(k, "=\x00") {
			errs = append(errs, schema.Errorf("env", "%q is not a variable name", k))
		}
	}
	if raw.Timeout < 0 {
		errs = append(errs, schema.Errorf("timeout", "must not be negative"))
	}
	if raw.RestartDelay <= 0 {
		errs = append(errs, schema.Errorf("restart_delay", "must be positive"))
	}
	if raw.MaxRestartDelay < raw.RestartDelay {
		errs = append(errs, schema.Errorf("max_restart_delay", "%s is below restart_delay %s", raw.MaxRestartDelay, raw.RestartDelay))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	env := environment(os.Environ(), cfg.Module, raw.Env)

	c.mu.Lock()
	defer c.mu.Unlock()
	same := c.cfg != nil && sameConfig(c.cfg, &raw) && slices.Equal(c.env, env)
	c.cfg, c.env, c.logger = &raw, env, cfg.Logger
	if same && (c.reporter != nil) == raw.Reporter {
		return nil
	}
	if c.reporter != nil {
		c.reporter.stop()
		c.reporter = nil
	}
	if raw.Reporter {
		c.reporter = startReporter(&raw, env, cfg.Logger)
	}
	return nil
}

func sameConfig(a, b *config) bool {
	return a.Command == b.Command && slices.Equal(a.Args, b.Args) && a.Timeout == b.Timeout &&
		a.Reporter == b.Reporter && a.RestartDelay == b.RestartDelay && a.MaxRestartDelay == b.MaxRestartDelay
}

// environment is the plugin's environment less its own settings, with
// HALO_* describing the instance and the configured variables.
func environment(inherited []string, mod base.ModuleContext, extra map[string]string) []string {
	env := map[string]string{}
	for _, kv := range inherited {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "HALO_") && !slices.Contains(passThrough, k) || strings.HasPrefix(k, "PLUGIN_") {
			continue // go-plugin's and halo's settings for the plugin itself
		}
		env[k] = v
	}
	env["HALO_MODULE"] = mod.Module
	env["HALO_CHECKER"] = mod.Name
	env["HALO_NODE"] = mod.Node
	env["HALO_STATE_DIR"] = mod.StateDir
	for k, v := range extra {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// Check runs the program once, or reports on the reporter.
func (c *Checker) Check(ctx context.Context) (checker.Result, error) {
	c.mu.Lock()
	cfg, env, rep := c.cfg, c.env, c.reporter
	c.mu.Unlock()
	if cfg == nil {
		return checker.Result{}, errors.New("custom: not configured")
	}
	if rep != nil {
		if err := ctx.Err(); err != nil {
			return checker.Result{}, err
		}
		return rep.status(), nil
	}
	return runOnce(ctx, cfg, env)
}

// Close stops a reporter.
func (c *Checker) Close() error {
	c.mu.Lock()
	rep := c.reporter
	c.reporter = nil
	c.mu.Unlock()
	if rep != nil {
		rep.stop()
	}
	return nil
}

func runOnce(ctx context.Context, cfg *config, env []string) (checker.Result, error) {
	runCtx := ctx
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	cmd := exec.Command(cfg.Command, cfg.Args...)
	cmd.Env = env
	cmd.Dir = filepath.Dir(cfg.Command)
	var out tail
	// RunCommand gives the program its own process group and kills the
	// group when runCtx ends.
	code, err := app.RunCommand(runCtx, app.Run{Script: filepath.Base(cfg.Command)}, app.Output{Stdout: &out, Stderr: &out}, cmd)
	last := out.lastLine()
	switch {
	case ctx.Err() != nil:
		return checker.Result{}, ctx.Err()
	case runCtx.Err() != nil:
		return checker.Down("%s timed out after %s%s", filepath.Base(cfg.Command), cfg.Timeout, suffix(last)), nil
	case err != nil:
		return checker.Down("%v%s", err, suffix(last)), nil
	case code != 0:
		return checker.Down("exit status %d%s", code, suffix(last)), nil
	case last != "":
		return checker.Up("%s", last), nil
	default:
		return checker.Up("exit status 0"), nil
	}
}

func suffix(last string) string {
	if last == "" {
		return ""
	}
	return ": " + last
}

// tail keeps the end of a program's output.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailSize {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailSize:]...)
	}
	return len(p), nil
}

// lastLine is the last non-empty line, trimmed and cut to one line.
func (t *tail) lastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := bytes.Split(bytes.TrimSpace(t.buf), []byte("\n"))
	line := strings.TrimSpace(string(lines[len(lines)-1]))
	line = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, line)
	if len(line) > 200 {
		line = line[:200] + "..."
	}
	return line
}

// killGroup signals a process group, ignoring one that is gone already.
func killGroup(pgid int, sig syscall.Signal) {
	if pgid > 0 {
		_ = syscall.Kill(-pgid, sig)
	}
}
