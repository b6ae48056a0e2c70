package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/halo-ha/halo/internal/config"
)

// Names of the cluster-wide files at the top of an init output directory.
const (
	CAFileName         = "ca.pem"
	CAKeyFileName      = "ca-key.pem"
	ClusterKeyFileName = "cluster.key"
	UsersDirName       = "users"
)

// RenewBefore is how close to expiry an existing certificate is re-issued
// by PlanInit.
const RenewBefore = 30 * 24 * time.Hour

// InitOptions are the inputs of PlanInit.
type InitOptions struct {
	Cluster *config.Cluster
	// OutDir receives the CA, the cluster key and one directory per node.
	OutDir string
	// Nodes to write files for; empty = every node of the cluster.
	Nodes []string
	// Users to issue client certificates for; each must be declared in
	// the cluster.
	Users []string
	// Force replaces existing node and user keys (and node copies of the
	// cluster key that differ from OutDir's). The CA and OutDir's cluster
	// key are never replaced: they are shared by every node, so rotating
	// them is deliberate — remove them and run init again.
	Force bool
	Now   time.Time
}

// Action is what Apply does to one file.
type Action string

const (
	ActionCreate  Action = "created"
	ActionReplace Action = "replaced"
	ActionKeep    Action = "kept"
)

// FileChange is one file of an init plan.
type FileChange struct {
	Path   string
	Action Action
	// Note says why, or what the file is for; may be empty.
	Note string
	Mode os.FileMode
	data []byte
}

// InitPlan is everything `halo cluster init` will write, computed (keys
// generated, certificates signed) before anything touches the disk.
type InitPlan struct {
	OutDir  string
	Changes []FileChange
	// NodeDirs maps each selected node to its output directory, which
	// mirrors the node's configuration directory.
	NodeDirs map[string]string
	// Outside lists files cluster.hcl places outside its own directory:
	// they are written into the node directory under their default name
	// and must be moved by hand.
	Outside []string
}

// PlanInit checks the options and the existing output directory and
// computes the files to write. It writes nothing: on any error the disk
// is untouched. Problems are joined so one run reports them all.
func PlanInit(opts InitOptions) (*InitPlan, error) {
	c := opts.Cluster
	if c == nil {
		return nil, errors.New("plan cluster init: no cluster")
	}
	if opts.OutDir == "" {
		return nil, errors.New("plan cluster init: no output directory")
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	out, err := filepath.Abs(opts.OutDir)
	if err != nil {
		return nil, fmt.Errorf("plan cluster init: %w", err)
	}
	p := &planner{opts: opts, plan: &InitPlan{OutDir: out, NodeDirs: map[string]string{}}}

	nodes, users := p.selectPrincipals()
	if st, err := os.Stat(out); err == nil && !st.IsDir() {
		p.fail(fmt.Errorf("%s exists and is not a directory", out))
	}
	if len(p.errs) > 0 {
		return nil, p.err()
	}

	ca := p.planCA()
	clusterKey := p.planClusterKey()
	if ca == nil || clusterKey == nil {
		return nil, p.err()
	}
	for _, n := range nodes {
		p.planNode(ca, clusterKey, n)
	}
	for _, u := range users {
		p.planUser(ca, u)
	}
	if len(p.errs) > 0 {
		return nil, p.err()
	}
	return p.plan, nil
}

// Apply writes the plan: directories 0700, secrets 0600, each file
// replaced atomically. Keys are written before the certificates that need
// them, so an interrupted run leaves nothing a rerun cannot complete.
func (p *InitPlan) Apply() error {
	if err := mkdirPrivate(p.OutDir); err != nil {
		return err
	}
	for _, ch := range p.Changes {
		if ch.Action == ActionKeep {
			continue
		}
		if err := mkdirPrivate(filepath.Dir(ch.Path)); err != nil {
			return err
		}
		if err := writeFileAtomic(ch.Path, ch.data, ch.Mode); err != nil {
			return fmt.Errorf("apply cluster init: %w", err)
		}
	}
	return nil
}

func mkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, DirectoryMode); err != nil {
		return fmt.Errorf("apply cluster init: create %s: %w", dir, err)
	}
	return nil
}

type planner struct {
	opts InitOptions
	plan *InitPlan
	errs []error
}

