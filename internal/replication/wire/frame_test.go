package wire

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/internal/replication/apply"
	"github.com/halo-ha/halo/internal/replication/op"
)

// fullOp has every field set (not a valid operation: codec tests only).
var fullOp = op.Op{
	Kind: op.Setxattr, Dir: 65535, Path: "a/b", Target: "t", Name: "user.n", Data: []byte{0, 1, 2},
	Off: -5, Size: math.MaxInt64, Mode: math.MaxUint32, UID: op.NoID, GID: 7, Dev: math.MaxUint64,
	Atime: math.MinInt64, Mtime: op.OmitTime, Flags: 3,
}

// The encoding carries every field of op.Op: a field added to op.Op
// without a place in the encoding fails here.
func TestOpEncodingCoversEveryField(t *testing.T) {
	typ := reflect.TypeOf(op.Op{})
	if typ.NumField() != opFields {
		t.Fatalf("op.Op has %d fields, the wire encoding carries %d: give the new field a mask bit", typ.NumField(), opFields)
	}
	v := reflect.ValueOf(fullOp)
	for i := range typ.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("fullOp leaves %s zero", typ.Field(i).Name)
		}
	}
	enc := AppendOp(nil, &fullOp)
	if len(enc) != opSize(&fullOp) {
		t.Fatalf("opSize %d, encoded %d", opSize(&fullOp), len(enc))
	}
	d := decoder{b: enc}
	got := d.op()
	if err := d.done("op"); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, fullOp) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, fullOp)
	}
}

func TestOpRoundTrip(t *testing.T) {
	ops := []op.Op{
		{Kind: op.Write, Path: "f", Off: 1 << 40, Data: bytes.Repeat([]byte("x"), op.MaxData)},
		{Kind: op.Write, Path: "f"},
		{Kind: op.Truncate, Path: "f"},
		{Kind: op.Fallocate, Path: "f", Off: 0, Size: 1, Flags: 3},
		{Kind: op.Create, Dir: 3, Path: "d/f", Mode: 0o100644},
		{Kind: op.Mkdir, Path: "d", Mode: 0o755},
		{Kind: op.Mknod, Path: "n", Mode: 0o20644, Dev: 0x10003},
		{Kind: op.Symlink, Path: "l", Target: "/" + strings.Repeat("x", op.MaxPath-1)},
		{Kind: op.Link, Path: "h", Target: "f"},
		{Kind: op.Rename, Path: "a", Target: "b", Flags: 2},
		{Kind: op.Unlink, Path: strings.Repeat("p/", op.MaxPath/2-1) + "q"},
		{Kind: op.Rmdir, Path: "d"},
		{Kind: op.Chmod, Path: ".", Mode: 0o7777},
		{Kind: op.Chown, Path: "f", UID: 0, GID: op.NoID},
		{Kind: op.Utimes, Path: "f", Atime: op.OmitTime, Mtime: -1e18},
		{Kind: op.Setxattr, Path: "f", Name: "user." + strings.Repeat("n", 250), Data: make([]byte, 64<<10)},
		{Kind: op.Removexattr, Path: "f", Name: "user.x"},
		{Kind: op.Fsync, Path: "f", Flags: op.DataOnly},
	}
	for _, o := range ops {
		if err := o.Validate(); err != nil {
			t.Fatalf("test op %s: %v", o.Kind, err)
		}
		enc := AppendOp(nil, &o)
		got, err := DecodeOp(enc)
		if err != nil {
			t.Fatalf("%s: %v", o.Kind, err)
		}
		if got.Data == nil && o.Data != nil && len(o.Data) == 0 {
			got.Data = o.Data
		}
		if !reflect.DeepEqual(got, o) {
			t.Fatalf("%s round trip:\n got %+v\nwant %+v", o.Kind, got, o)
		}
		if !bytes.Equal(AppendOp(nil, &got), enc) {
			t.Fatalf("%s: encoding not canonical", o.Kind)
		}
		if l := len(enc); o.Kind == op.Unlink && l > op.MaxPath+8 {
			t.Fatalf("encoding of %d bytes for a path of %d", l, len(o.Path))
		}
	}
	// The largest operation fits a frame with its entry header.
	big := op.Op{Kind: op.Write, Dir: 65535, Path: strings.Repeat("p", op.MaxPath), Off: math.MaxInt64, Data: make([]byte, op.MaxData)}
	if n := opSize(&big) + maxEntryOverhead + 2*maxEntryOverhead; n > MaxPayload {
		t.Fatalf("largest op needs %d bytes, a frame holds %d", n, MaxPayload)
	}
}

