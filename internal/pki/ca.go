package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"slices"
	"time"
)

// Validity periods. Leaf certificates never outlive their CA.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	LeafValidity = 5 * 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that a node whose clock is a little
	// behind the issuer's accepts a certificate issued a moment ago.
	clockSkew = time.Hour
)

// Organizational units that say what kind of principal a certificate
// names.
const (
	OUNode = "halo-node"
	OUUser = "halo-user"
)

// CA is the cluster certificate authority.
type CA struct {
	Cert *x509.Certificate
	// Signer is the CA's private key; nil for an external CA of which
	// halo holds only the certificate and therefore cannot issue.
	Signer crypto.Signer
}

// NewKey generates a private key of the kind this package issues for.
func NewKey() (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ECDSA P-256 key: %w", err)
	}
	return k, nil
}

// NewCA creates a self-signed CA for the named cluster, valid for
// CAValidity from now.
func NewCA(clusterName string, now time.Time) (*CA, error) {
	if clusterName == "" {
		return nil, errors.New("create CA: empty cluster name")
	}
	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   fmt.Sprintf("halo cluster %s CA", clusterName),
			Organization: []string{"halo cluster " + clusterName},
		},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA signs leaves directly; no intermediate may chain to it.
		MaxPathLenZero: true,
		SubjectKeyId:   skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	return &CA{Cert: cert, Signer: key}, nil
}

// ParseCA reads a CA from PEM. keyPEM may be nil for an external CA.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	cert := certs[0]
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("parse CA certificate: %q is not a CA certificate (basic constraints CA:TRUE missing)", cert.Subject.CommonName)
	}
	ca := &CA{Cert: cert}
	if keyPEM == nil {
		return ca, nil
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("parse CA key: it does not match the CA certificate %q", cert.Subject.CommonName)
	}
	ca.Signer = key
	return ca, nil
}

// LoadCA reads a CA certificate and, unless keyFile is "", its key. The key
// file must not be readable by group or others.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	var keyPEM []byte
	if keyFile != "" {
		if keyPEM, err = readSecret(keyFile); err != nil {
			return nil, fmt.Errorf("load CA: %w", err)
		}
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA from %s: %w", certFile, err)
	}
	return ca, nil
}

// CanIssue reports whether halo holds the CA's key.
func (ca *CA) CanIssue() bool { return ca.Signer != nil }

// CertPEM encodes the CA certificate.
func (ca *CA) CertPEM() []byte { return encodeCert(ca.Cert) }

// KeyPEM encodes the CA key (PKCS #8).
func (ca *CA) KeyPEM() ([]byte, error) {
	if ca.Signer == nil {
		return nil, errors.New("encode CA key: external CA, no key held")
	}
	return encodeKey(ca.Signer)
}

// Pool returns a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Leaf is an issued certificate and its private key.
type Leaf struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CertPEM encodes the certificate.
func (l *Leaf) CertPEM() []byte { return encodeCert(l.Cert) }

// KeyPEM encodes the private key (PKCS #8).
func (l *Leaf) KeyPEM() ([]byte, error) { return encodeKey(l.Key) }

// IssueNode issues the certificate of a node for key: CN and DNS SAN the
// node name, IP SANs its addresses, usable as TLS server and client.
func (ca *CA) IssueNode(name string, addrs []netip.Addr, key crypto.Signer, now time.Time) (*Leaf, error) {
	if name == "" {
		return nil, errors.New("issue node certificate: empty node name")
	}
	ips := make([]netip.Addr, 0, len(addrs)+1)
	for _, a := range addrs {
		ips = append(ips, a.Unmap())
	}
	// A node named like an address is verified as one by TLS clients
	// (Go checks IP SANs when ServerName parses as an IP).
	if a, err := netip.ParseAddr(name); err == nil {
		ips = append(ips, a.Unmap())
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, OrganizationalUnit: []string{OUNode}},
		DNSNames:    []string{name},
		IPAddresses: toNetIPs(uniqueAddrs(ips)),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leaf, err := ca.issue(tmpl, key, now)
	if err != nil {
		return nil, fmt.Errorf("issue certificate of node %q: %w", name, err)
	}
	return leaf, nil
}

// IssueUser issues a client certificate for an API/console user: CN the
// user name, usable as TLS client only.
func (ca *CA) IssueUser(name string, key crypto.Signer, now time.Time) (*Leaf, error) {
	if name == "" {
		return nil, errors.New("issue user certificate: empty user name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, OrganizationalUnit: []string{OUUser}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	leaf, err := ca.issue(tmpl, key, now)
	if err != nil {
		return nil, fmt.Errorf("issue certificate of user %q: %w", name, err)
	}
	return leaf, nil
}

func (ca *CA) issue(tmpl *x509.Certificate, key crypto.Signer, now time.Time) (*Leaf, error) {
	if ca.Signer == nil {
		return nil, errors.New("the CA key is not available (external CA)")
	}
	if key == nil {
		return nil, errors.New("no private key given")
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.SubjectKeyId = skid
	tmpl.BasicConstraintsValid = true
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(LeafValidity)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	if !tmpl.NotAfter.After(now) {
		return nil, fmt.Errorf("the CA expired on %s", ca.Cert.NotAfter.Format(time.DateOnly))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Signer)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	return &Leaf{Cert: cert, Key: key}, nil
}

func newSerial() (*big.Int, error) {
	// 128 random bits: serials must be unique per CA, and unpredictable.
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	// RFC 7093 method 1: leftmost 160 bits of the SHA-256 of the key.
	sum := sha256Sum(der)
	return sum[:20], nil
}

func uniqueAddrs(addrs []netip.Addr) []netip.Addr {
	out := slices.Clone(addrs)
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}