func (p *planner) fail(err error) { p.errs = append(p.errs, err) }

func (p *planner) err() error { return initErrors(p.errs) }

// initErrors lists every problem PlanInit found, one per line.
type initErrors []error

func (e initErrors) Error() string {
	if len(e) == 1 {
		return "cluster init: " + e[0].Error() + "; nothing written"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "cluster init: %d problems; nothing written:", len(e))
	for _, err := range e {
		b.WriteString("\n  - " + err.Error())
	}
	return b.String()
}

func (e initErrors) Unwrap() []error { return e }

func (p *planner) path(elem ...string) string {
	return filepath.Join(append([]string{p.plan.OutDir}, elem...)...)
}

func (p *planner) add(path string, action Action, mode os.FileMode, data []byte, note string) {
	p.plan.Changes = append(p.plan.Changes, FileChange{Path: path, Action: action, Mode: mode, data: data, Note: note})
}

// selectPrincipals resolves --node and --user against the cluster.
func (p *planner) selectPrincipals() ([]*config.Node, []*config.User) {
	c := p.opts.Cluster
	var nodes []*config.Node
	if len(p.opts.Nodes) == 0 {
		nodes = c.Nodes
	}
	for _, name := range p.opts.Nodes {
		n := c.Node(name)
		if n == nil {
			p.fail(fmt.Errorf("node %q is not declared in %s (declared: %s)", name, c.File, strings.Join(c.NodeNames(), ", ")))
			continue
		}
		if !slices.Contains(nodes, n) {
			nodes = append(nodes, n)
		}
	}
	var users []*config.User
	for _, name := range p.opts.Users {
		var u *config.User
		for _, cu := range c.Users {
			if cu.Name == name {
				u = cu
			}
		}
		if u == nil {
			p.fail(fmt.Errorf("user %q is not declared in %s; add user %q { role = \"monitor\" } to the cluster block first", name, c.File, name))
			continue
		}
		if !slices.Contains(users, u) {
			users = append(users, u)
		}
	}
	// Node directories sit beside the cluster-wide files; a node named
	// like one of them would overwrite it.
	reserved := []string{CAFileName, CAKeyFileName, ClusterKeyFileName, UsersDirName}
	for _, n := range nodes {
		if slices.Contains(reserved, n.Name) {
			p.fail(fmt.Errorf("node %q cannot be written to %s: a cluster-wide file or directory has that name; use another node name", n.Name, p.plan.OutDir))
		}
	}
	return nodes, users
}

// planCA reuses the CA in OutDir, or creates one. It returns nil after
// recording why no certificate can be issued.
func (p *planner) planCA() *CA {
	certPath, keyPath := p.path(CAFileName), p.path(CAKeyFileName)
	haveCert, haveKey := exists(certPath), exists(keyPath)
	switch {
	case haveCert && haveKey:
		ca, err := LoadCA(certPath, keyPath)
		if err != nil {
			p.fail(err)
			return nil
		}
		if !ca.Cert.NotAfter.After(p.opts.Now) {
			p.fail(fmt.Errorf("the CA %s expired on %s; to start over with a new CA, remove %s and %s (every node then needs its new files)",
				certPath, ca.Cert.NotAfter.Format(time.DateOnly), certPath, keyPath))
			return nil
		}
		p.add(keyPath, ActionKeep, SecretMode, nil, "CA private key")
		p.add(certPath, ActionKeep, PublicMode, nil, "CA certificate")
		return ca
	case haveCert:
		p.fail(fmt.Errorf("%s exists without %s: that is an external CA, and halo cannot issue certificates without its key. "+
			"Either place the CA key as %s and run init again, or have your CA issue each node's certificate yourself: "+
			"subject CN=<node name> and OU=%s, DNS SAN <node name>, IP SANs the node's addresses in cluster.hcl, "+
			"extended key usages serverAuth and clientAuth; install it with its key and the CA certificate where the node's cluster.hcl tls block points "+
			"(default tls/node.pem, tls/node-key.pem, tls/ca.pem beside cluster.hcl)",
			certPath, keyPath, keyPath, OUNode))
		return nil
	case haveKey:
		p.fail(fmt.Errorf("%s exists without %s: restore the CA certificate, or remove the key to create a new CA", keyPath, certPath))
		return nil
	}
	ca, err := NewCA(p.opts.Cluster.Name, p.opts.Now)
	if err != nil {
		p.fail(err)
		return nil
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		p.fail(err)
		return nil
	}
	p.add(keyPath, ActionCreate, SecretMode, keyPEM, "CA private key")
	p.add(certPath, ActionCreate, PublicMode, ca.CertPEM(), "CA certificate")
	return ca
}

