// Command demo is the mirror part of `make demo`: two servers and a client
// as network namespaces on this machine, a real halo mirror module
// protecting a small web service behind a virtual IP, a crash of the
// primary with the downtime the client measured, the node's return, a swap
// back, and a teardown that also runs on Ctrl-C and on failure.
//
//	demo -bin bin            (needs root)
//	demo -cleanup            removes what a killed demo left behind
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/halo-ha/halo/test/mirror/mirrorbed"
	"github.com/halo-ha/halo/test/testbed"
)

const (
	bold  = "\033[1m"
	reset = "\033[0m"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding halo and plugins/")
	cleanup := flag.Bool("cleanup", false, "only remove the namespaces and files of demos (or tests) whose process died")
	pulse := flag.Duration("pulse", 100*time.Millisecond, "heartbeat pulse")
	timeout := flag.Duration("timeout", 500*time.Millisecond, "heartbeat timeout: the peer is declared dead after this long without heartbeats")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (it creates network namespaces, virtual links and addresses); run: sudo make demo")
		os.Exit(1)
	}
	if *cleanup {
		removed, err := testbed.CleanupStale()
		if len(removed) > 0 {
			fmt.Println("removed leftovers:", strings.Join(removed, " "))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo: cleanup:", err)
			os.Exit(1)
		}
		return
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	// Ctrl-C or a kill ends the context: run returns and the deferred
	// teardown removes everything.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := run(ctx, abs, *pulse, *timeout); err != nil {
		if errors.Is(err, context.Canceled) {
			err = errors.New("interrupted")
		}
		fmt.Fprintln(os.Stderr, "\ndemo failed:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) {
	fmt.Printf("\n"+bold+"== "+format+reset+"\n", args...)
}

func tell(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func run(ctx context.Context, bin string, pulse, timeout time.Duration) (err error) {
	say("Setting up two servers, node1 and node2, and a client")
	tell("Each is a network namespace on this machine, wired to two virtual switches:")
	tell("  'default' (198.18.0.0/24), where clients reach the service, and")
	tell("  'replication' (198.18.1.0/24), a second path for the heartbeats.")
	bed, err := testbed.New(nil, testbed.Options{
		Hosts:    []string{"node1", "node2", "client"},
		Networks: []string{"default", "replication"},
	})
	if err != nil {
		return err
	}
	defer func() {
		say("Tearing down")
		if cerr := bed.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("tear down: %w", cerr))
			return
		}
		tell("Every process, namespace, link and file of the demo is gone.")
	}()
	for _, h := range bed.Hosts() {
		tell("  %-7s %s (default), %s (replication)", h.Name, h.Addr("default"), h.Addr("replication"))
	}

	c, err := mirrorbed.Deploy(ctx, bed, mirrorbed.Options{Bin: bin, Pulse: pulse, Timeout: timeout, LogLevel: "info"})
	if err != nil {
		return err
	}
	n1, n2 := c.Node("node1"), c.Node("node2")
	vip := c.Opts.VIP.Addr()

	say("Installing a mirror module, 'web', on both servers")
	tell("It protects a small web service listening on port %d. The service runs only", c.Opts.Port)
	tell("on the primary, behind the virtual IP %s that clients use. The nodes", vip)
	tell("exchange signed heartbeats every %v on both networks; a node that hears", pulse)
	tell("nothing from its peer for %v declares it dead. `halo cluster init`", timeout)
	tell("made the cluster's CA, node certificates and heartbeat key.")
	fmt.Println()
	mod, _ := os.ReadFile(filepath.Join(n1.ConfigDir, "modules", "web", "module.hcl"))
	fmt.Print(indent(summariseModule(string(mod))))

	say("Starting `halo agent` on both servers")
	if err := c.Start(ctx); err != nil {
		return err
	}
	for _, n := range c.Nodes() {
		if _, err := n.WaitState(ctx, "WAIT", ""); err != nil {
			return err
		}
	}
	tell("A brand-new module: neither node can know its data is the good one, so both")
	tell("WAIT for the administrator to choose. Their event logs say why:")
	for _, n := range c.Nodes() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		e, err := n.WaitEvent(wctx, 0, "data may not be up to date")
		cancel()
		if err != nil {
			return err
		}
		tell("  %s: %s", n.Name, e.Text)
	}
	if err := showStatus(ctx, c); err != nil {
		return err
	}

	say("The administrator runs `halo prim web` on node1")
	if out, code, err := n1.CLI(ctx, "prim", "web"); err != nil || code != 0 {
		return fmt.Errorf("halo prim web on node1: exit %d: %v %s", code, err, out)
	}
	if err := waitRoles(ctx, n1, n2); err != nil {
		return err
	}
	tell("node1 takes the virtual IP and starts the service (PRIM); node2 is its standby (SECOND).")
	if err := showStatus(ctx, c); err != nil {
		return err
	}

	p, err := bed.Poller("client", c.Target(), testbed.PollerOptions{Interval: 20 * time.Millisecond, Timeout: 300 * time.Millisecond})
	if err != nil {
		return err
	}
	if err := p.WaitAnswer(ctx, "node1"); err != nil {
		return err
	}
	say("The client fetches http://%s/ every 20 ms", c.Target())
	time.Sleep(time.Second)
	tell("Answered by: %s (%d requests so far, none failed)", strings.Join(p.Stats().Answers(), ", "), p.Stats().Probes)

	say("Crash: every process on node1 is killed with SIGKILL")
	tell("The halo agent, its plugins and the web service die at once, as in a crash.")
	seq2, err := n2.LastSeq(ctx)
	if err != nil {
		return err
	}
	if err := n1.Host.Freeze(); err != nil {
		return err
	}
	if err := n1.Host.Kill9(); err != nil {
		return err
	}
	if err := p.WaitAnswer(ctx, "node2"); err != nil {
		return err
	}
	if _, err := n2.WaitState(ctx, "ALONE", "Ready"); err != nil {
		return err
	}
	st := p.Stop()
	gap, ok := st.FirstGap()
	if !ok {
		return errors.New("the client saw no outage: the crash did not reach the service")
	}
	tell("node2 stopped hearing node1, took the virtual IP, announced it to the network and")
	tell("started the service. The client is now answered by node2.")
	tell("")
	tell(bold+"Measured downtime seen by the client: %v"+reset+" (%d requests failed, heartbeat timeout %v).",
		gap.Duration().Round(time.Millisecond), gap.Failed, timeout)
	tell("")
	tell("Why, from node2's event log:")
	if err := showEvents(ctx, n2, seq2, 8); err != nil {
		return err
	}
	tell("")
	if err := showStatus(ctx, c, n2); err != nil {
		return err
	}

	say("node1 comes back (as after a reboot)")
	p, err = bed.Poller("client", c.Target(), testbed.PollerOptions{Interval: 20 * time.Millisecond, Timeout: 300 * time.Millisecond})
	if err != nil {
		return err
	}
	if err := n1.Restart(ctx, true); err != nil {
		return err
	}
	if err := waitRoles(ctx, n2, n1); err != nil {
		return err
	}
	tell("node1 sees that node2 served while it was away: it becomes node2's SECOND,")
	tell("and node2, which has a standby again, is PRIM. The service never moved:")
	st = p.Stop()
	tell("  %d requests during node1's return, %d failed, answered by %s.", st.Probes, st.Failed, strings.Join(st.Answers(), ", "))
	if err := showStatus(ctx, c); err != nil {
		return err
	}

	say("The administrator swaps the roles back: `halo swap web`")
	p, err = bed.Poller("client", c.Target(), testbed.PollerOptions{Interval: 20 * time.Millisecond, Timeout: 300 * time.Millisecond})
	if err != nil {
		return err
	}
	since := time.Now()
	if out, code, err := n1.CLI(ctx, "swap", "web"); err != nil || code != 0 {
		return fmt.Errorf("halo swap web on node1: exit %d: %v %s", code, err, out)
	}
	if err := waitRoles(ctx, n1, n2); err != nil {
		return err
	}
	if err := p.WaitAnswer(ctx, "node1"); err != nil {
		return err
	}
	st = p.Stop()
	tell("node2 stopped the service and released the virtual IP first; only then did node1")
	tell("take the IP and start the service, so the two never ran at the same time:")
	runs, err := c.AllScriptRuns()
	if err != nil {
		return err
	}
	for _, r := range runs {
		if r.Begin.Before(since) || (r.Script != "stop_prim" && r.Script != "start_prim") {
			continue
		}
		tell("  %s  %-10s on %s, %v", r.Begin.Format("15:04:05.000"), r.Script, r.Node, r.End.Sub(r.Begin).Round(time.Millisecond))
	}
	if g, ok := st.FirstGap(); ok {
		tell(bold+"Planned downtime of the swap: %v"+reset+" (%d requests failed).", g.Duration().Round(time.Millisecond), g.Failed)
	} else {
		tell("The client saw no failed request during the swap.")
	}
	return showStatus(ctx, c)
}

