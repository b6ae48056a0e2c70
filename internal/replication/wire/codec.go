package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"

	"github.com/halo-ha/halo/internal/replication/op"
)

// FrameType is the type of a frame.
type FrameType uint8

const (
	FrameHello FrameType = iota + 1
	FrameOps
	FrameBarrier
	FrameAck
	FramePing
	FramePong
	FrameError
	maxFrameType
)

var frameTypeNames = [...]string{"", "hello", "ops", "barrier", "ack", "ping", "pong", "error"}

func (t FrameType) String() string {
	if t > 0 && t < maxFrameType {
		return frameTypeNames[t]
	}
	return fmt.Sprintf("FrameType(%d)", t)
}

// Frame layout (see the package doc).
const (
	HeaderSize   = 24
	frameMagic   = "HLRP"
	frameVersion = 1
	// MaxPayload bounds a frame's payload: one operation of the largest
	// size with its paths fits, batches are cut below it.
	MaxPayload = op.MaxData + 64<<10
	// maxReason bounds an Error frame's text.
	maxReason = 1 << 10
	// maxName bounds the module and node names of a Hello.
	maxName = 255
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame is one decoded frame; Payload may alias the buffer given to
// ReadFrame.
type Frame struct {
	Type    FrameType
	Seq     uint64
	Payload []byte
}

// putHeader fills hdr for a payload of n bytes whose CRC-32C, continued
// from the header's first 20 bytes, is computed by crcPayload.
func putHeader(hdr []byte, typ FrameType, seq uint64, n int, crcPayload func(uint32) uint32) {
	copy(hdr[0:4], frameMagic)
	hdr[4] = frameVersion
	hdr[5] = byte(typ)
	binary.BigEndian.PutUint16(hdr[6:8], 0)
	binary.BigEndian.PutUint64(hdr[8:16], seq)
	binary.BigEndian.PutUint32(hdr[16:20], uint32(n))
	crc := crcPayload(crc32.Update(0, castagnoli, hdr[:20]))
	binary.BigEndian.PutUint32(hdr[20:24], crc)
}

// AppendFrame appends a complete frame to dst.
func AppendFrame(dst []byte, typ FrameType, seq uint64, payload []byte) []byte {
	var hdr [HeaderSize]byte
	putHeader(hdr[:], typ, seq, len(payload), func(c uint32) uint32 { return crc32.Update(c, castagnoli, payload) })
	return append(append(dst, hdr[:]...), payload...)
}

// protoErr wraps a protocol violation.
func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// ReadFrame reads one frame. Its payload goes into buf when it fits
// (allocated otherwise). The header is checked before the payload is read
// (an oversized length is refused without reading it), the checksum after.
// A clean end of stream before a header is io.EOF; anything else that
// does not make a valid frame wraps ErrProtocol.
func ReadFrame(r io.Reader, buf []byte) (Frame, error) {
	var hdr [HeaderSize]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF || (err == io.ErrUnexpectedEOF && n > 0) {
			if n == 0 {
				return Frame{}, io.EOF
			}
			return Frame{}, protoErr("truncated frame header (%d of %d bytes)", n, HeaderSize)
		}
		return Frame{}, err
	}
	f, n, err := parseHeader(hdr[:])
	if err != nil {
		return Frame{}, err
	}
	if n <= cap(buf) {
		buf = buf[:n]
	} else {
		buf = make([]byte, n)
	}
	if got, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return Frame{}, protoErr("truncated %s frame (%d of %d payload bytes)", f.Type, got, n)
		}
		return Frame{}, err
	}
	crc := crc32.Update(crc32.Update(0, castagnoli, hdr[:20]), castagnoli, buf)
	if want := binary.BigEndian.Uint32(hdr[20:24]); crc != want {
		return Frame{}, protoErr("%s frame %d: checksum %08x, header says %08x", f.Type, f.Seq, crc, want)
	}
	f.Payload = buf
	return f, nil
}

func parseHeader(hdr []byte) (Frame, int, error) {
	if string(hdr[0:4]) != frameMagic {
		return Frame{}, 0, protoErr("bad magic %q", hdr[0:4])
	}
	if hdr[4] != frameVersion {
		return Frame{}, 0, protoErr("frame format version %d (this node reads %d)", hdr[4], frameVersion)
	}
	f := Frame{Type: FrameType(hdr[5]), Seq: binary.BigEndian.Uint64(hdr[8:16])}
	if f.Type == 0 || f.Type >= maxFrameType {
		return Frame{}, 0, protoErr("unknown frame type %d", hdr[5])
	}
	if flags := binary.BigEndian.Uint16(hdr[6:8]); flags != 0 {
		return Frame{}, 0, protoErr("%s frame with unknown flags %#x", f.Type, flags)
	}
	n := binary.BigEndian.Uint32(hdr[16:20])
	if n > MaxPayload {
		return Frame{}, 0, protoErr("%s frame of %d bytes (at most %d)", f.Type, n, MaxPayload)
	}
	return f, int(n), nil
}

