package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestMetricsAddrs(t *testing.T) {
	const head = `cluster "m" {
  network "default" {}
  network "replication" {}
  node "n1" { addresses = { default = "198.18.0.1", replication = "198.18.1.1" } }
  node "n2" { addresses = { default = "198.18.0.2" } }
`
	cases := []struct {
		block    string
		node     string
		want     []string
		noMetric bool
	}{
		{block: "", node: "n1", noMetric: true},
		{block: `metrics { port = 9464 }`, node: "n1", want: []string{"198.18.0.1:9464", "198.18.1.1:9464"}},
		{block: `metrics { port = 9464 }`, node: "n2", want: []string{"198.18.0.2:9464"}},
		{block: "metrics {\n port = 9464\n networks = [\"replication\"]\n}", node: "n1", want: []string{"198.18.1.1:9464"}},
		// n2 has no replication address: only its loopback.
		{block: "metrics {\n port = 9464\n networks = [\"replication\"]\n loopback = true\n}", node: "n2", want: []string{"127.0.0.1:9464"}},
		{block: "metrics {\n port = 9464\n networks = []\n loopback = true\n}", node: "n1", want: []string{"127.0.0.1:9464"}},
	}
	for _, c := range cases {
		dir := t.TempDir()
		f := filepath.Join(dir, "cluster.hcl")
		if err := os.WriteFile(f, []byte(head+c.block+"\n}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, diags := Load(Options{}, f)
		if diags.HasErrors() {
			t.Fatalf("%s: %v", c.block, diags)
		}
		if (cfg.Cluster.Metrics == nil) != c.noMetric {
			t.Fatalf("%s: metrics = %+v", c.block, cfg.Cluster.Metrics)
		}
		if got := cfg.Cluster.MetricsAddrs(c.node); !slices.Equal(got, c.want) {
			t.Errorf("%s on %s: addresses %q, want %q", c.block, c.node, got, c.want)
		}
	}
}
