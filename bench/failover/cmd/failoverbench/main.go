// Command failoverbench measures VIP failover times in network namespaces
// and prints one table row per (system, fault, timer setting). It needs
// root. Progress goes to stderr, the table to stdout.
//
//	failoverbench -kills 10 -faults kill9,poweroff -timers fast,default
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/halo-ha/halo/bench/failover"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "failoverbench:", err)
		os.Exit(1)
	}
}

func run() error {
	kills := flag.Int("kills", 10, "crashes per (system, fault, timer setting)")
	faults := flag.String("faults", "kill9,poweroff", "comma-separated faults: kill9 (every process killed), poweroff (kill9 and links cut)")
	timers := flag.String("timers", "fast,default", "comma-separated timer settings: fast, default")
	interval := flag.Duration("interval", 20*time.Millisecond, "client poll interval (the measurement's resolution)")
	flag.Parse()
	if os.Geteuid() != 0 {
		return errors.New("needs root: the test bed creates network namespaces")
	}

	var faultList []failover.Fault
	for _, name := range strings.Split(*faults, ",") {
		f, err := failover.ParseFault(strings.TrimSpace(name))
		if err != nil {
			return err
		}
		faultList = append(faultList, f)
	}
	var clusters []func() (failover.Cluster, error)
	for _, name := range strings.Split(*timers, ",") {
		var t failover.KeepalivedTimers
		switch strings.TrimSpace(name) {
		case "fast":
			t = failover.KeepalivedFast
		case "default":
			t = failover.KeepalivedDefault
		default:
			return fmt.Errorf("unknown timer setting %q: want fast or default", name)
		}
		clusters = append(clusters, func() (failover.Cluster, error) { return failover.NewKeepalived(t) })
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
	}
	started := time.Now()
	var rows []failover.Row
	for _, newCluster := range clusters {
		for _, fault := range faultList {
			c, err := newCluster()
			if err != nil {
				return err
			}
			res, err := failover.Run(ctx, c, failover.Options{
				Kills: *kills, Fault: fault, PollInterval: *interval, Logf: logf,
			})
			if err != nil {
				return fmt.Errorf("%s [%s, %s]: %w", c.System(), c.Timers(), fault, err)
			}
			rows = append(rows, failover.Summarise(res))
		}
	}

	host, _ := os.Hostname()
	fmt.Printf("VIP failover time seen by a client polling http://VIP:8080 every %v (%s, %d CPUs, %s, %s)\n\n",
		*interval, host, runtime.NumCPU(), started.UTC().Format(time.RFC3339), time.Since(started).Round(time.Second))
	fmt.Print(failover.FormatTable(rows))
	fmt.Print(`
outage: from the client's last answer before the crash to its first answer
  from the other node; resolution = poll interval. Each crash follows a
  random 0-1 s wait, so it hits a random phase of the heartbeat. flaps:
  crashes after which the client lost the VIP again before the crashed node
  was back as a standby (0 = one clean outage per crash).
faults: kill9 = every process of the master killed (its kernel still holds
  the VIP and resets connections until the survivor's gratuitous ARP);
  poweroff = kill9 plus every link cut (connections time out instead).
crashes alternate between the nodes: after a crash the node comes back as a
  standby (keepalived nopreempt; halo does not fail back without
  default_primary), so the next crash hits the node that took over.
timers to compare with halo: fast = halo pulse 100 ms / timeout 500 ms;
  default = halo's defaults, pulse 1 s / timeout 5 s. VRRP declares the master
  dead after 3 adverts + a skew that favours the higher priority (node1 150,
  node2 100), so keepalived's takeover delay is shorter than halo's timeout
  at the same pulse (0.34-0.36 s vs 0.5 s; 3.41-3.61 s vs 5 s). A crash comes
  0 to 1 advert after the last one, so an outage is 2 to 3 adverts + skew.
`)
	return nil
}
