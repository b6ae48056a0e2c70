package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"sync"
	"time"

	"github.com/halo-ha/halo/internal/replication/op"
)

// Defaults of SenderOptions.
const (
	DefaultMaxLag       = 5 * time.Second
	DefaultWindowBytes  = 64 << 20
	DefaultWindowOps    = 1 << 16
	DefaultStallTimeout = 10 * time.Second
	DefaultPingInterval = time.Second
)

// ioBufferSize is the size of the buffered reader and writer of a stream.
const ioBufferSize = 256 << 10

// waitFor is what a submitter waits for.
type waitFor uint8

const (
	waitNone waitFor = iota
	waitApplied
	waitDurable
)

// pending is one submitted operation (or barrier) until the peer
// acknowledged it as its submitter needs.
type pending struct {
	seq     uint64
	enc     []byte // Ops frame entry (pooled, nil once written); nil for a barrier
	size    int    // len(enc), for the window
	barrier bool
	at      time.Time // submitted
	wait    waitFor
	done    chan struct{} // closed when settled; nil for waitNone
	err     error         // set before done closes
}

// Sender streams operations to the peer. It implements capture.Sink.
type Sender struct {
	conn net.Conn
	opts SenderOptions
	log  *slog.Logger
	peer Hello

	wmu  sync.Mutex // serializes frame writes
	bw   *bufio.Writer
	wseq uint64 // next frame sequence number to write

	kick       chan struct{} // wakes the writer
	done       chan struct{} // closed when the stream ended
	readerDone chan struct{} // closed when the reader returned
	wg         sync.WaitGroup

	mu           sync.Mutex
	err          error // why the stream ended (wraps ErrDegraded)
	nextSeq      uint64
	unsent       []*pending // submitted, not written yet
	unacked      []*pending // written, not applied by the peer
	durableWait  []*pending // applied, waiting to be durable
	windowBytes  int64      // bytes of unsent and unacked
	lastSent     uint64     // highest seq written
	applied      uint64
	durable      uint64
	appliedAt    time.Time // last progress of applied
	durableAt    time.Time // last progress of durable
	space        chan struct{}
	pingDue      bool
	pingID       uint64 // outstanding Ping, 0 if none
	pingAt       time.Time
	lastPing     time.Time
	rtt          time.Duration
	stalledSince time.Time
	opsSent      uint64
	bytesSent    uint64
	framesSent   uint64
	// Async mode: how fast the peer applies what is in flight (bytes per
	// second, 0 until measured), from the bytes acknowledged since
	// drainFrom (reset when the window was empty: idle time is not slow
	// progress).
	drainRate  float64
	drainFrom  time.Time
	drainBytes int64
}

