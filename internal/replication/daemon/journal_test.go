package daemon

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/halo-ha/halo/core/journal"
)

func markWrite(t *testing.T, j *Journal, path string, off, n int64) {
	t.Helper()
	tk, err := j.Locked(func(m *journal.ZoneMap) ([]journal.Record, error) {
		r, err := m.MarkWrite(path, off, n)
		return []journal.Record{r}, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Wait(tk); err != nil {
		t.Fatal(err)
	}
}

func TestJournalSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.log")
	j, err := OpenJournal(path, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Checkpoint(7); err != nil {
		t.Fatal(err)
	}
	markWrite(t, j, "a", 0, 10)
	markWrite(t, j, "b/c", 1<<20, 100)
	// An intent without its Done: replay must settle it as possibly done.
	if _, err := j.Locked(func(m *journal.ZoneMap) ([]journal.Record, error) {
		in, err := m.Begin(journal.Op{Kind: journal.OpRename, Path: "a", To: "d"})
		return []journal.Record{in}, err
	}); err != nil {
		t.Fatal(err)
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	// No Close: a crash.
	j2, err := OpenJournal(path, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if !j2.Trusted() {
		t.Fatalf("journal not trusted after a clean crash: %v", j2.Info().Damage)
	}
	m := j2.Snapshot()
	if m.Base() != 7 {
		t.Errorf("base %d, want 7", m.Base())
	}
	got := map[string]journal.Entry{}
	for _, e := range m.Entries() {
		got[e.Path] = e
	}
	if e := got["b/c"]; len(e.Zones) != 1 || e.Zones[0].Start != 16 {
		t.Errorf("b/c zones %+v, want zone 16", e.Zones)
	}
	if !got["a"].New || !got["d"].New {
		t.Errorf("a rename in flight must leave both names New: %+v", got)
	}
	if len(m.Pending()) != 0 {
		t.Errorf("pending after replay: %v", m.Pending())
	}
}

func TestJournalCutsTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.log")
	j, err := OpenJournal(path, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	markWrite(t, j, "x", 0, 1)
	j.Close()
	fi, _ := os.Stat(path)
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{1, 2, 3}) // a record torn by a crash
	f.Close()
	j2, err := OpenJournal(path, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if !j2.Trusted() {
		t.Fatal("a torn tail must not make the journal untrusted")
	}
	markWrite(t, j2, "y", 0, 1)
	j2.Close()
	fi2, _ := os.Stat(path)
	if fi2.Size() <= fi.Size() {
		t.Fatalf("size %d after appending to a cut file of %d", fi2.Size(), fi.Size())
	}
	j3, err := OpenJournal(path, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer j3.Close()
	if n := len(j3.Snapshot().Entries()); n != 2 || j3.Info().Damage != nil {
		t.Fatalf("entries %d (want 2), damage %v", n, j3.Info().Damage)
	}
}

func TestJournalGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.log")
	j, err := OpenJournal(path, 4096)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				markWrite(t, j, "f", int64(g*200+i)*4096, 1)
			}
		})
	}
	wg.Wait()
	j.Close()
	j2, err := OpenJournal(path, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	st, _ := j2.Stats()
	if st.Zones != 1600 {
		t.Fatalf("zones %d after replay, want 1600", st.Zones)
	}
}

func TestJournalCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.log")
	j, err := OpenJournal(path, 4096)
	if err != nil {
		t.Fatal(err)
	}
	j.compactMin, j.compactAt = 16<<10, 16<<10
	// Marks and clears of the same zones: the log grows, the map does not.
	for i := range 5000 {
		markWrite(t, j, "f", int64(i%10)*4096, 1)
		z := journal.ZoneRange{Start: uint64(i % 10), End: uint64(i%10) + 1}
		if _, err := j.Locked(func(m *journal.ZoneMap) ([]journal.Record, error) {
			r, err := m.Clear("f", z)
			return []journal.Record{r}, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	markWrite(t, j, "g", 0, 1)
	j.Close()
	fi, _ := os.Stat(path)
	if fi.Size() > 64<<10 {
		t.Fatalf("journal of %d bytes was not compacted", fi.Size())
	}
	j2, err := OpenJournal(path, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	es := j2.Snapshot().Entries()
	if len(es) != 1 || es[0].Path != "g" {
		t.Fatalf("entries after compaction %+v, want g only", es)
	}
}
