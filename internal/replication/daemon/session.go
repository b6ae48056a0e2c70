package daemon

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/resync"
)

// A resync, verify or estimate runs one resync session per replicated
// directory, each over one or more TLS connections (ALPNResync) that the
// initiator (the resync target, or the node asking for a verify or an
// estimate) opens to the other node's daemon, which runs the session's
// source end. Each connection starts with a header naming the session,
// the directory and the connection's place, so the source can hand the
// connections of one directory's session to resync.RunSource together:
//
//	magic "HRS1" | session u64 | dir u16 | dirs u16 | purpose u8 | index u8 | count u8
const sessionMagic = "HRS1"

const sessionHeaderLen = 4 + 8 + 2 + 2 + 1 + 1 + 1

// Session purposes.
const (
	purposeResync   = 'R'
	purposeVerify   = 'V'
	purposeEstimate = 'E'
	// purposeEstimateFrom: an estimate of a resync from the initiator to
	// the acceptor; the acceptor runs the session's target end.
	purposeEstimateFrom = 'F'
)

type sessionHeader struct {
	id           uint64
	dir, dirs    uint16
	purpose      byte
	index, count uint8
}

func (h sessionHeader) encode() []byte {
	b := make([]byte, 0, sessionHeaderLen)
	b = append(b, sessionMagic...)
	b = binary.BigEndian.AppendUint64(b, h.id)
	b = binary.BigEndian.AppendUint16(b, h.dir)
	b = binary.BigEndian.AppendUint16(b, h.dirs)
	return append(b, h.purpose, h.index, h.count)
}

func readSessionHeader(r io.Reader) (sessionHeader, error) {
	var b [sessionHeaderLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return sessionHeader{}, fmt.Errorf("read session header: %w", err)
	}
	if string(b[:4]) != sessionMagic {
		return sessionHeader{}, errors.New("read session header: bad magic")
	}
	h := sessionHeader{
		id: binary.BigEndian.Uint64(b[4:]), dir: binary.BigEndian.Uint16(b[12:]), dirs: binary.BigEndian.Uint16(b[14:]),
		purpose: b[16], index: b[17], count: b[18],
	}
	if h.count == 0 || h.index >= h.count || h.dirs == 0 || h.dir >= h.dirs {
		return h, fmt.Errorf("read session header: connection %d of %d, directory %d of %d", h.index, h.count, h.dir, h.dirs)
	}
	return h, nil
}

func newSessionID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// ---- the session's source end (serving the peer's request) ----

type sessionKey struct {
	id  uint64
	dir uint16
}

type pendingSession struct {
	conns []resync.Conn
	got   int
	timer *time.Timer
}

// sessions groups incoming connections by session.
type sessions struct {
	mu      sync.Mutex
	pending map[sessionKey]*pendingSession
	synced  map[uint64]*syncGroup
}

// syncGroup makes the directories of one resync go live together: the
// peer is in sync only when every directory is.
type syncGroup struct {
	dirs    int
	arrived int
	done    chan struct{}
	err     error
}

func (d *Daemon) serveResyncConn(ctx context.Context, c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := readSessionHeader(c)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		d.logger.Warn("resync connection refused", "remote", c.RemoteAddr(), "error", err)
		c.Close()
		return
	}
	if int(h.dir) >= len(d.repl.Dirs) || int(h.dirs) != len(d.repl.Dirs) {
		d.logger.Warn("resync connection refused: directory count differs", "peer dirs", h.dirs, "dirs", len(d.repl.Dirs))
		c.Close()
		return
	}
	s := &d.sessions
	key := sessionKey{h.id, h.dir}
	s.mu.Lock()
	if s.pending == nil {
		s.pending = map[sessionKey]*pendingSession{}
	}
	p := s.pending[key]
	if p == nil {
		p = &pendingSession{conns: make([]resync.Conn, h.count)}
		s.pending[key] = p
		p.timer = time.AfterFunc(30*time.Second, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.pending[key] == p {
				delete(s.pending, key)
				for _, c := range p.conns {
					if c != nil {
						c.Close()
					}
				}
			}
		})
	}
	if int(h.count) != len(p.conns) || p.conns[h.index] != nil {
		s.mu.Unlock()
		c.Close()
		return
	}
	p.conns[h.index] = c
	p.got++
	complete := p.got == len(p.conns)
	if complete {
		p.timer.Stop()
		delete(s.pending, key)
	}
	s.mu.Unlock()
	if complete {
		d.runSourceSession(ctx, h, p.conns)
	}
}

