package resync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/core/journal"
)

var timeNow = time.Now

// Defaults.
const (
	defaultMaxPasses   = 8
	defaultFreezeBelow = 64 << 20
)

var netErrClosed = net.ErrClosed

// ctxErr reports the context's end rather than the I/O error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
			return c
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, netErrClosed) {
			return ctx.Err()
		}
	}
	return err
}

// RunSource runs the source end of a session: it reads the target's
// request and drives the session to its end.
func RunSource(ctx context.Context, conns []Conn, cfg SourceConfig) (Result, error) {
	res, err := runSource(ctx, conns, cfg)
	if err != nil {
		// Once our context is cancelled, the other end closing the
		// connections (it was cancelled too) is a consequence, not the
		// cause: report the cancellation.
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (then: %v)", cerr, err)
		}
		return res, fmt.Errorf("resync source %s: %w", cfg.Root, err)
	}
	return res, nil
}

// source is the driving end of a session.
type source struct {
	cfg    SourceConfig
	opt    Options
	rootFD int
	conns  []*clientConn
	hello  hello
	tmap   *journal.ZoneMap // the target's map (incremental)
	dryRun bool

	ctx    context.Context
	cancel context.CancelCauseFunc

	sent, recv atomic.Int64
	stats      struct {
		files, changed, deleted, data, hashed atomic.Int64
	}
	prog struct {
		phase               atomic.Value // string
		pass                atomic.Int64
		filesDone, filesTot atomic.Int64
		bytesDone, bytesTot atomic.Int64
		lastBytes           int64
		lastAt              time.Time
		rate                float64
	}
	nextConn  atomic.Uint64
	frozen    atomic.Bool   // the final pass runs on a frozen source
	ending    atomic.Bool   // the result is sent: connections may close
	fileSlots chan struct{} // files in flight
	itemSlots chan struct{} // plan items in flight

	mu       sync.Mutex
	warnings []string
	missing  map[string]bool // staging slots whose object was not there
	stale    map[string]bool // target paths a pass left undone
	// wholeLater: Update items to send whole after the other items.
	wholeLater []string
	// linked: source inodes (hard-linked files) that a Whole item listed
	// without all their names; the pass links the names afterwards.
	linked    map[devIno]bool
	knownDirs map[string]bool // target directories made sure of
	parentsMu sync.Mutex
}

func runSource(ctx context.Context, conns []Conn, cfg SourceConfig) (Result, error) {
	start := timeNow()
	if len(conns) == 0 || len(conns) > 1<<15 {
		return Result{}, fmt.Errorf("%d connections", len(conns))
	}
	opt := cfg.Options
	if opt.BlockSize <= 0 {
		opt.BlockSize = DefaultBlockSize
	}
	if opt.BlockSize > 1<<30 {
		return Result{}, fmt.Errorf("block size %d above 1 GiB", opt.BlockSize)
	}
	if opt.Parallel <= 0 {
		opt.Parallel = 4 * len(conns)
	}
	if opt.MaxPasses <= 0 {
		opt.MaxPasses = defaultMaxPasses
	}
	if opt.FreezeBelow <= 0 {
		opt.FreezeBelow = defaultFreezeBelow
	}
	rootFD, err := unix.Open(cfg.Root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}, fmt.Errorf("open tree: %w", err)
	}
	defer unix.Close(rootFD)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer closeAll(conns) // the session owns its connections
	stop := context.AfterFunc(ctx, func() { closeAll(conns) })
	defer stop()
	s := &source{cfg: cfg, opt: opt, rootFD: rootFD, ctx: ctx, cancel: cancel,
		fileSlots: make(chan struct{}, opt.Parallel), itemSlots: make(chan struct{}, opt.Parallel), missing: map[string]bool{}, stale: map[string]bool{}, knownDirs: map[string]bool{}}
	s.prog.phase.Store("start")
	if err := preambles(conns); err != nil {
		return Result{}, ctxErr(ctx, err)
	}
	limiter := newLimiter(opt.RateLimit)
	for i, c := range conns {
		s.conns = append(s.conns, &clientConn{s: s, idx: i, fc: newFrameConn(c, limiter, &s.sent, &s.recv)})
	}
	if err := s.readHello(); err != nil {
		s.abort(err)
		return Result{}, ctxErr(ctx, err)
	}
	for _, c := range s.conns {
		go c.readLoop()
	}
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	progressWG.Go(func() { s.progressLoop(progressDone) })

	res, err := s.run()
	close(progressDone)
	progressWG.Wait()
	if err == nil && ctx.Err() != nil {
		err = context.Cause(ctx) // a connection failed meanwhile
	}
	if err != nil {
		err = ctxErr(ctx, err)
		s.abort(err)
		return Result{}, err
	}
	res.Took = timeNow().Sub(start)
	s.fill(&res)
	s.report(true)
	if err := s.finish(&res); err != nil {
		err = ctxErr(ctx, err)
		s.abort(err)
		return Result{}, err
	}
	return res, nil
}

