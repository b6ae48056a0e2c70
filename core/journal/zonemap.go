package journal

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
)

// # Zone maps
//
// A ZoneMap tells, for one node, how its replicated tree differs from the
// tree both nodes held at the last checkpoint (the base): which zones of
// which files may have changed, which metadata, and how the tree was
// restructured (files created, deleted, renamed). The union of both nodes'
// maps since their common base is what an incremental resync sends.
//
// The map is an overlay over the base tree, keyed by path (relative to the
// replicated directory, slash-separated). A path the map does not mention
// holds the base object its parent's position implies: after "mv a b", b/x
// is the base object a/x. Nodes of the overlay record:
//
//   - dirty zones (a zoneSet) and "metadata changed";
//   - New: what lies at this path (and under it, except descendants that
//     say otherwise) does not derive from the base: created since, or
//     unknown after a crash in the middle of an operation;
//   - Gone: nothing lies here (deleted, or moved away);
//   - an explicit origin: the base path of the object now here (renamed).
//
// Directory renames are O(depth): the subtree moves with its node.
//
// # Mutations and the log
//
// Every change is a Record. A Mark method applies it and returns it; the
// caller appends Encode(record) to its on-disk journal. Structural
// operations (create, delete, rename, exchange) take two records: Begin's
// Intent before the operation, Finish's Done after it. ReplayLog rebuilds
// the map from the journal after a restart; an operation found in flight
// may or may not have happened, so every path it names becomes New (sent
// whole, replaced on a target), which is always safe.
//
// # What the replication layer must do
//
//   - Each node journals changes to its own tree: the primary the
//     application's, the secondary those it applies, a resync target those
//     the resync makes. Its map then describes its tree exactly.
//   - Mark zones and metadata, and wait until the record is durable, before
//     changing the data. A nil record means an earlier record already
//     covers the change: wait for that one's durability instead.
//   - Log an Intent durably before a structural operation; log its Done
//     after (no need to wait: a lost Done replays as in flight). Mark a
//     file under the name the map has for it at that moment: the name
//     table and the journal change under one lock.
//   - After a restart: ReplayLog, truncate the file to LogInfo.Valid, append
//     LogInfo.Resolve. If !LogInfo.Trusted(), the history is lost: full
//     resync.
//   - Checkpoint (both nodes, same generation) when both trees are
//     identical: at the end of a resync, and periodically while in sync
//     with no structural operation in flight (then mark again the zones of
//     writes still in flight). Compaction rewrites the file as Snapshot.
//   - Excluded paths are not journaled; a rename into the tree from an
//     excluded path is a create, out of it a delete. A hard link is a
//     create of the new name (sent whole unless the sender recognises the
//     inode).

// DefaultZoneSize is the journal zone size when the configuration sets none.
const DefaultZoneSize = 64 << 10

// Zone sizes accepted: from a sector to 1 GiB.
const (
	minZoneShift = 9
	maxZoneShift = 30
)

// maxOffset bounds file offsets (off_t).
const maxOffset = 1<<63 - 1

// ErrPending is returned by operations that need no structural operation in
// flight.
var ErrPending = errors.New("structural operations are in flight")

// OpKind is a structural operation on the tree.
type OpKind uint8

const (
	OpCreate   OpKind = iota + 1 // create, mkdir, mknod, symlink, link (the new name)
	OpDelete                     // unlink, rmdir
	OpRename                     // rename Path to To, replacing To
	OpExchange                   // RENAME_EXCHANGE of Path and To
)

var opNames = [...]string{"", "create", "delete", "rename", "exchange"}

func (k OpKind) String() string {
	if k > 0 && int(k) < len(opNames) {
		return opNames[k]
	}
	return fmt.Sprintf("OpKind(%d)", k)
}

// Op is a structural operation; To is used by OpRename and OpExchange only.
type Op struct {
	Kind OpKind
	Path string
	To   string
}

