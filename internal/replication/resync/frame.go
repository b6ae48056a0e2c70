package resync

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/op"
)

// ProtocolVersion is the session protocol version; both ends must speak
// the same.
const ProtocolVersion = 1

const preambleMagic = "HALORSY"

// maxFrame bounds a frame's type and payload: a corrupt length must not
// make a reader allocate gigabytes.
const maxFrame = 4 << 20

// batchBytes is the payload size at which a sender closes a frame of ops
// or entries.
const batchBytes = 1 << 20

// Frame types.
const (
	msgHello     byte = iota + 1 // target → source (connection 0): JSON hello
	msgMap                       // target → source: records of the target's map
	msgHelloOK                   // source → target: JSON answer
	msgList                      // request: list a subtree
	msgEntries                   // answer: a batch of entries
	msgListEnd                   // answer: end of a listing (or its error)
	msgHashes                    // request: block hashes of a file
	msgHashesOK                  // answer
	msgOps                       // ops to apply
	msgBarrier                   // request: report the ops' failures once applied
	msgBarrierOK                 // answer
	msgProgress                  // source → target: JSON progress
	msgDone                      // source → target: JSON result
	msgDoneOK                    // target → source: JSON (quarantine)
	msgAbort                     // either way: the sender gives up (text)
	msgPass                      // source → target, every connection: a pass after the first begins
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrProtocol wraps every malformed-input error of the session protocol.
var ErrProtocol = errors.New("resync protocol error")

// frameConn frames one connection. Writes are serialised by a mutex (one
// frame at a time); reads belong to one goroutine.
type frameConn struct {
	c       Conn
	r       *bufio.Reader
	rbuf    []byte
	wmu     sync.Mutex
	w       *bufio.Writer
	limiter *rate.Limiter
	sent    *atomic.Int64
	recv    *atomic.Int64
}

func newFrameConn(c Conn, limiter *rate.Limiter, sent, recv *atomic.Int64) *frameConn {
	return &frameConn{c: c, r: bufio.NewReaderSize(c, 256<<10), w: bufio.NewWriterSize(c, 256<<10),
		limiter: limiter, sent: sent, recv: recv}
}

// newLimiter returns a limiter for bytesPerSec (nil: no cap). It starts
// empty so that the first second is capped too.
func newLimiter(bytesPerSec float64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	burst := int(min(max(bytesPerSec/20, 64<<10), maxFrame))
	l := rate.NewLimiter(rate.Limit(bytesPerSec), burst)
	l.AllowN(timeNow(), burst)
	return l
}

// writeFrame writes one frame (buffered: flush sends it).
func (f *frameConn) writeFrame(ctx context.Context, typ byte, payload []byte) error {
	if len(payload)+1 > maxFrame {
		return fmt.Errorf("write frame: payload of %d bytes exceeds %d", len(payload), maxFrame-1)
	}
	total := len(payload) + 9
	if f.limiter != nil {
		for left := total; left > 0; {
			n := min(left, f.limiter.Burst())
			if err := f.limiter.WaitN(ctx, n); err != nil {
				return fmt.Errorf("wait for bandwidth: %w", err)
			}
			left -= n
		}
	}
	var hdr [5]byte
	binary.LittleEndian.PutUint32(hdr[:4], uint32(len(payload)+1))
	hdr[4] = typ
	crc := crc32.Update(crc32.Update(0, castagnoli, hdr[4:]), castagnoli, payload)
	var tail [4]byte
	binary.LittleEndian.PutUint32(tail[:], crc)
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if _, err := f.w.Write(hdr[:]); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	if _, err := f.w.Write(payload); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	if _, err := f.w.Write(tail[:]); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	if f.sent != nil {
		f.sent.Add(int64(total))
	}
	return nil
}

func (f *frameConn) flush() error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if err := f.w.Flush(); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// send writes a frame and flushes.
func (f *frameConn) send(ctx context.Context, typ byte, payload []byte) error {
	if err := f.writeFrame(ctx, typ, payload); err != nil {
		return err
	}
	return f.flush()
}

// readFrame reads one frame; the payload is valid until the next call.
func (f *frameConn) readFrame() (byte, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n < 1 || n > maxFrame {
		return 0, nil, fmt.Errorf("%w: frame length %d", ErrProtocol, n)
	}
	if cap(f.rbuf) < int(n)+4 {
		f.rbuf = make([]byte, int(n)+4)
	}
	b := f.rbuf[:n+4]
	if _, err := io.ReadFull(f.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("read frame: %w", err)
	}
	if got, want := crc32.Checksum(b[:n], castagnoli), binary.LittleEndian.Uint32(b[n:]); got != want {
		return 0, nil, fmt.Errorf("%w: frame checksum %08x, computed %08x", ErrProtocol, want, got)
	}
	if f.recv != nil {
		f.recv.Add(int64(n) + 8)
	}
	return b[0], b[1:n], nil
}

// writePreamble and readPreamble pair a connection with its session slot.
func writePreamble(c Conn, index, count int) error {
	b := make([]byte, 0, 16)
	b = append(b, preambleMagic...)
	b = binary.LittleEndian.AppendUint16(b, ProtocolVersion)
	b = binary.LittleEndian.AppendUint16(b, uint16(index))
	b = binary.LittleEndian.AppendUint16(b, uint16(count))
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("send preamble: %w", err)
	}
	return nil
}

