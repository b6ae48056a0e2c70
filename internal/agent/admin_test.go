package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/internal/bundle"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/sdk/api"
)

const diffCluster = `cluster "t" {
  network "default" {}
  network "backup" {}
  node "n1" { addresses = { default = "198.18.0.1", backup = "198.18.1.1" } }
  node "n2" { addresses = { default = "198.18.0.2", backup = "198.18.1.2" } }
}
`

const diffBase = `module "db" {
  kind  = "mirror"
  id    = 3
  nodes = ["n1", "n2"]
  description = "test"
  max_loop = 3
  heartbeat {
    networks = ["default"]
  }
  vip {
    address = "198.18.0.100/24"
    network = "default"
  }
  app {
    start_timeout = "20s"
    env = { A = "1" }
  }
  check "tcp" "port" {
    interval = "2s"
    timeout  = "1s"
    action   = "restart"
    port     = 5432
  }
}
`

// loadTestModule loads module text as <dir>/db/module.hcl with scripts.
func loadTestModule(t *testing.T, src string) *config.Module {
	t.Helper()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "cluster.hcl"), []byte(diffCluster), 0o644))
	md := filepath.Join(dir, "modules", "db")
	must(os.MkdirAll(filepath.Join(md, "scripts"), 0o755))
	for _, s := range []string{"start_prim", "stop_prim"} {
		must(os.WriteFile(filepath.Join(md, "scripts", s), []byte("#!/bin/sh\n"), 0o755))
	}
	must(os.WriteFile(filepath.Join(md, "module.hcl"), []byte(src), 0o644))
	cfg, diags := config.Load(config.Options{}, dir)
	if diags.HasErrors() {
		t.Fatalf("load: %v", diags)
	}
	return cfg.Module("db")
}

// Each edit of a module file is either applied live or refused as
// needing a restart, by field.
func TestDiffModules(t *testing.T) {
	base := loadTestModule(t, diffBase)
	cases := []struct {
		name        string
		from, to    string
		wantField   string
		wantRestart bool
	}{
		{"checker interval", `interval = "2s"`, `interval = "1s"`, "check.port.interval", false},
		{"checker timeout", `timeout  = "1s"`, `timeout  = "500ms"`, "check.port.timeout", false},
		{"checker action", `action   = "restart"`, `action   = "stopstart"`, "check.port.action", false},
		{"max_loop", `max_loop = 3`, `max_loop = 5`, "max_loop", false},
		{"loop_interval", `max_loop = 3`, "max_loop = 3\n  loop_interval = \"1h\"", "loop_interval", false},
		{"failover", `max_loop = 3`, "max_loop = 3\n  failover = false", "failover", false},
		{"description", `description = "test"`, `description = "other"`, "description", false},
		{"start timeout", `start_timeout = "20s"`, `start_timeout = "30s"`, "app.start_timeout", false},
		{"vip", `198.18.0.100/24`, `198.18.0.101/24`, "vip", true},
		{"nodes", `nodes = ["n1", "n2"]`, `nodes = ["n2", "n1"]`, "nodes", true},
		{"kind id", `id    = 3`, `id    = 4`, "id", true},
		{"heartbeat", `networks = ["default"]`, `networks = ["default", "backup"]`, "heartbeat", true},
		{"env", `A = "1"`, `A = "2"`, "app.env", true},
		{"checker settings", `port     = 5432`, `port     = 5433`, "check.port.settings", true},
		{"checker added", "  check \"tcp\" \"port\" {", "  check \"tcp\" \"other\" {\n    port = 1\n  }\n  check \"tcp\" \"port\" {", "check.other", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(diffBase, c.from) {
				t.Fatalf("%q not in the base module", c.from)
			}
			mod := loadTestModule(t, strings.Replace(diffBase, c.from, c.to, 1))
			changes := diffModules(base, mod)
			// A restart-requiring change may drag others along (the id
			// moves the default ports); a live one comes alone.
			if len(changes) == 0 || (!c.wantRestart && len(changes) != 1) {
				t.Fatalf("changes %v, want one on %s", changes, c.wantField)
			}
			if changes[0].Field != c.wantField || changes[0].Restart != c.wantRestart {
				t.Fatalf("change %+v, want field %s restart=%v", changes[0], c.wantField, c.wantRestart)
			}
			if liveOnly(changes) == c.wantRestart {
				t.Fatalf("liveOnly = %v", liveOnly(changes))
			}
		})
	}
	// The same text loaded from elsewhere is no change: locations and
	// absolute paths do not count.
	if cs := diffModules(base, loadTestModule(t, diffBase)); len(cs) != 0 {
		t.Fatalf("same module, changes %v", cs)
	}
}