// NewSender opens the stream on conn: it sends this node's Hello, checks
// the peer's, and starts streaming. ctx bounds the handshake only.
func NewSender(ctx context.Context, conn net.Conn, opts SenderOptions) (*Sender, error) {
	switch opts.Mode {
	case ModeSync, ModeDurable, ModeAsync:
	default:
		return nil, fmt.Errorf("open replication stream: mode %v", opts.Mode)
	}
	if opts.MaxLag <= 0 {
		opts.MaxLag = DefaultMaxLag
	}
	if opts.WindowBytes <= 0 {
		opts.WindowBytes = DefaultWindowBytes
	}
	if opts.WindowOps <= 0 {
		opts.WindowOps = DefaultWindowOps
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = DefaultPingInterval
	}
	opts.Hello.Version = ProtocolVersion
	s := &Sender{
		conn:       conn,
		opts:       opts,
		log:        logger(opts.Logger),
		bw:         bufio.NewWriterSize(conn, ioBufferSize),
		kick:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		nextSeq:    1,
		space:      make(chan struct{}),
	}
	br := bufio.NewReaderSize(conn, ioBufferSize)
	peer, err := s.handshake(ctx, br)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("open replication stream of module %s: %w", opts.Hello.Module, err)
	}
	s.peer = peer
	now := time.Now()
	s.appliedAt, s.durableAt, s.lastPing = now, now, now
	s.wg.Add(3)
	go s.writer()
	go s.reader(br)
	go s.ticker()
	return s, nil
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// handshake sends our Hello and reads the peer's (frame 0 both ways).
func (s *Sender) handshake(ctx context.Context, br *bufio.Reader) (Hello, error) {
	stop := context.AfterFunc(ctx, func() { s.conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		s.conn.SetDeadline(time.Time{})
	}()
	if err := s.writeFrame(FrameHello, appendHello(nil, s.opts.Hello)); err != nil {
		return Hello{}, ctxErr(ctx, fmt.Errorf("send hello: %w", err))
	}
	f, err := ReadFrame(br, nil)
	if err != nil {
		return Hello{}, ctxErr(ctx, fmt.Errorf("read the peer's hello: %w", err))
	}
	if f.Seq != 0 {
		return Hello{}, protoErr("first frame has sequence number %d", f.Seq)
	}
	switch f.Type {
	case FrameError:
		reason, err := parseReason(f.Payload)
		if err != nil {
			return Hello{}, err
		}
		return Hello{}, &PeerError{Reason: reason}
	case FrameHello:
	default:
		return Hello{}, protoErr("%s frame before the hello", f.Type)
	}
	peer, err := parseHello(f.Payload)
	if err == nil {
		err = checkHello(s.opts.Hello, peer, s.opts.CheckPeer)
	}
	if err != nil {
		s.sendError(err)
		return Hello{}, err
	}
	return peer, nil
}

// ctxErr prefers the context's error when it ended the operation.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// checkHello checks the peer's hello against ours.
func checkHello(ours, peer Hello, check func(Hello) error) error {
	switch {
	case peer.Version != ProtocolVersion:
		return fmt.Errorf("peer %s speaks protocol version %d, this node %d", peer.Node, peer.Version, ProtocolVersion)
	case peer.Module != ours.Module:
		return fmt.Errorf("peer %s streams module %q, this is %q", peer.Node, peer.Module, ours.Module)
	case peer.Dirs != ours.Dirs:
		return fmt.Errorf("peer %s has %d replicated directories for module %s, this node %d", peer.Node, peer.Dirs, ours.Module, ours.Dirs)
	}
	if check != nil {
		if err := check(peer); err != nil {
			return fmt.Errorf("peer %s refused: %w", peer.Node, err)
		}
	}
	return nil
}

// writeFrame writes and flushes one frame.
func (s *Sender) writeFrame(typ FrameType, payload []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.writeFrameLocked(typ, payload)
}

func (s *Sender) writeFrameLocked(typ FrameType, payload []byte) error {
	var hdr [HeaderSize]byte
	putHeader(hdr[:], typ, s.wseq, len(payload), func(c uint32) uint32 { return crc32.Update(c, castagnoli, payload) })
	s.wseq++
	s.bw.Write(hdr[:])
	s.bw.Write(payload)
	return s.bw.Flush()
}

// sendError tells the peer why the stream ends, best effort. The write
// deadline first releases a writer blocked by a peer that stopped reading
// (it then finds the stream ended and lets go of the connection).
func (s *Sender) sendError(err error) {
	s.conn.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.writeFrameLocked(FrameError, []byte(truncateReason(err.Error())))
}

// errorWriteTimeout bounds the write of an Error frame, drainTimeout the
// wait for the peer to close after ours.
const (
	errorWriteTimeout = time.Second
	drainTimeout      = time.Second
)

// closeGracefully half-closes conn and lets its reader drain what the peer
// still sends until the peer closes (or drainTimeout): closing a TCP
// socket with unread data resets the connection, and a reset can drop the
// Error frame just sent before the peer reads it.
func closeGracefully(conn net.Conn, readerDone <-chan struct{}) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		conn.SetReadDeadline(time.Now().Add(drainTimeout))
		<-readerDone
	}
	conn.Close()
}

// Peer is the peer's Hello.
func (s *Sender) Peer() Hello { return s.peer }

// Done is closed when the stream has ended.
func (s *Sender) Done() <-chan struct{} { return s.done }

