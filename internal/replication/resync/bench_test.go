package resync

import (
	"context"
	"fmt"
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
	marker := filepath.Join(root, ".complete-"+strconv.Itoa(n))
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
