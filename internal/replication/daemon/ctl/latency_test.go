package ctl

import (
	"testing"
	"time"
)

func TestLatencyRecorder(t *testing.T) {
	var r LatencyRecorder
	if r.Snapshot() != nil {
		t.Fatal("an empty recorder has a histogram")
	}
	if len(r.counts) != len(LatencyBounds)+1 {
		t.Fatalf("%d counters for %d bounds", len(r.counts), len(LatencyBounds))
	}
	r.Observe(40 * time.Microsecond) // first bucket (<= 50µs)
	r.Observe(50 * time.Microsecond) // first bucket: bounds are inclusive
	r.Observe(3 * time.Millisecond)  // <= 5ms
	r.Observe(time.Minute)           // overflow
	h := r.Snapshot()
	if h.Count != 4 || len(h.Counts) != len(LatencyBounds)+1 {
		t.Fatalf("snapshot %+v", h)
	}
	want := map[int]uint64{0: 2, 6: 1, len(LatencyBounds): 1}
	for i, c := range h.Counts {
		if c != want[i] {
			t.Errorf("bucket %d (le %v) = %d, want %d", i, bound(i), c, want[i])
		}
	}
	if sum := 60.00309; h.Sum < sum-1e-9 || h.Sum > sum+1e-9 {
		t.Errorf("sum %v, want %v", h.Sum, sum)
	}
}

func bound(i int) float64 {
	if i < len(LatencyBounds) {
		return LatencyBounds[i]
	}
	return -1
}
