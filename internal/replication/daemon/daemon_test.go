package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/pki"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
)

// pair is two daemons of one module on loopback (n1 on 127.0.0.1, n2 on
// 127.0.0.2), each with its own replicated directory, run in-process and
// driven through their control sockets as the agent drives them.
type pair struct {
	t     *testing.T
	dirs  map[string]string
	more  map[string][]string
	data  map[string]string
	ctl   map[string]ctl.Client
	stop  map[string]context.CancelFunc
	done  map[string]chan error
	mod   map[string]*config.Module
	clust *config.Cluster
	mat   map[string]*pki.Material
	mu    sync.Mutex
	evs   map[string][]ctl.Event
}

var addrs = map[string]netip.Addr{"n1": netip.MustParseAddr("127.0.0.1"), "n2": netip.MustParseAddr("127.0.0.2")}

func requireFUSE(t *testing.T) {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("HALO_REQUIRE_ROOT") == "1" {
		skip = t.Fatalf // CI: a skipped FUSE test is not a pass
	}
	if os.Geteuid() != 0 {
		skip("mounting FUSE needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		skip("no /dev/fuse: %v", err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(port)))
		l1.Close()
		if err == nil {
			l2.Close()
			return port
		}
	}
	t.Fatal("no port free on both loopback addresses")
	return 0
}

func newPair(t *testing.T) *pair { t.Helper(); return newPairDirs(t, 1) }

// newPairDirs makes a pair whose module replicates ndirs directories:
// dirs[n] is the first, more[n] the others.
func newPairDirs(t *testing.T, ndirs int) *pair {
	t.Helper()
	requireFUSE(t)
	now := time.Now()
	ca, err := pki.NewCA("t", now)
	if err != nil {
		t.Fatal(err)
	}
	p := &pair{t: t, dirs: map[string]string{}, more: map[string][]string{}, data: map[string]string{}, ctl: map[string]ctl.Client{},
		stop: map[string]context.CancelFunc{}, done: map[string]chan error{}, mod: map[string]*config.Module{},
		mat: map[string]*pki.Material{}, evs: map[string][]ctl.Event{}}
	p.clust = &config.Cluster{Name: "t"}
	for _, n := range []string{"n1", "n2"} {
		p.clust.Nodes = append(p.clust.Nodes, &config.Node{Name: n, Addresses: map[string]netip.Addr{"replication": addrs[n]}})
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := ca.IssueNode(n, []netip.Addr{addrs[n]}, key, now)
		if err != nil {
			t.Fatal(err)
		}
		kp, _ := leaf.KeyPEM()
		m, err := pki.ParseMaterial(ca.CertPEM(), leaf.CertPEM(), kp, now)
		if err != nil {
			t.Fatal(err)
		}
		p.mat[n] = m
	}
	port := freePort(t)
	base := t.TempDir()
	for _, n := range []string{"n1", "n2"} {
		p.dirs[n] = filepath.Join(base, n, "repl")
		p.data[n] = filepath.Join(base, n, "data")
		for _, d := range []string{p.dirs[n], p.data[n]} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		p.mod[n] = &config.Module{
			Name: "db", Kind: config.KindMirror, Nodes: []string{"n1", "n2"},
			Replication: &config.Replication{
				Mode: config.ModeSync, Network: "replication", Port: port,
				StallTimeout: 2 * time.Second, ZoneSize: 64 << 10,
				Resync: config.Resync{Parallel: 2},
				Dirs:   []*config.Dir{{Path: p.dirs[n], Exclude: []string{"*.tmp"}}},
			},
		}
		for k := 1; k < ndirs; k++ {
			d := filepath.Join(base, n, fmt.Sprintf("repl%d", k))
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			p.more[n] = append(p.more[n], d)
			p.mod[n].Replication.Dirs = append(p.mod[n].Replication.Dirs, &config.Dir{Path: d})
		}
		p.ctl[n] = ctl.Client{Socket: ctl.SocketPath(p.data[n], "db")}
		p.start(n)
	}
	return p
}

func (p *pair) start(n string) {
	t := p.t
	d, err := New(Config{Module: p.mod[n], Cluster: p.clust, Node: n, DataDir: p.data[n], TLS: p.mat[n],
		Logger: hclog.New(&hclog.LoggerOptions{Name: n, Level: hclog.Info, Output: testWriter{t}})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	p.stop[n], p.done[n] = cancel, done
	t.Cleanup(func() { p.halt(n) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := p.ctl[n].Call(context.Background(), ctl.Request{Op: ctl.OpHello}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon %s does not answer", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := p.ctl[n] // the map changes as the next daemon starts
	go func() {
		_ = c.Subscribe(ctx, func(ev ctl.Event) {
			p.mu.Lock()
			p.evs[n] = append(p.evs[n], ev)
			p.mu.Unlock()
		})
	}()
	time.Sleep(50 * time.Millisecond) // the subscription is registered
}

func (p *pair) halt(n string) {
	if c := p.stop[n]; c != nil {
		c()
		<-p.done[n]
		p.stop[n] = nil
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func (p *pair) call(n string, req ctl.Request) ctl.Response {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := p.ctl[n].Call(ctx, req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", n, req.Op, err)
	}
	return resp
}

// waitEvent waits for an event of one of the kinds ("a|b") on n and
// returns it.
func (p *pair) waitEvent(n, kind string, within time.Duration) ctl.Event {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		for i, ev := range p.evs[n] {
			if slices.Contains(strings.Split(kind, "|"), ev.Kind) {
				p.evs[n] = append(p.evs[n][:i:i], p.evs[n][i+1:]...)
				p.mu.Unlock()
				return ev
			}
		}
		p.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t.Fatalf("%s: no %s event in %v (events %+v)", n, kind, within, p.evs[n])
	return ctl.Event{}
}

// resync makes n1 the source and n2 the target and resyncs n2.
func (p *pair) resync(id uint64, gen uint64, full bool, since uint64) ctl.Event {
	p.call("n1", ctl.Request{Op: ctl.OpRole, Role: ctl.RoleSource, Peer: "n2", Gen: gen})
	p.call("n2", ctl.Request{Op: ctl.OpRole, Role: ctl.RoleTarget, Peer: "n1", Gen: gen})
	p.call("n2", ctl.Request{Op: ctl.OpResync, Gen: gen, Resync: &ctl.ResyncRequest{
		ID: id, Peer: "n1", Full: full, Source: journal.Generation{Current: gen}, Since: since}})
	for {
		ev := p.waitEvent("n2", ctl.EvResyncDone+"|"+ctl.EvResyncFailed, 60*time.Second)
		if ev.Kind == ctl.EvResyncFailed {
			p.t.Fatalf("resync %d failed: %s", id, ev.Reason)
		}
		if ev.ID == id {
			return ev
		}
	}
}

func write(t *testing.T, path string, data []byte) {
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

func TestDaemonSourceTargetResyncLiveVerify(t *testing.T) {
	p := newPair(t)
	// Data before any replication: n1's tree is the good one.
	write(t, filepath.Join(p.dirs["n1"], "before.txt"), []byte("present before the first resync\n"))
	write(t, filepath.Join(p.dirs["n2"], "stale.txt"), []byte("only on n2\n"))
	// Never in sync: no journal has a checkpoint, the resync is full and
	// so is the estimate, a comparison of both trees.
	first := p.call("n1", ctl.Request{Op: ctl.OpDiff}).Diff
	if !first.Full || !strings.HasPrefix(first.Reason, "full resync") || first.Bytes != int64(len("present before the first resync\n")) {
		t.Fatalf("diff before the first resync: %+v, want a full estimate of before.txt", first)
	}

	p.resync(1, 0x1111, true, 0)
	for n, want := range map[string]string{"before.txt": "present before the first resync\n"} {
		got, err := os.ReadFile(filepath.Join(p.dirs["n2"], n))
		if err != nil || string(got) != want {
			t.Fatalf("n2 %s after the full resync: %q, %v", n, got, err)
		}
	}
	if _, err := os.Stat(filepath.Join(p.dirs["n2"], "stale.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("n2 still holds stale.txt after a full resync: %v", err)
	}
	// Live: a write through n1's capture mount is on n2 when fsync returns.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	write(t, filepath.Join(p.dirs["n1"], "live.dat"), big)
	got, err := os.ReadFile(filepath.Join(p.dirs["n2"], "live.dat"))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("live write not on n2 when fsync returned: %d bytes, %v", len(got), err)
	}
	// n2's directory is read-only for applications.
	if err := os.WriteFile(filepath.Join(p.dirs["n2"], "x"), nil, 0o644); err == nil {
		t.Fatal("n2's replicated directory accepted a write")
	}
	st := p.call("n1", ctl.Request{Op: ctl.OpStatus}).Status
	if st.Link != "in sync" || !st.PeerInSync {
		t.Fatalf("n1 status after the resync: %+v", st)
	}
	v := p.call("n2", ctl.Request{Op: ctl.OpVerify}).Verify
	if len(v.Differences) != 0 {
		t.Fatalf("verify after live writes: %v", v.Differences)
	}
	// A difference made behind replication's back shows.
	if err := os.WriteFile(filepath.Join(p.dirs["n1"], "x.tmp"), []byte("excluded"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := p.call("n1", ctl.Request{Op: ctl.OpDiff}).Diff
	t.Logf("diff: %+v", d)
	// Role none: n1 goes on alone, journaling.
	p.call("n1", ctl.Request{Op: ctl.OpRole, Role: ctl.RoleNone})
	write(t, filepath.Join(p.dirs["n1"], "alone.txt"), []byte("written alone\n"))
	if _, err := os.Stat(filepath.Join(p.dirs["n2"], "alone.txt")); err == nil {
		t.Fatal("a write made alone reached n2")
	}
	if s := p.call("n1", ctl.Request{Op: ctl.OpStatus}).Status; s.Dirty.Paths == 0 {
		t.Fatalf("n1's journal does not hold the write made alone: %+v", s.Dirty)
	}
	// Both journals start at the first resync's generation: the estimate
	// plans the incremental resync that follows, from the journals, rather
	// than comparing both trees block by block.
	inc := p.call("n1", ctl.Request{Op: ctl.OpDiff}).Diff
	if inc.Full || !strings.HasPrefix(inc.Reason, "incremental") || inc.Bytes < int64(len("written alone\n")) {
		t.Fatalf("diff before the incremental resync: %+v, want an incremental estimate covering alone.txt", inc)
	}
	if s := p.call("n1", ctl.Request{Op: ctl.OpStatus}).Status; s.Dirty.Paths == 0 {
		t.Fatalf("diff emptied n1's journal: %+v", s.Dirty)
	}
	// Incremental resync since the checkpoint of the first resync.
	p.resync(2, 0x2222, false, 0x1111)
	if got, err := os.ReadFile(filepath.Join(p.dirs["n2"], "alone.txt")); err != nil || string(got) != "written alone\n" {
		t.Fatalf("n2 alone.txt after the incremental resync: %q, %v", got, err)
	}
	st2 := p.call("n2", ctl.Request{Op: ctl.OpStatus}).Status
	if st2.Resync == nil || st2.Resync.Full {
		t.Fatalf("n2's last resync: %+v", st2.Resync)
	}
	t.Logf("incremental resync: %+v", *st2.Resync)
	if inc.Bytes > st2.Resync.Sent {
		t.Errorf("diff estimated %d bytes; the incremental resync sent %d on the network", inc.Bytes, st2.Resync.Sent)
	}
	v = p.call("n1", ctl.Request{Op: ctl.OpVerify}).Verify
	if len(v.Differences) != 0 {
		t.Fatalf("verify after the incremental resync: %v", v.Differences)
	}
}

// A directory whose must_exist file is missing (the data disk not
// mounted) is not captured: the role is refused with the reason, and taken
// once the file is there.
func TestDaemonRefusesWithoutMustExist(t *testing.T) {
	p := newPair(t)
	p.halt("n1")
	p.mod["n1"].Replication.Dirs[0].MustExist = []string{"PG_VERSION"}
	p.start("n1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := p.ctl["n1"].Call(ctx, ctl.Request{Op: ctl.OpRole, Role: ctl.RoleSource, Peer: "n2", Gen: 1})
	var re *ctl.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, `must_exist "PG_VERSION" is missing`) {
		t.Fatalf("role source without the must_exist file: %v", err)
	}
	if st := p.call("n1", ctl.Request{Op: ctl.OpStatus}).Status; !strings.Contains(st.LastError, "PG_VERSION") || !strings.Contains(st.NotReady, `must_exist "PG_VERSION" is missing`) {
		t.Fatalf("status does not say why: %+v", st)
	}
	// Nor does it receive replication there: a resync would fill the
	// mount point of the absent disk.
	_, err = p.ctl["n1"].Call(ctx, ctl.Request{Op: ctl.OpRole, Role: ctl.RoleTarget, Peer: "n2", Gen: 1})
	if !errors.As(err, &re) || !strings.Contains(re.Msg, `must_exist "PG_VERSION" is missing`) {
		t.Fatalf("role target without the must_exist file: %v", err)
	}
	if n, err := fuseMountsAt(p.dirs["n1"]); err != nil || n != 0 {
		t.Fatalf("%d FUSE mounts on the directory (%v) after the refusal", n, err)
	}
	// Written directly (nothing is mounted): the file appears, and the
	// daemon takes the last role asked for by itself.
	if err := os.WriteFile(filepath.Join(p.dirs["n1"], "PG_VERSION"), []byte("16\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * retryEvery)
	for {
		st := p.call("n1", ctl.Request{Op: ctl.OpStatus}).Status
		if st.Role == ctl.RoleTarget && st.NotReady == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the role asked for was not taken once the file appeared: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n, err := fuseMountsAt(p.dirs["n1"]); err != nil || n != 1 {
		t.Fatalf("%d FUSE mounts on the directory (%v) after the file appeared", n, err)
	}
	p.call("n1", ctl.Request{Op: ctl.OpRole, Role: ctl.RoleSource, Peer: "n2", Gen: 1})
	if st := p.call("n1", ctl.Request{Op: ctl.OpStatus}).Status; st.Role != ctl.RoleSource || st.NotReady != "" {
		t.Fatalf("role source once the file is there: %+v", st)
	}
}

// A PRIM's writes wait when its peer is not in sync on a running stream
// (the peer's daemon died here): the daemon reports a stall and holds
// them until the machine degrades to ALONE (role none), then they
// complete, journaled.
func TestDaemonPrimaryFencesWithoutPeer(t *testing.T) {
	p := newPair(t)
	p.resync(1, 0x1111, true, 0)
	p.call("n1", ctl.Request{Op: ctl.OpRole, Role: ctl.RoleSource, Peer: "n2", Gen: 0x1111, Primary: true})
	write(t, filepath.Join(p.dirs["n1"], "a"), []byte("in sync\n"))

	p.halt("n2")
	p.waitEvent("n1", ctl.EvStalled, 10*time.Second)
	done := make(chan error, 1)
	go func() {
		done <- os.WriteFile(filepath.Join(p.dirs["n1"], "b"), []byte("while fenced\n"), 0o644)
	}()
	select {
	case err := <-done:
		t.Fatalf("a write completed without the peer while PRIM: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if st := p.call("n1", ctl.Request{Op: ctl.OpStatus}).Status; st.Link != "fenced" || st.StalledSince.IsZero() {
		t.Fatalf("status while fenced: %+v", st)
	}
	p.call("n1", ctl.Request{Op: ctl.OpRole, Role: ctl.RoleNone, Gen: 0x2222})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("fenced write after the degrade: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the fenced write did not complete after role none")
	}
	if s := p.call("n1", ctl.Request{Op: ctl.OpStatus}).Status; s.Dirty.Paths == 0 {
		t.Fatalf("the write made alone is not journaled: %+v", s.Dirty)
	}
}

// Two replicated directories resync together and go live together: a
// write in either is on the peer when it returns, and an incremental
// resync covers what both journals hold.
func TestDaemonTwoDirectories(t *testing.T) {
	p := newPairDirs(t, 2)
	write(t, filepath.Join(p.more["n1"][0], "second.txt"), []byte("second dir\n"))
	p.resync(1, 0x1111, true, 0)
	if b, err := os.ReadFile(filepath.Join(p.more["n2"][0], "second.txt")); err != nil || string(b) != "second dir\n" {
		t.Fatalf("second directory after the full resync: %q, %v", b, err)
	}
	write(t, filepath.Join(p.dirs["n1"], "live0"), []byte("0"))
	write(t, filepath.Join(p.more["n1"][0], "live1"), []byte("1"))
	for _, f := range []string{filepath.Join(p.dirs["n2"], "live0"), filepath.Join(p.more["n2"][0], "live1")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("live write not on n2: %v", err)
		}
	}
	p.call("n1", ctl.Request{Op: ctl.OpRole, Role: ctl.RoleNone, Gen: 0x2222})
	write(t, filepath.Join(p.more["n1"][0], "alone1"), []byte("alone"))
	p.resync(2, 0x2222, false, 0x1111)
	if b, err := os.ReadFile(filepath.Join(p.more["n2"][0], "alone1")); err != nil || string(b) != "alone" {
		t.Fatalf("second directory after the incremental resync: %q, %v", b, err)
	}
	if v := p.call("n2", ctl.Request{Op: ctl.OpVerify}).Verify; len(v.Differences) != 0 {
		t.Fatalf("verify: %v", v.Differences)
	}
}
