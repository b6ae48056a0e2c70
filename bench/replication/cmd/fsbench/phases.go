package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/halo-ha/halo/bench/replication"
	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
)

func journalGen(g uint64) journal.Generation { return journal.Generation{Current: g} }

// Configurations, in table order.
var setups = []string{"plain", "capture", "replicated"}

var workloads = []string{"seq", "rand4k", "small", "untar"}

type report struct {
	load    []string
	sizes   replication.Sizes
	tarball string
	// samples[setup][workload]
	samples map[string]map[string][]replication.Sample
	resync  []resyncRow
	notes   []string
}

type resyncRow struct {
	name   string
	files  int
	bytes  int64
	took   []time.Duration
	sent   []int64
	change int64
}

func (r *report) add(setup, wl string, s replication.Sample) {
	if r.samples == nil {
		r.samples = map[string]map[string][]replication.Sample{}
	}
	if r.samples[setup] == nil {
		r.samples[setup] = map[string][]replication.Sample{}
	}
	r.samples[setup][wl] = append(r.samples[setup][wl], s)
}

// tarball returns the source tree to untar: the Go tree's src, packed
// once into the scratch directory.
func (b *bed) tarball() (string, error) {
	if b.o.tarball != "" {
		return b.o.tarball, nil
	}
	p := filepath.Join(b.o.dir, "gosrc.tar")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("find GOROOT: %w", err)
	}
	root := strings.TrimSpace(string(out))
	if err := run("tar", "-cf", p+".tmp", "-C", root, "src"); err != nil {
		return "", err
	}
	return p, os.Rename(p+".tmp", p)
}

// fsPhases runs every workload runs times on each setup. Before every
// workload the page cache is dropped (after a sync), so that no workload
// pays for the previous one's writeback.
func (b *bed) fsPhases(rep *report) error {
	sizes := replication.Full.Scale(b.o.scale)
	rep.sizes = sizes
	tb, err := b.tarball()
	if err != nil {
		return err
	}
	rep.tarball = tb
	plain := filepath.Join(b.o.dir, "plain")
	if err := os.MkdirAll(plain, 0o755); err != nil {
		return err
	}
	mounted := b.cfg.Nodes["n1"].Repl
	for _, setup := range setups {
		if !slices.Contains(strings.Split(b.o.setups, ","), setup) {
			continue
		}
		dir := plain
		switch setup {
		case "capture":
			dir = mounted // the daemon starts in role none: captured, journaled, no peer
		case "replicated":
			progress("full resync before the replicated runs")
			if _, _, err := b.fullResync(); err != nil {
				return err
			}
			if err := b.waitInSync(); err != nil {
				return err
			}
		}
		if setup != "plain" {
			dir = mounted
		}
		for r := range b.o.runs {
			for _, wl := range workloads {
				if !slices.Contains(strings.Split(b.o.workloads, ","), wl) {
					continue
				}
				work := filepath.Join(dir, fmt.Sprintf("%s-%d", wl, r))
				if err := os.MkdirAll(work, 0o755); err != nil {
					return fmt.Errorf("create %s: %w", work, err)
				}
				if wl == "rand4k" {
					if err := replication.PrepareRand(work, sizes.RandFile); err != nil {
						return err
					}
				}
				if err := replication.DropCaches(); err != nil {
					return err
				}
				prof := b.o.profile != "" && setup == "replicated" && r == 0
				if prof {
					if err := os.MkdirAll(b.o.profile, 0o755); err != nil {
						return err
					}
					if err := b.startProfile(filepath.Join(b.o.profile, wl+".pprof")); err != nil {
						return fmt.Errorf("start profile: %w", err)
					}
				}
				var s replication.Sample
				switch wl {
				case "seq":
					s, err = replication.SeqWrite(work, sizes.SeqBytes)
				case "rand4k":
					s, err = replication.RandWrite(work, sizes.RandFile, sizes.RandFor)
				case "small":
					s, err = replication.SmallFiles(work, sizes.SmallFiles, sizes.SmallSize)
				case "untar":
					s, err = replication.Untar(context.Background(), work, tb)
				}
				if prof {
					b.stopProfile()
				}
				if err != nil {
					return fmt.Errorf("%s on %s: %w", wl, setup, err)
				}
				progress("%-10s run %d %-6s %v", setup, r+1, wl, s.Took.Round(time.Millisecond))
				rep.add(setup, wl, s)
				if err := os.RemoveAll(work); err != nil {
					return fmt.Errorf("remove %s: %w", work, err)
				}
			}
		}
	}
	// Back to role none: the resync phases start from a clean state.
	_, err = b.call("n1", ctl.Request{Op: ctl.OpRole, Role: ctl.RoleNone, Gen: b.gen + 1})
	return err
}

