package metrics

import (
	"errors"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
)

var errNoStatus = errors.New("replication daemon answered without a status")

// descs are the scrape-time series.
type descs struct {
	state, readiness, loopCount, loopMax, checker *prometheus.Desc

	hbUp, hbAge, hbRTT, hbMissed, hbSent, hbSendErr, hbAccepted, hbDropped *prometheus.Desc

	replUp, replReady, replMode, replRole, replConnected, replInSync, replStalled *prometheus.Desc
	replInFlight, replInFlightBytes, replLag, maxLag, lossPossible, replRTT       *prometheus.Desc
	replRate, replOps, replBytes, replSubmitted, replApplied, replDurable         *prometheus.Desc
	writeLatency, syncLatency                                                     *prometheus.Desc

	replJournalBytes, replJournalTrusted, replDirtyZones, replDirtyPaths, replDirtyBytes *prometheus.Desc

	resyncState, resyncFull, resyncDone, resyncTotal, resyncRate, resyncETA, resyncSent *prometheus.Desc
}

func newDescs(cl prometheus.Labels) descs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, cl)
	}
	mod := []string{"module"}
	hb := []string{"module", "network", "peer"}
	return descs{
		state:     d("halo_module_state", "1 for the module's current state on this node, 0 for the others.", "module", "kind", "state"),
		readiness: d("halo_module_readiness", "1 for the module's current readiness, 0 for the others.", "module", "readiness"),
		loopCount: d("halo_module_loop_count", "Restarts counted against max_loop in the current loop interval.", mod...),
		loopMax:   d("halo_module_loop_max", "The module's max_loop.", mod...),
		checker:   d("halo_checker_status", "1 for the checker's current status, 0 for the others.", "module", "checker", "status"),

		hbUp:       d("halo_heartbeat_up", "1 while the peer's heartbeats on the network count as received.", hb...),
		hbAge:      d("halo_heartbeat_last_seen_seconds", "Age of the peer's last heartbeat on the network (absent before the first).", hb...),
		hbRTT:      d("halo_heartbeat_rtt_seconds", "Latest heartbeat round trip to the peer (absent while unknown).", hb...),
		hbMissed:   d("halo_heartbeat_missed_total", "The peer's heartbeats that never arrived on the network (sequence gaps).", hb...),
		hbSent:     d("halo_heartbeat_frames_sent_total", "Heartbeat frames sent on the network.", "module", "network"),
		hbSendErr:  d("halo_heartbeat_send_errors_total", "Heartbeat frames the kernel refused to send on the network.", "module", "network"),
		hbAccepted: d("halo_heartbeat_frames_accepted_total", "Heartbeat frames received, authenticated and accepted on the network.", "module", "network"),
		hbDropped:  d("halo_heartbeat_frames_dropped_total", "Heartbeat datagrams received and dropped, by reason.", "module", "network", "reason"),

		replUp:        d("halo_replication_up", "1 if the module's replication daemon answered this scrape in time.", mod...),
		replReady:     d("halo_replication_ready", "1 when the replicated directories can be used on this node (must_exist files present, role held).", mod...),
		replMode:      d("halo_replication_mode", "1 for the module's replication mode, 0 for the others.", "module", "mode"),
		replRole:      d("halo_replication_role", "1 for the role the replication daemon holds, 0 for the others.", "module", "role"),
		replConnected: d("halo_replication_connected", "1 while a replication stream to or from the peer is open.", mod...),
		replInSync:    d("halo_replication_peer_up_to_date", "1 while the peer (on a source) or this node (on a target) holds every write.", mod...),
		replStalled:   d("halo_replication_stalled", "1 while the stream is stalled (the peer does not acknowledge).", mod...),
		replInFlight:  d("halo_replication_in_flight_ops", "Operations sent and not yet acknowledged by the peer.", mod...),
		replLag:       d("halo_replication_lag_seconds", "Age of the oldest operation not yet acknowledged by the peer.", mod...),
		replRate:      d("halo_replication_throughput_bytes_per_second", "The daemon's recent throughput: bytes sent (source) or applied (target).", mod...),
		replOps:       d("halo_replication_sent_ops_total", "Operations sent on the replication stream (reset when the stream or daemon restarts).", mod...),
		replBytes:     d("halo_replication_sent_bytes_total", "Frame bytes sent on the replication stream (reset when the stream or daemon restarts).", mod...),

		replInFlightBytes: d("halo_replication_in_flight_bytes", "Bytes of the operations sent and not yet applied by the peer.", mod...),
		replSubmitted:     d("halo_replication_submitted_ops_total", "Operations and barriers submitted to the stream (reset with the stream).", mod...),
		replApplied:       d("halo_replication_acked_ops_total", "Operations and barriers the peer acknowledged as applied (reset with the stream).", mod...),
		replDurable:       d("halo_replication_durable_ops_total", "Operations and barriers the peer acknowledged as durable (reset with the stream).", mod...),
		replRTT:           d("halo_replication_rtt_seconds", "Latest ping round trip on the replication stream (absent while unknown).", mod...),

		replJournalBytes:   d("halo_replication_journal_bytes", "Size of the module's journal files.", mod...),
		replJournalTrusted: d("halo_replication_journal_trusted", "1 when the journal alone tells what may differ from the peer.", mod...),
		replDirtyZones:     d("halo_replication_journal_dirty_zones", "Dirty zones recorded for the next resync.", mod...),
		replDirtyPaths:     d("halo_replication_journal_dirty_paths", "Paths with any change recorded for the next resync.", mod...),
		replDirtyBytes:     d("halo_replication_journal_dirty_bytes", "Bytes of the dirty zones (whole files and tails not counted).", mod...),

		resyncState:  d("halo_replication_resync_state", "1 for the state of the running or last resync on this node, 0 for the others; absent when none ran.", "module", "state"),
		resyncFull:   d("halo_replication_resync_full", "1 if the running or last resync is a full one.", mod...),
		resyncDone:   d("halo_replication_resync_done_bytes", "Bytes of the running or last resync done.", mod...),
		resyncTotal:  d("halo_replication_resync_total_bytes", "Bytes the running or last resync has to do.", mod...),
		resyncRate:   d("halo_replication_resync_bytes_per_second", "Recent rate of the running resync.", mod...),
		resyncETA:    d("halo_replication_resync_eta_seconds", "Estimated time left of the running resync (0 when none runs).", mod...),
		writeLatency: d("halo_replication_write_latency_seconds", "How long the application's operations waited for the replication stream (the peer's acknowledgement in sync and durable modes); since the source role began.", mod...),
		syncLatency:  d("halo_replication_sync_latency_seconds", "How long fsync and O_SYNC writes waited for the peer's disk; since the source role began.", mod...),
		maxLag:       d("halo_replication_max_lag_seconds", "Async mode's lag bound (absent in the other modes).", mod...),
		lossPossible: d("halo_replication_data_loss_possible", "1 while operations acknowledged to applications are not on the peer yet (async): a failover now would lose them.", mod...),
		resyncSent:   d("halo_replication_resync_sent_bytes", "Bytes the running or last resync sent over the network (data and protocol).", mod...),
	}
}

