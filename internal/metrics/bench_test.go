package metrics

import (
	"fmt"
	"testing"
	"time"

	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
)

// BenchmarkGather256 is a scrape of an agent at SPEC's module target: 256
// mirror modules, each with two checkers, two heartbeat networks and a
// replication daemon answering at once.
func BenchmarkGather256(b *testing.B) {
	fb := &fakeBackend{status: map[string]*ctl.Status{}}
	for i := range 256 {
		name := fmt.Sprintf("m%03d", i)
		fb.mods = append(fb.mods, Module{
			Name: name, Kind: "mirror", State: "PRIM", Readiness: "Ready", LoopMax: 3,
			Checkers: map[string]string{"tcp": "up", "disk": "up"},
			Heartbeats: []Heartbeat{
				{Network: "default", Peer: "n2", Up: true, LastSeen: time.Now(), Dropped: map[string]uint64{"replay": 0, "bad_mac": 0}},
				{Network: "replication", Peer: "n2", Up: true, LastSeen: time.Now(), Dropped: map[string]uint64{"replay": 0, "bad_mac": 0}},
			},
			Replicated: true,
		})
		var lat ctl.LatencyRecorder
		lat.Observe(time.Millisecond)
		fb.status[name] = &ctl.Status{Role: "source", Mode: "sync", Link: "in sync", PeerInSync: true,
			WriteLatency: lat.Snapshot(), SyncLatency: lat.Snapshot()}
	}
	m := newTestMetrics(fb, time.Second)
	for i := range 256 {
		m.AddModule(fmt.Sprintf("m%03d", i), []string{"tcp", "disk"})
	}
	b.ResetTimer()
	for b.Loop() {
		fams, err := m.Gatherer().Gather()
		if err != nil || len(fams) == 0 {
			b.Fatal(err)
		}
	}
}
