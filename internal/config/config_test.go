package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/halo-ha/halo/core"
)

// mustLoad loads paths against the test cluster and fails on any
// diagnostic, warnings included: good files are meant to be clean.
func mustLoad(t *testing.T, paths ...string) *Config {
	t.Helper()
	cfg, diags := Load(Options{ClusterFile: testClusterHCL}, paths...)
	if len(diags) > 0 {
		var b strings.Builder
		_ = WriteDiagnostics(&b, diags)
		t.Fatalf("unexpected diagnostics:\n%s", b.String())
	}
	return cfg
}

func abs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestClusterValues(t *testing.T) {
	c, diags := LoadCluster(testClusterHCL)
	if diags.HasErrors() || c == nil {
		t.Fatalf("load: %v", diags)
	}
	if c.Name != "test" || c.APIPort != DefaultAPIPort || c.HealthPort != DefaultHealthPort {
		t.Errorf("cluster = %q api %d health %d", c.Name, c.APIPort, c.HealthPort)
	}
	if got := c.NetworkNames(); !reflect.DeepEqual(got, []string{"default", "replication"}) {
		t.Errorf("networks = %v", got)
	}
	if got := c.NodeNames(); !reflect.DeepEqual(got, []string{"node1", "node2", "node3"}) {
		t.Errorf("nodes = %v", got)
	}
	if got := c.Node("node2").Addresses["replication"]; got != netip.MustParseAddr("198.18.1.2") {
		t.Errorf("node2 replication address = %v", got)
	}
	if _, ok := c.Node("node3").Addresses["replication"]; ok {
		t.Error("node3 has a replication address it was not given")
	}
	if r := c.Node("node2").AddressRanges["default"]; r.Start.Line != 10 || r.Start.Column != 29 {
		t.Errorf("node2 default address range = %v", r)
	}
	// TLS material defaults next to the cluster file.
	dir := abs(t, "testdata")
	if c.TLS.CAFile != filepath.Join(dir, DefaultCAFile) || c.TLS.CertFile != filepath.Join(dir, DefaultCertFile) ||
		c.TLS.KeyFile != filepath.Join(dir, DefaultKeyFile) || c.KeyFile != filepath.Join(dir, DefaultClusterKeyFile) {
		t.Errorf("TLS = %+v, key %s", c.TLS, c.KeyFile)
	}
}

