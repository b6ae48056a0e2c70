package script

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/app"
	"github.com/halo-ha/halo/sdk/sdktest"
)

// writeScripts creates executable scripts (name → body after the shebang)
// in a fresh directory and returns it.
func writeScripts(t *testing.T, scripts map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type result struct {
	exit   app.Exit
	stdout []string
	stderr []string
	took   time.Duration
}

// serve configures the plugin over the SDK's in-process gRPC harness, as
// the agent would reach it.
func serve(t *testing.T, dir, extra string) *sdktest.Plugin {
	t.Helper()
	p := sdktest.ServeApp(t, New)
	if err := p.Configure(t, "mod", fmt.Sprintf("scripts = %q\n%s", dir, extra)); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, p *sdktest.Plugin, r app.Run) result {
	t.Helper()
	if r.ID == "" {
		r.ID = r.Script
	}
	if r.Args == (app.Args{}) {
		r.Args = app.Args{Current: "SECOND", Next: "ALONE", Action: "failover"}
	}
	var mu sync.Mutex
	var res result
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), r.Timeout+20*time.Second)
	defer cancel()
	exit, err := p.App.Run(ctx, "mod", r, func(l app.Line) {
		mu.Lock()
		defer mu.Unlock()
		if l.Stream == app.Stderr {
			res.stderr = append(res.stderr, l.Text)
		} else {
			res.stdout = append(res.stdout, l.Text)
		}
	})
	if err != nil {
		t.Fatalf("run %s: %v", r.Script, err)
	}
	res.exit, res.took = exit, time.Since(start)
	return res
}

