package postgresql

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestPostgreSQLDemo is `make demo DEMO=postgresql`: the failover test's
// steps once, narrated in plain words. HALO_DEMO=1 runs it.
func TestPostgreSQLDemo(t *testing.T) {
	if os.Getenv("HALO_DEMO") != "1" {
		t.Skip("HALO_DEMO=1 runs the narrated PostgreSQL demo (make demo DEMO=postgresql)")
	}
	say := func(format string, args ...any) { fmt.Printf("\n\033[1m== "+format+"\033[0m\n", args...) }
	note := func(format string, args ...any) { fmt.Printf("   "+format+"\n", args...) }

	say("1. Two servers and a client, PostgreSQL protected by the shipped postgresql module")
	pc := newPGCluster(t)
	note("node1, node2 and a client are network namespaces on this machine, on two networks.")
	note("Each node runs `halo agent` with modules/postgresql: PostgreSQL (%s) runs as the postgres user", pgBin())
	note("on a data directory replicated in sync mode (a COMMIT returns once its WAL is on both nodes),")
	note("behind the virtual IP %s that clients use.", pc.Opts.VIP)

	say("2. First start: halo prim on node1; node2 copies node1's data and becomes its SECOND")
	seq := lastSeq(t, pc.Node("node2"))
	prim, second := pc.firstStart()
	r := waitResync(t, second, seq)
	note("node2 resynced in full: %s.", r)

	say("3. A client commits through the VIP: %d sessions, one unique id per transaction", sessions)
	w := startWorkload(t, pc, sessions)
	time.Sleep(3 * time.Second)
	note("%d commits acknowledged to the client so far; it records each one.", w.ackCount())

	say("4. node1 loses power: kill -9 of every process on it (PostgreSQL, halo agent, replication daemon)")
	seq = lastSeq(t, prim)
	killed := time.Now()
	pc.powerOff(prim)
	waitState(t, second, "ALONE", "Ready")
	served := time.Now()
	w.waitAckAfter(t, served, waitLong)
	note("node2 noticed, took the VIP and started PostgreSQL, which recovered from the replicated WAL.")
	note("The client reconnected through the VIP by itself: its longest wait for a commit was %v.", w.outage(killed, served).Round(time.Millisecond))
	acked := w.mustCheck(t, "after the crash")
	note("Every acknowledged commit is in the table on node2: %d acknowledged, 0 lost, 0 duplicated.", acked)

	say("5. node1 comes back: it resyncs only what changed while it was away")
	if err := prim.Restart(ctxFor(t, waitLong), true); err != nil {
		t.Fatal(err)
	}
	r = waitResync(t, prim, seq)
	waitState(t, prim, "SECOND", "Ready")
	waitState(t, second, "PRIM", "Ready")
	note("node1 resynced: %s.", r)
	w.pause()
	if c, err := pc.conn(ctxFor(t, 10*time.Second)); err == nil {
		_ = c.exec(ctxFor(t, time.Minute), "CHECKPOINT")
		c.close()
	}
	note("halo verify (writes paused a moment): %s", firstLine(pc.waitVerified(second)))
	w.resume()

	say("6. halo swap back to node1, under load")
	w.waitAckAfter(t, time.Now(), 30*time.Second)
	swapAt := time.Now()
	if err := second.Command(ctxFor(t, 10*time.Second), "swap"); err != nil {
		t.Fatal(err)
	}
	waitState(t, prim, "PRIM", "Ready")
	waitState(t, second, "SECOND", "Ready")
	served = time.Now()
	w.waitAckAfter(t, served, waitLong)
	note("PostgreSQL stopped cleanly on node2 and started on node1: the client waited at most %v.", w.outage(swapAt, served).Round(time.Millisecond))
	w.halt()
	acked = w.mustCheck(t, "after the swap")
	note("Again every acknowledged commit is there: %d acknowledged, 0 lost, 0 duplicated.", acked)
	out, _, err := prim.CLI(ctxFor(t, 10*time.Second), "status", module)
	if err != nil {
		t.Fatal(err)
	}
	note("halo status %s on node1:\n      %s", module, strings.ReplaceAll(strings.TrimSpace(out), "\n", "\n      "))

	say("Done: everything the demo set up is being removed")
}