// TestModuleDefaults checks a module that sets little gets every default.
func TestModuleDefaults(t *testing.T) {
	cfg := mustLoad(t, "testdata/good/pg")
	m := cfg.Module("pg")
	if m == nil {
		t.Fatal("module pg not loaded")
	}
	if m.Kind != KindMirror || m.ID != 12 || !reflect.DeepEqual(m.Nodes, []string{"node1", "node2"}) {
		t.Errorf("kind %s id %d nodes %v", m.Kind, m.ID, m.Nodes)
	}
	if !m.Failover || m.DefaultPrimary != "node1" || m.SplitBrainWinner != SplitBrainLongestAlone || m.SyncDelta != 0 {
		t.Errorf("failover %v default_primary %q winner %q sync_delta %v", m.Failover, m.DefaultPrimary, m.SplitBrainWinner, m.SyncDelta)
	}
	if m.MaxLoop != 3 || m.LoopInterval != 24*time.Hour {
		t.Errorf("max_loop %d loop_interval %v", m.MaxLoop, m.LoopInterval)
	}
	hb := m.Heartbeat
	if hb == nil || hb.Pulse != time.Second || hb.Timeout != 5*time.Second || hb.Port != 20012 ||
		!reflect.DeepEqual(hb.Networks, []string{"default", "replication"}) {
		t.Errorf("heartbeat = %+v", hb)
	}
	if hb.IsSet("port") || hb.AttrRange("port") != m.Range {
		t.Error("a defaulted attribute must point at its block")
	}
	if len(m.VIPs) != 1 {
		t.Fatalf("vips = %d", len(m.VIPs))
	}
	v := m.VIPs[0]
	if v.Address != netip.MustParsePrefix("198.18.0.100/24") || v.Network != "default" || v.Interface != "" ||
		v.Plugin != "vip" || v.AnnounceCount != 3 || v.AnnounceInterval != time.Second {
		t.Errorf("vip = %+v", v)
	}
	if !m.Health.Enabled || m.Health.Port != 9010 {
		t.Errorf("health = %+v", m.Health)
	}
	r := m.Replication
	if r == nil || r.Mode != ModeSync || r.Network != "replication" || r.Port != 21012 || r.StallTimeout != 10*time.Second ||
		r.MaxLag != 0 || r.ZoneSize != 64<<10 || r.Resync.Parallel != 4 || r.Resync.Bandwidth != 0 || r.QuarantineDir != "" {
		t.Errorf("replication = %+v", r)
	}
	if len(r.Dirs) != 1 || r.Dirs[0].Path != "/var/lib/postgresql/15/main" ||
		!reflect.DeepEqual(r.Dirs[0].Exclude, []string{"pg_stat_tmp/*"}) || !reflect.DeepEqual(r.Dirs[0].MustExist, []string{"PG_VERSION"}) {
		t.Errorf("dirs = %+v", r.Dirs)
	}
	if m.Farm != nil {
		t.Error("a mirror has no farm settings")
	}
	a := m.App
	if a.Plugin != "script" || a.Scripts != abs(t, "testdata/good/pg/scripts") || a.StartTimeout != time.Minute ||
		a.StopTimeout != 30*time.Second || !reflect.DeepEqual(a.Env, map[string]string{"PGDATA": "/var/lib/postgresql/15/main"}) {
		t.Errorf("app = %+v", a)
	}
	if m.Dir != abs(t, "testdata/good/pg") {
		t.Errorf("dir = %s", m.Dir)
	}
	c := m.Check("postmaster")
	if c == nil {
		t.Fatal("check postmaster not loaded")
	}
	want := core.CheckerSpec{Name: "postmaster", Type: "errd", Action: core.ActRestart, When: core.WhenBoth}
	if c.Spec() != want || c.Interval != 10*time.Second || c.Timeout != 5*time.Second {
		t.Errorf("check = %+v, spec %+v", c, c.Spec())
	}
	// The plugin's own settings are left, unparsed, for the plugin host.
	attrs, diags := c.Config.JustAttributes()
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if len(attrs) != 2 || attrs["process"] == nil || attrs["at_least"] == nil {
		t.Errorf("plugin settings = %v", attrs)
	}
	if r := attrs["process"].Expr.Range(); r.Start.Line != 23 || r.Start.Column != 16 {
		t.Errorf("process range = %v; want 23:16", r)
	}
}

// TestModuleExplicit checks every attribute is decoded when written.
func TestModuleExplicit(t *testing.T) {
	cfg := mustLoad(t, "testdata/good/full")
	m := cfg.Module("full")
	if m == nil {
		t.Fatal("module full not loaded")
	}
	if m.Description != "all settings" || m.ID != 42 || m.Failover || m.DefaultPrimary != "node2" || m.MaxLoop != 7 ||
		m.LoopInterval != 12*time.Hour || m.SyncDelta != 10*time.Minute || m.SplitBrainWinner != "node1" {
		t.Errorf("module = %+v", m)
	}
	hb := m.Heartbeat
	if hb.Pulse != 700*time.Millisecond || hb.Timeout != 4*time.Second || hb.Port != 30042 ||
		!reflect.DeepEqual(hb.Networks, []string{"replication", "default"}) || hb.NetworkRanges[1].Start.Line != 17 {
		t.Errorf("heartbeat = %+v", hb)
	}
	if len(m.VIPs) != 2 {
		t.Fatalf("vips = %d", len(m.VIPs))
	}
	v := m.VIPs[0]
	if v.Interface != "eth0" || v.AnnounceCount != 5 || v.AnnounceInterval != 500*time.Millisecond {
		t.Errorf("vip = %+v", v)
	}
	if m.VIPs[1].Address != netip.MustParsePrefix("2001:db8::142/64") {
		t.Errorf("vip6 = %v", m.VIPs[1].Address)
	}
	if m.Health.Enabled || m.Health.Port != 9011 {
		t.Errorf("health = %+v", m.Health)
	}
	r := m.Replication
	if r.Mode != ModeAsync || r.Network != "default" || r.Port != 31042 || r.StallTimeout != 20*time.Second ||
		r.MaxLag != 30*time.Second || r.ZoneSize != 1<<20 || r.QuarantineDir != "/var/lib/halo/quarantine" ||
		r.Resync.Parallel != 8 || r.Resync.Bandwidth != 125_000_000 {
		t.Errorf("replication = %+v", r)
	}
	if len(r.Dirs) != 2 || r.Dirs[0].Path != "/srv/full/data" || r.Dirs[1].Path != "/srv/full/logs" {
		t.Errorf("dirs = %+v", r.Dirs)
	}
	a := m.App
	if a.StartTimeout != 2*time.Minute || a.StopTimeout != 45*time.Second || !reflect.DeepEqual(a.Env, map[string]string{"A": "1", "B": "2"}) {
		t.Errorf("app = %+v", a)
	}
	port, wait := m.Check("port"), m.Check("wait-for-san")
	if port.Interval != 3*time.Second || port.Timeout != time.Second || port.Action != core.ActStopStart || port.When != core.WhenPrim {
		t.Errorf("check port = %+v", port)
	}
	if wait.Action != core.ActWait || wait.When != core.WhenPre {
		t.Errorf("check wait-for-san = %+v", wait)
	}
}