// Decoding is strict: every encoding but the canonical one is refused.
func TestOpDecodingStrict(t *testing.T) {
	valid := op.Op{Kind: op.Write, Path: "f", Off: 1, Data: []byte("x")}
	enc := AppendOp(nil, &valid)
	if _, err := DecodeOp(enc); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"empty":              {},
		"trailing byte":      append(bytes.Clone(enc), 0),
		"truncated":          enc[:len(enc)-1],
		"unknown field":      {byte(op.Write), 0, 0x80, 0x40, 1, 'f'},
		"non-minimal dir":    {byte(op.Create), 0x80, 0x00, fPath, 1, 'f'},
		"dir over 16 bits":   {byte(op.Create), 0x80, 0x80, 0x04, fPath, 1, 'f'},
		"zero-length path":   {byte(op.Create), 0, fPath, 0},
		"present zero mode":  {byte(op.Create), 0, fPath | fMode, 1, 'f', 0},
		"mode over 32 bits":  {byte(op.Create), 0, fPath | fMode, 1, 'f', 0x80, 0x80, 0x80, 0x80, 0x10},
		"varint overflow":    append([]byte{byte(op.Create), 0, 0x81, 0x04, 1, 'f'}, bytes.Repeat([]byte{0xff}, 10)...), // fPath|fDev
		"path too long":      append(binary.AppendUvarint([]byte{byte(op.Create), 0, fPath}, op.MaxPath+1), make([]byte, op.MaxPath+1)...),
		"length past end":    {byte(op.Create), 0, fPath, 5, 'f'},
		"unknown kind":       {99, 0, fPath, 1, 'f'},
		"invalid op (..)":    {byte(op.Create), 0, fPath, 2, '.', '.'},
		"invalid op (abs)":   {byte(op.Create), 0, fPath, 2, '/', 'x'},
		"no path":            {byte(op.Create), 0, 0},
		"NUL in path":        {byte(op.Create), 0, fPath, 3, 'a', 0, 'b'},
		"negative write off": {byte(op.Write), 0, fPath | fOff, 1, 'f', 1},
	}
	for name, b := range cases {
		if o, err := DecodeOp(b); err == nil || !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: decoded %+v, %v", name, o, err)
		}
	}
}

