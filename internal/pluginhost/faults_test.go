package pluginhost

import (
	"context"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/internal/agent"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/sdk/base"
)

// startChecker starts a host with the test plugins and the good module's
// checker instance, checked up once.
func startChecker(t *testing.T, opts Options) (*Host, *config.Module, agent.CheckerRunner, *proc) {
	t.Helper()
	h, _ := newHost(t, pluginDir(t, "testcheck", "script"), opts)
	confDir, _ := writeConfig(t, goodModule, map[string]string{"sleeper": "sleep 5"})
	mod := loadModule(t, h, confDir)
	cr, err := h.Checker(ctxTimeout(t, 30*time.Second), mod, mod.Checks[0])
	if err != nil {
		t.Fatalf("Checker: %v", err)
	}
	if st, msg := cr.Check(ctxTimeout(t, 5*time.Second)); st != core.CheckUp {
		t.Fatalf("first check = %v %q", st, msg)
	}
	p, err := h.lookup(base.KindChecker, "testcheck")
	if err != nil {
		t.Fatal(err)
	}
	return h, mod, cr, p
}

// socketDirs lists the socket directories of a plugin's launches.
func socketDirs(t *testing.T, h *Host, plugin string) []string {
	t.Helper()
	entries, err := os.ReadDir(h.sockRoot)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), plugin+"-") {
			names = append(names, e.Name())
		}
	}
	return names
}

// stop sends SIGSTOP to a plugin and waits until it is stopped; the
// process is continued at the end of the test if still there.
func stop(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	waitFor(t, 2*time.Second, "the plugin to stop", func() bool { return processStopped(pid) })
}

// untilUp checks every few milliseconds until the checker is up again,
// and returns the messages seen meanwhile.
func untilUp(t *testing.T, cr agent.CheckerRunner, timeout time.Duration) []string {
	t.Helper()
	var seen []string
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, msg := cr.Check(ctx)
		cancel()
		if st == core.CheckUp {
			return seen
		}
		if st != core.CheckUnknown {
			t.Fatalf("check = %v %q while the plugin is down, want unknown", st, msg)
		}
		if len(seen) == 0 || seen[len(seen)-1] != msg {
			seen = append(seen, msg)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("checker not up again within %s; seen %q", timeout, seen)
	return nil
}

// TestCrashRestart: kill -9 the plugin; checks report unknown with the
// cause, and the relaunched plugin, its configuration replayed, serves
// again within 1s. Repeated crashes back off.
func TestCrashRestart(t *testing.T) {
	h, mod, cr, p := startChecker(t, Options{})
	for round, backoff := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		pid := p.pid()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		seen := untilUp(t, cr, 10*time.Second)
		elapsed := time.Since(killed)
		t.Logf("round %d: pid %d killed, pid %d serving after %s (backoff %s); messages %q", round, pid, p.pid(), elapsed, backoff, seen)
		if p.pid() == pid || p.pid() == 0 {
			t.Fatalf("pid %d after the crash of pid %d", p.pid(), pid)
		}
		if !slices.ContainsFunc(seen, func(m string) bool { return m == "plugin testcheck crashed (signal: killed); restarting" }) {
			t.Errorf("no check reported the crash's cause; seen %q", seen)
		}
		if round == 0 && elapsed > time.Second {
			t.Errorf("serving again after %s, want within 1s", elapsed)
		}
		// Launch times vary (the race detector, a busy machine): only the
		// growing backoff is a lower bound.
		if elapsed < backoff || elapsed > backoff+2*time.Second {
			t.Errorf("round %d: serving after %s, want the backoff %s plus a launch", round, elapsed, backoff)
		}
		// The dead process's socket directory goes; the new one's stays.
		waitFor(t, 2*time.Second, "one socket directory", func() bool { return len(socketDirs(t, h, "testcheck")) == 1 })
	}
	if c := children(t); len(c) != 2 {
		t.Errorf("children after the crashes: %q, want the two running plugins (testcheck, script)", c)
	}

	// A checker asked for while a relaunch is pending (a reload) waits for
	// it rather than fail.
	_ = syscall.Kill(p.pid(), syscall.SIGKILL)
	waitFor(t, 2*time.Second, "the crash to be noticed", func() bool { return p.pid() == 0 })
	if _, err := h.Checker(ctxTimeout(t, 10*time.Second), mod, mod.Checks[0]); err != nil {
		t.Fatalf("Checker during a relaunch: %v", err)
	}
}

