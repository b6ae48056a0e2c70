package resync

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/op"
)

func readManifest(t *testing.T, dir string) Manifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// checkQuarantined compares the manifest with the files and their
// expected contents (the target's before the resync).
func checkQuarantined(t *testing.T, dir string, want map[string][]byte, reasons map[string]string) {
	t.Helper()
	m := readManifest(t, dir)
	var got []string
	for _, f := range m.Files {
		got = append(got, f.Path)
		data, err := os.ReadFile(filepath.Join(dir, f.Path))
		if err != nil {
			t.Errorf("quarantined %s: %v", f.Path, err)
			continue
		}
		if w, ok := want[f.Path]; !ok || !bytes.Equal(data, w) {
			t.Errorf("quarantined %s holds %d bytes, want the target's %d (listed: %v)", f.Path, len(data), len(w), ok)
		}
		if h := "xxh3-128:" + Sum(xxh3.Hash128(data).Bytes()).String(); f.Hash != h || f.Size != int64(len(data)) {
			t.Errorf("manifest of %s: size %d hash %s, file has %d bytes hash %s", f.Path, f.Size, f.Hash, len(data), h)
		}
		if r := reasons[f.Path]; r != "" && f.Reason != r {
			t.Errorf("manifest of %s: reason %q, want %q", f.Path, f.Reason, r)
		}
		if f.Mtime.IsZero() {
			t.Errorf("manifest of %s: no mtime", f.Path)
		}
	}
	var wantPaths []string
	for p := range want {
		wantPaths = append(wantPaths, p)
	}
	sort.Strings(wantPaths)
	if !slicesEqual(got, wantPaths) {
		t.Errorf("quarantined %q, want %q", got, wantPaths)
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestQuarantineFullResync(t *testing.T) {
	src, tgt := t.TempDir(), t.TempDir()
	write(t, src, "same", []byte("same"))
	write(t, tgt, "same", []byte("same"))
	write(t, src, "changed", pattern(3*DefaultBlockSize, 1))
	write(t, tgt, "changed", pattern(3*DefaultBlockSize, 2))
	write(t, tgt, "only-target/a", []byte("written during the split"))
	write(t, tgt, "only-target/b", []byte("also"))
	write(t, src, "only-source", []byte("new"))
	write(t, src, "mode", []byte("m"))
	write(t, tgt, "mode", []byte("m"))
	os.Chmod(filepath.Join(tgt, "mode"), 0o600)
	setTimes(t, src, "same", time.Unix(1e9, 0))
	setTimes(t, tgt, "same", time.Unix(1e9, 0))
	want := map[string][]byte{}
	for _, p := range []string{"changed", "only-target/a", "only-target/b", "mode"} {
		b, _ := os.ReadFile(filepath.Join(tgt, p))
		want[p] = b
	}
	qbase := filepath.Join(t.TempDir(), "splitbrain")
	a := newApplier(t, tgt)
	r := runSession(context.Background(), t, 2, SourceConfig{Root: src},
		TargetConfig{Root: tgt, Apply: a, Request: Request{Kind: RequestFull, Quarantine: qbase}})
	r.check(t)
	assertSame(t, src, tgt)
	if r.tgt.Quarantine == "" || r.tgt.QuarantinedFiles != len(want) || filepath.Dir(r.tgt.Quarantine) != qbase {
		t.Fatalf("quarantine %q with %d files, want %d under %s", r.tgt.Quarantine, r.tgt.QuarantinedFiles, len(want), qbase)
	}
	if r.src.Quarantine != r.tgt.Quarantine {
		t.Errorf("source reports quarantine %q, target %q", r.src.Quarantine, r.tgt.Quarantine)
	}
	checkQuarantined(t, r.tgt.Quarantine, want, map[string]string{
		"changed": ReasonOverwritten, "only-target/a": ReasonDeleted, "mode": ReasonOverwritten})
	// A resync with nothing to lose makes no folder.
	r2 := runSession(context.Background(), t, 1, SourceConfig{Root: src},
		TargetConfig{Root: tgt, Apply: newApplier(t, tgt), Request: Request{Kind: RequestFull, Quarantine: qbase}})
	r2.check(t)
	if r2.tgt.Quarantine != "" {
		t.Errorf("identical trees quarantined into %s", r2.tgt.Quarantine)
	}
}

func TestQuarantineIncrementalResync(t *testing.T) {
	src, tgt := sameBase(t, 6, 200000)
	js, jt := newJournaledTree(t, src, baseGen), newJournaledTree(t, tgt, baseGen)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Both sides served alone: split brain.
	must(js.WriteAt("d0/f0", 10, []byte("source")))
	must(js.WriteAt("d1/f1", 10, []byte("source")))
	must(jt.WriteAt("d1/f1", 70000, []byte("target's write")))
	must(jt.Create("d2/made-on-target", []byte("new on the target")))
	must(jt.Mkdir("newdir"))
	must(jt.Create("newdir/inside", []byte("inside a new directory")))
	must(jt.Chmod("d2/f2", 0o600))
	want := map[string][]byte{}
	for _, p := range []string{"d1/f1", "d2/made-on-target", "newdir/inside", "d2/f2"} {
		b, _ := os.ReadFile(filepath.Join(tgt, p))
		want[p] = b
	}
	qbase := filepath.Join(t.TempDir(), "q")
	r := runSession(context.Background(), t, 2,
		SourceConfig{Root: src, Map: func() (*journal.ZoneMap, error) { return js.Snapshot(), nil }},
		TargetConfig{Root: tgt, Apply: newApplier(t, tgt),
			Request: Request{Kind: RequestIncremental, Since: baseGen, Map: jt.Snapshot(), Quarantine: qbase}})
	r.check(t)
	assertSame(t, src, tgt)
	if r.tgt.QuarantinedFiles != len(want) {
		t.Errorf("%d files quarantined, want %d", r.tgt.QuarantinedFiles, len(want))
	}
	// d0/f0 changed on the source only: the target lost nothing there.
	checkQuarantined(t, r.tgt.Quarantine, want, map[string]string{"d1/f1": ReasonChanged})
}

func TestBandwidthCap(t *testing.T) {
	src, tgt := t.TempDir(), t.TempDir()
	const size = 6 << 20
	write(t, src, "a", pattern(size/2, 1))
	write(t, src, "b", pattern(size/2, 2))
	const limit = 3 << 20 // bytes per second: about two seconds
	start := time.Now()
	r, _ := fullResync(t, src, tgt, 3, Options{RateLimit: limit})
	took := time.Since(start)
	r.check(t)
	assertSame(t, src, tgt)
	rate := float64(r.src.SentBytes) / took.Seconds()
	t.Logf("%d bytes in %v: %.2f MiB/s for a cap of %.2f MiB/s", r.src.SentBytes, took, rate/(1<<20), float64(limit)/(1<<20))
	if rate > limit*1.15 || rate < limit*0.85 {
		t.Errorf("rate %.0f B/s, cap %d B/s (±15%%)", rate, limit)
	}
}

func TestCancelStopsBothEnds(t *testing.T) {
	src, tgt := t.TempDir(), t.TempDir()
	write(t, src, "big", pattern(8<<20, 3))
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	a := newApplier(t, tgt)
	r := runSession(ctx, t, 2, SourceConfig{Root: src, Options: Options{RateLimit: 1 << 20}},
		TargetConfig{Root: tgt, Apply: a, Request: Request{Kind: RequestFull}})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("cancelled session took %v", took)
	}
	if !errors.Is(r.srcErr, context.Canceled) || !errors.Is(r.tgtErr, context.Canceled) {
		t.Errorf("after cancel: source %v, target %v", r.srcErr, r.tgtErr)
	}
	if a.writes >= 8<<20 {
		t.Errorf("the whole file was sent before the cancel took effect")
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Errorf("%d goroutines left running (%d before)", n, before)
	}
}

func TestProgressReportsAndETA(t *testing.T) {
	src, tgt := t.TempDir(), t.TempDir()
	// Long enough (about 3 s at the cap) for several reports with a
	// measured rate even when the machine is loaded.
	write(t, src, "a", pattern(6<<20, 1))
	var last Progress
	var calls int
	a := newApplier(t, tgt)
	var targetSaw []Progress
	r := runSession(context.Background(), t, 1,
		SourceConfig{Root: src, Options: Options{RateLimit: 2 << 20, BlockSize: 128 << 10, Progress: func(p Progress) { last = p; calls++ }}},
		TargetConfig{Root: tgt, Apply: a, Request: Request{Kind: RequestFull}, Progress: func(p Progress) { targetSaw = append(targetSaw, p) }})
	r.check(t)
	if calls < 2 || last.Phase != "done" || last.BytesDone != 6<<20 || last.BytesTotal != 6<<20 || last.FilesDone != 1 {
		t.Errorf("%d progress calls, last %+v", calls, last)
	}
	var sawETA bool
	for _, p := range targetSaw {
		if p.ETA > 0 && p.BytesPerSec > 0 {
			sawETA = true
		}
	}
	if len(targetSaw) < 2 || !sawETA {
		t.Errorf("the target saw %d reports (%+v), none with a rate and an ETA", len(targetSaw), targetSaw)
	}
}

// A corrupt frame ends the session with a protocol error and changes
// nothing on the target.
func TestCorruptFrameIsRefused(t *testing.T) {
	tgt := t.TempDir()
	write(t, tgt, "keep", []byte("untouched"))
	srcC, tgtC := net.Pipe()
	defer srcC.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := RunTarget(context.Background(), []Conn{tgtC}, TargetConfig{Root: tgt, Apply: newApplier(t, tgt), Request: Request{Kind: RequestFull}})
		errc <- err
	}()
	// Play a source: preamble, read the hello, answer, then send an op
	// frame whose checksum is wrong.
	go func() {
		writePreamble(srcC, 0, 1)
	}()
	if err := readPreamble(srcC, 0, 1); err != nil {
		t.Fatal(err)
	}
	fc := newFrameConn(srcC, nil, nil, nil)
	if typ, _, err := fc.readFrame(); err != nil || typ != msgHello {
		t.Fatalf("hello: %d %v", typ, err)
	}
	fc.send(context.Background(), msgHelloOK, []byte(`{"block_size":1048576}`))
	var e enc
	e.u8(0)
	e.uv(1)
	e.op(&opUnlinkKeep)
	frame := make([]byte, 0, len(e.b)+9)
	frame = binary.LittleEndian.AppendUint32(frame, uint32(len(e.b)+1))
	frame = append(frame, msgOps)
	frame = append(frame, e.b...)
	frame = binary.LittleEndian.AppendUint32(frame, crc32.Checksum(frame[4:], castagnoli)^1)
	go srcC.Write(frame)
	go func() { // the target's abort
		buf := make([]byte, 4096)
		for {
			if _, err := srcC.Read(buf); err != nil {
				return
			}
		}
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("corrupt frame: %v, want a protocol error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the target did not notice the corrupt frame")
	}
	if b, err := os.ReadFile(filepath.Join(tgt, "keep")); err != nil || string(b) != "untouched" {
		t.Errorf("the corrupt frame changed the target: %q %v", b, err)
	}
}