func (d descs) all() []*prometheus.Desc {
	return []*prometheus.Desc{
		d.state, d.readiness, d.loopCount, d.loopMax, d.checker,
		d.hbUp, d.hbAge, d.hbRTT, d.hbMissed, d.hbSent, d.hbSendErr, d.hbAccepted, d.hbDropped,
		d.replUp, d.replReady, d.replMode, d.replRole, d.replConnected, d.replInSync, d.replStalled,
		d.replInFlight, d.replLag, d.replRate, d.replOps, d.replBytes,
		d.replInFlightBytes, d.replSubmitted, d.replApplied, d.replDurable, d.replRTT,
		d.replJournalBytes, d.replJournalTrusted, d.replDirtyZones, d.replDirtyPaths, d.replDirtyBytes,
		d.resyncState, d.resyncFull, d.resyncDone, d.resyncTotal, d.resyncRate, d.resyncETA, d.resyncSent,
		d.writeLatency, d.syncLatency, d.maxLag, d.lossPossible,
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

// enum sends one series per value, 1 for cur; a cur outside values gets
// its own series, so that an unexpected value is seen rather than lost.
func enum(ch chan<- prometheus.Metric, d *prometheus.Desc, values []string, cur string, labels ...string) {
	known := false
	for _, v := range values {
		known = known || v == cur
		gauge(ch, d, b2f(v == cur), append(labels, v)...)
	}
	if !known && cur != "" {
		gauge(ch, d, 1, append(labels, cur)...)
	}
}

// moduleStates are the states a module of this kind can be in.
func moduleStates(kind string) []string {
	if kind == "mirror" {
		return States[:5]
	}
	return []string{"STOP", "WAIT", "UP"}
}

func (c *collector) collectModule(ch chan<- prometheus.Metric, m Module, now time.Time) {
	d := c.descs
	enum(ch, d.state, moduleStates(m.Kind), m.State, m.Name, m.Kind)
	enum(ch, d.readiness, Readinesses, m.Readiness, m.Name)
	gauge(ch, d.loopCount, float64(m.LoopCount), m.Name)
	gauge(ch, d.loopMax, float64(m.LoopMax), m.Name)
	names := make([]string, 0, len(m.Checkers))
	for n := range m.Checkers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		enum(ch, d.checker, CheckerValues, m.Checkers[n], m.Name, n)
	}
	// The endpoint's counters are per network; a mirror has one peer, but
	// send them once per network whatever the peers.
	sentNet := map[string]bool{}
	for _, h := range m.Heartbeats {
		gauge(ch, d.hbUp, b2f(h.Up), m.Name, h.Network, h.Peer)
		if !h.LastSeen.IsZero() {
			gauge(ch, d.hbAge, max(now.Sub(h.LastSeen), 0).Seconds(), m.Name, h.Network, h.Peer)
		}
		if h.RTT > 0 {
			gauge(ch, d.hbRTT, h.RTT.Seconds(), m.Name, h.Network, h.Peer)
		}
		counter(ch, d.hbMissed, float64(h.Missed), m.Name, h.Network, h.Peer)
		if sentNet[h.Network] {
			continue
		}
		sentNet[h.Network] = true
		counter(ch, d.hbSent, float64(h.Sent), m.Name, h.Network)
		counter(ch, d.hbSendErr, float64(h.SendErrors), m.Name, h.Network)
		counter(ch, d.hbAccepted, float64(h.Accepted), m.Name, h.Network)
		reasons := make([]string, 0, len(h.Dropped))
		for r := range h.Dropped {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		for _, r := range reasons {
			counter(ch, d.hbDropped, float64(h.Dropped[r]), m.Name, h.Network, r)
		}
	}
}

// histogram sends a daemon's latency histogram; nothing for none, or for
// one whose counts do not match its bounds (a daemon of another build).
func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, h *ctl.Histogram, labels ...string) {
	if h == nil || len(h.Counts) != len(h.Bounds)+1 {
		return
	}
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		cum += h.Counts[i]
		buckets[b] = cum
	}
	ch <- prometheus.MustNewConstHistogram(d, cum+h.Counts[len(h.Bounds)], h.Sum, buckets, labels...)
}

