package daemon

import (
	"context"
	"errors"
	"fmt"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
	"os"
	"sync"
	"time"

	"github.com/halo-ha/halo/internal/replication/capture"
	"github.com/halo-ha/halo/internal/replication/op"
	"github.com/halo-ha/halo/internal/replication/wire"
)

// sourceRole is the primary's side: capture mounts over the replicated
// directories, and a connector that keeps a replication stream open to the
// peer's daemon.
type sourceRole struct {
	d      *Daemon
	mounts []*capture.FS
	// under are the directories opened before mounting: resync sessions
	// read the real trees through them.
	under  []*os.File
	sink   *sink
	cancel context.CancelFunc // the connector; nil while detached
	done   chan struct{}
	rate   rateMeter
}

// startSource mounts the capture filesystems (if not mounted already) and
// starts streaming to the peer (attach), or stops (alone).
func (d *Daemon) startSource(ctx context.Context, attach bool) error {
	d.mu.Lock()
	s := d.src
	d.mu.Unlock()
	if s == nil {
		s = &sourceRole{d: d, sink: newSink(d)}
		if err := s.mount(); err != nil {
			return err
		}
		d.mu.Lock()
		d.src = s
		d.mu.Unlock()
		d.log("info", fmt.Sprintf("capturing %s: every change journaled", dirList(d)))
	}
	if attach {
		s.attach()
	} else {
		s.detach("replication stopped: continuing alone")
	}
	return nil
}

func dirList(d *Daemon) string {
	s := ""
	for i, dir := range d.repl.Dirs {
		if i > 0 {
			s += ", "
		}
		s += dir.Path
	}
	return s
}

// mount checks every directory's must_exist files, then mounts.
func (s *sourceRole) mount() error {
	d := s.d
	for _, dir := range d.repl.Dirs {
		if err := releaseStaleMount(dir.Path); err != nil {
			return err
		}
	}
	if err := d.checkMustExist("replicate"); err != nil {
		return err
	}
	for _, dir := range d.repl.Dirs {
		f, err := os.Open(dir.Path)
		if err != nil {
			s.unmount()
			return fmt.Errorf("open %s: %w", dir.Path, err)
		}
		s.under = append(s.under, f)
	}
	for i, dir := range d.repl.Dirs {
		fs, err := capture.Mount(capture.Options{
			Dir: dir.Path, DirIndex: uint16(i),
			Sink: s.sink, Journal: d.tracker.journalFor(i),
			Excludes: append(append([]string(nil), dir.Exclude...), stagingExclude),
			Logger:   d.logger.Named("capture"),
		})
		if err != nil {
			s.unmount()
			return fmt.Errorf("mount capture filesystem over %s: %w", dir.Path, err)
		}
		s.mounts = append(s.mounts, fs)
	}
	return nil
}

// stagingExclude keeps a resync's staging directory out of replication.
const stagingExclude = ".halo-resync"

func (s *sourceRole) unmount() {
	for _, fs := range s.mounts {
		if err := fs.Unmount(); err != nil {
			// Busy: detach it so the directory is free; the open files
			// keep being served (journaled, alone) until closed.
			s.d.logger.Warn("capture mount busy: detached lazily", "dir", fs.Dir(), "error", err)
			_ = lazyUnmount(fs.Dir())
		}
	}
	s.mounts = nil
	for _, f := range s.under {
		f.Close()
	}
	s.under = nil
}

// attach starts the connector (idempotent).
func (s *sourceRole) attach() {
	if s.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go s.connect(ctx, s.done)
}

// detach stops streaming: writes waiting for the peer complete (their
// zones stay journaled) and later ones are journaled only.
func (s *sourceRole) detach(why string) {
	if s.cancel != nil {
		s.cancel()
		<-s.done
		s.cancel = nil
	}
	s.sink.drop(why)
}

// stopSource leaves the source role entirely.
func (d *Daemon) stopSource(why string) {
	d.mu.Lock()
	s := d.src
	d.src = nil
	d.mu.Unlock()
	if s == nil {
		return
	}
	// Writes fenced by a broken stream were never decided safe to go on
	// alone; an application still writing through a busy (lazily
	// detached) mount writes on a node that is no longer the source.
	s.sink.close(fmt.Errorf("this node is no longer the replication source: %s", why))
	s.detach(why)
	s.unmount()
	d.log("info", fmt.Sprintf("capture of %s stopped: %s", dirList(d), why))
}

