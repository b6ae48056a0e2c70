package resync

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/core/journal"
)

// journaledTree changes a tree the way the replication daemon does on a
// node: every change is marked in the node's zone map (and in the
// tracking maps a resync started) before it reaches the disk. Its
// operations hold a read lock; Freeze takes the write lock, so a frozen
// tree has nothing in flight.
type journaledTree struct {
	tb   testing.TB
	root string

	gate    sync.RWMutex // operations (read) against Freeze and Track (write)
	mu      sync.Mutex   // the maps
	m       *journal.ZoneMap
	track   []*journal.ZoneMap
	stopped []*journal.ZoneMap // ended by a newer Track, not yet Stopped
	epoch   uint64
	// mirror: once live (set while frozen), every change is also made
	// there, as the live replication stream would.
	mirror string
	live   bool
}

// both runs a change on the tree, and on the mirror when live; then the
// mirror gets the times the change gave the paths and their directories
// (as the live stream's operations carry them).
func (j *journaledTree) both(fn func(root string) error, paths ...string) error {
	if err := fn(j.root); err != nil {
		return err
	}
	if !j.live {
		return nil
	}
	if err := fn(j.mirror); err != nil {
		return err
	}
	for _, p := range paths {
		for _, q := range []string{p, parentOf(p)} {
			var st unix.Stat_t
			if unix.Lstat(at(j.root, q), &st) != nil {
				continue
			}
			ts := []unix.Timespec{st.Atim, st.Mtim}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, at(j.mirror, q), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
		}
	}
	return nil
}

func newJournaledTree(tb testing.TB, root string, base uint64) *journaledTree {
	m, err := journal.NewZoneMap(journal.DefaultZoneSize)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := m.Checkpoint(base); err != nil {
		tb.Fatal(err)
	}
	m.SetGeneration(base + 1)
	return &journaledTree{tb: tb, root: root, m: m, epoch: 1 << 40}
}

// maps is the main map and the tracking maps: each is marked on its own
// (a map that already holds a zone dirty returns no record, yet a
// tracking map started since must still learn of the write).
func (j *journaledTree) maps() []*journal.ZoneMap {
	return append([]*journal.ZoneMap{j.m}, j.track...)
}

func (j *journaledTree) mark(fn func(m *journal.ZoneMap) (journal.Record, error)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, m := range j.maps() {
		if _, err := fn(m); err != nil {
			j.tb.Errorf("mark: %v", err)
		}
	}
}

// structural journals a create, delete or rename around do.
func (j *journaledTree) structural(o journal.Op, do func() error) error {
	j.mu.Lock()
	maps := j.maps()
	ids := make([]uint64, len(maps))
	for i, m := range maps {
		in, err := m.Begin(o)
		if err != nil {
			j.mu.Unlock()
			return err
		}
		ids[i] = in.ID
	}
	j.mu.Unlock()
	derr := do()
	j.mu.Lock()
	defer j.mu.Unlock()
	for i, m := range maps {
		if _, err := m.Finish(ids[i], derr == nil); err != nil {
			return err
		}
	}
	return derr
}

func at(root, rel string) string { return filepath.Join(root, filepath.FromSlash(rel)) }

