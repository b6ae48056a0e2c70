// Package replication tests halo's file replication end to end: two real
// agents in network namespaces (test/mirror/mirrorbed on test/testbed),
// each running its module's replication daemon (FUSE capture on the
// primary, read-only mount and applier on the secondary), a workload
// writer that logs every fsync acknowledged to it, and faults: kill -9 of
// a whole node, SIGSTOP of a daemon, cut links.
package replication

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
	"github.com/halo-ha/halo/sdk/api"
	"github.com/halo-ha/halo/test/harness"
	"github.com/halo-ha/halo/test/mirror/mirrorbed"
	"github.com/halo-ha/halo/test/testbed"
)

const (
	testPulse   = 100 * time.Millisecond
	testTimeout = 500 * time.Millisecond
	// stallTimeout is the module's stall_timeout.
	stallTimeout = 2 * time.Second
	waitLong     = 60 * time.Second
	module       = "web"
)

type replCluster struct {
	*mirrorbed.Cluster
	t    *testing.T
	dirs map[string]string // node -> replicated directory
	acks map[string]string // node -> directory for acknowledgement logs
}

type clusterOpts struct {
	mode       string // default sync
	extra      string // more HCL in the replication block
	splitBrain string // split_brain_winner
	// pulse and timeout of the heartbeats (default testPulse, testTimeout).
	pulse, timeout time.Duration
	// cluster is more HCL in the cluster block (a metrics block).
	cluster string
	// mustExist: the directory's must_exist files, created on both nodes
	// before the agents start.
	mustExist []string
	// stall is the module's stall_timeout (default stallTimeout).
	stall time.Duration
}