// decoder reads a payload strictly: minimal varints, bounded strings,
// nothing left over. The first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		d.fail("%s: truncated", what)
		return 0
	case n < 0:
		d.fail("%s: varint overflows 64 bits", what)
		return 0
	case n > 1 && d.b[n-1] == 0:
		d.fail("%s: varint not minimally encoded", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32(what string) uint32 {
	v := d.uvarint(what)
	if v > math.MaxUint32 {
		d.fail("%s: %d does not fit 32 bits", what, v)
		return 0
	}
	return uint32(v)
}

func (d *decoder) varint(what string) int64 {
	u := d.uvarint(what)
	return int64(u>>1) ^ -int64(u&1)
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("%s: truncated", what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// bytes returns a length-prefixed byte string aliasing the input.
func (d *decoder) bytes(what string, max int) []byte {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.fail("%s: %d bytes (at most %d)", what, n, max)
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("%s: %d bytes, %d left", what, n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) done(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes after the %s", len(d.b), what)
	}
	return d.err
}

func appendBytes(dst, b []byte) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(b))), b...)
}

func appendString(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

// Operation fields, in encoding order (a bit each in the field mask).
const (
	fPath = 1 << iota
	fTarget
	fName
	fData
	fOff
	fSize
	fMode
	fUID
	fGID
	fDev
	fAtime
	fMtime
	fFlags
	fAll = 1<<iota - 1
)

// opFields is the number of op.Op fields the encoding covers (Kind, Dir
// and the masked ones); a test fails when op.Op grows a field this
// encoding does not carry.
const opFields = 15

// AppendOp appends the encoding of o: kind (1 byte), dir (uvarint), a
// uvarint mask of the fields that are not zero, then those fields in mask
// bit order (strings and data as length + bytes, Off, Size, Atime and
// Mtime as zigzag varints, the others as uvarints). Zero fields are
// omitted, so each operation has exactly one encoding.
func AppendOp(dst []byte, o *op.Op) []byte {
	var mask uint64
	set := func(bit uint64, nonzero bool) {
		if nonzero {
			mask |= bit
		}
	}
	set(fPath, o.Path != "")
	set(fTarget, o.Target != "")
	set(fName, o.Name != "")
	set(fData, len(o.Data) != 0)
	set(fOff, o.Off != 0)
	set(fSize, o.Size != 0)
	set(fMode, o.Mode != 0)
	set(fUID, o.UID != 0)
	set(fGID, o.GID != 0)
	set(fDev, o.Dev != 0)
	set(fAtime, o.Atime != 0)
	set(fMtime, o.Mtime != 0)
	set(fFlags, o.Flags != 0)
	dst = append(dst, byte(o.Kind))
	dst = binary.AppendUvarint(dst, uint64(o.Dir))
	dst = binary.AppendUvarint(dst, mask)
	if mask&fPath != 0 {
		dst = appendString(dst, o.Path)
	}
	if mask&fTarget != 0 {
		dst = appendString(dst, o.Target)
	}
	if mask&fName != 0 {
		dst = appendString(dst, o.Name)
	}
	if mask&fData != 0 {
		dst = appendBytes(dst, o.Data)
	}
	if mask&fOff != 0 {
		dst = binary.AppendVarint(dst, o.Off)
	}
	if mask&fSize != 0 {
		dst = binary.AppendVarint(dst, o.Size)
	}
	if mask&fMode != 0 {
		dst = binary.AppendUvarint(dst, uint64(o.Mode))
	}
	if mask&fUID != 0 {
		dst = binary.AppendUvarint(dst, uint64(o.UID))
	}
	if mask&fGID != 0 {
		dst = binary.AppendUvarint(dst, uint64(o.GID))
	}
	if mask&fDev != 0 {
		dst = binary.AppendUvarint(dst, o.Dev)
	}
	if mask&fAtime != 0 {
		dst = binary.AppendVarint(dst, o.Atime)
	}
	if mask&fMtime != 0 {
		dst = binary.AppendVarint(dst, o.Mtime)
	}
	if mask&fFlags != 0 {
		dst = binary.AppendUvarint(dst, uint64(o.Flags))
	}
	return dst
}

// DecodeOp decodes exactly one operation encoded by AppendOp and
// validates it. Data aliases b.
func DecodeOp(b []byte) (op.Op, error) {
	d := decoder{b: b}
	o := d.op()
	if err := d.done("operation"); err != nil {
		return op.Op{}, fmt.Errorf("%w: decode operation: %w", ErrProtocol, err)
	}
	if err := o.Validate(); err != nil {
		return op.Op{}, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return o, nil
}

func (d *decoder) op() op.Op {
	var o op.Op
	o.Kind = op.Kind(d.byte("kind"))
	dir := d.uvarint("dir")
	if dir > math.MaxUint16 {
		d.fail("dir %d", dir)
	}
	o.Dir = uint16(dir)
	mask := d.uvarint("field mask")
	if mask&^fAll != 0 {
		d.fail("unknown fields %#x", mask&^fAll)
	}
	if d.err != nil {
		return o
	}
	str := func(bit uint64, what string, max int) string {
		if mask&bit == 0 {
			return ""
		}
		b := d.bytes(what, max)
		if d.err == nil && len(b) == 0 {
			d.fail("%s present but empty", what)
		}
		return string(b)
	}
	num := func(bit uint64, what string) uint64 {
		if mask&bit == 0 {
			return 0
		}
		v := d.uvarint(what)
		if d.err == nil && v == 0 {
			d.fail("%s present but zero", what)
		}
		return v
	}
	u32 := func(bit uint64, what string) uint32 {
		v := num(bit, what)
		if v > math.MaxUint32 {
			d.fail("%s: %d does not fit 32 bits", what, v)
		}
		return uint32(v)
	}
	zig := func(bit uint64, what string) int64 {
		v := num(bit, what)
		return int64(v>>1) ^ -int64(v&1)
	}
	o.Path = str(fPath, "path", op.MaxPath)
	o.Target = str(fTarget, "target", op.MaxPath)
	o.Name = str(fName, "xattr name", 255)
	if mask&fData != 0 {
		o.Data = d.bytes("data", op.MaxData)
		if d.err == nil && len(o.Data) == 0 {
			d.fail("data present but empty")
		}
	}
	o.Off = zig(fOff, "offset")
	o.Size = zig(fSize, "size")
	o.Mode = u32(fMode, "mode")
	o.UID = u32(fUID, "uid")
	o.GID = u32(fGID, "gid")
	o.Dev = num(fDev, "dev")
	o.Atime = zig(fAtime, "atime")
	o.Mtime = zig(fMtime, "mtime")
	o.Flags = u32(fFlags, "flags")
	return o
}

// Entry flags of an Ops frame.
const entryDurable = 1

// opEntry is one operation of an Ops frame.
type opEntry struct {
	op      op.Op
	durable bool
}

// appendEntry appends the frame entry of o.
func appendEntry(dst []byte, o *op.Op, durable bool) []byte {
	var flags byte
	if durable {
		flags = entryDurable
	}
	dst = append(dst, flags)
	// The op's length comes first: computing it saves encoding twice.
	n := opSize(o)
	dst = binary.AppendUvarint(dst, uint64(n))
	start := len(dst)
	dst = AppendOp(dst, o)
	if len(dst)-start != n {
		panic(fmt.Sprintf("wire: op size %d, encoded %d", n, len(dst)-start))
	}
	return dst
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func zigLen(v int64) int { return uvarintLen(uint64(v<<1) ^ uint64(v>>63)) }

// opSize is the length of AppendOp's encoding of o.
func opSize(o *op.Op) int {
	n := 1 + uvarintLen(uint64(o.Dir))
	var mask uint64
	str := func(bit uint64, l int) {
		if l != 0 {
			mask |= bit
			n += uvarintLen(uint64(l)) + l
		}
	}
	num := func(bit uint64, v uint64) {
		if v != 0 {
			mask |= bit
			n += uvarintLen(v)
		}
	}
	zig := func(bit uint64, v int64) {
		if v != 0 {
			mask |= bit
			n += zigLen(v)
		}
	}
	str(fPath, len(o.Path))
	str(fTarget, len(o.Target))
	str(fName, len(o.Name))
	str(fData, len(o.Data))
	zig(fOff, o.Off)
	zig(fSize, o.Size)
	num(fMode, uint64(o.Mode))
	num(fUID, uint64(o.UID))
	num(fGID, uint64(o.GID))
	num(fDev, o.Dev)
	zig(fAtime, o.Atime)
	zig(fMtime, o.Mtime)
	num(fFlags, uint64(o.Flags))
	return n + uvarintLen(mask)
}

// maxEntryOverhead bounds what an entry adds to its operation's encoding.
const maxEntryOverhead = 1 + binary.MaxVarintLen64

// parseOps decodes an Ops payload: first seq, count, entries. Every
// operation is decoded and validated before any is returned.
func parseOps(payload []byte, dirs uint16) (first uint64, ents []opEntry, err error) {
	d := decoder{b: payload}
	first = d.uvarint("first seq")
	count := d.uvarint("count")
	if d.err == nil && (count == 0 || count > uint64(len(d.b))/3) {
		// An entry is at least 3 bytes (flags, length, kind...): a count
		// the payload cannot hold is refused before allocating for it.
		d.fail("%d operations in %d bytes", count, len(d.b))
	}
	if d.err == nil && (first == 0 || first > math.MaxUint64-count) {
		d.fail("first seq %d with %d operations", first, count)
	}
	if d.err != nil {
		return 0, nil, fmt.Errorf("%w: ops frame: %w", ErrProtocol, d.err)
	}
	ents = make([]opEntry, 0, count)
	for i := range count {
		flags := d.byte("entry flags")
		if flags&^entryDurable != 0 {
			d.fail("entry flags %#x", flags)
		}
		b := d.bytes("operation", MaxPayload)
		if d.err != nil {
			return 0, nil, fmt.Errorf("%w: ops frame, operation %d: %w", ErrProtocol, first+i, d.err)
		}
		o, err := DecodeOp(b)
		if err != nil {
			return 0, nil, fmt.Errorf("operation %d: %w", first+i, err)
		}
		if o.Dir >= dirs {
			return 0, nil, fmt.Errorf("%w: operation %d: dir %d of a module with %d", ErrProtocol, first+i, o.Dir, dirs)
		}
		ents = append(ents, opEntry{op: o, durable: flags&entryDurable != 0})
	}
	if err := d.done("operations"); err != nil {
		return 0, nil, fmt.Errorf("%w: ops frame: %w", ErrProtocol, err)
	}
	return first, ents, nil
}

func appendHello(dst []byte, h Hello) []byte {
	dst = binary.AppendUvarint(dst, h.Version)
	dst = binary.AppendUvarint(dst, h.Generation)
	dst = binary.AppendUvarint(dst, uint64(h.Dirs))
	dst = appendString(dst, h.Module)
	return appendString(dst, h.Node)
}

func parseHello(payload []byte) (Hello, error) {
	d := decoder{b: payload}
	var h Hello
	h.Version = d.uvarint("version")
	h.Generation = d.uvarint("generation")
	dirs := d.uvarint("dir count")
	if dirs > math.MaxUint16 {
		d.fail("dir count %d", dirs)
	}
	h.Dirs = uint16(dirs)
	h.Module = string(d.bytes("module", maxName))
	h.Node = string(d.bytes("node", maxName))
	if err := d.done("hello"); err != nil {
		return Hello{}, fmt.Errorf("%w: hello frame: %w", ErrProtocol, err)
	}
	return h, nil
}

func appendUvarints(dst []byte, vs ...uint64) []byte {
	for _, v := range vs {
		dst = binary.AppendUvarint(dst, v)
	}
	return dst
}

// parseUvarints decodes a payload of exactly len(names) uvarints.
func parseUvarints(typ FrameType, payload []byte, names ...string) ([]uint64, error) {
	d := decoder{b: payload}
	vs := make([]uint64, len(names))
	for i, n := range names {
		vs[i] = d.uvarint(n)
	}
	if err := d.done(typ.String()); err != nil {
		return nil, fmt.Errorf("%w: %s frame: %w", ErrProtocol, typ, err)
	}
	return vs, nil
}

func parseReason(payload []byte) (string, error) {
	if len(payload) > maxReason {
		return "", protoErr("error frame reason of %d bytes", len(payload))
	}
	return string(payload), nil
}

// truncateReason keeps an Error frame's reason within bounds.
func truncateReason(s string) string {
	if len(s) <= maxReason {
		return s
	}
	return s[:maxReason-3] + "..."
}

// errClosed ends a stream closed by its own side (the reason the peer
// gets).
var errClosed = errors.New("stream closed by the source")
