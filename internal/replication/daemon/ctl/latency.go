package ctl

import (
	"sync/atomic"
	"time"
)

// LatencyBounds are the upper bounds, in seconds, of the latency
// histograms a daemon reports: from a loopback round trip to a stall.
var LatencyBounds = []float64{
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
	0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// Histogram is a latency distribution, cumulative since its recorder was
// made (Prometheus's histogram model: a reset shows as a smaller Count).
type Histogram struct {
	// Bounds are the buckets' upper bounds in seconds, increasing; Counts
	// has one count per bound plus the overflow, not cumulative.
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
	Count  uint64    `json:"count"`
	Sum    float64   `json:"sum"` // seconds
}

// LatencyRecorder records latencies into LatencyBounds without locks: it
// sits on the write path. The zero value is ready to use.
type LatencyRecorder struct {
	counts [18]atomic.Uint64 // len(LatencyBounds) + overflow
	sumNs  atomic.Uint64
}

// Observe records one latency.
func (r *LatencyRecorder) Observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(LatencyBounds) && s > LatencyBounds[i] {
		i++
	}
	r.counts[i].Add(1)
	if d > 0 {
		r.sumNs.Add(uint64(d))
	}
}

// Snapshot returns the histogram so far; nil when nothing was recorded.
func (r *LatencyRecorder) Snapshot() *Histogram {
	h := &Histogram{Bounds: LatencyBounds, Counts: make([]uint64, len(r.counts))}
	for i := range r.counts {
		h.Counts[i] = r.counts[i].Load()
		h.Count += h.Counts[i]
	}
	if h.Count == 0 {
		return nil
	}
	h.Sum = time.Duration(r.sumNs.Load()).Seconds()
	return h
}
