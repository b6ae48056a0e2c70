package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/halo-ha/halo/internal/heartbeat"
	"github.com/halo-ha/halo/internal/metrics"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
	"github.com/halo-ha/halo/sdk/api"
)

// metricsScrapeTimeout bounds how long a scrape waits for the replication
// daemons (all asked at once): below Prometheus's default scrape timeout
// (10s), so that a hung daemon still leaves a scrape with every other
// series.
const metricsScrapeTimeout = 2 * time.Second

// newMetrics builds the agent's registry; the runners report their events
// to it.
func (a *Agent) newMetrics() *metrics.Metrics {
	return metrics.New(agentMetrics{a}, metrics.Options{Node: a.opts.Node, DaemonTimeout: metricsScrapeTimeout})
}

// MetricsHandler serves GET /metrics (httpapi.MetricsBackend).
func (a *Agent) MetricsHandler() http.Handler { return a.metrics.Handler() }

// serveMetrics starts the plain-HTTP metrics listeners of cluster.hcl's
// metrics block: Prometheus scrapes them without a client certificate.
// Like the health endpoint, an address it cannot listen on is logged and
// does not stop the agent: failover must go on without metrics.
func (a *Agent) serveMetrics(errc chan<- error) *http.Server {
	if len(a.opts.MetricsAddrs) == 0 {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	for _, addr := range a.opts.MetricsAddrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			a.logger.Error("metrics endpoint unavailable", "address", addr, "error", err)
			continue
		}
		a.logger.Info("metrics endpoint", "address", ln.Addr().String())
		go func() { errc <- srv.Serve(ln) }()
	}
	return srv
}

// agentMetrics is the metrics backend: the agent's levels at scrape time.
type agentMetrics struct{ a *Agent }

func (m agentMetrics) Modules() []metrics.Module {
	rs := m.a.moduleRunners() // modules come and go (admin.go)
	out := make([]metrics.Module, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.metricsView())
	}
	return out
}

func (m agentMetrics) ReplicationStatus(ctx context.Context, module string) (*ctl.Status, error) {
	r, ok := m.a.lookup(module)
	if !ok || r.mirror == nil {
		return nil, fmt.Errorf("module %s does not replicate", module)
	}
	d, ok := r.mirror.repl.(*daemonReplication)
	if !ok {
		return nil, errors.New(errNoReplication)
	}
	resp, err := d.ctl.Call(ctx, ctl.Request{Op: ctl.OpStatus})
	if err != nil {
		return nil, err
	}
	return resp.Status, nil
}

// metricsView is the runner's part of a scrape.
func (r *moduleRunner) metricsView() metrics.Module {
	r.mu.Lock()
	m := metrics.Module{
		Name: r.mod.Name, Kind: string(r.mod.Kind), State: r.status.State, Readiness: r.status.Readiness,
		LoopCount: r.status.Loop.Count, LoopMax: r.status.Loop.Max,
		Checkers:   map[string]string{},
		Replicated: r.mirror != nil && r.mod.Replication != nil,
	}
	for k, v := range r.resources {
		if name, ok := strings.CutPrefix(k, "checker."); ok {
			m.Checkers[name], _ = splitSuspended(v.Value)
		}
	}
	var hbUp map[string]bool
	if r.mirror != nil {
		hbUp = map[string]bool{}
		for k, v := range r.resources {
			if net, ok := strings.CutPrefix(k, "heartbeat."); ok {
				hbUp[net] = v.Value == "up"
			}
		}
	}
	r.mu.Unlock()
	if r.mirror == nil {
		return m
	}
	stats := r.mirror.endpoint.Stats()
	for _, l := range r.mirror.endpoint.Links() {
		ns := stats.Networks[l.Network]
		hb := metrics.Heartbeat{
			Network: l.Network, Peer: l.Peer, Up: hbUp[l.Network], LastSeen: l.LastSeen, RTT: l.RTT,
			Missed: r.mirror.inbox.gaps.missed(l.Network),
			Sent:   ns.Sent, SendErrors: ns.SendErrors, Accepted: ns.Accepted,
			Dropped: make(map[string]uint64, len(ns.Dropped)),
		}
		for reason, n := range ns.Dropped {
			hb.Dropped[reason.String()] = n
		}
		m.Heartbeats = append(m.Heartbeats, hb)
	}
	return m
}

