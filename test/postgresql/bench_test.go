package postgresql

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/test/mirror/mirrorbed"
)

// Benchmark settings: pgbench's TPC-B-like transaction, 4 clients, for
// benchDuration, benchRuns times per configuration.
const (
	benchScale    = 10
	benchClients  = 4
	benchDuration = 15 * time.Second
	benchRuns     = 3
	plainPort     = 5433
)

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// TestPgbenchReplicatedVsPlain measures pgbench TPS side by side in one run
// on this machine: PostgreSQL on a plain directory; on the replicated
// directory in sync mode, its peer in another namespace; and on the same
// FUSE capture without a peer (the peer powered off: the primary serves
// ALONE, changes only journaled). Every configuration runs benchRuns
// times, interleaved with the plain one so that a change of the machine's
// load hits both; the medians and their ratios are printed. HALO_BENCH=1
// runs it (make bench-pgbench).
func TestPgbenchReplicatedVsPlain(t *testing.T) {
	if os.Getenv("HALO_BENCH") != "1" {
		t.Skip("HALO_BENCH=1 runs the pgbench comparison (make bench-pgbench)")
	}
	pc := newPGCluster(t)
	n1, n2 := pc.firstStart()

	// The plain instance: node1's host, a directory of the same
	// filesystem, not replicated, its own port.
	plain := filepath.Join(filepath.Dir(n1.DataDir), "plain")
	if err := os.Mkdir(plain, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(plain, pc.pgUID, pc.pgGID); err != nil {
		t.Fatal(err)
	}
	pc.pgdata["plain"] = plain
	pc.initdbDir(plain)
	pc.startPlain(n1, plain)

	plainTarget := [2]string{n1.Host.Addr(pc.Opts.VIPNetwork).String(), strconv.Itoa(plainPort)}
	vipTarget := [2]string{pc.Opts.VIP.Addr().String(), strconv.Itoa(pgPort)}
	pc.pgbench(t, plainTarget, "-i", "-q", "-s", strconv.Itoa(benchScale))
	pc.pgbench(t, vipTarget, "-i", "-q", "-s", strconv.Itoa(benchScale))

	results := map[string][]float64{}
	run := func(name string, target [2]string) {
		out := pc.pgbench(t, target, "-c", strconv.Itoa(benchClients), "-j", "2", "-T", strconv.Itoa(int(benchDuration.Seconds())), "-n")
		m := tpsRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("pgbench %s: no tps in its output:\n%s", name, out)
		}
		tps, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		results[name] = append(results[name], tps)
		t.Logf("%-28s run %d: %8.1f tps", name, len(results[name]), tps)
	}
	const (
		cPlain = "plain directory"
		cSync  = "replicated, sync, peer up"
		cAlone = "FUSE capture, no peer"
	)
	for range benchRuns {
		run(cPlain, plainTarget)
		run(cSync, vipTarget)
	}
	// The peer goes: node1 serves ALONE on the same capture, journaling.
	pc.powerOff(n2)
	waitState(t, n1, "ALONE", "Ready")
	for range benchRuns {
		run(cPlain, plainTarget)
		run(cAlone, vipTarget)
	}

	base := medianF(results[cPlain])
	var b strings.Builder
	fmt.Fprintf(&b, "pgbench -s %d -c %d -j 2 -T %v, %d runs each (medians; the machine is shared, so absolute numbers are noisy):\n",
		benchScale, benchClients, benchDuration, benchRuns)
	for _, c := range []string{cPlain, cAlone, cSync} {
		med := medianF(results[c])
		fmt.Fprintf(&b, "  %-28s %8.1f tps  (%.2f x plain)  runs %v\n", c, med, med/base, fmtTPS(results[c]))
	}
	t.Log(b.String())
}

func fmtTPS(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(s, " ")
}

func medianF(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// pgbench runs pgbench from the client host against host:port.
func (pc *pgCluster) pgbench(t *testing.T, target [2]string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	full := append([]string{"-h", target[0], "-p", target[1], "-U", "postgres"}, args...)
	full = append(full, "postgres")
	out, err := pc.Client.Command(ctx, filepath.Join(pgBin(), "pgbench"), full...).CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench %v: %v\n%s", full, err, out)
	}
	return string(out)
}

// startPlain starts PostgreSQL on dir in node n's host, on plainPort.
func (pc *pgCluster) startPlain(n *mirrorbed.Node, dir string) {
	t := pc.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logFile := filepath.Join(filepath.Dir(dir), "plain.log")
	if err := os.WriteFile(logFile, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(logFile, pc.pgUID, pc.pgGID); err != nil {
		t.Fatal(err)
	}
	cmd := n.Host.Command(ctx, "runuser", "-u", "postgres", "--", filepath.Join(pgBin(), "pg_ctl"),
		"-D", dir, "-l", logFile, "-o", fmt.Sprintf("-p %d", plainPort), "-w", "start")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("start the plain PostgreSQL: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		_ = exec.Command("runuser", "-u", "postgres", "--", filepath.Join(pgBin(), "pg_ctl"), "-D", dir, "-m", "immediate", "stop").Run()
	})
}