// validate checks what makes an operation impossible, so that an invalid
// one is never logged, and a logged one always applies.
func (op Op) validate() error {
	switch op.Kind {
	case OpCreate, OpDelete:
		if op.To != "" {
			return fmt.Errorf("%s has no second path", op.Kind)
		}
		return validPath(op.Path, false)
	case OpRename, OpExchange:
		if err := validPath(op.Path, false); err != nil {
			return err
		}
		if err := validPath(op.To, false); err != nil {
			return err
		}
		if op.Path == op.To || isUnder(op.To, op.Path) || isUnder(op.Path, op.To) {
			return fmt.Errorf("%s %q to %q: one path contains the other", op.Kind, op.Path, op.To)
		}
		return nil
	}
	return fmt.Errorf("unknown operation %d", op.Kind)
}

func (op Op) paths() []string {
	if op.Kind == OpRename || op.Kind == OpExchange {
		return []string{op.Path, op.To}
	}
	return []string{op.Path}
}

// maxPathLen bounds a path (PATH_MAX is 4096; a replicated tree may sit
// under a prefix, so relative paths stay below it).
const maxPathLen = 4096

// validPath accepts clean relative slash paths; "" (the replicated directory
// itself) only where rootOK.
func validPath(p string, rootOK bool) error {
	if p == "" {
		if rootOK {
			return nil
		}
		return errors.New("path is empty (the replicated directory itself)")
	}
	if len(p) > maxPathLen {
		return fmt.Errorf("path of %d bytes is longer than %d", len(p), maxPathLen)
	}
	for rest := p; ; {
		c, r, more := strings.Cut(rest, "/")
		if c == "" || c == "." || c == ".." || strings.IndexByte(c, 0) >= 0 {
			return fmt.Errorf("path %q is not a clean relative path", p)
		}
		if !more {
			return nil
		}
		rest = r
	}
}

// isUnder reports whether p lies strictly below dir.
func isUnder(p, dir string) bool {
	return len(p) > len(dir) && strings.HasPrefix(p, dir) && p[len(dir)] == '/'
}

const (
	flagNew uint8 = 1 << iota
	flagGone
	flagMeta
)

type node struct {
	parent *node
	name   string
	kids   map[string]*node
	origin *string // base path of the object here when renamed; nil: implied by the parent
	zones  zoneSet
	flags  uint8
}

func (n *node) is(f uint8) bool { return n.flags&f != 0 }

// implicit: the node says nothing beyond its position (it exists only to
// hold descendants, or not at all).
func (n *node) implicit() bool {
	return n.flags == 0 && n.origin == nil && n.zones.empty()
}

func (n *node) path() string {
	if n.parent == nil {
		return ""
	}
	var parts []string
	for x := n; x.parent != nil; x = x.parent {
		parts = append(parts, x.name)
	}
	slices.Reverse(parts)
	return strings.Join(parts, "/")
}

// sortedKids returns the children in name order (deterministic walks).
func (n *node) sortedKids() []*node {
	out := make([]*node, 0, len(n.kids))
	for _, k := range n.kids {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b *node) int { return strings.Compare(a.name, b.name) })
	return out
}

// ZoneMap is one node's map of changes since its base. Not safe for
// concurrent use.
type ZoneMap struct {
	shift   uint8
	root    *node
	base    uint64 // generation both nodes held at the last checkpoint
	gen     uint64 // generation new records carry
	last    uint64 // generation carried by the last record applied
	nextID  uint64
	pending map[uint64]Op
}

// NewZoneMap returns an empty map (no checkpoint yet: base 0) for zones of
// zoneSize bytes, a power of two from 512 bytes to 1 GiB.
func NewZoneMap(zoneSize int64) (*ZoneMap, error) {
	if zoneSize <= 0 || zoneSize&(zoneSize-1) != 0 {
		return nil, fmt.Errorf("create zone map: zone size %d is not a power of two", zoneSize)
	}
	shift := uint8(bits.TrailingZeros64(uint64(zoneSize)))
	if shift < minZoneShift || shift > maxZoneShift {
		return nil, fmt.Errorf("create zone map: zone size %d is outside [%d, %d]", zoneSize, 1<<minZoneShift, 1<<maxZoneShift)
	}
	return &ZoneMap{shift: shift, root: &node{}, pending: map[uint64]Op{}}, nil
}

// ZoneSize returns the zone size in bytes.
func (m *ZoneMap) ZoneSize() int64 { return 1 << m.shift }

// Base returns the generation of the last checkpoint: the map describes the
// changes since both nodes held that generation. 0: no checkpoint.
func (m *ZoneMap) Base() uint64 { return m.base }

