package main

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/pki"
)

// runClusterCLI runs the CLI in-process and returns its exit code and
// what it printed. It swaps os.Stdout and os.Stderr, so callers must not
// run in parallel.
func runClusterCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	capture := func(f **os.File) func() string {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		orig := *f
		*f = w
		var buf bytes.Buffer
		done := make(chan struct{})
		go func() { _, _ = io.Copy(&buf, r); close(done) }()
		return func() string {
			*f = orig
			w.Close()
			<-done
			r.Close()
			return buf.String()
		}
	}
	endOut, endErr := capture(&os.Stdout), capture(&os.Stderr)
	code = run(args)
	return code, endOut(), endErr()
}

const cliCluster = `
cluster "cli" {
  network "default" {}
  node "alpha" { addresses = { default = "198.18.0.1" } }
  node "beta"  { addresses = { default = "198.18.0.2" } }
}
`

func TestClusterInitCLI(t *testing.T) {
	dir := t.TempDir()
	clusterFile := filepath.Join(dir, "cluster.hcl")
	if err := os.WriteFile(clusterFile, []byte(cliCluster), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "pki") // the default: beside the cluster file

	code, stdout, stderr := runClusterCLI(t, "cluster", "init", "--cluster", clusterFile)
	if code != 0 {
		t.Fatalf("exit %d; stderr: %s", code, stderr)
	}
	for _, want := range []string{
		"created  0600 " + filepath.Join(out, "ca-key.pem"),
		"created  0600 " + filepath.Join(out, "alpha", "tls", "node-key.pem"),
		"created  0644 " + filepath.Join(out, "beta", "tls", "node.pem"),
		"scp -rp " + filepath.Join(out, "beta") + "/* root@beta:/etc/halo/",
		"keep " + filepath.Join(out, "ca-key.pem") + " offline",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}

	// The node directory, copied as the help says, is a working /etc/halo.
	etc := t.TempDir()
	if err := os.WriteFile(filepath.Join(etc, "cluster.hcl"), []byte(cliCluster), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(etc, os.DirFS(filepath.Join(out, "beta"))); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"node-key.pem", "cluster.key"} {
		if err := os.Chmod(filepath.Join(etc, "tls", secret), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, diags := config.LoadCluster(filepath.Join(etc, "cluster.hcl"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if _, err := pki.LoadNodeMaterial(c, "beta"); err != nil {
		t.Errorf("installed beta: %v", err)
	}
	if _, err := pki.LoadClusterKey(c.KeyFile); err != nil {
		t.Errorf("installed beta: %v", err)
	}

	// A second run keeps everything.
	caBefore, err := os.ReadFile(filepath.Join(out, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runClusterCLI(t, "cluster", "init", "--cluster", clusterFile, "--out", out)
	if code != 0 || strings.Contains(stdout, "created") || strings.Contains(stdout, "replaced") {
		t.Errorf("rerun: exit %d, stdout:\n%s\nstderr: %s", code, stdout, stderr)
	}
	if caAfter, _ := os.ReadFile(filepath.Join(out, "ca-key.pem")); !bytes.Equal(caAfter, caBefore) {
		t.Error("rerun changed the CA key")
	}
}

func TestClusterInitCLIBadInput(t *testing.T) {
	dir := t.TempDir()
	clusterFile := filepath.Join(dir, "cluster.hcl")
	if err := os.WriteFile(clusterFile, []byte(cliCluster), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown node", []string{"--cluster", clusterFile, "--out", out, "--node", "alpha", "--node", "gamma"}, `node "gamma" is not declared`},
		{"unknown user", []string{"--cluster", clusterFile, "--out", out, "--user", "bob"}, `user "bob" is not declared`},
		{"missing cluster", []string{"--cluster", filepath.Join(dir, "nope.hcl"), "--out", out}, "nothing written"},
		{"stray argument", []string{"--cluster", clusterFile, "--out", out, "alpha"}, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runClusterCLI(t, append([]string{"cluster", "init"}, tc.args...)...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout: %s", stdout)
			}
			if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("output directory exists: %v", err)
			}
		})
	}

	if code, _, stderr := runClusterCLI(t, "cluster", "status"); code != 2 || !strings.Contains(stderr, "not yet available") {
		t.Errorf("cluster status: exit %d, %s", code, stderr)
	}
}