// TestLostInstance: a plugin that no longer knows an instance (it answers
// NotFound) is configured again by the runner, which then checks.
func TestLostInstance(t *testing.T) {
	_, _, cr, p := startChecker(t, Options{})
	s, err := p.current()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.base.CloseInstance(ctxTimeout(t, 5*time.Second), "web/api"); err != nil {
		t.Fatal(err)
	}
	if st, msg := cr.Check(ctxTimeout(t, 5*time.Second)); st != core.CheckUp {
		t.Fatalf("check of a lost instance = %v %q, want it configured again and up", st, msg)
	}
}

// TestAppWaitsForRelaunch: a script asked while the app plugin is being
// relaunched runs once it is back; a plugin that dies during a run fails
// that run with the cause.
func TestAppWaitsForRelaunch(t *testing.T) {
	h, mod, _, _ := startChecker(t, Options{})
	ar, err := h.App(ctxTimeout(t, 30*time.Second), mod)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := h.lookup(base.KindApp, "script")

	pid := p.pid()
	_ = syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, 2*time.Second, "the crash to be noticed", func() bool { return p.pid() == 0 })
	out, msg := ar.Run(context.Background(), agent.ScriptRun{Script: "start_both", Args: []string{"STOP", "UP", "start"}, Timeout: 5 * time.Second}, nil)
	if out != core.ScriptOK || p.pid() == pid {
		t.Fatalf("run after a crash = %v %q (pid %d, was %d)", out, msg, p.pid(), pid)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		out, msg = ar.Run(context.Background(), agent.ScriptRun{Script: "sleeper", Timeout: 10 * time.Second}, nil)
	}()
	time.Sleep(300 * time.Millisecond) // the script is running
	_ = syscall.Kill(p.pid(), syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the run did not end when its plugin died")
	}
	if out != core.ScriptFailed || !strings.Contains(msg, "sleeper: plugin script crashed (signal: killed)") {
		t.Fatalf("run whose plugin died = %v %q", out, msg)
	}
}

// TestHang: a stopped plugin (SIGSTOP) cannot hold a check past its
// deadline, calls do not pile up goroutines, and it serves again after
// SIGCONT, without a relaunch.
func TestHang(t *testing.T) {
	_, _, cr, p := startChecker(t, Options{HangTimeout: time.Minute})
	pid := p.pid()
	time.Sleep(100 * time.Millisecond) // let the start-up goroutines settle
	baseline := runtime.NumGoroutine()

	stop(t, pid)
	const deadline, slack = 300 * time.Millisecond, 250 * time.Millisecond
	for wave := 0; wave < 3; wave++ {
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				defer cancel()
				start := time.Now()
				st, msg := cr.Check(ctx)
				if took := time.Since(start); took > deadline+slack {
					t.Errorf("check took %s with a %s deadline", took, deadline)
				}
				// The budget is measured when the call starts, a scheduling
				// delay after the deadline was set.
				d, err := time.ParseDuration(strings.TrimPrefix(msg, "plugin testcheck did not answer within "))
				if st != core.CheckUnknown || err != nil || d > deadline || d < deadline-50*time.Millisecond {
					t.Errorf("check of a stopped plugin = %v %q", st, msg)
				}
			})
		}
		wg.Wait()
	}
	// Nothing stays blocked: the count returns to the baseline, give or
	// take the liveness probe.
	var n int
	waitFor(t, 3*time.Second, "goroutines to return to the baseline", func() bool {
		n = runtime.NumGoroutine()
		return n <= baseline+3
	})
	t.Logf("goroutines: %d before, %d after 60 timed-out checks", baseline, n)

	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	untilUp(t, cr, 5*time.Second)
	t.Logf("serving %s after SIGCONT", time.Since(resumed))
	if p.pid() != pid {
		t.Errorf("plugin relaunched (pid %d, was %d); HangTimeout is a minute", p.pid(), pid)
	}
}

