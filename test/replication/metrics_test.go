package replication

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/internal/metrics"
	"github.com/halo-ha/halo/sdk/api"
	"github.com/halo-ha/halo/test/mirror/mirrorbed"
	"github.com/halo-ha/halo/test/testbed"
)

// metricsPort is the cluster's plain-HTTP metrics port in this test (each
// node listens in its own network namespace).
const metricsPort = 9464

// Prometheus metrics and `halo status` of a running replicated pair: the
// replication series on both nodes, bytes sent growing with the writes
// (on the API socket and on the certificate-free listener, scraped from
// another host), the status lines, and a stopped daemon that costs the
// scrape its own series only.
func TestMetricsAndStatus(t *testing.T) {
	rc := newReplCluster(t, clusterOpts{
		cluster: fmt.Sprintf("  metrics {\n    port = %d\n    networks = [\"default\"]\n  }\n", metricsPort),
		// Slow enough for a resync of a few MiB to be seen running.
		extra: fmt.Sprintf("    resync {\n      bandwidth = \"%dMB/s\"\n    }\n", resyncMBps),
	})
	n1, n2 := rc.firstStart()
	mod := map[string]string{"module": module}
	with := func(kv ...string) map[string]string {
		l := map[string]string{"module": module}
		for i := 0; i < len(kv); i += 2 {
			l[kv[i]] = kv[i+1]
		}
		return l
	}

	src := scrapeAPI(t, n1)
	for _, c := range []struct {
		family string
		labels map[string]string
		want   float64
	}{
		{"halo_replication_up", mod, 1},
		{"halo_replication_role", with("role", "source"), 1},
		{"halo_replication_mode", with("mode", "sync"), 1},
		{"halo_replication_connected", mod, 1},
		{"halo_replication_peer_up_to_date", mod, 1},
		{"halo_module_state", with("state", "PRIM"), 1},
	} {
		expectValue(t, n1.Name, src, c.family, c.labels, c.want)
	}
	tgt := scrapeAPI(t, n2)
	expectValue(t, n2.Name, tgt, "halo_replication_role", with("role", "target"), 1)
	expectValue(t, n2.Name, tgt, "halo_module_state", with("state", "SECOND"), 1)
	// node2's first start was a full resync, now finished.
	expectValue(t, n2.Name, tgt, "halo_replication_resync_state", with("state", "done"), 1)
	expectValue(t, n2.Name, tgt, "halo_replication_resync_full", mod, 1)
	expectValue(t, n2.Name, tgt, "halo_heartbeat_up", with("network", "default", "peer", "node1"), 1)

	// Writes on the primary show in bytes sent, on both endpoints.
	sent0 := value(t, src, "halo_replication_sent_bytes_total", mod)
	ops0 := value(t, src, "halo_replication_sent_ops_total", mod)
	acked0 := value(t, src, "halo_replication_acked_ops_total", mod)
	durable0 := value(t, src, "halo_replication_durable_ops_total", mod)
	const size = 4 << 20
	data := make([]byte, size)
	_, _ = rand.Read(data)
	mustWrite(t, filepath.Join(rc.dirs[n1.Name], "metrics.dat"), data)
	after := scrapeAPI(t, n1)
	sent1 := value(t, after, "halo_replication_sent_bytes_total", mod)
	ops1 := value(t, after, "halo_replication_sent_ops_total", mod)
	acked1 := value(t, after, "halo_replication_acked_ops_total", mod)
	durable1 := value(t, after, "halo_replication_durable_ops_total", mod)
	t.Logf("node1 sent %.0f bytes, %.0f ops for a %d-byte fsync'd write; %.0f acknowledged applied, %.0f durable",
		sent1-sent0, ops1-ops0, size, acked1-acked0, durable1-durable0)
	// The write was fsync'd in sync mode: it crossed the stream, and the
	// peer applied it and made it durable, before the fsync returned.
	if sent1-sent0 < size || ops1 <= ops0 || acked1 <= acked0 || durable1 <= durable0 {
		t.Fatalf("after writing %d bytes: bytes sent %v -> %v, ops %v -> %v, acked %v -> %v, durable %v -> %v",
			size, sent0, sent1, ops0, ops1, acked0, acked1, durable0, durable1)
	}
	// The fsync waited for the peer's disk: the daemon timed it.
	if n := value(t, after, "halo_replication_sync_latency_seconds", mod); n < 1 {
		t.Fatalf("no fsync in the sync latency histogram (count %v)", n)
	}
	if n := value(t, after, "halo_replication_write_latency_seconds", mod); n < 1 {
		t.Fatalf("no write in the write latency histogram (count %v)", n)
	}
	plain := scrapePlain(t, rc.Client, n1.Host.Addr("default"))
	if v := value(t, plain, "halo_replication_sent_bytes_total", mod); v < sent1 {
		t.Fatalf("plain listener: bytes sent %v, below the API's %v", v, sent1)
	}
	expectValue(t, n1.Name, plain, "halo_module_state", with("state", "PRIM"), 1)

	// halo status: the daemon's status reaches the API within its refresh
	// period (a second).
	var m api.ModuleStatus
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, code, err := n1.CLI(ctxFor(t, 30*time.Second), "status", "--json")
		if err != nil || code != 0 {
			t.Fatalf("halo status --json: exit %d, %v: %s", code, err, out)
		}
		var mods []api.ModuleStatus
		if err := json.Unmarshal([]byte(out), &mods); err != nil || len(mods) != 1 {
			t.Fatalf("halo status --json: %v: %s", err, out)
		}
		m = mods[0]
		if r := m.Replication; r != nil && r.BytesSent >= uint64(sent1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("halo status --json never showed the bytes sent: %+v", m.Replication)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := m.Replication; !r.Up || r.Mode != "sync" || r.Role != "source" || r.Peer != "node2" || !r.Connected || !r.PeerUpToDate {
		t.Fatalf("halo status --json replication: %+v", r)
	}
	out, code, err := n1.CLI(ctxFor(t, 30*time.Second), "status")
	if err != nil || code != 0 {
		t.Fatalf("halo status: exit %d, %v: %s", code, err, out)
	}
	t.Logf("node1 halo status:\n%s", out)
	if want := module + ": replication sync, source to node2, in sync (connected, peer up to date), lag "; !strings.Contains(out, want) {
		t.Fatalf("halo status lacks %q:\n%s", want, out)
	}
	// The agent refreshes the daemon's status every second: the end of
	// node2's resync may not be in it yet.
	deadline = time.Now().Add(10 * time.Second)
	for {
		out, code, err = n2.CLI(ctxFor(t, 30*time.Second), "status", "-v")
		if err != nil || code != 0 {
			t.Fatalf("halo status -v: exit %d, %v: %s", code, err, out)
		}
		missing := ""
		for _, want := range []string{
			module + ": replication sync, target of node1, in sync (connected, this node up to date)",
			"(full) 100.0% (",
			module + ": journal ",
		} {
			if !strings.Contains(out, want) {
				missing = want
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("halo status -v on node2 lacks %q:\n%s", missing, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("node2 halo status -v:\n%s", out)

	// A stopped daemon (the target's: the primary, writing nothing, only
	// sees its peer stall) is reported down within the scrape budget,
	// and the rest of the scrape is served.
	resume := rc.stopDaemon(n2)
	defer resume()
	start := time.Now()
	stopped := scrapeAPI(t, n2)
	took := time.Since(start)
	resume()
	t.Logf("scrape with a stopped daemon took %v", took)
	expectValue(t, n2.Name, stopped, "halo_replication_up", mod, 0)
	expectValue(t, n2.Name, stopped, "halo_module_state", with("state", "SECOND"), 1)
	if _, ok, _ := stopped.Value("halo_replication_sent_bytes_total", mod); ok {
		t.Fatal("figures of a daemon that did not answer were exported")
	}
	if took > 5*time.Second {
		t.Fatalf("a stopped daemon held the scrape %v", took)
	}
	waitRoles(t, n1, n2)

	// A resync running: its progress, rate and ETA in halo status and in
	// the metrics of the node that receives it.
	if err := n2.Command(ctxFor(t, 30*time.Second), "stop"); err != nil {
		t.Fatal(err)
	}
	waitState(t, n2, "STOP", "")
	waitState(t, n1, "ALONE", "Ready")
	big := make([]byte, resyncBytes)
	_, _ = rand.Read(big)
	mustWrite(t, filepath.Join(rc.dirs[n1.Name], "resync.dat"), big)
	seq := lastSeq(t, n2)
	if err := n2.Command(ctxFor(t, 30*time.Second), "start"); err != nil {
		t.Fatal(err)
	}
	progressRE := regexp.MustCompile(`resync \d+ \(incremental\) (\d+\.\d)% \([^)]*\) at [^,]+/s, ETA (\S+)`)
	seen := ""
	deadline = time.Now().Add(waitLong)
	for seen == "" && time.Now().Before(deadline) {
		out, code, err := n2.CLI(ctxFor(t, 30*time.Second), "status")
		if err != nil || code != 0 {
			t.Fatalf("halo status: exit %d, %v: %s", code, err, out)
		}
		if m := progressRE.FindStringSubmatch(out); m != nil && m[1] != "0.0" && m[1] != "100.0" && m[2] != "unknown" {
			seen = m[0]
			e := scrapeAPI(t, n2)
			expectValue(t, n2.Name, e, "halo_replication_resync_state", with("state", "running"), 1)
			if total := value(t, e, "halo_replication_resync_total_bytes", mod); total < resyncBytes {
				t.Fatalf("resync total %v bytes, below the %d written", total, resyncBytes)
			}
			t.Logf("node2 halo status during the resync:\n%s", out)
			break
		}
		time.Sleep(150 * time.Millisecond)
	}
	if seen == "" {
		t.Fatal("halo status never showed the resync running with a percentage and an ETA")
	}
	waitResync(t, n2, seq)
	waitRoles(t, n1, n2)
	rc.waitVerified(n1)
}

// The resync the test watches: resyncBytes at resyncMBps take a few
// seconds.
const (
	resyncBytes = 8 << 20
	resyncMBps  = 2
)

func scrapeAPI(t *testing.T, n *mirrorbed.Node) metrics.Exposition {
	t.Helper()
	body, err := n.Client().Metrics(ctxFor(t, 20*time.Second))
	if err != nil {
		t.Fatalf("%s: GET /metrics: %v", n.Name, err)
	}
	e, err := metrics.Parse(body)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	return e
}

// scrapePlain GETs /metrics from the plain-HTTP listener at addr, from
// host h (as a Prometheus server on the network would, without a
// certificate).
func scrapePlain(t *testing.T, h *testbed.Host, addr netip.Addr) metrics.Exposition {
	t.Helper()
	target := netip.AddrPortFrom(addr, metricsPort).String()
	var conn net.Conn
	err := h.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", target, 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("connect to the metrics listener %s from %s: %v", target, h.Name, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+target+"/metrics", nil)
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET http://%s/metrics: %d %v: %s", target, resp.StatusCode, err, body)
	}
	e, err := metrics.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func value(t *testing.T, e metrics.Exposition, family string, labels map[string]string) float64 {
	t.Helper()
	v, ok, err := e.Value(family, labels)
	if err != nil || !ok {
		t.Fatalf("%s%v: present %v, %v", family, labels, ok, err)
	}
	return v
}

func expectValue(t *testing.T, node string, e metrics.Exposition, family string, labels map[string]string, want float64) {
	t.Helper()
	if v := value(t, e, family, labels); v != want {
		t.Fatalf("%s: %s%v = %v, want %v", node, family, labels, v, want)
	}
}
