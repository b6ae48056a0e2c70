// Package metrics exports an agent's figures in the Prometheus format.
//
// Each agent owns one Metrics, with its own registry (tests run several
// agents in one process, so nothing is registered globally). Two kinds of
// figures meet there:
//
//   - events the agent reports as they happen (state transitions, checker
//     results, script runs), kept as counters and histograms;
//   - levels read from the agent and its replication daemons at scrape
//     time (states, heartbeats, replication), through a Backend. A daemon
//     that does not answer within the scrape's budget costs its own
//     series only: halo_replication_up is 0 for it and the scrape goes on.
//
// Every series carries the node label. The families, by prefix:
//
//   - halo_module_: state, readiness (one series per value, the current
//     one 1), loop_count/loop_max, transitions_total{from,to},
//     failovers_total (SECOND -> ALONE);
//   - halo_checker_: status (per value), checks_total, failures_total;
//   - halo_script_: duration_seconds (histogram), failures_total;
//   - halo_heartbeat_{network,peer}: up, last_seen_seconds, rtt_seconds,
//     missed_total, and the endpoint's frames_sent, send_errors,
//     frames_accepted and frames_dropped{reason} totals;
//   - halo_replication_: up, ready, mode, role, connected,
//     peer_up_to_date, stalled, in_flight_ops/bytes, lag_seconds,
//     max_lag_seconds, data_loss_possible, rtt_seconds,
//     throughput_bytes_per_second, the per-stream totals sent_ops,
//     sent_bytes, submitted_ops, acked_ops and durable_ops, write_latency_seconds and
//     sync_latency_seconds (histograms), journal_bytes/trusted/dirty_*,
//     and resync_state, full, done/total/sent bytes, bytes_per_second,
//     eta_seconds.
package metrics

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
)

// Backend is what a scrape reads.
type Backend interface {
	// Modules returns a snapshot of this node's modules. It must not block
	// on I/O: it runs on every scrape.
	Modules() []Module
	// ReplicationStatus asks a replicating module's daemon for its status
	// within ctx's deadline.
	ReplicationStatus(ctx context.Context, module string) (*ctl.Status, error)
}

// Module is one module's levels at scrape time.
type Module struct {
	Name      string
	Kind      string // mirror, farm, light
	State     string // core.State names: STOP, WAIT, ALONE, PRIM, SECOND, UP
	Readiness string // NotReady, Transient, Ready
	// LoopCount of LoopMax restarts within the module's loop interval.
	LoopCount, LoopMax int
	// Checkers maps a checker name to its status (init, up, down, unknown).
	Checkers   map[string]string
	Heartbeats []Heartbeat
	// Replicated: the module replicates directories (a daemon serves it).
	Replicated bool
}

// Heartbeat is the state of the peer's heartbeats on one network.
type Heartbeat struct {
	Network, Peer string
	// Up is what the machine concludes (resource heartbeat.<network>).
	Up bool
	// LastSeen is zero until the first heartbeat arrives.
	LastSeen time.Time
	RTT      time.Duration
	// Missed counts the peer's heartbeats that never arrived on this
	// network (gaps in its sequence numbers).
	Missed uint64
	// Frame counters of this node's endpoint on the network.
	Sent, SendErrors, Accepted uint64
	Dropped                    map[string]uint64 // by reason
}

// States, readiness values, checker statuses, replication modes and roles:
// a labelled gauge has one series per value, exactly one of them 1, so
// that a query can select a value without knowing a code.
var (
	States        = []string{"STOP", "WAIT", "ALONE", "PRIM", "SECOND", "UP"}
	Readinesses   = []string{"NotReady", "Transient", "Ready"}
	CheckerValues = []string{"init", "up", "down", "unknown"}
	Modes         = []string{"sync", "durable", "async"}
	Roles         = []string{"none", "source", "target"}
	ResyncStates  = []string{"running", "done", "failed"}
)

// DefaultTimeout bounds a scrape's wait for the replication daemons: well
// below Prometheus's default scrape timeout (10s).
const DefaultTimeout = 2 * time.Second

// ScriptBuckets cover scripts from a quick status probe to a database
// recovery that takes minutes.
var ScriptBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// Options tunes Metrics.
type Options struct {
	// Node is added as a constant label to every halo series, so that one
	// Prometheus can tell the nodes of a cluster apart whichever address
	// it scraped.
	Node string
	// DaemonTimeout bounds a scrape's wait for the replication daemons
	// (all are asked at once); 0 = DefaultTimeout.
	DaemonTimeout time.Duration
	// NoRuntime leaves out the Go runtime and process collectors.
	NoRuntime bool
}

// Metrics holds one agent's registry and event counters. A nil *Metrics
// records nothing, so the agent's hooks need no checks.
type Metrics struct {
	reg *prometheus.Registry

	transitions   *prometheus.CounterVec
	failovers     *prometheus.CounterVec
	checks        *prometheus.CounterVec
	checkFailures *prometheus.CounterVec
	scriptTime    *prometheus.HistogramVec
	scriptFails   *prometheus.CounterVec
	levels        *collector
}