// TestConfigDir loads a directory laid out like /etc/halo.
func TestConfigDir(t *testing.T) {
	cfg, diags := Load(Options{}, "testdata/confdir")
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	if cfg.Cluster == nil || cfg.Cluster.File != filepath.Join("testdata/confdir", ClusterFileName) {
		t.Fatalf("cluster = %+v", cfg.Cluster)
	}
	var names []string
	for _, m := range cfg.Modules {
		names = append(names, m.Name)
	}
	if !reflect.DeepEqual(names, []string{"cron", "web"}) {
		t.Fatalf("modules = %v", names)
	}
	web := cfg.Module("web")
	f := web.Farm
	if f == nil || f.Network != "default" || f.Port != 22005 || f.Balance != BalanceClientIPPort || f.Pulse != time.Second ||
		f.Timeout != 5*time.Second || !reflect.DeepEqual(f.Power, map[string]int{"node1": 1, "node2": 1, "node3": 0}) ||
		!reflect.DeepEqual(f.Ports, []int{443}) {
		t.Errorf("farm = %+v", f)
	}
	if web.Heartbeat != nil || web.Replication != nil || web.Failover {
		t.Error("a farm has no mirror settings")
	}
	cron := cfg.Module("cron")
	if cron.Heartbeat != nil || cron.Farm != nil || cron.Replication != nil || len(cron.VIPs) != 0 {
		t.Errorf("light module = %+v", cron)
	}
	if len(cfg.Files()) != 3 {
		t.Errorf("files = %d, want the cluster and two modules", len(cfg.Files()))
	}
}

