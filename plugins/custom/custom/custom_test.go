package custom

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/sdktest"
)

// script writes an executable shell script and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func configure(t *testing.T, src string) *Checker {
	t.Helper()
	c := New().(*Checker)
	value := sdktest.DecodeConfig(t, c.Schema(), src)
	if err := c.Configure(context.Background(), &base.Config{Module: sdktest.TestModule(t, "dbcheck"), Value: value, Logger: sdktest.Logger(t)}); err != nil {
		t.Fatalf("configure %q: %v", src, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func check(t *testing.T, c *Checker, d time.Duration) (checker.Result, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	res, err := c.Check(ctx)
	return res, time.Since(start), err
}

func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

func waitFile(t *testing.T, path string, pred func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if pred(string(data)) {
			return string(data)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never matched; it holds %q", path, data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitGone(t *testing.T, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Errorf("process %d still alive", pid)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestExitStatus(t *testing.T) {
	dir := t.TempDir()
	up := script(t, dir, "up", `echo "checking $1"; echo "replica lag 0s"`)
	down := script(t, dir, "down", `echo "connecting"; echo "FATAL: too many connections" >&2; exit 2`)
	quiet := script(t, dir, "quiet", `exit 0`)
	for _, tc := range []struct {
		src    string
		status checker.Status
		msg    string
	}{
		{fmt.Sprintf("command = %q\nargs = [\"db1\"]\n", up), checker.StatusUp, "replica lag 0s"},
		{fmt.Sprintf("command = %q\n", down), checker.StatusDown, "exit status 2: FATAL: too many connections"},
		{fmt.Sprintf("command = %q\n", quiet), checker.StatusUp, "exit status 0"},
	} {
		res, _, err := check(t, configure(t, tc.src), 5*time.Second)
		if err != nil || res.Status != tc.status || res.Message != tc.msg {
			t.Errorf("%q: %s %q %v, want %s %q", tc.src, res.Status, res.Message, err, tc.status, tc.msg)
		}
	}
}

// TestTimeoutKillsTheGroup: a hanging check and the child it started are
// killed at the timeout.
func TestTimeoutKillsTheGroup(t *testing.T) {
	dir := t.TempDir()
	hang := script(t, dir, "hang", fmt.Sprintf(`sleep 3600 & echo "$$ $!" > %s/pids; echo "still waiting"; wait`, dir))
	c := configure(t, fmt.Sprintf("command = %q\ntimeout = \"300ms\"\n", hang))
	res, took, err := check(t, c, 5*time.Second)
	if err != nil || res.Status != checker.StatusDown || res.Message != "hang timed out after 300ms: still waiting" {
		t.Errorf("hang: %s %q %v", res.Status, res.Message, err)
	}
	if took > 2*time.Second {
		t.Errorf("a 300ms timeout took %s", took)
	}
	var pids []int
	for _, f := range strings.Fields(waitFile(t, filepath.Join(dir, "pids"), func(s string) bool { return len(strings.Fields(s)) == 2 })) {
		n, _ := strconv.Atoi(f)
		pids = append(pids, n)
	}
	waitGone(t, pids...)

	// Without timeout, the check's own deadline applies; the host then
	// reads the late check as unknown.
	c = configure(t, fmt.Sprintf("command = %q\n", hang))
	if _, took, err := check(t, c, 200*time.Millisecond); err == nil || took > time.Second {
		t.Errorf("check deadline: err %v after %s, want the context's error promptly", err, took)
	}
}

func TestEnvironment(t *testing.T) {
	t.Setenv("HALO_SOCKET", "/run/halo/test.sock")
	t.Setenv("HALO_PLUGIN_LOG_LEVEL", "debug") // the plugin's own: not passed on
	dir := t.TempDir()
	show := script(t, dir, "show", `echo "$HALO_MODULE $HALO_CHECKER $HALO_NODE $HALO_SOCKET $DB ${HALO_PLUGIN_LOG_LEVEL:-unset}"`)
	res, _, err := check(t, configure(t, fmt.Sprintf("command = %q\nenv = { DB = \"pg\" }\n", show)), 5*time.Second)
	if err != nil || res.Message != "sdktest dbcheck node1 /run/halo/test.sock pg unset" {
		t.Errorf("environment: %q %v", res.Message, err)
	}
}

// TestReporter: the program is kept running; Check follows whether it
// lives; a dead one is restarted; Close stops it and its children.
func TestReporter(t *testing.T) {
	t.Setenv("HALO_SOCKET", "/run/halo/test.sock")
	dir := t.TempDir()
	rep := script(t, dir, "reporter", fmt.Sprintf(`
echo "$$ $HALO_MODULE $HALO_CHECKER $HALO_NODE $HALO_SOCKET" >> %s/starts
sleep 3600 &
echo $! > %s/child
echo "reporting"
wait`, dir, dir))
	c := configure(t, fmt.Sprintf("command = %q\nreporter = true\nrestart_delay = \"200ms\"\nmax_restart_delay = \"1s\"\n", rep))

	starts := filepath.Join(dir, "starts")
	first := waitFile(t, starts, func(s string) bool { return strings.Count(s, "\n") == 1 })
	f := strings.Fields(first)
	if strings.Join(f[1:], " ") != "sdktest dbcheck node1 /run/halo/test.sock" {
		t.Errorf("reporter environment: %q", first)
	}
	pid1, _ := strconv.Atoi(f[0])
	waitCheck(t, c, checker.StatusUp, fmt.Sprintf("reporter pid %d running", pid1))

	// Kill it: down at once, then up again with a new process.
	if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitCheck(t, c, checker.StatusDown, "reporter exited (signal: killed), restart in")
	second := waitFile(t, starts, func(s string) bool { return strings.Count(s, "\n") == 2 })
	pid2, _ := strconv.Atoi(strings.Fields(strings.Split(second, "\n")[1])[0])
	if pid2 == pid1 {
		t.Fatalf("not restarted: %q", second)
	}
	waitCheck(t, c, checker.StatusUp, fmt.Sprintf("reporter pid %d running", pid2))

	childData := waitFile(t, filepath.Join(dir, "child"), func(s string) bool { return strings.TrimSpace(s) != "" })
	child, _ := strconv.Atoi(strings.TrimSpace(childData))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid2, child)
}

// TestReporterBackoff: a program that keeps exiting at once is restarted
// with doubling delays, not in a tight loop.
func TestReporterBackoff(t *testing.T) {
	dir := t.TempDir()
	flaky := script(t, dir, "flaky", fmt.Sprintf(`echo x >> %s/starts; exit 3`, dir))
	c := configure(t, fmt.Sprintf("command = %q\nreporter = true\nrestart_delay = \"100ms\"\nmax_restart_delay = \"400ms\"\n", flaky))
	time.Sleep(1200 * time.Millisecond)
	_ = c.Close()
	data, _ := os.ReadFile(filepath.Join(dir, "starts"))
	// Starts at about 0, 0.1, 0.3, 0.7 and 1.1s: 5. Without backoff, 12.
	if n := strings.Count(string(data), "\n"); n < 4 || n > 6 {
		t.Errorf("%d starts in 1.2s, want about 5", n)
	}
	// Between two starts, Check says the program is down and when it
	// comes back.
	c2 := configure(t, fmt.Sprintf("command = %q\nreporter = true\nrestart_delay = \"10s\"\nmax_restart_delay = \"10s\"\n", flaky))
	waitCheck(t, c2, checker.StatusDown, "reporter exited (exit status 3), restart in")
}

func waitCheck(t *testing.T, c *Checker, status checker.Status, prefix string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var res checker.Result
	for time.Now().Before(deadline) {
		var err error
		res, _, err = check(t, c, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status == status && strings.HasPrefix(res.Message, prefix) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("check = %s %q, want %s %q...", res.Status, res.Message, status, prefix)
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	ok := script(t, dir, "ok", "exit 0")
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ src, want string }{
		{`command = "check.sh"`, "command: want an absolute path"},
		{`command = "/no/such/check"`, "no such file or directory"},
		{fmt.Sprintf("command = %q", plain), "is not an executable file"},
		{fmt.Sprintf("command = %q\nenv = { HALO_MODULE = \"x\" }", ok), "env: HALO_MODULE: HALO_* variables are set by halo"},
		{fmt.Sprintf("command = %q\ntimeout = \"-1s\"", ok), "timeout: must not be negative"},
		{fmt.Sprintf("command = %q\nrestart_delay = \"5s\"\nmax_restart_delay = \"1s\"", ok), "max_restart_delay: 1s is below restart_delay 5s"},
	} {
		c := New()
		value := sdktest.DecodeConfig(t, c.Schema(), tc.src)
		err := c.Configure(context.Background(), &base.Config{Module: sdktest.TestModule(t, "x"), Value: value, Logger: sdktest.Logger(t)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	slow := script(t, dir, "slow", "sleep 0.5; echo fine")
	sdktest.CheckerConformance(t, New, fmt.Sprintf("command = %q\n", slow),
		sdktest.WithBadConfig(`command = "relative"`),
		sdktest.WithBadConfig(fmt.Sprintf("command = %q\ntimeout = \"-2s\"\n", slow)))
}

func TestConformanceReporter(t *testing.T) {
	dir := t.TempDir()
	rep := script(t, dir, "rep", "exec sleep 3600")
	sdktest.CheckerConformance(t, New, fmt.Sprintf("command = %q\nreporter = true\n", rep),
		sdktest.WithBadConfig(fmt.Sprintf("command = %q\nreporter = true\nrestart_delay = \"0s\"\n", rep)))
}
