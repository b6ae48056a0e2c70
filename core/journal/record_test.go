package journal

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// TestRecordGolden pins the on-disk layout: a change here makes existing
// journals unreadable and needs a new RecordVersion.
func TestRecordGolden(t *testing.T) {
	cases := []struct {
		rec Record
		hex string
	}{
		// length 10, CRC-32C, version 1, type 1 (checkpoint), generation LE
		{Checkpoint{Gen: 0x0102030405060708}, "0a000000" + "d4c73ee0" + "0101" + "0807060504030201"},
		// length 20, CRC, version 1, type 2 (dirty), generation 7, path
		// "d/f", shift 16, 2 ranges: start 2 length 3, then start 5+4
		// open-ended
		{Dirty{Gen: 7, Path: "d/f", Shift: 16, Zones: []ZoneRange{{2, 5}, {9, NoEnd}}},
			"14000000" + "8b2ef81e" + "0102" + "0700000000000000" + "03642f66" + "10" + "02" + "0203" + "0400"},
	}
	for _, c := range cases {
		b, err := Encode(c.rec)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got != c.hex {
			t.Errorf("Encode(%#v) = %s, want %s", c.rec, got, c.hex)
		}
	}
	// The checksum is CRC-32C (Castagnoli), check value of "123456789".
	if got := crc32.Checksum([]byte("123456789"), castagnoli); got != 0xe3069283 {
		t.Fatalf("CRC-32C check value %08x", got)
	}
}

func sampleRecords() []Record {
	return []Record{
		Checkpoint{},
		Checkpoint{Gen: ^uint64(0)},
		Dirty{Gen: 1, Path: "a", Shift: 9, Zones: []ZoneRange{{0, 1}}},
		Dirty{Gen: 2, Path: "dir/file name", Shift: 30, Zones: []ZoneRange{{0, 3}, {5, 6}, {1<<33 - 1, 1 << 33}}},
		Dirty{Gen: 3, Path: "t", Shift: 16, Zones: []ZoneRange{{0, NoEnd}}},
		Clean{Path: "x/y", Shift: 16, Zones: []ZoneRange{{4, 8}, {100, NoEnd}}},
		Meta{Gen: 9, Path: ""},
		Meta{Gen: 9, Path: "a/b"},
		Intent{Gen: 5, ID: 1, Op: Op{Kind: OpCreate, Path: "n"}},
		Intent{Gen: 5, ID: 300, Op: Op{Kind: OpDelete, Path: "n/m"}},
		Intent{Gen: 5, ID: 2, Op: Op{Kind: OpRename, Path: "a", To: "b/c"}},
		Intent{Gen: 5, ID: 3, Op: Op{Kind: OpExchange, Path: "a", To: "b"}},
		Done{Applied: []uint64{1, 2, 900}},
		Done{Failed: []uint64{4}, Unknown: []uint64{5, 6}},
		State{Path: "", Meta: true},
		State{Path: "p", New: true},
		State{Path: "p", Gone: true},
		State{Path: "p/q", Meta: true, Origin: "o/r", HasOrigin: true},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	var log []byte
	for _, r := range sampleRecords() {
		b, err := Encode(r)
		if err != nil {
			t.Fatalf("Encode(%#v): %v", r, err)
		}
		got, n, err := Decode(b)
		if err != nil || n != len(b) || !reflect.DeepEqual(got, r) {
			t.Fatalf("Decode(Encode(%#v)) = %#v, %d, %v", r, got, n, err)
		}
		log = append(log, b...)
	}
	// Concatenated: each decodes in turn.
	for i, want := range sampleRecords() {
		got, n, err := Decode(log)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("record %d in a log: %#v %v", i, got, err)
		}
		log = log[n:]
	}
}