func waitRoles(ctx context.Context, prim, second *mirrorbed.Node) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := prim.WaitState(ctx, "PRIM", "Ready"); err != nil {
		return err
	}
	_, err := second.WaitState(ctx, "SECOND", "Ready")
	return err
}

// showStatus prints `halo status` as run on each node given (default both).
func showStatus(ctx context.Context, c *mirrorbed.Cluster, nodes ...*mirrorbed.Node) error {
	if len(nodes) == 0 {
		all := c.Nodes()
		nodes = all[:]
	}
	for _, n := range nodes {
		out, code, err := n.CLI(ctx, "status")
		if err != nil || code != 0 {
			return fmt.Errorf("halo status on %s: exit %d: %v %s", n.Name, code, err, out)
		}
		fmt.Printf("\n  %s# halo status\n%s", n.Name, indent(out))
	}
	return nil
}

// showEvents prints up to max of the node's events after seq that explain
// a decision (state changes, warnings), as `halo logs` shows them.
func showEvents(ctx context.Context, n *mirrorbed.Node, after uint64, max int) error {
	evs, err := n.Client().Events(ctx, "web", after, 0)
	if err != nil {
		return err
	}
	shown := 0
	for _, e := range evs {
		if e.Kind == "output" || shown == max {
			continue
		}
		tell("  %s %-5s %s", e.Time.Local().Format("15:04:05.000"), e.Level, e.Text)
		shown++
	}
	return nil
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// summariseModule drops the app block's env (paths of the demo's
// machinery) from the module file shown to the audience.
func summariseModule(hcl string) string {
	var out []string
	skip := false
	for _, l := range strings.Split(hcl, "\n") {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "env = {"):
			skip = true
			out = append(out, strings.Replace(l, "env = {", "env = { ... }", 1))
			continue
		case skip && t == "}":
			skip = false
			continue
		case skip:
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