// Err is why the stream ended (wrapping ErrDegraded), nil while it runs.
func (s *Sender) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Submit sends o and returns when the peer acknowledged it as the mode
// requires: applied (sync), durable (durable), or queued within MaxLag
// (async). An op.Fsync is handled as Sync.
func (s *Sender) Submit(ctx context.Context, o op.Op) error {
	if o.Kind == op.Fsync {
		return s.Sync(ctx, o)
	}
	switch s.opts.Mode {
	case ModeSync:
		return s.submit(ctx, &o, false, waitApplied)
	case ModeDurable:
		return s.submit(ctx, &o, true, waitDurable)
	default:
		return s.submit(ctx, &o, false, waitNone)
	}
}

// Sync sends o and returns when it is durable on the peer (async mode:
// when queued within MaxLag; the peer still makes it durable).
func (s *Sender) Sync(ctx context.Context, o op.Op) error {
	if s.opts.Mode == ModeAsync {
		return s.submit(ctx, &o, true, waitNone)
	}
	return s.submit(ctx, &o, true, waitDurable)
}

// Barrier returns when everything submitted before it is durable on the
// peer, whatever the mode: the peer syncs its whole tree (syncfs).
func (s *Sender) Barrier(ctx context.Context) error {
	return s.enqueue(ctx, &pending{barrier: true, wait: waitDurable})
}

func (s *Sender) submit(ctx context.Context, o *op.Op, durable bool, wait waitFor) error {
	if err := o.Validate(); err != nil {
		return fmt.Errorf("replicate %s %q: %w", o.Kind, o.Path, err)
	}
	if o.Dir >= s.peer.Dirs {
		return fmt.Errorf("replicate %s %q: %w: dir %d of a module with %d", o.Kind, o.Path, op.ErrInvalid, o.Dir, s.peer.Dirs)
	}
	// Encoding copies o.Data: the caller's buffer is free once Submit
	// returns, even if the operation is still queued.
	enc := appendEntry(getBuf(opSize(o)+maxEntryOverhead), o, durable)
	return s.enqueue(ctx, &pending{enc: enc, size: len(enc), wait: wait})
}

func (s *Sender) enqueue(ctx context.Context, p *pending) error {
	if err := ctx.Err(); err != nil {
		putBuf(p.enc)
		return err
	}
	if p.wait != waitNone {
		p.done = make(chan struct{})
	}
	s.mu.Lock()
	for {
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			putBuf(p.enc)
			return err
		}
		if s.hasRoomLocked(p.size) {
			break
		}
		space := s.space
		s.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			putBuf(p.enc)
			return ctx.Err()
		}
		s.mu.Lock()
	}
	p.seq = s.nextSeq
	s.nextSeq++
	p.at = time.Now()
	if len(s.unsent)+len(s.unacked) == 0 {
		s.drainFrom, s.drainBytes = p.at, 0
	}
	s.unsent = append(s.unsent, p)
	s.windowBytes += int64(p.size)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	if p.done == nil {
		return nil
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		// The operation stays in the stream; the caller just stops
		// waiting for it.
		return ctx.Err()
	}
}

// hasRoomLocked reports whether an entry of n bytes fits the window and,
// in async mode, the lag bound. An empty window always takes one entry.
func (s *Sender) hasRoomLocked(n int) bool {
	ops := len(s.unsent) + len(s.unacked)
	if ops == 0 {
		return true
	}
	if ops >= s.opts.WindowOps || s.windowBytes+int64(n) > s.opts.WindowBytes {
		return false
	}
	if s.opts.Mode == ModeAsync {
		if time.Since(s.oldestLocked().at) > s.opts.MaxLag {
			return false
		}
		// The entry reaches the peer after everything queued before it:
		// admit it only if that drains within MaxLag at the rate the peer
		// applies, so that the lag stays bounded even when the application
		// writes much faster than the link carries.
		budget := int64(asyncInitialBudget)
		if s.drainRate > 0 {
			budget = int64(s.drainRate * s.opts.MaxLag.Seconds())
		}
		if s.windowBytes+int64(n) > budget {
			return false
		}
	}
	return true
}

// asyncInitialBudget bounds the bytes in flight in async mode until the
// peer's apply rate is measured.
const asyncInitialBudget = 1 << 20