// waitInSync waits until n1 says its writes wait for n2.
func (b *bed) waitInSync() error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := b.call("n1", ctl.Request{Op: ctl.OpStatus})
		if err != nil {
			return err
		}
		if resp.Status.PeerInSync {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("n1 does not report its peer in sync")
}

// resyncPhases makes the same tree under both nodes' directories (daemons
// stopped), then times full resyncs: identical (hash check only), and
// with 1 % of the files (and bytes) rewritten on n1.
func (b *bed) resyncPhases(rep *report) error {
	files, total := b.o.resyncFiles, b.o.resyncBytes
	b.stopAll()
	roots := []string{filepath.Join(b.cfg.Nodes["n1"].Repl, "tree"), filepath.Join(b.cfg.Nodes["n2"].Repl, "tree")}
	marker := filepath.Join(b.o.dir, fmt.Sprintf("tree.complete-%d-%d", files, total))
	if _, err := os.Stat(marker); err != nil {
		for _, r := range roots {
			if err := os.RemoveAll(r); err != nil {
				return err
			}
		}
		progress("making two identical trees of %d files, %d bytes", files, total)
		start := time.Now()
		if err := makeTrees(roots, files, total, 0); err != nil {
			return err
		}
		progress("trees made in %v", time.Since(start).Round(time.Second))
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return err
		}
	}
	if !b.o.keepTree {
		defer func() {
			progress("removing the trees")
			for _, r := range roots {
				_ = os.RemoveAll(r)
			}
			_ = os.Remove(marker)
		}()
	}
	ident := resyncRow{name: "identical (hash check)", files: files, bytes: total}
	changed := resyncRow{name: "1 % of files rewritten", files: files, bytes: total}
	for r := range b.o.runs {
		for _, row := range []*resyncRow{&ident, &changed} {
			if row == &changed {
				n, err := changeTree(roots[0], files, total, uint64(r+1))
				if err != nil {
					return err
				}
				row.change = n
			}
			if err := replication.DropCaches(); err != nil {
				return err
			}
			if err := b.startAll(); err != nil {
				return err
			}
			st, took, err := b.fullResync()
			if err != nil {
				return err
			}
			b.stopAll()
			var sent int64
			if st != nil {
				sent = st.Sent
			}
			progress("resync %s run %d: %v, %d bytes sent", row.name, r+1, took.Round(time.Millisecond), sent)
			row.took = append(row.took, took)
			row.sent = append(row.sent, sent)
		}
	}
	rep.resync = append(rep.resync, ident, changed)
	return b.startAll()
}

// fileSize is the size of file i in a tree of files totalling total bytes
// (all the same but the remainder spread over the first ones).
func fileSize(i, files int, total int64) int64 {
	s := total / int64(files)
	if int64(i) < total%int64(files) {
		s++
	}
	return s
}

func treePath(root string, i int) string {
	return filepath.Join(root, fmt.Sprintf("d%04d", i/1000), fmt.Sprintf("f%d", i))
}

