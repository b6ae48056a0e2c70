package postgresql

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// workload is the client: several sessions, each inserting one unique id
// per transaction through the VIP and recording the ids whose COMMIT
// returned. A statement that fails leaves its id in doubt (the COMMIT may
// or may not have happened): the id is never retried, so a duplicate in
// the table can only come from below the client. The session then
// reconnects through the VIP until it reaches a primary again.
type workload struct {
	pc *pgCluster

	next atomic.Int64
	// gate lets the test quiesce the database (before halo verify):
	// every transaction runs under a read lock.
	gate sync.RWMutex

	mu        sync.Mutex
	acked     map[int64]bool
	attempted map[int64]bool
	ackTimes  []time.Time // when each COMMIT returned, in order
	failures  int         // statements that failed (ids in doubt)

	stop chan struct{}
	wg   sync.WaitGroup
}

func startWorkload(t *testing.T, pc *pgCluster, sessions int) *workload {
	t.Helper()
	c, err := pc.conn(ctxFor(t, 30*time.Second))
	if err != nil {
		t.Fatalf("connect through the VIP: %v", err)
	}
	// No primary key: a duplicated row must be visible, not refused.
	err = c.exec(ctxFor(t, 30*time.Second), "CREATE TABLE IF NOT EXISTS acks (id bigint NOT NULL, session int NOT NULL, at timestamptz NOT NULL DEFAULT now())")
	c.close()
	if err != nil {
		t.Fatalf("create table: %v", err)
	}
	w := &workload{pc: pc, acked: map[int64]bool{}, attempted: map[int64]bool{}, stop: make(chan struct{})}
	for s := range sessions {
		w.wg.Add(1)
		go w.session(s)
	}
	t.Cleanup(w.halt)
	return w
}

func (w *workload) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

func (w *workload) session(s int) {
	defer w.wg.Done()
	for !w.stopped() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		c, err := w.pc.conn(ctx)
		cancel()
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for !w.stopped() {
			if err := w.insert(c, s); err != nil {
				break
			}
		}
		c.close()
	}
}

// insert commits one id; it returns the statement's error.
func (w *workload) insert(c pgConn, s int) error {
	w.gate.RLock()
	defer w.gate.RUnlock()
	id := w.next.Add(1)
	w.mu.Lock()
	w.attempted[id] = true
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.exec(ctx, fmt.Sprintf("INSERT INTO acks (id, session) VALUES (%d, %d)", id, s))
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failures++
		return err
	}
	w.acked[id] = true
	w.ackTimes = append(w.ackTimes, now)
	return nil
}

func (w *workload) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

// pause waits for the transactions in flight and holds new ones.
func (w *workload) pause()  { w.gate.Lock() }
func (w *workload) resume() { w.gate.Unlock() }

// ackCount is the number of acknowledged commits.
func (w *workload) ackCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// waitAckAfter waits for a commit acknowledged after at.
func (w *workload) waitAckAfter(t *testing.T, at time.Time, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		n := len(w.ackTimes)
		last := time.Time{}
		if n > 0 {
			last = w.ackTimes[n-1]
		}
		w.mu.Unlock()
		if last.After(at) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no commit acknowledged to the client within %v after %s", timeout, at.Format("15:04:05.000"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// outage is the client's longest wait between two acknowledged commits
// around [from, to]: from the last acknowledgement before from to the
// first one after to, through every one in between. The caller waits for
// an acknowledgement after to first.
func (w *workload) outage(from, to time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	cmp := func(a, b time.Time) int { return a.Compare(b) }
	i, _ := slices.BinarySearchFunc(w.ackTimes, from, cmp)
	j, _ := slices.BinarySearchFunc(w.ackTimes, to, cmp)
	if i > 0 {
		i-- // the last one before from
	}
	if j >= len(w.ackTimes) {
		j = len(w.ackTimes) - 1
	}
	var longest time.Duration
	for k := i; k < j; k++ {
		longest = max(longest, w.ackTimes[k+1].Sub(w.ackTimes[k]))
	}
	return longest
}

// check reads the table through the VIP and compares it with what the
// client saw: lost lists acknowledged ids missing, dups ids present more
// than once, phantoms ids present that no session ever sent.
func (w *workload) check(t *testing.T) (acked int, lost, dups, phantoms []int64) {
	t.Helper()
	// Acknowledgements before the query starts must all be in its
	// snapshot.
	w.mu.Lock()
	snapshot := make([]int64, 0, len(w.acked))
	for id := range w.acked {
		snapshot = append(snapshot, id)
	}
	w.mu.Unlock()
	var ids []int64
	deadline := time.Now().Add(waitLong)
	for {
		c, err := w.pc.conn(ctxFor(t, 5*time.Second))
		if err == nil {
			ids, err = c.ints(ctxFor(t, time.Minute), "SELECT id FROM acks")
			c.close()
			if err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("read the table through the VIP: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	seen := make(map[int64]int, len(ids))
	for _, id := range ids {
		seen[id]++
	}
	for _, id := range snapshot {
		if seen[id] == 0 {
			lost = append(lost, id)
		}
	}
	w.mu.Lock()
	for id, n := range seen {
		if n > 1 {
			dups = append(dups, id)
		}
		if !w.attempted[id] {
			phantoms = append(phantoms, id)
		}
	}
	w.mu.Unlock()
	slices.Sort(lost)
	slices.Sort(dups)
	slices.Sort(phantoms)
	return len(snapshot), lost, dups, phantoms
}

// mustCheck fails the test on any lost, duplicated or phantom id.
func (w *workload) mustCheck(t *testing.T, when string) int {
	t.Helper()
	acked, lost, dups, phantoms := w.check(t)
	if len(lost)+len(dups)+len(phantoms) > 0 {
		t.Fatalf("%s: of %d acknowledged commits, %d lost %v, %d duplicated %v, %d never sent %v",
			when, acked, len(lost), tail(lost, 20), len(dups), tail(dups, 20), len(phantoms), tail(phantoms, 20))
	}
	return acked
}