// adminAgent runs an agent on a configuration directory holding the light
// module of startTestAgent, with administration enabled.
type adminAgent struct {
	dir    string
	c      *api.Client
	fp     *fakePlugins
	cancel func()
	done   chan error
}

func startAdminAgent(t *testing.T) *adminAgent {
	t.Helper()
	dir := t.TempDir()
	writeModule(t, dir, "svc", testLight)
	if err := os.WriteFile(filepath.Join(dir, "cluster.hcl"), []byte(testCluster), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, diags := config.Load(config.Options{}, dir)
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	fp := &fakePlugins{app: &fakeApp{}, checkers: map[string]*fakeChecker{}}
	data := filepath.Join(dir, "data")
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, Options{Node: "n1", Version: "test", Cluster: cfg.Cluster, Modules: cfg.Modules,
		DataDir: data, ConfigDir: dir, Plugins: fp, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	aa := &adminAgent{dir: dir, c: api.NewUnixClient(filepath.Join(data, "halo.sock")), fp: fp, cancel: cancel, done: make(chan error, 1)}
	go func() { aa.done <- a.Run(ctx) }()
	waitFor(t, "agent API", func() bool { _, err := aa.c.Version(ctx); return err == nil })
	t.Cleanup(func() {
		cancel()
		if err := <-aa.done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	return aa
}

func writeModule(t *testing.T, dir, name, src string) string {
	t.Helper()
	md := filepath.Join(dir, "modules", name)
	if err := os.MkdirAll(filepath.Join(md, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sc := range []string{"start_both", "stop_both"} {
		if err := os.WriteFile(filepath.Join(md, "scripts", sc), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(md, "module.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return md
}

// packModule writes a module directory outside the agent's and packs it.
func packModule(t *testing.T, name, src string) []byte {
	t.Helper()
	md := writeModule(t, t.TempDir(), name, src)
	b, err := bundle.Pack(md, name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func statusCode(err error) int {
	var se *api.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestAgentReloadAndWatch(t *testing.T) {
	aa := startAdminAgent(t)
	ctx := context.Background()
	c := aa.c
	if _, err := c.Command(ctx, "svc", api.CommandRequest{Command: "start"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitState(ctxT(t), "svc", "UP", "Ready"); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(aa.dir, "modules", "svc", "module.hcl")

	// An edit is reported, not applied.
	live := strings.Replace(strings.Replace(testLight, "max_loop      = 2", "max_loop      = 7", 1), `interval = "100ms"`, `interval = "200ms"`, 1)
	if err := os.WriteFile(file, []byte(live), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "changed on disk reported", func() bool {
		m, _ := c.Module(ctx, "svc")
		return m.ConfigChanged
	})
	evs, _ := c.Events(ctx, "svc", 0, 0)
	if !logHas(evs, "configuration changed on disk, not applied") {
		t.Fatalf("event log: %v", texts(evs))
	}
	if m, _ := c.Module(ctx, "svc"); m.Loop.Max != 2 {
		t.Fatalf("max_loop applied before reload: %+v", m.Loop)
	}
	list, err := c.InstalledModules(ctx)
	if err != nil || len(list) != 1 || !list[0].Changed || list[0].Checksum == list[0].Applied {
		t.Fatalf("list after edit: %+v, %v", list, err)
	}

	// reload applies it live: the module stays UP, nothing restarts.
	starts := aa.fp.app.count("start_both")
	res, err := c.Reload(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Applied, "|") != "max_loop: 2 -> 7|check.proc.interval: 100ms -> 200ms" {
		t.Fatalf("applied %q", res.Applied)
	}
	m, _ := c.Module(ctx, "svc")
	if m.Loop.Max != 7 || m.ConfigChanged || m.State != "UP" || aa.fp.app.count("start_both") != starts {
		t.Fatalf("after reload: %+v, starts %d -> %d", m, starts, aa.fp.app.count("start_both"))
	}

	// A change that needs a restart is refused with the field; nothing applied.
	bad := strings.Replace(live, "max_loop      = 7", "max_loop      = 9", 1)
	bad = strings.Replace(bad, "id    = 1", "id    = 2", 1)
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = c.Reload(ctx, "svc")
	if statusCode(err) != 409 || !strings.Contains(err.Error(), "id: 1 -> 2") {
		t.Fatalf("reload of an id change: %v", err)
	}
	if m, _ := c.Module(ctx, "svc"); m.Loop.Max != 7 {
		t.Fatalf("refused reload applied max_loop: %+v", m.Loop)
	}

	// An invalid file: the error has its location, nothing applied.
	if err := os.WriteFile(file, []byte(strings.Replace(live, "max_loop      = 7", "max_loop      = \"x\"", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = c.Reload(ctx, "svc")
	if statusCode(err) != 400 || !strings.Contains(err.Error(), "module.hcl:5:") {
		t.Fatalf("reload of an invalid file: %v", err)
	}
}

func TestAgentBundles(t *testing.T) {
	aa := startAdminAgent(t)
	ctx := context.Background()
	c := aa.c
	svcDir := filepath.Join(aa.dir, "modules", "svc")
	before, err := bundle.DirChecksum(svcDir)
	if err != nil {
		t.Fatal(err)
	}

	// A corrupted bundle: refused, nothing changed.
	good := packModule(t, "svc", strings.Replace(testLight, "max_loop      = 2", "max_loop      = 4", 1))
	corrupt := corruptBundle(t, good)
	_, err = c.InstallBundle(ctx, "svc", corrupt)
	if statusCode(err) != 400 || !strings.Contains(err.Error(), "module.hcl: content does not match its checksum") {
		t.Fatalf("corrupted bundle: %v", err)
	}
	// An invalid module file: refused with the bundle location.
	invalid := packModule(t, "svc", strings.Replace(testLight, `interval = "100ms"`, `interval = "soon"`, 1))
	_, err = c.InstallBundle(ctx, "svc", invalid)
	if statusCode(err) != 400 || !strings.Contains(err.Error(), "svc.halo/module.hcl:8:16") {
		t.Fatalf("invalid bundle: %v", err)
	}
	if now, _ := bundle.DirChecksum(svcDir); now != before {
		t.Fatal("a refused bundle changed the installed module")
	}
	if entries, _ := os.ReadDir(filepath.Join(aa.dir, stagingDirName)); len(entries) != 0 {
		t.Fatalf("staging left behind: %v", entries)
	}

	// A valid one replaces it and applies live.
	res, err := c.InstallBundle(ctx, "svc", good)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != "replaced" || len(res.Applied) != 1 || !res.Runs {
		t.Fatalf("install: %+v", res)
	}
	if m, _ := c.Module(ctx, "svc"); m.Loop.Max != 4 {
		t.Fatalf("max_loop not applied: %+v", m.Loop)
	}
	installed, _ := bundle.DirChecksum(svcDir)
	if installed != res.Checksum {
		t.Fatalf("installed checksum %s, bundle %s", installed, res.Checksum)
	}

	// A valid bundle that changes what needs a restart: refused with the
	// field, nothing installed.
	_, err = c.InstallBundle(ctx, "svc", packModule(t, "svc", strings.Replace(testLight, "id    = 1", "id    = 5", 1)))
	if statusCode(err) != 409 || !strings.Contains(err.Error(), "id: 1 -> 5") || !strings.Contains(err.Error(), "nothing was installed") {
		t.Fatalf("restart-requiring bundle: %v", err)
	}
	if now, _ := bundle.DirChecksum(svcDir); now != installed {
		t.Fatal("a refused bundle changed the installed module")
	}

	// A new module starts running; it cannot be uninstalled while UP.
	other := strings.Replace(strings.Replace(testLight, `module "svc"`, `module "other"`, 1), "id    = 1", "id    = 2", 1)
	res, err = c.InstallBundle(ctx, "other", packModule(t, "other", other))
	if err != nil || res.Action != "installed" || !res.Runs {
		t.Fatalf("install other: %+v, %v", res, err)
	}
	if _, err := c.Command(ctx, "other", api.CommandRequest{Command: "start"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitState(ctxT(t), "other", "UP", "Ready"); err != nil {
		t.Fatal(err)
	}
	list, err := c.InstalledModules(ctx)
	if err != nil || len(list) != 2 || list[0].Module != "other" || !list[0].Runs || list[0].Checksum != list[0].Applied {
		t.Fatalf("list: %+v, %v", list, err)
	}
	_, err = c.UninstallModule(ctx, "other")
	if statusCode(err) != 409 || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("uninstall while UP: %v", err)
	}
	if _, err := c.Command(ctx, "other", api.CommandRequest{Command: "stop"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitState(ctxT(t), "other", "STOP", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UninstallModule(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Module(ctx, "other"); !api.IsNotFound(err) {
		t.Fatalf("module still served after uninstall: %v", err)
	}
	if _, err := os.Stat(filepath.Join(aa.dir, "modules", "other")); !os.IsNotExist(err) {
		t.Fatalf("module directory still there: %v", err)
	}
	_, err = c.UninstallModule(ctx, "other")
	if statusCode(err) != 404 {
		t.Fatalf("second uninstall: %v", err)
	}
}

// corruptBundle flips one byte of module.hcl's content inside a valid
// bundle, keeping the gzip and tar layers and the manifest as they were.
func corruptBundle(t *testing.T, b []byte) []byte {
	t.Helper()
	bd, err := bundle.Read(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	mb, err := json.Marshal(bd.Manifest) // hashes of the good content
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	put := func(name string, mode int64, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	put(bundle.ManifestName, 0o644, mb)
	for _, f := range bd.Manifest.Files {
		data, mode := f.Data, int64(0o644)
		if f.Exec {
			mode = 0o755
		}
		if f.Path == bundle.ModuleFile {
			data = bytes.Clone(data)
			data[len(data)/2] ^= 0x01
		}
		put(f.Path, mode, data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// An install interrupted after moving the installed module aside: the
// next start puts it back; an interrupted uninstall stays uninstalled.
func TestRecoverStaging(t *testing.T) {
	dir := t.TempDir()
	staging := filepath.Join(dir, stagingDirName)
	prev := writeModule(t, filepath.Join(staging, "svc-123"), "previous", testLight)
	// writeModule made <staging>/svc-123/modules/previous: move it to
	// where InstallBundle puts the directory it moves aside.
	if err := os.Rename(prev, filepath.Join(staging, "svc-123", "previous")); err != nil {
		t.Fatal(err)
	}
	writeModule(t, filepath.Join(staging, "gone-456"), "gone", testLight) // uninstalled
	RecoverStaging(dir, hclog.NewNullLogger())
	if _, err := os.Stat(filepath.Join(dir, "modules", "svc", "module.hcl")); err != nil {
		t.Fatalf("module moved aside not restored: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "modules", "gone")); !os.IsNotExist(err) {
		t.Fatalf("uninstalled module came back: %v", err)
	}
	if _, err := os.Stat(staging); !os.IsNotExist(err) {
		t.Fatalf("staging left: %v", err)
	}
	// A module already in place (the install completed) is kept as is.
	staging2 := filepath.Join(staging, "svc-789")
	prev = writeModule(t, staging2, "previous", "old")
	if err := os.Rename(prev, filepath.Join(staging2, "previous")); err != nil {
		t.Fatal(err)
	}
	RecoverStaging(dir, hclog.NewNullLogger())
	if b, _ := os.ReadFile(filepath.Join(dir, "modules", "svc", "module.hcl")); string(b) != testLight {
		t.Fatalf("completed install overwritten by the previous module: %q", b)
	}
}
