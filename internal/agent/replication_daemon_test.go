package agent

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
	"github.com/halo-ha/halo/sdk/api"
)

// fakeDaemon answers the control protocol on a module's socket like a
// replication daemon, records the requests, and sends events on demand.
type fakeDaemon struct {
	t    *testing.T
	ln   net.Listener
	mu   sync.Mutex
	reqs []ctl.Request
	subs []*json.Encoder
	role string
	conn []net.Conn
}

func startFakeDaemon(t *testing.T, socket string) *fakeDaemon {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDaemon{t: t, ln: ln, role: ctl.RoleNone}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conn = append(f.conn, c)
			f.mu.Unlock()
			go f.serve(c)
		}
	}()
	t.Cleanup(f.kill)
	return f
}

func (f *fakeDaemon) serve(c net.Conn) {
	sc := bufio.NewScanner(c)
	enc := json.NewEncoder(c)
	for sc.Scan() {
		var req ctl.Request
		if json.Unmarshal(sc.Bytes(), &req) != nil {
			return
		}
		f.mu.Lock()
		if req.Op != ctl.OpStatus && req.Op != ctl.OpHello && req.Op != ctl.OpSubscribe {
			f.reqs = append(f.reqs, req)
		}
		if req.Op == ctl.OpRole {
			f.role = req.Role
		}
		role := f.role
		if req.Op == ctl.OpSubscribe {
			f.subs = append(f.subs, enc)
			f.mu.Unlock()
			continue
		}
		f.mu.Unlock()
		var resp ctl.Response
		switch req.Op {
		case ctl.OpHello:
			resp.Hello = &ctl.Hello{Module: "db", Node: "n1", PID: 4242, Version: ctl.ProtocolVersion}
		case ctl.OpStatus:
			resp.Status = &ctl.Status{Role: role, Mode: "sync", Link: "in sync", Lag: 3 * time.Millisecond,
				Resync: &ctl.ResyncStatus{ID: 9, Done: 50, Total: 100, ETA: time.Second}}
		}
		_ = enc.Encode(resp)
	}
}

func (f *fakeDaemon) emit(ev ctl.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.subs {
		_ = e.Encode(ev)
	}
}

// kill closes everything, as a daemon's death does.
func (f *fakeDaemon) kill() {
	f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conn {
		c.Close()
	}
}

func (f *fakeDaemon) requests() []ctl.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ctl.Request(nil), f.reqs...)
}

func (f *fakeDaemon) subscribed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs) > 0
}

func testRunner(t *testing.T, dataDir string) *moduleRunner {
	t.Helper()
	stateDir := filepath.Join(dataDir, "db")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	el, err := openEventLog(filepath.Join(stateDir, "events.jsonl"), "db", "n1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { el.close() })
	return &moduleRunner{
		mod:  &config.Module{Name: "db", Nodes: []string{"n1", "n2"}, Replication: &config.Replication{}},
		node: "n1", logger: hclog.NewNullLogger(), events: el, stateDir: stateDir,
		posted: newEventQueue(), resources: map[string]api.Resource{},
	}
}

func waitPosted(t *testing.T, q *eventQueue, match func(core.Event) bool) core.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range q.take() {
			if match(ev) {
				return ev
			}
		}
		select {
		case <-q.notify:
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatal("expected event never posted")
	return nil
}

// The supervisor attaches to a daemon that is already running (an agent
// restart), sends it nothing until the machine asks, then the role and
// the resync; relays its events; shows its status as resources; and fails
// the running resync when the daemon dies.
func TestDaemonReplicationRelays(t *testing.T) {
	dataDir := t.TempDir()
	f := startFakeDaemon(t, ctl.SocketPath(dataDir, "db"))
	r := testRunner(t, dataDir)
	d := newDaemonReplication(r, dataDir, t.TempDir())

	deadline := time.Now().Add(10 * time.Second)
	for !f.subscribed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !f.subscribed() {
		t.Fatal("supervisor never subscribed to the daemon's events")
	}
	time.Sleep(1500 * time.Millisecond) // a status tick
	if reqs := f.requests(); len(reqs) != 0 {
		t.Fatalf("a reattached daemon was told %+v before the machine asked anything", reqs)
	}
	if v, ok := r.resource("replication.lag"); !ok || v.Value != "3ms" {
		t.Fatalf("replication.lag resource %+v", v)
	}
	if v, ok := r.resource("replication.progress"); !ok || v.Value != "50/100 bytes" {
		t.Fatalf("replication.progress resource %+v", v)
	}

	d.Start(mirror.ReplTarget, "n2")
	d.Resync(mirror.StartResync{ID: 7, Peer: "n2", Since: 5, Source: journal.Generation{Current: 6}})
	deadline = time.Now().Add(10 * time.Second)
	for len(f.requests()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	reqs := f.requests()
	if len(reqs) != 2 || reqs[0].Op != ctl.OpRole || reqs[0].Role != ctl.RoleTarget || reqs[1].Op != ctl.OpResync || reqs[1].Resync.ID != 7 || reqs[1].Resync.Since != 5 {
		t.Fatalf("requests %+v", reqs)
	}

	f.emit(ctl.Event{Kind: ctl.EvResyncProgress, At: time.Now(), ID: 7, Done: 1, Total: 2})
	waitPosted(t, r.posted, func(ev core.Event) bool {
		p, ok := ev.(mirror.ResyncProgress)
		return ok && p.ID == 7 && p.Done == 1 && p.Total == 2
	})
	f.emit(ctl.Event{Kind: ctl.EvStalled, At: time.Now(), Since: time.Unix(100, 0)})
	waitPosted(t, r.posted, func(ev core.Event) bool {
		s, ok := ev.(mirror.ReplStalled)
		return ok && s.Since.Equal(time.Unix(100, 0))
	})

	// The daemon dies with the resync running: the machine hears it failed.
	f.kill()
	ev := waitPosted(t, r.posted, func(ev core.Event) bool {
		fl, ok := ev.(mirror.ResyncFailed)
		return ok && fl.ID == 7
	})
	t.Logf("after the daemon's death: %+v", ev)
}
