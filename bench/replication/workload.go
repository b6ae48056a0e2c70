// Package replication benchmarks halo's replicated filesystem: the same
// workloads on a plain directory, on the FUSE capture mount without a peer
// and replicated in sync mode to a peer in another network namespace (see
// cmd/fsbench, `make bench-fs`).
package replication

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Sizes are a run's workload sizes; Full is what issue 5 asks for.
type Sizes struct {
	SeqBytes   int64         // sequential write, 1 MiB blocks, then fsync
	RandFile   int64         // file the 4 KiB random writes land in
	RandFor    time.Duration // how long the 4 KiB write+fsync loop runs
	SmallFiles int           // create+write+fsync
	SmallSize  int           // bytes per small file
}

// Full is the sizes.
var Full = Sizes{SeqBytes: 1 << 30, RandFile: 256 << 20, RandFor: 10 * time.Second, SmallFiles: 100_000, SmallSize: 1024}

// Scale returns s with the sizes multiplied by f (quick runs).
func (s Sizes) Scale(f float64) Sizes {
	return Sizes{
		SeqBytes:   max(1<<20, int64(float64(s.SeqBytes)*f)),
		RandFile:   max(1<<20, int64(float64(s.RandFile)*f)),
		RandFor:    max(time.Second, time.Duration(float64(s.RandFor)*f)),
		SmallFiles: max(100, int(float64(s.SmallFiles)*f)),
		SmallSize:  s.SmallSize,
	}
}

// Sample is one workload run's result.
type Sample struct {
	Took  time.Duration
	Bytes int64
	Ops   int
	// Lat holds the per-operation latencies of the random-write workload.
	Lat []time.Duration
}

// SeqWrite writes size bytes to a new file in 1 MiB blocks and fsyncs it.
func SeqWrite(dir string, size int64) (Sample, error) {
	buf := make([]byte, 1<<20)
	fillRandom(buf, 1)
	path := filepath.Join(dir, "seq.dat")
	start := time.Now()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return Sample{}, fmt.Errorf("create %s: %w", path, err)
	}
	defer f.Close()
	var n int64
	for n < size {
		w, err := f.Write(buf[:min(int64(len(buf)), size-n)])
		if err != nil {
			return Sample{}, fmt.Errorf("write %s at %d: %w", path, n, err)
		}
		n += int64(w)
	}
	if err := f.Sync(); err != nil {
		return Sample{}, fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return Sample{}, fmt.Errorf("close %s: %w", path, err)
	}
	return Sample{Took: time.Since(start), Bytes: n}, nil
}

// PrepareRand creates the file the random writes go to (written and
// fsynced, so the writes overwrite allocated blocks as a database does).
func PrepareRand(dir string, size int64) error {
	_, err := SeqWrite(dir, size)
	return err
}

// RandWrite overwrites 4 KiB blocks at random aligned offsets of the file
// PrepareRand made, each followed by fsync, for d; it records each
// write+fsync's latency.
func RandWrite(dir string, size int64, d time.Duration) (Sample, error) {
	path := filepath.Join(dir, "seq.dat")
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return Sample{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(2, 3))
	blocks := size / 4096
	s := Sample{Lat: make([]time.Duration, 0, 1<<16)}
	start := time.Now()
	for time.Since(start) < d {
		fillRandom(buf, rng.Uint64())
		off := rng.Int64N(blocks) * 4096
		t0 := time.Now()
		if _, err := f.WriteAt(buf, off); err != nil {
			return Sample{}, fmt.Errorf("write %s at %d: %w", path, off, err)
		}
		if err := f.Sync(); err != nil {
			return Sample{}, fmt.Errorf("fsync %s: %w", path, err)
		}
		s.Lat = append(s.Lat, time.Since(t0))
		s.Ops++
		s.Bytes += 4096
	}
	s.Took = time.Since(start)
	return s, nil
}

// SmallFiles creates n files of size bytes in directories of 1000, each
// written and fsynced before the next is created (a mail spool, a package
// manager); the directories are fsynced at the end.
func SmallFiles(dir string, n, size int) (Sample, error) {
	buf := make([]byte, size)
	fillRandom(buf, 4)
	start := time.Now()
	var sub string
	for i := range n {
		if i%1000 == 0 {
			sub = filepath.Join(dir, "d"+strconv.Itoa(i/1000))
			if err := os.Mkdir(sub, 0o755); err != nil {
				return Sample{}, fmt.Errorf("mkdir %s: %w", sub, err)
			}
		}
		p := filepath.Join(sub, "f"+strconv.Itoa(i))
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return Sample{}, fmt.Errorf("create %s: %w", p, err)
		}
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return Sample{}, fmt.Errorf("write %s: %w", p, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return Sample{}, fmt.Errorf("fsync %s: %w", p, err)
		}
		if err := f.Close(); err != nil {
			return Sample{}, fmt.Errorf("close %s: %w", p, err)
		}
	}
	if err := syncfs(dir); err != nil {
		return Sample{}, err
	}
	return Sample{Took: time.Since(start), Ops: n, Bytes: int64(n) * int64(size)}, nil
}

// Untar extracts tarball into dir with tar(1) and then syncs dir's
// filesystem (syncfs), so the time includes getting the tree to disk.
func Untar(ctx context.Context, dir, tarball string) (Sample, error) {
	start := time.Now()
	out, err := exec.CommandContext(ctx, "tar", "-xf", tarball, "-C", dir).CombinedOutput()
	if err != nil {
		return Sample{}, fmt.Errorf("untar %s into %s: %w: %s", tarball, dir, err, out)
	}
	if err := syncfs(dir); err != nil {
		return Sample{}, err
	}
	return Sample{Took: time.Since(start)}, nil
}

func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s for syncfs: %w", dir, err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// DropCaches writes back dirty pages and drops the page, dentry and inode
// caches, so that a phase does not start with the previous one's
// writeback pending or its files cached.
func DropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// fillRandom fills b with pseudo-random bytes (incompressible, cheap).
func fillRandom(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
}

// Percentile returns the nearest-rank p-th percentile of ds (sorted in
// place); zero for none.
func Percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := (p*len(ds) + 99) / 100
	return ds[max(rank, 1)-1]
}

// Median returns the median of vs (sorted in place): the middle value, or
// the mean of both middle values for an even count.
func Median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	slices.Sort(vs)
	m := len(vs) / 2
	if len(vs)%2 == 1 {
		return vs[m]
	}
	return (vs[m-1] + vs[m]) / 2
}
