package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
)

// # Record format
//
// The journal is an append-only sequence of records, each framed as
//
//	offset 0  uint32 LE  body length L (2 ≤ L ≤ MaxRecordSize)
//	offset 4  uint32 LE  CRC-32C (Castagnoli) of bytes [0, 4) and the body
//	offset 8  body:      version (1 byte, RecordVersion), type (1 byte), payload
//
// so a torn or corrupt tail is detected and never misread. Payloads use
// fixed 8-byte little-endian generations, minimal uvarints, strings as a
// uvarint length and bytes, and zone ranges as
//
//	count, then per range: start − previous end (≥ 1 after the first),
//	length (0: to the end of the file, last range only)
//
// Decoding is strict: every record has exactly one encoding (canonical
// ranges, sorted ids, minimal varints, no trailing bytes), so Decode accepts
// only what Encode produces.

// RecordVersion is the body format version this package writes and reads.
const RecordVersion = 1

// MaxRecordSize bounds a record body (a corrupt length must not make a
// reader allocate or skip gigabytes).
const MaxRecordSize = 1 << 20

const frameHeader = 8

// Decode errors. A reader of the log treats ErrTruncated and ErrCorrupt as
// the end of the valid log; ErrVersion means a newer writer and must stop
// it.
var (
	ErrTruncated = errors.New("record truncated")
	ErrCorrupt   = errors.New("record corrupt")
	ErrVersion   = errors.New("record version unsupported")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one journal entry: Checkpoint, Dirty, Clean, Meta, Intent, Done
// or State.
type Record interface{ recordType() byte }

// Checkpoint: both nodes held identical trees at generation Gen; everything
// logged before is settled. The map restarts empty with base Gen.
type Checkpoint struct{ Gen uint64 }

// Dirty: zones of Path (in zones of 2^Shift bytes) may change; logged before
// the data is written. Gen is the writer's generation.
type Dirty struct {
	Gen   uint64
	Path  string
	Shift uint8
	Zones []ZoneRange
}

// Clean: zones of Path are identical on both nodes.
type Clean struct {
	Path  string
	Shift uint8
	Zones []ZoneRange
}

// Meta: Path's metadata may change ("" is the replicated directory).
type Meta struct {
	Gen  uint64
	Path string
}

// Intent: structural operation ID is about to be performed.
type Intent struct {
	Gen uint64
	ID  uint64
	Op  Op
}

// Done: the operations Applied happened, those Failed did not, those
// Unknown may or may not have (the node stopped with them in flight): the
// paths they name become New.
type Done struct {
	Applied []uint64
	Failed  []uint64
	Unknown []uint64
}

// State sets what the map says about Path outright; Snapshot writes these
// to rebuild a map without its history.
type State struct {
	Path      string
	New       bool
	Gone      bool
	Meta      bool
	Origin    string
	HasOrigin bool
}

const (
	typeCheckpoint byte = iota + 1
	typeDirty
	typeClean
	typeMeta
	typeIntent
	typeDone
	typeState
)

func (Checkpoint) recordType() byte { return typeCheckpoint }
func (Dirty) recordType() byte      { return typeDirty }
func (Clean) recordType() byte      { return typeClean }
func (Meta) recordType() byte       { return typeMeta }
func (Intent) recordType() byte     { return typeIntent }
func (Done) recordType() byte       { return typeDone }
func (State) recordType() byte      { return typeState }

const (
	stateNew byte = 1 << iota
	stateGone
	stateMeta
	stateOrigin
)

// validateRecord checks everything the encoding does not make impossible;
// Encode, Decode and Apply all run it, so a record that passes one passes
// all.
func validateRecord(r Record) error {
	switch r := r.(type) {
	case Checkpoint:
		return nil
	case Dirty:
		if err := validPath(r.Path, false); err != nil {
			return err
		}
		return validZones(r.Zones, r.Shift)
	case Clean:
		if err := validPath(r.Path, false); err != nil {
			return err
		}
		return validZones(r.Zones, r.Shift)
	case Meta:
		return validPath(r.Path, true)
	case Intent:
		if r.ID == 0 {
			return errors.New("intent id 0")
		}
		return r.Op.validate()
	case Done:
		if len(r.Applied)+len(r.Failed)+len(r.Unknown) == 0 {
			return errors.New("done lists no operation")
		}
		seen := map[uint64]bool{}
		for _, ids := range [][]uint64{r.Applied, r.Failed, r.Unknown} {
			for i, id := range ids {
				if id == 0 || (i > 0 && id <= ids[i-1]) {
					return errors.New("done ids are not increasing and positive")
				}
				if seen[id] {
					return fmt.Errorf("operation %d has two outcomes", id)
				}
				seen[id] = true
			}
		}
		return nil
	case State:
		if err := validPath(r.Path, true); err != nil {
			return err
		}
		switch {
		case !r.New && !r.Gone && !r.Meta && !r.HasOrigin:
			return errors.New("state says nothing")
		case r.Gone && (r.New || r.Meta || r.HasOrigin):
			return errors.New("gone state with other facts")
		case r.New && r.HasOrigin:
			return errors.New("new state with an origin")
		case r.Path == "" && (r.New || r.Gone || r.HasOrigin):
			return errors.New("the replicated directory can only change metadata")
		case !r.HasOrigin && r.Origin != "":
			return errors.New("origin without its flag")
		case r.HasOrigin:
			return validPath(r.Origin, false)
		}
		return nil
	case nil:
		return errors.New("nil record")
	}
	return fmt.Errorf("unknown record type %T", r)
}

// validZones: canonical ranges (sorted, disjoint, not adjacent, non-empty),
// inside the byte range of a file, NoEnd only last.
func validZones(zs []ZoneRange, shift uint8) error {
	if shift < minZoneShift || shift > maxZoneShift {
		return fmt.Errorf("zone shift %d outside [%d, %d]", shift, minZoneShift, maxZoneShift)
	}
	if len(zs) == 0 {
		return errors.New("no zones")
	}
	limit := uint64(1) << (63 - shift)
	for i, z := range zs {
		switch {
		case z.Start >= z.End:
			return fmt.Errorf("empty zone range %v", z)
		case z.End == NoEnd && i != len(zs)-1:
			return errors.New("open-ended zone range before the last")
		case z.End != NoEnd && z.End > limit, z.Start >= limit:
			return fmt.Errorf("zone range %v beyond the largest file", z)
		case i > 0 && z.Start <= zs[i-1].End:
			return errors.New("zone ranges not sorted, disjoint and apart")
		}
	}
	return nil
}

// Encode returns the framed record.
func Encode(r Record) ([]byte, error) { return Append(nil, r) }

// Append appends the framed record to dst.
func Append(dst []byte, r Record) ([]byte, error) {
	if err := validateRecord(r); err != nil {
		return dst, fmt.Errorf("encode %T record: %w", r, err)
	}
	start := len(dst)
	dst = append(dst, make([]byte, frameHeader)...)
	dst = append(dst, RecordVersion, r.recordType())
	switch r := r.(type) {
	case Checkpoint:
		dst = binary.LittleEndian.AppendUint64(dst, r.Gen)
	case Dirty:
		dst = binary.LittleEndian.AppendUint64(dst, r.Gen)
		dst = appendString(dst, r.Path)
		dst = append(dst, r.Shift)
		dst = appendZones(dst, r.Zones)
	case Clean:
		dst = appendString(dst, r.Path)
		dst = append(dst, r.Shift)
		dst = appendZones(dst, r.Zones)
	case Meta:
		dst = binary.LittleEndian.AppendUint64(dst, r.Gen)
		dst = appendString(dst, r.Path)
	case Intent:
		dst = binary.LittleEndian.AppendUint64(dst, r.Gen)
		dst = binary.AppendUvarint(dst, r.ID)
		dst = append(dst, byte(r.Op.Kind))
		dst = appendString(dst, r.Op.Path)
		if r.Op.Kind == OpRename || r.Op.Kind == OpExchange {
			dst = appendString(dst, r.Op.To)
		}
	case Done:
		dst = appendIDs(dst, r.Applied)
		dst = appendIDs(dst, r.Failed)
		dst = appendIDs(dst, r.Unknown)
	case State:
		dst = appendString(dst, r.Path)
		var f byte
		if r.New {
			f |= stateNew
		}
		if r.Gone {
			f |= stateGone
		}
		if r.Meta {
			f |= stateMeta
		}
		if r.HasOrigin {
			f |= stateOrigin
		}
		dst = append(dst, f)
		if r.HasOrigin {
			dst = appendString(dst, r.Origin)
		}
	}
	body := len(dst) - start - frameHeader
	if body > MaxRecordSize {
		return dst[:start], fmt.Errorf("encode %T record: %d bytes, at most %d", r, body, MaxRecordSize)
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(body))
	crc := crc32.Update(0, castagnoli, dst[start:start+4])
	crc = crc32.Update(crc, castagnoli, dst[start+frameHeader:])
	binary.LittleEndian.PutUint32(dst[start+4:], crc)
	return dst, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendZones(dst []byte, zs []ZoneRange) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(zs)))
	prev := uint64(0)
	for _, z := range zs {
		dst = binary.AppendUvarint(dst, z.Start-prev)
		if z.End == NoEnd {
			dst = binary.AppendUvarint(dst, 0)
		} else {
			dst = binary.AppendUvarint(dst, z.End-z.Start)
		}
		prev = z.End
	}
	return dst
}

