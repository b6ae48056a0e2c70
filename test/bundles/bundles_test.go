// Package bundles tests module bundles end to end with the real binaries
// on the two-node mirror test bed: `halo module package`, `deploy` over
// each node's mutual-TLS API, `install` of a corrupted bundle and of a
// bundle with an invalid module file (refused, nothing changed), a
// configuration mismatch between nodes flagged by `halo module list`, an
// on-disk edit reported as changed and not applied, and `halo reload`
// applying a checker timing live while refusing a VIP change with its
// reason.
//
// Run as root: go test ./test/bundles/ (HALO_BIN=<dir> reuses a build).
package bundles

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/internal/bundle"
	"github.com/halo-ha/halo/sdk/api"
	"github.com/halo-ha/halo/test/harness"
	"github.com/halo-ha/halo/test/mirror/mirrorbed"
	"github.com/halo-ha/halo/test/testbed"
)

const waitLong = 30 * time.Second

// The module deployed: a mirror module without replication or VIP (the
// bed's own module "web" holds the bed's VIP), with a custom checker
// whose timing the test changes live.
const extraModule = `module "extra" {
  kind  = "mirror"
  id    = 9
  nodes = ["node1", "node2"]
  description = "bundle test"
  heartbeat {
    pulse    = "100ms"
    timeout  = "500ms"
    networks = ["default"]
  }
  app {
    start_timeout = "10s"
    stop_timeout  = "10s"
  }
  check "custom" "probe" {
    interval = "2s"
    timeout  = "1s"
    action   = "restart"
    command  = "/bin/true"
  }
}
`

const script = "#!/bin/sh\necho \"$HALO_SCRIPT $*\"\n"

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// hostCLI runs `halo args…` inside the node's network namespace (deploy
// and list reach the other node's TCP API there) with the node's paths.
func hostCLI(ctx context.Context, c *mirrorbed.Cluster, n *mirrorbed.Node, args ...string) (string, int) {
	cmd := n.Host.Command(ctx, filepath.Join(c.Opts.Bin, "halo"), args...)
	cmd.Env = append(os.Environ(), "HALO_SOCKET="+n.Socket, "HALO_DATA_DIR="+n.DataDir, "HALO_CONFIG_DIR="+n.ConfigDir, "HALO_NODE="+n.Name)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		return string(out) + err.Error(), -1
	}
	return string(out), 0
}

