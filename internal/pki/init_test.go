package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/heartbeat"
)

// testNow is a fixed issuing time, so expiry checks are reproducible.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const threeNodes = `
cluster "test" {
  network "default" {}
  network "replication" {}
  node "node1" {
    addresses = { default = "198.18.0.1", replication = "198.18.1.1" }
  }
  node "node2" {
    addresses = { default = "198.18.0.2", replication = "198.18.1.2" }
  }
  node "node3" {
    addresses = { default = "198.18.0.3", replication = "2001:db8::3" }
  }
  user "alice" { role = "admin" }
}
`

// loadCluster writes src as dir/cluster.hcl and loads it.
func loadCluster(t *testing.T, dir, src string) *config.Cluster {
	t.Helper()
	path := filepath.Join(dir, "cluster.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	c, diags := config.LoadCluster(path)
	if diags.HasErrors() {
		t.Fatalf("load cluster: %v", diags)
	}
	return c
}

func initOK(t *testing.T, opts InitOptions) *InitPlan {
	t.Helper()
	if opts.Now.IsZero() {
		opts.Now = testNow
	}
	plan, err := PlanInit(opts)
	if err != nil {
		t.Fatalf("PlanInit: %v", err)
	}
	if err := plan.Apply(); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return plan
}

// snapshot reads every regular file under dir.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		files[strings.TrimPrefix(path, dir+"/")] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func actions(plan *InitPlan, out string) map[string]Action {
	m := map[string]Action{}
	for _, ch := range plan.Changes {
		m[strings.TrimPrefix(ch.Path, out+"/")] = ch.Action
	}
	return m
}

func TestInitCreatesEverything(t *testing.T) {
	dir := t.TempDir()
	c := loadCluster(t, dir, threeNodes)
	out := filepath.Join(dir, "out")
	plan := initOK(t, InitOptions{Cluster: c, OutDir: out, Users: []string{"alice"}})

	wantModes := map[string]os.FileMode{
		"ca.pem": 0o644, "ca-key.pem": 0o600, "cluster.key": 0o600,
		"users/alice/ca.pem": 0o644, "users/alice/alice.pem": 0o644, "users/alice/alice-key.pem": 0o600,
	}
	for _, n := range []string{"node1", "node2", "node3"} {
		wantModes[n+"/tls/ca.pem"] = 0o644
		wantModes[n+"/tls/node.pem"] = 0o644
		wantModes[n+"/tls/node-key.pem"] = 0o600
		wantModes[n+"/tls/cluster.key"] = 0o600
	}
	got := snapshot(t, out)
	if len(got) != len(wantModes) {
		t.Errorf("wrote %d files, want %d: %v", len(got), len(wantModes), slices.Sorted(mapKeys(got)))
	}
	for rel, mode := range wantModes {
		st, err := os.Stat(filepath.Join(out, rel))
		if err != nil {
			t.Errorf("missing %s: %v", rel, err)
			continue
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %04o, want %04o", rel, st.Mode().Perm(), mode)
		}
	}
	for _, d := range []string{"", "node1", "node1/tls", "users", "users/alice"} {
		st, err := os.Stat(filepath.Join(out, d))
		if err != nil {
			t.Errorf("directory %q: %v", d, err)
		} else if st.Mode().Perm() != 0o700 {
			t.Errorf("directory %q: mode %04o, want 0700", d, st.Mode().Perm())
		}
	}
	for rel, a := range actions(plan, out) {
		if a != ActionCreate {
			t.Errorf("%s: %s, want %s", rel, a, ActionCreate)
		}
	}

	// The cluster key is 32 random bytes, identical on every node, and
	// accepted by the heartbeat codec.
	key, err := LoadClusterKey(filepath.Join(out, "cluster.key"))
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != ClusterKeySize || len(key) < heartbeat.MinKeySize || bytes.Equal(key, make([]byte, len(key))) {
		t.Errorf("cluster key: %d bytes %x", len(key), key)
	}
	for _, n := range c.Nodes {
		if !bytes.Equal(got[n.Name+"/tls/cluster.key"], got["cluster.key"]) {
			t.Errorf("%s: cluster key copy differs", n.Name)
		}
	}

	ca, err := LoadCA(filepath.Join(out, "ca.pem"), filepath.Join(out, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || ca.Cert.NotAfter.Sub(testNow) < 9*365*24*time.Hour {
		t.Errorf("CA: IsCA %v, expires %v", ca.Cert.IsCA, ca.Cert.NotAfter)
	}
	for _, n := range c.Nodes {
		tlsDir := filepath.Join(out, n.Name, "tls")
		m, err := ParseMaterial(got[n.Name+"/tls/ca.pem"], got[n.Name+"/tls/node.pem"], got[n.Name+"/tls/node-key.pem"], testNow)
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		if m.Identity != (Identity{KindNode, n.Name}) {
			t.Errorf("%s: identity %v", n.Name, m.Identity)
		}
		leaf := m.Cert.Leaf
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: testNow, DNSName: n.Name,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: certificate does not verify against the CA as server and client: %v", n.Name, err)
		}
		if leaf.Subject.CommonName != n.Name || !slices.Equal(leaf.DNSNames, []string{n.Name}) {
			t.Errorf("%s: CN %q DNS SANs %v", n.Name, leaf.Subject.CommonName, leaf.DNSNames)
		}
		var want []netip.Addr
		for _, a := range n.Addresses {
			want = append(want, a)
		}
		if gotIPs := uniqueAddrs(fromNetIPs(leaf.IPAddresses)); !slices.Equal(gotIPs, uniqueAddrs(want)) {
			t.Errorf("%s: IP SANs %v, want %v", n.Name, gotIPs, uniqueAddrs(want))
		}
		if _, err := os.Stat(filepath.Join(tlsDir, "node.pem")); err != nil {
			t.Error(err)
		}
	}

	// Installed where cluster.hcl's defaults look, the files load.
	node2Conf := t.TempDir()
	c2 := loadCluster(t, node2Conf, threeNodes)
	if err := os.CopyFS(node2Conf, os.DirFS(filepath.Join(out, "node2"))); err != nil {
		t.Fatal(err)
	}
	restorePrivateModes(t, filepath.Join(node2Conf, "tls"))
	if _, err := LoadNodeMaterial(c2, "node2"); err != nil {
		t.Errorf("node2 material as installed: %v", err)
	}
	if _, err := LoadNodeMaterial(c2, "node1"); err == nil || !strings.Contains(err.Error(), "not of node node1") {
		t.Errorf("node2's files loaded as node1's: %v", err)
	}
	if _, err := LoadClusterKey(c2.KeyFile); err != nil {
		t.Errorf("cluster key as installed: %v", err)
	}

	user, err := ParseMaterial(got["users/alice/ca.pem"], got["users/alice/alice.pem"], got["users/alice/alice-key.pem"], testNow)
	if err != nil {
		t.Fatal(err)
	}
	if user.Identity != (Identity{KindUser, "alice"}) || slices.Contains(user.Cert.Leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("user certificate: %v, usages %v", user.Identity, user.Cert.Leaf.ExtKeyUsage)
	}
}

// restorePrivateModes makes *key* files 0600 again (os.CopyFS writes 0644
// or 0666 less umask, as a careless copy would).
func restorePrivateModes(t *testing.T, dir string) {
	t.Helper()
	for _, name := range []string{"node-key.pem", "cluster.key"} {
		if err := os.Chmod(filepath.Join(dir, name), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestInitRerunChangesNothing(t *testing.T) {
	dir := t.TempDir()
	c := loadCluster(t, dir, threeNodes)
	out := filepath.Join(dir, "out")
	initOK(t, InitOptions{Cluster: c, OutDir: out, Users: []string{"alice"}})
	before := snapshot(t, out)

	plan := initOK(t, InitOptions{Cluster: c, OutDir: out, Users: []string{"alice"}, Now: testNow.Add(24 * time.Hour)})
	for rel, a := range actions(plan, out) {
		if a != ActionKeep {
			t.Errorf("rerun: %s %s, want %s", rel, a, ActionKeep)
		}
	}
	after := snapshot(t, out)
	for rel, data := range before {
		if !bytes.Equal(after[rel], data) {
			t.Errorf("rerun changed %s", rel)
		}
	}
}

func TestInitNodeSubsetAndAddedNode(t *testing.T) {
	dir := t.TempDir()
	c := loadCluster(t, dir, threeNodes)
	out := filepath.Join(dir, "out")
	initOK(t, InitOptions{Cluster: c, OutDir: out, Nodes: []string{"node2"}})
	for _, n := range []string{"node1", "node3"} {
		if _, err := os.Stat(filepath.Join(out, n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s written though only node2 was asked for: %v", n, err)
		}
	}
	caBefore := snapshot(t, out)["ca.pem"]

	// A node added later is issued by the same CA, with the same key.
	withNode4 := strings.Replace(threeNodes, `user "alice"`, `node "node4" { addresses = { default = "198.18.0.4" } }
  user "alice"`, 1)
	c = loadCluster(t, dir, withNode4)
	plan := initOK(t, InitOptions{Cluster: c, OutDir: out, Nodes: []string{"node4"}})
	got := snapshot(t, out)
	if !bytes.Equal(got["ca.pem"], caBefore) || !bytes.Equal(got["node4/tls/cluster.key"], got["node2/tls/cluster.key"]) {
		t.Error("node4 got another CA or cluster key than node2")
	}
	if a := actions(plan, out); a["node4/tls/node.pem"] != ActionCreate || a["ca.pem"] != ActionKeep {
		t.Errorf("actions: %v", a)
	}
}

func TestInitReissuesCertificateWhenAddressesChange(t *testing.T) {
	dir := t.TempDir()
	c := loadCluster(t, dir, threeNodes)
	out := filepath.Join(dir, "out")
	initOK(t, InitOptions{Cluster: c, OutDir: out})
	before := snapshot(t, out)

	c = loadCluster(t, dir, strings.Replace(threeNodes, `"198.18.0.1"`, `"198.18.0.11"`, 1))
	plan := initOK(t, InitOptions{Cluster: c, OutDir: out})
	after := snapshot(t, out)
	a := actions(plan, out)
	if a["node1/tls/node.pem"] != ActionReplace || a["node1/tls/node-key.pem"] != ActionKeep || a["node2/tls/node.pem"] != ActionKeep {
		t.Errorf("actions: %v", a)
	}
	if bytes.Equal(after["node1/tls/node.pem"], before["node1/tls/node.pem"]) {
		t.Error("node1's certificate kept with a stale address")
	}
	for _, rel := range []string{"ca.pem", "ca-key.pem", "cluster.key", "node1/tls/node-key.pem", "node2/tls/node.pem"} {
		if !bytes.Equal(after[rel], before[rel]) {
			t.Errorf("%s changed", rel)
		}
	}
	m, err := ParseMaterial(after["ca.pem"], after["node1/tls/node.pem"], after["node1/tls/node-key.pem"], testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(fromNetIPs(m.Cert.Leaf.IPAddresses), netip.MustParseAddr("198.18.0.11")) {
		t.Errorf("re-issued certificate has %v", m.Cert.Leaf.IPAddresses)
	}

	// Close to expiry, a certificate is renewed too.
	plan = initOK(t, InitOptions{Cluster: c, OutDir: out, Now: testNow.Add(LeafValidity - RenewBefore/2)})
	if a := actions(plan, out); a["node2/tls/node.pem"] != ActionReplace || a["node2/tls/node-key.pem"] != ActionKeep {
		t.Errorf("near expiry: %v", a)
	}
}

func TestInitForceReplacesNodeKeysOnly(t *testing.T) {
	dir := t.TempDir()
	c := loadCluster(t, dir, threeNodes)
	out := filepath.Join(dir, "out")
	initOK(t, InitOptions{Cluster: c, OutDir: out})
	before := snapshot(t, out)
	initOK(t, InitOptions{Cluster: c, OutDir: out, Nodes: []string{"node3"}, Force: true})
	after := snapshot(t, out)
	for rel := range before {
		changed := !bytes.Equal(before[rel], after[rel])
		wantChanged := rel == "node3/tls/node-key.pem" || rel == "node3/tls/node.pem"
		if changed != wantChanged {
			t.Errorf("%s: changed %v, want %v", rel, changed, wantChanged)
		}
	}
}

func TestInitClusterKeyCopyDiffersNeedsForce(t *testing.T) {
	dir := t.TempDir()
	c := loadCluster(t, dir, threeNodes)
	out := filepath.Join(dir, "out")
	initOK(t, InitOptions{Cluster: c, OutDir: out})
	other, _ := NewClusterKey()
	copyPath := filepath.Join(out, "node1/tls/cluster.key")
	if err := os.WriteFile(copyPath, EncodeClusterKey(other), 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, out)
	if _, err := PlanInit(InitOptions{Cluster: c, OutDir: out, Now: testNow}); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("differing cluster key copy: %v", err)
	}
	assertUnchanged(t, out, before)
	initOK(t, InitOptions{Cluster: c, OutDir: out, Force: true})
	if got := snapshot(t, out); !bytes.Equal(got["node1/tls/cluster.key"], got["cluster.key"]) {
		t.Error("--force did not restore the cluster key copy")
	}
}

func assertUnchanged(t *testing.T, dir string, before map[string][]byte) {
	t.Helper()
	after := snapshot(t, dir)
	if len(after) != len(before) {
		t.Errorf("file count changed: %d → %d", len(before), len(after))
	}
	for rel, data := range before {
		if !bytes.Equal(after[rel], data) {
			t.Errorf("%s changed", rel)
		}
	}
}

func TestInitBadInputWritesNothing(t *testing.T) {
	dir := t.TempDir()
	c := loadCluster(t, dir, threeNodes)
	out := filepath.Join(dir, "out")
	for _, tc := range []struct {
		name string
		opts InitOptions
		want []string
	}{
		{"unknown node", InitOptions{Nodes: []string{"node1", "node9"}}, []string{`node "node9" is not declared`, "node1, node2, node3"}},
		{"unknown user", InitOptions{Users: []string{"bob"}}, []string{`user "bob" is not declared`}},
		{"both reported", InitOptions{Nodes: []string{"nodeX"}, Users: []string{"bob"}}, []string{"2 problems", "nodeX", "bob"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Cluster, tc.opts.OutDir, tc.opts.Now = c, out, testNow
			_, err := PlanInit(tc.opts)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("output directory exists after a refused init: %v", err)
			}
		})
	}

	// Output path is a file.
	file := filepath.Join(dir, "afile")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := PlanInit(InitOptions{Cluster: c, OutDir: file, Now: testNow}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("output is a file: %v", err)
	}
}

func TestInitDamagedFilesRefused(t *testing.T) {
	dir := t.TempDir()
	c := loadCluster(t, dir, threeNodes)
	out := filepath.Join(dir, "out")
	initOK(t, InitOptions{Cluster: c, OutDir: out})

	for _, tc := range []struct {
		name, file string
		mutate     func(path string) error
		want       string
	}{
		{"loose cluster key", "cluster.key", func(p string) error { return os.Chmod(p, 0o644) }, "accessible by group or others"},
		{"loose CA key", "ca-key.pem", func(p string) error { return os.Chmod(p, 0o640) }, "chmod 600"},
		{"short cluster key", "cluster.key", func(p string) error { return os.WriteFile(p, []byte("abcd\n"), 0o600) }, "need at least 32"},
		{"garbage node key", "node2/tls/node-key.pem", func(p string) error { return os.WriteFile(p, []byte("junk"), 0o600) }, "rerun with --force"},
		{"mismatched CA key", "ca-key.pem", func(p string) error {
			k, _ := NewKey()
			data, _ := encodeKey(k)
			return os.WriteFile(p, data, 0o600)
		}, "does not match the CA certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(out, tc.file)
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(path)
			if err := tc.mutate(path); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				os.WriteFile(path, orig, st.Mode())
				os.Chmod(path, st.Mode())
			})
			before := snapshot(t, out)
			_, err = PlanInit(InitOptions{Cluster: c, OutDir: out, Now: testNow})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			assertUnchanged(t, out, before)
		})
	}
}

func TestInitExternalCARefused(t *testing.T) {
	dir := t.TempDir()
	c := loadCluster(t, dir, threeNodes)
	out := filepath.Join(dir, "out")
	ext, err := NewCA("corp", testNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "ca.pem"), ext.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = PlanInit(InitOptions{Cluster: c, OutDir: out, Now: testNow, Force: true})
	if err == nil {
		t.Fatal("init issued certificates without the CA key")
	}
	for _, w := range []string{"external CA", "ca-key.pem", "OU=" + OUNode, "serverAuth and clientAuth", "IP SANs"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}
	if got := snapshot(t, out); len(got) != 1 {
		t.Errorf("files after refusal: %v", slices.Sorted(mapKeys(got)))
	}
}

// TestInitBringYourOwnCA uses a CA made elsewhere: RSA, its key in PKCS #1
// as openssl writes it.
func TestInitBringYourOwnCA(t *testing.T) {
	dir := t.TempDir()
	c := loadCluster(t, dir, threeNodes)
	out := filepath.Join(dir, "out")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "Corp Root"},
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(3 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rsaKey.Public(), rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "ca.pem"), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "ca-key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	plan := initOK(t, InitOptions{Cluster: c, OutDir: out})
	a := actions(plan, out)
	if a["ca.pem"] != ActionKeep || a["ca-key.pem"] != ActionKeep {
		t.Errorf("own CA not reused: %v", a)
	}
	got := snapshot(t, out)
	if !bytes.Equal(got["ca.pem"], caPEM) || !bytes.Equal(got["node1/tls/ca.pem"], caPEM) {
		t.Error("own CA certificate not distributed as is")
	}
	m, err := ParseMaterial(caPEM, got["node1/tls/node.pem"], got["node1/tls/node-key.pem"], testNow)
	if err != nil {
		t.Fatal(err)
	}
	// Never outlives the CA.
	if !m.Cert.Leaf.NotAfter.Equal(tmpl.NotAfter) {
		t.Errorf("node certificate expires %v, CA %v", m.Cert.Leaf.NotAfter, tmpl.NotAfter)
	}
}

func TestInitNonDefaultPaths(t *testing.T) {
	dir := t.TempDir()
	src := strings.Replace(threeNodes, `network "default" {}`, `network "default" {}
  key_file = "secrets/hb.key"
  tls {
    ca_file   = "pki-ca.pem"
    cert_file = "/etc/ssl/halo/node.pem"
  }`, 1)
	c := loadCluster(t, dir, src)
	out := filepath.Join(dir, "out")
	plan := initOK(t, InitOptions{Cluster: c, OutDir: out, Nodes: []string{"node1"}})
	got := snapshot(t, out)
	for _, rel := range []string{"node1/secrets/hb.key", "node1/pki-ca.pem", "node1/tls/node.pem", "node1/tls/node-key.pem"} {
		if got[rel] == nil {
			t.Errorf("missing %s; have %v", rel, slices.Sorted(mapKeys(got)))
		}
	}
	if len(plan.Outside) != 1 || !strings.Contains(plan.Outside[0], "/etc/ssl/halo/node.pem") {
		t.Errorf("outside: %v", plan.Outside)
	}

	clash := strings.Replace(threeNodes, `network "default" {}`, `network "default" {}
  tls { key_file = "tls/node.pem" }`, 1)
	c = loadCluster(t, dir, clash)
	if _, err := PlanInit(InitOptions{Cluster: c, OutDir: filepath.Join(dir, "out2"), Now: testNow}); err == nil || !strings.Contains(err.Error(), "same file twice") {
		t.Errorf("cert and key in one file: %v", err)
	}
}

func TestClusterKeyParse(t *testing.T) {
	k, err := NewClusterKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := NewClusterKey()
	if bytes.Equal(k, k2) {
		t.Error("two cluster keys are equal")
	}
	back, err := ParseClusterKey(append([]byte("  "), EncodeClusterKey(k)...))
	if err != nil || !bytes.Equal(back, k) {
		t.Errorf("round trip: %x, %v", back, err)
	}
	for _, bad := range []string{"", "zz", strings.Repeat("ab", 31)} {
		if _, err := ParseClusterKey([]byte(bad)); err == nil {
			t.Errorf("ParseClusterKey(%q) accepted", bad)
		}
	}
}

func TestParseMaterialRejects(t *testing.T) {
	ca, _ := NewCA("t", testNow)
	other, _ := NewCA("other", testNow)
	key, _ := NewKey()
	leaf, err := ca.IssueNode("node1", nil, key, testNow)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := leaf.KeyPEM()
	wrongKey, _ := NewKey()
	wrongKeyPEM, _ := encodeKey(wrongKey)
	ecKeyDER, _ := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	sec1PEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecKeyDER})

	if _, err := ParseMaterial(ca.CertPEM(), leaf.CertPEM(), sec1PEM, testNow); err != nil {
		t.Errorf("SEC 1 key: %v", err)
	}
	for _, tc := range []struct {
		name                 string
		caPEM, cert, keyData []byte
		now                  time.Time
		want                 string
	}{
		{"other CA", other.CertPEM(), leaf.CertPEM(), keyPEM, testNow, "against the cluster CA"},
		{"wrong key", ca.CertPEM(), leaf.CertPEM(), wrongKeyPEM, testNow, "does not match"},
		{"expired", ca.CertPEM(), leaf.CertPEM(), keyPEM, testNow.Add(LeafValidity + time.Hour), "expired"},
		{"no cert", ca.CertPEM(), nil, keyPEM, testNow, "no PEM CERTIFICATE"},
		{"encrypted key", ca.CertPEM(), leaf.CertPEM(), []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), testNow, "encrypted"},
	} {
		if _, err := ParseMaterial(tc.caPEM, tc.cert, tc.keyData, tc.now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParseClusterKey(f *testing.F) {
	k, _ := NewClusterKey()
	f.Add(EncodeClusterKey(k))
	f.Add([]byte("zz\n"))
	f.Add([]byte(strings.Repeat("0", 63)))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := ParseClusterKey(data)
		if err != nil {
			return
		}
		if len(key) < ClusterKeySize {
			t.Fatalf("accepted a %d-byte key", len(key))
		}
		back, err := ParseClusterKey(EncodeClusterKey(key))
		if err != nil || !bytes.Equal(back, key) {
			t.Fatalf("round trip: %x → %x, %v", key, back, err)
		}
	})
}

// Rotating the CA is removing it and running init again: every node's
// certificate is re-issued under the new CA, for the key it already has.
func TestInitCARotation(t *testing.T) {
	dir := t.TempDir()
	c := loadCluster(t, dir, threeNodes)
	out := filepath.Join(dir, "out")
	initOK(t, InitOptions{Cluster: c, OutDir: out})
	before := snapshot(t, out)
	for _, f := range []string{"ca.pem", "ca-key.pem"} {
		if err := os.Remove(filepath.Join(out, f)); err != nil {
			t.Fatal(err)
		}
	}
	plan := initOK(t, InitOptions{Cluster: c, OutDir: out})
	after := snapshot(t, out)
	a := actions(plan, out)
	for _, n := range []string{"node1", "node2", "node3"} {
		if a[n+"/tls/node.pem"] != ActionReplace || a[n+"/tls/ca.pem"] != ActionReplace || a[n+"/tls/node-key.pem"] != ActionKeep {
			t.Errorf("%s: %v", n, a)
		}
		if _, err := ParseMaterial(after["ca.pem"], after[n+"/tls/node.pem"], after[n+"/tls/node-key.pem"], testNow); err != nil {
			t.Errorf("%s under the new CA: %v", n, err)
		}
	}
	if bytes.Equal(before["ca.pem"], after["ca.pem"]) || !bytes.Equal(before["cluster.key"], after["cluster.key"]) {
		t.Error("rotation: CA kept or cluster key changed")
	}
}
