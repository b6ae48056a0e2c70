package replication

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/test/mirror/mirrorbed"
)

// iterations of the kill -9 test: 20 in CI, 200 with HALO_SOAK=1.
func crashIterations() int {
	if os.Getenv("HALO_SOAK") == "1" {
		return 200
	}
	return 20
}

// SPEC §2.2 "PRIM node dies": no write acknowledged to the application on
// the old primary is missing after failover; the returning node resyncs
// and both trees end identical. The primary's whole host is killed (agent,
// replication daemon, writer) at a random moment of a write workload that
// fsyncs every record and logs each fsync acknowledged to it.
func TestKillPrimaryDuringWrites(t *testing.T) {
	rc := newReplCluster(t, clusterOpts{})
	prim, second := rc.firstStart()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	totalAcks := 0
	var resyncs []resyncResult
	for i := range crashIterations() {
		began := time.Now()
		w, acksPath := rc.startWriter(prim, "crash", seed+uint64(i))
		// At least one acknowledged write, then a random moment.
		if !waitLines(acksPath, 1, 20*time.Second) {
			stopWriter(t, w)
			t.Fatalf("iteration %d: writer on %s acknowledged nothing in 20s", i, prim.Name)
		}
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		rc.powerOff(prim)
		<-w.Done()
		acks, err := readAcks(acksPath)
		if err != nil {
			t.Fatal(err)
		}
		totalAcks += len(acks)
		waitState(t, second, "ALONE", "Ready")
		if bad := checkAcks(rc.dirs[second.Name], acks); len(bad) > 0 {
			if len(bad) > 10 {
				bad = append(bad[:10], "…")
			}
			t.Fatalf("iteration %d: %d of %d acknowledged writes on %s missing on %s after failover:\n%s",
				i, len(bad), len(acks), prim.Name, second.Name, strings.Join(bad, "\n"))
		}
		if err := prim.Restart(ctxFor(t, waitLong), true); err != nil {
			t.Fatal(err)
		}
		waitRoles(t, second, prim)
		resyncs = append(resyncs, lastResync(t, prim))
		rc.waitVerified(second)
		t.Logf("iteration %d (%v): %s killed after %d acknowledged fsyncs, all on %s; %s resynced (%s), trees identical",
			i, time.Since(began).Round(10*time.Millisecond), prim.Name, len(acks), second.Name, prim.Name, resyncs[len(resyncs)-1])
		prim, second = second, prim
	}
	t.Logf("%d kill -9 of the primary, %d acknowledged fsyncs checked, none lost", crashIterations(), totalAcks)
}

func (r resyncResult) String() string {
	return fmt.Sprintf("%s: %d objects, %d data bytes, %d bytes on the network", r.kind, r.changed, r.data, r.network)
}

// lastResync reads the latest finished resync of target n from its event
// log.
func lastResync(t *testing.T, n *mirrorbed.Node) resyncResult {
	t.Helper()
	evs, err := n.Events(ctxFor(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if m := resyncDoneRE.FindStringSubmatch(evs[i].Text); m != nil {
			return waitResync(t, n, evs[i].Seq-1)
		}
	}
	t.Fatalf("%s: no finished resync in the event log", n.Name)
	return resyncResult{}
}
