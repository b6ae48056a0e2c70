package replication

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKilledMidResync: SPEC §2.2 "node stopped in the middle of a resync".
// The secondary is killed while its resync runs (over a slow replication
// link), then the primary is lost too. The secondary comes back alone: its
// data is inconsistent, so halo prim is refused and it waits; halo
// primforce serves it anyway, and the old primary, back, takes a full
// resync from it (its own data quarantined) until both trees match.
func TestKilledMidResync(t *testing.T) {
	rc := newReplCluster(t, clusterOpts{})
	prim, second := rc.firstStart()
	if err := second.Command(ctxFor(t, 30*time.Second), "stop"); err != nil {
		t.Fatal(err)
	}
	waitState(t, second, "STOP", "")
	waitState(t, prim, "ALONE", "Ready")
	// 24 MiB to catch up on at 8 Mbit/s: about 25 s of resync.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 24 {
		data := make([]byte, 1<<20)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		mustWrite(t, filepath.Join(rc.dirs[prim.Name], fmt.Sprintf("big%d", i)), data)
	}
	if err := second.Host.Limit("replication", 8_000_000, 0); err != nil {
		t.Fatal(err)
	}
	seq := lastSeq(t, second)
	if err := second.Command(ctxFor(t, 30*time.Second), "start"); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, second, seq, "resync from", prim.Name)
	waitState(t, second, "SECOND", "Transient")
	time.Sleep(2 * time.Second)
	if m := waitState(t, second, "SECOND", "Transient"); m.Readiness != "Transient" {
		t.Fatalf("%s finished its resync before it could be interrupted: %+v", second.Name, m)
	}
	rc.powerOff(second)
	if err := second.Host.Unlimit("replication"); err != nil {
		t.Fatal(err)
	}
	rc.powerOff(prim)

	if err := second.Restart(ctxFor(t, waitLong), true); err != nil {
		t.Fatal(err)
	}
	// The first reasons are about the peer it does not see yet.
	for deadline := time.Now().Add(waitLong); ; time.Sleep(200 * time.Millisecond) {
		st := waitState(t, second, "WAIT", "")
		if strings.Contains(st.Reason, "inconsistent") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s waits for another reason: %q", second.Name, st.Reason)
		}
	}
	err := second.Command(ctxFor(t, 10*time.Second), "prim")
	if err == nil || !strings.Contains(err.Error(), "inconsistent") {
		t.Fatalf("halo prim on %s with inconsistent data: %v, want a refusal saying so", second.Name, err)
	}
	if err := second.Command(ctxFor(t, 10*time.Second), "primforce"); err != nil {
		t.Fatalf("halo primforce on %s: %v", second.Name, err)
	}
	waitState(t, second, "ALONE", "Ready")

	if err := prim.Restart(ctxFor(t, waitLong), true); err != nil {
		t.Fatal(err)
	}
	waitRoles(t, second, prim)
	if r := lastResync(t, prim); r.kind != "full" {
		t.Errorf("%s took a %s resync from the node that ran primforce, want full", prim.Name, r.kind)
	}
	rc.waitVerified(second)
}
