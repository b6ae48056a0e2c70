package replication

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The replication daemon outlives its agent: with the primary's agent
// killed, the application's writes go on being replicated; the agent that
// starts again reattaches to the same daemon (no remount, no restart) and
// the module returns to PRIM/SECOND without losing a write.
func TestAgentRestartKeepsReplicating(t *testing.T) {
	// Heartbeats that outlast an agent restart: the peer must not fail
	// over meanwhile (that is another test).
	rc := newReplCluster(t, clusterOpts{pulse: 500 * time.Millisecond, timeout: 8 * time.Second})
	prim, second := rc.firstStart()
	w, acks := rc.startWriter(prim, "agent", 3)
	defer stopWriter(t, w)
	if !waitLines(acks, 20, 20*time.Second) {
		t.Fatal("writer acknowledged fewer than 20 writes in 20s")
	}
	pid := rc.daemonPID(prim)
	if err := prim.Agent.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	<-prim.Agent.Done()
	killedAt := time.Now()
	n := countLines(acks)
	if !waitLines(acks, n+20, 10*time.Second) {
		t.Fatalf("writes stopped with the agent dead (%d acknowledged)", n)
	}
	if st := waitState(t, second, "SECOND", ""); st.State != "SECOND" {
		t.Fatalf("%s left SECOND while the primary's agent restarted: %s", second.Name, st.State)
	}
	if err := prim.StartAgent(ctxFor(t, waitLong)); err != nil {
		t.Fatal(err)
	}
	waitRoles(t, prim, second)
	evs, err := prim.Events(ctxFor(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Kind == "state" && e.Time.After(killedAt) {
			t.Logf("%s after the restart: %s", prim.Name, e.Text)
		}
	}
	if got := rc.daemonPID(prim); got != pid {
		t.Fatalf("daemon pid %d after the agent restart, %d before: it was restarted, not reattached", got, pid)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("daemon %d gone: %v", pid, err)
	}
	n = countLines(acks)
	if !waitLines(acks, n+20, 10*time.Second) {
		t.Fatalf("writes stopped after the agent restart (%d acknowledged)", n)
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
	t.Logf("%d writes acknowledged across an agent kill and restart, all on %s; daemon pid %d kept", len(all), second.Name, pid)
}
