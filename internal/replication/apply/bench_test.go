package apply

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/halo-ha/halo/internal/replication/op"
)

// BenchmarkApply is the target's cost without the network, the baseline
// of wire's BenchmarkStream:
//
//	go test -run '^$' -bench Apply/write1M -benchtime 1024x ./internal/replication/apply
//	go test -run '^$' -bench Apply/write4K -benchtime 5000x ./internal/replication/apply
func BenchmarkApply(b *testing.B) {
	for _, wl := range []struct {
		name string
		size int
		sync bool
	}{{"write1M", 1 << 20, false}, {"write4K+sync", 4 << 10, true}} {
		b.Run(wl.name, func(b *testing.B) {
			tr, err := Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			if err := tr.Apply(op.Op{Kind: op.Create, Path: "f", Mode: 0o644}); err != nil {
				b.Fatal(err)
			}
			data := make([]byte, wl.size)
			rng := rand.New(rand.NewPCG(1, 2))
			lat := make([]time.Duration, b.N)
			b.SetBytes(int64(wl.size))
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				off := (int64(i) * int64(wl.size)) % (1 << 30)
				if wl.sync {
					off = rng.Int64N(1<<30/int64(wl.size)) * int64(wl.size)
				}
				t0 := time.Now()
				err := tr.Apply(op.Op{Kind: op.Write, Path: "f", Off: off, Data: data})
				if err == nil && wl.sync {
					err = tr.Apply(op.Op{Kind: op.Fsync, Path: "f", Flags: op.DataOnly})
				}
				if err != nil {
					b.Fatal(err)
				}
				lat[i] = time.Since(t0)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