// Connected reports whether a daemon status link has an open stream.
func Connected(link string) bool {
	return link != "" && link != "down" && link != "fenced"
}

func (c *collector) collectReplication(ch chan<- prometheus.Metric, module string, r replicationResult) {
	d := c.descs
	if r.err != nil {
		// Only up: stale or invented figures would look like a healthy
		// stream that stopped moving.
		gauge(ch, d.replUp, 0, module)
		return
	}
	s := r.st
	gauge(ch, d.replUp, 1, module)
	gauge(ch, d.replReady, b2f(s.NotReady == ""), module)
	enum(ch, d.replMode, Modes, s.Mode, module)
	enum(ch, d.replRole, Roles, s.Role, module)
	gauge(ch, d.replConnected, b2f(Connected(s.Link)), module)
	gauge(ch, d.replInSync, b2f(s.PeerInSync), module)
	gauge(ch, d.replStalled, b2f(!s.StalledSince.IsZero()), module)
	gauge(ch, d.replInFlight, float64(s.InFlight), module)
	gauge(ch, d.replLag, s.Lag.Seconds(), module)
	gauge(ch, d.replRate, s.BytesPerSec, module)
	counter(ch, d.replOps, float64(s.OpsSent), module)
	counter(ch, d.replBytes, float64(s.BytesSent), module)
	gauge(ch, d.replInFlightBytes, float64(s.InFlightBytes), module)
	counter(ch, d.replSubmitted, float64(s.Submitted), module)
	counter(ch, d.replApplied, float64(s.Applied), module)
	counter(ch, d.replDurable, float64(s.Durable), module)
	if s.RTT > 0 {
		gauge(ch, d.replRTT, s.RTT.Seconds(), module)
	}
	if s.MaxLag > 0 {
		gauge(ch, d.maxLag, s.MaxLag.Seconds(), module)
	}
	gauge(ch, d.lossPossible, b2f(s.DataLossPossible), module)
	histogram(ch, d.writeLatency, s.WriteLatency, module)
	histogram(ch, d.syncLatency, s.SyncLatency, module)
	gauge(ch, d.replJournalBytes, float64(s.JournalBytes), module)
	gauge(ch, d.replJournalTrusted, b2f(s.Trusted), module)
	gauge(ch, d.replDirtyZones, float64(s.Dirty.Zones), module)
	gauge(ch, d.replDirtyPaths, float64(s.Dirty.Paths), module)
	gauge(ch, d.replDirtyBytes, float64(s.Dirty.Bytes), module)
	if rs := s.Resync; rs != nil {
		enum(ch, d.resyncState, ResyncStates, ResyncState(rs), module)
		gauge(ch, d.resyncFull, b2f(rs.Full), module)
		gauge(ch, d.resyncDone, float64(rs.Done), module)
		gauge(ch, d.resyncTotal, float64(rs.Total), module)
		running := ResyncState(rs) == "running"
		rate, eta := 0.0, 0.0
		if running {
			rate, eta = rs.BytesPerSec, rs.ETA.Seconds()
		}
		gauge(ch, d.resyncRate, rate, module)
		gauge(ch, d.resyncETA, eta, module)
		gauge(ch, d.resyncSent, float64(rs.Sent), module)
	}
}

// ResyncState names a resync's state: running, done or failed.
func ResyncState(rs *ctl.ResyncStatus) string {
	switch {
	case rs.Error != "":
		return "failed"
	case !rs.Finished.IsZero():
		return "done"
	}
	return "running"
}
