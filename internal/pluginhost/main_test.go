package pluginhost

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/internal/config"
)

// testPluginBin is testdata/testplugin, built once by TestMain. Tests link
// it into their plugin directories under the names of the plugins it
// plays (testcheck, testapp, testvip, testv99, testliar, testfail).
var testPluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pluginhost-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	testPluginBin = filepath.Join(dir, "testplugin")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	build := exec.Command(gobin, "build", "-o", testPluginBin, "./testdata/testplugin")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build test plugin:", err)
		os.RemoveAll(dir)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// pluginDir makes a plugin directory holding the test plugin under names.
func pluginDir(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		if err := os.Link(testPluginBin, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// logBuffer collects a host's log and copies it to the test log.
type logBuffer struct {
	t    *testing.T
	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if !b.done {
		b.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newHost starts a host on dir, closed at the end of the test.
func newHost(t *testing.T, dir string, opts Options) (*Host, *logBuffer) {
	t.Helper()
	logs := &logBuffer{t: t}
	t.Cleanup(func() {
		logs.mu.Lock()
		logs.done = true
		logs.mu.Unlock()
	})
	opts.Dir = dir
	if opts.Logger == nil {
		opts.Logger = hclog.New(&hclog.LoggerOptions{Name: "halo", Output: logs, Level: hclog.Info})
	}
	if opts.SocketDir == "" {
		opts.SocketDir = t.TempDir()
	}
	if opts.Node == "" {
		opts.Node = "node1"
	}
	h, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(h.Close)
	return h, logs
}

const testCluster = `cluster "test" {
  network "default" {}
  node "node1" {
    addresses = { default = "198.18.0.1" }
  }
}
`

// writeConfig writes a configuration directory with the test cluster and
// one module "web" whose file is moduleSrc, with executable start_both and
// stop_both scripts and the extra scripts given. It returns the module
// file's path.
func writeConfig(t *testing.T, moduleSrc string, scripts map[string]string) (confDir, moduleFile string) {
	t.Helper()
	confDir = t.TempDir()
	modDir := filepath.Join(confDir, "modules", "web")
	if err := os.MkdirAll(filepath.Join(modDir, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	all := map[string]string{"start_both": "exit 0\n", "stop_both": "exit 0\n"}
	for k, v := range scripts {
		all[k] = v
	}
	for name, body := range all {
		if err := os.WriteFile(filepath.Join(modDir, "scripts", name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(confDir, "cluster.hcl"), []byte(testCluster), 0o644); err != nil {
		t.Fatal(err)
	}
	moduleFile = filepath.Join(modDir, "module.hcl")
	if err := os.WriteFile(moduleFile, []byte(moduleSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	return confDir, moduleFile
}

// loadModule loads the configuration with the host validating plugin
// blocks, failing the test on any error.
func loadModule(t *testing.T, h *Host, confDir string) *config.Module {
	t.Helper()
	cfg, diags := config.Load(config.Options{Plugins: h}, confDir)
	if diags.HasErrors() {
		t.Fatalf("load: %s", diags.Error())
	}
	m := cfg.Module("web")
	if m == nil {
		t.Fatal("module web not loaded")
	}
	return m
}

// loadModuleNoPlugins loads the configuration without plugin schemas,
// so that no plugin is launched.
func loadModuleNoPlugins(t *testing.T, confDir string) *config.Module {
	t.Helper()
	cfg, diags := config.Load(config.Options{}, confDir)
	if diags.HasErrors() {
		t.Fatalf("load: %s", diags.Error())
	}
	return cfg.Module("web")
}

// children lists the processes whose parent is this test process, zombies
// included.
func children(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == me {
			out = append(out, fmt.Sprintf("%s %s (state %s)", e.Name(), stat[:i+1], fields[0]))
		}
	}
	return out
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