func TestRecordInvalidNotEncoded(t *testing.T) {
	for _, r := range []Record{
		nil,
		Dirty{Path: "", Shift: 16, Zones: []ZoneRange{{0, 1}}},
		Dirty{Path: "a/../b", Shift: 16, Zones: []ZoneRange{{0, 1}}},
		Dirty{Path: "/a", Shift: 16, Zones: []ZoneRange{{0, 1}}},
		Dirty{Path: "a", Shift: 16},
		Dirty{Path: "a", Shift: 8, Zones: []ZoneRange{{0, 1}}},
		Dirty{Path: "a", Shift: 16, Zones: []ZoneRange{{3, 3}}},
		Dirty{Path: "a", Shift: 16, Zones: []ZoneRange{{0, 2}, {2, 4}}}, // adjacent: not canonical
		Dirty{Path: "a", Shift: 16, Zones: []ZoneRange{{5, 9}, {0, 2}}},
		Dirty{Path: "a", Shift: 16, Zones: []ZoneRange{{0, NoEnd}, {9, 10}}},
		Dirty{Path: "a", Shift: 16, Zones: []ZoneRange{{0, 1 << 48}}}, // past 2^63 bytes
		Intent{ID: 0, Op: Op{Kind: OpCreate, Path: "a"}},
		Intent{ID: 1, Op: Op{Kind: OpRename, Path: "a", To: "a/b"}},
		Intent{ID: 1, Op: Op{Kind: OpRename, Path: "a", To: "a"}},
		Intent{ID: 1, Op: Op{Kind: OpCreate, Path: "a", To: "b"}},
		Intent{ID: 1, Op: Op{Kind: 9, Path: "a"}},
		Done{},
		Done{Applied: []uint64{2, 1}},
		Done{Applied: []uint64{1}, Failed: []uint64{1}},
		State{Path: "a"},
		State{Path: "a", Gone: true, Meta: true},
		State{Path: "a", New: true, HasOrigin: true, Origin: "b"},
		State{Path: "", New: true},
	} {
		if b, err := Encode(r); err == nil {
			t.Errorf("Encode(%#v) accepted: %x", r, b)
		}
	}
}

// TestDecodeDamage: every truncation reads as truncated, every single bit
// flip as corrupt; nothing is misread.
func TestDecodeDamage(t *testing.T) {
	for _, r := range sampleRecords() {
		b, _ := Encode(r)
		for n := range len(b) {
			if _, _, err := Decode(b[:n]); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%#v cut at %d: %v", r, n, err)
			}
		}
		for i := range len(b) * 8 {
			c := slices.Clone(b)
			c[i/8] ^= 1 << (i % 8)
			if got, _, err := Decode(c); err == nil {
				t.Fatalf("%#v with bit %d flipped decodes as %#v", r, i, got)
			}
		}
	}
}

// frame wraps a hand-made body with a valid header, to test what the
// checksum cannot catch.
func frame(body []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
	crc := crc32.Update(0, castagnoli, b)
	crc = crc32.Update(crc, castagnoli, body)
	b = binary.LittleEndian.AppendUint32(b, crc)
	return append(b, body...)
}