// TestHangKill: a plugin that stays stopped past HangTimeout is killed and
// relaunched.
func TestHangKill(t *testing.T) {
	_, _, cr, p := startChecker(t, Options{HangTimeout: time.Second})
	pid := p.pid()
	stop(t, pid)
	stopped := time.Now()
	seen := untilUp(t, cr, 10*time.Second)
	t.Logf("stopped pid %d replaced by pid %d after %s; messages %q", pid, p.pid(), time.Since(stopped), seen)
	if p.pid() == pid {
		t.Fatal("the stopped plugin was not replaced")
	}
	if !slices.Contains(seen, "plugin testcheck did not answer within 1s") ||
		!slices.ContainsFunc(seen, func(m string) bool {
			return strings.HasPrefix(m, "plugin testcheck was killed by the host: it did not answer for 1") && strings.HasSuffix(m, "; restarting")
		}) {
		t.Errorf("messages %q lack the timeout or the kill", seen)
	}
}

// TestClose: Close ends every plugin — idle, serving, stopped, crashed —
// and leaves no process, zombie, socket or blocked goroutine.
func TestClose(t *testing.T) {
	baseline := runtime.NumGoroutine()
	dir := pluginDir(t, "testcheck", "script", "testvip")
	sockDir := t.TempDir()
	h, _ := newHost(t, dir, Options{SocketDir: sockDir})
	confDir, _ := writeConfig(t, goodModule, nil)
	mod := loadModule(t, h, confDir)
	ctx := ctxTimeout(t, 30*time.Second)
	cr, err := h.Checker(ctx, mod, mod.Checks[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.App(ctx, mod); err != nil {
		t.Fatal(err)
	}
	if l := h.List(ctx); len(l) != 3 {
		t.Fatalf("List = %+v", l)
	}
	if c := children(t); len(c) != 3 {
		t.Fatalf("children %q, want 3 plugins", c)
	}
	vip, _ := h.lookup(base.KindVIP, "testvip")
	_ = syscall.Kill(vip.pid(), syscall.SIGKILL) // idle: not relaunched
	chk, _ := h.lookup(base.KindChecker, "testcheck")
	stop(t, chk.pid())
	waitFor(t, 2*time.Second, "the killed plugin to be reaped", func() bool { return len(children(t)) == 2 })

	start := time.Now()
	h.Close()
	t.Logf("Close took %s (one plugin stopped)", time.Since(start))
	if c := children(t); len(c) != 0 {
		t.Errorf("processes left after Close: %q", c)
	}
	if entries, _ := os.ReadDir(sockDir); len(entries) != 0 {
		t.Errorf("left in the socket directory: %v", entries)
	}
	if st, msg := cr.Check(ctx); st != core.CheckUnknown || msg != ErrClosed.Error() {
		t.Errorf("check after Close = %v %q", st, msg)
	}
	if _, err := h.ConfigSpec(config.PluginChecker, "testcheck"); err != ErrClosed {
		t.Errorf("ConfigSpec after Close = %v", err)
	}
	var n int
	waitFor(t, 3*time.Second, "goroutines to return to the baseline", func() bool {
		n = runtime.NumGoroutine()
		return n <= baseline
	})
	t.Logf("goroutines: %d before New, %d after Close", baseline, n)
}
