// Command fsbench compares filesystem workloads on a plain directory, on
// halo's FUSE capture mount without a peer (the daemon in role none,
// journaling) and replicated in sync mode to a peer daemon in another
// network namespace over mutual TLS; then it times full resyncs of a large
// tree, identical and with 1 % of it changed. Root only (namespaces, FUSE,
// drop_caches). See `make bench-fs`.
//
// The benchmark runs itself inside a network namespace it creates (the
// source side: this process, its workloads and the source daemon share
// one mount namespace, so the workloads see the capture mount) and starts
// the target daemon in a second namespace joined to the first by a veth
// pair.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/halo-ha/halo/internal/pki"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
)

type options struct {
	dir         string
	runs        int
	scale       float64
	resyncFiles int
	resyncBytes int64
	skipFS      bool
	skipResync  bool
	profile     string
	keepTree    bool
	targetNS    string
	tarball     string
	setups      string
	workloads   string
}

const (
	srcAddr = "198.19.77.1"
	dstAddr = "198.19.77.2"
	port    = 21077
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "daemon" {
		if err := runDaemon(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "fsbench daemon:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	inner := flag.Bool("inner", false, "internal: run inside the source namespace")
	flag.StringVar(&o.dir, "dir", "/var/tmp/halo-fsbench", "scratch directory (needs ~25 GB free at full size)")
	flag.IntVar(&o.runs, "runs", 3, "runs per workload and configuration")
	flag.Float64Var(&o.scale, "scale", 1, "multiply the workload sizes (quick runs: 0.05); the reported run uses 1")
	flag.IntVar(&o.resyncFiles, "resync-files", 1_000_000, "files in the resync tree")
	flag.Int64Var(&o.resyncBytes, "resync-bytes", 10<<30, "bytes in the resync tree")
	flag.BoolVar(&o.skipFS, "skip-fs", false, "skip the filesystem workloads")
	flag.BoolVar(&o.skipResync, "skip-resync", false, "skip the full-resync benchmark")
	flag.StringVar(&o.profile, "profile", "", "write CPU profiles of the source daemon during each replicated workload of run 1 into this directory (<workload>.pprof)")
	flag.BoolVar(&o.keepTree, "keep-tree", false, "keep the resync tree (and reuse it next time)")
	flag.StringVar(&o.setups, "setups", strings.Join(setups, ","), "setups to run (development; the report wants all three)")
	flag.StringVar(&o.workloads, "workloads", strings.Join(workloads, ","), "workloads to run (development; the report wants all four)")
	flag.StringVar(&o.targetNS, "target-ns", "", "internal: the target's namespace")
	flag.StringVar(&o.tarball, "tarball", "", "source tree tarball to untar (default: made once from the Go tree's src)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "fsbench: must run as root (namespaces, FUSE, drop_caches)")
		os.Exit(1)
	}
	var err error
	if *inner {
		err = runInner(o)
	} else {
		err = runOuter(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fsbench:", err)
		os.Exit(1)
	}
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// runOuter creates both namespaces and the veth pair between them, runs
// the benchmark in the source namespace and removes them again.
func runOuter(args []string) error {
	pid := strconv.Itoa(os.Getpid())
	src, dst := "hfsb"+pid+"-s", "hfsb"+pid+"-t"
	vs, vt := "hfsb"+pid+"s", "hfsb"+pid+"t"
	defer func() {
		_ = run("ip", "netns", "del", src)
		_ = run("ip", "netns", "del", dst)
	}()
	for _, c := range [][]string{
		{"netns", "add", src}, {"netns", "add", dst},
		{"link", "add", vs, "netns", src, "type", "veth", "peer", "name", vt, "netns", dst},
		{"-n", src, "addr", "add", srcAddr + "/30", "dev", vs},
		{"-n", dst, "addr", "add", dstAddr + "/30", "dev", vt},
		{"-n", src, "link", "set", "lo", "up"}, {"-n", dst, "link", "set", "lo", "up"},
		{"-n", src, "link", "set", vs, "up"}, {"-n", dst, "link", "set", vt, "up"},
	} {
		if err := run("ip", c...); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", src, self, "-inner", "-target-ns", dst}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// An interrupt reaches the whole foreground group: the inner run
	// cleans up its daemons and mounts, this one the namespaces after it.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	return cmd.Run()
}

// bed is the inner run's state: both daemons and their control clients.
type bed struct {
	o     options
	cfg   bedConfig
	cfgF  string
	procs map[string]*exec.Cmd
	ctl   map[string]ctl.Client
	gen   uint64
	id    uint64
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

func runInner(o options) error {
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", o.dir, err)
	}
	b := &bed{o: o, procs: map[string]*exec.Cmd{}, ctl: map[string]ctl.Client{}, gen: uint64(time.Now().Unix()) << 8}
	defer b.stopAll()
	if err := b.setup(); err != nil {
		return err
	}
	var rep report
	rep.load = append(rep.load, loadavg())
	if !o.skipFS {
		if err := b.fsPhases(&rep); err != nil {
			return err
		}
	}
	if !o.skipResync {
		if err := b.resyncPhases(&rep); err != nil {
			return err
		}
	}
	rep.load = append(rep.load, loadavg())
	rep.print(os.Stdout, o)
	return nil
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// setup makes the directories, the TLS material and the configuration,
// and starts both daemons (role none).
func (b *bed) setup() error {
	pkiDir := filepath.Join(b.o.dir, "pki")
	b.cfg = bedConfig{Port: port, Mode: "sync", PKI: pkiDir, Nodes: map[string]nodeConf{}}
	for n, a := range map[string]string{"n1": srcAddr, "n2": dstAddr} {
		nc := nodeConf{Addr: a, Repl: filepath.Join(b.o.dir, n, "repl"), Data: filepath.Join(b.o.dir, n, "data")}
		// Leftovers of an interrupted run: a stale mount would hide the
		// directory, a stale journal would make the first resync large.
		_ = syscall.Unmount(nc.Repl, syscall.MNT_DETACH)
		if err := os.RemoveAll(nc.Data); err != nil {
			return fmt.Errorf("clean %s: %w", nc.Data, err)
		}
		for _, d := range []string{nc.Repl, nc.Data} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("create %s: %w", d, err)
			}
		}
		b.cfg.Nodes[n] = nc
		b.ctl[n] = ctl.Client{Socket: ctl.SocketPath(nc.Data, module)}
	}
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", pkiDir, err)
	}
	now := time.Now()
	ca, err := pki.NewCA(module, now)
	if err != nil {
		return fmt.Errorf("make CA: %w", err)
	}
	if err := os.WriteFile(filepath.Join(pkiDir, "ca.pem"), ca.CertPEM(), 0o600); err != nil {
		return err
	}
	for n, nc := range b.cfg.Nodes {
		key, err := pki.NewKey()
		if err != nil {
			return err
		}
		leaf, err := ca.IssueNode(n, []netip.Addr{netip.MustParseAddr(nc.Addr)}, key, now)
		if err != nil {
			return fmt.Errorf("issue %s's certificate: %w", n, err)
		}
		kp, err := leaf.KeyPEM()
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(pkiDir, n+".pem"), leaf.CertPEM(), 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(pkiDir, n+".key"), kp, 0o600); err != nil {
			return err
		}
	}
	raw, _ := json.MarshalIndent(b.cfg, "", "  ")
	b.cfgF = filepath.Join(b.o.dir, "bed.json")
	if err := os.WriteFile(b.cfgF, raw, 0o644); err != nil {
		return err
	}
	return b.startAll()
}

func (b *bed) startAll() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, n := range []string{"n1", "n2"} {
		args := []string{self, "daemon", "-config", b.cfgF, "-node", n}
		if n == "n2" {
			args = append([]string{"ip", "netns", "exec", b.o.targetNS}, args...)
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		// Own process group: a ^C reaches the benchmark, which stops the
		// daemons in order (the source first, then the target).
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s's daemon: %w", n, err)
		}
		b.procs[n] = cmd
	}
	for _, n := range []string{"n1", "n2"} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := b.ctl[n].Call(ctx, ctl.Request{Op: ctl.OpHello})
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s's daemon does not answer: %w", n, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func (b *bed) stopAll() {
	for _, n := range []string{"n1", "n2"} {
		cmd := b.procs[n]
		if cmd == nil {
			continue
		}
		// The daemon under `ip netns exec` is exec'd by ip: the pid is
		// the daemon's.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		delete(b.procs, n)
	}
}

func (b *bed) call(n string, req ctl.Request) (ctl.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := b.ctl[n].Call(ctx, req)
	if err != nil {
		return resp, fmt.Errorf("%s %s: %w", n, req.Op, err)
	}
	return resp, nil
}

// fullResync makes n1 the source and n2 the target, runs a full resync
// and returns its status when done. The writes wait for n2 afterwards
// (n1 is the primary).
func (b *bed) fullResync() (*ctl.ResyncStatus, time.Duration, error) {
	b.gen++
	b.id++
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan ctl.Event, 64)
	go func() {
		_ = b.ctl["n2"].Subscribe(ctx, func(ev ctl.Event) {
			if ev.Kind == ctl.EvResyncDone || ev.Kind == ctl.EvResyncFailed {
				events <- ev
			}
		})
	}()
	time.Sleep(100 * time.Millisecond) // the subscription is registered
	if _, err := b.call("n1", ctl.Request{Op: ctl.OpRole, Role: ctl.RoleSource, Peer: "n2", Gen: b.gen}); err != nil {
		return nil, 0, err
	}
	if _, err := b.call("n2", ctl.Request{Op: ctl.OpRole, Role: ctl.RoleTarget, Peer: "n1", Gen: b.gen}); err != nil {
		return nil, 0, err
	}
	start := time.Now()
	if _, err := b.call("n2", ctl.Request{Op: ctl.OpResync, Gen: b.gen, Resync: &ctl.ResyncRequest{
		ID: b.id, Peer: "n1", Full: true, Source: journalGen(b.gen)}}); err != nil {
		return nil, 0, err
	}
	for {
		select {
		case ev := <-events:
			if ev.ID != b.id {
				continue
			}
			took := time.Since(start)
			if ev.Kind == ctl.EvResyncFailed {
				return nil, 0, fmt.Errorf("resync %d failed: %s", b.id, ev.Reason)
			}
			st, err := b.call("n2", ctl.Request{Op: ctl.OpStatus})
			if err != nil {
				return nil, 0, err
			}
			if _, err := b.call("n1", ctl.Request{Op: ctl.OpRole, Role: ctl.RoleSource, Peer: "n2", Gen: b.gen, Primary: true}); err != nil {
				return nil, 0, err
			}
			return st.Status.Resync, took, nil
		case <-time.After(2 * time.Hour):
			return nil, 0, errors.New("resync does not finish")
		}
	}
}

// startProfile starts a CPU profile of n1's daemon into path.
func (b *bed) startProfile(path string) error {
	if err := os.WriteFile(filepath.Join(b.cfg.Nodes["n1"].Data, "profile.path"), []byte(path), 0o644); err != nil {
		return err
	}
	if err := b.procs["n1"].Process.Signal(syscall.SIGUSR1); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond)
	return nil
}

func (b *bed) stopProfile() {
	_ = b.procs["n1"].Process.Signal(syscall.SIGUSR2)
	time.Sleep(time.Second) // the profile is written
}
