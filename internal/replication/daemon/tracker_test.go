package daemon

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/halo-ha/halo/internal/replication/op"
)

func newTestTracker(t *testing.T) *tracker {
	t.Helper()
	j, err := OpenJournal(filepath.Join(t.TempDir(), "journal.log"), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return newTracker([]*Journal{j})
}

// A freeze waits for the operation in flight, lets that operation's later
// marks through (a rename plan marks every step before finishing any),
// and holds new operations until thawed.
func TestFreezeLetsOperationsInFlightFinish(t *testing.T) {
	tr := newTestTracker(t)
	jn := tr.journalFor(0)
	t1, err := jn.Mark(op.Op{Kind: op.Create, Path: "a"})
	if err != nil {
		t.Fatal(err)
	}
	frozen := make(chan error, 1)
	go func() { frozen <- tr.freeze(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-frozen:
		t.Fatal("freeze returned with an operation in flight")
	default:
	}
	// The operation's next step (marked nested) is not held.
	t2, err := jn.MarkNested(op.Op{Kind: op.Write, Path: "a", Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	jn.Done(t2, true)
	jn.Done(t1, true)
	if err := <-frozen; err != nil {
		t.Fatal(err)
	}
	// A new operation waits for the thaw.
	marked := make(chan struct{})
	go func() {
		tk, _ := jn.Mark(op.Op{Kind: op.Write, Path: "a", Data: []byte("y")})
		jn.Done(tk, true)
		close(marked)
	}()
	select {
	case <-marked:
		t.Fatal("a new operation was marked during the freeze")
	case <-time.After(100 * time.Millisecond):
	}
	tr.thaw()
	select {
	case <-marked:
	case <-time.After(5 * time.Second):
		t.Fatal("the operation held by the freeze did not go on after the thaw")
	}
}

// Tracking records the changes of operations in flight when it starts and
// of those after; a checkpoint marks the operations in flight again.
func TestTrackingAndCheckpointKeepInFlight(t *testing.T) {
	tr := newTestTracker(t)
	jn := tr.journalFor(0)
	tk, err := jn.Mark(op.Op{Kind: op.Write, Path: "f", Off: 0, Data: make([]byte, 10)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := tr.track(0)
	if err != nil {
		t.Fatal(err)
	}
	if es := m.Entries(); len(es) != 1 || es[0].Path != "f" {
		t.Fatalf("tracking map misses the write in flight: %+v", es)
	}
	if err := tr.checkpoint(0, 42); err != nil {
		t.Fatal(err)
	}
	snap := tr.journals[0].Snapshot()
	if snap.Base() != 42 || len(snap.Entries()) != 1 {
		t.Fatalf("after the checkpoint: base %d, entries %+v (the write in flight must stay)", snap.Base(), snap.Entries())
	}
	jn.Done(tk, true)
	if err := tr.checkpoint(0, 42); err != nil {
		t.Fatal(err)
	}
	if es := tr.journals[0].Snapshot().Entries(); len(es) != 0 {
		t.Fatalf("a checkpoint with nothing in flight left %+v", es)
	}
	tr.stopTracking(0, m)
}