// Last returns the generation carried by the last record applied (0 if
// none): after a crash, the generation this node was writing in.
func (m *ZoneMap) Last() uint64 { return m.last }

// SetGeneration sets the generation that new records carry (the node's
// current data generation).
func (m *ZoneMap) SetGeneration(gen uint64) { m.gen = gen }

// Covers reports whether this map describes the changes since generation
// since (StartResync.Since): its base must be exactly that generation. An
// older base would describe renames both nodes already share as if they were
// pending, a newer one lacks changes; either way only a full resync is safe.
func (m *ZoneMap) Covers(since uint64) bool {
	return since != 0 && m.base == since
}

// Pending returns the structural operations begun and not finished, by ID.
func (m *ZoneMap) Pending() map[uint64]Op {
	out := make(map[uint64]Op, len(m.pending))
	for id, op := range m.pending {
		out[id] = op
	}
	return out
}

// lookupWhole returns the node at path (nil if none) and whether the path
// lies at or under a New node without a base object moved in between:
// everything there is sent whole anyway.
func (m *ZoneMap) lookupWhole(path string) (*node, bool) {
	n, whole := m.root, false
	for rest := path; rest != ""; {
		c, r, _ := strings.Cut(rest, "/")
		k := n.kids[c]
		if k == nil {
			return nil, whole
		}
		switch {
		case k.is(flagNew):
			whole = true
		case k.origin != nil:
			whole = false
		}
		n, rest = k, r
	}
	return n, whole
}

func (m *ZoneMap) lookup(path string) *node {
	n := m.root
	for rest := path; rest != ""; {
		c, r, _ := strings.Cut(rest, "/")
		n = n.kids[c]
		if n == nil {
			return nil
		}
		rest = r
	}
	return n
}

// materialize returns the node at path, creating implicit nodes on the way.
// An ancestor marked Gone turns New: something exists below it, so
// something exists there (only an inconsistent caller gets there, and New is
// the safe answer).
func (m *ZoneMap) materialize(path string) *node {
	n := m.root
	for rest := path; rest != ""; {
		c, r, _ := strings.Cut(rest, "/")
		if n.is(flagGone) {
			setNew(n)
		}
		k := n.kids[c]
		if k == nil {
			k = &node{parent: n, name: strings.Clone(c)}
			if n.kids == nil {
				n.kids = map[string]*node{}
			}
			n.kids[k.name] = k
		}
		n, rest = k, r
	}
	return n
}

// prune removes implicit leaves from n upwards.
func (m *ZoneMap) prune(n *node) {
	for n != nil && n.parent != nil && n.implicit() && len(n.kids) == 0 {
		p := n.parent
		if p.kids[n.name] == n {
			delete(p.kids, n.name)
		}
		n = p
	}
}

// effOrigin returns the base path of the object at n, false if it does not
// derive from the base (n or an ancestor is New or Gone).
func effOrigin(n *node) (string, bool) {
	var parts []string
	for x := n; ; x = x.parent {
		if x.is(flagNew | flagGone) {
			return "", false
		}
		if x.origin != nil || x.parent == nil {
			head := ""
			if x.origin != nil {
				head = *x.origin
			}
			slices.Reverse(parts)
			return joinPath(head, strings.Join(parts, "/")), true
		}
		parts = append(parts, x.name)
	}
}

func joinPath(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "/" + b
}

func setNew(n *node) {
	n.flags = flagNew
	n.origin = nil
	n.zones.reset()
	n.kids = nil
}

func setGone(n *node) {
	n.flags = flagGone
	n.origin = nil
	n.zones.reset()
	n.kids = nil
}

// fromBase reports whether the object at n derives from the base (no New or
// Gone on the way up to the root or to an explicit origin).
func fromBase(n *node) bool {
	for x := n; x != nil; x = x.parent {
		if x.is(flagNew | flagGone) {
			return false
		}
		if x.origin != nil {
			return true
		}
	}
	return true
}

// touchDir records that a directory's entries changed (its times did).
// Nothing to record inside a new directory: it is sent whole.
func touchDir(d *node) {
	if fromBase(d) {
		d.flags |= flagMeta
	}
}

// ---- mutations returning the record to log ----

