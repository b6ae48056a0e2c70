package pki

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// testPKI is a CA and material issued by it, made in memory.
type testPKI struct {
	t  *testing.T
	ca *CA
}

func newTestPKI(t *testing.T, cluster string) *testPKI {
	t.Helper()
	ca, err := NewCA(cluster, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{t: t, ca: ca}
}

func (p *testPKI) material(leaf *Leaf, err error) *Material {
	p.t.Helper()
	if err != nil {
		p.t.Fatal(err)
	}
	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		p.t.Fatal(err)
	}
	m, err := ParseMaterial(p.ca.CertPEM(), leaf.CertPEM(), keyPEM, time.Now())
	if err != nil {
		p.t.Fatal(err)
	}
	return m
}

func (p *testPKI) node(name string, addrs ...string) *Material {
	p.t.Helper()
	var as []netip.Addr
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	key, err := NewKey()
	if err != nil {
		p.t.Fatal(err)
	}
	return p.material(p.ca.IssueNode(name, as, key, time.Now()))
}

func (p *testPKI) user(name string) *Material {
	p.t.Helper()
	key, err := NewKey()
	if err != nil {
		p.t.Fatal(err)
	}
	return p.material(p.ca.IssueUser(name, key, time.Now()))
}

// handshake runs one TLS handshake over loopback and reports both sides'
// errors and the identity the server saw.
type handshakeResult struct {
	clientErr, serverErr error
	serverSaw            Identity
	serverSawErr         error
	version              uint16
}

func handshake(t *testing.T, server, client *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type srv struct {
		err   error
		id    Identity
		idErr error
	}
	done := make(chan srv, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- srv{err: err}
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(conn, server)
		if err := tc.Handshake(); err != nil {
			done <- srv{err: err}
			return
		}
		cs := tc.ConnectionState()
		id, idErr := PeerIdentity(&cs)
		// A byte proves the connection carries data both ways.
		if _, err := tc.Write([]byte{'k'}); err != nil {
			done <- srv{err: err}
			return
		}
		done <- srv{id: id, idErr: idErr}
	}()

	var res handshakeResult
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(conn, client)
	res.clientErr = tc.Handshake()
	if res.clientErr == nil {
		res.version = tc.ConnectionState().Version
		// In TLS 1.3 the server verifies the client's certificate after
		// the client's handshake returns: a rejection shows on first read.
		buf := make([]byte, 1)
		if _, err := io.ReadFull(tc, buf); err != nil {
			res.clientErr = err
		}
	}
	conn.Close()
	s := <-done
	res.serverErr, res.serverSaw, res.serverSawErr = s.err, s.id, s.idErr
	return res
}

func (r handshakeResult) ok() bool { return r.clientErr == nil && r.serverErr == nil }

func TestMutualTLSBetweenNodes(t *testing.T) {
	p := newTestPKI(t, "test")
	node1 := p.node("node1", "127.0.0.1", "198.18.0.1")
	node2 := p.node("node2", "198.18.0.2")

	// node2 dials node1 by address, expecting node1.
	r := handshake(t, node1.PeerServerConfig("node2"), node2.ClientConfig("node1"))
	if !r.ok() {
		t.Fatalf("node2 → node1: client %v, server %v", r.clientErr, r.serverErr)
	}
	if r.serverSaw != (Identity{KindNode, "node2"}) || r.serverSawErr != nil {
		t.Errorf("server saw %v (%v)", r.serverSaw, r.serverSawErr)
	}
	if r.version != tls.VersionTLS13 {
		t.Errorf("negotiated version %x", r.version)
	}

	// Any node of the CA may answer, but the client wants node3: refused.
	r = handshake(t, node1.PeerServerConfig(), node2.ClientConfig("node3"))
	if r.clientErr == nil {
		t.Fatal("client expecting node3 accepted node1's certificate")
	}
	if !strings.Contains(r.clientErr.Error(), "node3") {
		t.Errorf("client error does not name the expected node: %v", r.clientErr)
	}

	// The replication server expects node3 as client: node2 is refused.
	r = handshake(t, node1.PeerServerConfig("node3"), node2.ClientConfig("node1"))
	if r.ok() || r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "node node2 is not allowed") {
		t.Errorf("server expecting node3 accepted node2: client %v, server %v", r.clientErr, r.serverErr)
	}
}

