package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/internal/heartbeat"
	"github.com/halo-ha/halo/internal/metrics"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
	"github.com/halo-ha/halo/sdk/api"
)

// The agent's /metrics on its API socket follows the module: state,
// transitions, script runs and checker results.
func TestAgentMetrics(t *testing.T) {
	c, fp, stop := startTestAgent(t)
	defer stop()
	ctx := context.Background()
	if _, err := c.Command(ctx, "svc", api.CommandRequest{Command: "start"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitState(ctxT(t), "svc", "UP", "Ready"); err != nil {
		t.Fatal(err)
	}
	fp.checkers["proc"].set(core.CheckDown)
	waitFor(t, "a restart", func() bool { return fp.app.count("start_both") == 2 })
	fp.checkers["proc"].set(core.CheckUp)
	if _, err := c.WaitState(ctxT(t), "svc", "UP", "Ready"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the checker up again", func() bool {
		r, err := c.Resource(ctx, "svc", "checker.proc")
		return err == nil && r.Value == "up"
	})

	e := scrape(t, c)
	mod := map[string]string{"module": "svc", "node": "n1"}
	with := func(kv ...string) map[string]string {
		l := map[string]string{}
		for k, v := range mod {
			l[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			l[kv[i]] = kv[i+1]
		}
		return l
	}
	expect := func(family string, labels map[string]string, check func(float64) bool, want string) {
		t.Helper()
		v, ok, err := e.Value(family, labels)
		if err != nil || !ok || !check(v) {
			t.Fatalf("%s%v = %v (present %v, %v), want %s", family, labels, v, ok, err, want)
		}
	}
	eq := func(w float64) func(float64) bool { return func(v float64) bool { return v == w } }
	expect("halo_module_state", with("state", "UP"), eq(1), "1")
	expect("halo_module_state", with("state", "STOP"), eq(0), "0")
	expect("halo_module_readiness", with("readiness", "Ready"), eq(1), "1")
	expect("halo_module_loop_count", mod, eq(1), "1 restart")
	// Two start_both runs (start, then the restart); one stop_both.
	expect("halo_script_duration_seconds", with("script", "start_both"), eq(2), "2 runs")
	expect("halo_script_duration_seconds", with("script", "stop_both"), eq(1), "1 run")
	expect("halo_checker_failures_total", with("checker", "proc"), func(v float64) bool { return v >= 1 }, ">= 1")
	expect("halo_checker_checks_total", with("checker", "proc"), func(v float64) bool { return v >= 2 }, ">= 2")
	expect("halo_checker_status", with("checker", "proc", "status", "up"), eq(1), "1")
	expect("halo_module_failovers_total", mod, eq(0), "0 (a light module never fails over)")
	up := 0.0
	for _, s := range e["halo_module_transitions_total"].GetMetric() {
		for _, l := range s.GetLabel() {
			if l.GetName() == "to" && l.GetValue() == "UP" {
				up += s.GetCounter().GetValue()
			}
		}
	}
	if up < 1 {
		t.Fatalf("no transition to UP counted: %v", e["halo_module_transitions_total"])
	}
	if _, ok, _ := e.Value("halo_replication_up", nil); ok {
		t.Fatal("replication series for a module that does not replicate")
	}
}

func scrape(t *testing.T, c *api.Client) metrics.Exposition {
	t.Helper()
	body, err := c.Metrics(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	e, err := metrics.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// The plain-HTTP metrics listener serves /metrics and nothing else.
func TestAgentMetricsListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a := &Agent{opts: Options{Node: "n1", MetricsAddrs: []string{addr, "198.51.100.1:1"}}, logger: hclog.NewNullLogger(), runners: map[string]*moduleRunner{}}
	a.metrics = a.newMetrics()
	errc := make(chan error, 2)
	srv := a.serveMetrics(errc)
	if srv == nil {
		t.Fatal("no metrics server")
	}
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	if _, err := metrics.Parse([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if code, _ := get("/v1/modules"); code != http.StatusNotFound {
		t.Fatalf("the metrics listener serves the API: GET /v1/modules = %d", code)
	}
	select {
	case err := <-errc:
		t.Fatalf("a listener ended: %v (an address not on this host must only be logged)", err)
	default:
	}
}

func TestHeartbeatGaps(t *testing.T) {
	var g heartbeatGaps
	rx := func(net string, boot, seq uint64) { g.note(heartbeat.Received{Network: net, Boot: boot, Seq: seq}) }
	rx("a", 1, 10) // first seen: no history, no loss
	rx("a", 1, 11)
	rx("a", 1, 14) // 12, 13 lost
	rx("b", 1, 14)
	if g.missed("a") != 2 || g.missed("b") != 0 {
		t.Fatalf("missed a=%d b=%d, want 2 and 0", g.missed("a"), g.missed("b"))
	}
	rx("a", 1, 13) // late, inside the replay window: not lost after all
	if g.missed("a") != 1 {
		t.Fatalf("missed after a late frame = %d, want 1", g.missed("a"))
	}
	rx("a", 2, 1) // the peer restarted: numbering starts over
	rx("a", 2, 2)
	if g.missed("a") != 1 {
		t.Fatalf("missed after a peer restart = %d, want 1", g.missed("a"))
	}
	if g.missed("c") != 0 {
		t.Fatal("a network never heard has losses")
	}
}

func TestReplicationView(t *testing.T) {
	at := time.Now()
	v := replicationView(nil, errors.New("connect: refused"), at)
	if v.Up || v.Error != "connect: refused" || v.Mode != "" {
		t.Fatalf("dead daemon: %+v", v)
	}
	st := &ctl.Status{
		Role: "target", Peer: "n1", Mode: "sync", Link: "resync", Lag: 2 * time.Millisecond, BytesPerSec: 100,
		Applied: 7, Durable: 5, InFlightBytes: 99, RTT: time.Millisecond,
		Resync: &ctl.ResyncStatus{ID: 3, Done: 250, Total: 1000, BytesPerSec: 50, ETA: 15 * time.Second},
	}
	v = replicationView(st, nil, at)
	if !v.Up || !v.Connected || v.PeerUpToDate || v.LagSeconds != 0.002 || v.Resync == nil ||
		v.AckedOps != 7 || v.DurableOps != 5 || v.InFlightBytes != 99 || v.RTTSeconds != 0.001 {
		t.Fatalf("resyncing target: %+v", v)
	}
	if r := v.Resync; !r.Running || r.Percent != 25 || r.ETASeconds != 15 || r.BytesPerSec != 50 {
		t.Fatalf("resync progress: %+v", r)
	}
	st.Resync.Finished, st.Resync.Done, st.Link = at, 1000, "in sync"
	v = replicationView(st, nil, at)
	if r := v.Resync; r.Running || r.Percent != 100 || r.ETASeconds != 0 || r.BytesPerSec != 0 {
		t.Fatalf("finished resync: %+v", r)
	}
	st.Link = "down"
	if replicationView(st, nil, at).Connected {
		t.Fatal("a down link counts as connected")
	}
}

// A mirror pair's metrics: heartbeats while both run, then the SECOND's
// takeover counted as a failover when the PRIM dies.
func TestMirrorMetrics(t *testing.T) {
	p := newMirrorPair(t, "", false)
	p.setupPrimSecond()
	hb := map[string]string{"module": "db", "network": "default", "peer": "n1"}
	waitFor(t, "n2 to count accepted heartbeats", func() bool {
		e := scrape(t, p.nodes["n2"].client)
		v, ok, _ := e.Value("halo_heartbeat_frames_accepted_total", map[string]string{"module": "db", "network": "default"})
		return ok && v >= 3
	})
	e := scrape(t, p.nodes["n2"].client)
	for _, c := range []struct {
		family string
		labels map[string]string
		ok     func(float64) bool
		want   string
	}{
		{"halo_heartbeat_up", hb, func(v float64) bool { return v == 1 }, "1"},
		{"halo_heartbeat_last_seen_seconds", hb, func(v float64) bool { return v >= 0 && v < 2 }, "below 2s"},
		{"halo_heartbeat_missed_total", hb, func(v float64) bool { return v >= 0 }, "present"},
		{"halo_module_state", map[string]string{"module": "db", "state": "SECOND"}, func(v float64) bool { return v == 1 }, "1"},
		{"halo_module_failovers_total", map[string]string{"module": "db"}, func(v float64) bool { return v == 0 }, "0"},
	} {
		v, ok, err := e.Value(c.family, c.labels)
		if !ok || err != nil || !c.ok(v) {
			t.Fatalf("n2 %s%v = %v (present %v, %v), want %s", c.family, c.labels, v, ok, err, c.want)
		}
	}

	p.kill("n1")
	p.wait("n2", "ALONE", "Ready")
	e = scrape(t, p.nodes["n2"].client)
	if v, _, _ := e.Value("halo_module_failovers_total", map[string]string{"module": "db"}); v != 1 {
		t.Fatalf("failovers after the PRIM died = %v, want 1", v)
	}
	if v, _, _ := e.Value("halo_module_transitions_total", map[string]string{"module": "db", "from": "SECOND", "to": "ALONE"}); v != 1 {
		t.Fatalf("SECOND -> ALONE transitions = %v, want 1", v)
	}
	if v, ok, _ := e.Value("halo_heartbeat_up", hb); !ok || v != 0 {
		t.Fatalf("heartbeat up from a dead peer = %v (present %v)", v, ok)
	}
}