func appendIDs(dst []byte, ids []uint64) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ids)))
	prev := uint64(0)
	for _, id := range ids {
		dst = binary.AppendUvarint(dst, id-prev)
		prev = id
	}
	return dst
}

// Decode reads the record at the start of b and returns it with the number
// of bytes it took. ErrTruncated: b ends inside the record. ErrCorrupt: the
// checksum or the content is wrong. ErrVersion: a checksummed record of a
// format this package does not know.
func Decode(b []byte) (Record, int, error) {
	if len(b) < frameHeader {
		return nil, 0, fmt.Errorf("decode record header: %w", ErrTruncated)
	}
	n := binary.LittleEndian.Uint32(b)
	if n < 2 || n > MaxRecordSize {
		return nil, 0, fmt.Errorf("decode record: length %d: %w", n, ErrCorrupt)
	}
	if uint64(len(b)) < frameHeader+uint64(n) {
		return nil, 0, fmt.Errorf("decode record of %d bytes, %d present: %w", n, len(b)-frameHeader, ErrTruncated)
	}
	body := b[frameHeader : frameHeader+n]
	crc := crc32.Update(0, castagnoli, b[:4])
	if crc32.Update(crc, castagnoli, body) != binary.LittleEndian.Uint32(b[4:]) {
		return nil, 0, fmt.Errorf("decode record: checksum mismatch: %w", ErrCorrupt)
	}
	if body[0] != RecordVersion {
		return nil, 0, fmt.Errorf("decode record: version %d, this halo reads %d: %w", body[0], RecordVersion, ErrVersion)
	}
	r, err := decodeBody(body[1], &reader{b: body[2:]})
	if err != nil {
		return nil, 0, fmt.Errorf("decode record type %d: %w: %w", body[1], err, ErrCorrupt)
	}
	if err := validateRecord(r); err != nil {
		return nil, 0, fmt.Errorf("decode %T record: %w: %w", r, err, ErrCorrupt)
	}
	return r, frameHeader + int(n), nil
}

