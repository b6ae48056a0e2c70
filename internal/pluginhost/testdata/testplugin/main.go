// Command testplugin is the plugin the pluginhost tests launch. One binary
// plays several plugins: it behaves according to the name it was started
// under (the tests link it into a plugin directory under several names),
// and reports that name in Info, as a real plugin named after its binary
// does.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/halo-ha/halo/sdk/app"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/schema"
	"github.com/halo-ha/halo/sdk/vip"
)

var name = filepath.Base(os.Args[0])

func info() base.PluginInfo {
	return base.PluginInfo{Name: name, Version: "1.2.3", Description: "pluginhost test plugin"}
}

func main() {
	switch name {
	case "testcheck":
		checker.Serve(func() checker.Checker { return &testChecker{} })
	case "testapp", "script":
		app.Serve(func() app.App { return &testApp{} })
	case "testbadapp":
		// Declares a host-provided attribute with the wrong type.
		app.Serve(func() app.App { return &badApp{} })
	case "testvip":
		vip.Serve(func() vip.VIP { return &testVIP{} })
	case "testv99":
		// A plugin from a future SDK that speaks only API version 99.
		logger := hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true})
		sets, err := checker.VersionedPlugins(func() checker.Checker { return &testChecker{} }, logger)
		if err != nil {
			fatal(err)
		}
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig:  base.Handshake,
			VersionedPlugins: map[int]plugin.PluginSet{99: sets[base.APIVersion]},
			GRPCServer:       plugin.DefaultGRPCServer,
			Logger:           logger,
		})
	case "testliar":
		// Installed as testliar, says it is someone else.
		checker.Serve(func() checker.Checker { return &liar{} })
	case "testfail":
		fatal(fmt.Errorf("cannot start: missing dependency"))
	default:
		fatal(fmt.Errorf("unknown test plugin name %q", name))
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	os.Exit(3)
}

// testChecker reports the status its configuration names, after an
// optional sleep that honours the call's context.
type testChecker struct {
	mu  sync.Mutex
	cfg checkConfig
}

type checkConfig struct {
	Port   int           `hcl:"port"`
	Host   string        `hcl:"host"`
	Result string        `hcl:"result"`
	Sleep  time.Duration `hcl:"sleep"`
	Tags   []string      `hcl:"tags"`
	Expect *struct {
		Status int `hcl:"status"`
	} `hcl:"expect"`
}

func (*testChecker) Info() base.PluginInfo { return info() }

func (*testChecker) Schema() *schema.Schema {
	return &schema.Schema{
		Attributes: []schema.Attribute{
			{Name: "port", Type: schema.TypeNumber, Required: true},
			{Name: "host", Type: schema.TypeString, Default: "localhost"},
			{Name: "result", Type: schema.TypeString, Default: "up"},
			{Name: "sleep", Type: schema.TypeDuration, Default: "0s"},
			{Name: "tags", Type: schema.TypeListOfString},
		},
		Blocks: []schema.Block{{
			Name: "expect",
			Body: schema.Schema{Attributes: []schema.Attribute{
				{Name: "status", Type: schema.TypeNumber, Required: true},
			}},
		}},
	}
}

