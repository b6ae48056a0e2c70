package daemon

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/capture"
	"github.com/halo-ha/halo/internal/replication/op"
)

// tracker knows the operations between their journal mark and their Done
// on every replicated directory of the node (the application's on a
// source, the applier's on a target). It serves three needs:
//
//   - a checkpoint empties a journal's map, so the zones of operations
//     still in flight are marked again right after it (core/journal's
//     rule), and so are those marked while the checkpoint's sync ran;
//   - a resync source tracks the changes made while a pass runs (Track)
//     and freezes the application's modifying operations for the final
//     pass (Freeze waits for those in flight; new ones wait for Thaw);
//   - status shows how many operations are in flight.
type tracker struct {
	journals []*Journal

	mu   sync.Mutex
	cond *sync.Cond
	// frozen counts the freezes in force (one per resync session in its
	// final pass).
	frozen   int
	next     uint64
	inflight map[uint64]*marked
	// tracking[dir], when not nil, receives every mark on dir.
	tracking []*journal.ZoneMap
	// recent collects the operations marked since a checkpoint began.
	recent []*marked
}

// marked is one operation between its mark and its Done.
type marked struct {
	dir     int
	o       op.Op // Data dropped: only its length matters
	n       int64 // Write: length
	intent  uint64
	trackID uint64           // intent in the tracking map
	track   *journal.ZoneMap // the tracking map it was marked in
}

func newTracker(js []*Journal) *tracker {
	t := &tracker{journals: js, inflight: map[uint64]*marked{}, tracking: make([]*journal.ZoneMap, len(js))}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// journalFor returns the capture.Journal of directory dir.
func (t *tracker) journalFor(dir int) OpJournal { return OpJournal{t: t, dir: dir} }

// OpJournal journals replicated operations of one directory: the capture
// layer's Journal on a source, and the applier's on a target (each node
// journals the changes made to its own tree).
type OpJournal struct {
	t   *tracker
	dir int
}

var (
	_ capture.Journal      = OpJournal{}
	_ capture.NestedMarker = OpJournal{}
)

// mapPath converts an operation path ("." is the directory itself) to the
// map's ("" is the directory itself).
func mapPath(p string) string {
	if p == "." {
		return ""
	}
	return p
}

// markOp applies o's mark to m and returns the record and, for a
// structural operation, its intent ID.
func markOp(m *journal.ZoneMap, o *op.Op, n int64) (journal.Record, uint64, error) {
	p := mapPath(o.Path)
	var r journal.Record
	var err error
	var id uint64
	switch o.Kind {
	case op.Write:
		r, err = m.MarkWrite(p, o.Off, n)
	case op.Truncate:
		r, err = m.MarkTruncate(p, o.Size)
	case op.Fallocate:
		// Allocating, punching or zeroing a range: its zones may read
		// differently afterwards, and the size may grow (covered by the
		// range's zones).
		r, err = m.MarkWrite(p, o.Off, o.Size)
	case op.Create, op.Mkdir, op.Mknod, op.Symlink, op.Link:
		r, id, err = begin(m, journal.Op{Kind: journal.OpCreate, Path: p})
	case op.Unlink, op.Rmdir:
		r, id, err = begin(m, journal.Op{Kind: journal.OpDelete, Path: p})
	case op.Rename:
		k := journal.OpRename
		if o.Flags&unix.RENAME_EXCHANGE != 0 {
			k = journal.OpExchange
		}
		r, id, err = begin(m, journal.Op{Kind: k, Path: p, To: mapPath(o.Target)})
	case op.Chmod, op.Chown, op.Utimes, op.Setxattr, op.Removexattr:
		r, err = m.MarkMeta(p)
	case op.Fsync:
		return nil, 0, nil
	default:
		return nil, 0, fmt.Errorf("unknown operation %s", o.Kind)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("journal %s of %q: %w", o.Kind, o.Path, err)
	}
	return r, id, nil
}

func begin(m *journal.ZoneMap, o journal.Op) (journal.Record, uint64, error) {
	in, err := m.Begin(o)
	if err != nil {
		return nil, 0, err
	}
	return in, in.ID, nil
}

// Mark records o before it changes the tree and returns once the record
// is durable. While the tracker is frozen (the final pass of a resync),
// it waits.
func (j OpJournal) Mark(o op.Op) (capture.Ticket, error) { return j.mark(o, false) }

// MarkNested is Mark for a later step of an operation in flight
// (capture.NestedMarker): the capture layer marks every step of a
// rename's plan (and what follows a creation) before it finishes any, so
// holding those back would deadlock the freeze that waits for them.
func (j OpJournal) MarkNested(o op.Op) (capture.Ticket, error) { return j.mark(o, true) }

func (j OpJournal) mark(o op.Op, nested bool) (capture.Ticket, error) {
	t := j.t
	e := &marked{dir: j.dir, o: o, n: int64(len(o.Data))}
	e.o.Data = nil
	t.mu.Lock()
	for t.frozen > 0 && !nested {
		t.cond.Wait()
	}
	t.next++
	ticket := t.next
	t.inflight[ticket] = e
	if t.recent != nil {
		t.recent = append(t.recent, e)
	}
	if tm := t.tracking[j.dir]; tm != nil {
		e.track = tm
		// The tracking map only needs to know; its records are not logged.
		_, e.trackID, _ = markOp(tm, &e.o, e.n)
	}
	t.mu.Unlock()

	jt, err := t.journals[j.dir].Locked(func(m *journal.ZoneMap) ([]journal.Record, error) {
		r, id, err := markOp(m, &e.o, e.n)
		e.intent = id
		return []journal.Record{r}, err
	})
	if err == nil {
		err = t.journals[j.dir].Wait(jt)
	}
	if err != nil {
		t.finish(ticket, false)
		return 0, err
	}
	return capture.Ticket(ticket), nil
}

// Done records a structural operation's outcome (not waited for: a lost
// Done replays as an operation in flight, whose paths are sent whole) and
// ends the operation's flight.
func (j OpJournal) Done(tk capture.Ticket, applied bool) {
	j.t.finish(uint64(tk), applied)
}

func (t *tracker) finish(ticket uint64, applied bool) {
	t.mu.Lock()
	e := t.inflight[ticket]
	delete(t.inflight, ticket)
	if e != nil && e.trackID != 0 && e.track != nil && e.track == t.tracking[e.dir] {
		_, _ = e.track.Finish(e.trackID, applied)
	}
	t.cond.Broadcast()
	t.mu.Unlock()
	if e == nil || e.intent == 0 {
		return
	}
	_, _ = t.journals[e.dir].Locked(func(m *journal.ZoneMap) ([]journal.Record, error) {
		r, err := m.Finish(e.intent, applied)
		if err != nil {
			return nil, err
		}
		return []journal.Record{r}, nil
	})
}

// inFlight counts the operations between mark and Done.
func (t *tracker) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.inflight)
}

