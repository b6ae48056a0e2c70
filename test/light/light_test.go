// Package light tests a light module end to end with the real binaries:
// halo agent, the errd checker plugin and the script app plugin, protecting
// a real process.
package light

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/api"
	"github.com/halo-ha/halo/test/harness"
)

const cluster = `cluster "light" {
  network "default" {}
  node "n1" { addresses = { default = "198.18.0.1" } }
}
`

const moduleTmpl = `module "svc" {
  kind          = "light"
  id            = 1
  nodes         = ["n1"]
  max_loop      = 2
  loop_interval = "1h"
  app {
    env = { SVC = %q, PIDFILE = %q }
  }
  check "errd" "proc" {
    interval = "300ms"
    timeout  = "250ms"
    action   = "restart"
    name     = %q
  }
}
`

// The service is a copy of sleep under a name of its own, so errd counts
// only the test's process and the test kills only what it started.
const startScript = `#!/bin/sh
setsid "$SVC" 100000 </dev/null >/dev/null 2>&1 &
echo $! > "$PIDFILE"
echo "started $SVC pid $!"
`

const stopScript = `#!/bin/sh
[ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null
rm -f "$PIDFILE"
echo "stopped ($*)"
exit 0
`

func TestLightModuleEndToEnd(t *testing.T) {
	dir := t.TempDir()
	svcName := fmt.Sprintf("hsvc%d", os.Getpid()%100000)
	svc := filepath.Join(dir, svcName)
	copyFile(t, "/bin/sleep", svc)
	pidfile := filepath.Join(dir, "svc.pid")
	t.Cleanup(func() { killPidfile(pidfile) })

	n := harness.NewNode(t, filepath.Join(dir, "n1"), "n1")
	n.WriteFile("cluster.hcl", cluster, 0o644)
	n.WriteFile("modules/svc/module.hcl", fmt.Sprintf(moduleTmpl, svc, pidfile, svcName), 0o644)
	n.WriteFile("modules/svc/scripts/start_both", startScript, 0o755)
	n.WriteFile("modules/svc/scripts/stop_both", stopScript, 0o755)
	n.Start()
	c := n.Client()

	if out, code := n.CLI("start", "svc"); code != 0 {
		t.Fatalf("halo start: %d %s", code, out)
	}
	waitState(t, c, "UP", "Ready")
	pid1 := waitPid(t, pidfile, 0)
	plugins, code := n.CLI("plugin", "list")
	if code != 0 || !regexp.MustCompile(`(?m)^errd\s+checker\s+\d+\.\d+\.\d+\s+1\s`).MatchString(plugins) ||
		!regexp.MustCompile(`(?m)^script\s+app\s`).MatchString(plugins) {
		t.Fatalf("halo plugin list: %d\n%s", code, plugins)
	}
	if _, code := n.CLI("status", "svc", "-q"); code != 2 {
		t.Fatalf("status -q = %d, want 2 (UP)", code)
	}

	// Kill the service: errd sees it gone and the module restarts it.
	restarted := func(old int) int {
		t.Helper()
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		return waitPid(t, pidfile, old)
	}
	pid2 := restarted(pid1)
	waitState(t, c, "UP", "Ready")
	logs, _ := n.CLI("logs", "svc")
	if !strings.Contains(logs, "checker proc down") || !strings.Contains(logs, "restart") {
		t.Fatalf("event log does not say why the service restarted:\n%s", logs)
	}

	// Second failure within loop_interval: still restarted (max_loop = 2).
	pid3 := restarted(pid2)
	waitState(t, c, "UP", "Ready")

	// Third failure: past max_loop, the module stops with that reason.
	syscall.Kill(pid3, syscall.SIGKILL)
	m := waitState(t, c, "STOP", "")
	if !strings.Contains(m.Reason, "max_loop") {
		t.Fatalf("stop reason %q does not mention max_loop", m.Reason)
	}
	if _, code := n.CLI("status", "svc", "-q"); code != 0 {
		t.Fatalf("status -q = %d, want 0 (STOP)", code)
	}

	// An admin start resets the counter; with checkers off a dead service
	// is left alone.
	if out, code := n.CLI("start", "svc"); code != 0 {
		t.Fatalf("halo start: %d %s", code, out)
	}
	waitState(t, c, "UP", "Ready")
	pid4 := waitPid(t, pidfile, pid3)
	if out, code := n.CLI("checker", "off", "svc"); code != 0 {
		t.Fatalf("checker off: %d %s", code, out)
	}
	syscall.Kill(pid4, syscall.SIGKILL)
	time.Sleep(1500 * time.Millisecond) // five checker intervals
	if p := readPid(pidfile); p != pid4 {
		t.Fatalf("service restarted (pid %d -> %d) although checkers are off", pid4, p)
	}
	status, _ := n.CLI("status", "-v")
	if !strings.Contains(status, "checkers=off") {
		t.Fatalf("status -v does not show checkers off:\n%s", status)
	}
	// Checkers back on: the dead service is noticed and restarted.
	if out, code := n.CLI("checker", "on", "svc"); code != 0 {
		t.Fatalf("checker on: %d %s", code, out)
	}
	waitPid(t, pidfile, pid4)
	waitState(t, c, "UP", "Ready")

	// A bad command is refused with a reason and changes nothing.
	out, code := n.CLI("swap", "svc")
	if code == 0 || !strings.Contains(out, "refused") {
		t.Fatalf("swap on a light module: %d %s", code, out)
	}

	// Stop runs the stop script; the service is gone.
	if out, code := n.CLI("stop", "svc"); code != 0 {
		t.Fatalf("halo stop: %d %s", code, out)
	}
	waitState(t, c, "STOP", "")
	logs, _ = n.CLI("logs", "svc")
	t.Logf("event log:\n%s", logs)
	if !strings.Contains(logs, "stop_both: stopped") {
		t.Fatalf("stop script output not in the log:\n%s", logs)
	}
}

