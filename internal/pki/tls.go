package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/halo-ha/halo/internal/config"
)

// Kind is the kind of principal a certificate names.
type Kind string

const (
	KindNode Kind = "node"
	KindUser Kind = "user"
)

// Identity is the principal a certificate names.
type Identity struct {
	Kind Kind
	Name string
}

func (id Identity) String() string { return string(id.Kind) + " " + id.Name }

// ErrNoPeerCertificate is returned by PeerIdentity when the peer presented
// no certificate (allowed by AllowNoClientCert).
var ErrNoPeerCertificate = errors.New("peer presented no certificate")

// IdentityOf reads the principal a certificate names. It does not verify
// the certificate: callers use it on verified chains only.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	cn := cert.Subject.CommonName
	isNode := slices.Contains(cert.Subject.OrganizationalUnit, OUNode)
	isUser := slices.Contains(cert.Subject.OrganizationalUnit, OUUser)
	switch {
	case cn == "":
		return Identity{}, errors.New("certificate has no common name")
	case isNode && isUser:
		return Identity{}, fmt.Errorf("certificate %q claims both OU=%s and OU=%s", cn, OUNode, OUUser)
	case isNode:
		if !slices.Contains(cert.DNSNames, cn) {
			return Identity{}, fmt.Errorf("node certificate %q lacks DNS SAN %q", cn, cn)
		}
		return Identity{Kind: KindNode, Name: cn}, nil
	case isUser:
		return Identity{Kind: KindUser, Name: cn}, nil
	default:
		return Identity{}, fmt.Errorf("certificate %q has neither OU=%s nor OU=%s", cn, OUNode, OUUser)
	}
}

// PeerIdentity returns the verified identity of the other end of a TLS
// connection (an http.Request's TLS field, a tls.Conn's state). It returns
// ErrNoPeerCertificate when the peer sent none, and an error when its
// certificate was not verified against the CA.
func PeerIdentity(cs *tls.ConnectionState) (Identity, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return Identity{}, ErrNoPeerCertificate
	}
	if len(cs.VerifiedChains) == 0 {
		return Identity{}, errors.New("peer certificate was not verified")
	}
	return IdentityOf(cs.VerifiedChains[0][0])
}

// Material is what a node (or a user's client) needs for TLS: the cluster
// CA to verify peers, and its own certificate and key.
type Material struct {
	CA       *x509.CertPool
	Cert     tls.Certificate
	Identity Identity
}

// LoadMaterial reads the CA certificate, a certificate (which may be
// followed by intermediates) and its key, and checks that the certificate
// is valid now under the CA and names a principal.
func LoadMaterial(caFile, certFile, keyFile string) (*Material, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS material: %w", err)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS material: %w", err)
	}
	keyPEM, err := readSecret(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS material: %w", err)
	}
	m, err := ParseMaterial(caPEM, certPEM, keyPEM, time.Now())
	if err != nil {
		return nil, fmt.Errorf("load TLS material (%s, %s, %s): %w", caFile, certFile, keyFile, err)
	}
	return m, nil
}

// ParseMaterial is LoadMaterial on PEM content, checking validity at now.
func ParseMaterial(caPEM, certPEM, keyPEM []byte, now time.Time) (*Material, error) {
	cas, err := parseCertificates(caPEM)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	chain, err := parseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	leaf := chain[0]
	if !publicKeysEqual(key.Public(), leaf.PublicKey) {
		return nil, fmt.Errorf("private key does not match certificate %q", leaf.Subject.CommonName)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("verify certificate %q against the cluster CA: %w", leaf.Subject.CommonName, err)
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return nil, err
	}
	tc := tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return &Material{CA: pool, Cert: tc, Identity: id}, nil
}

// LoadNodeMaterial loads the TLS material cluster.hcl names and checks that
// its certificate is the named node's: a node started with another node's
// files would otherwise impersonate it.
func LoadNodeMaterial(c *config.Cluster, node string) (*Material, error) {
	m, err := LoadMaterial(c.TLS.CAFile, c.TLS.CertFile, c.TLS.KeyFile)
	if err != nil {
		return nil, err
	}
	if want := (Identity{Kind: KindNode, Name: node}); m.Identity != want {
		return nil, fmt.Errorf("load TLS material: %s is the certificate of %s, not of %s", c.TLS.CertFile, m.Identity, want)
	}
	return m, nil
}

// ClientCertPolicy says whether a server demands a client certificate.
type ClientCertPolicy int

const (
	// RequireClientCert: every client presents a certificate from the
	// cluster CA.
	RequireClientCert ClientCertPolicy = iota
	// AllowNoClientCert: a client may present none and authenticate
	// otherwise (a console user's password); a certificate it does present
	// must still verify against the cluster CA.
	AllowNoClientCert
)

// ServerConfig is the agent API's TLS configuration: it serves this
// node's certificate and verifies client certificates against the CA. Any
// principal of the CA passes the handshake; the handler maps
// PeerIdentity to a role.
func (m *Material) ServerConfig(policy ClientCertPolicy) *tls.Config {
	auth := tls.RequireAndVerifyClientCert
	if policy == AllowNoClientCert {
		auth = tls.VerifyClientCertIfGiven
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{m.Cert},
		ClientCAs:    m.CA,
		ClientAuth:   auth,
	}
}

// PeerServerConfig is the TLS configuration of a node-to-node server
// (replication): the client must present the certificate of one of the
// named nodes. With no name, any node of the cluster is accepted, but
// never a user.
func (m *Material) PeerServerConfig(nodes ...string) *tls.Config {
	cfg := m.ServerConfig(RequireClientCert)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		id, err := PeerIdentity(&cs)
		if err != nil {
			return fmt.Errorf("verify peer node: %w", err)
		}
		if id.Kind != KindNode || (len(nodes) > 0 && !slices.Contains(nodes, id.Name)) {
			return fmt.Errorf("verify peer node: %s is not allowed here (expected node %v)", id, nodes)
		}
		return nil
	}
	return cfg
}

// ClientConfig is the TLS configuration to connect to the node named
// server (dial its address; the name comes from the configuration): it
// presents this material's certificate and accepts only a certificate
// from the cluster CA that names that very node. Any node's certificate
// verifies against the CA; checking the name is what stops one node from
// answering for another.
func (m *Material) ClientConfig(server string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{m.Cert},
		RootCAs:      m.CA,
		// Standard verification checks the chain, serverAuth and that the
		// node name is among the DNS SANs.
		ServerName: server,
		// And the subject must name that node as a node, not a user.
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := PeerIdentity(&cs)
			if err != nil {
				return fmt.Errorf("verify node %q: %w", server, err)
			}
			if want := (Identity{Kind: KindNode, Name: server}); id != want {
				return fmt.Errorf("verify node %q: the certificate is of %s", server, id)
			}
			return nil
		},
	}
}