// measureDrainLocked updates the apply rate with n bytes acknowledged now.
func (s *Sender) measureDrainLocked(n int64, now time.Time) {
	s.drainBytes += n
	el := now.Sub(s.drainFrom)
	if el < 100*time.Millisecond {
		return
	}
	r := float64(s.drainBytes) / el.Seconds()
	if s.drainRate == 0 {
		s.drainRate = r
	} else {
		s.drainRate = 0.7*s.drainRate + 0.3*r
	}
	s.drainFrom, s.drainBytes = now, 0
}

// oldestLocked is the oldest operation the peer has not applied.
func (s *Sender) oldestLocked() *pending {
	if len(s.unacked) > 0 {
		return s.unacked[0]
	}
	if len(s.unsent) > 0 {
		return s.unsent[0]
	}
	return nil
}

// writer writes queued operations, coalescing everything submitted while
// the previous frame was written into the next one (group commit).
func (s *Sender) writer() {
	defer s.wg.Done()
	var batch []*pending
	for {
		select {
		case <-s.kick:
		case <-s.done:
			return
		}
		for {
			s.mu.Lock()
			batch = s.takeBatchLocked(batch[:0])
			ping := s.pingDue
			if ping {
				s.pingDue = false
				s.pingID++
				s.pingAt = time.Now()
				s.lastPing = s.pingAt
			}
			pingID := s.pingID
			s.mu.Unlock()
			if len(batch) == 0 && !ping {
				break
			}
			var err error
			if ping {
				err = s.writeFrame(FramePing, appendUvarints(nil, pingID))
			}
			if err == nil && len(batch) > 0 {
				err = s.writeBatch(batch)
				for _, p := range batch {
					// Written: only its size matters until the peer
					// acknowledges it.
					putBuf(p.enc)
					p.enc = nil
				}
			}
			if err != nil {
				s.fail(fmt.Errorf("write to the peer: %w", err))
				return
			}
		}
	}
}

// takeBatchLocked moves the next frame's worth of unsent entries to
// unacked: operations up to MaxPayload, or one barrier.
func (s *Sender) takeBatchLocked(batch []*pending) []*pending {
	size := 2 * maxEntryOverhead // first seq and count
	n := 0
	for _, p := range s.unsent {
		if p.barrier {
			if n == 0 {
				n = 1
			}
			break
		}
		if size+p.size > MaxPayload {
			break
		}
		size += p.size
		n++
	}
	batch = append(batch, s.unsent[:n]...)
	clear(s.unsent[:n])
	s.unsent = s.unsent[n:]
	if len(s.unsent) == 0 {
		s.unsent = s.unsent[:0:0] // let the backing array go
	}
	s.unacked = append(s.unacked, batch...)
	if n > 0 {
		s.lastSent = batch[n-1].seq
	}
	return batch
}

func (s *Sender) writeBatch(batch []*pending) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if batch[0].barrier {
		if err := s.writeFrameLocked(FrameBarrier, appendUvarints(nil, batch[0].seq)); err != nil {
			return err
		}
		s.countSent(0, HeaderSize)
		return nil
	}
	var prefix [2 * maxEntryOverhead]byte
	pre := appendUvarints(prefix[:0], batch[0].seq, uint64(len(batch)))
	n := len(pre)
	for _, p := range batch {
		n += len(p.enc)
	}
	var hdr [HeaderSize]byte
	putHeader(hdr[:], FrameOps, s.wseq, n, func(c uint32) uint32 {
		c = crc32.Update(c, castagnoli, pre)
		for _, p := range batch {
			c = crc32.Update(c, castagnoli, p.enc)
		}
		return c
	})
	s.wseq++
	s.bw.Write(hdr[:])
	s.bw.Write(pre)
	for _, p := range batch {
		s.bw.Write(p.enc)
	}
	if err := s.bw.Flush(); err != nil {
		return err
	}
	s.countSent(len(batch), HeaderSize+n)
	return nil
}

func (s *Sender) countSent(ops, bytes int) {
	s.mu.Lock()
	s.opsSent += uint64(ops)
	s.bytesSent += uint64(bytes)
	s.framesSent++
	s.mu.Unlock()
}