// MarkWrite records that bytes [off, off+n) of path are about to change.
// It returns nil when the zones are already dirty: no record needs to be
// logged, but the caller must still wait until the record that dirtied them
// is durable before writing.
func (m *ZoneMap) MarkWrite(path string, off, n int64) (Record, error) {
	if err := validPath(path, false); err != nil {
		return nil, fmt.Errorf("mark write: %w", err)
	}
	if off < 0 || n < 0 || n > maxOffset-off {
		return nil, fmt.Errorf("mark write of %q: bad range offset %d length %d", path, off, n)
	}
	if n == 0 {
		return nil, nil
	}
	first, end := uint64(off)>>m.shift, (uint64(off+n-1)>>m.shift)+1
	if x, whole := m.lookupWhole(path); whole || (x != nil && !x.is(flagGone) && x.zones.covers(first, end)) {
		return nil, nil
	}
	rec := Dirty{Gen: m.gen, Path: path, Shift: m.shift, Zones: []ZoneRange{{first, end}}}
	m.applyDirty(rec)
	return rec, nil
}

// MarkTruncate records that path's size is about to become size (truncate,
// ftruncate, O_TRUNC, an extending fallocate): everything from the zone
// holding size to the end may change. Nil: already recorded.
func (m *ZoneMap) MarkTruncate(path string, size int64) (Record, error) {
	if err := validPath(path, false); err != nil {
		return nil, fmt.Errorf("mark truncate: %w", err)
	}
	if size < 0 {
		return nil, fmt.Errorf("mark truncate of %q: negative size %d", path, size)
	}
	from := uint64(size) >> m.shift
	x, whole := m.lookupWhole(path)
	if whole {
		return nil, nil
	}
	if x != nil && !x.is(flagGone) {
		if t, ok := x.zones.tailStart(); ok && t <= from {
			return nil, nil
		}
	}
	rec := Dirty{Gen: m.gen, Path: path, Shift: m.shift, Zones: []ZoneRange{{from, NoEnd}}}
	m.applyDirty(rec)
	return rec, nil
}

// MarkMeta records that path's metadata (mode, owner, times, xattrs) is
// about to change; "" is the replicated directory itself. Nil: already
// recorded.
func (m *ZoneMap) MarkMeta(path string) (Record, error) {
	if err := validPath(path, true); err != nil {
		return nil, fmt.Errorf("mark metadata: %w", err)
	}
	if x, whole := m.lookupWhole(path); whole || (x != nil && x.is(flagMeta)) {
		return nil, nil
	}
	rec := Meta{Gen: m.gen, Path: path}
	m.applyMeta(rec)
	return rec, nil
}

// Clear records that zones of path are identical on both nodes (sent by a
// resync and acknowledged, or acknowledged by the peer with no other write to
// them in flight). A New path stays New. Nil: nothing to clear.
func (m *ZoneMap) Clear(path string, r ZoneRange) (Record, error) {
	if err := validPath(path, false); err != nil {
		return nil, fmt.Errorf("clear zones: %w", err)
	}
	if r.Start >= r.End || (r.End != NoEnd && r.End > maxZone) {
		return nil, fmt.Errorf("clear zones of %q: bad range %v", path, r)
	}
	x := m.lookup(path)
	if x == nil || x.is(flagNew|flagGone) || x.zones.empty() {
		return nil, nil
	}
	rec := Clean{Path: path, Shift: m.shift, Zones: []ZoneRange{r}}
	m.applyClean(rec)
	return rec, nil
}

// Begin records a structural operation about to be performed and returns
// the Intent to log (durably) before performing it; Finish records its
// outcome.
func (m *ZoneMap) Begin(op Op) (Intent, error) {
	if err := op.validate(); err != nil {
		return Intent{}, fmt.Errorf("begin operation: %w", err)
	}
	m.nextID++
	rec := Intent{Gen: m.gen, ID: m.nextID, Op: op}
	m.pending[rec.ID] = op
	m.last = m.gen
	return rec, nil
}

// Finish records whether the operation begun as id happened, applies it if
// so, and returns the Done to log (durability optional: a lost Done leaves
// the operation pending, which replays as New paths). Callers may batch
// several outcomes in one Done and Apply it instead.
func (m *ZoneMap) Finish(id uint64, applied bool) (Done, error) {
	if _, ok := m.pending[id]; !ok {
		return Done{}, fmt.Errorf("finish operation %d: not pending", id)
	}
	rec := Done{}
	if applied {
		rec.Applied = []uint64{id}
	} else {
		rec.Failed = []uint64{id}
	}
	m.applyDone(rec)
	return rec, nil
}

