package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/halo-ha/halo/internal/replication/op"
)

// DefaultIdleTimeout is ReceiverOptions.IdleTimeout's default.
const DefaultIdleTimeout = 30 * time.Second

// applyQueue is how many received frames may wait for the applier: the
// reader keeps reading (and answering pings) while the applier works.
const applyQueue = 4

// batch is one received Ops or Barrier frame, checked entirely.
type batch struct {
	first   uint64
	ents    []opEntry
	barrier bool
	buf     *[]byte // payload buffer the operations' data alias
}

func (b *batch) last() uint64 {
	if b.barrier {
		return b.first
	}
	return b.first + uint64(len(b.ents)) - 1
}

// needsSync reports whether an operation of b asked for durability.
func (b *batch) needsSync() bool {
	if b.barrier {
		return true
	}
	for _, e := range b.ents {
		if e.durable || e.op.Kind == op.Fsync {
			return true
		}
	}
	return false
}

var payloadPool = sync.Pool{New: func() any {
	b := make([]byte, 0, MaxPayload)
	return &b
}}

type receiver struct {
	conn   net.Conn
	target Target
	opts   ReceiverOptions
	log    *slog.Logger
	peer   Hello

	wmu      sync.Mutex
	bw       *bufio.Writer
	wseq     uint64
	lastAckA uint64 // last acknowledgement sent (under wmu)
	lastAckD uint64

	queue   chan *batch
	flushCh chan struct{}
	done    chan struct{} // closed when the stream fails

	mu          sync.Mutex
	err         error
	applied     uint64
	durable     uint64
	flushTarget uint64 // highest seq the flusher must make durable
	barrier     bool   // the flush up to flushTarget syncs everything
}

// Serve receives a stream on conn and applies it to t until the stream
// ends, and returns why: a *PeerError when the source sent a reason (a
// Sender's Close sends "stream closed by the source"), nil when the
// connection ended without one at a frame boundary. Operations received
// before the end are applied and flushed before Serve returns, unless
// applying failed. Cancelling ctx ends the stream.
func Serve(ctx context.Context, conn net.Conn, t Target, opts ReceiverOptions) error {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	opts.Hello.Version = ProtocolVersion
	r := &receiver{
		conn:    conn,
		target:  t,
		opts:    opts,
		log:     logger(opts.Logger),
		bw:      bufio.NewWriterSize(conn, 64<<10),
		queue:   make(chan *batch, applyQueue),
		flushCh: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { r.fail(fmt.Errorf("stopped: %w", context.Cause(ctx))) })
	defer stop()
	br := bufio.NewReaderSize(conn, ioBufferSize)
	if err := r.handshake(br); err != nil {
		r.fail(err)
		return r.result()
	}
	if opts.OnHello != nil {
		opts.OnHello(r.peer)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	applied := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(applied)
		r.applier()
	}()
	go func() {
		defer wg.Done()
		r.flusher(applied)
	}()
	r.reader(br)
	close(r.queue)
	wg.Wait()
	return r.result()
}

func (r *receiver) result() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == io.EOF {
		return nil
	}
	return r.err
}

func (r *receiver) handshake(br *bufio.Reader) error {
	r.conn.SetReadDeadline(time.Now().Add(r.opts.IdleTimeout))
	f, err := ReadFrame(br, nil)
	if err != nil {
		return fmt.Errorf("read the source's hello: %w", err)
	}
	switch {
	case f.Type == FrameError:
		reason, err := parseReason(f.Payload)
		if err != nil {
			return err
		}
		return &PeerError{Reason: reason}
	case f.Type != FrameHello:
		return protoErr("%s frame before the hello", f.Type)
	case f.Seq != 0:
		return protoErr("hello with sequence number %d", f.Seq)
	}
	peer, err := parseHello(f.Payload)
	if err != nil {
		return err
	}
	if err := checkHello(r.opts.Hello, peer, r.opts.CheckPeer); err != nil {
		return err
	}
	r.peer = peer
	return r.write(FrameHello, appendHello(nil, r.opts.Hello))
}

func (r *receiver) write(typ FrameType, payload []byte) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return r.writeLocked(typ, payload)
}

func (r *receiver) writeLocked(typ FrameType, payload []byte) error {
	r.bw.Write(AppendFrame(make([]byte, 0, HeaderSize+len(payload)), typ, r.wseq, payload))
	r.wseq++
	return r.bw.Flush()
}

// reader reads and checks frames and queues operations for the applier.
// Once the stream failed it only drains what the source still sends.
func (r *receiver) reader(br *bufio.Reader) {
	nextOp := uint64(1)
	for seq := uint64(1); ; seq++ {
		if !r.ended() {
			r.conn.SetReadDeadline(time.Now().Add(r.opts.IdleTimeout))
		}
		bufp := payloadPool.Get().(*[]byte)
		f, err := ReadFrame(br, (*bufp)[:0])
		if err != nil {
			payloadPool.Put(bufp)
			if err == io.EOF {
				r.fail(io.EOF)
			} else {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					err = fmt.Errorf("nothing from the source for %v: %w", r.opts.IdleTimeout, err)
				}
				r.fail(fmt.Errorf("read from the source: %w", err))
			}
			return
		}
		var b *batch
		if r.ended() {
			// Draining.
		} else if f.Seq != seq {
			r.fail(protoErr("%s frame %d where %d was due", f.Type, f.Seq, seq))
		} else if b, err = r.decode(f, nextOp); err != nil {
			r.fail(err)
		}
		if b == nil {
			payloadPool.Put(bufp)
			continue
		}
		b.buf = bufp
		nextOp = b.last() + 1
		select {
		case r.queue <- b:
		case <-r.done:
			payloadPool.Put(bufp)
		}
	}
}

