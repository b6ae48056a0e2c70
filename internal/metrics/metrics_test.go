package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
)

// fakeBackend serves fixed modules and daemon answers; a module listed in
// hang never answers (a stopped daemon) until the scrape gives up.
type fakeBackend struct {
	mods   []Module
	status map[string]*ctl.Status
	errs   map[string]error
	hang   map[string]bool

	mu    sync.Mutex
	asked []string
}

func (f *fakeBackend) Modules() []Module { return f.mods }

func (f *fakeBackend) ReplicationStatus(ctx context.Context, module string) (*ctl.Status, error) {
	f.mu.Lock()
	f.asked = append(f.asked, module)
	f.mu.Unlock()
	if f.hang[module] {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err := f.errs[module]; err != nil {
		return nil, err
	}
	return f.status[module], nil
}

func newTestMetrics(b Backend, timeout time.Duration) *Metrics {
	return New(b, Options{Node: "n1", DaemonTimeout: timeout, NoRuntime: true})
}

func TestModuleLevels(t *testing.T) {
	seen := time.Now().Add(-1500 * time.Millisecond)
	b := &fakeBackend{mods: []Module{{
		Name: "db", Kind: "mirror", State: "PRIM", Readiness: "Ready", LoopCount: 1, LoopMax: 3,
		Checkers: map[string]string{"tcp": "up", "disk": "down"},
		Heartbeats: []Heartbeat{{
			Network: "default", Peer: "n2", Up: true, LastSeen: seen, RTT: 250 * time.Microsecond, Missed: 2,
			Sent: 100, SendErrors: 1, Accepted: 97, Dropped: map[string]uint64{"replay": 1, "bad_mac": 0},
		}, {
			Network: "repl", Peer: "n2", Up: false,
		}},
	}, {
		Name: "web", Kind: "light", State: "UP", Readiness: "Transient",
	}}}
	m := newTestMetrics(b, time.Second)
	const want = `
# HELP halo_module_state 1 for the module's current state on this node, 0 for the others.
# TYPE halo_module_state gauge
halo_module_state{kind="light",module="web",node="n1",state="STOP"} 0
halo_module_state{kind="light",module="web",node="n1",state="UP"} 1
halo_module_state{kind="light",module="web",node="n1",state="WAIT"} 0
halo_module_state{kind="mirror",module="db",node="n1",state="ALONE"} 0
halo_module_state{kind="mirror",module="db",node="n1",state="PRIM"} 1
halo_module_state{kind="mirror",module="db",node="n1",state="SECOND"} 0
halo_module_state{kind="mirror",module="db",node="n1",state="STOP"} 0
halo_module_state{kind="mirror",module="db",node="n1",state="WAIT"} 0
# HELP halo_module_readiness 1 for the module's current readiness, 0 for the others.
# TYPE halo_module_readiness gauge
halo_module_readiness{module="db",node="n1",readiness="NotReady"} 0
halo_module_readiness{module="db",node="n1",readiness="Ready"} 1
halo_module_readiness{module="db",node="n1",readiness="Transient"} 0
halo_module_readiness{module="web",node="n1",readiness="NotReady"} 0
halo_module_readiness{module="web",node="n1",readiness="Ready"} 0
halo_module_readiness{module="web",node="n1",readiness="Transient"} 1
# HELP halo_module_loop_count Restarts counted against max_loop in the current loop interval.
# TYPE halo_module_loop_count gauge
halo_module_loop_count{module="db",node="n1"} 1
halo_module_loop_count{module="web",node="n1"} 0
# HELP halo_checker_status 1 for the checker's current status, 0 for the others.
# TYPE halo_checker_status gauge
halo_checker_status{checker="disk",module="db",node="n1",status="down"} 1
halo_checker_status{checker="disk",module="db",node="n1",status="init"} 0
halo_checker_status{checker="disk",module="db",node="n1",status="unknown"} 0
halo_checker_status{checker="disk",module="db",node="n1",status="up"} 0
halo_checker_status{checker="tcp",module="db",node="n1",status="down"} 0
halo_checker_status{checker="tcp",module="db",node="n1",status="init"} 0
halo_checker_status{checker="tcp",module="db",node="n1",status="unknown"} 0
halo_checker_status{checker="tcp",module="db",node="n1",status="up"} 1
# HELP halo_heartbeat_up 1 while the peer's heartbeats on the network count as received.
# TYPE halo_heartbeat_up gauge
halo_heartbeat_up{module="db",network="default",node="n1",peer="n2"} 1
halo_heartbeat_up{module="db",network="repl",node="n1",peer="n2"} 0
# HELP halo_heartbeat_rtt_seconds Latest heartbeat round trip to the peer (absent while unknown).
# TYPE halo_heartbeat_rtt_seconds gauge
halo_heartbeat_rtt_seconds{module="db",network="default",node="n1",peer="n2"} 0.00025
# HELP halo_heartbeat_missed_total The peer's heartbeats that never arrived on the network (sequence gaps).
# TYPE halo_heartbeat_missed_total counter
halo_heartbeat_missed_total{module="db",network="default",node="n1",peer="n2"} 2
halo_heartbeat_missed_total{module="db",network="repl",node="n1",peer="n2"} 0
# HELP halo_heartbeat_frames_dropped_total Heartbeat datagrams received and dropped, by reason.
# TYPE halo_heartbeat_frames_dropped_total counter
halo_heartbeat_frames_dropped_total{module="db",network="default",node="n1",reason="bad_mac"} 0
halo_heartbeat_frames_dropped_total{module="db",network="default",node="n1",reason="replay"} 1
# HELP halo_heartbeat_send_errors_total Heartbeat frames the kernel refused to send on the network.
# TYPE halo_heartbeat_send_errors_total counter
halo_heartbeat_send_errors_total{module="db",network="default",node="n1"} 1
halo_heartbeat_send_errors_total{module="db",network="repl",node="n1"} 0
`
	names := []string{"halo_module_state", "halo_module_readiness", "halo_module_loop_count", "halo_checker_status",
		"halo_heartbeat_up", "halo_heartbeat_rtt_seconds", "halo_heartbeat_missed_total", "halo_heartbeat_frames_dropped_total",
		"halo_heartbeat_send_errors_total"}
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// The age is measured at scrape time: only its range can be checked.
	age := gatheredValue(t, m, "halo_heartbeat_last_seen_seconds", map[string]string{"network": "default"})
	if age < 1.5 || age > 60 {
		t.Fatalf("last seen age = %v, want about 1.5s", age)
	}
	if n := testutil.CollectAndCount(collectorOf(m), "halo_heartbeat_last_seen_seconds"); n != 1 {
		t.Fatalf("%d last-seen series, want 1 (none for a network never heard)", n)
	}
	if len(b.asked) != 0 {
		t.Fatalf("daemons asked for modules that do not replicate: %v", b.asked)
	}
	if n := testutil.CollectAndCount(collectorOf(m), "halo_replication_up"); n != 0 {
		t.Fatalf("%d replication series for modules that do not replicate", n)
	}
}

func TestEventCounters(t *testing.T) {
	m := newTestMetrics(&fakeBackend{}, time.Second)
	m.AddModule("db", []string{"tcp"})
	m.Transition("db", "STOP", "WAIT")
	m.Transition("db", "WAIT", "SECOND")
	m.Transition("db", "SECOND", "ALONE")
	m.Transition("db", "ALONE", "ALONE") // a readiness change is no transition
	m.CheckResult("db", "tcp", "up")
	m.CheckResult("db", "tcp", "down")
	m.CheckResult("db", "tcp", "unknown")
	m.ScriptDone("db", "start", 300*time.Millisecond, true)
	m.ScriptDone("db", "start", 3*time.Second, false)
	const want = `
# HELP halo_module_transitions_total State changes of the module on this node, by previous and new state.
# TYPE halo_module_transitions_total counter
halo_module_transitions_total{from="SECOND",module="db",node="n1",to="ALONE"} 1
halo_module_transitions_total{from="STOP",module="db",node="n1",to="WAIT"} 1
halo_module_transitions_total{from="WAIT",module="db",node="n1",to="SECOND"} 1
# HELP halo_module_failovers_total Times this node took the module over from a failed peer (SECOND -> ALONE).
# TYPE halo_module_failovers_total counter
halo_module_failovers_total{module="db",node="n1"} 1
# HELP halo_checker_checks_total Checker results received.
# TYPE halo_checker_checks_total counter
halo_checker_checks_total{checker="tcp",module="db",node="n1"} 3
# HELP halo_checker_failures_total Checker results that were down or unknown.
# TYPE halo_checker_failures_total counter
halo_checker_failures_total{checker="tcp",module="db",node="n1"} 2
# HELP halo_script_failures_total Script runs that failed or timed out, by script.
# TYPE halo_script_failures_total counter
halo_script_failures_total{module="db",node="n1",script="start"} 1
# HELP halo_script_duration_seconds Duration of the module's script runs, by script.
# TYPE halo_script_duration_seconds histogram
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="0.01"} 0
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="0.05"} 0
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="0.1"} 0
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="0.25"} 0
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="0.5"} 1
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="1"} 1
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="2.5"} 1
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="5"} 2
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="10"} 2
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="30"} 2
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="60"} 2
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="120"} 2
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="300"} 2
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="600"} 2
halo_script_duration_seconds_bucket{module="db",node="n1",script="start",le="+Inf"} 2
halo_script_duration_seconds_sum{module="db",node="n1",script="start"} 3.3
halo_script_duration_seconds_count{module="db",node="n1",script="start"} 2
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want),
		"halo_module_transitions_total", "halo_module_failovers_total", "halo_checker_checks_total",
		"halo_checker_failures_total", "halo_script_failures_total", "halo_script_duration_seconds"); err != nil {
		t.Fatal(err)
	}
	m.Transition("web", "STOP", "UP")
	m.RemoveModule("db")
	if n := testutil.CollectAndCount(m.transitions); n != 1 {
		t.Fatalf("%d transition series after db was removed, want web's 1", n)
	}
	if n := testutil.CollectAndCount(m.scriptTime) + testutil.CollectAndCount(m.checks) + testutil.CollectAndCount(m.failovers); n != 0 {
		t.Fatalf("%d series of db left after it was removed", n)
	}
	var nilMetrics *Metrics // hooks of an agent without metrics
	nilMetrics.Transition("db", "STOP", "WAIT")
	nilMetrics.ScriptDone("db", "start", time.Second, true)
}

func TestReplication(t *testing.T) {
	b := &fakeBackend{
		mods: []Module{
			{Name: "src", Kind: "mirror", State: "PRIM", Readiness: "Ready", Replicated: true},
			{Name: "tgt", Kind: "mirror", State: "SECOND", Readiness: "Transient", Replicated: true},
			{Name: "dead", Kind: "mirror", State: "WAIT", Readiness: "NotReady", Replicated: true},
		},
		status: map[string]*ctl.Status{
			"src": {
				Role: "source", Peer: "n2", Mode: "sync", Link: "in sync", PeerInSync: true,
				InFlight: 3, Lag: 1500 * time.Microsecond, BytesPerSec: 1 << 20, OpsSent: 42, BytesSent: 123456,
				Submitted: 45, Applied: 42, Durable: 40, InFlightBytes: 3000, RTT: 400 * time.Microsecond,
				SyncLatency: &ctl.Histogram{Bounds: []float64{0.001, 0.01}, Counts: []uint64{2, 1, 1}, Count: 4, Sum: 1.5},
				// Counts that do not match the bounds: left out.
				WriteLatency: &ctl.Histogram{Bounds: []float64{0.001}, Counts: []uint64{2}, Count: 2, Sum: 0.001},
				JournalBytes: 4096, Trusted: true, Dirty: journal.Stats{Paths: 2, Zones: 5, Bytes: 5 << 16},
			},
			"tgt": {
				Role: "target", Peer: "n1", Mode: "async", Link: "resync", MaxLag: 5 * time.Second, DataLossPossible: true, NotReady: "must_exist file VERSION is missing",
				Resync: &ctl.ResyncStatus{ID: 7, Full: true, Done: 250, Total: 1000, BytesPerSec: 50, ETA: 15 * time.Second, Started: time.Now(), Sent: 300},
			},
		},
		errs: map[string]error{"dead": errors.New("connect: no such file")},
	}
	m := newTestMetrics(b, time.Second)
	const want = `
# HELP halo_replication_up 1 if the module's replication daemon answered this scrape in time.
# TYPE halo_replication_up gauge
halo_replication_up{module="dead",node="n1"} 0
halo_replication_up{module="src",node="n1"} 1
halo_replication_up{module="tgt",node="n1"} 1
# HELP halo_replication_ready 1 when the replicated directories can be used on this node (must_exist files present, role held).
# TYPE halo_replication_ready gauge
halo_replication_ready{module="src",node="n1"} 1
halo_replication_ready{module="tgt",node="n1"} 0
# HELP halo_replication_mode 1 for the module's replication mode, 0 for the others.
# TYPE halo_replication_mode gauge
halo_replication_mode{mode="async",module="src",node="n1"} 0
halo_replication_mode{mode="async",module="tgt",node="n1"} 1
halo_replication_mode{mode="durable",module="src",node="n1"} 0
halo_replication_mode{mode="durable",module="tgt",node="n1"} 0
halo_replication_mode{mode="sync",module="src",node="n1"} 1
halo_replication_mode{mode="sync",module="tgt",node="n1"} 0
# HELP halo_replication_connected 1 while a replication stream to or from the peer is open.
# TYPE halo_replication_connected gauge
halo_replication_connected{module="src",node="n1"} 1
halo_replication_connected{module="tgt",node="n1"} 1
# HELP halo_replication_peer_up_to_date 1 while the peer (on a source) or this node (on a target) holds every write.
# TYPE halo_replication_peer_up_to_date gauge
halo_replication_peer_up_to_date{module="src",node="n1"} 1
halo_replication_peer_up_to_date{module="tgt",node="n1"} 0
# HELP halo_replication_lag_seconds Age of the oldest operation not yet acknowledged by the peer.
# TYPE halo_replication_lag_seconds gauge
halo_replication_lag_seconds{module="src",node="n1"} 0.0015
halo_replication_lag_seconds{module="tgt",node="n1"} 0
# HELP halo_replication_sent_bytes_total Frame bytes sent on the replication stream (reset when the stream or daemon restarts).
# TYPE halo_replication_sent_bytes_total counter
halo_replication_sent_bytes_total{module="src",node="n1"} 123456
halo_replication_sent_bytes_total{module="tgt",node="n1"} 0
# HELP halo_replication_sent_ops_total Operations sent on the replication stream (reset when the stream or daemon restarts).
# TYPE halo_replication_sent_ops_total counter
halo_replication_sent_ops_total{module="src",node="n1"} 42
halo_replication_sent_ops_total{module="tgt",node="n1"} 0
# HELP halo_replication_acked_ops_total Operations and barriers the peer acknowledged as applied (reset with the stream).
# TYPE halo_replication_acked_ops_total counter
halo_replication_acked_ops_total{module="src",node="n1"} 42
halo_replication_acked_ops_total{module="tgt",node="n1"} 0
# HELP halo_replication_in_flight_bytes Bytes of the operations sent and not yet applied by the peer.
# TYPE halo_replication_in_flight_bytes gauge
halo_replication_in_flight_bytes{module="src",node="n1"} 3000
halo_replication_in_flight_bytes{module="tgt",node="n1"} 0
# HELP halo_replication_rtt_seconds Latest ping round trip on the replication stream (absent while unknown).
# TYPE halo_replication_rtt_seconds gauge
halo_replication_rtt_seconds{module="src",node="n1"} 0.0004
# HELP halo_replication_sync_latency_seconds How long fsync and O_SYNC writes waited for the peer's disk; since the source role began.
# TYPE halo_replication_sync_latency_seconds histogram
halo_replication_sync_latency_seconds_bucket{module="src",node="n1",le="0.001"} 2
halo_replication_sync_latency_seconds_bucket{module="src",node="n1",le="0.01"} 3
halo_replication_sync_latency_seconds_bucket{module="src",node="n1",le="+Inf"} 4
halo_replication_sync_latency_seconds_sum{module="src",node="n1"} 1.5
halo_replication_sync_latency_seconds_count{module="src",node="n1"} 4
# HELP halo_replication_max_lag_seconds Async mode's lag bound (absent in the other modes).
# TYPE halo_replication_max_lag_seconds gauge
halo_replication_max_lag_seconds{module="tgt",node="n1"} 5
# HELP halo_replication_data_loss_possible 1 while operations acknowledged to applications are not on the peer yet (async): a failover now would lose them.
# TYPE halo_replication_data_loss_possible gauge
halo_replication_data_loss_possible{module="src",node="n1"} 0
halo_replication_data_loss_possible{module="tgt",node="n1"} 1
# HELP halo_replication_journal_dirty_zones Dirty zones recorded for the next resync.
# TYPE halo_replication_journal_dirty_zones gauge
halo_replication_journal_dirty_zones{module="src",node="n1"} 5
halo_replication_journal_dirty_zones{module="tgt",node="n1"} 0
# HELP halo_replication_resync_state 1 for the state of the running or last resync on this node, 0 for the others; absent when none ran.
# TYPE halo_replication_resync_state gauge
halo_replication_resync_state{module="tgt",node="n1",state="done"} 0
halo_replication_resync_state{module="tgt",node="n1",state="failed"} 0
halo_replication_resync_state{module="tgt",node="n1",state="running"} 1
# HELP halo_replication_resync_done_bytes Bytes of the running or last resync done.
# TYPE halo_replication_resync_done_bytes gauge
halo_replication_resync_done_bytes{module="tgt",node="n1"} 250
# HELP halo_replication_resync_total_bytes Bytes the running or last resync has to do.
# TYPE halo_replication_resync_total_bytes gauge
halo_replication_resync_total_bytes{module="tgt",node="n1"} 1000
# HELP halo_replication_resync_eta_seconds Estimated time left of the running resync (0 when none runs).
# TYPE halo_replication_resync_eta_seconds gauge
halo_replication_resync_eta_seconds{module="tgt",node="n1"} 15
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want),
		"halo_replication_up", "halo_replication_ready", "halo_replication_mode", "halo_replication_connected", "halo_replication_peer_up_to_date",
		"halo_replication_lag_seconds", "halo_replication_sent_bytes_total", "halo_replication_sent_ops_total",
		"halo_replication_acked_ops_total", "halo_replication_in_flight_bytes", "halo_replication_rtt_seconds",
		"halo_replication_sync_latency_seconds", "halo_replication_write_latency_seconds",
		"halo_replication_max_lag_seconds", "halo_replication_data_loss_possible",
		"halo_replication_journal_dirty_zones", "halo_replication_resync_state", "halo_replication_resync_done_bytes",
		"halo_replication_resync_total_bytes", "halo_replication_resync_eta_seconds"); err != nil {
		t.Fatal(err)
	}
	// A finished resync shows no rate or ETA left.
	b.status["tgt"].Resync.Finished = time.Now()
	if v := gatheredValue(t, m, "halo_replication_resync_eta_seconds", nil); v != 0 {
		t.Fatalf("ETA of a finished resync = %v", v)
	}
	if v := gatheredValue(t, m, "halo_replication_resync_state", map[string]string{"state": "done"}); v != 1 {
		t.Fatalf("finished resync state done = %v", v)
	}
}