// reader handles what the peer sends: acknowledgements, pongs, errors.
func (s *Sender) reader(br *bufio.Reader) {
	defer s.wg.Done()
	defer close(s.readerDone)
	buf := make([]byte, 0, 4<<10)
	for seq := uint64(1); ; seq++ {
		f, err := ReadFrame(br, buf)
		if err != nil {
			if err == io.EOF {
				err = errors.New("the peer closed the connection")
			}
			s.fail(fmt.Errorf("read from the peer: %w", err))
			return
		}
		if s.ended() {
			// Draining until the peer closes too, so that closing does
			// not reset the connection under frames it still sends.
			continue
		}
		if f.Seq != seq {
			s.fail(protoErr("%s frame %d where %d was due", f.Type, f.Seq, seq))
			continue
		}
		if err := s.handle(f); err != nil {
			s.fail(err)
		}
	}
}

func (s *Sender) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *Sender) handle(f Frame) error {
	switch f.Type {
	case FrameAck:
		vs, err := parseUvarints(f.Type, f.Payload, "applied", "durable")
		if err != nil {
			return err
		}
		return s.ack(vs[0], vs[1])
	case FramePong:
		vs, err := parseUvarints(f.Type, f.Payload, "id")
		if err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if vs[0] != s.pingID || s.pingAt.IsZero() {
			return protoErr("pong %d, ping %d outstanding", vs[0], s.pingID)
		}
		s.rtt = time.Since(s.pingAt)
		s.pingAt = time.Time{}
		return nil
	case FrameError:
		reason, err := parseReason(f.Payload)
		if err != nil {
			return err
		}
		return &PeerError{Reason: reason}
	default:
		return protoErr("%s frame from the target", f.Type)
	}
}

// ack records the peer's progress and releases the waiters it settles, in
// sequence order.
func (s *Sender) ack(applied, durable uint64) error {
	var settled []*pending
	s.mu.Lock()
	if s.err != nil {
		// Ended meanwhile: every waiter has its answer already.
		s.mu.Unlock()
		return nil
	}
	if applied < s.applied || durable < s.durable || durable > applied || applied > s.lastSent {
		err := protoErr("ack applied %d durable %d after applied %d durable %d, %d sent", applied, durable, s.applied, s.durable, s.lastSent)
		s.mu.Unlock()
		return err
	}
	now := time.Now()
	if applied > s.applied {
		s.applied, s.appliedAt = applied, now
		n, released := 0, int64(0)
		for _, p := range s.unacked {
			if p.seq > applied {
				break
			}
			n++
			s.windowBytes -= int64(p.size)
			released += int64(p.size)
			switch {
			case p.wait == waitApplied || (p.wait == waitDurable && p.seq <= durable):
				settled = append(settled, p)
			case p.wait == waitDurable:
				s.durableWait = append(s.durableWait, p)
			}
		}
		clear(s.unacked[:n])
		s.unacked = s.unacked[n:]
		if s.opts.Mode == ModeAsync {
			s.measureDrainLocked(released, now)
		}
		close(s.space)
		s.space = make(chan struct{})
	}
	if durable > s.durable {
		s.durable, s.durableAt = durable, now
		n := 0
		for _, p := range s.durableWait {
			if p.seq > durable {
				break
			}
			n++
			settled = append(settled, p)
		}
		clear(s.durableWait[:n])
		s.durableWait = s.durableWait[n:]
	}
	s.mu.Unlock()
	for _, p := range settled {
		close(p.done)
	}
	return nil
}

// ticker schedules pings and watches for stalls.
func (s *Sender) ticker() {
	defer s.wg.Done()
	period := min(s.opts.PingInterval, s.opts.StallTimeout/4)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.tick(now)
		}
	}
}

func (s *Sender) tick(now time.Time) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	if s.pingAt.IsZero() && now.Sub(s.lastPing) >= s.opts.PingInterval {
		s.pingDue = true
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	since, stalled := s.stalledLocked(now)
	var call func()
	switch {
	case stalled && s.stalledSince.IsZero():
		s.stalledSince = since
		if s.opts.OnStall != nil {
			call = func() { s.opts.OnStall(since) }
		}
		s.log.Warn("replication stream stalled", "module", s.opts.Hello.Module, "peer", s.peer.Node, "since", since)
	case !stalled && !s.stalledSince.IsZero():
		s.stalledSince = time.Time{}
		if s.opts.OnResume != nil {
			call = s.opts.OnResume
		}
		s.log.Info("replication stream resumed", "module", s.opts.Hello.Module, "peer", s.peer.Node)
	}
	s.mu.Unlock()
	if call != nil {
		call()
	}
}