// Checkpoint records that both nodes now hold identical trees at generation
// gen: the map empties. Refused while structural operations are in flight
// (their outcome relative to the new base would be unknown).
func (m *ZoneMap) Checkpoint(gen uint64) (Record, error) {
	if len(m.pending) != 0 {
		return nil, fmt.Errorf("checkpoint: %w", ErrPending)
	}
	rec := Checkpoint{Gen: gen}
	m.applyCheckpoint(gen)
	return rec, nil
}

// ---- applying records ----

// Apply applies a record (decoded from the log, or received from the peer).
func (m *ZoneMap) Apply(r Record) error {
	if err := validateRecord(r); err != nil {
		return fmt.Errorf("apply %T record: %w", r, err)
	}
	switch r := r.(type) {
	case Checkpoint:
		m.applyCheckpoint(r.Gen)
	case Dirty:
		m.applyDirty(r)
	case Clean:
		m.applyClean(r)
	case Meta:
		m.applyMeta(r)
	case Intent:
		if _, dup := m.pending[r.ID]; dup {
			return fmt.Errorf("apply intent: operation %d is already pending", r.ID)
		}
		m.pending[r.ID] = r.Op
		m.nextID = max(m.nextID, r.ID)
		m.last = r.Gen
	case Done:
		m.applyDone(r)
	case State:
		m.applyState(r)
	default:
		return fmt.Errorf("apply record: unknown type %T", r)
	}
	return nil
}

func (m *ZoneMap) applyCheckpoint(gen uint64) {
	m.root = &node{}
	m.base, m.last = gen, gen
	clear(m.pending)
}

// toZones converts a range of zones of 2^from bytes into zones of 2^to
// bytes: outward (every zone touching it) for dirty ranges, inward (only
// zones entirely inside) for clean ones.
func toZones(r ZoneRange, from, to uint8, outward bool) ZoneRange {
	conv := func(z uint64, up bool) uint64 {
		if z == NoEnd {
			return NoEnd
		}
		if from >= to {
			return z << (from - to)
		}
		d := to - from
		if up {
			return (z + 1<<d - 1) >> d
		}
		return z >> d
	}
	if outward {
		return ZoneRange{conv(r.Start, false), conv(r.End, true)}
	}
	return ZoneRange{conv(r.Start, true), conv(r.End, false)}
}

func (m *ZoneMap) applyDirty(r Dirty) {
	m.last = r.Gen
	n := m.materialize(r.Path)
	if n.is(flagGone) {
		// Written while the map says deleted: something is there after all.
		setNew(n)
		touchDir(n.parent)
	}
	if !fromBase(n) {
		m.prune(n)
		return // sent whole
	}
	for _, z := range r.Zones {
		z = toZones(z, r.Shift, m.shift, true)
		n.zones.add(z.Start, z.End)
	}
}

func (m *ZoneMap) applyClean(r Clean) {
	n := m.lookup(r.Path)
	if n == nil || n.is(flagNew|flagGone) {
		return
	}
	for _, z := range r.Zones {
		z = toZones(z, r.Shift, m.shift, false)
		n.zones.remove(z.Start, z.End)
	}
	m.prune(n)
}

func (m *ZoneMap) applyMeta(r Meta) {
	m.last = r.Gen
	n := m.materialize(r.Path)
	if n.is(flagGone) {
		setNew(n)
		touchDir(n.parent)
		return
	}
	if fromBase(n) {
		n.flags |= flagMeta
	} else {
		m.prune(n)
	}
}

func (m *ZoneMap) applyDone(r Done) {
	for _, id := range r.Failed {
		delete(m.pending, id) // nothing happened
	}
	for _, id := range r.Unknown {
		if op, ok := m.pending[id]; ok {
			delete(m.pending, id)
			for _, p := range op.paths() {
				m.applyUnknown(p)
			}
		}
	}
	for _, id := range r.Applied {
		op, ok := m.pending[id]
		if !ok {
			continue // begun before a checkpoint: already part of the base
		}
		delete(m.pending, id)
		m.applyOp(op)
	}
}