// heartbeatGaps counts the peer's heartbeats that never arrived, per
// network. The peer numbers its pulses once for all networks, so a gap in
// the sequence numbers one network delivers is exactly the pulses lost on
// it (or not sent on it: the peer's link was down). A frame that arrives
// late, inside the replay window, was counted as a gap and is taken back.
type heartbeatGaps struct {
	mu   sync.Mutex
	nets map[string]*seqGap
}

type seqGap struct {
	boot, last uint64
	missed     uint64
}

// note records an accepted heartbeat.
func (g *heartbeatGaps) note(r heartbeat.Received) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.nets == nil {
		g.nets = map[string]*seqGap{}
	}
	s := g.nets[r.Network]
	switch {
	case s == nil:
		g.nets[r.Network] = &seqGap{boot: r.Boot, last: r.Seq}
	case s.boot != r.Boot:
		// The peer restarted: its numbering starts over, and what it
		// could not send while down is not a loss on the network.
		s.boot, s.last = r.Boot, r.Seq
	case r.Seq > s.last:
		s.missed += r.Seq - s.last - 1
		s.last = r.Seq
	case r.Seq < s.last && s.missed > 0:
		s.missed--
	}
}

func (g *heartbeatGaps) missed(network string) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := g.nets[network]; s != nil {
		return s.missed
	}
	return 0
}

// noteReplication keeps the daemon's latest status (or why there is none)
// for the API's module status.
func (r *moduleRunner) noteReplication(st *ctl.Status, err error) {
	v := replicationView(st, err, time.Now().UTC())
	r.mu.Lock()
	r.replication = v
	r.mu.Unlock()
}

// replicationView turns a daemon status into the API's.
func replicationView(st *ctl.Status, err error, at time.Time) *api.ReplicationStatus {
	if err == nil && st == nil {
		err = errors.New("replication daemon answered without a status")
	}
	if err != nil {
		return &api.ReplicationStatus{UpdatedAt: at, Error: err.Error()}
	}
	v := &api.ReplicationStatus{
		Up: true, UpdatedAt: at,
		Role: st.Role, Peer: st.Peer, Mode: st.Mode, Link: st.Link,
		Connected: metrics.Connected(st.Link), PeerUpToDate: st.PeerInSync, StalledSince: st.StalledSince,
		InFlight: st.InFlight, InFlightBytes: st.InFlightBytes, LagSeconds: st.Lag.Seconds(), BytesPerSec: st.BytesPerSec,
		AckedOps: st.Applied, DurableOps: st.Durable, RTTSeconds: st.RTT.Seconds(),
		OpsSent: st.OpsSent, BytesSent: st.BytesSent,
		JournalBytes: st.JournalBytes, JournalTrusted: st.Trusted,
		DirtyPaths: st.Dirty.Paths, DirtyZones: st.Dirty.Zones, DirtyBytes: st.Dirty.Bytes,
		LastError: st.LastError, NotReady: st.NotReady,
		MaxLagSeconds: st.MaxLag.Seconds(), DataLossPossible: st.DataLossPossible,
	}
	if rs := st.Resync; rs != nil {
		p := &api.ResyncProgress{
			ID: rs.ID, Full: rs.Full, Running: metrics.ResyncState(rs) == "running",
			DoneBytes: rs.Done, TotalBytes: rs.Total,
			Started: rs.Started, Finished: rs.Finished, Error: rs.Error, SentBytes: rs.Sent, Quarantine: rs.Quarantine,
		}
		if rs.Total > 0 {
			p.Percent = min(100, 100*float64(rs.Done)/float64(rs.Total))
		} else if !rs.Finished.IsZero() && rs.Error == "" {
			p.Percent = 100 // nothing to copy
		}
		if p.Running {
			p.BytesPerSec, p.ETASeconds = rs.BytesPerSec, rs.ETA.Seconds()
		}
		v.Resync = p
	}
	return v
}

func checkerNames(cs []Checker) []string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Name
	}
	return names
}