// stalledLocked reports whether the peer has made no progress for
// StallTimeout while something waits for it, and since when.
func (s *Sender) stalledLocked(now time.Time) (time.Time, bool) {
	var since time.Time
	stalled := false
	check := func(ref time.Time) {
		if now.Sub(ref) >= s.opts.StallTimeout && (!stalled || ref.Before(since)) {
			since, stalled = ref, true
		}
	}
	if p := s.oldestLocked(); p != nil {
		check(later(s.appliedAt, p.at))
	}
	if len(s.durableWait) > 0 {
		check(later(s.durableAt, s.durableWait[0].at))
	}
	if !s.pingAt.IsZero() {
		check(s.pingAt)
	}
	return since, stalled
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Degrade ends the stream: pending and later Submit, Sync and Barrier
// calls return ErrDegraded (the module continues alone). It does not wait
// and may be called from OnStall.
func (s *Sender) Degrade(cause error) {
	if cause == nil {
		cause = errors.New("degraded")
	}
	s.fail(fmt.Errorf("degraded: %w", cause))
}

// Close ends the stream (waiting operations get ErrDegraded) and waits for
// its goroutines; not from OnStall or OnResume, which run on one of them.
func (s *Sender) Close() error {
	s.fail(errClosed)
	s.wg.Wait()
	return nil
}

// fail ends the stream once: it settles every waiter with the error,
// tells the peer why (unless the peer said why), and closes the
// connection.
func (s *Sender) fail(cause error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = fmt.Errorf("%w: %w", ErrDegraded, cause)
	var waiting []*pending
	for _, q := range [][]*pending{s.unsent, s.unacked, s.durableWait} {
		for _, p := range q {
			if p.done != nil {
				waiting = append(waiting, p)
			}
		}
	}
	s.unsent, s.unacked, s.durableWait = nil, nil, nil
	s.windowBytes = 0
	close(s.space)
	err := s.err
	s.mu.Unlock()

	for _, p := range waiting {
		p.err = err
		close(p.done)
	}
	close(s.done)
	// Telling the peer may wait for a blocked writer: not in the caller's
	// goroutine (Degrade returns at once).
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var pe *PeerError
		if !errors.As(cause, &pe) {
			s.sendError(cause)
		}
		closeGracefully(s.conn, s.readerDone)
	}()
	if cause == errClosed {
		s.log.Info("replication stream closed", "module", s.opts.Hello.Module, "peer", s.peer.Node)
	} else {
		s.log.Error("replication stream ended", "module", s.opts.Hello.Module, "peer", s.peer.Node, "reason", cause)
	}
}

// Stats reports the stream's counters.
func (s *Sender) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Mode:          s.opts.Mode,
		OpsSent:       s.opsSent,
		BytesSent:     s.bytesSent,
		FramesSent:    s.framesSent,
		Submitted:     s.nextSeq - 1,
		Applied:       s.applied,
		Durable:       s.durable,
		InFlight:      len(s.unsent) + len(s.unacked),
		InFlightBytes: s.windowBytes,
		RTT:           s.rtt,
		StalledSince:  s.stalledSince,
		Err:           s.err,
	}
	if p := s.oldestLocked(); p != nil {
		st.Lag = time.Since(p.at)
	}
	return st
}

// Encoded entries are pooled by power-of-two capacity: a 1 MiB write
// would otherwise allocate (and zero) 1 MiB per operation.
var bufPools [22]sync.Pool // up to 4 MiB

func getBuf(n int) []byte {
	k := max(bits.Len(uint(n-1)), 8)
	if k >= len(bufPools) {
		return make([]byte, 0, n)
	}
	if b, ok := bufPools[k].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, 1<<k)
}

func putBuf(b []byte) {
	c := cap(b)
	if c == 0 {
		return
	}
	k := bits.Len(uint(c - 1))
	if k >= len(bufPools) || c != 1<<k {
		return
	}
	bufPools[k].Put(&b)
}
