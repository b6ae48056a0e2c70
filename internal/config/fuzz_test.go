package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// FuzzLoadModule feeds arbitrary text to the module loader: it must never
// panic, every diagnostic must point into the file it came from, and a
// module accepted without error must satisfy what validation promises.
//
//	go test ./internal/config -run '^$' -fuzz FuzzLoadModule -fuzztime 60s
func FuzzLoadModule(f *testing.F) {
	var seeds []string
	for _, pattern := range []string{
		"testdata/*/*.hcl", "testdata/*/*/*.hcl", "testdata/*/*/*/*.hcl", "testdata/*.hcl", "../../modules/*/module.hcl",
	} {
		matches, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, matches...)
	}
	if len(seeds) < 25 {
		f.Fatalf("only %d seed files", len(seeds))
	}
	for _, p := range seeds {
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	cluster, diags := LoadCluster(testClusterHCL)
	if diags.HasErrors() {
		f.Fatal(diags)
	}
	const name = "fuzz/module.hcl"
	f.Fuzz(func(t *testing.T, src []byte) {
		m, diags := ParseModule(src, name, cluster, nil)
		checkDiagnostics(t, diags, name)
		if m != nil {
			// Checks across modules must cope with anything decoded.
			checkDiagnostics(t, CheckModules(cluster, []*Module{m, m}), name)
		}
		if m != nil && !diags.HasErrors() {
			if m.Kind != KindMirror && m.Kind != KindFarm && m.Kind != KindLight {
				t.Errorf("accepted kind %q", m.Kind)
			}
			if m.ID < MinModuleID || m.ID > MaxModuleID || m.MaxLoop < 1 {
				t.Errorf("accepted id %d, max_loop %d", m.ID, m.MaxLoop)
			}
			if m.Kind == KindMirror && (len(m.Nodes) != 2 || m.Heartbeat.Timeout <= m.Heartbeat.Pulse) {
				t.Errorf("accepted mirror nodes %v, heartbeat %+v", m.Nodes, m.Heartbeat)
			}
		}
		c, diags := ParseCluster(src, "fuzz/cluster.hcl")
		checkDiagnostics(t, diags, "fuzz/cluster.hcl")
		if c != nil && !diags.HasErrors() && (len(c.Nodes) == 0 || len(c.Networks) == 0) {
			t.Errorf("accepted a cluster without nodes or networks")
		}
	})
}

func checkDiagnostics(t *testing.T, diags hcl.Diagnostics, name string) {
	t.Helper()
	for _, d := range diags {
		line := FormatDiagnostic(d)
		if d.Subject == nil {
			continue
		}
		if d.Subject.Filename != name && d.Subject.Filename != testClusterHCL {
			t.Errorf("diagnostic outside the file: %s", line)
		}
		if d.Subject.Start.Line < 1 || d.Subject.Start.Column < 1 {
			t.Errorf("diagnostic without a position: %s", line)
		}
	}
}
