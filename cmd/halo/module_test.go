package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/halo-ha/halo/internal/bundle"
	"github.com/halo-ha/halo/sdk/api"
)

const packCluster = `cluster "c" {
  network "default" {}
  node "n1" { addresses = { default = "198.18.0.1" } }
}
`

const packModule = `module "svc" {
  kind  = "light"
  id    = 1
  nodes = ["n1"]
}
`

func writePackDirs(t *testing.T, module string) (configDir, modDir string) {
	t.Helper()
	configDir = t.TempDir()
	modDir = filepath.Join(t.TempDir(), "svc")
	for _, f := range []struct {
		path, body string
		mode       os.FileMode
	}{
		{filepath.Join(configDir, "cluster.hcl"), packCluster, 0o644},
		{filepath.Join(modDir, "module.hcl"), module, 0o644},
		{filepath.Join(modDir, "scripts", "start_both"), "#!/bin/sh\n", 0o755},
		{filepath.Join(modDir, "scripts", "stop_both"), "#!/bin/sh\n", 0o755},
	} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, []byte(f.body), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	return configDir, modDir
}

func TestModulePackage(t *testing.T) {
	configDir, modDir := writePackDirs(t, packModule)
	out := filepath.Join(t.TempDir(), "svc.halo")
	code, stdout, stderr := runClusterCLI(t, "module", "package", modDir, "-o", out, "--config-dir", configDir)
	if code != 0 {
		t.Fatalf("package: exit %d: %s%s", code, stdout, stderr)
	}
	sum, err := bundle.DirChecksum(modDir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "module svc, 3 files, "+sum) {
		t.Fatalf("output %q does not give the checksum %s", stdout, sum)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, err := bundle.Read(f); err != nil || b.Checksum() != sum {
		t.Fatalf("bundle written: %v", err)
	}

	// An invalid module is not packaged: exit 1 with the location.
	configDir, modDir = writePackDirs(t, strings.Replace(packModule, "id    = 1", "id    = \"one\"", 1))
	out2 := filepath.Join(t.TempDir(), "svc.halo")
	code, _, stderr = runClusterCLI(t, "module", "package", modDir, "-o", out2, "--config-dir", configDir)
	if code != 1 || !strings.Contains(stderr, "module.hcl:3:") {
		t.Fatalf("invalid module: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(out2); !os.IsNotExist(err) {
		t.Fatal("a bundle was written for an invalid module")
	}
}

func TestModuleUsage(t *testing.T) {
	for _, args := range [][]string{
		{"module"},
		{"module", "frobnicate"},
		{"module", "install"},
		{"module", "install", "a", "b"},
		{"module", "list", "--bogus"},
		{"module", "package"},
		{"reload"},
		{"reload", "--bogus", "x"},
	} {
		if code, _, stderr := runClusterCLI(t, args...); code != 2 {
			t.Errorf("halo %s: exit %d, want 2 (%s)", strings.Join(args, " "), code, stderr)
		}
	}
	// A bundle that cannot be read is a failure, not a usage error.
	bad := filepath.Join(t.TempDir(), "x.halo")
	if err := os.WriteFile(bad, []byte("not a bundle"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runClusterCLI(t, "module", "install", bad); code != 1 || !strings.Contains(stderr, "not a gzip stream") {
		t.Fatalf("install of a non-bundle: exit %d: %s", code, stderr)
	}
}

func TestPrintInstalled(t *testing.T) {
	ms := []api.InstalledModule{
		{Module: "db", Node: "n2", Runs: true, State: "SECOND", Checksum: "sha256:bbbbbbbbbbbbbbbbbbbb", Applied: "sha256:bbbbbbbbbbbbbbbbbbbb", Nodes: []string{"n1", "n2"}},
		{Module: "db", Node: "n1", Runs: true, State: "PRIM", Checksum: "sha256:aaaaaaaaaaaaaaaaaaaa", Applied: "sha256:cccccccccccccccccccc", Changed: true, Nodes: []string{"n1", "n2"}},
		{Module: "web", Node: "n1", Runs: true, State: "UP", Checksum: "sha256:dddddddddddddddddddd", Applied: "sha256:dddddddddddddddddddd", Nodes: []string{"n1", "n2", "n3"}},
		{Module: "web", Node: "n2", Runs: true, State: "UP", Checksum: "sha256:dddddddddddddddddddd", Applied: "sha256:dddddddddddddddddddd", Nodes: []string{"n1", "n2", "n3"}},
	}
	var b strings.Builder
	printInstalled(&b, ms, []string{"n1", "n2"}) // n3 did not answer
	out := b.String()
	for _, want := range []string{
		"db      n1    PRIM    sha256:aaaaaaaaaaaa  changed on disk, not applied (running sha256:cccccccccccc)",
		"MISMATCH db: configuration differs between nodes: sha256:aaaaaaaaaaaa on n1; sha256:bbbbbbbbbbbb on n2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "MISMATCH web") || strings.Contains(out, "MISSING") {
		t.Errorf("web flagged though identical where it answered:\n%s", out)
	}
	b.Reset()
	printInstalled(&b, ms, []string{"n1", "n2", "n3"})
	if !strings.Contains(b.String(), "MISSING web: not installed on n3, a node it lists") {
		t.Errorf("web missing on n3 not flagged:\n%s", b.String())
	}
}