// fixedTime is every file's and directory's mtime in the trees, so that
// both copies are identical in metadata too.
var fixedTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// makeTrees writes the same files under every root, in parallel.
func makeTrees(roots []string, files int, total int64, seed uint64) error {
	dirs := (files + 999) / 1000
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	const workers = 4
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, 0, 1<<20)
			for d := w; d < dirs; d += workers {
				for _, root := range roots {
					if err := os.MkdirAll(filepath.Join(root, fmt.Sprintf("d%04d", d)), 0o755); err != nil {
						errs <- err
						return
					}
				}
				for i := d * 1000; i < min(files, (d+1)*1000); i++ {
					buf = fileContent(buf, i, fileSize(i, files, total), seed)
					for _, root := range roots {
						p := treePath(root, i)
						if err := os.WriteFile(p, buf, 0o644); err != nil {
							errs <- err
							return
						}
						if err := os.Chtimes(p, fixedTime, fixedTime); err != nil {
							errs <- err
							return
						}
					}
				}
				for _, root := range roots {
					dp := filepath.Join(root, fmt.Sprintf("d%04d", d))
					if err := os.Chtimes(dp, fixedTime, fixedTime); err != nil {
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
		return fmt.Errorf("make trees: %w", err)
	default:
	}
	for _, root := range roots {
		if err := os.Chtimes(root, fixedTime, fixedTime); err != nil {
			return err
		}
	}
	return nil
}

// changeTree rewrites every 100th file (offset by seed) with new content
// of the same size; it returns the bytes rewritten.
func changeTree(root string, files int, total int64, seed uint64) (int64, error) {
	var n int64
	buf := make([]byte, 0, 1<<20)
	for i := int(seed % 100); i < files; i += 100 {
		size := fileSize(i, files, total)
		buf = fileContent(buf, i, size, seed)
		if err := os.WriteFile(treePath(root, i), buf, 0o644); err != nil {
			return 0, fmt.Errorf("change tree: %w", err)
		}
		n += size
	}
	return n, nil
}

func fileContent(buf []byte, i int, size int64, seed uint64) []byte {
	buf = buf[:0]
	stamp := fmt.Sprintf("file %d seed %d\n", i, seed)
	for int64(len(buf)) < size {
		buf = append(buf, stamp...)
	}
	return buf[:size]
}

// print renders the report.
func (r *report) print(w io.Writer, o options) {
	fmt.Fprintf(w, "halo replicated filesystem benchmark, %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "runs per cell: %d (median shown); page cache dropped (sync; drop_caches=3) before every workload run\n", o.runs)
	fmt.Fprintf(w, "loadavg at start: %s; at end: %s\n", r.load[0], r.load[len(r.load)-1])
	if r.samples != nil {
		s := r.sizes
		fmt.Fprintf(w, "sizes: sequential %d MiB in 1 MiB blocks + fsync; 4 KiB random write+fsync for %v in a %d MiB file; %d files of %d B create+write+fsync; untar %s + syncfs\n",
			s.SeqBytes>>20, s.RandFor, s.RandFile>>20, s.SmallFiles, s.SmallSize, filepath.Base(r.tarball))
		fmt.Fprintln(w, "setups: plain = directory on the same disk; capture = FUSE capture mount, daemon in role none (journaling, no peer); replicated = sync mode to a peer daemon in another network namespace over mutual TLS")
		fmt.Fprintln(w)
		cells := [][]string{{"workload", "metric", "plain", "capture", "ratio", "replicated", "ratio"}}
		row := func(label, wl, metric string, f func([]replication.Sample) float64, format string, higherBetter bool) {
			vals := map[string]float64{}
			c := []string{label, metric}
			for _, st := range setups {
				if ss := r.samples[st][wl]; len(ss) > 0 {
					vals[st] = f(ss)
				}
			}
			for _, st := range setups {
				v, ok := vals[st]
				if !ok {
					c = append(c, "-")
					if st != "plain" {
						c = append(c, "-")
					}
					continue
				}
				c = append(c, fmt.Sprintf(format, v))
				if st != "plain" {
					c = append(c, ratio(vals["plain"], v, higherBetter))
				}
			}
			cells = append(cells, c)
		}
		med := func(g func(replication.Sample) float64) func([]replication.Sample) float64 {
			return func(ss []replication.Sample) float64 {
				var vs []float64
				for _, s := range ss {
					vs = append(vs, g(s))
				}
				return replication.Median(vs)
			}
		}
		row("seq write", "seq", "MB/s", med(func(s replication.Sample) float64 { return float64(s.Bytes) / 1e6 / s.Took.Seconds() }), "%.0f", true)
		row("4k write+fsync", "rand4k", "IOPS", med(func(s replication.Sample) float64 { return float64(s.Ops) / s.Took.Seconds() }), "%.0f", true)
		row("", "rand4k", "p50 ms", med(func(s replication.Sample) float64 { return ms(replication.Percentile(s.Lat, 50)) }), "%.3f", false)
		row("", "rand4k", "p99 ms", med(func(s replication.Sample) float64 { return ms(replication.Percentile(s.Lat, 99)) }), "%.3f", false)
		row("small files", "small", "s", med(func(s replication.Sample) float64 { return s.Took.Seconds() }), "%.2f", false)
		row("untar", "untar", "s", med(func(s replication.Sample) float64 { return s.Took.Seconds() }), "%.2f", false)
		writeTable(w, cells)
		fmt.Fprintln(w, "ratio: setup/plain for rates, plain/setup for times and latencies (1.00 = as fast as plain disk)")
	}
	if len(r.resync) > 0 {
		fmt.Fprintln(w)
		cells := [][]string{{"full resync", "files", "GiB", "changed MiB", "runs", "median s", "median sent MiB"}}
		for _, row := range r.resync {
			var ts, ss []float64
			for i := range row.took {
				ts = append(ts, row.took[i].Seconds())
				ss = append(ss, float64(row.sent[i])/(1<<20))
			}
			cells = append(cells, []string{row.name, fmt.Sprint(row.files), fmt.Sprintf("%.1f", float64(row.bytes)/(1<<30)),
				fmt.Sprintf("%.1f", float64(row.change)/(1<<20)), fmt.Sprint(len(row.took)),
				fmt.Sprintf("%.1f", replication.Median(ts)), fmt.Sprintf("%.1f", replication.Median(ss))})
		}
		writeTable(w, cells)
		fmt.Fprintln(w, "each resync: daemons restarted after drop_caches, full resync n1 -> n2 over mutual TLS, time from the request to the target's done event")
	}
	for _, n := range r.notes {
		fmt.Fprintln(w, n)
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// ratio prints how a setup's value compares to plain's: for rates v/plain,
// for times plain/v, so that 1.00 is "as fast as plain" and smaller is
// slower.
func ratio(plain, v float64, higherBetter bool) string {
	if plain == 0 || v == 0 {
		return "-"
	}
	if higherBetter {
		return fmt.Sprintf("%.2f", v/plain)
	}
	return fmt.Sprintf("%.2f", plain/v)
}

func writeTable(w io.Writer, cells [][]string) {
	widths := make([]int, len(cells[0]))
	for _, c := range cells {
		for i, s := range c {
			widths[i] = max(widths[i], len(s))
		}
	}
	for k, c := range cells {
		var parts []string
		for i, s := range c {
			parts = append(parts, fmt.Sprintf("%-*s", widths[i], s))
		}
		fmt.Fprintln(w, strings.TrimRight(strings.Join(parts, " | "), " "))
		if k == 0 {
			var seps []string
			for _, wd := range widths {
				seps = append(seps, strings.Repeat("-", wd))
			}
			fmt.Fprintln(w, strings.Join(seps, "-|-"))
		}
	}
}