// runSourceSession serves a complete session's connections (the resync
// package closes them when the session ends).
func (d *Daemon) runSourceSession(ctx context.Context, h sessionHeader, conns []resync.Conn) {
	refuse := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	dir := int(h.dir)
	cfg := resync.SourceConfig{
		DirIndex: h.dir,
		Excludes: d.repl.Dirs[dir].Exclude,
		Options:  d.resyncOptions(nil),
	}
	d.mu.Lock()
	src, tgt := d.src, d.tgt
	d.mu.Unlock()
	if h.purpose == purposeResync {
		// The peer's machine asks for the resync as soon as it becomes
		// SECOND; this node's takes the source role at the next heartbeat.
		src = d.waitSourceRole(ctx, 10*time.Second)
		if src == nil {
			d.logger.Warn("resync refused: this node is not the replication source")
			refuse()
			return
		}
		// Whatever streamed live before, the resync owns the peer's tree
		// until it goes live again (an operation sent meanwhile is also
		// journaled, so a pass sends it again).
		src.sink.pause()
	}
	if h.purpose == purposeEstimateFrom {
		rate := float64(d.repl.Resync.Bandwidth)
		if rate <= 0 {
			rate = diffRate
		}
		m, _ := d.estimateTargetMap(dir)
		_, err := resync.RunTarget(ctx, lingering(conns), resync.TargetConfig{Root: d.localRoot(dir), DirIndex: h.dir, Excludes: d.repl.Dirs[dir].Exclude,
			Request: resync.Request{Kind: resync.RequestEstimate, Rate: rate, Map: m}})
		if err != nil {
			d.logger.Warn("estimate for the peer failed", "error", err)
		}
		return
	}
	switch {
	case h.purpose == purposeResync:
		cfg.Root = fdPath(src.under[dir])
		j := d.journals[dir]
		cfg.Map = func() (*journal.ZoneMap, error) { return j.Snapshot(), nil }
		cfg.Changes = dirChanges{t: d.tracker, dir: dir}
		cfg.Synced = func(ctx context.Context) error { return d.goLive(ctx, h, src) }
		d.log("info", fmt.Sprintf("resync of %s to %s started", d.repl.Dirs[dir].Path, d.peer))
	case src != nil:
		cfg.Root = fdPath(src.under[dir])
	case tgt != nil:
		cfg.Root = tgt.underPath(dir)
	default:
		cfg.Root = d.repl.Dirs[dir].Path
	}
	if h.purpose == purposeEstimate {
		cfg.Map = d.estimateSourceMap(dir)
	}
	res, err := resync.RunSource(ctx, conns, cfg)
	if h.purpose != purposeResync {
		return
	}
	if err != nil {
		d.log("warn", fmt.Sprintf("resync of %s to %s failed: %v", d.repl.Dirs[dir].Path, d.peer, err))
		d.leaveGroup(h.id, err)
		return
	}
	d.log("info", fmt.Sprintf("resync of %s to %s done: %d objects changed, %d data bytes in %d bytes sent, %d passes, frozen %v, took %v",
		d.repl.Dirs[dir].Path, d.peer, res.Changed, res.DataBytes, res.SentBytes, res.Passes, res.Frozen.Round(time.Millisecond), res.Took.Round(time.Millisecond)))
}