// New returns the metrics of one agent reading levels from b.
func New(b Backend, opts Options) *Metrics {
	if opts.DaemonTimeout <= 0 {
		opts.DaemonTimeout = DefaultTimeout
	}
	reg := prometheus.NewRegistry()
	constLabels := prometheus.Labels{"node": opts.Node}
	m := &Metrics{
		reg: reg,
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halo_module_transitions_total", Help: "State changes of the module on this node, by previous and new state.",
			ConstLabels: constLabels,
		}, []string{"module", "from", "to"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halo_module_failovers_total", Help: "Times this node took the module over from a failed peer (SECOND -> ALONE).",
			ConstLabels: constLabels,
		}, []string{"module"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halo_checker_checks_total", Help: "Checker results received.",
			ConstLabels: constLabels,
		}, []string{"module", "checker"}),
		checkFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halo_checker_failures_total", Help: "Checker results that were down or unknown.",
			ConstLabels: constLabels,
		}, []string{"module", "checker"}),
		scriptTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "halo_script_duration_seconds", Help: "Duration of the module's script runs, by script.",
			ConstLabels: constLabels, Buckets: ScriptBuckets,
		}, []string{"module", "script"}),
		scriptFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halo_script_failures_total", Help: "Script runs that failed or timed out, by script.",
			ConstLabels: constLabels,
		}, []string{"module", "script"}),
	}
	reg.MustRegister(m.transitions, m.failovers, m.checks, m.checkFailures, m.scriptTime, m.scriptFails)
	m.levels = &collector{b: b, timeout: opts.DaemonTimeout, constLabels: constLabels}
	reg.MustRegister(m.levels)
	if !opts.NoRuntime {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

// AddModule creates the module's counters at zero, so that a rate or an
// alert on them works before the first event.
func (m *Metrics) AddModule(module string, checkers []string) {
	if m == nil {
		return
	}
	m.failovers.WithLabelValues(module)
	for _, c := range checkers {
		m.checks.WithLabelValues(module, c)
		m.checkFailures.WithLabelValues(module, c)
	}
}

// RemoveModule drops the module's event series (it was uninstalled): a
// module installed again under the name starts from zero, as Prometheus
// expects of a new series.
func (m *Metrics) RemoveModule(module string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"module": module}
	m.transitions.DeletePartialMatch(l)
	m.failovers.DeletePartialMatch(l)
	m.checks.DeletePartialMatch(l)
	m.checkFailures.DeletePartialMatch(l)
	m.scriptTime.DeletePartialMatch(l)
	m.scriptFails.DeletePartialMatch(l)
}

// Transition records a state change.
func (m *Metrics) Transition(module, from, to string) {
	if m == nil || from == to {
		return
	}
	m.transitions.WithLabelValues(module, from, to).Inc()
	if from == "SECOND" && to == "ALONE" {
		m.failovers.WithLabelValues(module).Inc()
	}
}

// CheckResult records one checker result.
func (m *Metrics) CheckResult(module, checker, status string) {
	if m == nil {
		return
	}
	m.checks.WithLabelValues(module, checker).Inc()
	if status == "down" || status == "unknown" {
		m.checkFailures.WithLabelValues(module, checker).Inc()
	}
}

// ScriptDone records one script run.
func (m *Metrics) ScriptDone(module, script string, took time.Duration, ok bool) {
	if m == nil {
		return
	}
	m.scriptTime.WithLabelValues(module, script).Observe(took.Seconds())
	if !ok {
		m.scriptFails.WithLabelValues(module, script).Inc()
	}
}

// Gatherer returns the registry, for tests and embedding.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A collector error (a series that cannot be made) is reported in
		// the answer's text and the rest is still served: a partial scrape
		// beats none when a node misbehaves.
		ErrorHandling: promhttp.ContinueOnError,
		// Scrapes are cheap but ask every daemon: bound the concurrency.
		MaxRequestsInFlight: 4,
	})
}

// replicationResult is one daemon's answer to a scrape.
type replicationResult struct {
	st  *ctl.Status
	err error
}

// collector reads the levels at scrape time.
type collector struct {
	b           Backend
	timeout     time.Duration
	constLabels prometheus.Labels
	descs       descs
	once        sync.Once
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	c.init()
	for _, d := range c.descs.all() {
		ch <- d
	}
}

func (c *collector) init() { c.once.Do(func() { c.descs = newDescs(c.constLabels) }) }

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.init()
	mods := c.b.Modules()
	// Every daemon is asked at once, within one deadline: a scrape costs
	// at most the timeout however many daemons hang.
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	results := make([]replicationResult, len(mods))
	var wg sync.WaitGroup
	for i, mod := range mods {
		if !mod.Replicated {
			continue
		}
		wg.Go(func() {
			st, err := c.b.ReplicationStatus(ctx, mod.Name)
			if err == nil && st == nil {
				err = errNoStatus
			}
			results[i] = replicationResult{st, err}
		})
	}
	now := time.Now()
	for _, mod := range mods {
		c.collectModule(ch, mod, now)
	}
	wg.Wait()
	for i, mod := range mods {
		if mod.Replicated {
			c.collectReplication(ch, mod.Name, results[i])
		}
	}
}