// fail ends the session with err (the first failure wins).
func (s *source) fail(err error) {
	s.cancel(err)
}

// abort tells the target the session failed (best effort).
func (s *source) abort(err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, c := range s.conns {
		_ = c.fc.send(ctx, msgAbort, []byte(err.Error()))
	}
}

func (s *source) warn(format string, args ...any) {
	s.mu.Lock()
	if len(s.warnings) < 100 {
		s.warnings = append(s.warnings, fmt.Sprintf(format, args...))
	}
	s.mu.Unlock()
}

// readHello reads the request (and the target's map) and answers it.
func (s *source) readHello() error {
	fc := s.conns[0].fc
	typ, p, err := fc.readFrame()
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	if typ != msgHello {
		return fmt.Errorf("%w: frame type %d instead of hello", ErrProtocol, typ)
	}
	if err := json.Unmarshal(p, &s.hello); err != nil {
		return fmt.Errorf("%w: hello: %v", ErrProtocol, err)
	}
	h := s.hello
	var refuse error
	switch {
	case h.Version != ProtocolVersion:
		refuse = fmt.Errorf("protocol version %d, this node speaks %d", h.Version, ProtocolVersion)
	case h.Kind < RequestFull || h.Kind > RequestEstimate:
		refuse = fmt.Errorf("unknown request kind %d", h.Kind)
	case h.Kind == RequestIncremental && !h.HasMap:
		refuse = errors.New("incremental resync without the target's map")
	case h.MapFrames < 0 || h.MapFrames > 1<<20:
		refuse = fmt.Errorf("%d map frames", h.MapFrames)
	}
	if h.HasMap && refuse == nil {
		var data []byte
		for range h.MapFrames {
			typ, p, err := fc.readFrame()
			if err != nil {
				return fmt.Errorf("read the target's map: %w", err)
			}
			if typ != msgMap {
				return fmt.Errorf("%w: frame type %d inside the target's map", ErrProtocol, typ)
			}
			data = append(data, p...)
		}
		m, info, err := journal.ReplayLog(data, h.ZoneSize)
		switch {
		case err != nil:
			refuse = fmt.Errorf("target's map: %w", err)
		case !info.Trusted() || info.Valid != len(data):
			refuse = fmt.Errorf("target's map is damaged: %v", info.Damage)
		default:
			s.tmap = m
		}
	}
	ok := helloOK{BlockSize: s.opt.BlockSize}
	if refuse != nil {
		ok.Error = refuse.Error()
	}
	b, _ := json.Marshal(ok)
	if err := fc.send(s.ctx, msgHelloOK, b); err != nil {
		return err
	}
	if refuse != nil {
		return fmt.Errorf("refused the target's request: %w", refuse)
	}
	return nil
}

// run does what the target asked.
func (s *source) run() (Result, error) {
	switch s.hello.Kind {
	case RequestVerify:
		return s.verify()
	case RequestEstimate:
		return s.estimate()
	}
	return s.resync()
}

// fill copies the counters into the result.
func (s *source) fill(r *Result) {
	r.Files = s.stats.files.Load()
	r.Changed = s.stats.changed.Load()
	r.Deleted = s.stats.deleted.Load()
	r.DataBytes = s.stats.data.Load()
	r.HashedBytes = s.stats.hashed.Load()
	r.SentBytes = s.sent.Load()
	r.ReceivedByte = s.recv.Load()
	s.mu.Lock()
	r.Warnings = append(r.Warnings, s.warnings...)
	s.mu.Unlock()
}

