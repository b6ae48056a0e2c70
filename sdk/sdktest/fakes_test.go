package sdktest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/halo-ha/halo/sdk/app"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/schema"
	"github.com/halo-ha/halo/sdk/vip"
)

// fakeChecker is up while its file exists. Its flaws are switched on one
// at a time to prove the conformance suite notices them.
type fakeChecker struct {
	ignoreCtx   bool // sleeps through the deadline
	printStdout bool // writes to stdout
	acceptAll   bool // never rejects a configuration
	version     string

	mu   sync.Mutex
	path string
}

var _ checker.Checker = (*fakeChecker)(nil)

func (c *fakeChecker) Info() base.PluginInfo {
	v := c.version
	if v == "" {
		v = "0.1.0"
	}
	return base.PluginInfo{Name: "fake", Version: v, Description: "up while a file exists"}
}

func (c *fakeChecker) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "path", Type: schema.TypeString, Required: true},
	}}
}

func (c *fakeChecker) Configure(_ context.Context, cfg *base.Config) error {
	var conf struct {
		Path string `hcl:"path"`
	}
	if err := cfg.Decode(&conf); err != nil {
		return err
	}
	if !c.acceptAll && !filepath.IsAbs(conf.Path) {
		return schema.Errorf("path", "must be absolute, not %q", conf.Path)
	}
	c.mu.Lock()
	c.path = conf.Path
	c.mu.Unlock()
	return nil
}

func (c *fakeChecker) Check(ctx context.Context) (checker.Result, error) {
	if c.printStdout {
		fmt.Println("checking")
	}
	if c.ignoreCtx {
		time.Sleep(600 * time.Millisecond) // past any deadline + slack the suite allows
	}
	if err := ctx.Err(); err != nil {
		return checker.Result{}, err
	}
	c.mu.Lock()
	path := c.path
	c.mu.Unlock()
	if _, err := os.Stat(path); err != nil {
		return checker.Down("%v", err), nil
	}
	return checker.Up("%s exists", path), nil
}

// fakeVIP keeps its "address" in memory.
type fakeVIP struct {
	ignoreCtx bool

	mu       sync.Mutex
	address  string
	present  bool
	announce int
}

var _ vip.VIP = (*fakeVIP)(nil)

func (v *fakeVIP) Info() base.PluginInfo { return base.PluginInfo{Name: "fakevip", Version: "1.0.0"} }

func (v *fakeVIP) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{{Name: "address", Type: schema.TypeString, Required: true}}}
}

func (v *fakeVIP) Configure(_ context.Context, cfg *base.Config) error {
	var conf struct {
		Address string `hcl:"address"`
	}
	if err := cfg.Decode(&conf); err != nil {
		return err
	}
	if conf.Address == "" {
		return schema.Errorf("address", "must not be empty")
	}
	v.mu.Lock()
	v.address = conf.Address
	v.mu.Unlock()
	return nil
}

func (v *fakeVIP) wait(ctx context.Context) error {
	if v.ignoreCtx {
		time.Sleep(600 * time.Millisecond) // past any deadline + slack the suite allows
	}
	return ctx.Err()
}

func (v *fakeVIP) Acquire(ctx context.Context) error {
	if err := v.wait(ctx); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.present = true
	return nil
}

func (v *fakeVIP) Release(ctx context.Context, _ vip.ReleaseOptions) error {
	if err := v.wait(ctx); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.present = false
	return nil
}

func (v *fakeVIP) Status(ctx context.Context) (vip.Status, error) {
	if err := v.wait(ctx); err != nil {
		return vip.Status{}, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return vip.Status{Present: v.present, InterfaceUp: true, Message: v.address}, nil
}

func (v *fakeVIP) Announce(ctx context.Context) error {
	if err := v.wait(ctx); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.present {
		return errors.New("cannot announce an absent address")
	}
	v.announce++
	return nil
}

// fakeApp runs <dir>/<script> with /bin/sh through app.RunCommand, as the
// built-in script plugin will.
type fakeApp struct {
	ignoreStop bool // drops graceful stops

	mu  sync.Mutex
	dir string
}

var _ app.App = (*fakeApp)(nil)

func (a *fakeApp) Info() base.PluginInfo { return base.PluginInfo{Name: "fakeapp", Version: "1.0.0"} }

func (a *fakeApp) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{{Name: "dir", Type: schema.TypeString, Required: true}}}
}

func (a *fakeApp) Configure(_ context.Context, cfg *base.Config) error {
	var conf struct {
		Dir string `hcl:"dir"`
	}
	if err := cfg.Decode(&conf); err != nil {
		return err
	}
	if fi, err := os.Stat(conf.Dir); err != nil || !fi.IsDir() {
		return schema.Errorf("dir", "not a directory: %s", conf.Dir)
	}
	a.mu.Lock()
	a.dir = conf.Dir
	a.mu.Unlock()
	return nil
}

func (a *fakeApp) Run(ctx context.Context, run app.Run, out app.Output) (int, error) {
	a.mu.Lock()
	dir := a.dir
	a.mu.Unlock()
	cmd := exec.Command("/bin/sh", append([]string{filepath.Join(dir, run.Script)}, run.Args.Slice()...)...)
	for k, v := range run.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if a.ignoreStop {
		run.Stopping = nil
	}
	return app.RunCommand(ctx, run, out, cmd)
}

// appScripts writes the scripts AppConformance needs and returns the
// configuration pointing at them.
func appScripts(dir string) (string, AppScripts) {
	files := map[string]string{
		"ok":   "echo \"started $1 -> $2 ($3)\"\necho warning >&2\n",
		"fail": "echo failing\nexit 3\n",
		"hang": "sleep 3600 & wait\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			panic(err)
		}
	}
	return fmt.Sprintf("dir = %q\n", dir), AppScripts{Succeeds: "ok", Fails: "fail", Hangs: "hang"}
}