func (c *testChecker) Configure(_ context.Context, cfg *base.Config) error {
	var conf checkConfig
	if err := cfg.Decode(&conf); err != nil {
		return err
	}
	var errs []error
	if conf.Port < 1 || conf.Port > 65535 {
		errs = append(errs, schema.Errorf("port", "%d is not a port number (1 to 65535)", conf.Port))
	}
	switch conf.Result {
	case "up", "down", "unknown", "error":
	default:
		errs = append(errs, schema.Errorf("result", "%q is not up, down, unknown or error", conf.Result))
	}
	if conf.Expect != nil && conf.Expect.Status >= 600 {
		errs = append(errs, schema.Errorf("expect.status", "%d is not an HTTP status", conf.Expect.Status))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	c.mu.Lock()
	c.cfg = conf
	c.mu.Unlock()
	cfg.Logger.Info("configured", "port", conf.Port, "state_dir", cfg.Module.StateDir)
	return nil
}

func (c *testChecker) Check(ctx context.Context) (checker.Result, error) {
	c.mu.Lock()
	conf := c.cfg
	c.mu.Unlock()
	if conf.Sleep > 0 {
		select {
		case <-time.After(conf.Sleep):
		case <-ctx.Done():
			return checker.Result{}, ctx.Err()
		}
	}
	switch conf.Result {
	case "down":
		return checker.Down("%s:%d refused", conf.Host, conf.Port), nil
	case "unknown":
		return checker.Unknown("cannot tell"), nil
	case "error":
		return checker.Result{}, fmt.Errorf("probe failed")
	}
	return checker.Up("%s:%d answered (pid %d)", conf.Host, conf.Port, os.Getpid()), nil
}

type liar struct{ testChecker }

func (*liar) Info() base.PluginInfo {
	return base.PluginInfo{Name: "someoneelse", Version: "1.0.0"}
}

// testApp runs <scripts>/<script> with the shell its configuration names.
type testApp struct {
	mu  sync.Mutex
	cfg appConfig
}

type appConfig struct {
	Scripts      string            `hcl:"scripts"`
	Env          map[string]string `hcl:"env"`
	StartTimeout time.Duration     `hcl:"start_timeout"`
	StopTimeout  time.Duration     `hcl:"stop_timeout"`
	Shell        string            `hcl:"shell"`
}

func (*testApp) Info() base.PluginInfo { return info() }

func (*testApp) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "scripts", Type: schema.TypeString, Required: true, Description: "provided by halo"},
		{Name: "env", Type: schema.TypeMapOfString},
		{Name: "start_timeout", Type: schema.TypeDuration},
		{Name: "stop_timeout", Type: schema.TypeDuration},
		{Name: "shell", Type: schema.TypeString, Default: "/bin/sh"},
	}}
}

func (a *testApp) Configure(_ context.Context, cfg *base.Config) error {
	var conf appConfig
	if err := cfg.Decode(&conf); err != nil {
		return err
	}
	var errs []error
	if st, err := os.Stat(conf.Scripts); err != nil || !st.IsDir() {
		errs = append(errs, schema.Errorf("scripts", "%s is not a directory", conf.Scripts))
	}
	if !filepath.IsAbs(conf.Shell) {
		errs = append(errs, schema.Errorf("shell", "%q is not an absolute path", conf.Shell))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	a.mu.Lock()
	a.cfg = conf
	a.mu.Unlock()
	return nil
}

func (a *testApp) Run(ctx context.Context, run app.Run, out app.Output) (int, error) {
	a.mu.Lock()
	conf := a.cfg
	a.mu.Unlock()
	args := append([]string{filepath.Join(conf.Scripts, run.Script)}, run.Args.Slice()...)
	if run.Force {
		args = append(args, "force")
	}
	cmd := exec.Command(conf.Shell, args...)
	cmd.Env = os.Environ()
	for k, v := range conf.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range run.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return app.RunCommand(ctx, run, out, cmd)
}

type badApp struct{ testApp }

func (*badApp) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{{Name: "scripts", Type: schema.TypeNumber}}}
}

// testVIP keeps its address in memory.
type testVIP struct {
	mu      sync.Mutex
	address string
	present bool
}

func (*testVIP) Info() base.PluginInfo { return info() }

func (*testVIP) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "address", Type: schema.TypeString},
		{Name: "table", Type: schema.TypeNumber, Default: 0},
	}}
}

func (v *testVIP) Configure(_ context.Context, cfg *base.Config) error {
	var conf struct {
		Address string `hcl:"address"`
		Table   int    `hcl:"table"`
	}
	if err := cfg.Decode(&conf); err != nil {
		return err
	}
	v.mu.Lock()
	v.address = conf.Address
	v.mu.Unlock()
	return nil
}

func (v *testVIP) Acquire(context.Context) error {
	v.mu.Lock()
	v.present = true
	v.mu.Unlock()
	return nil
}

func (v *testVIP) Release(context.Context, vip.ReleaseOptions) error {
	v.mu.Lock()
	v.present = false
	v.mu.Unlock()
	return nil
}

func (v *testVIP) Status(context.Context) (vip.Status, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return vip.Status{Present: v.present, InterfaceUp: true, Message: v.address}, nil
}

func (v *testVIP) Announce(context.Context) error { return nil }
