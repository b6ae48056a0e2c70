package replication

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestAsyncFailover runs mode = "async" over a replication network slower
// than the writer, so that writes return before the peer has them and the
// lag builds up to max_lag: the lag and the "data loss possible" state
// show in halo status, the lag stays bounded, and after kill -9 of the
// primary the new primary holds every write acknowledged more than
// max_lag before the crash, and a prefix of the acknowledged writes (what
// it lacks is the newest, nothing in between). The old primary comes back
// as SECOND through an incremental resync that also undoes the writes only
// it had, and both trees end identical.
func TestAsyncFailover(t *testing.T) {
	const maxLag = time.Second
	rc := newReplCluster(t, clusterOpts{mode: "async", extra: fmt.Sprintf("    max_lag = %q\n", maxLag),
		// Pings queue behind up to max_lag of data: not a stall.
		stall: 10 * time.Second})
	prim, second := rc.firstStart()
	if st := waitState(t, prim, "PRIM", "Ready"); !strings.Contains(st.Reason, "asynchronous") {
		t.Errorf("PRIM does not say replication is asynchronous: %q", st.Reason)
	}
	if m := resource(t, prim, "replication.mode").Value; m != "async" {
		t.Errorf("replication.mode = %q, want async", m)
	}
	// 40 Mbit/s: the writer outpaces the link.
	if err := prim.Host.Limit("replication", 40_000_000, 0); err != nil {
		t.Fatal(err)
	}
	w, acksPath := rc.startWriter(prim, "async", uint64(time.Now().UnixNano()))
	if !waitLines(acksPath, 1, 20*time.Second) {
		stopWriter(t, w)
		t.Fatalf("writer on %s acknowledged nothing in 20s", prim.Name)
	}
	// Watch the lag while the writer runs (and a checkpoint or two pass:
	// they must keep the zones the peer does not have yet).
	var maxSeen time.Duration
	atRisk := false
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if lag, err := time.ParseDuration(resource(t, prim, "replication.lag").Value); err == nil {
			maxSeen = max(maxSeen, lag)
		}
		atRisk = atRisk || resource(t, prim, "replication.data_loss_possible").Value == "yes"
	}
	if !atRisk {
		t.Errorf("replication.data_loss_possible never said yes while the writer outpaced the link (lag up to %v)", maxSeen)
	}
	// The bound holds new writes back while the oldest one the peer has
	// not applied is older than max_lag; that one is on its way.
	if maxSeen > 3*maxLag {
		t.Errorf("lag reached %v with max_lag %v", maxSeen, maxLag)
	}
	old := countLines(acksPath)
	time.Sleep(maxLag + time.Second)
	rc.powerOff(prim)
	<-w.Done()
	acks, err := readAcks(acksPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := prim.Host.Unlimit("replication"); err != nil {
		t.Fatal(err)
	}
	waitState(t, second, "ALONE", "Ready")
	if bad := checkAcks(rc.dirs[second.Name], acks[:old]); len(bad) > 0 {
		t.Fatalf("%d of the %d writes acknowledged more than max_lag before the crash are missing on %s:\n%s",
			len(bad), old, second.Name, strings.Join(bad[:min(len(bad), 10)], "\n"))
	}
	kept := old
	for kept < len(acks) && len(checkAcks(rc.dirs[second.Name], acks[kept:kept+1])) == 0 {
		kept++
	}
	if bad := checkAcks(rc.dirs[second.Name], acks[kept:]); len(bad) != len(acks)-kept {
		t.Errorf("%s holds acknowledged writes after one it lacks (ack %d of %d missing): not a consistent state", second.Name, kept, len(acks))
	}
	t.Logf("lag up to %v (max_lag %v); %d acknowledged writes, %d on %s after the failover, %d lost (async allows the last max_lag)",
		maxSeen, maxLag, len(acks), kept, second.Name, len(acks)-kept)

	if err := prim.Restart(ctxFor(t, waitLong), true); err != nil {
		t.Fatal(err)
	}
	waitRoles(t, second, prim)
	r := lastResync(t, prim)
	if r.kind != "incremental" {
		t.Errorf("the returning node's resync was %s, want incremental", r.kind)
	}
	rc.waitVerified(second)
	t.Logf("%s resynced (%s), trees identical", prim.Name, r)
}