// WriteAt writes data at off of an existing file.
func (j *journaledTree) WriteAt(rel string, off int64, data []byte) error {
	j.gate.RLock()
	defer j.gate.RUnlock()
	j.mark(func(m *journal.ZoneMap) (journal.Record, error) { return m.MarkWrite(rel, off, int64(len(data))) })
	return j.both(func(root string) error {
		f, err := os.OpenFile(at(root, rel), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt(data, off)
		return err
	}, rel)
}

// Truncate sets a file's size.
func (j *journaledTree) Truncate(rel string, size int64) error {
	j.gate.RLock()
	defer j.gate.RUnlock()
	j.mark(func(m *journal.ZoneMap) (journal.Record, error) { return m.MarkTruncate(rel, size) })
	return j.both(func(root string) error { return os.Truncate(at(root, rel), size) }, rel)
}

// Create makes a new file holding data.
func (j *journaledTree) Create(rel string, data []byte) error {
	j.gate.RLock()
	defer j.gate.RUnlock()
	trace("writer: create %s", rel)
	return j.structural(journal.Op{Kind: journal.OpCreate, Path: rel}, func() error {
		return j.both(func(root string) error { return os.WriteFile(at(root, rel), data, 0o644) }, rel)
	})
}

// Mkdir makes a directory.
func (j *journaledTree) Mkdir(rel string) error {
	j.gate.RLock()
	defer j.gate.RUnlock()
	return j.structural(journal.Op{Kind: journal.OpCreate, Path: rel}, func() error {
		return j.both(func(root string) error { return os.Mkdir(at(root, rel), 0o755) }, rel)
	})
}

// Remove deletes a file or an empty directory.
func (j *journaledTree) Remove(rel string) error {
	j.gate.RLock()
	defer j.gate.RUnlock()
	trace("writer: remove %s", rel)
	return j.structural(journal.Op{Kind: journal.OpDelete, Path: rel}, func() error {
		return j.both(func(root string) error { return os.Remove(at(root, rel)) }, rel)
	})
}

// Rename renames (replacing the destination).
func (j *journaledTree) Rename(from, to string) error {
	j.gate.RLock()
	defer j.gate.RUnlock()
	trace("writer: rename %s %s", from, to)
	return j.structural(journal.Op{Kind: journal.OpRename, Path: from, To: to}, func() error {
		return j.both(func(root string) error { return os.Rename(at(root, from), at(root, to)) }, from, to)
	})
}

// Chmod changes a mode.
func (j *journaledTree) Chmod(rel string, mode os.FileMode) error {
	j.gate.RLock()
	defer j.gate.RUnlock()
	j.mark(func(m *journal.ZoneMap) (journal.Record, error) { return m.MarkMeta(rel) })
	return j.both(func(root string) error { return os.Chmod(at(root, rel), mode) }, rel)
}

// Snapshot returns a copy of the main map.
func (j *journaledTree) Snapshot() *journal.ZoneMap {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.m.Clone()
}

// ---- resync.Changes ----

func (j *journaledTree) Track() (Tracking, error) {
	j.gate.Lock() // nothing in flight: the new map misses nothing
	defer j.gate.Unlock()
	trace("writer: track")
	j.mu.Lock()
	defer j.mu.Unlock()
	m, err := journal.NewZoneMap(j.m.ZoneSize())
	if err != nil {
		return nil, err
	}
	j.epoch++
	if _, err := m.Checkpoint(j.epoch); err != nil {
		return nil, err
	}
	// The tracking in progress ends now: every change goes to one map.
	j.stopped = append(j.stopped, j.track...)
	j.track = []*journal.ZoneMap{m}
	return &jtracking{j, m}, nil
}

// goLive is the source's Synced: called while frozen.
func (j *journaledTree) goLive(context.Context) error {
	j.live = true
	return nil
}

func (j *journaledTree) Freeze(ctx context.Context) (func(), error) {
	j.gate.Lock()
	var once sync.Once
	return func() { once.Do(j.gate.Unlock) }, nil
}

type jtracking struct {
	j *journaledTree
	m *journal.ZoneMap
}

func (t *jtracking) Stop() (*journal.ZoneMap, error) {
	t.j.mu.Lock()
	defer t.j.mu.Unlock()
	for _, list := range []*[]*journal.ZoneMap{&t.j.track, &t.j.stopped} {
		for i, m := range *list {
			if m == t.m {
				*list = append((*list)[:i], (*list)[i+1:]...)
				return m.Clone(), nil
			}
		}
	}
	return nil, fmt.Errorf("tracking stopped twice")
}

// sameBase builds two identical trees (the common base): a few files of
// several zones, directories, a symlink.
func sameBase(tb testing.TB, files int, size int) (src, tgt string) {
	src, tgt = tb.TempDir(), tb.TempDir()
	for _, root := range []string{src, tgt} {
		for i := range files {
			write(tb, root, fmt.Sprintf("d%d/f%d", i%3, i), pattern(size, byte(i)))
		}
		mkdir(tb, root, "empty", 0o755)
		symlink(tb, root, "d0/f0", "link")
	}
	r, _ := fullResync(tb, src, tgt, 1, Options{}) // same times everywhere
	r.check(tb)
	return src, tgt
}

// Link makes rel another name of the existing file old; the journal knows
// it as the creation of rel (as the daemon journals a link).
func (j *journaledTree) Link(old, rel string) error {
	j.gate.RLock()
	defer j.gate.RUnlock()
	trace("writer: link %s %s", old, rel)
	return j.structural(journal.Op{Kind: journal.OpCreate, Path: rel}, func() error {
		return j.both(func(root string) error { return os.Link(at(root, old), at(root, rel)) }, old, rel)
	})
}