func (r *receiver) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// decode handles frame f: a batch to apply, nil for a frame handled here
// (Ping), or why the stream must end.
func (r *receiver) decode(f Frame, nextOp uint64) (*batch, error) {
	switch f.Type {
	case FrameOps:
		first, ents, err := parseOps(f.Payload, r.peer.Dirs)
		if err != nil {
			return nil, err
		}
		if first != nextOp {
			return nil, protoErr("operations from %d where %d was due", first, nextOp)
		}
		return &batch{first: first, ents: ents}, nil
	case FrameBarrier:
		vs, err := parseUvarints(f.Type, f.Payload, "seq")
		if err != nil {
			return nil, err
		}
		if vs[0] != nextOp {
			return nil, protoErr("barrier %d where %d was due", vs[0], nextOp)
		}
		return &batch{first: vs[0], barrier: true}, nil
	case FramePing:
		vs, err := parseUvarints(f.Type, f.Payload, "id")
		if err != nil {
			return nil, err
		}
		if err := r.write(FramePong, appendUvarints(nil, vs[0])); err != nil {
			return nil, fmt.Errorf("answer a ping: %w", err)
		}
		return nil, nil
	case FrameError:
		reason, err := parseReason(f.Payload)
		if err != nil {
			return nil, err
		}
		return nil, &PeerError{Reason: reason}
	default:
		return nil, protoErr("%s frame from the source", f.Type)
	}
}

// applier applies batches in order and acknowledges them; what they ask
// to be durable goes to the flusher.
func (r *receiver) applier() {
	failed := false
	for b := range r.queue {
		if !failed {
			failed = !r.applyBatch(b)
		}
		payloadPool.Put(b.buf)
	}
}

func (r *receiver) applyBatch(b *batch) bool {
	for i, e := range b.ents {
		if err := r.target.ApplyDeferred(e.op, e.durable); err != nil {
			r.fail(fmt.Errorf("apply operation %d: %w", b.first+uint64(i), err))
			return false
		}
	}
	last := b.last()
	r.mu.Lock()
	r.applied = last
	if b.needsSync() || r.flushTarget > r.durable {
		r.flushTarget = last
		r.barrier = r.barrier || b.barrier
		r.mu.Unlock()
		select {
		case r.flushCh <- struct{}{}:
		default:
		}
	} else {
		// Nothing asked for durability and nothing is being flushed:
		// durable follows applied without a flush.
		r.durable, r.flushTarget = last, last
		r.mu.Unlock()
	}
	r.ack()
	return true
}

// flusher makes durable what the applier recorded, one group flush for
// everything applied since the last one, and acknowledges it.
func (r *receiver) flusher(applied <-chan struct{}) {
	for {
		select {
		case <-r.flushCh:
		case <-applied:
			// The applier is done: a last flush for what it left.
			r.flushOnce()
			return
		}
		if !r.flushOnce() {
			<-applied
			return
		}
	}
}

func (r *receiver) flushOnce() bool {
	r.mu.Lock()
	upto, barrier := r.flushTarget, r.barrier
	r.barrier = false
	if upto <= r.durable {
		r.mu.Unlock()
		return true
	}
	r.mu.Unlock()
	var err error
	if barrier {
		err = r.target.SyncAll()
	} else {
		err = r.target.Flush()
	}
	if err != nil {
		r.fail(fmt.Errorf("make operations up to %d durable: %w", upto, err))
		return false
	}
	r.mu.Lock()
	if upto > r.durable {
		r.durable = upto
	}
	r.mu.Unlock()
	r.ack()
	return true
}

// ack sends the current progress unless the source has it already. The
// values are read under the write lock, so acknowledgements never go
// backwards on the wire.
func (r *receiver) ack() {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.Lock()
	a, d := r.applied, r.durable
	failed := r.err != nil
	r.mu.Unlock()
	if failed || (a == r.lastAckA && d == r.lastAckD) {
		return
	}
	r.lastAckA, r.lastAckD = a, d
	if err := r.writeLocked(FrameAck, appendUvarints(nil, a, d)); err != nil {
		go r.fail(fmt.Errorf("acknowledge: %w", err))
	}
}

// fail ends the stream once: it tells the source why (unless the source
// ended it), half-closes the connection and gives the reader drainTimeout
// to see the source close its side.
func (r *receiver) fail(err error) {
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		return
	}
	r.err = err
	r.mu.Unlock()
	close(r.done)
	var pe *PeerError
	if err != io.EOF && !errors.As(err, &pe) {
		// The deadline releases a write blocked by a source that stopped
		// reading; none of fail's callers holds wmu.
		r.conn.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
		r.wmu.Lock()
		r.writeLocked(FrameError, []byte(truncateReason(err.Error())))
		r.wmu.Unlock()
		r.log.Error("replication stream ended", "module", r.opts.Hello.Module, "source", r.peer.Node, "reason", err)
	} else {
		r.log.Info("replication stream closed by the source", "module", r.opts.Hello.Module, "source", r.peer.Node, "reason", err)
	}
	if cw, ok := r.conn.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
		r.conn.Close()
		return
	}
	r.conn.SetReadDeadline(time.Now().Add(drainTimeout))
}