func readPreamble(c Conn, index, count int) error {
	b := make([]byte, len(preambleMagic)+6)
	if _, err := io.ReadFull(c, b); err != nil {
		return fmt.Errorf("read preamble: %w", err)
	}
	if string(b[:len(preambleMagic)]) != preambleMagic {
		return fmt.Errorf("%w: not a resync session", ErrProtocol)
	}
	b = b[len(preambleMagic):]
	v, i, n := binary.LittleEndian.Uint16(b), binary.LittleEndian.Uint16(b[2:]), binary.LittleEndian.Uint16(b[4:])
	switch {
	case v != ProtocolVersion:
		return fmt.Errorf("%w: peer speaks version %d, this node %d", ErrProtocol, v, ProtocolVersion)
	case int(i) != index || int(n) != count:
		return fmt.Errorf("%w: peer's connection %d of %d arrived as %d of %d", ErrProtocol, i, n, index, count)
	}
	return nil
}

// ---- encoding ----

type enc struct{ b []byte }

func (e *enc) u8(v byte)      { e.b = append(e.b, v) }
func (e *enc) uv(v uint64)    { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) sv(v int64)     { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) bytes(v []byte) { e.uv(uint64(len(v))); e.b = append(e.b, v...) }
func (e *enc) str(v string)   { e.uv(uint64(len(v))); e.b = append(e.b, v...) }
func (e *enc) sum(s Sum)      { e.b = append(e.b, s[:]...) }

// dec reads what enc wrote; the first error sticks and every later read
// returns zero values, so decoders check once at the end.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", ErrProtocol, what)
	}
	d.b = nil
}

func (d *dec) u8() byte {
	if len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) uv() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) u32() uint32 {
	v := d.uv()
	if v > math.MaxUint32 {
		d.fail("32-bit value")
		return 0
	}
	return uint32(v)
}

func (d *dec) sv() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) raw(what string) []byte {
	n := d.uv()
	if n > uint64(len(d.b)) {
		d.fail(what)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) bytes() []byte { return d.raw("byte string") }
func (d *dec) str() string   { return string(d.raw("string")) }

func (d *dec) sum() Sum {
	var s Sum
	if len(d.b) < len(s) {
		d.fail("hash")
		return s
	}
	copy(s[:], d.b)
	d.b = d.b[len(s):]
	return s
}

// end checks that everything was read.
func (d *dec) end(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes in %s", ErrProtocol, len(d.b), what)
	}
	if d.err != nil {
		return fmt.Errorf("decode %s: %w", what, d.err)
	}
	return nil
}