func TestMutualTLSRejectsAnotherCA(t *testing.T) {
	p := newTestPKI(t, "test")
	rogue := newTestPKI(t, "test") // same cluster name, another key
	node1 := p.node("node1")
	node2 := p.node("node2")
	fakeNode1 := rogue.node("node1")
	fakeNode2 := rogue.node("node2")

	// A server with a certificate from another CA.
	r := handshake(t, fakeNode1.PeerServerConfig(), node2.ClientConfig("node1"))
	if r.clientErr == nil {
		t.Error("client accepted a server certificate from another CA")
	} else if !errors.As(r.clientErr, new(*tls.CertificateVerificationError)) {
		t.Errorf("client error is not a verification failure: %v", r.clientErr)
	}

	// A client with a certificate from another CA, on both server kinds.
	for name, cfg := range map[string]*tls.Config{
		"api":                         node1.ServerConfig(RequireClientCert),
		"peer":                        node1.PeerServerConfig(),
		"api allowing no certificate": node1.ServerConfig(AllowNoClientCert),
	} {
		// fakeNode2 does not trust node1 either; give it the real CA to
		// isolate the server's check.
		client := fakeNode2.ClientConfig("node1")
		client.RootCAs = node1.CA
		r := handshake(t, cfg, client)
		if r.ok() {
			t.Errorf("%s server accepted a client certificate from another CA", name)
		} else if r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "certificate") {
			t.Errorf("%s server error: %v", name, r.serverErr)
		}
	}
}

func TestAPIServerClientCertPolicy(t *testing.T) {
	p := newTestPKI(t, "test")
	node1 := p.node("node1")
	noCert := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: node1.CA, ServerName: "node1"}

	r := handshake(t, node1.ServerConfig(RequireClientCert), noCert)
	if r.ok() {
		t.Error("a client without a certificate passed a server that requires one")
	} else if r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "certificate") {
		t.Errorf("server error: %v", r.serverErr)
	}
	r = handshake(t, node1.PeerServerConfig(), noCert)
	if r.ok() {
		t.Error("a client without a certificate passed the peer server")
	}

	// The console: no certificate is fine, the caller asks for a password.
	r = handshake(t, node1.ServerConfig(AllowNoClientCert), noCert)
	if !r.ok() || !errors.Is(r.serverSawErr, ErrNoPeerCertificate) {
		t.Errorf("no certificate with AllowNoClientCert: client %v, server %v, identity err %v", r.clientErr, r.serverErr, r.serverSawErr)
	}

	// A user's certificate reaches the API with its identity, under both
	// policies.
	alice := p.user("alice")
	for _, policy := range []ClientCertPolicy{RequireClientCert, AllowNoClientCert} {
		r = handshake(t, node1.ServerConfig(policy), alice.ClientConfig("node1"))
		if !r.ok() || r.serverSaw != (Identity{KindUser, "alice"}) {
			t.Errorf("policy %d: user alice: client %v, server %v, saw %v", policy, r.clientErr, r.serverErr, r.serverSaw)
		}
	}

	// A TLS 1.2 client is refused.
	old := node1.ClientConfig("node1")
	old.MinVersion, old.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if r = handshake(t, node1.ServerConfig(RequireClientCert), old); r.ok() {
		t.Error("TLS 1.2 accepted")
	}
}

