package daemon

import (
	"errors"
	"fmt"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
	"io"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/core/journal"
)

// Journal is one replicated directory's journal on disk: core/journal's
// zone map, with every record appended to a file and made durable before
// the change it announces reaches the disk.
//
// Durability is group-committed: the first caller that needs a record on
// disk writes everything appended so far and fdatasyncs once; callers that
// arrive meanwhile wait for that flush or the next. In steady state a
// write to zones already dirty appends nothing and waits for nothing.
//
// The map is not safe for concurrent use; Journal serialises every access
// with one lock, under which the capture layer also keeps its name table
// consistent with the map (Locked).
type Journal struct {
	path string

	mu   sync.Mutex
	cond *sync.Cond
	m    *journal.ZoneMap
	f    *os.File
	// size is what the file holds on disk; buf what was appended since.
	size int64
	buf  []byte
	// appended counts records appended, synced those known durable.
	appended, synced uint64
	flushing         bool
	err              error // sticky: a journal that failed to write is unusable
	trusted          bool
	info             journal.LogInfo
	// compactAt: the file is rewritten as a snapshot past this size, never
	// below compactMin.
	compactAt, compactMin int64
}

// minCompact is the smallest file size worth compacting.
const minCompact = 4 << 20

// ErrJournalBroken wraps a write or sync failure: the journal can no
// longer promise anything and the caller must fail the operation.
var ErrJournalBroken = errors.New("journal broken")

// JournalFile is the journal of replicated directory dir (its index in
// the module's replication block).
func JournalFile(dataDir, module string, dir int) string {
	if dir == 0 {
		return ctl.JournalPath(dataDir, module)
	}
	return filepath.Join(dataDir, module, fmt.Sprintf("journal.%d.log", dir))
}

// OpenJournal replays the journal at path (creating it if missing) and
// prepares it for appending: the torn or damaged tail is cut, operations
// found in flight are settled as possibly performed. A damaged middle
// leaves the journal untrusted (Trusted is false): only a full resync is
// safe until the next checkpoint.
func OpenJournal(path string, zoneSize int64) (*Journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read journal %s: %w", path, err)
	}
	m, info, err := journal.ReplayLog(data, zoneSize)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("replay journal %s: %w", path, err)
	}
	j := &Journal{path: path, m: m, f: f, info: info, trusted: info.Trusted(), size: int64(info.Valid)}
	j.cond = sync.NewCond(&j.mu)
	if info.Valid < len(data) {
		if err := f.Truncate(int64(info.Valid)); err != nil {
			f.Close()
			return nil, fmt.Errorf("cut damaged journal tail of %s: %w", path, err)
		}
	}
	if _, err := f.Seek(int64(info.Valid), io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("seek journal %s: %w", path, err)
	}
	if info.Resolve != nil {
		if err := j.appendLocked(info.Resolve); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := j.flush(j.appended); err != nil {
		f.Close()
		return nil, err
	}
	j.compactMin = minCompact
	j.compactAt = max(j.compactMin, 2*j.size)
	return j, nil
}

// Info describes the replay done at open.
func (j *Journal) Info() journal.LogInfo { return j.info }

// Trusted reports whether the map describes every change since its base.
func (j *Journal) Trusted() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.trusted
}

// Close writes what is pending and closes the file.
func (j *Journal) Close() error {
	j.mu.Lock()
	n := j.appended
	j.mu.Unlock()
	err := j.flush(n)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return err
	}
	cerr := j.f.Close()
	j.f = nil
	return errors.Join(err, cerr)
}

// Locked runs fn with the map under the journal's lock. Records fn
// returns in its result are appended (in order); the returned ticket is
// what Wait needs to know them durable. fn must not block.
func (j *Journal) Locked(fn func(m *journal.ZoneMap) ([]journal.Record, error)) (Ticket, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return 0, j.err
	}
	recs, err := fn(j.m)
	for _, r := range recs {
		if r == nil {
			continue
		}
		if aerr := j.appendLocked(r); aerr != nil {
			return 0, aerr
		}
	}
	// Even when fn appended nothing, an earlier record may cover the
	// change (a nil record from a Mark method): the caller waits for
	// everything appended so far.
	return Ticket(j.appended), err
}