func decodeBody(typ byte, rd *reader) (Record, error) {
	var r Record
	switch typ {
	case typeCheckpoint:
		r = Checkpoint{Gen: rd.u64()}
	case typeDirty:
		d := Dirty{Gen: rd.u64(), Path: rd.str(), Shift: rd.byte()}
		d.Zones = rd.zones()
		r = d
	case typeClean:
		c := Clean{Path: rd.str(), Shift: rd.byte()}
		c.Zones = rd.zones()
		r = c
	case typeMeta:
		r = Meta{Gen: rd.u64(), Path: rd.str()}
	case typeIntent:
		in := Intent{Gen: rd.u64(), ID: rd.uvarint()}
		in.Op.Kind = OpKind(rd.byte())
		in.Op.Path = rd.str()
		if in.Op.Kind == OpRename || in.Op.Kind == OpExchange {
			in.Op.To = rd.str()
		}
		r = in
	case typeDone:
		r = Done{Applied: rd.ids(), Failed: rd.ids(), Unknown: rd.ids()}
	case typeState:
		s := State{Path: rd.str()}
		f := rd.byte()
		if f&^(stateNew|stateGone|stateMeta|stateOrigin) != 0 {
			return nil, fmt.Errorf("unknown state flags %#x", f)
		}
		s.New, s.Gone, s.Meta, s.HasOrigin = f&stateNew != 0, f&stateGone != 0, f&stateMeta != 0, f&stateOrigin != 0
		if s.HasOrigin {
			s.Origin = rd.str()
		}
		r = s
	default:
		return nil, fmt.Errorf("unknown record type %d", typ)
	}
	if rd.err != nil {
		return nil, rd.err
	}
	if len(rd.b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(rd.b))
	}
	return r, nil
}

