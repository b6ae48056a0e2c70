// Package harness runs real halo binaries for integration tests: it builds
// (or finds) bin/halo and bin/plugins/*, lays out a node's configuration,
// data and plugin directories, starts `halo agent`, and gives the test the
// shared API client and the CLI.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/api"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Bin returns the directory holding halo and plugins/: $HALO_BIN when set
// (make test builds first and sets it), otherwise a fresh build.
func Bin(t testing.TB) string {
	t.Helper()
	dir, err := FindBin()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// FindBin is Bin for code that runs outside a test (the demo, benchmarks):
// $HALO_BIN when set, otherwise a fresh build into a temporary directory,
// made once per process.
func FindBin() (string, error) {
	buildOnce.Do(func() {
		if d := os.Getenv("HALO_BIN"); d != "" {
			binDir = d
			return
		}
		dir, err := os.MkdirTemp("", "halo-bin-")
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("make", "-C", RepoRoot(), "build", "BIN="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("make build: %v\n%s", err, out)
			return
		}
		binDir = dir
	})
	return binDir, buildErr
}

// Node is one node's directories and its running agent.
type Node struct {
	Name      string
	ConfigDir string
	DataDir   string
	PluginDir string
	Socket    string
	Bin       string
	// Wrap, when set, prefixes the agent's command (e.g. to enter a
	// network namespace).
	Wrap []string

	t      testing.TB
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *bytes.Buffer
	mu     sync.Mutex
}

// NewNode lays out a node under dir: <dir>/etc (config), <dir>/data.
func NewNode(t testing.TB, dir, name string) *Node {
	t.Helper()
	bin := Bin(t)
	n := &Node{
		Name: name, ConfigDir: filepath.Join(dir, "etc"), DataDir: filepath.Join(dir, "data"),
		PluginDir: filepath.Join(bin, "plugins"), Bin: bin, t: t, stderr: &bytes.Buffer{},
	}
	n.Socket = filepath.Join(n.DataDir, "halo.sock")
	for _, d := range []string{n.ConfigDir, n.DataDir, filepath.Join(n.ConfigDir, "modules")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// WriteFile writes a file under the node's config dir (mode 0755 for
// scripts, 0644 otherwise).
func (n *Node) WriteFile(rel, content string, mode os.FileMode) {
	n.t.Helper()
	p := filepath.Join(n.ConfigDir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		n.t.Fatal(err)
	}
}

// Env is the environment the agent and CLI run with.
func (n *Node) Env() []string {
	return append(os.Environ(),
		"HALO_CONFIG_DIR="+n.ConfigDir, "HALO_DATA_DIR="+n.DataDir,
		"HALO_PLUGIN_DIR="+n.PluginDir, "HALO_NODE="+n.Name, "HALO_SOCKET="+n.Socket)
}

// Start runs `halo agent` and waits for its API.
func (n *Node) Start() {
	n.t.Helper()
	args := append(append([]string{}, n.Wrap...), filepath.Join(n.Bin, "halo"), "agent", "--log-level", "debug")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = n.Env()
	cmd.Stdout = n.stderrWriter()
	cmd.Stderr = n.stderrWriter()
	// Its own process group: the test ends the agent and its plugins by
	// this PID, never by name.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(n.done) }()
	n.t.Cleanup(func() {
		n.Stop()
		if n.t.Failed() {
			n.t.Logf("agent %s output:\n%s", n.Name, n.Output())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		if _, err := n.Client().Version(ctx); err == nil {
			return
		}
		select {
		case <-n.done:
			n.t.Fatalf("agent %s exited at start:\n%s", n.Name, n.Output())
		case <-ctx.Done():
			n.t.Fatalf("agent %s API did not come up:\n%s", n.Name, n.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

type lockedWriter struct{ n *Node }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	return w.n.stderr.Write(p)
}

func (n *Node) stderrWriter() lockedWriter { return lockedWriter{n} }

// Output is what the agent printed so far.
func (n *Node) Output() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stderr.String()
}

// Stop ends the agent with SIGTERM (SIGKILL after 10 s) and waits.
func (n *Node) Stop() {
	if n.cmd == nil {
		return
	}
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.done
	}
}

// Client is the shared API client on the node's socket.
func (n *Node) Client() *api.Client { return api.NewUnixClient(n.Socket) }

// CLI runs `halo args...` against this node and returns its output and
// exit code.
func (n *Node) CLI(args ...string) (string, int) {
	n.t.Helper()
	cmd := exec.Command(filepath.Join(n.Bin, "halo"), args...)
	cmd.Env = n.Env()
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			n.t.Fatalf("halo %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}