// Ticket identifies the records appended up to a point.
type Ticket uint64

// Wait returns once every record up to t is durable.
func (j *Journal) Wait(t Ticket) error { return j.flush(uint64(t)) }

func (j *Journal) appendLocked(r journal.Record) error {
	b, err := journal.Append(j.buf, r)
	if err != nil {
		// A record the map produced and the encoder refuses is a bug;
		// stop trusting the journal rather than lose the change.
		j.trusted = false
		return fmt.Errorf("encode journal record %T: %w", r, err)
	}
	j.buf = b
	j.appended++
	return nil
}

// flush makes the records up to n durable, writing and syncing once for
// every caller waiting at that moment.
func (j *Journal) flush(n uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.synced < n && j.err == nil {
		if j.flushing {
			j.cond.Wait()
			continue
		}
		j.flushing = true
		buf, upto := j.buf, j.appended
		j.buf = nil
		j.mu.Unlock()
		_, err := j.f.Write(buf)
		if err == nil {
			err = unix.Fdatasync(int(j.f.Fd()))
		}
		j.mu.Lock()
		j.flushing = false
		if err != nil {
			j.err = fmt.Errorf("%w: append to %s: %v", ErrJournalBroken, j.path, err)
		} else {
			j.synced = upto
			j.size += int64(len(buf))
		}
		j.cond.Broadcast()
	}
	if j.err != nil {
		return j.err
	}
	if j.size >= j.compactAt && !j.flushing && len(j.buf) == 0 {
		j.compactLocked()
	}
	return nil
}

// Append appends records (a Clean, a Done) without waiting for them.
func (j *Journal) Append(recs ...journal.Record) error {
	_, err := j.Locked(func(*journal.ZoneMap) ([]journal.Record, error) { return recs, nil })
	return err
}

// Sync makes everything appended durable.
func (j *Journal) Sync() error {
	j.mu.Lock()
	n := j.appended
	j.mu.Unlock()
	return j.flush(n)
}

// Checkpoint records that both nodes hold identical trees at generation
// gen, durably; refused while structural operations are in flight.
func (j *Journal) Checkpoint(gen uint64) error {
	t, err := j.Locked(func(m *journal.ZoneMap) ([]journal.Record, error) {
		r, err := m.Checkpoint(gen)
		if err != nil {
			return nil, err
		}
		return []journal.Record{r}, nil
	})
	if err != nil {
		return err
	}
	if err := j.Wait(t); err != nil {
		return err
	}
	j.mu.Lock()
	j.trusted = true
	j.mu.Unlock()
	return nil
}

// SetGeneration sets the generation new records carry.
func (j *Journal) SetGeneration(gen uint64) {
	j.mu.Lock()
	j.m.SetGeneration(gen)
	j.mu.Unlock()
}

// ZoneSize is the map's zone size.
func (j *Journal) ZoneSize() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.m.ZoneSize()
}

// Snapshot returns a copy of the map (for a resync plan or a diff).
func (j *Journal) Snapshot() *journal.ZoneMap {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.m.Clone()
}

// Stats summarises the map.
func (j *Journal) Stats() (journal.Stats, int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.m.Stats(), j.size + int64(len(j.buf))
}

// compactLocked rewrites the file as a snapshot of the map (same meaning,
// no history): written beside it, synced, renamed over it, directory
// synced. A failure leaves the old file in use.
func (j *Journal) compactLocked() {
	var data []byte
	for _, r := range journal.Snapshot(j.m) {
		b, err := journal.Append(data, r)
		if err != nil {
			return
		}
		data = b
	}
	tmp := j.path + ".compact"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return
	}
	if err := f.Sync(); err != nil {
		return
	}
	if err := os.Rename(tmp, j.path); err != nil {
		return
	}
	if d, err := os.Open(filepath.Dir(j.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	ok = true
	j.f.Close()
	j.f = f
	j.size = int64(len(data))
	j.compactAt = max(j.compactMin, 4*j.size)
}