// reader decodes a body; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("short or malformed %s", what)
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail("byte")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.fail("generation")
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// uvarint accepts only the minimal encoding.
func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n != uvarintLen(v) {
		r.fail("varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.fail("string")
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// count reads a list length, bounded by what the remaining bytes can hold
// (each element takes at least min bytes), so garbage cannot allocate much.
func (r *reader) count(min int) int {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)/min) {
		r.fail("count")
		return 0
	}
	return int(n)
}

func (r *reader) zones() []ZoneRange {
	n := r.count(2)
	if n == 0 {
		return nil
	}
	zs := make([]ZoneRange, 0, n)
	prev := uint64(0)
	for range n {
		d, l := r.uvarint(), r.uvarint()
		if r.err != nil {
			return nil
		}
		start := prev + d
		if start < prev {
			r.fail("zone range")
			return nil
		}
		end := NoEnd
		if l != 0 {
			end = start + l
			if end < start || end == NoEnd {
				r.fail("zone range")
				return nil
			}
		}
		zs = append(zs, ZoneRange{start, end})
		prev = end
	}
	return zs
}

func (r *reader) ids() []uint64 {
	n := r.count(1)
	if n == 0 {
		return nil
	}
	ids := make([]uint64, 0, n)
	prev := uint64(0)
	for range n {
		id := prev + r.uvarint()
		if r.err != nil || id < prev {
			r.fail("id")
			return nil
		}
		ids = append(ids, id)
		prev = id
	}
	return ids
}

// ---- replay and compaction ----

// LogInfo describes a replayed log.
type LogInfo struct {
	Records int // records applied
	// Valid is the length of the valid prefix: the writer truncates the file
	// there before appending again.
	Valid int
	// Damage says why the log ends before its last byte (wraps ErrTruncated
	// or ErrCorrupt); nil if every byte was read.
	Damage error
	// NextValid is the offset of a well-formed record after the damage, -1 if
	// none. A torn tail has none; if there is one, the log was damaged in
	// the middle (or a write tore out of order) and the changes recorded
	// after the damage are lost: the map cannot be trusted, only a full
	// resync is safe.
	NextValid int
	// Resolve, when not nil, settles the operations the node stopped with
	// in flight (see ZoneMap.ResolvePending); it is already applied to the
	// map. The writer must truncate the file to Valid and append it before
	// anything else, so that later records replay on the same state.
	Resolve Record
}

