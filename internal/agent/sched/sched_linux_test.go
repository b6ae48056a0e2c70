package sched

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// enableForTest raises this test process's threads and puts them back to
// the normal policy at the end, so that other tests run as usual.
func enableForTest(t *testing.T) *RealtimeThreads {
	t.Helper()
	r, err := Enable(DefaultPriority)
	if errors.Is(err, unix.EPERM) && os.Geteuid() != 0 {
		t.Skipf("real-time scheduling not permitted to uid %d (needs CAP_SYS_NICE): %v", os.Geteuid(), err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tids, err := threadIDs("self")
		if err != nil {
			t.Error(err)
			return
		}
		for _, tid := range tids {
			_ = unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: unix.SCHED_NORMAL}, 0)
		}
	})
	return r
}

func assertAllRealtime(t *testing.T, pid string) {
	t.Helper()
	ts, err := Threads(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, th := range ts {
		if th.Policy != "SCHED_RR" || th.Priority != DefaultPriority || !th.ResetOnFork {
			t.Errorf("thread %d of %s: %s, want SCHED_RR %d reset-on-fork", th.TID, pid, th, DefaultPriority)
		}
	}
}

func TestEnableRaisesEveryThreadAndChildrenStartNormal(t *testing.T) {
	r := enableForTest(t)
	assertAllRealtime(t, "self")

	// A child started from any goroutine (any thread) starts normal, and
	// so do the processes it starts in turn.
	cmd := exec.Command("sh", "-c", "sleep 5 & echo $!; wait")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	buf := make([]byte, 32)
	n, err := out.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	grandchild, err := strconv.Atoi(string(buf[:n-1]))
	if err != nil {
		t.Fatalf("grandchild pid %q: %v", buf[:n], err)
	}
	t.Cleanup(func() { _ = unix.Kill(grandchild, unix.SIGKILL) })
	for _, pid := range []int{cmd.Process.Pid, grandchild} {
		ts, err := Threads(strconv.Itoa(pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, th := range ts {
			if th.RealTime || th.ResetOnFork || th.Policy != "SCHED_OTHER" || th.Nice != 0 {
				t.Errorf("process %d started by a real-time agent runs %s (nice %d), want SCHED_OTHER nice 0", pid, th, th.Nice)
			}
		}
	}
	if r.String() == "" || r.Priority() != DefaultPriority {
		t.Errorf("description %q, priority %d", r.String(), r.Priority())
	}
}

// New threads start normal (reset-on-fork applies to threads too); a sweep
// raises them.
func TestSweepRaisesNewThreads(t *testing.T) {
	r := enableForTest(t)
	before, err := threadIDs("self")
	if err != nil {
		t.Fatal(err)
	}
	// Goroutines locked to their threads each hold one: more of them than
	// there are threads make the runtime create new ones.
	extra := len(before) + 4
	var wg sync.WaitGroup
	release := make(chan struct{})
	locked := make(chan struct{}, extra)
	for range extra {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			locked <- struct{}{}
			<-release
		})
	}
	for range extra {
		<-locked
	}
	defer func() { close(release); wg.Wait() }()
	after, err := threadIDs("self")
	if err != nil {
		t.Fatal(err)
	}
	if len(after) <= len(before) {
		t.Fatalf("no new thread: %d before, %d after", len(before), len(after))
	}
	normal := 0
	ts, err := Threads("self")
	if err != nil {
		t.Fatal(err)
	}
	for _, th := range ts {
		if !th.RealTime {
			normal++
		}
	}
	if normal == 0 {
		t.Fatalf("%d new threads and all real-time: reset-on-fork did not apply to threads?", len(after)-len(before))
	}
	// The runtime may still be creating threads for the blocked
	// goroutines: sweep until a sweep finds nothing left to raise.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := r.Sweep()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sweeps still raise threads after 5s (%d in all)", r.Raised())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r.Raised() < int64(normal) {
		t.Errorf("sweeps raised %d threads, want at least the %d normal ones", r.Raised(), normal)
	}
	assertAllRealtime(t, "self")
}

// A locked thread is real-time at once, without a sweep.
func TestLockThread(t *testing.T) {
	r := enableForTest(t)
	got := make(chan ThreadPolicy, 1)
	go func() {
		if err := r.LockThread(); err != nil {
			t.Error(err)
		}
		a, err := unix.SchedGetAttr(0, 0)
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		got <- describe(unix.Gettid(), a)
	}()
	select {
	case th := <-got:
		if !th.RealTime || th.Priority != DefaultPriority {
			t.Fatalf("locked thread runs %s, want SCHED_RR %d", th, DefaultPriority)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("locked goroutine did not report")
	}
}

func TestNilIsNormal(t *testing.T) {
	var r *RealtimeThreads
	if n, err := r.Sweep(); n != 0 || err != nil {
		t.Fatalf("nil sweep: %d %v", n, err)
	}
	if r.Priority() != 0 || r.Raised() != 0 || r.String() != "SCHED_OTHER (normal priority)" {
		t.Fatalf("nil: %d %d %q", r.Priority(), r.Raised(), r.String())
	}
}

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]Policy{"realtime": Realtime, " Normal ": Normal} {
		if got, err := ParsePolicy(in); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParsePolicy("rt"); err == nil {
		t.Error("ParsePolicy(rt) accepted")
	}
	if _, err := Enable(0); err == nil {
		t.Error("Enable(0) accepted")
	}
}

// Maintain raises the threads created while it runs.
func TestMaintain(t *testing.T) {
	r := enableForTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Maintain(ctx, 5*time.Millisecond, hclog.NewNullLogger()) }()
	defer func() { cancel(); <-done }()
	before, err := threadIDs("self")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range len(before) + 2 {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			<-release
		})
	}
	defer func() { close(release); wg.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ts, err := Threads("self")
		if err != nil {
			t.Fatal(err)
		}
		normal := 0
		for _, th := range ts {
			if !th.RealTime {
				normal++
			}
		}
		if normal == 0 && len(ts) > len(before) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d threads still normal after 5s of Maintain (%d before)", normal, len(ts), len(before))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r.Raised() == 0 {
		t.Fatal("Maintain raised no thread although new ones were created")
	}
}
