package resync

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/op"
)

const baseGen = 100

func TestIncrementalSendsOnlyPlannedRanges(t *testing.T) {
	src, tgt := sameBase(t, 12, 1<<20)
	js, jt := newJournaledTree(t, src, baseGen), newJournaledTree(t, tgt, baseGen)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// The source's changes since the common generation.
	must(js.WriteAt("d0/f0", 200000, []byte("ten bytes!")))     // zone 3
	must(js.WriteAt("d1/f1", 0, pattern(70000, 7)))             // zones 0-1
	must(js.Truncate("d2/f2", 500000))                          // zone 7 to the end
	must(js.Create("d0/new", pattern(3000, 8)))                 // whole
	must(js.Rename("d1/f4", "d2/moved"))                        // no data
	must(js.Remove("d0/f3"))                                    // delete
	must(js.Mkdir("newdir"))                                    // whole
	must(js.Create("newdir/x", pattern(5000, 9)))               // inside it
	must(js.Chmod("d1/f7", 0o600))                              // metadata
	must(js.WriteAt("d0/f9", 1<<20-10, []byte("tail growth!"))) // last zone, grows
	// The target's own unreplicated changes (a crashed primary's in-flight
	// writes, say).
	must(jt.WriteAt("d2/f5", 5<<16, pattern(100, 10))) // zone 5
	must(jt.Create("d0/target-only", []byte("lost")))
	want := int64(65536 + 131072 + (500000 - 458752) + 3000 + 5000 + (1<<20 - 15<<16 + 2) + 65536)
	plan, err := journal.NewPlan(js.Snapshot(), jt.Snapshot(), journal.PlanOptions{Stat: func(p string) (int64, bool) {
		fi, err := os.Lstat(filepath.Join(src, p))
		if err != nil {
			return 0, false
		}
		if fi.Mode().IsRegular() {
			return fi.Size(), true
		}
		return 0, true
	}})
	must(err)
	// The plan counts a new directory's files when the item lists them.
	if plan.Bytes != want-5000 {
		t.Fatalf("plan of %d bytes, want %d (%+v)", plan.Bytes, want-5000, plan.Items)
	}
	// The estimate (a dry run of the same plan) predicts it, renames and
	// all, and changes nothing.
	est := runSession(context.Background(), t, 1,
		SourceConfig{Root: src, Map: func() (*journal.ZoneMap, error) { return js.Snapshot(), nil }},
		TargetConfig{Root: tgt, Request: Request{Kind: RequestEstimate, Map: jt.Snapshot()}})
	est.check(t)
	if e := est.tgt.Estimate; e == nil || e.Full || e.Bytes != want {
		t.Errorf("estimate %+v, want an incremental one of %d bytes", e, want)
	}
	a := newApplier(t, tgt)
	r := runSession(context.Background(), t, 2,
		SourceConfig{Root: src, Map: func() (*journal.ZoneMap, error) { return js.Snapshot(), nil }},
		TargetConfig{Root: tgt, Apply: a, Request: Request{Kind: RequestIncremental, Since: baseGen, Map: jt.Snapshot()}})
	r.check(t)
	assertSame(t, src, tgt)
	if r.src.DataBytes != want || a.writes != want {
		t.Errorf("sent %d data bytes (target applied %d), planned %d", r.src.DataBytes, a.writes, want)
	}
	if a.counts[op.Rename] != 2 {
		t.Errorf("%d renames (stage and unstage of the moved file), want 2", a.counts[op.Rename])
	}
	t.Logf("incremental: %d data bytes, %d bytes on the wire, ops %v", r.src.DataBytes, r.src.SentBytes, a.counts)
}

func TestIncrementalRefusesMapsOfAnotherBase(t *testing.T) {
	src, tgt := sameBase(t, 2, 1000)
	js, jt := newJournaledTree(t, src, baseGen), newJournaledTree(t, tgt, baseGen+1)
	r := runSession(context.Background(), t, 1,
		SourceConfig{Root: src, Map: func() (*journal.ZoneMap, error) { return js.Snapshot(), nil }},
		TargetConfig{Root: tgt, Apply: newApplier(t, tgt), Request: Request{Kind: RequestIncremental, Since: baseGen + 1, Map: jt.Snapshot()}})
	if r.srcErr == nil || r.tgtErr == nil {
		t.Fatalf("resync of maps with different bases: source %v, target %v", r.srcErr, r.tgtErr)
	}
	t.Logf("refused: %v", r.tgtErr)
}

// writer changes the source continuously: writes, appends, truncates,
// creates, renames and deletes, through the journaled tree.
type writer struct {
	j     *journaledTree
	rng   *rand.Rand
	files []string
	dirs  []string // top-level directories the files live in
	n     int
	ops   atomic.Int64
}

func (w *writer) dir() string { return w.dirs[w.rng.IntN(len(w.dirs))] }

