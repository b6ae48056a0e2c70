package wire

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/pki"
)

const tlsCluster = `
cluster "test" {
  network "default" {}
  node "node1" {
    addresses = { default = "198.18.0.1" }
  }
  node "node2" {
    addresses = { default = "198.18.0.2" }
  }
  node "node3" {
    addresses = { default = "198.18.0.3" }
  }
}
`

// clusterMaterial runs `halo cluster init` into a temporary directory and
// loads every node's TLS material.
func clusterMaterial(t testing.TB) map[string]*pki.Material {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "cluster.hcl")
	if err := os.WriteFile(path, []byte(tlsCluster), 0o644); err != nil {
		t.Fatal(err)
	}
	c, diags := config.LoadCluster(path)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	plan, err := pki.PlanInit(pki.InitOptions{Cluster: c, OutDir: filepath.Join(dir, "out")})
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Apply(); err != nil {
		t.Fatal(err)
	}
	m := map[string]*pki.Material{}
	for node, nd := range plan.NodeDirs {
		tlsDir := filepath.Join(nd, "tls")
		mat, err := pki.LoadMaterial(filepath.Join(tlsDir, "ca.pem"), filepath.Join(tlsDir, "node.pem"), filepath.Join(tlsDir, "node-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		m[node] = mat
	}
	return m
}

// tlsPair connects client (as node from) to a server (as node to) that
// accepts only from, over loopback TCP with mutual TLS.
func tlsPair(t testing.TB, m map[string]*pki.Material, from, to, accept string) (client, server *tls.Conn, serverErr <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	errs := make(chan error, 1)
	conns := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errs <- err
			return
		}
		sc := tls.Server(c, m[to].PeerServerConfig(accept))
		if err := sc.HandshakeContext(context.Background()); err != nil {
			sc.Close()
			errs <- err
			return
		}
		conns <- sc
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client = tls.Client(raw, m[from].ClientConfig(to))
	t.Cleanup(func() { client.Close() })
	if err := client.HandshakeContext(context.Background()); err != nil {
		return nil, nil, errs
	}
	select {
	case server = <-conns:
		t.Cleanup(func() { server.Close() })
		return client, server, errs
	case err := <-errs:
		ch := make(chan error, 1)
		ch <- err
		return client, nil, ch
	}
}

// The stream runs over mutual TLS with the cluster's certificates, and a
// node the receiver does not expect cannot open it.
func TestStreamOverMutualTLS(t *testing.T) {
	m := clusterMaterial(t)
	srcDirs, dstDirs, src, dst := trees(t, 1)
	client, server, _ := tlsPair(t, m, "node1", "node2", "node1")
	if server == nil {
		t.Fatal("TLS handshake between node1 and node2 failed")
	}
	st := startStream(t, client, server, dst, 1, SenderOptions{Mode: ModeSync}, ReceiverOptions{})
	ctx := context.Background()
	n := replicate(t, ctx, st.s, src, srcDirs, 500, 99)
	if err := st.s.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, srcDirs[0], dstDirs[0])
	if err := st.closeAndWait(t); !closedBySource(err) {
		t.Fatalf("Serve: %v", err)
	}
	t.Logf("%d operations over TLS", n)

	// node3 holds a valid certificate of the cluster, but node2 accepts
	// its stream from node1 only.
	_, server3, errs := tlsPair(t, m, "node3", "node2", "node1")
	if server3 != nil {
		t.Fatal("node2 accepted node3's connection")
	}
	if err := <-errs; err == nil {
		t.Fatal("no handshake error")
	} else {
		t.Logf("refused: %v", err)
	}
}
