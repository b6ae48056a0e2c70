package replication

import (
	"strings"
	"testing"
	"time"
)

// SPEC §2.5 "the application keeps running and writing during [a
// resync]": the secondary is killed and comes back while the primary's
// application writes without pause. The resync runs under those writes
// (passes, then a short freeze and the switch to live replication), the
// writes never stop, and once the pair is in sync again every write
// acknowledged from the start is on the secondary and the trees are
// identical.
func TestResyncUnderWrites(t *testing.T) {
	rc := newReplCluster(t, clusterOpts{})
	prim, second := rc.firstStart()
	w, acks := rc.startWriter(prim, "live", 5)
	defer stopWriter(t, w)
	if !waitLines(acks, 50, 20*time.Second) {
		t.Fatal("writer acknowledged fewer than 50 writes in 20s")
	}
	seq := lastSeq(t, second) // its log goes on from here after the restart
	rc.powerOff(second)
	waitState(t, prim, "ALONE", "Ready")
	n := countLines(acks)
	if !waitLines(acks, n+100, 20*time.Second) {
		t.Fatalf("writes stopped on %s ALONE (%d acknowledged)", prim.Name, n)
	}
	if err := second.Restart(ctxFor(t, waitLong), true); err != nil {
		t.Fatal(err)
	}
	waitRoles(t, prim, second)
	r := waitResync(t, second, seq)
	n = countLines(acks)
	if !waitLines(acks, n+100, 20*time.Second) {
		t.Fatalf("writes stopped after the resync (%d acknowledged)", n)
	}
	stopWriter(t, w)
	all, err := readAcks(acks)
	if err != nil {
		t.Fatal(err)
	}
	if bad := checkAcks(rc.dirs[second.Name], all); len(bad) > 0 {
		t.Fatalf("%d of %d acknowledged writes missing on %s:\n%s", len(bad), len(all), second.Name, strings.Join(bad[:min(len(bad), 10)], "\n"))
	}
	rc.waitVerified(prim)
	t.Logf("%s resynced under writes (%s); %d acknowledged writes, all on %s; trees identical", second.Name, r, len(all), second.Name)
	// How long the application was frozen for the final pass (the
	// source's account).
	if evs, err := prim.Events(ctxFor(t, 10*time.Second)); err == nil {
		for _, e := range evs {
			if strings.Contains(e.Text, "to "+second.Name+" done:") && strings.Contains(e.Text, "frozen") {
				t.Logf("%s: %s", prim.Name, e.Text)
			}
		}
	}
}
