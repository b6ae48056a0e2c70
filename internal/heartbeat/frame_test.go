package heartbeat

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

var (
	testKey  = bytes.Repeat([]byte("k"), 32)
	otherKey = bytes.Repeat([]byte("x"), 32)
	testTime = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

func mustCodec(t testing.TB, cluster string, key []byte) *codec {
	t.Helper()
	c, err := newCodec(cluster, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testFrame() frame {
	return frame{
		module: 7, boot: 0x1122334455667788, seq: 42, sentAt: testTime.UnixNano(),
		echoSentAt: testTime.Add(-time.Second).UnixNano(), echoHold: int64(3 * time.Millisecond),
		sender: "a", receiver: "b", network: "default", payload: []byte("status"),
	}
}

func mustEncode(t testing.TB, c *codec, f frame) []byte {
	t.Helper()
	b, err := c.appendFrame(nil, &f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// resign replaces the MAC of an encoded frame after the test altered its
// body, to reach the checks that follow MAC verification.
func resign(t testing.TB, c *codec, b []byte) []byte {
	t.Helper()
	return sign(c, b[:len(b)-macSize])
}

// sign returns body followed by its MAC.
func sign(c *codec, body []byte) []byte {
	m := hmac.New(sha256.New, c.macKey)
	m.Write(body)
	return m.Sum(append([]byte(nil), body...))
}

func TestFrameRoundTrip(t *testing.T) {
	c := mustCodec(t, "test", testKey)
	want := testFrame()
	b := mustEncode(t, c, want)
	got, reason, err := c.decode(b)
	if err != nil {
		t.Fatalf("decode: %v (%s)", err, reason)
	}
	if got.module != want.module || got.boot != want.boot || got.seq != want.seq ||
		got.sentAt != want.sentAt || got.echoSentAt != want.echoSentAt || got.echoHold != want.echoHold ||
		got.sender != want.sender || got.receiver != want.receiver || got.network != want.network ||
		!bytes.Equal(got.payload, want.payload) {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	wantLen := fixedHeaderSize + 2 + 2 + 8 + 2 + len(want.payload) + macSize
	if len(b) != wantLen {
		t.Fatalf("frame is %d bytes, want %d", len(b), wantLen)
	}
}

// TestFrameLayout pins the documented byte layout, so that a change to it
// is a deliberate protocol change.
func TestFrameLayout(t *testing.T) {
	c := mustCodec(t, "test", testKey)
	f := testFrame()
	b := mustEncode(t, c, f)
	id := ClusterID("test")
	for _, chk := range []struct {
		name     string
		got, exp []byte
	}{
		{"magic", b[0:4], []byte("HLHB")},
		{"version+flags", b[4:6], []byte{1, 0}},
		{"cluster", b[6:14], id[:]},
		{"module", b[14:18], binary.BigEndian.AppendUint32(nil, 7)},
		{"boot", b[18:26], binary.BigEndian.AppendUint64(nil, f.boot)},
		{"seq", b[26:34], binary.BigEndian.AppendUint64(nil, 42)},
		{"sentAt", b[34:42], binary.BigEndian.AppendUint64(nil, uint64(f.sentAt))},
		{"echoSentAt", b[42:50], binary.BigEndian.AppendUint64(nil, uint64(f.echoSentAt))},
		{"echoHold", b[50:58], binary.BigEndian.AppendUint64(nil, uint64(f.echoHold))},
		{"names+payload", b[58 : len(b)-macSize], []byte("\x01a\x01b\x07default\x00\x06status")},
	} {
		if !bytes.Equal(chk.got, chk.exp) {
			t.Errorf("%s = %x, want %x", chk.name, chk.got, chk.exp)
		}
	}
	// The MAC uses a key derived from the cluster key, not the key itself.
	k, err := hkdf.Key(sha256.New, testKey, nil, "halo heartbeat v1", 32)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, k)
	m.Write(b[:len(b)-macSize])
	if !bytes.Equal(m.Sum(nil), b[len(b)-macSize:]) {
		t.Error("MAC is not HMAC-SHA256 with the HKDF-derived key")
	}
	raw := hmac.New(sha256.New, testKey)
	raw.Write(b[:len(b)-macSize])
	if bytes.Equal(raw.Sum(nil), b[len(b)-macSize:]) {
		t.Error("MAC uses the raw cluster key")
	}
}

func TestNewCodecRejectsShortKey(t *testing.T) {
	if _, err := newCodec("test", testKey[:31]); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("31-byte key: err = %v", err)
	}
	if _, err := newCodec("", testKey); err == nil {
		t.Fatal("empty cluster name accepted")
	}
}

func TestEncodeRejectsBadFields(t *testing.T) {
	c := mustCodec(t, "test", testKey)
	for name, mut := range map[string]func(*frame){
		"empty sender":     func(f *frame) { f.sender = "" },
		"long receiver":    func(f *frame) { f.receiver = strings.Repeat("r", 256) },
		"empty network":    func(f *frame) { f.network = "" },
		"oversize payload": func(f *frame) { f.payload = make([]byte, MaxPayloadSize+1) },
	} {
		f := testFrame()
		mut(&f)
		if _, err := c.appendFrame(nil, &f); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
	// The largest frame still fits.
	f := testFrame()
	f.sender, f.receiver, f.network = strings.Repeat("s", 255), strings.Repeat("r", 255), strings.Repeat("n", 255)
	f.payload = make([]byte, MaxPayloadSize)
	b, err := c.appendFrame(nil, &f)
	if err != nil || len(b) > MaxFrameSize {
		t.Fatalf("largest frame: %d bytes, err %v", len(b), err)
	}
	if _, _, err := c.decode(b); err != nil {
		t.Fatalf("largest frame does not decode: %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	c := mustCodec(t, "test", testKey)
	good := mustEncode(t, c, testFrame())
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want DropReason
	}{
		{"empty", nil, DropMalformed},
		{"truncated header", good[:20], DropMalformed},
		{"truncated by one byte", good[:len(good)-1], DropMalformed},
		{"truncated MAC and payload", good[:len(good)-macSize], DropMalformed},
		{"trailing byte", append(append([]byte(nil), good...), 0), DropMalformed},
		{"trailing byte signed", sign(c, append(append([]byte(nil), good[:len(good)-macSize]...), 0)), DropMalformed},
		{"oversized", append(append([]byte(nil), good...), make([]byte, MaxFrameSize)...), DropOversized},
		{"bad magic", mod(func(b []byte) []byte { b[0] = 'X'; return b }), DropMalformed},
		{"version 2", mod(func(b []byte) []byte { b[4] = 2; return b }), DropVersion},
		{"other cluster", mustEncode(t, mustCodec(t, "other", testKey), testFrame()), DropWrongCluster},
		{"other key", mustEncode(t, mustCodec(t, "test", otherKey), testFrame()), DropBadMAC},
		{"flipped MAC bit", mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), DropBadMAC},
		{"flipped seq bit", mod(func(b []byte) []byte { b[33] ^= 1; return b }), DropBadMAC},
		{"flipped payload bit", mod(func(b []byte) []byte { b[len(b)-macSize-1] ^= 0x80; return b }), DropBadMAC},
		{"reserved flag re-signed", resign(t, c, mod(func(b []byte) []byte { b[5] = 1; return b })), DropMalformed},
		{"empty sender name re-signed", resign(t, c, mod(func(b []byte) []byte { b[58] = 0; return b })), DropMalformed},
		{"name longer than frame re-signed", resign(t, c, mod(func(b []byte) []byte { b[58] = 200; return b })), DropMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, reason, err := c.decode(tc.b)
			if err == nil {
				t.Fatal("accepted")
			}
			if reason != tc.want {
				t.Fatalf("reason %s (%v), want %s", reason, err, tc.want)
			}
		})
	}
}

// FuzzDecode checks that the decoder never panics, never accepts a frame
// whose MAC is not HMAC-SHA256 of its body under the derived key, and
// accepts only canonical encodings. With resign set, the fuzzer's bytes get
// a valid MAC, so the layout checks behind the MAC are explored too.
func FuzzDecode(f *testing.F) {
	c := mustCodec(f, "fuzz", testKey)
	good := testFrame()
	f.Add(mustEncode(f, c, good), false)
	f.Add(mustEncode(f, c, good)[:100], true)
	empty := good
	empty.payload = nil
	f.Add(mustEncode(f, c, empty), false)
	f.Add(mustEncode(f, mustCodec(f, "fuzz", otherKey), good), false)
	f.Add([]byte("HLHB\x01\x00"), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, data []byte, resignIt bool) {
		if resignIt && len(data) >= macSize {
			data = resign(t, c, data)
		}
		got, _, err := c.decode(data)
		if err != nil {
			return
		}
		m := hmac.New(sha256.New, c.macKey)
		m.Write(data[:len(data)-macSize])
		if !hmac.Equal(m.Sum(nil), data[len(data)-macSize:]) {
			t.Fatalf("accepted a frame with an invalid MAC: %x", data)
		}
		again, err := c.appendFrame(nil, &got)
		if err != nil {
			t.Fatalf("accepted frame does not re-encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("accepted a non-canonical frame:\n got %x\nwant %x", data, again)
		}
	})
}

// BenchmarkEncodeVerify measures what one heartbeat costs the sender and
// the receiver: encode and MAC, then verify and parse.
func BenchmarkEncodeVerify(b *testing.B) {
	c := mustCodec(b, "bench", testKey)
	f := testFrame()
	f.payload = make([]byte, 128) // a peer status with a few ancestors
	buf := make([]byte, 0, MaxFrameSize)
	b.ReportAllocs()
	for b.Loop() {
		out, err := c.appendFrame(buf[:0], &f)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.decode(out); err != nil {
			b.Fatal(err)
		}
	}
}
