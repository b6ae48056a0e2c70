package resync

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/apply"
	"github.com/halo-ha/halo/internal/replication/op"
)

// treeApplier applies ops with the replication's apply package, counting
// them by kind.
type treeApplier struct {
	t      *apply.Tree
	mu     sync.Mutex
	counts map[op.Kind]int
	writes int64
	hook   func(o *op.Op)
}

func newApplier(tb testing.TB, root string) *treeApplier {
	tb.Helper()
	t, err := apply.Open(root)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { t.Close() })
	return &treeApplier{t: t, counts: map[op.Kind]int{}}
}

func (a *treeApplier) Apply(o *op.Op) error {
	if a.hook != nil {
		a.hook(o)
	}
	a.mu.Lock()
	a.counts[o.Kind]++
	if o.Kind == op.Write {
		a.writes += int64(len(o.Data))
	}
	a.mu.Unlock()
	return a.t.Apply(*o)
}

// loopbackConns returns n connected TCP pairs on 127.0.0.1.
func loopbackConns(tb testing.TB, n int) (src, tgt []Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	for range n {
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				accepted <- nil
				return
			}
			accepted <- c
		}()
		d, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		a := <-accepted
		if a == nil {
			tb.Fatal("accept failed")
		}
		src = append(src, a)
		tgt = append(tgt, d)
	}
	tb.Cleanup(func() {
		for _, c := range append(src, tgt...) {
			c.Close()
		}
	})
	return src, tgt
}

type sessionResult struct {
	src, tgt       Result
	srcErr, tgtErr error
}

// runSession runs both ends over n loopback connections.
func runSession(ctx context.Context, tb testing.TB, n int, scfg SourceConfig, tcfg TargetConfig) sessionResult {
	tb.Helper()
	sc, tc := loopbackConns(tb, n)
	var r sessionResult
	var wg sync.WaitGroup
	wg.Go(func() { r.src, r.srcErr = RunSource(ctx, sc, scfg) })
	wg.Go(func() { r.tgt, r.tgtErr = RunTarget(ctx, tc, tcfg) })
	wg.Wait()
	return r
}

func (r sessionResult) check(tb testing.TB) {
	tb.Helper()
	if r.srcErr != nil || r.tgtErr != nil {
		tb.Fatalf("session failed: source: %v; target: %v", r.srcErr, r.tgtErr)
	}
}

// fullResync runs a full resync from src to tgt over n connections.
func fullResync(tb testing.TB, srcRoot, tgtRoot string, n int, opt Options) (sessionResult, *treeApplier) {
	tb.Helper()
	a := newApplier(tb, tgtRoot)
	r := runSession(context.Background(), tb, n,
		SourceConfig{Root: srcRoot, Options: opt},
		TargetConfig{Root: tgtRoot, Apply: a, Request: Request{Kind: RequestFull}})
	return r, a
}

// assertSame fails with every difference between both trees.
func assertSame(tb testing.TB, srcRoot, tgtRoot string, excludes ...string) {
	tb.Helper()
	diffs := diffRoots(tb, srcRoot, tgtRoot, excludes...)
	for _, d := range diffs {
		tb.Errorf("difference: %s", d)
	}
	if len(diffs) > 0 {
		tb.FailNow()
	}
}

func diffRoots(tb testing.TB, srcRoot, tgtRoot string, excludes ...string) []Difference {
	tb.Helper()
	s, err := Scan(context.Background(), srcRoot, ScanOptions{Hash: true, Excludes: excludes})
	if err != nil {
		tb.Fatal(err)
	}
	t, err := Scan(context.Background(), tgtRoot, ScanOptions{Hash: true, Excludes: excludes})
	if err != nil {
		tb.Fatal(err)
	}
	return Compare(s, t, DefaultCompareOptions)
}

func write(tb testing.TB, root, rel string, data []byte) {
	tb.Helper()
	mustWrite(tb, filepath.Join(root, rel), data, 0o644)
}

func mkdir(tb testing.TB, root, rel string, mode os.FileMode) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Join(root, rel), mode); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, rel), mode); err != nil {
		tb.Fatal(err)
	}
}

func symlink(tb testing.TB, root, target, rel string) {
	tb.Helper()
	if err := os.Symlink(target, filepath.Join(root, rel)); err != nil {
		tb.Fatal(err)
	}
}

func link(tb testing.TB, root, old, rel string) {
	tb.Helper()
	if err := os.Link(filepath.Join(root, old), filepath.Join(root, rel)); err != nil {
		tb.Fatal(err)
	}
}

func setTimes(tb testing.TB, root, rel string, at time.Time) {
	tb.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(at.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, rel), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		tb.Fatal(err)
	}
}

// pattern returns n bytes that differ with seed.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func isPermission(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}