// waitSourceRole returns the source role once this node has it.
func (d *Daemon) waitSourceRole(ctx context.Context, within time.Duration) *sourceRole {
	deadline := time.Now().Add(within)
	for {
		d.mu.Lock()
		src, role := d.src, d.role
		d.mu.Unlock()
		if src != nil && role == ctl.RoleSource {
			return src
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// goLive is a directory session's Synced: once every directory of the
// resync reached its final pass (all frozen), the source checkpoints its
// journals and sends every later write through the live stream.
func (d *Daemon) goLive(ctx context.Context, h sessionHeader, src *sourceRole) error {
	s := &d.sessions
	s.mu.Lock()
	if s.synced == nil {
		s.synced = map[uint64]*syncGroup{}
	}
	g := s.synced[h.id]
	if g == nil {
		g = &syncGroup{dirs: int(h.dirs), done: make(chan struct{})}
		s.synced[h.id] = g
	}
	g.arrived++
	last := g.arrived == g.dirs
	s.mu.Unlock()
	if last {
		g.err = d.checkpointSource(src)
		if g.err == nil {
			g.err = src.sink.markSynced()
		}
		if g.err == nil {
			d.log("info", fmt.Sprintf("%s is in sync: writes are replicated live in %s mode", d.peer, d.repl.Mode))
			d.events.publish(ctl.Event{Kind: ctl.EvInSync, At: time.Now()})
		}
		close(g.done)
		time.AfterFunc(time.Minute, func() {
			s.mu.Lock()
			delete(s.synced, h.id)
			s.mu.Unlock()
		})
	}
	select {
	case <-g.done:
		return g.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leaveGroup fails the other directories waiting to go live.
func (d *Daemon) leaveGroup(id uint64, err error) {
	s := &d.sessions
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.synced[id]; g != nil {
		select {
		case <-g.done:
		default:
			g.err = err
			close(g.done)
		}
	}
}

// checkpointSource empties the source's journals at its generation: the
// peer now holds the same trees (the application is frozen).
func (d *Daemon) checkpointSource(src *sourceRole) error {
	d.mu.Lock()
	gen := d.gen
	d.mu.Unlock()
	return d.checkpointAll(src.under, gen, nil)
}

// checkpointAll syncs the trees, then checkpoints every journal at gen
// (marking again what is in flight): a checkpoint must never say clean
// what a power loss could still undo. peer (nil: none) is called once the
// marks made from now on are collected, and must return once the peer
// holds every operation that was done before (see sink.peerHasAll).
//
// It does not hold the role lock (a sync may take long, and a failover
// must not wait for it): whatever happens to the peer meanwhile, every
// operation it may lack is in flight or marked since the checkpoint
// began, and is marked again.
func (d *Daemon) checkpointAll(under []*os.File, gen uint64, peer func() error) error {
	d.ckptMu.Lock()
	defer d.ckptMu.Unlock()
	if gen == 0 {
		return errors.New("checkpoint: no data generation known (the agent did not send it)")
	}
	d.tracker.beginCheckpoint()
	defer d.tracker.endCheckpoint()
	if peer != nil {
		if err := peer(); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
	}
	for _, f := range under {
		if err := unix.Syncfs(int(f.Fd())); err != nil {
			return fmt.Errorf("sync %s: %w", f.Name(), err)
		}
	}
	var errs []error
	for i := range d.journals {
		if err := d.tracker.checkpoint(i, gen); err != nil {
			errs = append(errs, fmt.Errorf("checkpoint journal of %s: %w", d.repl.Dirs[i].Path, err))
		}
	}
	return errors.Join(errs...)
}

// dirChanges is resync.Changes over the tracker, for one directory.
type dirChanges struct {
	t   *tracker
	dir int
}

func (c dirChanges) Track() (resync.Tracking, error) {
	m, err := c.t.track(c.dir)
	if err != nil {
		return nil, err
	}
	return tracking{c, m}, nil
}

func (c dirChanges) Freeze(ctx context.Context) (func(), error) {
	if err := c.t.freeze(ctx); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(c.t.thaw) }, nil
}

type tracking struct {
	c dirChanges
	m *journal.ZoneMap
}

func (t tracking) Stop() (*journal.ZoneMap, error) {
	t.c.t.stopTracking(t.c.dir, t.m)
	t.c.t.mu.Lock()
	defer t.c.t.mu.Unlock()
	return t.m.Clone(), nil
}

func (d *Daemon) resyncOptions(progress func(resync.Progress)) resync.Options {
	return resync.Options{
		Parallel:  4 * max(1, d.repl.Resync.Parallel),
		RateLimit: float64(d.repl.Resync.Bandwidth),
		Progress:  progress,
	}
}

// sessionLinger bounds how long a session's target end keeps a
// connection open after the session ended, for the source to close first.
const sessionLinger = 5 * time.Second

// lingering makes a session's target-end connections close only once the
// source closed them (or after sessionLinger). The resync package closes
// a session's connections as soon as its end returns; the target's end
// returns right after answering the source's final message, and a close
// racing the source's read of that answer fails a finished session there
// ("connection N: EOF").
func lingering(conns []resync.Conn) []resync.Conn {
	out := make([]resync.Conn, len(conns))
	for i, c := range conns {
		if nc, ok := c.(net.Conn); ok {
			out[i] = &lingerConn{Conn: nc}
		} else {
			out[i] = c
		}
	}
	return out
}

type lingerConn struct {
	net.Conn
	once sync.Once
}

// Close drains the connection until the peer closes it, then closes it;
// it returns at once. A reader blocked on the connection is released by
// the deadline.
func (c *lingerConn) Close() error {
	c.once.Do(func() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(sessionLinger))
		go func() {
			_, _ = io.Copy(io.Discard, c.Conn)
			c.Conn.Close()
		}()
	})
	return nil
}

// ---- the session's target end (initiated here) ----

// dialSession opens the connections of one directory's session.
func (d *Daemon) dialSession(ctx context.Context, h sessionHeader) ([]resync.Conn, error) {
	conns := make([]resync.Conn, 0, h.count)
	for i := range h.count {
		c, err := d.dialPeer(ctx, ALPNResync)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		hh := h
		hh.index = i
		if _, err := c.Write(hh.encode()); err != nil {
			c.Close()
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("send session header: %w", err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// resyncRun is a resync running on this target.
type resyncRun struct {
	mu       sync.Mutex
	id       uint64
	req      ctl.ResyncRequest
	full     bool
	started  time.Time
	cancel   context.CancelFunc
	progress []resync.Progress
}

func (r *resyncRun) status() ctl.ResyncStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := ctl.ResyncStatus{ID: r.id, Full: r.full, Started: r.started}
	for _, p := range r.progress {
		st.Done += p.BytesDone
		st.Total += p.BytesTotal
		st.BytesPerSec += p.BytesPerSec
		st.Sent += p.Sent
		st.ETA = max(st.ETA, p.ETA)
	}
	return st
}

func (r *resyncRun) same(q ctl.ResyncRequest) bool {
	return r.req.Full == q.Full && r.req.Quarantine == q.Quarantine && r.req.Since == q.Since && r.req.Source.Current == q.Source.Current
}

// startResync starts (or adopts) the resync the agent asks for.
func (d *Daemon) startResync(ctx context.Context, req ctl.ResyncRequest, gen uint64) error {
	d.roleMu.Lock()
	defer d.roleMu.Unlock()
	d.mu.Lock()
	t := d.tgt
	d.mu.Unlock()
	if t == nil {
		return errNotTarget
	}
	if req.Peer != "" && req.Peer != d.peer {
		return fmt.Errorf("resync from %s: the other node of module %s is %s", req.Peer, d.cfg.Module.Name, d.peer)
	}
	t.mu.Lock()
	if r := t.resync; r != nil {
		if r.same(req) {
			r.mu.Lock()
			r.id = req.ID
			r.mu.Unlock()
			t.mu.Unlock()
			d.logger.Info("resync adopted under a new id", "id", req.ID)
			return nil
		}
		t.mu.Unlock()
		t.cancelResync("replaced by a new resync request")
		t.mu.Lock()
	}
	if !req.Full && !req.Quarantine && t.inSync && t.stream != nil && t.syncedGen == req.Source.Current {
		// An agent that restarted asks again for what this daemon holds:
		// the live stream never stopped since the last resync.
		t.mu.Unlock()
		d.log("info", fmt.Sprintf("resync %d: already in sync with %s on a live stream (generation %016x)", req.ID, d.peer, req.Source.Current))
		go d.events.publish(ctl.Event{Kind: ctl.EvResyncDone, At: time.Now(), ID: req.ID})
		return nil
	}
	full := req.Full || t.forceFull
	for _, j := range d.journals {
		if !j.Trusted() || !j.Snapshot().Covers(req.Since) {
			full = true
		}
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &resyncRun{id: req.ID, req: req, full: full, started: time.Now(), cancel: cancel, progress: make([]resync.Progress, len(d.repl.Dirs))}
	t.resync = r
	t.inSync = false
	t.mu.Unlock()
	kind := "incremental"
	if full {
		kind = "full"
	}
	d.log("info", fmt.Sprintf("resync %d from %s (%s) started", req.ID, d.peer, kind))
	go d.runResync(rctx, t, r)
	return nil
}

func (t *targetRole) cancelResync(why string) {
	t.mu.Lock()
	r := t.resync
	t.mu.Unlock()
	if r != nil {
		r.cancel()
	}
}

// quarantineDir is where a split-brain loser's files go.
func (d *Daemon) quarantineDir(dir int) string {
	base := d.repl.QuarantineDir
	if base == "" {
		base = filepath.Join(d.stateDir, "splitbrain")
	} else {
		base = filepath.Join(base, d.cfg.Module.Name)
	}
	if len(d.repl.Dirs) > 1 {
		base = filepath.Join(base, fmt.Sprintf("dir%d", dir))
	}
	return base
}

func (d *Daemon) runResync(ctx context.Context, t *targetRole, r *resyncRun) {
	// The source goes live at the end of the resync over the stream it
	// opened to this node: wait for it rather than fail at the end.
	for deadline := time.Now().Add(syncedWait); t.liveStream() == nil && time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(50 * time.Millisecond)
	}
	// The stream the source will go live on: if another replaces it
	// before the end, the source's new stream is not live and this node
	// must not believe it is in sync.
	stream := t.liveStream()
	id := newSessionID()
	results := make([]*resync.Result, len(d.repl.Dirs))
	errs := make([]error, len(d.repl.Dirs))
	var lastProgress time.Time
	var progMu sync.Mutex
	var wg sync.WaitGroup
	for i := range d.repl.Dirs {
		wg.Go(func() {
			h := sessionHeader{id: id, dir: uint16(i), dirs: uint16(len(d.repl.Dirs)), purpose: purposeResync, count: uint8(max(1, min(d.repl.Resync.Parallel, 16)))}
			conns, err := d.dialSession(ctx, h)
			if err != nil {
				errs[i] = err
				return
			}
			req := resync.Request{Kind: resync.RequestIncremental, Since: r.req.Since}
			if r.full {
				req = resync.Request{Kind: resync.RequestFull}
			} else {
				req.Map = d.journals[i].Snapshot()
			}
			if r.req.Quarantine {
				req.Quarantine = d.quarantineDir(i)
			}
			res, err := resync.RunTarget(ctx, lingering(conns), resync.TargetConfig{
				Root: t.underPath(i), DirIndex: uint16(i), Excludes: d.repl.Dirs[i].Exclude, Apply: t.apply, Request: req,
				Progress: func(p resync.Progress) {
					r.mu.Lock()
					r.progress[i] = p
					rid := r.id
					r.mu.Unlock()
					progMu.Lock()
					due := time.Since(lastProgress) >= 500*time.Millisecond
					if due {
						lastProgress = time.Now()
					}
					progMu.Unlock()
					if due {
						st := r.status()
						d.events.publish(ctl.Event{Kind: ctl.EvResyncProgress, At: time.Now(), ID: rid, Done: st.Done, Total: st.Total})
					}
				},
			})
			if err != nil {
				errs[i] = err
				return
			}
			results[i] = &res
		})
	}
	wg.Wait()
	err := errors.Join(errs...)
	if err == nil {
		err = d.finishResync(ctx, t, r, stream)
	}
	st := r.status()
	st.Finished = time.Now()
	var changed, data, sent int64
	var quarantine string
	for _, res := range results {
		if res == nil {
			continue
		}
		changed += res.Changed
		data += res.DataBytes
		sent += res.SentBytes + res.ReceivedByte
		if res.Quarantine != "" {
			quarantine = res.Quarantine
			d.log("warn", fmt.Sprintf("split brain: %d files this node changed since the common generation were copied to %s (MANIFEST.json lists them)", res.QuarantinedFiles, res.Quarantine))
		}
		for _, w := range res.Warnings {
			d.log("warn", "resync: "+w)
		}
	}
	st.Sent, st.Quarantine = sent, quarantine
	r.mu.Lock()
	rid := r.id
	r.mu.Unlock()
	t.mu.Lock()
	if t.resync == r {
		t.resync = nil
	}
	if err != nil {
		st.Error = err.Error()
		if !r.full {
			t.forceFull = true
		}
	} else {
		t.forceFull = false
	}
	t.last = &st
	t.mu.Unlock()
	kind := "incremental"
	if r.full {
		kind = "full"
	}
	if err != nil {
		d.log("warn", fmt.Sprintf("resync %d from %s (%s) failed: %v", rid, d.peer, kind, err))
		d.events.publish(ctl.Event{Kind: ctl.EvResyncFailed, At: time.Now(), ID: rid, Reason: err.Error()})
		return
	}
	d.log("info", fmt.Sprintf("resync %d from %s (%s) done: %d objects changed, %d data bytes, %d bytes on the network, took %v",
		rid, d.peer, kind, changed, data, sent, time.Since(r.started).Round(time.Millisecond)))
	d.events.publish(ctl.Event{Kind: ctl.EvResyncDone, At: time.Now(), ID: rid})
}

// finishResync makes the target's result durable and checkpointed, and
// checks that the live stream the source switched to is running.
func (d *Daemon) finishResync(ctx context.Context, t *targetRole, r *resyncRun, stream *targetStream) error {
	if stream == nil || t.liveStream() != stream {
		return errors.New("the replication stream from the source did not stay open through the resync")
	}
	if err := t.tree.SyncAll(); err != nil {
		return fmt.Errorf("sync the resynced trees: %w", err)
	}
	gen := r.req.Source.Current
	if err := d.checkpointAll(t.under, gen, nil); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stream != stream {
		return errors.New("the replication stream from the source ended at the end of the resync")
	}
	t.inSync, t.syncedGen = true, gen
	return nil
}

// ---- periodic checkpoints ----

// checkpointEvery is how often a node in sync empties its journal, so that
// a later incremental resync sends only what changed after it.
const checkpointEvery = 5 * time.Second

func (d *Daemon) checkpointLoop(ctx context.Context) {
	tk := time.NewTicker(checkpointEvery)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		d.mu.Lock()
		src, tgt, gen := d.src, d.tgt, d.gen
		d.mu.Unlock()
		dirty := false
		for _, j := range d.journals {
			if s, _ := j.Stats(); s.Paths > 0 {
				dirty = true
			}
		}
		switch {
		case !dirty:
		case src != nil && src.sink.live():
			if err := d.checkpointAll(src.under, gen, src.sink.peerHasAll); err != nil {
				d.logger.Debug("periodic checkpoint skipped", "error", err)
			}
		case tgt != nil:
			tgt.mu.Lock()
			ok, g := tgt.inSync && tgt.resync == nil, tgt.syncedGen
			tgt.mu.Unlock()
			if ok {
				if err := d.checkpointAll(tgt.under, g, nil); err != nil {
					d.logger.Debug("periodic checkpoint skipped", "error", err)
				}
			}
		}
	}
}

// ---- verify and diff ----

// localRoot is a path to read directory i as it is on this node.
func (d *Daemon) localRoot(i int) string {
	d.mu.Lock()
	src, tgt := d.src, d.tgt
	d.mu.Unlock()
	switch {
	case src != nil:
		return fdPath(src.under[i])
	case tgt != nil:
		return tgt.underPath(i)
	}
	return d.repl.Dirs[i].Path
}

func (d *Daemon) readOnlySession(ctx context.Context, purpose byte, req resync.Request) ([]*resync.Result, error) {
	id := newSessionID()
	out := make([]*resync.Result, len(d.repl.Dirs))
	for i := range d.repl.Dirs {
		h := sessionHeader{id: id, dir: uint16(i), dirs: uint16(len(d.repl.Dirs)), purpose: purpose, count: 1}
		conns, err := d.dialSession(ctx, h)
		if err != nil {
			return nil, err
		}
		var res resync.Result
		if purpose == purposeEstimateFrom {
			// This node is the source of the resync estimated: it runs the
			// session's source end, the peer its target end.
			res, err = resync.RunSource(ctx, conns, resync.SourceConfig{Root: d.localRoot(i), DirIndex: uint16(i), Excludes: d.repl.Dirs[i].Exclude, Options: d.resyncOptions(nil),
				Map: d.estimateSourceMap(i)})
		} else {
			if req.Kind == resync.RequestEstimate {
				req.Map, _ = d.estimateTargetMap(i)
			}
			res, err = resync.RunTarget(ctx, lingering(conns), resync.TargetConfig{Root: d.localRoot(i), DirIndex: uint16(i), Excludes: d.repl.Dirs[i].Exclude, Request: req})
		}

		if err != nil {
			return nil, fmt.Errorf("compare %s with %s: %w", d.repl.Dirs[i].Path, d.peer, err)
		}
		out[i] = &res
	}
	return out, nil
}

// verifyLimit bounds the differences listed.
const verifyLimit = 1000

func (d *Daemon) verify(ctx context.Context) (*ctl.VerifyReport, error) {
	start := time.Now()
	// Directory modification times are left out: live replication does
	// not carry them (capture's contract: an entry created or removed
	// changes its directory's time on each node at its own moment).
	res, err := d.readOnlySession(ctx, purposeVerify, resync.Request{Kind: resync.RequestVerify, Compare: resync.CompareOptions{Limit: verifyLimit}})
	if err != nil {
		return nil, err
	}
	rep := &ctl.VerifyReport{Local: d.cfg.Node, Peer: d.peer}
	for i, r := range res {
		rep.Files += r.Files
		for _, df := range r.Differences {
			rep.Differences = append(rep.Differences, fmt.Sprintf("%s: %s (%s)", filepath.Join(d.repl.Dirs[i].Path, df.Path), diffText(df.Kind, d.peer, d.cfg.Node), df.Detail))
		}
		if len(r.Differences) >= verifyLimit {
			rep.Truncated = true
		}
	}
	rep.Took = time.Since(start)
	return rep, nil
}

// diffText names a difference; the peer is the session's source.
func diffText(k resync.DiffKind, peer, local string) string {
	switch k {
	case resync.DiffMissing:
		return "only on " + peer
	case resync.DiffExtra:
		return "only on " + local
	case resync.DiffKindOf:
		return "different kinds"
	case resync.DiffContent:
		return "contents differ"
	case resync.DiffSize:
		return "sizes differ"
	case resync.DiffMode:
		return "permissions differ"
	case resync.DiffOwner:
		return "owners differ"
	case resync.DiffMtime:
		return "modification times differ"
	case resync.DiffAtime:
		return "access times differ"
	case resync.DiffXattrs:
		return "extended attributes differ"
	case resync.DiffLinkTarget:
		return "symlink targets differ"
	case resync.DiffDevice:
		return "device numbers differ"
	case resync.DiffHardlinks:
		return "hard links differ"
	}
	return fmt.Sprintf("difference %d", k)
}

// diffRate is the rate an estimate assumes without a bandwidth cap (1 Gb/s).
const diffRate = 125e6

func (d *Daemon) diff(ctx context.Context) (*ctl.DiffReport, error) {
	rate := float64(d.repl.Resync.Bandwidth)
	if rate <= 0 {
		rate = diffRate
	}
	// A resync goes from the node that is not a target to the target:
	// estimate that direction.
	d.mu.Lock()
	target := d.tgt != nil
	d.mu.Unlock()
	purpose := byte(purposeEstimateFrom)
	rep := &ctl.DiffReport{Source: d.cfg.Node, Target: d.peer, Full: true}
	if target {
		purpose = purposeEstimate
		rep.Source, rep.Target = d.peer, d.cfg.Node
	}
	res, err := d.readOnlySession(ctx, purpose, resync.Request{Kind: resync.RequestEstimate, Rate: rate})
	if err != nil {
		return nil, err
	}
	for _, r := range res {
		if e := r.Estimate; e != nil {
			rep.Files += e.Files
			rep.Bytes += e.Bytes
			rep.Estimate += e.Duration
		}
	}
	// The resync is full when any directory's is (startResync decides
	// for all of them at once).
	rep.Full = false
	var reasons []string
	for i, r := range res {
		e := r.Estimate
		if e == nil {
			continue
		}
		why := e.Reason
		if e.Full {
			rep.Full = true
			if target {
				// This node knows better than the source why it offered no map.
				if _, local := d.estimateTargetMap(i); local != "" {
					why = "full resync: " + local
				}
			}
			why += "; estimated by a block comparison of both trees (dry run)"
		}
		if len(res) > 1 {
			why = d.repl.Dirs[i].Path + ": " + why
		}
		reasons = append(reasons, why)
	}
	reasons = append(reasons, "the agent resyncs in full whatever this says after a split brain, over data imposed by primforce or unrelated to this, after halo second, or to resume an interrupted full resync")
	rep.Reason = strings.Join(reasons, "\n")
	return rep, nil
}

// estimateTargetMap is the journal map directory i's resync would send
// if this node became the target now, or nil and why a resync would be
// full (startResync's checks; the common generation is the map's base).
func (d *Daemon) estimateTargetMap(i int) (*journal.ZoneMap, string) {
	d.mu.Lock()
	t := d.tgt
	d.mu.Unlock()
	if t != nil {
		t.mu.Lock()
		force := t.forceFull
		running := t.resync != nil && t.resync.full
		t.mu.Unlock()
		switch {
		case running:
			return nil, "a full resync is running"
		case force:
			return nil, "the last incremental resync failed: the next one is full"
		}
	}
	// startResync makes every directory's resync full when one journal
	// cannot be used.
	for k, j := range d.journals {
		if !j.Trusted() {
			return nil, "this node's journal of " + d.repl.Dirs[k].Path + " is not trusted (damaged or lost)"
		}
	}
	m := d.journals[i].Snapshot()
	if m.Base() == 0 {
		return nil, "this node's journal has no checkpoint (never in sync)"
	}
	return m, ""
}

// estimateSourceMap returns the source end's journal map of directory i
// for an estimate, nil when the journal is not trusted.
func (d *Daemon) estimateSourceMap(i int) func() (*journal.ZoneMap, error) {
	j := d.journals[i]
	if !j.Trusted() {
		return nil
	}
	return func() (*journal.ZoneMap, error) { return j.Snapshot(), nil }
}