// track starts recording every change of directory dir in a fresh map,
// operations in flight included, and returns it; the previous tracking
// map of dir stops receiving changes.
func (t *tracker) track(dir int) (*journal.ZoneMap, error) {
	m, err := journal.NewZoneMap(t.journals[dir].ZoneSize())
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tracking[dir] = m
	for _, e := range t.inflight {
		if e.dir == dir {
			e.track = m
			_, e.trackID, _ = markOp(m, &e.o, e.n)
		}
	}
	return m, nil
}

// stopTracking ends the tracking into m (if it is still dir's).
func (t *tracker) stopTracking(dir int, m *journal.ZoneMap) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tracking[dir] == m {
		t.tracking[dir] = nil
	}
}

// freeze makes new modifying operations wait and returns once those in
// flight are done (or ctx ends: the freeze is then undone).
func (t *tracker) freeze(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.frozen++
	stop := context.AfterFunc(ctx, func() {
		t.mu.Lock()
		t.cond.Broadcast()
		t.mu.Unlock()
	})
	defer stop()
	for len(t.inflight) > 0 {
		if ctx.Err() != nil {
			t.frozen--
			t.cond.Broadcast()
			return ctx.Err()
		}
		t.cond.Wait()
	}
	return nil
}

// thaw undoes one freeze.
func (t *tracker) thaw() {
	t.mu.Lock()
	t.frozen--
	t.cond.Broadcast()
	t.mu.Unlock()
}

// beginCheckpoint starts collecting the operations marked from now on.
func (t *tracker) beginCheckpoint() {
	t.mu.Lock()
	t.recent = []*marked{}
	t.mu.Unlock()
}

// checkpoint empties directory dir's journal at generation gen and marks
// again the operations in flight or marked since beginCheckpoint: the map
// must keep covering what the peer may not have yet. It fails (and
// changes nothing) while a structural operation is in flight.
func (t *tracker) checkpoint(dir int, gen uint64) error {
	t.mu.Lock()
	var again []*marked
	for _, e := range t.recent {
		if e.dir == dir {
			again = append(again, e)
		}
	}
	for _, e := range t.inflight {
		if e.dir == dir {
			again = append(again, e)
		}
	}
	t.mu.Unlock()
	tk, err := t.journals[dir].Locked(func(m *journal.ZoneMap) ([]journal.Record, error) {
		if len(m.Pending()) > 0 {
			return nil, fmt.Errorf("checkpoint: %w", journal.ErrPending)
		}
		c, err := m.Checkpoint(gen)
		if err != nil {
			return nil, err
		}
		recs := []journal.Record{c}
		for _, e := range again {
			if e.intent != 0 {
				continue
			}
			r, _, err := markOp(m, &e.o, e.n)
			if err != nil {
				// A path the map refuses cannot be left clean: the
				// checkpoint is not worth the risk (what was done so far
				// is logged, so the file and the map agree).
				return recs, err
			}
			recs = append(recs, r)
		}
		return recs, nil
	})
	if err != nil {
		return err
	}
	return t.journals[dir].Wait(tk)
}

// endCheckpoint stops collecting.
func (t *tracker) endCheckpoint() {
	t.mu.Lock()
	t.recent = nil
	t.mu.Unlock()
}