// connect keeps one stream open to the peer until ctx ends.
func (s *sourceRole) connect(ctx context.Context, done chan struct{}) {
	defer close(done)
	d := s.d
	var lastErr string
	for ctx.Err() == nil {
		snd, err := s.open(ctx)
		if err != nil {
			if msg := err.Error(); msg != lastErr {
				d.logger.Info("replication stream not open", "error", err)
				lastErr = msg
			}
			d.setError(err)
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		lastErr = ""
		d.logger.Info("replication stream open", "peer", d.peer)
		s.sink.setSender(snd)
		select {
		case <-ctx.Done():
			// detach degrades the sender.
			return
		case <-snd.Done():
		}
		s.sink.streamEnded(snd, snd.Err())
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *sourceRole) open(ctx context.Context) (*wire.Sender, error) {
	d := s.d
	conn, err := d.dialPeer(ctx, ALPNStream)
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	snd, err := wire.NewSender(hctx, conn, wire.SenderOptions{
		Mode: d.wireMode(), Hello: d.hello(), CheckPeer: d.checkPeerHello,
		MaxLag: d.repl.MaxLag, StallTimeout: d.repl.StallTimeout,
		OnStall:  func(since time.Time) { s.sink.stalled(since) },
		OnResume: func() { s.sink.resumed() },
		Logger:   slogFrom(d.logger.Named("stream")),
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("open replication stream to %s: %w", d.peer, err)
	}
	return snd, nil
}

func (s *sourceRole) fillStatus(st *ctl.Status) {
	s.sink.fillStatus(st)
	st.InFlight = max(st.InFlight, s.d.tracker.inFlight())
	st.BytesPerSec = s.rate.rate(st.BytesSent)
}

// sink is the capture layer's Sink: it hands operations to the current
// stream while the peer is in sync, and otherwise only lets them be
// journaled.
//
// A stream that ends by itself while the peer was in sync (the link broke,
// the peer's daemon died) fences the writes: they wait, because the peer
// may still take over believing it holds every acknowledged write. The
// agent decides (role none once the machine degraded or lost the peer),
// and the fenced writes then complete, journaled.
type sink struct {
	d *Daemon

	mu     sync.Mutex
	cond   *sync.Cond
	sender *wire.Sender
	inSync bool
	fenced bool
	// stalledSince: reported to the agent (a stall or a fence).
	stalledSince time.Time
	// primary: the machine runs this node as PRIM (see expectInSync).
	primary bool
	// closed: the source role ended without a decision to go on alone
	// (this node becomes a target, the daemon stops): waiting and later
	// operations fail, since nothing will ever replicate them.
	closed error
	last   wire.Stats
	// writeLat and syncLat time Submit and Sync on a live stream.
	writeLat, syncLat ctl.LatencyRecorder
}

var _ capture.Sink = (*sink)(nil)

func newSink(d *Daemon) *sink {
	s := &sink{d: d}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *sink) Submit(ctx context.Context, o op.Op) error { return s.send(ctx, o, false) }
func (s *sink) Sync(ctx context.Context, o op.Op) error   { return s.send(ctx, o, true) }

func (s *sink) send(ctx context.Context, o op.Op, sync bool) error {
	s.mu.Lock()
	for s.fenced {
		s.cond.Wait()
	}
	snd, live, closed := s.sender, s.inSync, s.closed
	s.mu.Unlock()
	if closed != nil {
		return closed
	}
	if snd == nil || !live {
		return nil // journaled: the next resync sends it
	}
	start := time.Now()
	var err error
	if sync {
		err = snd.Sync(ctx, o)
	} else {
		err = snd.Submit(ctx, o)
	}
	if err == nil {
		lat := &s.writeLat
		if sync {
			lat = &s.syncLat
		}
		lat.Observe(time.Since(start))
	}
	if err == nil || !errors.Is(err, wire.ErrDegraded) {
		return err
	}
	// The stream ended under this operation.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sender == snd && s.inSync {
		s.fenceLocked(time.Now(), err)
	}
	for s.fenced {
		s.cond.Wait()
	}
	return s.closed
}

// peerHasAll returns once the peer holds, durably, every operation
// submitted before the call. In async mode an operation is done (its
// journal mark released) as soon as it is queued, before the peer applied
// it: a checkpoint that forgot its zones then would leave a write that the
// peer may never receive in neither node's journal, and the incremental
// resync after a failover would miss it. The other modes need nothing:
// an operation is done once the peer applied it, and the peer journals
// what it applies.
func (s *sink) peerHasAll() error {
	if s.d.wireMode() != wire.ModeAsync {
		return nil
	}
	s.mu.Lock()
	snd, live := s.sender, s.inSync && !s.fenced
	s.mu.Unlock()
	if snd == nil || !live {
		return errors.New("the peer is not in sync: its replication stream is not running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.d.repl.StallTimeout+time.Second)
	defer cancel()
	if err := snd.Barrier(ctx); err != nil {
		return fmt.Errorf("wait for the peer to hold every operation: %w", err)
	}
	return nil
}

// live reports whether the peer is in sync on a running stream.
func (s *sink) live() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sender != nil && s.inSync && !s.fenced
}

// setSender makes snd the current stream; the peer is not in sync until
// a resync says so (markSynced).
func (s *sink) setSender(snd *wire.Sender) {
	s.mu.Lock()
	old := s.sender
	s.sender, s.inSync = snd, false
	s.mu.Unlock()
	if old != nil && old != snd {
		old.Degrade(errors.New("replaced by a new stream"))
	}
}

// expectInSync: the machine runs this node as PRIM. A peer not in sync on
// a running stream then contradicts it (this daemon restarted, or the
// stream broke unnoticed): writes are fenced and a stall reported, so the
// machine degrades to ALONE before any write is acknowledged without the
// peer.
func (s *sink) expectInSync(primary bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.primary = primary
	if primary && !(s.sender != nil && s.inSync) {
		s.fenceLocked(time.Now(), errors.New("the peer is not in sync while this node is PRIM"))
	}
}

// pause stops sending live (a resync starts): operations are journaled
// and tracked until markSynced.
func (s *sink) pause() {
	s.mu.Lock()
	s.inSync = false
	s.mu.Unlock()
}

// markSynced: the resync that just ended made the peer identical; from now
// on every operation goes through the stream (the caller holds the
// application frozen). It fails if the stream it relies on is gone.
func (s *sink) markSynced() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sender == nil {
		return errors.New("no replication stream to the peer: cannot go live")
	}
	select {
	case <-s.sender.Done():
		return fmt.Errorf("replication stream to the peer ended: %w", s.sender.Err())
	default:
	}
	s.inSync = true
	return nil
}

func (s *sink) fenceLocked(since time.Time, cause error) {
	if s.fenced {
		return
	}
	s.fenced = true
	if s.stalledSince.IsZero() {
		s.stalledSince = since
	}
	s.d.log("warn", fmt.Sprintf("replication stream to %s ended while it was in sync (%v): writes wait for the cluster's decision", s.d.peer, cause))
	s.d.events.publish(ctl.Event{Kind: ctl.EvStalled, At: time.Now(), Since: s.stalledSince})
}

// streamEnded is the connector's notice that snd ended.
func (s *sink) streamEnded(snd *wire.Sender, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sender != snd {
		return
	}
	s.last = snd.Stats()
	if s.inSync || s.primary {
		s.fenceLocked(time.Now(), cause)
	}
	s.sender, s.inSync = nil, false
}

// close ends the sink: fenced and later operations fail with err.
func (s *sink) close(err error) {
	s.mu.Lock()
	s.closed = err
	s.mu.Unlock()
	s.drop(err.Error())
}

// drop releases everything: the peer is no longer replicated to.
func (s *sink) drop(why string) {
	s.mu.Lock()
	snd := s.sender
	s.sender, s.inSync, s.fenced, s.primary = nil, false, false, false
	s.stalledSince = time.Time{}
	if snd != nil {
		s.last = snd.Stats()
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	if snd != nil {
		snd.Degrade(errors.New(why))
	}
}

func (s *sink) stalled(since time.Time) {
	s.mu.Lock()
	live := s.inSync
	if s.stalledSince.IsZero() {
		s.stalledSince = since
	}
	snd := s.sender
	s.mu.Unlock()
	if !live {
		// A peer that is not in sync cannot take over: nobody needs to
		// wait for it. Drop the stream; its resync is retried.
		if snd != nil {
			snd.Degrade(errors.New("peer stalled before it was in sync"))
		}
		return
	}
	s.d.log("warn", fmt.Sprintf("replication to %s not acknowledged since %s", s.d.peer, since.Format(time.RFC3339Nano)))
	s.d.events.publish(ctl.Event{Kind: ctl.EvStalled, At: time.Now(), Since: since})
}

func (s *sink) resumed() {
	s.mu.Lock()
	was := !s.stalledSince.IsZero() && !s.fenced
	if was {
		s.stalledSince = time.Time{}
	}
	s.mu.Unlock()
	if was {
		s.d.events.publish(ctl.Event{Kind: ctl.EvInSync, At: time.Now()})
	}
}

func (s *sink) fillStatus(st *ctl.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stats := s.last
	switch {
	case s.fenced:
		st.Link = "fenced"
	case s.sender == nil:
		st.Link = "down"
	case !s.inSync:
		st.Link = "connected (peer not in sync)"
		stats = s.sender.Stats()
	default:
		st.Link = "in sync"
		stats = s.sender.Stats()
	}
	st.PeerInSync = s.inSync && !s.fenced
	st.StalledSince = s.stalledSince
	st.InFlight = stats.InFlight
	st.Lag = stats.Lag
	if s.d.wireMode() == wire.ModeAsync {
		st.MaxLag = s.d.repl.MaxLag
		st.DataLossPossible = st.PeerInSync && stats.InFlight > 0
	}
	st.OpsSent, st.BytesSent = stats.OpsSent, stats.BytesSent
	st.Submitted, st.Applied, st.Durable = stats.Submitted, stats.Applied, stats.Durable
	st.InFlightBytes, st.RTT = stats.InFlightBytes, stats.RTT
	st.WriteLatency, st.SyncLatency = s.writeLat.Snapshot(), s.syncLat.Snapshot()
}

// rateMeter turns a byte counter into a recent rate.
type rateMeter struct {
	mu    sync.Mutex
	at    time.Time
	bytes uint64
	r     float64
}

func (m *rateMeter) rate(total uint64) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if m.at.IsZero() || total < m.bytes {
		m.at, m.bytes = now, total
		return m.r
	}
	if dt := now.Sub(m.at); dt >= 500*time.Millisecond {
		m.r = float64(total-m.bytes) / dt.Seconds()
		m.at, m.bytes = now, total
	}
	return m.r
}