func FuzzDecodeEntries(f *testing.F) {
	var e enc
	x := Entry{Path: "a/b", Kind: journal.KindFile, Mode: 0o100644, Size: 5, Hashed: true, Xattrs: []Xattr{{"user.a", []byte("v")}}}
	e.entry(&x, "")
	y := Entry{Path: "a/c", Kind: journal.KindSymlink, Target: "b"}
	e.entry(&y, x.Path)
	f.Add(e.b)
	f.Fuzz(func(t *testing.T, b []byte) {
		d := dec{b: b}
		prev := ""
		for len(d.b) > 0 && d.err == nil {
			x := d.entry(prev)
			if d.err == nil {
				if err := checkRel(x.Path); err != nil {
					t.Fatalf("decoded a bad path %q", x.Path)
				}
				prev = x.Path
			}
		}
	})
}

func FuzzDecodeOps(f *testing.F) {
	var e enc
	e.op(&opUnlinkKeep)
	f.Add(e.b)
	f.Fuzz(func(t *testing.T, b []byte) {
		d := dec{b: b}
		for len(d.b) > 0 && d.err == nil {
			o := d.op()
			if d.err == nil && o.Validate() == nil && (filepath.IsAbs(o.Path) || o.Path == "..") {
				t.Fatalf("validated a path leaving the tree: %q", o.Path)
			}
		}
	})
}

var opUnlinkKeep = op.Op{Kind: op.Unlink, Path: "keep"}
