package resync

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// makeSmallFiles creates n tiny files (distinct contents) under root in
// directories of 1000, in parallel, unless root/.complete says it holds
// them already (benchmarks reuse a tree across runs).
func makeSmallFiles(tb testing.TB, root string, n int) {
	tb.Helper()
	marker := root + ".complete-" + strconv.Itoa(n) // beside the tree: its times stay put
	if _, err := os.Stat(marker); err == nil {
		return
	}
	start := time.Now()
	dirs := (n + 999) / 1000
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for d := w; d < dirs; d += 8 {
				dir := filepath.Join(root, fmt.Sprintf("d%04d", d))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					errs <- err
					return
				}
				for i := d * 1000; i < min(n, (d+1)*1000); i++ {
					if err := os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(i)), []byte("file "+strconv.Itoa(i)+"\n"), 0o644); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		tb.Fatal(err)
	default:
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("created %d files in %v", n, time.Since(start))
}

// benchDir is where benchmarks keep their trees (HALO_RESYNC_BENCH_DIR, or
// a temporary directory removed at the end).
func benchDir(b *testing.B, name string) string {
	if d := os.Getenv("HALO_RESYNC_BENCH_DIR"); d != "" {
		p := filepath.Join(d, name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			b.Fatal(err)
		}
		return p
	}
	return filepath.Join(b.TempDir(), name)
}

func BenchmarkScanMillionFiles(b *testing.B) {
	root := benchDir(b, "million")
	makeSmallFiles(b, root, 1_000_000)
	for _, par := range []int{2, 8} {
		for _, hash := range []bool{false, true} {
			b.Run(fmt.Sprintf("par=%d/hash=%v", par, hash), func(b *testing.B) {
				for b.Loop() {
					tr, err := Scan(context.Background(), root, ScanOptions{Parallel: par, Hash: hash, Excludes: []string{".complete-*"}})
					if err != nil {
						b.Fatal(err)
					}
					if tr.Files != 1_000_000 {
						b.Fatalf("%d files", tr.Files)
					}
				}
			})
		}
	}
}

// benchTarget returns a copy of src made by a first full resync (kept
// across runs like src), and logs how long the copy took.
func benchTarget(b *testing.B, src, name string, excludes []string) string {
	tgt := benchDir(b, name)
	marker := tgt + ".complete"
	if _, err := os.Stat(marker); err == nil {
		return tgt
	}
	start := time.Now()
	a := newApplier(b, tgt)
	r := runSession(context.Background(), b, 4, SourceConfig{Root: src, Excludes: excludes},
		TargetConfig{Root: tgt, Excludes: excludes, Apply: a, Request: Request{Kind: RequestFull}})
	r.check(b)
	b.Logf("first full resync of %s (copy): %d objects, %d data bytes in %v", name, r.src.Changed, r.src.DataBytes, time.Since(start))
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return tgt
}

// identicalCheck runs full resyncs between identical trees.
func identicalCheck(b *testing.B, src, tgt string, excludes []string, conns int) {
	var last sessionResult
	var applied int
	for b.Loop() {
		a := newApplier(b, tgt)
		last = runSession(context.Background(), b, conns, SourceConfig{Root: src, Excludes: excludes},
			TargetConfig{Root: tgt, Excludes: excludes, Apply: a, Request: Request{Kind: RequestFull}})
		last.check(b)
		for _, n := range a.counts {
			applied += n
		}
	}
	if last.src.DataBytes != 0 || applied != 0 {
		b.Fatalf("identical trees: %d data bytes, %d ops", last.src.DataBytes, applied)
	}
	b.ReportMetric(float64(last.src.Files), "objects")
	b.ReportMetric(float64(last.src.HashedBytes)/(1<<20), "MiB-hashed/side")
	b.ReportMetric(float64(last.src.SentBytes+last.src.ReceivedByte)/(1<<20), "MiB-on-wire")
}

func BenchmarkIdenticalMillionFiles(b *testing.B) {
	src := benchDir(b, "million")
	makeSmallFiles(b, src, 1_000_000)
	excludes := []string{".complete*"}
	tgt := benchTarget(b, src, "million-copy", excludes)
	identicalCheck(b, src, tgt, excludes, 4)
}

// makeBigFiles writes n files of size bytes (distinct contents) unless
// they are there.
func makeBigFiles(b *testing.B, root string, n int, size int64) {
	marker := root + fmt.Sprintf(".complete-%dx%d", n, size)
	if _, err := os.Stat(marker); err == nil {
		return
	}
	chunk := pattern(4<<20, 7)
	for i := range n {
		f, err := os.Create(filepath.Join(root, fmt.Sprintf("big%d", i)))
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < size; off += int64(len(chunk)) {
			chunk[0], chunk[1], chunk[2] = byte(i), byte(off>>20), byte(off>>28)
			if _, err := f.Write(chunk[:min(int64(len(chunk)), size-off)]); err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkIdenticalBigFiles(b *testing.B) {
	src := benchDir(b, "big2g")
	makeBigFiles(b, src, 4, 512<<20)
	excludes := []string{".complete*"}
	tgt := benchTarget(b, src, "big2g-copy", excludes)
	identicalCheck(b, src, tgt, excludes, 4)
}

// BenchmarkFullResyncOnePercent: 1 GiB in 16 files, 1 % of the 1 MiB
// blocks changed on the target before each run.
func BenchmarkFullResyncOnePercent(b *testing.B) {
	src := benchDir(b, "one-gib")
	makeBigFiles(b, src, 16, 64<<20)
	excludes := []string{".complete*"}
	tgt := benchTarget(b, src, "one-gib-copy", excludes)
	rng := rand.New(rand.NewPCG(3, 4))
	const blocks = 1024
	var last sessionResult
	var changed int64
	for b.Loop() {
		b.StopTimer()
		changed = 0
		for _, k := range rng.Perm(blocks)[:blocks/100] {
			p := filepath.Join(tgt, fmt.Sprintf("big%d", k/64))
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			f.WriteAt([]byte("changed on the target"), int64(k%64)<<20+int64(rng.IntN(1<<19)))
			f.Close()
			changed += 1 << 20
		}
		b.StartTimer()
		last = runSession(context.Background(), b, 4, SourceConfig{Root: src, Excludes: excludes},
			TargetConfig{Root: tgt, Excludes: excludes, Apply: newApplier(b, tgt), Request: Request{Kind: RequestFull}})
		last.check(b)
	}
	b.ReportMetric(float64(changed)/(1<<20), "MiB-changed")
	b.ReportMetric(float64(last.src.DataBytes)/(1<<20), "MiB-data-sent")
	b.ReportMetric(float64(last.src.SentBytes)/float64(changed), "wire/changed")
}