// finish sends the result on every connection and waits for the target's
// answer (the quarantine folder).
func (s *source) finish(res *Result) error {
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	var ok doneOK
	okc := make(chan error, 1)
	c0 := s.conns[0]
	s.ending.Store(true)
	err = c0.request(msgDone, b, func(typ byte, p []byte) (bool, error) {
		if typ != msgDoneOK {
			return true, fmt.Errorf("%w: frame type %d instead of the answer to the result", ErrProtocol, typ)
		}
		if err := json.Unmarshal(p, &ok); err != nil {
			return true, fmt.Errorf("%w: answer to the result: %v", ErrProtocol, err)
		}
		okc <- nil
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, c := range s.conns[1:] {
		if err := c.fc.send(s.ctx, msgDone, b); err != nil {
			return err
		}
	}
	select {
	case <-okc:
	case <-s.ctx.Done():
		select {
		case <-okc: // answered, then the connections closed
		default:
			return context.Cause(s.ctx)
		}
	}
	if ok.Error != "" {
		return fmt.Errorf("target: %s", ok.Error)
	}
	res.Quarantine, res.QuarantinedFiles = ok.Quarantine, ok.QuarantinedFiles
	return nil
}

// ---- progress ----

func (s *source) setPhase(phase string) { s.prog.phase.Store(phase) }

func (s *source) progressLoop(done chan struct{}) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.report(false)
		}
	}
}

// report computes the progress, calls the callback and tells the target.
func (s *source) report(final bool) {
	now := timeNow()
	p := Progress{
		Phase: s.prog.phase.Load().(string), Pass: int(s.prog.pass.Load()),
		FilesDone: s.prog.filesDone.Load(), FilesTotal: s.prog.filesTot.Load(),
		BytesDone: s.prog.bytesDone.Load(), BytesTotal: s.prog.bytesTot.Load(),
		Sent: s.sent.Load(),
	}
	if final {
		p.Phase = "done"
	}
	s.mu.Lock()
	if !s.prog.lastAt.IsZero() {
		if dt := now.Sub(s.prog.lastAt).Seconds(); dt > 0 {
			inst := float64(p.BytesDone-s.prog.lastBytes) / dt
			// An exponential average over a few seconds: steady enough for
			// an ETA, quick to follow a change of pace.
			if s.prog.rate == 0 {
				s.prog.rate = inst
			} else {
				s.prog.rate = 0.7*s.prog.rate + 0.3*inst
			}
		}
	}
	s.prog.lastAt, s.prog.lastBytes = now, p.BytesDone
	p.BytesPerSec = s.prog.rate
	s.mu.Unlock()
	if p.BytesPerSec > 0 && p.BytesTotal > p.BytesDone {
		p.ETA = time.Duration(float64(p.BytesTotal-p.BytesDone) / p.BytesPerSec * float64(time.Second))
	}
	if s.opt.Progress != nil {
		s.opt.Progress(p)
	}
	if b, err := json.Marshal(p); err == nil && s.ctx.Err() == nil {
		_ = s.conns[0].fc.send(s.ctx, msgProgress, b)
	}
}

// ---- connections ----

// clientConn is the source's side of one connection: requests are
// answered in order, so each registers a handler for the frames of its
// answer before it is written.
type clientConn struct {
	s   *source
	idx int
	fc  *frameConn

	reqMu sync.Mutex // a request's frames and its handler's place in line
	qmu   sync.Mutex
	queue []handler
}

// handler consumes the frames of one answer; done when it is complete.
type handler func(typ byte, p []byte) (done bool, err error)

func (c *clientConn) readLoop() {
	for {
		typ, p, err := c.fc.readFrame()
		if err != nil {
			if c.s.ending.Load() && c.idx != 0 {
				return // the target closes the session's connections once done
			}
			c.s.fail(fmt.Errorf("connection %d: %w", c.idx, err))
			return
		}
		if typ == msgAbort {
			c.s.fail(fmt.Errorf("target gave up: %s", p))
			return
		}
		c.qmu.Lock()
		var h handler
		if len(c.queue) > 0 {
			h = c.queue[0]
		}
		c.qmu.Unlock()
		if h == nil {
			c.s.fail(fmt.Errorf("%w: unsolicited frame type %d on connection %d", ErrProtocol, typ, c.idx))
			return
		}
		done, err := h(typ, p)
		if err != nil {
			c.s.fail(err)
			return
		}
		if done {
			c.qmu.Lock()
			c.queue = c.queue[1:]
			c.qmu.Unlock()
		}
	}
}

// request sends a request whose answer h consumes.
func (c *clientConn) request(typ byte, payload []byte, h handler) error {
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	c.qmu.Lock()
	c.queue = append(c.queue, h)
	c.qmu.Unlock()
	return c.fc.send(c.s.ctx, typ, payload)
}

// wait waits for a request's answer.
func (c *clientConn) wait(done chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-c.s.ctx.Done():
		return context.Cause(c.s.ctx)
	}
}

