package replication

import (
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/test/mirror/mirrorbed"
)

const (
	baseSize  = 32 << 20 // the big file both nodes hold before a fault
	smallN    = 100      // small files both hold
	zoneBytes = 64 << 10 // the module's journal zone (the default)
	// resyncOverhead is what an incremental resync may send beyond the
	// changed bytes (requests, listings, frame headers, metadata).
	resyncOverhead = 512 << 10
)

// writeBase lays out the tree both nodes hold before the scenarios.
func writeBase(t *testing.T, dir string) {
	t.Helper()
	data := make([]byte, baseSize)
	_, _ = rand.Read(data)
	mustWrite(t, filepath.Join(dir, "base.dat"), data)
	if err := os.MkdirAll(filepath.Join(dir, "small"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range smallN {
		b := make([]byte, 4<<10)
		_, _ = rand.Read(b)
		mustWrite(t, filepath.Join(dir, "small", fmt.Sprintf("f%03d", i)), b)
	}
}

func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// change modifies the tree in dir (through the serving node's mount) and
// returns the bytes it changed: 64 zones of base.dat rewritten, 10 small
// files rewritten, one new 1 MiB file, and two hard links.
func change(t *testing.T, dir string, round int) int64 {
	t.Helper()
	rng := mrand.New(mrand.NewPCG(uint64(round), 7))
	f, err := os.OpenFile(filepath.Join(dir, "base.dat"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	zones := rng.Perm(baseSize / zoneBytes)[:64]
	buf := make([]byte, zoneBytes)
	for _, z := range zones {
		_, _ = rand.Read(buf)
		if _, err := f.WriteAt(buf, int64(z)*zoneBytes); err != nil {
			t.Fatal(err)
		}
		n += zoneBytes
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, i := range rng.Perm(smallN)[:10] {
		b := make([]byte, 4<<10)
		_, _ = rand.Read(b)
		mustWrite(t, filepath.Join(dir, "small", fmt.Sprintf("f%03d", i)), b)
		n += int64(len(b))
	}
	nb := make([]byte, 1<<20)
	_, _ = rand.Read(nb)
	newName := fmt.Sprintf("new-%d.dat", round)
	mustWrite(t, filepath.Join(dir, newName), nb)
	// Hard links, which carry no data: another name of the new file, and
	// one of base.dat; the resync must make them links on the peer too
	// (halo verify compares the link structure).
	for from, to := range map[string]string{newName: fmt.Sprintf("link-%d", round), "base.dat": fmt.Sprintf("base-link-%d", round)} {
		if err := os.Link(filepath.Join(dir, from), filepath.Join(dir, "small", to)); err != nil {
			t.Fatal(err)
		}
	}
	return n + int64(len(nb))
}

// SPEC §2.2 "failed node returns": it receives only what changed. Each
// scenario changes 5.1 MiB of a 36 MiB tree while one node is away and
// checks that the resync's network bytes stay within 1.2 × the change plus
// a fixed protocol allowance.
func TestIncrementalResyncVolume(t *testing.T) {
	rc := newReplCluster(t, clusterOpts{})
	prim, second := rc.firstStart()
	writeBase(t, rc.dirs[prim.Name])
	waitClean(t, prim)
	waitClean(t, second)
	rc.waitVerified(prim)

	type scenario struct {
		name string
		// fault takes a node away; it returns the node that keeps
		// serving and the one that comes back, and brings it back.
		away func() (serving, back *mirrorbed.Node)
		back func(n *mirrorbed.Node)
	}
	scenarios := []scenario{
		{
			name: "clean stop of the secondary",
			away: func() (*mirrorbed.Node, *mirrorbed.Node) {
				if err := second.Command(ctxFor(t, 30*time.Second), "stop"); err != nil {
					t.Fatal(err)
				}
				waitState(t, second, "STOP", "")
				waitState(t, prim, "ALONE", "Ready")
				return prim, second
			},
			back: func(n *mirrorbed.Node) {
				if err := n.Command(ctxFor(t, 30*time.Second), "start"); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "kill -9 of the secondary",
			away: func() (*mirrorbed.Node, *mirrorbed.Node) {
				rc.powerOff(second)
				waitState(t, prim, "ALONE", "Ready")
				return prim, second
			},
			back: func(n *mirrorbed.Node) {
				if err := n.Restart(ctxFor(t, waitLong), true); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "kill -9 of the primary",
			away: func() (*mirrorbed.Node, *mirrorbed.Node) {
				rc.powerOff(prim)
				waitState(t, second, "ALONE", "Ready")
				return second, prim
			},
			back: func(n *mirrorbed.Node) {
				if err := n.Restart(ctxFor(t, waitLong), true); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for i, sc := range scenarios {
		// The node that goes away may be killed: read where its event
		// log is now.
		seqs := map[string]uint64{prim.Name: lastSeq(t, prim), second.Name: lastSeq(t, second)}
		// What the resync will be planned from besides the change: both
		// journals should be empty.
		t.Logf("%s: before the fault: %s; %s", sc.name, journalState(t, prim), journalState(t, second))
		began := time.Now()
		serving, away := sc.away()
		changed := change(t, rc.dirs[serving.Name], i)
		seq := seqs[away.Name]
		estimate := int64(-1)
		if i == 0 {
			// The stopped node's daemon still runs: both tools compare
			// with it before the resync.
			estimate = checkToolsSeeChange(t, rc, serving)
		}
		sc.back(away)
		waitRoles(t, serving, away)
		r := waitResync(t, away, seq)
		rc.waitVerified(serving)
		limit := changed*12/10 + resyncOverhead
		t.Logf("%s: %d bytes changed, resync %s (%.2f × the change), limit %d", sc.name, changed, r, float64(r.network)/float64(changed), limit)
		if r.kind != "incremental" {
			t.Errorf("%s: resync was %s, want incremental", sc.name, r.kind)
		}
		// halo diff plans from the same journals: its estimate is what
		// the resync then sends, give or take 20 % (nothing writes meanwhile).
		if estimate >= 0 && (estimate > r.data*12/10+estimateSlack || r.data > estimate*12/10+estimateSlack) {
			t.Errorf("%s: halo diff estimated %d bytes; the resync sent %d data bytes", sc.name, estimate, r.data)
		}
		if r.network > limit {
			t.Errorf("%s: resync sent %d bytes for %d changed (limit %d); the daemons' resync lines:\n%s\n%s", sc.name, r.network, changed, limit,
				resyncLines(t, serving, began), resyncLines(t, away, began))
		}
		prim, second = serving, away
		waitClean(t, prim)
		waitClean(t, second)
	}
}

// journalState is node n's journal as its daemon reports it now.
func journalState(t *testing.T, n *mirrorbed.Node) string {
	t.Helper()
	m, err := n.Status(ctxFor(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	r := m.Replication
	if r == nil || !r.Up {
		return n.Name + " journal unknown"
	}
	return fmt.Sprintf("%s journal %d dirty zones, %d paths, %d bytes (status of %v ago)", n.Name, r.DirtyZones, r.DirtyPaths, r.DirtyBytes, time.Since(r.UpdatedAt).Round(time.Millisecond))
}

// resyncLines returns the lines of n's replication daemon log about
// resyncs and the stream, logged since since.
func resyncLines(t *testing.T, n *mirrorbed.Node, since time.Time) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.DataDir, module, "repl.log"))
	if err != nil {
		return fmt.Sprintf("%s: %v", n.Name, err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		stamp, _, _ := strings.Cut(l, " ")
		at, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil || at.Before(since) || !(strings.Contains(l, "resync") || strings.Contains(l, "stream")) {
			continue
		}
		out = append(out, "  "+n.Name+": "+l)
	}
	return strings.Join(out, "\n")
}

// checkToolsSeeChange: halo verify lists the differences and exits 1,
// halo diff estimates an incremental resync of some bytes (returned), halo
// status -v shows the replication resources.
func checkToolsSeeChange(t *testing.T, rc *replCluster, n *mirrorbed.Node) int64 {
	t.Helper()
	out, same := rc.verify(n)
	if same || !strings.Contains(out, "base.dat") || !strings.Contains(out, "new-0.dat") {
		t.Errorf("halo verify with a node behind: identical=%v, output:\n%s", same, out)
	}
	out, code, err := n.CLI(ctxFor(t, time.Minute), "diff", module)
	var estimate int64 = -1
	if m := diffBytesRE.FindStringSubmatch(out); m != nil {
		estimate, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if err != nil || code != 0 || estimate <= 0 || !strings.Contains(out, "incremental resync") {
		t.Errorf("halo diff: exit %d, %v, want an incremental estimate of some bytes:\n%s", code, err, out)
	}
	t.Logf("halo diff on %s: %s", n.Name, strings.TrimSpace(out))
	out, code, err = n.CLI(ctxFor(t, time.Minute), "status", "-v", module)
	if err != nil || !strings.Contains(out, "replication.mode") || !strings.Contains(out, "replication.lag") || !strings.Contains(out, "replication.rate") {
		t.Errorf("halo status -v: exit %d, %v:\n%s", code, err, out)
	}
	var repl []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "replication.") {
			repl = append(repl, strings.TrimSpace(l))
		}
	}
	t.Logf("halo status -v on %s (replication lines):\n  %s", n.Name, strings.Join(repl, "\n  "))
	return estimate
}

// diffBytesRE finds halo diff's estimate; estimateSlack absorbs a few
// files' metadata-only differences on a tiny change.
var diffBytesRE = regexp.MustCompile(`(\d+) bytes to send`)

const estimateSlack = 64 << 10

// SPEC §2.2 "replication stalls longer than stall_timeout": the secondary's
// daemon is frozen; the primary goes ALONE after stall_timeout and its
// application keeps writing; the secondary knows its data is not up to
// date. Thawed, it resyncs and the trees end identical.
func TestStallGoesAlone(t *testing.T) {
	rc := newReplCluster(t, clusterOpts{})
	prim, second := rc.firstStart()
	w, acks := rc.startWriter(prim, "stall", 1)
	defer stopWriter(t, w)
	if !waitLines(acks, 20, 20*time.Second) {
		t.Fatal("writer acknowledged fewer than 20 writes in 20s")
	}
	pid := rc.daemonPID(second)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	defer thaw()
	frozeAt := time.Now()
	waitState(t, prim, "ALONE", "")
	took := time.Since(frozeAt)
	if took < stallTimeout {
		t.Errorf("%s went ALONE %v after the freeze, before stall_timeout %v", prim.Name, took, stallTimeout)
	}
	n := countLines(acks)
	if !waitLines(acks, n+20, 10*time.Second) {
		t.Fatalf("the application on %s stopped writing after ALONE (%d acknowledged writes, no more in 10s)", prim.Name, n)
	}
	if v := resource(t, second, "replication.uptodate").Value; v != "false" {
		t.Errorf("%s: replication.uptodate = %q with its daemon frozen and the primary ALONE", second.Name, v)
	}
	t.Logf("%s ALONE %v after the freeze (stall_timeout %v), writes go on; %s outdated=%s", prim.Name, took.Round(time.Millisecond), stallTimeout,
		second.Name, resource(t, second, "replication.outdated").Value)
	thaw()
	waitRoles(t, prim, second)
	stopWriter(t, w)
	rc.waitVerified(prim)
}