// newReplCluster deploys the mirror module with one replicated directory
// per node (each node its own path: both run on this machine) and starts
// both agents.
func newReplCluster(t *testing.T, o clusterOpts) *replCluster {
	t.Helper()
	testbed.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if os.Getenv("HALO_REQUIRE_ROOT") == "1" {
			t.Fatalf("no FUSE on this machine (%v) and HALO_REQUIRE_ROOT=1", err)
		}
		t.Skipf("no FUSE on this machine: %v", err)
	}
	bed, _ := testbed.New(t, testbed.Options{Hosts: []string{"node1", "node2", "client"}, Networks: []string{"default", "replication"}})
	opts := mirrorbed.Options{
		Bin: harness.Bin(t), Module: module, Pulse: testPulse, Timeout: testTimeout,
		SplitBrainWinner: o.splitBrain,
	}
	if o.pulse > 0 {
		opts.Pulse, opts.Timeout = o.pulse, o.timeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := mirrorbed.Deploy(ctx, bed, opts)
	if err != nil {
		t.Fatal(err)
	}
	rc := &replCluster{Cluster: c, t: t, dirs: map[string]string{}, acks: map[string]string{}}
	mode := o.mode
	if mode == "" {
		mode = "sync"
	}
	stall := o.stall
	if stall == 0 {
		stall = stallTimeout
	}
	for _, n := range c.Nodes() {
		dir := filepath.Join(c.Dir, n.Name, "repl")
		acks := filepath.Join(c.Dir, n.Name, "acks")
		for _, d := range []string{dir, acks} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		rc.dirs[n.Name], rc.acks[n.Name] = dir, acks
		mustExist := ""
		if len(o.mustExist) > 0 {
			q := make([]string, len(o.mustExist))
			for i, f := range o.mustExist {
				q[i] = strconv.Quote(f)
				if err := os.WriteFile(filepath.Join(dir, f), []byte("present\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			mustExist = fmt.Sprintf("      must_exist = [%s]\n", strings.Join(q, ", "))
		}
		block := fmt.Sprintf(`  replication {
    mode          = %q
    stall_timeout = %q
%s    dir %q {
      exclude = ["*.tmp"]
%s    }
  }
`, mode, stall, o.extra, dir, mustExist)
		modFile := filepath.Join(n.ConfigDir, "modules", module, "module.hcl")
		b, err := os.ReadFile(modFile)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.TrimRight(string(b), "\n")
		if !strings.HasSuffix(s, "}") {
			t.Fatalf("%s does not end with the module's closing brace", modFile)
		}
		s = s[:len(s)-1] + block + "}\n"
		if err := os.WriteFile(modFile, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if o.cluster != "" {
			clusterFile := filepath.Join(n.ConfigDir, "cluster.hcl")
			b, err := os.ReadFile(clusterFile)
			if err != nil {
				t.Fatal(err)
			}
			s := strings.TrimRight(string(b), "\n")
			if err := os.WriteFile(clusterFile, []byte(s[:len(s)-1]+o.cluster+"}\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Registered after the bed's cleanup, so it runs first: the logs are
	// still there.
	t.Cleanup(func() {
		if t.Failed() {
			rc.dumpLogs()
		}
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (rc *replCluster) node(name string) *mirrorbed.Node { return rc.Node(name) }

// dumpLogs prints both nodes' event logs and the tail of their daemons'
// logs.
func (rc *replCluster) dumpLogs() {
	t := rc.t
	if keep := os.Getenv("HALO_REPL_KEEP_LOGS"); keep != "" {
		// Goroutine dumps of the daemons still running, and every log,
		// for a hang that the tails do not explain.
		for _, n := range rc.Nodes() {
			if b, err := os.ReadFile(filepath.Join(n.DataDir, module, "repl.pid")); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					_ = syscall.Kill(pid, syscall.SIGQUIT)
				}
			}
		}
		time.Sleep(300 * time.Millisecond)
		dst := filepath.Join(keep, t.Name())
		_ = os.MkdirAll(dst, 0o755)
		for _, n := range rc.Nodes() {
			for _, f := range []string{"repl.log", "events.jsonl"} {
				if b, err := os.ReadFile(filepath.Join(n.DataDir, module, f)); err == nil {
					_ = os.WriteFile(filepath.Join(dst, n.Name+"-"+f), b, 0o644)
				}
			}
		}
		t.Logf("logs kept in %s", dst)
	}
	for _, n := range rc.Nodes() {
		path := filepath.Join(n.DataDir, module, "events.jsonl")
		if f, err := os.Open(path); err == nil {
			var b strings.Builder
			sc := bufio.NewScanner(f)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var e api.Event
				if json.Unmarshal(sc.Bytes(), &e) == nil {
					fmt.Fprintf(&b, "  %s %-7s %-5s %s\n", e.Time.Local().Format("15:04:05.000"), e.Kind, e.Level, e.Text)
				}
			}
			f.Close()
			t.Logf("%s: event log:\n%s", n.Name, b.String())
		}
		if b, err := os.ReadFile(filepath.Join(n.DataDir, module, "repl.log")); err == nil {
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			t.Logf("%s: replication daemon log (tail):\n  %s", n.Name, strings.Join(lines, "\n  "))
		}
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func waitState(t *testing.T, n *mirrorbed.Node, state, readiness string) api.ModuleStatus {
	t.Helper()
	m, err := n.WaitState(ctxFor(t, waitLong), state, readiness)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func waitRoles(t *testing.T, prim, second *mirrorbed.Node) {
	t.Helper()
	waitState(t, second, "SECOND", "Ready")
	waitState(t, prim, "PRIM", "Ready")
}

func waitEvent(t *testing.T, n *mirrorbed.Node, after uint64, parts ...string) api.Event {
	t.Helper()
	e, err := n.WaitEvent(ctxFor(t, waitLong), after, parts...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func lastSeq(t *testing.T, n *mirrorbed.Node) uint64 {
	t.Helper()
	s, err := n.LastSeq(ctxFor(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// firstStart: both WAIT, halo prim on node1, node2 resyncs in full and
// becomes its SECOND.
func (rc *replCluster) firstStart() (n1, n2 *mirrorbed.Node) {
	t := rc.t
	t.Helper()
	n1, n2 = rc.node("node1"), rc.node("node2")
	waitState(t, n1, "WAIT", "")
	waitState(t, n2, "WAIT", "")
	if err := n1.Command(ctxFor(t, 10*time.Second), "prim"); err != nil {
		t.Fatal(err)
	}
	waitRoles(t, n1, n2)
	return n1, n2
}

// startWriter runs the workload writer in node's namespace, writing into
// its replicated directory; it returns the process and its ack log.
func (rc *replCluster) startWriter(n *mirrorbed.Node, name string, seed uint64) (*testbed.Process, string) {
	t := rc.t
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	acks := filepath.Join(rc.acks[n.Name], fmt.Sprintf("%s-%d.log", name, seed))
	cmd := n.Host.Command(context.Background(), self)
	cmd.Env = append(os.Environ(), writerDirEnv+"="+rc.dirs[n.Name], writerAcksEnv+"="+acks,
		writerSeedEnv+"="+strconv.FormatUint(seed, 10), writerNameEnv+"="+name)
	p, err := n.Host.Start(fmt.Sprintf("writer-%s-%d", name, seed), cmd)
	if err != nil {
		t.Fatal(err)
	}
	return p, acks
}

// powerOff kills every process of node n with SIGKILL, cuts its links and
// removes the VIP it may hold: a crash. mirrorbed's PowerOff stops the
// processes first, which cannot stop one blocked in a FUSE request whose
// daemon is already stopped (the kernel waits for it killably only).
func (rc *replCluster) powerOff(n *mirrorbed.Node) {
	t := rc.t
	t.Helper()
	if err := n.Host.Kill9(); err != nil {
		t.Fatal(err)
	}
	if err := n.Host.CutAll(); err != nil {
		t.Fatal(err)
	}
	held, err := n.HoldsVIP()
	if err != nil {
		t.Fatal(err)
	}
	if held {
		if err := n.Host.DelAddr(rc.Opts.VIPNetwork, rc.Opts.VIP); err != nil {
			t.Fatal(err)
		}
	}
}

func stopWriter(t *testing.T, p *testbed.Process) {
	t.Helper()
	_ = p.Signal(os.Kill)
	<-p.Done()
}

// verify runs `halo verify` on node n; it returns the output and whether
// both trees are identical (exit 0).
func (rc *replCluster) verify(n *mirrorbed.Node) (string, bool) {
	t := rc.t
	t.Helper()
	out, code, err := n.CLI(ctxFor(t, 2*time.Minute), "verify", module)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 && code != 1 {
		t.Fatalf("halo verify on %s: exit %d: %s", n.Name, code, out)
	}
	return out, code == 0
}

// waitVerified runs halo verify until it finds the trees identical (the
// last operations acknowledged may still be travelling when it starts).
func (rc *replCluster) waitVerified(n *mirrorbed.Node) {
	t := rc.t
	t.Helper()
	var out string
	for range 10 {
		var ok bool
		if out, ok = rc.verify(n); ok {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("halo verify on %s keeps finding differences:\n%s", n.Name, out)
}

// daemonPID is the pid of node n's replication daemon.
func (rc *replCluster) daemonPID(n *mirrorbed.Node) int {
	t := rc.t
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.DataDir, module, "repl.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// stopDaemon freezes node n's replication daemon with SIGSTOP and returns
// once every thread of it is stopped, with the function that resumes it.
// kill(2) only queues the signal: the threads stop when they are next
// scheduled, and on a loaded machine a daemon can answer a request it
// receives after kill returned. The daemon answering on the control
// socket must be the one repl.pid names, else freezing it proves nothing.
func (rc *replCluster) stopDaemon(n *mirrorbed.Node) (resume func()) {
	t := rc.t
	t.Helper()
	pid := rc.daemonPID(n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	resp, err := (ctl.Client{Socket: ctl.SocketPath(n.DataDir, module)}).Call(ctx, ctl.Request{Op: ctl.OpHello})
	cancel()
	if err != nil {
		t.Fatalf("%s: hello to the replication daemon: %v", n.Name, err)
	}
	if resp.Hello == nil || resp.Hello.PID != pid {
		t.Fatalf("%s: repl.pid names pid %d, the control socket is served by %+v", n.Name, pid, resp.Hello)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("%s: stop the replication daemon (pid %d): %v", n.Name, pid, err)
	}
	resumed := false
	resume = func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for {
		running, err := runningThreads(pid)
		if err != nil {
			resume()
			t.Fatalf("%s: replication daemon (pid %d): %v", n.Name, pid, err)
		}
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			resume()
			t.Fatalf("%s: %d threads of the replication daemon (pid %d) still run 10s after SIGSTOP", n.Name, running, pid)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("%s: replication daemon (pid %d) stopped %v after SIGSTOP", n.Name, pid, time.Since(start))
	return resume
}

// runningThreads counts the threads of process pid not in a stopped
// state (T: stopped by a signal, t: traced).
func runningThreads(pid int) (int, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("list threads: %w", err)
	}
	running := 0
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, task.Name(), "stat"))
		if err != nil {
			continue // the thread exited
		}
		// The state follows the command name, which is in parentheses
		// and may itself hold spaces or parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) {
			return 0, fmt.Errorf("unexpected %s/%s/stat: %q", dir, task.Name(), b)
		}
		if st := b[i+2]; st != 'T' && st != 't' {
			running++
		}
	}
	return running, nil
}

// resource returns a resource of the module on n ("" if absent).
func resource(t *testing.T, n *mirrorbed.Node, name string) api.Resource {
	t.Helper()
	m, err := n.Status(ctxFor(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return m.Resources[name]
}

// waitClean waits until n's journal holds nothing (a checkpoint emptied
// it): an incremental resync measured from then on sends only what the
// test changes. Only a status the agent got from the daemon after the call
// counts: the agent refreshes it every second, and one taken before the
// test's last writes says clean while their zones are still journaled
// (until the next checkpoint, every few seconds), and a resync then sends
// them again.
func waitClean(t *testing.T, n *mirrorbed.Node) {
	t.Helper()
	since := time.Now()
	deadline := since.Add(waitLong)
	var last, first string
	for readings := 1; time.Now().Before(deadline); readings++ {
		m, err := n.Status(ctxFor(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		r := m.Replication
		switch {
		case r == nil:
			last = "no replication status"
		case !r.Up:
			last = "daemon down: " + r.Error
		case r.UpdatedAt.Before(since):
			last = fmt.Sprintf("%d dirty zones, %d paths in a status of %v before the call", r.DirtyZones, r.DirtyPaths, since.Sub(r.UpdatedAt).Round(time.Millisecond))
		case r.DirtyZones == 0 && r.DirtyPaths == 0:
			if first == "" {
				first = "clean"
			}
			t.Logf("%s: journal clean after %v, %d readings (first: %s)", n.Name, time.Since(since).Round(time.Millisecond), readings, first)
			return
		default:
			last = fmt.Sprintf("%d dirty zones, %d paths", r.DirtyZones, r.DirtyPaths)
		}
		if first == "" {
			first = last
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: journal never emptied (last %s)", n.Name, last)
}

var resyncDoneRE = regexp.MustCompile(`resync (\d+) from \S+ \((\w+)\) done: (\d+) objects changed, (\d+) data bytes, (\d+) bytes on the network`)

// resyncResult is what a target's event log says of a finished resync.
type resyncResult struct {
	kind                   string
	changed, data, network int64
}

// waitResync waits for a resync done after seq on target n.
func waitResync(t *testing.T, n *mirrorbed.Node, after uint64) resyncResult {
	t.Helper()
	e := waitEvent(t, n, after, "resync", "done:")
	m := resyncDoneRE.FindStringSubmatch(e.Text)
	if m == nil {
		t.Fatalf("%s: unexpected resync line %q", n.Name, e.Text)
	}
	r := resyncResult{kind: m[2]}
	r.changed, _ = strconv.ParseInt(m[3], 10, 64)
	r.data, _ = strconv.ParseInt(m[4], 10, 64)
	r.network, _ = strconv.ParseInt(m[5], 10, 64)
	return r
}