// TestShippedModules: every module under modules/ validates, without even
// a warning, against the example cluster next to them.
func TestShippedModules(t *testing.T) {
	const dir = "../../modules"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range entries {
		if e.IsDir() {
			want = append(want, e.Name())
		}
	}
	if len(want) < 3 {
		t.Fatalf("only %d modules shipped", len(want))
	}
	cfg, diags := Load(Options{}, dir)
	for _, d := range diags {
		t.Error(FormatDiagnostic(d))
	}
	var got []string
	for _, m := range cfg.Modules {
		got = append(got, m.Name)
		for _, s := range requiredScripts[m.Kind] {
			if _, err := os.Stat(filepath.Join(m.App.Scripts, s)); err != nil {
				t.Errorf("module %s: %v", m.Name, err)
			}
		}
		if _, err := os.Stat(filepath.Join(m.Dir, "README.md")); err != nil {
			t.Errorf("module %s has no README: %v", m.Name, err)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loaded modules %v, want every directory %v", got, want)
	}
	kinds := map[Kind]bool{}
	for _, m := range cfg.Modules {
		kinds[m.Kind] = true
	}
	if len(kinds) != 3 {
		t.Errorf("shipped kinds = %v, want a mirror, a farm and a light module", kinds)
	}
}

func TestNoCluster(t *testing.T) {
	_, diags := Load(Options{}, "testdata/good/pg")
	if len(diags) != 1 || diags[0].Summary != "No cluster file" || diags[0].Subject != nil {
		t.Fatalf("diagnostics = %v", diags)
	}
	if got := FormatDiagnostic(diags[0]); !strings.HasPrefix(got, "error: No cluster file: ") {
		t.Errorf("formatted = %q", got)
	}
	// The default cluster file is used when nothing else names one.
	_, diags = Load(Options{DefaultClusterFile: testClusterHCL}, "testdata/good/pg")
	if len(diags) > 0 {
		t.Errorf("with a default cluster file: %v", diags)
	}
	// A missing default is not an error of its own.
	_, diags = Load(Options{DefaultClusterFile: "testdata/nonexistent.hcl"}, "testdata/good/pg")
	if len(diags) != 1 || diags[0].Summary != "No cluster file" {
		t.Errorf("with a missing default: %v", diags)
	}
}

func TestClusterChoice(t *testing.T) {
	// A cluster file named in the paths wins over the option, which wins
	// over a directory's cluster.hcl.
	cfg, _ := Load(Options{ClusterFile: "testdata/bad/cluster_users.hcl"}, "testdata/confdir/cluster.hcl")
	if cfg.Cluster == nil || cfg.Cluster.Name != "test" {
		t.Errorf("named file: cluster = %+v", cfg.Cluster)
	}
	cfg, _ = Load(Options{ClusterFile: "testdata/bad/cluster_users.hcl"}, "testdata/confdir")
	if cfg.Cluster == nil || cfg.Cluster.Name != "users" {
		t.Errorf("option: cluster = %+v", cfg.Cluster)
	}
	_, diags := Load(Options{}, "testdata/cluster.hcl", "testdata/confdir/cluster.hcl")
	if len(diags) != 1 || diags[0].Summary != "Several clusters" {
		t.Errorf("two clusters: %v", diags)
	}
	_, diags = Load(Options{}, "testdata/does-not-exist")
	if len(diags) != 1 || !strings.Contains(diags[0].Detail, "does-not-exist") {
		t.Errorf("missing path: %v", diags)
	}
	_, diags = Load(Options{}, "testdata/bad/scripts")
	if len(diags) != 1 || !strings.Contains(diags[0].Detail, "holds no cluster.hcl") {
		t.Errorf("directory without configuration: %v", diags)
	}
}

// A module loaded alone still gets its own checks, and the cluster ones
// when given a cluster.
func TestLoadModule(t *testing.T) {
	m, diags := LoadModule("testdata/bad/unknown_node.hcl", nil)
	if m == nil || len(diags) != 0 {
		t.Errorf("without a cluster: %v", diags)
	}
	c, _ := LoadCluster(testClusterHCL)
	_, diags = LoadModule("testdata/bad/unknown_node.hcl", c)
	if len(diags) != 1 || diags[0].Summary != "Unknown node" {
		t.Errorf("with the cluster: %v", diags)
	}
	_, diags = LoadModule("testdata/bad/ports_in_module.hcl", c)
	if len(diags) != 2 || diags[0].Summary != "Port collision" {
		t.Errorf("ports: %v", diags)
	}
	src, err := os.ReadFile("testdata/good/pg/module.hcl")
	if err != nil {
		t.Fatal(err)
	}
	m, diags = ParseModule(src, "testdata/good/pg/module.hcl", c, nil)
	if m == nil || len(diags) != 0 || m.Name != "pg" {
		t.Errorf("ParseModule: %v", diags)
	}
}

// fakePlugins declares schemas as plugins would over their Base service.
type fakePlugins map[string]hcldec.Spec

func (f fakePlugins) ConfigSpec(kind PluginKind, name string) (hcldec.Spec, error) {
	spec, ok := f[string(kind)+"/"+name]
	if !ok {
		return nil, fmt.Errorf("%s plugin %q: %w", kind, name, ErrUnknownPlugin)
	}
	return spec, nil
}

func TestPluginSchemas(t *testing.T) {
	src := []byte(`module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  vip {
    address = "198.18.0.100/24"
  }

  check "errd" "postmaster" {
    action  = "restart"
    process = "postgres"
    at_leest = 1
  }

  check "nosuch" "x" {}
}
`)
	plugins := fakePlugins{
		"checker/errd": hcldec.ObjectSpec{
			"process":  &hcldec.AttrSpec{Name: "process", Type: cty.String, Required: true},
			"at_least": &hcldec.AttrSpec{Name: "at_least", Type: cty.Number},
		},
		"vip/vip":    nil,
		"app/script": nil,
	}
	c, _ := LoadCluster(testClusterHCL)
	_, diags := ParseModule(src, "testdata/good/pg/module.hcl", c, &Options{Plugins: plugins})
	var got []string
	for _, d := range diags {
		got = append(got, FormatDiagnostic(d))
	}
	want := []string{
		`testdata/good/pg/module.hcl:13:5: error: Unsupported argument: An argument named "at_leest" is not expected here. Did you mean "at_least"?`,
		`testdata/good/pg/module.hcl:16:3: error: Unknown plugin: There is no checker plugin named "nosuch".`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Without plugin schemas the built-in vip plugin takes nothing beyond
	// halo's own attributes, so a typo there is still caught.
	src = []byte(`module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]
  vip {
    address        = "198.18.0.100/24"
    announce_cont  = 3
  }
}
`)
	_, diags = ParseModule(src, "testdata/good/pg/module.hcl", c, nil)
	if len(diags) != 1 || !strings.Contains(diags[0].Detail, `Did you mean "announce_count"?`) {
		t.Errorf("vip typo: %v", diags)
	}
}

func TestParseDuration(t *testing.T) {
	if d, err := ParseDuration("700ms"); err != nil || d != 700*time.Millisecond {
		t.Errorf("700ms = %v, %v", d, err)
	}
	for _, bad := range []string{"", "10", "1 sec", "ten seconds"} {
		if _, err := ParseDuration(bad); err == nil || !strings.Contains(err.Error(), `e.g. "700ms"`) {
			t.Errorf("ParseDuration(%q) error = %v", bad, err)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"4096": 4096, "64KiB": 64 << 10, "64kib": 64 << 10, "8MiB": 8 << 20, "1.5GB": 1_500_000_000,
		"2TiB": 2 << 40, "100kB": 100_000, "10 MB": 10_000_000, "512B": 512,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "KiB", "1.5B", "-1KiB", "64 kilobytes", "1e3", "99999999999TiB"} {
		if n, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", bad, n)
		}
	}
	if got := FormatSize(64 << 10); got != "64KiB" {
		t.Errorf("FormatSize = %q", got)
	}
	if got := FormatSize(1000); got != "1000B" {
		t.Errorf("FormatSize = %q", got)
	}
}

func TestParseBandwidth(t *testing.T) {
	for in, want := range map[string]int64{
		"100MB/s": 100_000_000, "40MiB/s": 40 << 20, "1Gbit/s": 125_000_000, "800kbit/s": 100_000,
	} {
		if got, err := ParseBandwidth(in); err != nil || got != want {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"100MB", "/s", "fast/s", "1bit/s"} {
		if n, err := ParseBandwidth(bad); err == nil {
			t.Errorf("ParseBandwidth(%q) = %d, want an error", bad, n)
		}
	}
}

// The names validation accepts must be exactly those the core parses.
func TestEnumsMatchCore(t *testing.T) {
	for i, name := range validActions {
		a, err := core.ParseCheckAction(name)
		if err != nil || int(a) != i || a.String() != name {
			t.Errorf("action %q: core says %v, %v", name, a, err)
		}
	}
	for i, name := range validWhens {
		w, err := core.ParseWhen(name)
		if err != nil || int(w) != i || w.String() != name {
			t.Errorf("when %q: core says %v, %v", name, w, err)
		}
	}
	if validActions[0] != DefaultCheckAction || validWhens[0] != DefaultCheckWhen {
		t.Error("the zero CheckAction and When must be the documented defaults")
	}
}

func TestFormatDiagnostic(t *testing.T) {
	d := &hcl.Diagnostic{
		Severity: hcl.DiagWarning,
		Summary:  "Something",
		Detail:   "First line.\n  Second line.",
		Subject:  &hcl.Range{Filename: "m.hcl", Start: hcl.Pos{Line: 3, Column: 7}},
	}
	if got := FormatDiagnostic(d); got != "m.hcl:3:7: warning: Something: First line. Second line." {
		t.Errorf("got %q", got)
	}
	var b strings.Builder
	cfg, diags := Load(Options{ClusterFile: testClusterHCL}, "testdata/bad/heartbeat_timeout.hcl")
	if err := WriteDiagnosticsDetailed(&b, diags, cfg.Files(), 0, false); err != nil {
		t.Fatal(err)
	}
	// The detailed form quotes the offending line.
	if !strings.Contains(b.String(), `timeout = "1500ms"`) {
		t.Errorf("detailed output lacks the source line:\n%s", b.String())
	}
}