func waitState(t *testing.T, c *api.Client, state, readiness string) api.ModuleStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	m, err := c.WaitState(ctx, "svc", state, readiness)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readPid(pidfile string) int {
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return p
}

// waitPid waits for a live service pid other than old.
func waitPid(t *testing.T, pidfile string, old int) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if p := readPid(pidfile); p != 0 && p != old && syscall.Kill(p, 0) == nil {
			return p
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no new service process (old pid %d)", old)
	return 0
}

func killPidfile(pidfile string) {
	if p := readPid(pidfile); p > 0 {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
}

// The TCP API is mutual TLS with the cluster CA: a client holding a
// certificate from `halo cluster init` gets in, one without is refused.
func TestTCPAPIMutualTLS(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	n := harness.NewNode(t, filepath.Join(dir, "n1"), "n1")
	n.WriteFile("cluster.hcl", fmt.Sprintf(`cluster "tls" {
  api_port = %d
  network "default" {}
  node "n1" { addresses = { default = "127.0.0.1" } }
  user "admin" { role = "admin" }
}
`, port), 0o644)
	pkiDir := filepath.Join(dir, "pki")
	if out, code := n.CLI("cluster", "init", "--cluster", filepath.Join(n.ConfigDir, "cluster.hcl"), "--out", pkiDir, "--user", "admin"); code != 0 {
		t.Fatalf("cluster init: %d %s", code, out)
	}
	if out, err := exec.Command("cp", "-rp", filepath.Join(pkiDir, "n1", "tls"), n.ConfigDir).CombinedOutput(); err != nil {
		t.Fatalf("install tls: %v %s", err, out)
	}
	n.Start()

	userDir := filepath.Join(pkiDir, "users", "admin")
	cert, err := tls.LoadX509KeyPair(filepath.Join(userDir, "admin.pem"), filepath.Join(userDir, "admin-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(userDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	mk := func(certs []tls.Certificate) *api.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs, ServerName: "n1", MinVersion: tls.VersionTLS13}}
		return api.NewClient(url, &http.Client{Transport: tr, Timeout: 5 * time.Second})
	}
	v, err := mk([]tls.Certificate{cert}).Version(context.Background())
	if err != nil || v.Node != "n1" {
		t.Fatalf("with a cluster certificate: %+v %v", v, err)
	}
	if _, err := mk(nil).Version(context.Background()); err == nil {
		t.Fatal("a client without a certificate reached the TCP API")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