// Trusted reports whether the map replayed from the log is a superset of
// the node's changes: the log is whole, or ends in a torn tail.
func (i LogInfo) Trusted() bool { return i.NextValid < 0 }

// ReplayLog rebuilds a map from a journal's bytes after a restart. It stops
// at the first record that is truncated, corrupt or does not apply (the end
// of the valid log), then settles operations still in flight as possibly
// performed (LogInfo.Resolve). Only ErrVersion (a newer writer) and a bad
// zone size are errors.
func ReplayLog(data []byte, zoneSize int64) (*ZoneMap, LogInfo, error) {
	m, err := NewZoneMap(zoneSize)
	if err != nil {
		return nil, LogInfo{}, err
	}
	info := LogInfo{NextValid: -1}
	for info.Valid < len(data) {
		r, n, err := Decode(data[info.Valid:])
		if errors.Is(err, ErrVersion) {
			return nil, info, fmt.Errorf("replay journal at byte %d: %w", info.Valid, err)
		}
		if err == nil {
			if aerr := m.Apply(r); aerr != nil {
				err = fmt.Errorf("%w: %w", aerr, ErrCorrupt)
			}
		}
		if err != nil {
			info.Damage = fmt.Errorf("record %d at byte %d: %w", info.Records, info.Valid, err)
			info.NextValid = nextValid(data, info.Valid+1)
			break
		}
		info.Records++
		info.Valid += n
	}
	if r := m.ResolvePending(); r.Unknown != nil {
		info.Resolve = r
	}
	return m, info, nil
}

// nextValid returns the offset of the first decodable record at or after
// from, -1 if none.
func nextValid(data []byte, from int) int {
	for off := from; off+frameHeader <= len(data); off++ {
		if _, _, err := Decode(data[off:]); err == nil || errors.Is(err, ErrVersion) {
			return off
		}
	}
	return -1
}

// Replay rebuilds a map from records (a peer's Snapshot, a decoded log).
// Operations in flight stay pending (NewPlan settles them on a copy; after a
// restart, ReplayLog settles them).
func Replay(records []Record, zoneSize int64) (*ZoneMap, error) {
	m, err := NewZoneMap(zoneSize)
	if err != nil {
		return nil, err
	}
	for i, r := range records {
		if err := m.Apply(r); err != nil {
			return nil, fmt.Errorf("replay record %d: %w", i, err)
		}
	}
	return m, nil
}

// snapshotZonesPerRecord keeps Snapshot's records far below MaxRecordSize
// (a range takes at most 20 bytes).
const snapshotZonesPerRecord = 4096

// Snapshot returns records that rebuild m without its history: the journal
// can be rewritten as these (compaction), or sent to the peer for a resync
// plan. Operations in flight are kept as Intents.
func Snapshot(m *ZoneMap) []Record {
	recs := []Record{Checkpoint{Gen: m.base}}
	m.walk(func(n *node, path string) {
		if n.is(flagNew|flagGone|flagMeta) || n.origin != nil {
			s := State{Path: path, New: n.is(flagNew), Gone: n.is(flagGone), Meta: n.is(flagMeta)}
			if n.origin != nil {
				s.Origin, s.HasOrigin = *n.origin, true
			}
			recs = append(recs, s)
		}
		zs := n.zones.ranges()
		for len(zs) > 0 {
			k := min(len(zs), snapshotZonesPerRecord)
			recs = append(recs, Dirty{Gen: m.last, Path: path, Shift: m.shift, Zones: zs[:k]})
			zs = zs[k:]
		}
	})
	ids := make([]uint64, 0, len(m.pending))
	for id := range m.pending {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		recs = append(recs, Intent{Gen: m.last, ID: id, Op: m.pending[id]})
	}
	return recs
}