// localCLI runs `halo args…` against the node's agent socket.
func localCLI(t *testing.T, ctx context.Context, n *mirrorbed.Node, args ...string) (string, int) {
	t.Helper()
	out, code, err := n.CLI(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out, code
}

func writeModuleDir(t *testing.T, dir, src string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"start_prim", "stop_prim", "start_second", "stop_second"} {
		if err := os.WriteFile(filepath.Join(dir, "scripts", s), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "module.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("A module of the bundle test.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitState(t *testing.T, n *mirrorbed.Node, module, state string) api.ModuleStatus {
	t.Helper()
	m, err := n.Client().WaitState(ctxFor(t, waitLong), module, state, "")
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	return m
}

func waitEvent(t *testing.T, n *mirrorbed.Node, module, part string) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		evs, err := n.Client().Events(context.Background(), module, 0, 0)
		if err == nil {
			for _, e := range evs {
				if strings.Contains(e.Text, part) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no event %q in %s's log (last error %v)", n.Name, part, module, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func diskChecksum(t *testing.T, n *mirrorbed.Node) string {
	t.Helper()
	s, err := bundle.DirChecksum(filepath.Join(n.ConfigDir, "modules", "extra"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBundles(t *testing.T) {
	testbed.RequireRoot(t)
	start := time.Now()
	bed, _ := testbed.New(t, testbed.Options{Hosts: []string{"node1", "node2", "client"}, Networks: []string{"default"}})
	ctx := ctxFor(t, 2*time.Minute)
	c, err := mirrorbed.Deploy(ctx, bed, mirrorbed.Options{Bin: harness.Bin(t), Pulse: 100 * time.Millisecond, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	n1, n2 := c.Node("node1"), c.Node("node2")

	// package: validated against node1's cluster, written as extra.halo.
	src := filepath.Join(t.TempDir(), "extra")
	writeModuleDir(t, src, extraModule)
	out := filepath.Join(t.TempDir(), "extra.halo")
	if text, code := hostCLI(ctx, c, n1, "module", "package", src, "-o", out); code != 0 {
		t.Fatalf("halo module package: exit %d: %s", code, text)
	}
	good, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}

	// deploy from node1: each node installs it over its mutual-TLS API and
	// runs it; both WAIT for an administrator to pick the good data.
	text, code := hostCLI(ctx, c, n1, "module", "deploy", out)
	t.Logf("deploy:\n%s", text)
	if code != 0 || !strings.Contains(text, "node1: module extra installed on node node1") || !strings.Contains(text, "node2: module extra installed on node node2") {
		t.Fatalf("halo module deploy: exit %d: %s", code, text)
	}
	for _, n := range c.Nodes() {
		waitState(t, n, "extra", "WAIT")
	}
	if text, code := hostCLI(ctx, c, n1, "prim", "extra"); code != 0 {
		t.Fatalf("halo prim extra: %d %s", code, text)
	}
	waitState(t, n1, "extra", "PRIM")
	waitState(t, n2, "extra", "SECOND")
	sum := diskChecksum(t, n1)
	if diskChecksum(t, n2) != sum {
		t.Fatal("deployed module differs between nodes")
	}

	// A corrupted bundle: refused by the agent with the reason, nothing
	// changed on disk or in the running module.
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/2] ^= 0xff
	_, err = n1.Client().InstallBundle(ctx, "extra", corrupt)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != 400 || !strings.Contains(err.Error(), "corrupted bundle") {
		t.Fatalf("corrupted bundle: %v", err)
	}
	t.Logf("corrupted bundle refused: %v", err)
	bad := filepath.Join(t.TempDir(), "corrupt.halo")
	if err := os.WriteFile(bad, corrupt, 0o644); err != nil {
		t.Fatal(err)
	}
	if text, code := localCLI(t, ctx, n1, "module", "install", bad); code != 1 || !strings.Contains(text, "corrupted bundle") {
		t.Fatalf("halo module install of a corrupted bundle: exit %d: %s", code, text)
	}

	// A bundle whose module.hcl is invalid (packed without the CLI's
	// validation): refused with the file:line:col inside the bundle; the
	// running module is untouched.
	invalidDir := filepath.Join(t.TempDir(), "extra")
	writeModuleDir(t, invalidDir, strings.Replace(extraModule, `interval = "2s"`, `interval = "2 seconds"`, 1))
	ib, err := bundle.Pack(invalidDir, "extra")
	if err != nil {
		t.Fatal(err)
	}
	invalidFile := filepath.Join(t.TempDir(), "extra.halo")
	if err := os.WriteFile(invalidFile, ib, 0o644); err != nil {
		t.Fatal(err)
	}
	text, code = hostCLI(ctx, c, n1, "module", "deploy", invalidFile)
	t.Logf("deploy of an invalid module:\n%s", text)
	if code != 1 || !regexp.MustCompile(`node1: FAILED: .*\n.*extra\.halo/module\.hcl:16:\d+: error: Invalid duration`).MatchString(text) ||
		!strings.Contains(text, "node2: FAILED") {
		t.Fatalf("deploy of an invalid module: exit %d: %s", code, text)
	}
	for _, n := range c.Nodes() {
		if diskChecksum(t, n) != sum {
			t.Fatalf("%s: a refused bundle changed the installed module", n.Name)
		}
	}
	if m, _ := n1.Client().Module(ctx, "extra"); m.State != "PRIM" {
		t.Fatalf("node1 left PRIM after refused bundles: %+v", m)
	}

	// A configuration mismatch: node2 gets a new description (a live
	// change) through a local install; `halo module list` flags it.
	otherDir := filepath.Join(t.TempDir(), "extra")
	writeModuleDir(t, otherDir, strings.Replace(extraModule, `"bundle test"`, `"bundle test, edited"`, 1))
	ob, err := bundle.Pack(otherDir, "extra")
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(t.TempDir(), "extra.halo")
	if err := os.WriteFile(otherFile, ob, 0o644); err != nil {
		t.Fatal(err)
	}
	text, code = localCLI(t, ctx, n2, "module", "install", otherFile)
	if code != 0 || !strings.Contains(text, "module extra replaced on node node2") || !strings.Contains(text, "applied: description") {
		t.Fatalf("install on node2: exit %d: %s", code, text)
	}
	text, code = hostCLI(ctx, c, n1, "module", "list")
	t.Logf("module list:\n%s", text)
	if code != 0 || !strings.Contains(text, "MISMATCH extra: configuration differs between nodes") {
		t.Fatalf("halo module list did not flag the mismatch: exit %d: %s", code, text)
	}
	// (The bed's own module web differs too, rightly: mirrorbed writes
	// each node's paths into its env.)
	if !regexp.MustCompile(`extra\s+node1\s+PRIM\s+sha256:\w+`).MatchString(text) || !regexp.MustCompile(`extra\s+node2\s+SECOND\s+sha256:\w+`).MatchString(text) {
		t.Fatalf("halo module list does not show extra on both nodes: %s", text)
	}
	waitState(t, n2, "extra", "SECOND")

	// A module installed on one of its two nodes only: flagged missing on
	// the other. It cannot be uninstalled while it runs; stopped, it can.
	soloDir := filepath.Join(t.TempDir(), "solo")
	writeModuleDir(t, soloDir, strings.NewReplacer(`module "extra"`, `module "solo"`, "id    = 9", "id    = 10").Replace(extraModule))
	sb, err := bundle.Pack(soloDir, "solo")
	if err != nil {
		t.Fatal(err)
	}
	soloFile := filepath.Join(t.TempDir(), "solo.halo")
	if err := os.WriteFile(soloFile, sb, 0o644); err != nil {
		t.Fatal(err)
	}
	if text, code := localCLI(t, ctx, n1, "module", "install", soloFile); code != 0 || !strings.Contains(text, "module solo installed on node node1") {
		t.Fatalf("install solo on node1: exit %d: %s", code, text)
	}
	waitState(t, n1, "solo", "WAIT")
	text, code = hostCLI(ctx, c, n1, "module", "list")
	if code != 0 || !strings.Contains(text, "MISSING solo: not installed on node2") {
		t.Fatalf("halo module list did not flag solo missing on node2: exit %d: %s", code, text)
	}
	text, code = localCLI(t, ctx, n1, "module", "uninstall", "solo")
	if code != 1 || !strings.Contains(text, "stop it first (halo stop solo on this node)") {
		t.Fatalf("uninstall of a running module: exit %d: %s", code, text)
	}
	if text, code := localCLI(t, ctx, n1, "stop", "solo"); code != 0 {
		t.Fatalf("halo stop solo: %d %s", code, text)
	}
	waitState(t, n1, "solo", "STOP")
	if text, code := localCLI(t, ctx, n1, "module", "uninstall", "solo"); code != 0 || !strings.Contains(text, "module solo uninstalled from node node1") {
		t.Fatalf("uninstall of a stopped module: exit %d: %s", code, text)
	}
	if _, err := os.Stat(filepath.Join(n1.ConfigDir, "modules", "solo")); !os.IsNotExist(err) {
		t.Fatalf("solo still on disk: %v", err)
	}
	if _, err := n1.Client().Module(ctx, "solo"); !api.IsNotFound(err) {
		t.Fatalf("solo still served: %v", err)
	}
	// Installed again, it resumes from its state, kept by the uninstall:
	// stopped by the administrator. Started, it runs again: the first
	// runner released its heartbeat port and plugin instances.
	if text, code := localCLI(t, ctx, n1, "module", "install", soloFile); code != 0 {
		t.Fatalf("reinstall solo: exit %d: %s", code, text)
	}
	if m := waitState(t, n1, "solo", "STOP"); !strings.Contains(m.Reason, "stopped by the administrator") {
		t.Fatalf("reinstalled solo: %+v", m)
	}
	if text, code := localCLI(t, ctx, n1, "start", "solo"); code != 0 {
		t.Fatalf("halo start solo: %d %s", code, text)
	}
	waitState(t, n1, "solo", "WAIT")

	// An edit on node1's disk: reported, not applied.
	file := filepath.Join(n1.ConfigDir, "modules", "extra", "module.hcl")
	timed := strings.Replace(extraModule, `interval = "2s"`, `interval = "1s"`, 1)
	if err := os.WriteFile(file, []byte(timed), 0o644); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, n1, "extra", "configuration changed on disk, not applied")
	if m, _ := n1.Client().Module(ctx, "extra"); !m.ConfigChanged {
		t.Fatalf("status does not show the change: %+v", m)
	}
	text, _ = localCLI(t, ctx, n1, "module", "list", "--local")
	if !strings.Contains(text, "changed on disk, not applied") {
		t.Fatalf("module list --local: %s", text)
	}

	// reload applies the timing live: still PRIM, no script ran.
	runsBefore, err := n1.Client().Events(ctx, "extra", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	text, code = localCLI(t, ctx, n1, "reload", "extra")
	t.Logf("reload:\n%s", text)
	if code != 0 || !strings.Contains(text, "applied: check.probe.interval: 2s -> 1s") {
		t.Fatalf("halo reload: exit %d: %s", code, text)
	}
	m, _ := n1.Client().Module(ctx, "extra")
	if m.State != "PRIM" || m.ConfigChanged {
		t.Fatalf("after reload: %+v", m)
	}
	evs, _ := n1.Client().Events(ctx, "extra", runsBefore[len(runsBefore)-1].Seq, 0)
	for _, e := range evs {
		if e.Kind == "script" {
			t.Fatalf("a live reload ran a script: %s", e.Text)
		}
	}

	// A VIP added: refused with the reason, nothing applied.
	withVIP := strings.Replace(timed, "  app {", "  vip {\n    address = \"198.18.0.101/24\"\n    network = \"default\"\n  }\n  app {", 1)
	if err := os.WriteFile(file, []byte(strings.Replace(withVIP, `interval = "1s"`, `interval = "3s"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	text, code = localCLI(t, ctx, n1, "reload", "extra")
	t.Logf("reload of a VIP change:\n%s", text)
	if code != 1 || !strings.Contains(text, "vip: (none) -> ") || !strings.Contains(text, "the address is held by the running module") ||
		strings.Contains(text, "interval") {
		t.Fatalf("halo reload of a VIP change: exit %d: %s", code, text)
	}
	if m, _ := n1.Client().Module(ctx, "extra"); m.State != "PRIM" {
		t.Fatalf("after a refused reload: %+v", m)
	}
	t.Logf("bundle test took %s", time.Since(start).Round(100*time.Millisecond))
}