// Ops. A batch is a flags byte (tolerance), a count, then the ops.
const (
	// batchTolerateMissing: an op on a missing path (or below one) is not
	// a failure (directory times set last, deletes of what is gone).
	batchTolerateMissing byte = 1 << iota
)

func (e *enc) op(o *op.Op) {
	e.u8(byte(o.Kind))
	e.uv(uint64(o.Dir))
	e.str(o.Path)
	e.str(o.Target)
	e.str(o.Name)
	e.bytes(o.Data)
	e.sv(o.Off)
	e.sv(o.Size)
	e.uv(uint64(o.Mode))
	e.uv(uint64(o.UID))
	e.uv(uint64(o.GID))
	e.uv(o.Dev)
	e.sv(o.Atime)
	e.sv(o.Mtime)
	e.uv(uint64(o.Flags))
}

// op decodes an op whose Data aliases the frame.
func (d *dec) op() op.Op {
	var o op.Op
	o.Kind = op.Kind(d.u8())
	dir := d.uv()
	if dir > math.MaxUint16 {
		d.fail("directory index")
	}
	o.Dir = uint16(dir)
	o.Path = d.str()
	o.Target = d.str()
	o.Name = d.str()
	o.Data = d.bytes()
	o.Off = d.sv()
	o.Size = d.sv()
	o.Mode = d.u32()
	o.UID = d.u32()
	o.GID = d.u32()
	o.Dev = d.uv()
	o.Atime = d.sv()
	o.Mtime = d.sv()
	o.Flags = d.u32()
	return o
}

// Entries: paths share a prefix with the previous entry of the frame.
func (e *enc) entry(x *Entry, prev string) {
	n := 0
	for n < len(prev) && n < len(x.Path) && prev[n] == x.Path[n] {
		n++
	}
	e.uv(uint64(n))
	e.str(x.Path[n:])
	e.u8(byte(x.Kind))
	e.uv(uint64(x.Mode))
	e.uv(uint64(x.UID))
	e.uv(uint64(x.GID))
	e.uv(uint64(x.Nlink))
	e.sv(x.Size)
	e.sv(x.Atime)
	e.sv(x.Mtime)
	e.uv(x.Rdev)
	e.uv(x.Dev)
	e.uv(x.Ino)
	e.str(x.Target)
	e.uv(uint64(len(x.Xattrs)))
	for _, a := range x.Xattrs {
		e.str(a.Name)
		e.bytes(a.Value)
	}
	if x.Hashed {
		e.u8(1)
		e.sum(x.Hash)
	} else {
		e.u8(0)
	}
}

func (d *dec) entry(prev string) Entry {
	var x Entry
	n := d.uv()
	if n > uint64(len(prev)) {
		d.fail("path prefix")
		return x
	}
	x.Path = prev[:n] + string(d.raw("path"))
	x.Kind = journal.FileKind(d.u8())
	x.Mode = d.u32()
	x.UID = d.u32()
	x.GID = d.u32()
	x.Nlink = d.u32()
	x.Size = d.sv()
	x.Atime = d.sv()
	x.Mtime = d.sv()
	x.Rdev = d.uv()
	x.Dev = d.uv()
	x.Ino = d.uv()
	x.Target = d.str()
	nx := d.uv()
	if nx > uint64(len(d.b)) {
		d.fail("xattr count")
		return x
	}
	for range nx {
		x.Xattrs = append(x.Xattrs, Xattr{Name: d.str(), Value: append([]byte(nil), d.bytes()...)})
	}
	switch d.u8() {
	case 0:
	case 1:
		x.Hash, x.Hashed = d.sum(), true
	default:
		d.fail("hash flag")
	}
	if d.err == nil {
		if err := checkRel(x.Path); err != nil || x.Kind < journal.KindFile || x.Kind > journal.KindOther || x.Size < 0 {
			d.fail(fmt.Sprintf("entry %q", x.Path))
		}
	}
	return x
}