func (p *planner) planClusterKey() []byte {
	path := p.path(ClusterKeyFileName)
	if exists(path) {
		key, err := LoadClusterKey(path)
		if err != nil {
			p.fail(err)
			return nil
		}
		p.add(path, ActionKeep, SecretMode, nil, "cluster key")
		return key
	}
	key, err := NewClusterKey()
	if err != nil {
		p.fail(err)
		return nil
	}
	p.add(path, ActionCreate, SecretMode, EncodeClusterKey(key), "cluster key (heartbeat HMAC)")
	return key
}

// nodeFile places a file cluster.hcl names in the node's output directory:
// at the same path relative to the cluster file's directory, or, for a
// path outside it, under def with a note to move it.
func (p *planner) nodeFile(nodeDir, configured, def string) string {
	base := filepath.Dir(p.opts.Cluster.File)
	if abs, err := filepath.Abs(base); err == nil {
		base = abs
	}
	rel, err := filepath.Rel(base, configured)
	if err == nil && filepath.IsLocal(rel) {
		return filepath.Join(nodeDir, rel)
	}
	path := filepath.Join(nodeDir, def)
	p.plan.Outside = append(p.plan.Outside, fmt.Sprintf("%s → %s", path, configured))
	return path
}

func (p *planner) planNode(ca *CA, clusterKey []byte, n *config.Node) {
	c := p.opts.Cluster
	dir := p.path(n.Name)
	p.plan.NodeDirs[n.Name] = dir
	caPath := p.nodeFile(dir, c.TLS.CAFile, config.DefaultCAFile)
	certPath := p.nodeFile(dir, c.TLS.CertFile, config.DefaultCertFile)
	keyPath := p.nodeFile(dir, c.TLS.KeyFile, config.DefaultKeyFile)
	ckPath := p.nodeFile(dir, c.KeyFile, config.DefaultClusterKeyFile)
	if paths := []string{caPath, certPath, keyPath, ckPath}; len(slices.Compact(slices.Sorted(slices.Values(paths)))) != len(paths) {
		p.fail(fmt.Errorf("%s names the same file twice among tls.ca_file, tls.cert_file, tls.key_file and key_file; each needs its own", c.File))
		return
	}

	p.planPublic(caPath, ca.CertPEM(), "CA certificate")
	addrs := make([]netip.Addr, 0, len(n.Addresses))
	for _, net := range c.NetworkNames() {
		if a, ok := n.Addresses[net]; ok {
			addrs = append(addrs, a)
		}
	}
	issue := func(key crypto.Signer) (*Leaf, error) { return ca.IssueNode(n.Name, addrs, key, p.opts.Now) }
	want := func(cert *x509.Certificate) string { return nodeCertMismatch(cert, n.Name, addrs) }
	p.planLeaf(ca, "node "+n.Name, keyPath, certPath, issue, want)

	encoded := EncodeClusterKey(clusterKey)
	switch old, err := os.ReadFile(ckPath); {
	case errors.Is(err, fs.ErrNotExist):
		p.add(ckPath, ActionCreate, SecretMode, encoded, "cluster key")
	case err != nil:
		p.fail(fmt.Errorf("read %s: %w", ckPath, err))
	case bytes.Equal(old, encoded):
		p.add(ckPath, ActionKeep, SecretMode, nil, "cluster key")
	case p.opts.Force:
		p.add(ckPath, ActionReplace, SecretMode, encoded, "cluster key (differed from "+p.path(ClusterKeyFileName)+")")
	default:
		p.fail(fmt.Errorf("%s differs from %s; rerun with --force to replace it", ckPath, p.path(ClusterKeyFileName)))
	}
}