func TestDecodeStrict(t *testing.T) {
	gen := make([]byte, 8)
	cases := map[string][]byte{
		"non-minimal varint": append(append([]byte{1, typeMeta}, gen...), 0x81, 0x00, 'a'),
		"trailing byte":      append(append([]byte{1, typeMeta}, gen...), 1, 'a', 0),
		"unknown type":       {1, 99},
		"path with NUL":      append(append([]byte{1, typeMeta}, gen...), 3, 'a', 0, 'b'),
		"string too long":    append(append([]byte{1, typeMeta}, gen...), 9, 'a'),
		"huge zone count":    {1, typeClean, 1, 'a', 16, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"zone overflow":      {1, typeClean, 1, 'a', 16, 2, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1},
		"adjacent zones":     {1, typeClean, 1, 'a', 16, 2, 0, 2, 0, 2},
		"unknown state flag": {1, typeState, 1, 'a', 0x10},
		"short generation":   {1, typeCheckpoint, 1, 2, 3},
	}
	for name, body := range cases {
		if r, _, err := Decode(frame(body)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Decode = %#v, %v; want corrupt", name, r, err)
		}
	}
	if _, _, err := Decode(frame([]byte{2, typeCheckpoint, 0, 0, 0, 0, 0, 0, 0, 0})); !errors.Is(err, ErrVersion) {
		t.Errorf("version 2: %v", err)
	}
	big := binary.LittleEndian.AppendUint32(nil, MaxRecordSize+1)
	if _, _, err := Decode(append(big, make([]byte, 8)...)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("oversized length: %v", err)
	}
	if _, _, err := Decode(make([]byte, 64)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("zeroes (a preallocated tail): %v", err)
	}
}

func TestReplayLogDamage(t *testing.T) {
	m, _ := NewZoneMap(DefaultZoneSize)
	var log []byte
	var ends []int
	add := func(r Record, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		b, err := Append(log, r)
		if err != nil {
			t.Fatal(err)
		}
		log = b
		ends = append(ends, len(log))
	}
	add(m.Checkpoint(42))
	for i := range 20 {
		add(m.MarkWrite("f", int64(i)<<20, 10))
	}
	in, err := m.Begin(Op{Kind: OpRename, Path: "f", To: "g"})
	add(in, err)

	// Whole log: the rename is in flight, so both names end up New and
	// the resolution must be logged.
	got, info, err := ReplayLog(log, DefaultZoneSize)
	if err != nil || info.Damage != nil || info.Valid != len(log) || info.Records != 22 || !info.Trusted() {
		t.Fatalf("whole log: %v %+v", err, info)
	}
	if d, ok := info.Resolve.(Done); !ok || !slices.Equal(d.Unknown, []uint64{in.ID}) {
		t.Fatalf("resolve = %#v", info.Resolve)
	}
	if got.Base() != 42 || got.describe("f").fromBase || got.describe("g").fromBase {
		t.Fatalf("after replay: base %d f %+v g %+v", got.Base(), got.describe("f"), got.describe("g"))
	}

	// Torn tail: the valid prefix, trusted.
	cut := ends[10] + 5
	_, info, err = ReplayLog(log[:cut], DefaultZoneSize)
	if err != nil || info.Valid != ends[10] || info.Records != 11 || !errors.Is(info.Damage, ErrTruncated) || !info.Trusted() {
		t.Fatalf("torn tail: %v %+v", err, info)
	}
	// Damage in the middle, valid records after: not trusted.
	mid := slices.Clone(log)
	mid[ends[5]+9] ^= 0x40
	_, info, err = ReplayLog(mid, DefaultZoneSize)
	if err != nil || info.Valid != ends[5] || !errors.Is(info.Damage, ErrCorrupt) || info.NextValid != ends[6] || info.Trusted() {
		t.Fatalf("damage in the middle: %v %+v", err, info)
	}
	// A record from a newer writer stops the replay with an error.
	newer := append(slices.Clone(log[:ends[3]]), frame([]byte{2, typeCheckpoint, 0, 0, 0, 0, 0, 0, 0, 0})...)
	if _, _, err := ReplayLog(newer, DefaultZoneSize); !errors.Is(err, ErrVersion) {
		t.Fatalf("newer record: %v", err)
	}
}

// ---- fuzzing ----

// FuzzDecode: never panics; whatever decodes re-encodes to the same bytes
// (one encoding per record: nothing is misread).
func FuzzDecode(f *testing.F) {
	for _, r := range sampleRecords() {
		b, _ := Encode(r)
		f.Add(b)
	}
	f.Add(frame([]byte{1, typeMeta, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0x00, 'a'}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := Decode(b)
		if err != nil {
			if r != nil || n != 0 {
				t.Fatalf("error %v with a record %#v (%d bytes)", err, r, n)
			}
			return
		}
		again, err := Encode(r)
		if err != nil {
			t.Fatalf("decoded %#v does not encode: %v", r, err)
		}
		if !bytes.Equal(again, b[:n]) {
			t.Fatalf("%#v: decoded from %x, encodes to %x", r, b[:n], again)
		}
		m, _ := NewZoneMap(DefaultZoneSize)
		if err := m.Apply(r); err != nil {
			t.Fatalf("decoded %#v does not apply: %v", r, err)
		}
	})
}

var fuzzPaths = []string{"a", "b", "a/b", "b/a", "a/b/c", "c"}

// fuzzLog turns bytes into a sequence of map operations and returns the
// log and the offsets where records end.
func fuzzLog(t testing.TB, ops []byte) (*ZoneMap, []byte, []int) {
	m, _ := NewZoneMap(1 << 12)
	var log []byte
	var ends []int
	add := func(r Record, err error) {
		if err != nil || r == nil {
			return
		}
		b, err := Append(log, r)
		if err != nil {
			t.Fatalf("encode %#v: %v", r, err)
		}
		log = b
		ends = append(ends, len(log))
	}
	add(m.Checkpoint(1))
	var pending []uint64
	for i := 0; i+2 < len(ops); i += 3 {
		p, q := fuzzPaths[int(ops[i+1])%len(fuzzPaths)], fuzzPaths[int(ops[i+2])%len(fuzzPaths)]
		arg := int64(ops[i+1])<<8 | int64(ops[i+2])
		switch ops[i] % 10 {
		case 0, 1:
			add(m.MarkWrite(p, arg*97, 1+arg%9000))
		case 2:
			add(m.MarkTruncate(p, arg*31))
		case 3:
			add(m.MarkMeta(p))
		case 4:
			add(m.Clear(p, ZoneRange{uint64(arg % 7), uint64(arg%7) + uint64(ops[i+2]%5) + 1}))
		case 5, 6:
			kind := []OpKind{OpCreate, OpDelete, OpRename, OpExchange}[int(ops[i])%4]
			op := Op{Kind: kind, Path: p}
			if kind == OpRename || kind == OpExchange {
				op.To = q
			}
			in, err := m.Begin(op)
			if err == nil {
				add(in, nil)
				pending = append(pending, in.ID)
			}
		case 7, 8:
			if len(pending) > 0 {
				id := pending[0]
				pending = pending[1:]
				add(m.Finish(id, ops[i+1]%4 != 0))
			}
		case 9:
			if len(pending) == 0 && ops[i+1]%8 == 0 {
				add(m.Checkpoint(uint64(ops[i+2])))
			}
		}
	}
	return m, log, ends
}

// atLeastAsDirty reports whether a says at least as much may differ as b,
// for every path of the fuzz namespace: never less to resync.
func atLeastAsDirty(a, b *ZoneMap) (string, bool) {
	for _, p := range fuzzPaths {
		da, db := a.describe(p), b.describe(p)
		newA := !da.gone && !da.fromBase
		switch {
		case newA:
			continue // sent whole: covers anything
		case db.gone:
			if !da.gone {
				return p, false
			}
		case !db.fromBase:
			return p, false
		case da.gone || da.origin != db.origin || (db.meta && !da.meta):
			return p, false
		default:
			for _, r := range db.zones {
				var s zoneSet
				for _, x := range da.zones {
					s.add(x.Start, x.End)
				}
				if r.End == NoEnd {
					// ranges() merged what precedes a's tail into it
					if t, ok := s.tailStart(); !ok || t > r.Start {
						return p, false
					}
				} else if !s.covers(r.Start, r.End) {
					return p, false
				}
			}
		}
	}
	return "", true
}

// checkDamagedReplay replays the log cut at k and followed by garbage, and
// compares with the original records the damaged bytes still hold intact
// (the garbage may even complete the record it cut: then that record is
// intact). Nothing else may be applied; the result is never less dirty than
// the records wholly before the cut.
func checkDamagedReplay(t testing.TB, log []byte, ends []int, k int, garbage []byte) {
	damaged := append(slices.Clone(log[:k]), garbage...)
	got, info, err := ReplayLog(damaged, 1<<12)
	if err != nil {
		if errors.Is(err, ErrVersion) {
			return // the garbage holds a well-formed record of a newer format
		}
		t.Fatal(err)
	}
	intact, start := 0, 0
	for _, end := range ends {
		if end > len(damaged) || !bytes.Equal(damaged[start:end], log[start:end]) {
			break
		}
		intact, start = intact+1, end
	}
	if info.Records > intact {
		// A valid record that is not the original: only a CRC-32C collision
		// forged by the garbage gets here, and it is a valid log.
		return
	}
	if info.Records != intact || info.Valid != start {
		t.Fatalf("replayed %d records (%d bytes), %d are intact (%d bytes)", info.Records, info.Valid, intact, start)
	}
	want, _, err := ReplayLog(log[:start], 1<<12)
	if err != nil {
		t.Fatal(err)
	}
	if !sameMap(got, want) {
		t.Fatalf("damaged log replays differently from its intact records:\n%v\n%v", got.Entries(), want.Entries())
	}
	before := 0
	for _, end := range ends {
		if end <= k {
			before = end
		}
	}
	prefix, _, _ := ReplayLog(log[:before], 1<<12)
	if start == before { // a checkpoint completed by the garbage may clean
		if p, ok := atLeastAsDirty(got, prefix); !ok {
			t.Fatalf("damaged log says less about %q than the records before the cut:\n%+v\n%+v", p, got.describe(p), prefix.describe(p))
		}
	}
}

// FuzzReplay: a log built from fuzz-chosen operations replays to the live
// map; cut anywhere and followed by fuzz-chosen garbage, it replays without
// panicking to what its intact records say.
func FuzzReplay(f *testing.F) {
	f.Add([]byte{0, 1, 2, 5, 0, 2, 7, 1, 0, 3, 4, 4, 2, 3, 1}, uint16(30), []byte{1, 2, 3})
	f.Add([]byte{6, 2, 3, 0, 3, 3, 8, 1, 1, 9, 0, 0, 1, 4, 4}, uint16(90), []byte{})
	f.Fuzz(func(t *testing.T, ops []byte, cut uint16, garbage []byte) {
		live, log, ends := fuzzLog(t, ops)
		whole, info, err := ReplayLog(log, 1<<12)
		if err != nil || info.Damage != nil {
			t.Fatalf("whole log: %v %+v", err, info)
		}
		live.ResolvePending()
		if !sameMap(whole, live) {
			t.Fatalf("whole log replays to\n%v\nlive\n%v", whole.Entries(), live.Entries())
		}
		checkDamagedReplay(t, log, ends, int(cut)%(len(log)+1), garbage)
	})
}

// TestReplayRandomDamage runs the fuzz property on random inputs, so the
// ordinary test run covers it.
func TestReplayRandomDamage(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for range 400 {
		_, log, ends := fuzzLog(t, randomData(rng, rng.IntN(200)))
		checkDamagedReplay(t, log, ends, rng.IntN(len(log)+1), randomData(rng, rng.IntN(40)))
	}
}