func (w *writer) step() error {
	w.ops.Add(1)
	switch k := w.rng.IntN(104); {
	case k >= 100:
		// Rename a whole directory (its files move with it), or make one.
		w.n++
		to := fmt.Sprintf("dir%d", w.n)
		if k == 100 {
			w.dirs = append(w.dirs, to)
			return w.j.Mkdir(to)
		}
		i := w.rng.IntN(len(w.dirs))
		from := w.dirs[i]
		if err := w.j.Rename(from, to); err != nil {
			return err
		}
		w.dirs[i] = to
		for j, f := range w.files {
			if strings.HasPrefix(f, from+"/") {
				w.files[j] = to + f[len(from):]
			}
		}
		return nil
	case k < 55 && len(w.files) > 0:
		f := w.files[w.rng.IntN(len(w.files))]
		off := w.rng.Int64N(3 << 20)
		return w.j.WriteAt(f, off, pattern(1+w.rng.IntN(200000), byte(k)))
	case k < 62 && len(w.files) > 0:
		return w.j.Truncate(w.files[w.rng.IntN(len(w.files))], w.rng.Int64N(2<<20))
	case k < 64 && len(w.files) > 0:
		// Another name of a file, elsewhere: written through either
		// name from now on.
		w.n++
		p := fmt.Sprintf("%s/link%d", w.dir(), w.n)
		if err := w.j.Link(w.files[w.rng.IntN(len(w.files))], p); err != nil {
			return err
		}
		w.files = append(w.files, p)
		return nil
	case k < 80:
		w.n++
		p := fmt.Sprintf("%s/new%d", w.dir(), w.n)
		w.files = append(w.files, p)
		return w.j.Create(p, pattern(w.rng.IntN(300000), byte(w.n)))
	case k < 90 && len(w.files) > 1:
		i := w.rng.IntN(len(w.files))
		w.n++
		to := fmt.Sprintf("%s/ren%d", w.dir(), w.n)
		if err := w.j.Rename(w.files[i], to); err != nil {
			return err
		}
		w.files[i] = to
		return nil
	case len(w.files) > 1:
		i := w.rng.IntN(len(w.files))
		if st, err := os.Lstat(at(w.j.root, w.files[i])); err == nil && st.Sys().(*syscall.Stat_t).Nlink > 1 {
			// Not covered: the journal keeps a write under the name it
			// was made through, so removing one name of a file written
			// through it leaves the other names' copies on the target
			// without that write (see package resync, hard links).
			return nil
		}
		if err := w.j.Remove(w.files[i]); err != nil {
			return err
		}
		w.files = append(w.files[:i], w.files[i+1:]...)
		return nil
	}
	return nil
}

// concurrentResync resyncs while the writer runs, then keeps writing a
// little in live mode, and checks that both trees end identical.
func concurrentResync(t *testing.T, full bool) {
	src, tgt := sameBase(t, 9, 1<<20)
	js, jt := newJournaledTree(t, src, baseGen), newJournaledTree(t, tgt, baseGen)
	js.mirror = tgt
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("HALO_RESYNC_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("writer seed %d (HALO_RESYNC_SEED replays it)", seed)
	if os.Getenv("HALO_RESYNC_TRACE") != "" {
		debugf = t.Logf
		defer func() { debugf = nil }()
	}
	w := &writer{j: js, rng: rand.New(rand.NewPCG(seed, 2)), dirs: []string{"d0", "d1", "d2"}}
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(src, p)
			w.files = append(w.files, filepath.ToSlash(rel))
		}
		return nil
	})
	for range 40 { // changes while the peer was away
		if err := w.step(); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var werr error
	var liveOps atomic.Int64
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := w.step(); err != nil {
				werr = err
				return
			}
			js.gate.RLock()
			if js.live {
				liveOps.Add(1)
			}
			js.gate.RUnlock()
			time.Sleep(200 * time.Microsecond)
		}
	})
	req := Request{Kind: RequestIncremental, Since: baseGen, Map: jt.Snapshot()}
	before := map[string][]byte{} // the target's files: what quarantine may hold
	if full {
		req = Request{Kind: RequestFull, Quarantine: filepath.Join(t.TempDir(), "q")}
		filepath.Walk(tgt, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				rel, _ := filepath.Rel(tgt, p)
				before[filepath.ToSlash(rel)], _ = os.ReadFile(p)
			}
			return nil
		})
	}
	var passes []int
	var pmu sync.Mutex
	r := runSession(context.Background(), t, 3,
		SourceConfig{Root: src, Map: func() (*journal.ZoneMap, error) { return js.Snapshot(), nil },
			Changes: js, Synced: js.goLive,
			Options: Options{FreezeBelow: 1, MaxPasses: 4, BlockSize: 256 << 10, Progress: func(p Progress) {
				pmu.Lock()
				passes = append(passes, p.Pass)
				pmu.Unlock()
			}}},
		TargetConfig{Root: tgt, Apply: newApplier(t, tgt), Request: req})
	// Keep writing live for a while, then stop and compare.
	deadline := time.Now().Add(2 * time.Second)
	for liveOps.Load() < 50 && time.Now().Before(deadline) && r.srcErr == nil {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	r.check(t)
	if werr != nil {
		t.Fatal(werr)
	}
	if !js.live {
		t.Fatal("the source never went live")
	}
	if r.src.Passes < 2 {
		t.Errorf("%d passes: the writer should have forced more", r.src.Passes)
	}
	assertSame(t, src, tgt)
	if full && r.tgt.Quarantine != "" {
		// Only the target's own data: what the first pass overwrote or
		// deleted, never what the resync itself wrote.
		for _, f := range readManifest(t, r.tgt.Quarantine).Files {
			got, _ := os.ReadFile(filepath.Join(r.tgt.Quarantine, f.Path))
			if old, ok := before[f.Path]; !ok || !bytes.Equal(got, old) {
				t.Errorf("quarantined %s is not the target's file before the resync (it had one: %v)", f.Path, ok)
			}
		}
		t.Logf("%d files quarantined", r.tgt.QuarantinedFiles)
	}
	t.Logf("%d passes, frozen %v, %d writer ops (%d live), %d data bytes sent", r.src.Passes, r.src.Frozen, w.ops.Load(), liveOps.Load(), r.src.DataBytes)
}