func (m *ZoneMap) applyOp(op Op) {
	switch op.Kind {
	case OpCreate:
		n := m.materialize(op.Path)
		setNew(n)
		touchDir(n.parent)
	case OpDelete:
		m.applyDelete(op.Path)
	case OpRename:
		m.applyRename(op.Path, op.To)
	case OpExchange:
		m.applyExchange(op.Path, op.To)
	}
}

// applyUnknown: the object at path may be anything (an operation on it may
// or may not have happened).
func (m *ZoneMap) applyUnknown(path string) {
	n := m.materialize(path)
	setNew(n)
	touchDir(n.parent)
}

func (m *ZoneMap) applyDelete(path string) {
	n := m.materialize(path)
	p := n.parent
	touchDir(p)
	if _, ok := effOrigin(p); !ok {
		// Under a new directory no base object can hide behind the name.
		delete(p.kids, n.name)
		m.prune(p)
		return
	}
	setGone(n)
}

// inheritedOrigin is the base path a child named name of p would hold.
func inheritedOrigin(p *node, name string) (string, bool) {
	o, ok := effOrigin(p)
	if !ok {
		return "", false
	}
	return joinPath(o, name), true
}

// place attaches n under p as name (replacing what was there) and, when it
// derives from the base, gives it the explicit origin eff unless its
// position implies it.
func (m *ZoneMap) place(n, p *node, name string, eff string, derived bool) {
	if p.kids == nil {
		p.kids = map[string]*node{}
	}
	p.kids[name] = n
	n.parent, n.name = p, name
	n.origin = nil
	if derived {
		if inh, ok := inheritedOrigin(p, name); !ok || inh != eff {
			n.origin = &eff
		}
	} else if !n.is(flagNew) {
		// It was new by inheritance (inside a new directory); away from it,
		// it must say so itself. Its descendants stay: some may be base
		// objects moved in.
		n.flags = flagNew
		n.zones.reset()
	}
	touchDir(p)
}

func (m *ZoneMap) applyRename(from, to string) {
	a := m.materialize(from)
	if a.is(flagGone) {
		// The map says nothing is there; the operation says otherwise.
		m.applyUnknown(to)
		return
	}
	eff, fromBase := effOrigin(a)
	pa, name := a.parent, a.name
	delete(pa.kids, name)
	touchDir(pa)
	if _, ok := effOrigin(pa); ok {
		pa.kids[name] = &node{parent: pa, name: name, flags: flagGone}
	}
	b := m.materialize(to)
	m.place(a, b.parent, b.name, eff, fromBase)
	m.prune(pa)
	m.prune(a)
}

func (m *ZoneMap) applyExchange(x, y string) {
	a, b := m.materialize(x), m.materialize(y)
	if a.is(flagGone) || b.is(flagGone) {
		m.applyUnknown(x)
		m.applyUnknown(y)
		return
	}
	effA, baseA := effOrigin(a)
	effB, baseB := effOrigin(b)
	pa, na, pb, nb := a.parent, a.name, b.parent, b.name
	m.place(a, pb, nb, effA, baseA)
	m.place(b, pa, na, effB, baseB)
	m.prune(a)
	m.prune(b)
}

func (m *ZoneMap) applyState(r State) {
	n := m.materialize(r.Path)
	n.flags = 0
	if r.New {
		n.flags |= flagNew
	}
	if r.Gone {
		n.flags |= flagGone
	}
	if r.Meta {
		n.flags |= flagMeta
	}
	n.origin = nil
	if r.HasOrigin {
		o := r.Origin
		n.origin = &o
	}
	m.prune(n)
}

// ResolvePending settles every structural operation in flight as possibly
// performed: the paths it names become New (sent whole, replaced on a
// target). It returns the Done record saying so (Unknown lists the ids;
// nil when nothing was pending), which a restarted writer must log.
func (m *ZoneMap) ResolvePending() Done {
	var rec Done
	for id := range m.pending {
		rec.Unknown = append(rec.Unknown, id)
	}
	slices.Sort(rec.Unknown)
	m.applyDone(rec)
	return rec
}

// Clone returns a deep copy.
func (m *ZoneMap) Clone() *ZoneMap {
	c := *m
	c.pending = m.Pending()
	c.root = cloneNode(m.root, nil)
	return &c
}

