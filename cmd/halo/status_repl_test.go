package main

import (
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/api"
)

func TestPrintStatusReplication(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mods := []api.ModuleStatus{{
		Module: "db", Kind: "mirror", Node: "n1", State: "PRIM", Readiness: "Ready",
		Replication: &api.ReplicationStatus{
			Up: true, UpdatedAt: at, Role: "source", Peer: "n2", Mode: "sync", Link: "in sync",
			Connected: true, PeerUpToDate: true, InFlight: 3, InFlightBytes: 12 << 10, LagSeconds: 0.0012345,
			AckedOps: 1197, DurableOps: 1190, RTTSeconds: 0.00025,
			BytesPerSec: 12.5 * (1 << 20), OpsSent: 1200, BytesSent: 56 << 20,
			JournalBytes: 4096, JournalTrusted: true, DirtyPaths: 2, DirtyZones: 5, DirtyBytes: 5 << 16,
		},
	}, {
		Module: "files", Kind: "mirror", Node: "n1", State: "SECOND", Readiness: "Transient",
		Replication: &api.ReplicationStatus{
			Up: true, UpdatedAt: at, Role: "target", Peer: "n2", Mode: "async", Link: "resync", Connected: true,
			Resync: &api.ResyncProgress{ID: 4, Full: true, Running: true, DoneBytes: 450 << 20, TotalBytes: 1 << 30,
				Percent: 43.9, BytesPerSec: 30 << 20, ETASeconds: 19.2},
		},
	}, {
		Module: "gone", Kind: "mirror", Node: "n1", State: "WAIT", Readiness: "NotReady",
		Replication: &api.ReplicationStatus{UpdatedAt: at, Error: "connect: no such file"},
	}, {
		Module: "async", Kind: "mirror", Node: "n1", State: "PRIM", Readiness: "Ready",
		Replication: &api.ReplicationStatus{Up: true, UpdatedAt: at, Role: "source", Peer: "n2", Mode: "async", Link: "in sync",
			Connected: true, PeerUpToDate: true, InFlight: 40, InFlightBytes: 1 << 20, LagSeconds: 0.5, MaxLagSeconds: 5, DataLossPossible: true},
	}, {
		Module: "disk", Kind: "mirror", Node: "n1", State: "WAIT", Readiness: "NotReady",
		Replication: &api.ReplicationStatus{Up: true, UpdatedAt: at, Role: "none", Mode: "sync", Link: "down",
			NotReady: "must_exist file /srv/VERSION is missing"},
	}, {
		Module: "web", Kind: "light", Node: "n1", State: "UP", Readiness: "Ready",
	}}
	var b strings.Builder
	printStatus(&b, mods, false)
	out := b.String()
	for _, want := range []string{
		"db: replication sync, source to n2, in sync (connected, peer up to date), lag 1.23ms (3 ops, 12.0 KiB in flight), 12.5 MiB/s, sent 1200 ops / 56.0 MiB\n",
		"files: replication async, target of n2, resync (connected, this node not up to date), 0 B/s\n",
		"files: resync 4 (full) 43.9% (450.0 MiB of 1.0 GiB) at 30.0 MiB/s, ETA 19.2s\n",
		"gone: replication daemon not answering at ",
		"async: replication async, source to n2, in sync (connected, peer up to date), lag 500ms (40 ops, 1.0 MiB in flight) of max 5s, 0 B/s, sent 0 ops / 0 B\n",
		"async: acknowledged writes not yet on n2 (async): a failover now would lose them\n",
		"disk: replication sync, no role, down (not connected, peer not up to date), 0 B/s\n",
		"disk: replicated directories not usable here: must_exist file /srv/VERSION is missing\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "web: replication") || strings.Contains(out, "journal") {
		t.Errorf("replication lines for a module without replication, or verbose lines:\n%s", out)
	}
	b.Reset()
	printStatus(&b, mods[:1], true)
	for _, want := range []string{
		"db: journal 4.0 KiB (trusted), dirty 2 paths, 5 zones (320.0 KiB)\n",
		"db: stream acknowledged 1197 applied, 1190 durable; round trip 250µs\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("verbose status lacks %q:\n%s", want, b.String())
		}
	}
}

func TestResyncLineFinished(t *testing.T) {
	start := time.Now()
	p := &api.ResyncProgress{ID: 2, DoneBytes: 1 << 20, TotalBytes: 1 << 20, Percent: 100, Started: start,
		Finished: start.Add(1500 * time.Millisecond), SentBytes: 1100000}
	if got, want := resyncLine(p), "resync 2 (incremental) 100.0% (1.0 MiB of 1.0 MiB), done in 1.5s, 1.0 MiB sent"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	p.Error = "peer went away"
	if got := resyncLine(p); !strings.HasSuffix(got, ", failed: peer went away") {
		t.Errorf("failed resync: %q", got)
	}
}