func TestArgumentsAndOrder(t *testing.T) {
	dir := writeScripts(t, map[string]string{
		"prestart":   `echo "prestart $*" >> "$HALO_SCRIPTS_DIR/journal"`,
		"start_prim": `echo "start_prim $*" >> "$HALO_SCRIPTS_DIR/journal"`,
		"stop_prim":  `echo "stop_prim $# $*" >> "$HALO_SCRIPTS_DIR/journal"; exit 0`,
	})
	p := serve(t, dir, "")
	for _, r := range []app.Run{
		{Script: "prestart", Args: app.Args{Current: "STOP", Next: "WAIT", Action: "start"}},
		{Script: "start_prim", Args: app.Args{Current: "WAIT", Next: "ALONE", Action: "prim"}},
		{Script: "stop_prim", Args: app.Args{Current: "ALONE", Next: "STOP", Action: "stop"}},
		{Script: "stop_prim", Args: app.Args{Current: "ALONE", Next: "STOP", Action: "stop"}, Force: true},
	} {
		if res := run(t, p, r); res.exit.Outcome != app.OutcomeOK {
			t.Fatalf("%s: %+v", r.Script, res.exit)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	want := "prestart STOP WAIT start\nstart_prim WAIT ALONE prim\nstop_prim 3 ALONE STOP stop\nstop_prim 4 ALONE STOP stop force\n"
	if string(got) != want {
		t.Errorf("journal:\n%s\nwant:\n%s", got, want)
	}
}

func TestEnvironment(t *testing.T) {
	dir := writeScripts(t, map[string]string{"start_prim": `env | sort`})
	p := serve(t, dir, "")
	res := run(t, p, app.Run{Script: "start_prim", Env: map[string]string{"DB_PORT": "5432", "PGDATA": "/var/lib/pg data"}, Force: true})
	env := map[string]string{}
	for _, l := range res.stdout {
		k, v, _ := strings.Cut(l, "=")
		env[k] = v
	}
	for k, v := range map[string]string{
		"DB_PORT": "5432", "PGDATA": "/var/lib/pg data",
		"HALO_MODULE": "sdktest", "HALO_NODE": "node1", "HALO_SCRIPT": "start_prim",
		"HALO_STATE": "SECOND", "HALO_NEXT_STATE": "ALONE", "HALO_ACTION": "failover",
		"HALO_FORCE": "1", "HALO_SCRIPTS_DIR": dir,
	} {
		if env[k] != v {
			t.Errorf("%s=%q, want %q", k, env[k], v)
		}
	}
	if env["PATH"] == "" {
		t.Error("PATH not inherited")
	}
	for k := range env {
		if strings.HasPrefix(k, "PLUGIN_") || k == "HALO_PLUGIN_MAGIC_COOKIE" {
			t.Errorf("go-plugin variable %s leaked to the script", k)
		}
	}
}

func TestOutputLines(t *testing.T) {
	dir := writeScripts(t, map[string]string{"start_prim": `echo one; echo err1 >&2; printf 'two\nthree'; echo err2 >&2; exit 3`})
	p := serve(t, dir, "")
	res := run(t, p, app.Run{Script: "start_prim"})
	if res.exit.Outcome != app.OutcomeFailed || res.exit.ExitCode != 3 {
		t.Errorf("exit %+v, want failed with code 3", res.exit)
	}
	if strings.Join(res.stdout, "|") != "one|two|three" || strings.Join(res.stderr, "|") != "err1|err2" {
		t.Errorf("stdout %q stderr %q", res.stdout, res.stderr)
	}
}

func TestMissingAndBrokenScripts(t *testing.T) {
	dir := writeScripts(t, nil)
	if err := os.WriteFile(filepath.Join(dir, "stop_prim"), []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := serve(t, dir, "")
	res := run(t, p, app.Run{Script: "start_prim"})
	if res.exit.Outcome != app.OutcomeOK || strings.Join(res.stdout, "|") != "no start_prim script" {
		t.Errorf("missing script: %+v %q, want ok with \"no start_prim script\"", res.exit, res.stdout)
	}
	res = run(t, p, app.Run{Script: "stop_prim"})
	if res.exit.Outcome != app.OutcomeFailed || !strings.Contains(res.exit.Message, "is not executable (mode 0644)") {
		t.Errorf("non-executable script: %+v", res.exit)
	}
	res = run(t, p, app.Run{Script: "../etc/passwd"})
	if res.exit.Outcome != app.OutcomeFailed || !strings.Contains(res.exit.Message, "want lower case letters") {
		t.Errorf("path in a script name: %+v", res.exit)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func pids(t *testing.T, path string) []int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, err := os.ReadFile(path)
		fields := strings.Fields(string(data))
		if err == nil && len(fields) >= 2 {
			var out []int
			for _, f := range fields {
				n, err := strconv.Atoi(f)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, n)
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pids in %s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Errorf("process %d survived the run's end", pid)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestTimeoutKillsTheGroup: at the timeout the script and the children it
// started in the background get SIGTERM; one that ignores it is killed
// kill_grace later.
func TestTimeoutKillsTheGroup(t *testing.T) {
	dir := writeScripts(t, map[string]string{
		// Polite: leaves on SIGTERM, saying so.
		"stop_prim": `sleep 3600 & echo "$$ $!" > "$HALO_SCRIPTS_DIR/polite.pids"; trap 'echo got TERM; exit 7' TERM; wait`,
		// Stubborn: ignores SIGTERM, and so does its child.
		"stop_second": `trap '' TERM; sleep 3600 & echo "$$ $!" > "$HALO_SCRIPTS_DIR/stubborn.pids"; wait; wait; wait`,
	})
	p := serve(t, dir, `kill_grace = "700ms"`)

	res := run(t, p, app.Run{Script: "stop_prim", Timeout: 300 * time.Millisecond})
	if res.exit.Outcome != app.OutcomeTimeout {
		t.Errorf("polite: %+v, want timeout", res.exit)
	}
	if strings.Join(res.stdout, "|") != "got TERM" {
		t.Errorf("polite: output %q, want the TERM trap's line", res.stdout)
	}
	if res.took > 300*time.Millisecond+600*time.Millisecond {
		t.Errorf("polite: took %s, want it to end soon after SIGTERM", res.took)
	}
	waitGone(t, pids(t, filepath.Join(dir, "polite.pids")))

	res = run(t, p, app.Run{Script: "stop_second", Timeout: 300 * time.Millisecond})
	if res.exit.Outcome != app.OutcomeTimeout || !strings.Contains(res.exit.Message, "timed out after 300ms") {
		t.Errorf("stubborn: %+v, want timeout", res.exit)
	}
	if res.took < 300*time.Millisecond+700*time.Millisecond || res.took > 3*time.Second {
		t.Errorf("stubborn: took %s, want timeout + kill_grace (1s) and not much more", res.took)
	}
	waitGone(t, pids(t, filepath.Join(dir, "stubborn.pids")))
}

// TestForcedStopKillsAtOnce: a forced stop does not wait for kill_grace.
func TestForcedStopKillsAtOnce(t *testing.T) {
	dir := writeScripts(t, map[string]string{"stop_prim": `trap '' TERM; sleep 3600 & echo "$$ $!" > "$HALO_SCRIPTS_DIR/pids"; wait`})
	p := serve(t, dir, `kill_grace = "30s"`)
	done := make(chan result, 1)
	go func() { done <- run(t, p, app.Run{ID: "x", Script: "stop_prim", Timeout: time.Minute}) }()
	procs := pids(t, filepath.Join(dir, "pids"))
	if err := p.App.Stop(context.Background(), "mod", "x", true); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.exit.Outcome != app.OutcomeFailed || !strings.Contains(res.exit.Message, "forced stop") {
			t.Errorf("forced stop: %+v", res.exit)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a forced stop did not end the run")
	}
	waitGone(t, procs)
}

func TestConfigErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := sdktest.ServeApp(t, New)
	for _, tc := range []struct{ src, want string }{
		{`scripts = "relative/dir"`, "want an absolute path"},
		{`scripts = "/no/such/dir"`, "no such file or directory"},
		{fmt.Sprintf("scripts = %q", file), "is not a directory"},
		{fmt.Sprintf("scripts = %q\nkill_grace = \"-1s\"", t.TempDir()), "kill_grace: must not be negative"},
	} {
		if err := p.Configure(t, "bad", tc.src); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestConformance(t *testing.T) {
	dir := writeScripts(t, map[string]string{
		"start_prim": `echo "started $*"`,
		"stop_prim":  `echo "cannot stop" >&2; exit 4`,
		"transition": `sleep 3600`,
	})
	sdktest.AppConformance(t, New, fmt.Sprintf("scripts = %q\n", dir),
		sdktest.AppScripts{Succeeds: "start_prim", Fails: "stop_prim", Hangs: "transition"},
		sdktest.WithBadConfig(`scripts = "relative"`),
		sdktest.WithBadConfig(fmt.Sprintf("scripts = %q\nkill_grace = \"-5s\"\n", dir)))
}