func cloneNode(n, parent *node) *node {
	c := &node{parent: parent, name: n.name, flags: n.flags, zones: n.zones.clone()}
	if n.origin != nil {
		o := *n.origin
		c.origin = &o
	}
	if len(n.kids) > 0 {
		c.kids = make(map[string]*node, len(n.kids))
		for k, v := range n.kids {
			c.kids[k] = cloneNode(v, c)
		}
	}
	return c
}

// ---- reading ----

// Entry is what the map says about one path.
type Entry struct {
	Path   string
	New    bool   // does not derive from the base: send whole
	Gone   bool   // nothing here
	Meta   bool   // metadata changed
	Origin string // base path of the object here, when renamed
	Moved  bool   // Origin is set
	Zones  []ZoneRange
}

// Entries lists the paths the map says something about, parents before
// children, siblings by name.
func (m *ZoneMap) Entries() []Entry {
	var out []Entry
	m.walk(func(n *node, path string) {
		if n.implicit() && n.parent != nil {
			return
		}
		e := Entry{Path: path, New: n.is(flagNew), Gone: n.is(flagGone), Meta: n.is(flagMeta), Zones: n.zones.ranges()}
		if n.origin != nil {
			e.Origin, e.Moved = *n.origin, true
		}
		if n.parent == nil && !e.Meta {
			return
		}
		out = append(out, e)
	})
	return out
}

// walk visits every node in preorder, siblings by name.
func (m *ZoneMap) walk(fn func(n *node, path string)) {
	var rec func(n *node, path string)
	rec = func(n *node, path string) {
		fn(n, path)
		for _, k := range n.sortedKids() {
			rec(k, joinPath(path, k.name))
		}
	}
	rec(m.root, "")
}

// Stats summarises the map for `halo diff` and status.
type Stats struct {
	Paths   int    // paths with any change
	New     int    // created or unknown: sent whole
	Gone    int    // deleted or moved away
	Moved   int    // renamed (or moved back)
	Meta    int    // metadata changed
	Tails   int    // changed from a zone to their end (truncated, extended)
	Zones   uint64 // dirty zones below the tails
	Bytes   int64  // Zones × zone size (whole files and tails need their size: see Plan)
	Pending int    // structural operations in flight
	Nodes   int    // overlay nodes held (memory indicator)
}

// Stats walks the map.
func (m *ZoneMap) Stats() Stats {
	var s Stats
	m.walk(func(n *node, _ string) {
		s.Nodes++
		if n.implicit() {
			return
		}
		s.Paths++
		switch {
		case n.is(flagNew):
			s.New++
		case n.is(flagGone):
			s.Gone++
		}
		if n.is(flagMeta) {
			s.Meta++
		}
		if n.origin != nil {
			s.Moved++
		}
		if n.zones.tail != 0 {
			s.Tails++
		}
		s.Zones += n.zones.finiteZones()
	})
	s.Bytes = int64(min(s.Zones, uint64(maxOffset)>>m.shift) << m.shift)
	s.Pending = len(m.pending)
	return s
}

// description is what the map says lies at a path.
type description struct {
	gone     bool   // nothing
	fromBase bool   // base object origin (otherwise: new or unknown)
	origin   string // its base path
	zones    []ZoneRange
	meta     bool
}

// describe resolves a path through the overlay, implied positions
// included.
func (m *ZoneMap) describe(path string) description {
	d := description{fromBase: true}
	n := m.root
	for rest := path; rest != ""; {
		if d.gone {
			return d // nothing exists below nothing
		}
		c, r, _ := strings.Cut(rest, "/")
		rest = r
		var k *node
		if n != nil {
			k = n.kids[c]
		}
		switch {
		case k != nil && k.is(flagGone):
			d = description{gone: true}
		case k != nil && k.is(flagNew):
			d.fromBase, d.origin = false, ""
		case k != nil && k.origin != nil:
			d.fromBase, d.origin = true, *k.origin
		case d.fromBase:
			d.origin = joinPath(d.origin, c)
		}
		n = k
	}
	if n != nil && !d.gone {
		d.zones, d.meta = n.zones.ranges(), n.is(flagMeta)
	}
	return d
}
