package mirror

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/bench/failover"
	"github.com/halo-ha/halo/test/harness"
	"github.com/halo-ha/halo/test/testbed"
)

// TestFailoverTime measures the VIP failover time a client sees, halo next
// to keepalived in the same run and the same test bed harness
// (bench/failover): a client polls http://VIP:8080 every 20 ms, the node
// serving the VIP is crashed (every process killed at once) HALO_BENCH_KILLS
// times (default 10), with fast timers (halo pulse 100 ms / timeout 500 ms,
// keepalived advert_int 0.1) and with the defaults. It is a benchmark, not
// a test: it runs only with HALO_BENCH=1 and prints its table (go test -v).
// HALO_BENCH_FAULTS=kill9,poweroff adds the power-off fault.
func TestFailoverTime(t *testing.T) {
	if !envIs("HALO_BENCH") {
		t.Skip("benchmark: set HALO_BENCH=1 to measure failover times")
	}
	testbed.RequireRoot(t)
	kills := 10
	if s := os.Getenv("HALO_BENCH_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("HALO_BENCH_KILLS=%q: want a positive number", s)
		}
		kills = n
	}
	faults := []failover.Fault{failover.Kill9}
	if s := os.Getenv("HALO_BENCH_FAULTS"); s != "" {
		faults = nil
		for _, name := range strings.Split(s, ",") {
			f, err := failover.ParseFault(strings.TrimSpace(name))
			if err != nil {
				t.Fatal(err)
			}
			faults = append(faults, f)
		}
	}
	bin := harness.Bin(t)
	var clusters []failover.Cluster
	for _, tm := range []failover.HaloTimers{failover.HaloFast, failover.HaloDefault} {
		h, err := failover.NewHalo(tm, bin)
		if err != nil {
			t.Fatal(err)
		}
		clusters = append(clusters, h)
	}
	if _, err := exec.LookPath("keepalived"); err == nil {
		for _, tm := range []failover.KeepalivedTimers{failover.KeepalivedFast, failover.KeepalivedDefault} {
			k, err := failover.NewKeepalived(tm)
			if err != nil {
				t.Fatal(err)
			}
			clusters = append(clusters, k)
		}
	} else {
		t.Log("KEEPALIVED NOT INSTALLED (apt-get install keepalived): halo rows only, no baseline")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	var rows []failover.Row
	for _, c := range clusters {
		for _, f := range faults {
			res, err := failover.Run(ctx, c, failover.Options{Kills: kills, Fault: f, TB: t, Logf: t.Logf})
			if err != nil {
				t.Fatalf("%s [%s, %s]: %v", c.System(), c.Timers(), f, err)
			}
			rows = append(rows, failover.Summarise(res))
		}
	}
	t.Logf("VIP failover time seen by a client polling every 20ms (%d crashes per row):\n%s", kills, failover.FormatTable(rows))
}