// A daemon that does not answer costs the scrape the timeout, once, and
// only its own series.
func TestHungDaemonDoesNotBlockScrape(t *testing.T) {
	b := &fakeBackend{
		mods: []Module{
			{Name: "a", Kind: "mirror", State: "PRIM", Readiness: "Ready", Replicated: true},
			{Name: "b", Kind: "mirror", State: "PRIM", Readiness: "Ready", Replicated: true},
			{Name: "c", Kind: "mirror", State: "PRIM", Readiness: "Ready", Replicated: true},
		},
		status: map[string]*ctl.Status{"c": {Role: "source", Mode: "sync", Link: "in sync"}},
		hang:   map[string]bool{"a": true, "b": true},
	}
	m := newTestMetrics(b, 300*time.Millisecond)
	start := time.Now()
	const want = `
# HELP halo_replication_up 1 if the module's replication daemon answered this scrape in time.
# TYPE halo_replication_up gauge
halo_replication_up{module="a",node="n1"} 0
halo_replication_up{module="b",node="n1"} 0
halo_replication_up{module="c",node="n1"} 1
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), "halo_replication_up"); err != nil {
		t.Fatal(err)
	}
	// Two hung daemons asked in turn would take 600ms.
	if took := time.Since(start); took < 300*time.Millisecond || took > 550*time.Millisecond {
		t.Fatalf("scrape took %v with two hung daemons and a 300ms budget", took)
	}
	if n := testutil.CollectAndCount(collectorOf(m), "halo_replication_mode"); n != len(Modes) {
		t.Fatalf("%d mode series, want %d (the answering daemon's only)", n, len(Modes))
	}
}

// Two agents in one process have separate registries.
func TestSeparateRegistries(t *testing.T) {
	m1 := newTestMetrics(&fakeBackend{}, time.Second)
	m2 := newTestMetrics(&fakeBackend{}, time.Second)
	m1.Transition("db", "STOP", "WAIT")
	if n := testutil.CollectAndCount(m2.transitions); n != 0 {
		t.Fatalf("second agent's registry has %d transition series", n)
	}
	if n := testutil.CollectAndCount(m1.transitions); n != 1 {
		t.Fatalf("first agent's registry has %d transition series", n)
	}
}

func TestHandlerServesExposition(t *testing.T) {
	b := &fakeBackend{mods: []Module{{Name: "db", Kind: "mirror", State: "STOP", Readiness: "NotReady"}}}
	m := New(b, Options{Node: "n1"})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	e, err := Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := e.Value("halo_module_state", map[string]string{"module": "db", "state": "STOP"}); v != 1 || !ok || err != nil {
		t.Fatalf("parsed STOP series: %v %v %v", v, ok, err)
	}
	if _, _, err := e.Value("halo_module_state", map[string]string{"module": "db"}); err == nil {
		t.Fatal("several matching series are not an error")
	}
	if _, ok, _ := e.Value("go_goroutines", nil); !ok {
		t.Fatalf("no Go runtime series:\n%s", body)
	}
}

func collectorOf(m *Metrics) *collector { return m.levels }

// gatheredValue returns the value of the one series of the family whose
// labels include want.
func gatheredValue(t *testing.T, m *Metrics, family string, want map[string]string) float64 {
	t.Helper()
	fams, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != family {
			continue
		}
	series:
		for _, s := range f.GetMetric() {
			for k, v := range want {
				found := false
				for _, l := range s.GetLabel() {
					found = found || (l.GetName() == k && l.GetValue() == v)
				}
				if !found {
					continue series
				}
			}
			if g := s.GetGauge(); g != nil {
				return g.GetValue()
			}
			return s.GetCounter().GetValue()
		}
	}
	t.Fatalf("no series %s%v", family, want)
	return 0
}