// list lists a subtree of the target.
func (c *clientConn) list(prefix string, single, hash bool) ([]Entry, error) {
	var e enc
	e.str(prefix)
	e.u8(b2u(single))
	e.u8(b2u(hash))
	e.sv(c.s.opt.BlockSize)
	var out []Entry
	var lerr error
	done := make(chan struct{})
	err := c.request(msgList, e.b, func(typ byte, p []byte) (bool, error) {
		switch typ {
		case msgEntries:
			d := dec{b: p}
			prev := ""
			for len(d.b) > 0 && d.err == nil {
				x := d.entry(prev)
				prev = x.Path
				out = append(out, x)
			}
			if err := d.end("entries"); err != nil {
				return true, err
			}
			return false, nil
		case msgListEnd:
			d := dec{b: p}
			msg := d.str()
			if err := d.end("end of listing"); err != nil {
				return true, err
			}
			if msg != "" {
				lerr = fmt.Errorf("target: %s", msg)
			}
			close(done)
			return true, nil
		}
		return true, fmt.Errorf("%w: frame type %d in a listing", ErrProtocol, typ)
	})
	if err != nil {
		return nil, err
	}
	if err := c.wait(done); err != nil {
		return nil, err
	}
	if lerr != nil {
		return nil, lerr
	}
	// The target's order is the scan's; check it, the merge relies on it.
	for i := range out {
		if i > 0 && journal.ComparePaths(out[i-1].Path, out[i].Path) >= 0 {
			return nil, fmt.Errorf("%w: listing out of order at %q", ErrProtocol, out[i].Path)
		}
		if prefix != "" && out[i].Path != prefix && !isUnder(out[i].Path, prefix) {
			return nil, fmt.Errorf("%w: listing of %q holds %q", ErrProtocol, prefix, out[i].Path)
		}
	}
	return out, nil
}

// hashes returns the target's hashes of count blocks of path from first
// (fewer at its end), and its size; ok false when it holds no such file.
func (c *clientConn) hashes(path string, first, count int64) (sums []Sum, size int64, ok bool, err error) {
	var e enc
	e.str(path)
	e.sv(first)
	e.sv(count)
	done := make(chan struct{})
	err = c.request(msgHashes, e.b, func(typ byte, p []byte) (bool, error) {
		if typ != msgHashesOK {
			return true, fmt.Errorf("%w: frame type %d instead of hashes", ErrProtocol, typ)
		}
		d := dec{b: p}
		if d.u8() == 1 {
			ok = true
			size = d.sv()
			n := d.sv()
			if n < 0 || n > count || n*int64(len(Sum{})) > int64(len(d.b)) {
				return true, fmt.Errorf("%w: %d hashes", ErrProtocol, n)
			}
			sums = make([]Sum, n)
			for i := range sums {
				sums[i] = d.sum()
			}
		}
		if err := d.end("hashes"); err != nil {
			return true, err
		}
		close(done)
		return true, nil
	})
	if err != nil {
		return nil, 0, false, err
	}
	if err := c.wait(done); err != nil {
		return nil, 0, false, err
	}
	return sums, size, ok, nil
}

// barrier waits until the target applied every op sent on this connection
// and handles the failures it reports.
func (c *clientConn) barrier() error {
	if c.s.dryRun {
		return nil
	}
	var fails []opFailure
	done := make(chan struct{})
	err := c.request(msgBarrier, nil, func(typ byte, p []byte) (bool, error) {
		if typ != msgBarrierOK {
			return true, fmt.Errorf("%w: frame type %d instead of a barrier", ErrProtocol, typ)
		}
		d := dec{b: p}
		n := d.uv()
		if n > uint64(len(p)) {
			return true, fmt.Errorf("%w: %d failures", ErrProtocol, n)
		}
		for range n {
			fails = append(fails, opFailure{Kind: opKind(d.u8()), Path: d.str(), Target: d.str(), Errno: d.u32(), Msg: d.str()})
		}
		if err := d.end("barrier"); err != nil {
			return true, err
		}
		close(done)
		return true, nil
	})
	if err != nil {
		return err
	}
	if err := c.wait(done); err != nil {
		return err
	}
	return c.s.handleFailures(fails)
}

// barrierAll runs a barrier on every connection.
func (s *source) barrierAll() error {
	errs := make([]error, len(s.conns))
	var wg sync.WaitGroup
	for i, c := range s.conns {
		wg.Go(func() { errs[i] = c.barrier() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pick chooses a connection for a unit of work.
func (s *source) pick() *clientConn {
	return s.conns[s.nextConn.Add(1)%uint64(len(s.conns))]
}

func b2u(b bool) byte {
	if b {
		return 1
	}
	return 0
}
