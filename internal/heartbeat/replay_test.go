package heartbeat

import (
	"math/rand/v2"
	"testing"
)

func TestReplayWindowSequence(t *testing.T) {
	var w replayWindow
	w.reset(1, 100, 0)
	steps := []struct {
		seq  uint64
		want DropReason
		ok   bool
	}{
		{100, DropReplay, false}, // the first frame again
		{101, 0, true},
		{99, 0, true},           // reordered, within the window
		{99, DropReplay, false}, // ... but once only
		{101 - 63, 0, true},     // oldest sequence inside the window
		{101 - 64, DropStale, false},
		{200, 0, true},             // a jump: 101..199 lost
		{137, 0, true},             // 200-63
		{136, DropStale, false},    // 200-64
		{101, DropStale, false},    // was seen, now out of the window
		{200 + 64, 0, true},        // shift by exactly the window size
		{200, DropStale, false},    // dropped off the window by that shift
		{200 + 64 + 1000, 0, true}, // a shift far larger than the window
		{200 + 64 + 999, 0, true},  // window restarted cleanly
		{200 + 64 + 1000, DropReplay, false},
	}
	for i, s := range steps {
		reason, ok := w.check(s.seq)
		if ok != s.ok || (!ok && reason != s.want) {
			t.Fatalf("step %d: check(%d) = %s, %v; want %s, %v", i, s.seq, reason, ok, s.want, s.ok)
		}
		if ok {
			w.record(s.seq, 0)
		}
	}
}

// TestReplayWindowModel compares the bitmap window with the obvious model
// (a set of seen numbers and the highest one) over random arrivals.
func TestReplayWindowModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for run := range 200 {
		var w replayWindow
		first := uint64(rng.IntN(10) + 1)
		w.reset(1, first, 0)
		seen := map[uint64]bool{first: true}
		hi := first
		for step := range 500 {
			// Mostly near the top, sometimes far behind or far ahead.
			var seq uint64
			switch r := rng.IntN(10); {
			case r < 7:
				seq = max(hi+3, 100) - uint64(rng.IntN(100))
			case r < 9:
				seq = uint64(rng.IntN(int(hi) + 1))
			default:
				seq = hi + uint64(rng.IntN(200))
			}
			wantOK := !seen[seq] && (seq > hi || hi-seq < ReplayWindow)
			reason, ok := w.check(seq)
			if ok != wantOK {
				t.Fatalf("run %d step %d: check(%d) with highest %d = %v (%s), model says %v", run, step, seq, hi, ok, reason, wantOK)
			}
			if !ok {
				wantReason := DropReplay
				if seq <= hi && hi-seq >= ReplayWindow {
					wantReason = DropStale
				}
				if reason != wantReason {
					t.Fatalf("run %d step %d: seq %d rejected as %s, want %s", run, step, seq, reason, wantReason)
				}
				continue
			}
			w.record(seq, 0)
			seen[seq] = true
			hi = max(hi, seq)
		}
	}
}