// A user named like a node holds CN=node1 from the same CA: it must pass
// for the node neither as a server nor as a client of the peer server.
func TestUserCannotImpersonateNode(t *testing.T) {
	p := newTestPKI(t, "test")
	node1 := p.node("node1")
	node2 := p.node("node2")
	impostor := p.user("node1")

	r := handshake(t, impostor.ServerConfig(RequireClientCert), node2.ClientConfig("node1"))
	if r.clientErr == nil {
		t.Error("node2 accepted a user certificate named node1 as node1")
	}
	r = handshake(t, node1.PeerServerConfig(), impostor.ClientConfig("node1"))
	if r.ok() || r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "user node1") {
		t.Errorf("peer server accepted user node1: client %v, server %v", r.clientErr, r.serverErr)
	}
}

// Node names may look unlike host names (underscores) or like addresses;
// the client's expected-name check must still hold.
func TestUnusualNodeNames(t *testing.T) {
	p := newTestPKI(t, "test")
	for _, name := range []string{"db_1", "198.18.0.77", "Node-A.example"} {
		server := p.node(name, "198.18.0.5")
		client := p.node("client")
		if r := handshake(t, server.PeerServerConfig(), client.ClientConfig(name)); !r.ok() {
			t.Errorf("%q: client %v, server %v", name, r.clientErr, r.serverErr)
		}
		other := p.node("x" + name)
		if r := handshake(t, other.PeerServerConfig(), client.ClientConfig(name)); r.clientErr == nil {
			t.Errorf("%q: accepted x%s's certificate", name, name)
		}
	}
}

func TestIdentityOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		cert x509.Certificate
		want Identity
		err  string
	}{
		{"node", x509.Certificate{Subject: pkix.Name{CommonName: "n1", OrganizationalUnit: []string{OUNode}}, DNSNames: []string{"n1"}}, Identity{KindNode, "n1"}, ""},
		{"user", x509.Certificate{Subject: pkix.Name{CommonName: "alice", OrganizationalUnit: []string{OUUser}}}, Identity{KindUser, "alice"}, ""},
		{"node without SAN", x509.Certificate{Subject: pkix.Name{CommonName: "n1", OrganizationalUnit: []string{OUNode}}, DNSNames: []string{"n2"}}, Identity{}, "lacks DNS SAN"},
		{"both", x509.Certificate{Subject: pkix.Name{CommonName: "n1", OrganizationalUnit: []string{OUUser, OUNode}}, DNSNames: []string{"n1"}}, Identity{}, "both"},
		{"neither", x509.Certificate{Subject: pkix.Name{CommonName: "n1"}}, Identity{}, "neither"},
		{"no CN", x509.Certificate{Subject: pkix.Name{OrganizationalUnit: []string{OUUser}}}, Identity{}, "no common name"},
	} {
		got, err := IdentityOf(&tc.cert)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v, %v; want %v, %q", tc.name, got, err, tc.want, tc.err)
		}
	}
	if _, err := PeerIdentity(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}); err == nil {
		t.Error("PeerIdentity trusted an unverified certificate")
	}
}

// A certificate that lists another node's name among its SANs (as an
// external CA might issue by mistake) passes host name verification; the
// subject check still refuses it.
func TestClientChecksSubjectNotOnlySANs(t *testing.T) {
	p := newTestPKI(t, "test")
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	wide := p.material(p.ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "node2", OrganizationalUnit: []string{OUNode}},
		DNSNames:    []string{"node1", "node2"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, key, time.Now()))
	client := p.node("node3")
	r := handshake(t, wide.PeerServerConfig(), client.ClientConfig("node1"))
	if r.clientErr == nil || !strings.Contains(r.clientErr.Error(), "the certificate is of node node2") {
		t.Errorf("client accepted node2's certificate as node1: %v", r.clientErr)
	}
	if r := handshake(t, wide.PeerServerConfig(), client.ClientConfig("node2")); !r.ok() {
		t.Errorf("as node2: client %v, server %v", r.clientErr, r.serverErr)
	}
}