func (p *planner) planUser(ca *CA, u *config.User) {
	dir := p.path(UsersDirName, u.Name)
	p.planPublic(filepath.Join(dir, CAFileName), ca.CertPEM(), "CA certificate")
	issue := func(key crypto.Signer) (*Leaf, error) { return ca.IssueUser(u.Name, key, p.opts.Now) }
	want := func(cert *x509.Certificate) string {
		if id, err := IdentityOf(cert); err != nil || id != (Identity{Kind: KindUser, Name: u.Name}) {
			return "names another principal"
		}
		return ""
	}
	p.planLeaf(ca, "user "+u.Name, filepath.Join(dir, u.Name+"-key.pem"), filepath.Join(dir, u.Name+".pem"), issue, want)
}

// planPublic writes a non-secret file unless it already holds data.
func (p *planner) planPublic(path string, data []byte, note string) {
	switch old, err := os.ReadFile(path); {
	case errors.Is(err, fs.ErrNotExist):
		p.add(path, ActionCreate, PublicMode, data, note)
	case err != nil:
		p.fail(fmt.Errorf("read %s: %w", path, err))
	case bytes.Equal(old, data):
		p.add(path, ActionKeep, PublicMode, nil, note)
	default:
		p.add(path, ActionReplace, PublicMode, data, note+" (differed)")
	}
}

// planLeaf keeps an existing key unless Force, and keeps an existing
// certificate only while it still fits: issued by this CA for that key,
// naming what mismatch expects, and not about to expire. Otherwise the
// certificate is re-issued, for the kept key when there is one.
func (p *planner) planLeaf(ca *CA, who, keyPath, certPath string,
	issue func(crypto.Signer) (*Leaf, error), mismatch func(*x509.Certificate) string) {
	var key crypto.Signer
	keyExists := exists(keyPath)
	if keyExists && !p.opts.Force {
		data, err := readSecret(keyPath)
		if err == nil {
			key, err = parsePrivateKey(data)
		}
		if err != nil {
			p.fail(fmt.Errorf("key of %s: %w; fix it, or rerun with --force to replace it", who, err))
			return
		}
		p.add(keyPath, ActionKeep, SecretMode, nil, "private key of "+who)
	} else {
		var err error
		if key, err = NewKey(); err != nil {
			p.fail(err)
			return
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			p.fail(err)
			return
		}
		action := ActionCreate
		if keyExists {
			action = ActionReplace
		}
		p.add(keyPath, action, SecretMode, keyPEM, "private key of "+who)
	}

	certAction, why := ActionCreate, ""
	if exists(certPath) {
		certAction = ActionReplace
		if !keyExists || p.opts.Force {
			why = "new key"
		} else {
			why = certMismatch(ca, certPath, key, p.opts.Now, mismatch)
		}
		if why == "" {
			p.add(certPath, ActionKeep, PublicMode, nil, "certificate of "+who)
			return
		}
	}
	leaf, err := issue(key)
	if err != nil {
		p.fail(err)
		return
	}
	note := "certificate of " + who
	if why != "" {
		note += " (" + why + ")"
	}
	p.add(certPath, certAction, PublicMode, leaf.CertPEM(), note)
}

// certMismatch says why the certificate at path cannot be kept for key
// under ca, or "" if it can; mismatch checks what it names.
func certMismatch(ca *CA, path string, key crypto.Signer, now time.Time, mismatch func(*x509.Certificate) string) string {
	cert, err := readCert(path)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return "did not match the key"
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return "not valid under the CA"
	}
	if cert.NotAfter.Sub(now) < RenewBefore {
		return "expires " + cert.NotAfter.Format(time.DateOnly)
	}
	return mismatch(cert)
}

func nodeCertMismatch(cert *x509.Certificate, name string, addrs []netip.Addr) string {
	if id, err := IdentityOf(cert); err != nil || id != (Identity{Kind: KindNode, Name: name}) {
		return "names another principal"
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return "lacks serverAuth or clientAuth usage"
	}
	want := slices.Clone(addrs)
	if a, err := netip.ParseAddr(name); err == nil {
		want = append(want, a)
	}
	if !slices.Equal(uniqueAddrs(fromNetIPs(cert.IPAddresses)), uniqueAddrs(unmapAll(want))) {
		return "addresses changed"
	}
	return ""
}

func unmapAll(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = a.Unmap()
	}
	return out
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := parseCertificates(data)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
