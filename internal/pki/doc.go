// Package pki holds the cluster's public-key infrastructure: the cluster
// CA, node and user certificates, the cluster key that authenticates
// heartbeats, and the *tls.Config values built from them (SPEC §5).
//
// Identities. Every certificate the CA issues names one principal in its
// subject: CN is the node or user name, and the organizational unit says
// which of the two it is (OUNode, OUUser). The unit matters: a user called
// "node1" holds a certificate with CN=node1 too, and must never pass for
// the node. Node certificates carry both the serverAuth and clientAuth
// extended key usages, the node name as a DNS SAN and every address the
// node has in cluster.hcl as IP SANs (so a browser reaching the console by
// address accepts it once it trusts the CA). User certificates carry
// clientAuth only.
//
// Keys are ECDSA P-256: every TLS stack and browser accepts them, which is
// not yet true of Ed25519 certificates.
//
// Files written by `halo cluster init` (see PlanInit):
//
//	<out>/ca.pem                  CA certificate
//	<out>/ca-key.pem              CA private key (0600); keep it offline
//	<out>/cluster.key             cluster key, hex (0600)
//	<out>/<node>/tls/ca.pem       copy of the CA certificate
//	<out>/<node>/tls/node.pem     the node's certificate
//	<out>/<node>/tls/node-key.pem the node's private key (0600)
//	<out>/<node>/tls/cluster.key  copy of the cluster key (0600)
//	<out>/users/<user>/{ca.pem,<user>.pem,<user>-key.pem}
//
// <out>/<node>/ mirrors the node's configuration directory (/etc/halo), so
// copying it there puts every file where cluster.hcl's defaults look.
package pki