func TestConcurrentWriterIncremental(t *testing.T) { concurrentResync(t, false) }

func TestConcurrentWriterFull(t *testing.T) { concurrentResync(t, true) }

// An estimate given both journals plans like the incremental resync it
// predicts (same bytes, same objects) and changes nothing; without a
// usable map it falls back to a full dry run and says why.
func TestEstimateUsesTheIncrementalPlan(t *testing.T) {
	src, tgt := sameBase(t, 12, 1<<20)
	js, jt := newJournaledTree(t, src, baseGen), newJournaledTree(t, tgt, baseGen)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(js.WriteAt("d0/f0", 200000, []byte("ten bytes!")))
	must(js.WriteAt("d1/f1", 0, pattern(70000, 7)))
	must(js.Create("d0/new", pattern(3000, 8)))
	must(js.Remove("d0/f3"))
	must(jt.WriteAt("d2/f5", 5<<16, pattern(100, 10)))
	srcMap := func() (*journal.ZoneMap, error) { return js.Snapshot(), nil }
	before := diffRoots(t, src, tgt)

	est := runSession(context.Background(), t, 1, SourceConfig{Root: src, Map: srcMap},
		TargetConfig{Root: tgt, Request: Request{Kind: RequestEstimate, Rate: 1 << 20, Map: jt.Snapshot()}})
	est.check(t)
	e := est.tgt.Estimate
	if e == nil || e.Full {
		t.Fatalf("estimate with both journals: %+v, want an incremental one", e)
	}
	if !strings.Contains(e.Reason, "incremental") {
		t.Errorf("incremental estimate's reason: %q", e.Reason)
	}
	if after := diffRoots(t, src, tgt); len(after) != len(before) {
		t.Fatalf("the estimate changed the target: %d differences, %d before", len(after), len(before))
	}
	// Without the target's map the source cannot plan: a full dry run.
	full := runSession(context.Background(), t, 1, SourceConfig{Root: src, Map: srcMap},
		TargetConfig{Root: tgt, Request: Request{Kind: RequestEstimate, Rate: 1 << 20}})
	full.check(t)
	if f := full.tgt.Estimate; f == nil || !f.Full || !strings.Contains(f.Reason, "no journal map") {
		t.Errorf("estimate without the target's map: %+v, want a full one saying why", f)
	} else {
		t.Logf("full estimate of the same trees: %+v", *f)
	}

	r := runSession(context.Background(), t, 1, SourceConfig{Root: src, Map: srcMap},
		TargetConfig{Root: tgt, Apply: newApplier(t, tgt), Request: Request{Kind: RequestIncremental, Since: baseGen, Map: jt.Snapshot()}})
	r.check(t)
	assertSame(t, src, tgt)
	if e.Bytes != r.src.DataBytes || e.Deletes != r.src.Deleted {
		t.Errorf("estimate %+v; the incremental resync sent %d data bytes, deleted %d", *e, r.src.DataBytes, r.src.Deleted)
	}
	if want := time.Duration(float64(e.Bytes) / float64(1<<20) * float64(time.Second)); e.Duration != want {
		t.Errorf("estimated duration %v, want %v", e.Duration, want)
	}
	t.Logf("estimate %+v; resync sent %d data bytes, %d on the wire", *e, r.src.DataBytes, r.src.SentBytes)

	// Journals of different bases: the resync would be full, so is the estimate.
	src2, tgt2 := sameBase(t, 2, 1000)
	js2, jt2 := newJournaledTree(t, src2, baseGen), newJournaledTree(t, tgt2, baseGen+1)
	mis := runSession(context.Background(), t, 1, SourceConfig{Root: src2, Map: func() (*journal.ZoneMap, error) { return js2.Snapshot(), nil }},
		TargetConfig{Root: tgt2, Request: Request{Kind: RequestEstimate, Map: jt2.Snapshot()}})
	mis.check(t)
	if m := mis.tgt.Estimate; m == nil || !m.Full || !strings.Contains(m.Reason, "same generation") {
		t.Errorf("estimate from journals of different bases: %+v, want a full one saying why", m)
	}
}