func TestReadFrame(t *testing.T) {
	payload := []byte("payload")
	good := AppendFrame(nil, FramePing, 9, payload)
	f, err := ReadFrame(bytes.NewReader(good), nil)
	if err != nil || f.Type != FramePing || f.Seq != 9 || !bytes.Equal(f.Payload, payload) {
		t.Fatalf("%+v %v", f, err)
	}
	if _, err := ReadFrame(bytes.NewReader(nil), nil); err != io.EOF {
		t.Fatalf("empty stream: %v", err)
	}
	mutate := func(i int, v byte) []byte {
		b := bytes.Clone(good)
		b[i] = v
		return b
	}
	withLen := func(n uint32) []byte {
		b := bytes.Clone(good[:HeaderSize])
		binary.BigEndian.PutUint32(b[16:20], n)
		return b
	}
	cases := map[string][]byte{
		"magic":             mutate(0, 'X'),
		"version":           mutate(4, 2),
		"type 0":            mutate(5, 0),
		"unknown type":      mutate(5, byte(maxFrameType)),
		"flags":             mutate(7, 1),
		"crc":               mutate(len(good)-1, 'X'),
		"seq (crc)":         mutate(15, 1),
		"oversized":         withLen(MaxPayload + 1),
		"oversized huge":    withLen(math.MaxUint32),
		"truncated header":  good[:10],
		"truncated payload": good[:len(good)-1],
	}
	for name, b := range cases {
		_, err := ReadFrame(bytes.NewReader(b), nil)
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// rawPeer speaks the protocol by hand, to send what a correct end never
// would.
type rawPeer struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
	wseq uint64
	rseq uint64
}

func newRawPeer(t testing.TB, conn net.Conn) *rawPeer {
	return &rawPeer{t: t, conn: conn, br: bufio.NewReader(conn)}
}

func (p *rawPeer) send(typ FrameType, payload []byte) {
	p.sendRaw(AppendFrame(nil, typ, p.wseq, payload))
}

func (p *rawPeer) sendRaw(b []byte) {
	p.wseq++
	p.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.conn.Write(b); err != nil {
		p.t.Errorf("raw peer write: %v", err)
	}
}

func (p *rawPeer) read() Frame {
	p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := ReadFrame(p.br, nil)
	if err != nil {
		p.t.Fatalf("raw peer read: %v", err)
	}
	if f.Seq != p.rseq {
		p.t.Fatalf("raw peer: frame %d where %d was due", f.Seq, p.rseq)
	}
	p.rseq++
	return f
}

// acceptHello answers a sender's hello.
func (p *rawPeer) acceptHello(h Hello) {
	if f := p.read(); f.Type != FrameHello {
		p.t.Errorf("raw peer: %s before hello", f.Type)
	}
	h.Version = ProtocolVersion
	p.send(FrameHello, appendHello(nil, h))
}

// openHello sends a source's hello and reads the answer.
func (p *rawPeer) openHello(h Hello) {
	h.Version = ProtocolVersion
	p.send(FrameHello, appendHello(nil, h))
	if f := p.read(); f.Type != FrameHello {
		p.t.Fatalf("raw peer: answer %s to hello: %q", f.Type, f.Payload)
	}
}

// Every malformed frame closes the stream with a logged reason, and
// nothing of it reaches the target.
func TestMalformedFramesChangeNothing(t *testing.T) {
	create := op.Op{Kind: op.Create, Path: "created", Mode: 0o644}
	okOps := payloadOps(1, create)
	frame := func(typ FrameType, seq uint64, payload []byte) []byte { return AppendFrame(nil, typ, seq, payload) }
	withHeader := func(b []byte, i int, v byte) []byte {
		b = bytes.Clone(b)
		b[i] = v
		return b
	}
	cases := []struct {
		name   string
		frames []byte // after the hello (frame 1 onwards)
		reason string // in Serve's error and the Error frame
		half   bool   // the stream is cut after the bytes
	}{
		{"bad magic", withHeader(frame(FrameOps, 1, okOps), 0, 'Z'), "bad magic", false},
		{"bad version", withHeader(frame(FrameOps, 1, okOps), 4, 9), "frame format version 9", false},
		{"unknown type", withHeader(frame(FrameOps, 1, okOps), 5, 42), "unknown frame type 42", false},
		{"flags", withHeader(frame(FrameOps, 1, okOps), 6, 1), "unknown flags", false},
		{"bad crc", withHeader(frame(FrameOps, 1, okOps), HeaderSize+3, 'Z'), "checksum", false},
		{"oversized", func() []byte {
			b := frame(FrameOps, 1, okOps)[:HeaderSize]
			binary.BigEndian.PutUint32(b[16:20], MaxPayload+1)
			return b
		}(), "at most", false},
		{"truncated", frame(FrameOps, 1, okOps)[:HeaderSize+3], "truncated", true},
		{"out of order", frame(FrameOps, 2, okOps), "frame 2 where 1 was due", false},
		{"op seq gap", frame(FrameOps, 1, payloadOps(2, create)), "operations from 2 where 1 was due", false},
		{"op seq zero", frame(FrameOps, 1, payloadOps(0, create)), "first seq 0", false},
		{"invalid op", frame(FrameOps, 1, payloadOps(1, create, op.Op{Kind: op.Create, Path: "../escape"})), "escape", false},
		{"dir out of range", frame(FrameOps, 1, payloadOps(1, create, op.Op{Kind: op.Create, Dir: 1, Path: "x"})), "dir 1 of a module with 1", false},
		{"zero count", frame(FrameOps, 1, appendUvarints(nil, 1, 0)), "0 operations", false},
		{"huge count", frame(FrameOps, 1, append(appendUvarints(nil, 1, 1<<40), okOps[2:]...)), "operations in", false},
		{"count short", frame(FrameOps, 1, append(appendUvarints(nil, 1, 2), okOps[2:]...)), "truncated", false},
		{"trailing bytes", frame(FrameOps, 1, append(bytes.Clone(okOps), 0)), "after the operations", false},
		{"entry flags", frame(FrameOps, 1, withHeader(okOps, 2, 0x80)), "entry flags", false},
		{"non-minimal varint", frame(FrameOps, 1, append([]byte{0x81, 0x00}, okOps[1:]...)), "not minimally encoded", false},
		{"ack from source", frame(FrameAck, 1, appendUvarints(nil, 0, 0)), "ack frame from the source", false},
		{"second hello", frame(FrameHello, 1, appendHello(nil, testHello("x", 1))), "hello frame from the source", false},
		{"barrier gap", frame(FrameBarrier, 1, appendUvarints(nil, 5)), "barrier 5 where 1 was due", false},
		{"ping trailing", frame(FramePing, 1, []byte{1, 2}), "after the ping", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tree, err := apply.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer tree.Close()
			var logs bytes.Buffer
			client, server := tcpPair(t)
			served := make(chan error, 1)
			go func() {
				served <- Serve(context.Background(), server, tree, ReceiverOptions{Hello: testHello("node2", 1), Logger: newTestLogger(&logs)})
			}()
			p := newRawPeer(t, client)
			p.openHello(testHello("node1", 1))
			p.sendRaw(tc.frames)
			if tc.half {
				client.(*net.TCPConn).CloseWrite()
			}
			if !tc.half {
				f := p.read()
				if f.Type != FrameError || !strings.Contains(string(f.Payload), tc.reason) {
					t.Fatalf("answer %s %q", f.Type, f.Payload)
				}
			}
			client.Close()
			var err2 error
			select {
			case err2 = <-served:
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not end")
			}
			if err2 == nil || !strings.Contains(err2.Error(), tc.reason) {
				t.Fatalf("Serve: %v, want %q", err2, tc.reason)
			}
			if !errors.Is(err2, ErrProtocol) {
				t.Fatalf("Serve: %v is not a protocol error", err2)
			}
			if !strings.Contains(logs.String(), tc.reason) {
				t.Fatalf("reason not logged: %s", logs.String())
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("the target changed: %d entries", len(ents))
			}
		})
	}

	// A valid frame before a damaged one is applied; the damaged one not.
	t.Run("valid then damaged", func(t *testing.T) {
		dir := t.TempDir()
		tree, err := apply.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer tree.Close()
		client, server := tcpPair(t)
		served := make(chan error, 1)
		go func() {
			served <- Serve(context.Background(), server, tree, ReceiverOptions{Hello: testHello("node2", 1)})
		}()
		p := newRawPeer(t, client)
		p.openHello(testHello("node1", 1))
		p.send(FrameOps, okOps)
		if f := p.read(); f.Type != FrameAck {
			t.Fatalf("%s", f.Type)
		}
		bad := frame(FrameOps, 2, payloadOps(2, op.Op{Kind: op.Create, Path: "second", Mode: 0o644}))
		bad[len(bad)-1] ^= 1
		p.sendRaw(bad)
		p.read()
		client.Close()
		if err := <-served; !errors.Is(err, ErrProtocol) {
			t.Fatalf("Serve: %v", err)
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 || ents[0].Name() != "created" {
			t.Fatalf("target holds %v", ents)
		}
	})
}

func FuzzDecodeFrame(f *testing.F) {
	ops := []op.Op{
		{Kind: op.Write, Path: "f", Off: 3, Data: []byte("data")},
		{Kind: op.Rename, Path: "a/b", Target: "c", Flags: 1},
		{Kind: op.Utimes, Path: ".", Atime: op.OmitTime, Mtime: 12345},
		{Kind: op.Chown, Dir: 1, Path: "x", UID: op.NoID, GID: 5},
	}
	var seeds [][]byte
	seeds = append(seeds, AppendFrame(nil, FrameHello, 0, appendHello(nil, testHello("node1", 2))))
	seeds = append(seeds, AppendFrame(nil, FrameOps, 1, payloadOps(1, ops...)))
	seeds = append(seeds, AppendFrame(nil, FrameAck, 1, appendUvarints(nil, 5, 3)))
	seeds = append(seeds, AppendFrame(nil, FrameBarrier, 2, appendUvarints(nil, 5)))
	seeds = append(seeds, AppendFrame(nil, FramePing, 3, appendUvarints(nil, 1)))
	seeds = append(seeds, AppendFrame(nil, FrameError, 4, []byte("reason")))
	for _, s := range seeds {
		f.Add(s)
		f.Add(s[HeaderSize:]) // as a payload of every type
	}
	f.Fuzz(fuzzFrame)
}

func fuzzFrame(t *testing.T, data []byte) {
	{
		check := func(fr Frame) {
			switch fr.Type {
			case FrameOps:
				_, ents, err := parseOps(fr.Payload, 2)
				if err != nil {
					return
				}
				for _, e := range ents {
					if err := e.op.Validate(); err != nil {
						t.Fatalf("decoded an invalid op %+v: %v", e.op, err)
					}
					if e.op.Dir >= 2 {
						t.Fatalf("decoded op of dir %d", e.op.Dir)
					}
				}
			case FrameHello:
				if h, err := parseHello(fr.Payload); err == nil && !bytes.Equal(appendHello(nil, h), fr.Payload) {
					t.Fatalf("hello %+v decoded from a non-canonical payload", h)
				}
			case FrameError:
				parseReason(fr.Payload)
			default:
				parseUvarints(fr.Type, fr.Payload, "a", "b")
				parseUvarints(fr.Type, fr.Payload, "a")
			}
		}
		// As a stream of frames.
		r := bytes.NewReader(data)
		for {
			fr, err := ReadFrame(r, nil)
			if err != nil {
				break
			}
			check(fr)
		}
		// As the payload of a well-formed frame of each type.
		if len(data) <= MaxPayload {
			for typ := FrameHello; typ < maxFrameType; typ++ {
				fr, err := ReadFrame(bytes.NewReader(AppendFrame(nil, typ, 0, data)), nil)
				if err != nil {
					t.Fatalf("well-formed frame refused: %v", err)
				}
				check(fr)
			}
			if o, err := DecodeOp(data); err == nil {
				if err := o.Validate(); err != nil {
					t.Fatalf("DecodeOp returned an invalid op: %v", err)
				}
				if !bytes.Equal(AppendOp(nil, &o), data) {
					t.Fatalf("op %+v decoded from a non-canonical encoding", o)
				}
			}
		}
	}
}
