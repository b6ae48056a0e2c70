package journal

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// Memory of zone maps: many files with a few dirty zones each, and huge
// files dirty in every pattern. The tests bound it at a scale that runs in
// a second; the benchmarks measure the sizes the issue names (go test
// -run X -bench Memory -benchtime 1x ./core/journal).

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// manyFiles marks 3 separate 4 KiB writes (3 zones, 3 runs) in each of n
// files spread over n/1000 directories, with names of typical length.
func manyFiles(tb testing.TB, n int) *ZoneMap {
	m, _ := NewZoneMap(DefaultZoneSize)
	dirs := max(1, n/1000)
	for i := range n {
		p := fmt.Sprintf("data/dir-%05d/file-%09d.dat", i%dirs, i)
		for _, off := range []int64{0, 10 << 20, 100 << 20} {
			if _, err := m.MarkWrite(p, off, 4096); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return m
}

// hugeFile marks zones of one 1 TiB file (2^24 zones of 64 KiB).
func hugeFile(tb testing.TB, pattern string) *ZoneMap {
	m, _ := NewZoneMap(DefaultZoneSize)
	const size = 1 << 40
	mark := func(off, n int64) {
		if _, err := m.MarkWrite("big.img", off, n); err != nil {
			tb.Fatal(err)
		}
	}
	switch pattern {
	case "sequential": // written whole, 1 MiB at a time
		for off := int64(0); off < size; off += 1 << 20 {
			mark(off, 1<<20)
		}
	case "sequential-8MiB": // the same with fewer calls (tests)
		for off := int64(0); off < size; off += 8 << 20 {
			mark(off, 8<<20)
		}
	case "alternate": // every other zone: the worst case for runs
		for off := int64(0); off < size; off += 2 << 16 {
			mark(off, 1)
		}
	case "random": // a million random 4 KiB writes
		rng := rand.New(rand.NewPCG(1, 2))
		for range 1 << 20 {
			mark(rng.Int64N(size>>12)<<12, 4096)
		}
	case "truncate": // extended or truncated: the tail
		if _, err := m.MarkTruncate("big.img", 0); err != nil {
			tb.Fatal(err)
		}
	}
	return m
}

func measure(tb testing.TB, build func() *ZoneMap) (*ZoneMap, uint64) {
	before := heapInUse()
	m := build()
	after := heapInUse()
	runtime.KeepAlive(m)
	if after < before {
		return m, 0
	}
	return m, after - before
}

func TestMemoryManyFiles(t *testing.T) {
	const n = 20000
	m, bytes := measure(t, func() *ZoneMap { return manyFiles(t, n) })
	s := m.Stats()
	if s.Paths != n || s.Zones != 3*n {
		t.Fatalf("stats %+v", s)
	}
	perFile := bytes / n
	t.Logf("%d files, 3 dirty zones each: %d bytes, %d bytes per file", n, bytes, perFile)
	if perFile > 400 {
		t.Errorf("%d bytes per file; the map must stay compact for millions of files", perFile)
	}
}

func TestMemoryHugeFile(t *testing.T) {
	for _, pattern := range []string{"sequential-8MiB", "truncate"} {
		hugeFile(t, pattern) // the first run also grows runtime structures
		m, bytes := measure(t, func() *ZoneMap { return hugeFile(t, pattern) })
		zs := &m.lookup("big.img").zones
		t.Logf("1 TiB file, %s: %d bytes, %d chunk entries, stats %+v", pattern, bytes, len(zs.chunks), m.Stats())
		if len(zs.chunks) > 1 || bytes > 4096 {
			t.Errorf("1 TiB file fully dirty (%s): %d bytes, %d chunk entries; want O(1)", pattern, bytes, len(zs.chunks))
		}
	}
}

func BenchmarkMemory(b *testing.B) {
	cases := []struct {
		name  string
		files int
		build func(testing.TB) *ZoneMap
	}{
		{"1M-files-3-zones", 1000000, func(tb testing.TB) *ZoneMap { return manyFiles(tb, 1000000) }},
		{"1TiB-sequential", 1, func(tb testing.TB) *ZoneMap { return hugeFile(tb, "sequential") }},
		{"1TiB-alternate-zones", 1, func(tb testing.TB) *ZoneMap { return hugeFile(tb, "alternate") }},
		{"1TiB-1M-random-4KiB", 1, func(tb testing.TB) *ZoneMap { return hugeFile(tb, "random") }},
		{"1TiB-truncated", 1, func(tb testing.TB) *ZoneMap { return hugeFile(tb, "truncate") }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				m, bytes := measure(b, func() *ZoneMap { return c.build(b) })
				b.ReportMetric(float64(bytes), "heap-bytes")
				b.ReportMetric(float64(bytes)/float64(c.files), "bytes/file")
				s := m.Stats()
				b.ReportMetric(float64(s.Zones), "zones")
			}
		})
	}
}

// BenchmarkMarkWrite: the cost added to a write, when the zone is new and
// when it is already dirty (no record to log: the common case).
func BenchmarkMarkWrite(b *testing.B) {
	b.Run("new-zone", func(b *testing.B) {
		m, _ := NewZoneMap(DefaultZoneSize)
		for i := range b.N {
			if _, err := m.MarkWrite("db/base/16384/2619", int64(i)<<17, 8192); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("dirty-zone", func(b *testing.B) {
		m, _ := NewZoneMap(DefaultZoneSize)
		for i := range 1024 {
			m.MarkWrite("db/base/16384/2619", int64(i)<<16, 8192)
		}
		b.ResetTimer()
		for i := range b.N {
			if r, err := m.MarkWrite("db/base/16384/2619", int64(i%1024)<<16, 8192); err != nil || r != nil {
				b.Fatal(r, err)
			}
		}
	})
}
