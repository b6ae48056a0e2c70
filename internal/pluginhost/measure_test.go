package pluginhost

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/core"
)

// TestMeasure measures what the agent's timing relies on, and logs it
// (go test -run TestMeasure -v ./internal/pluginhost):
//   - start: New → Checker (launch, handshake, Info, Schema, SetConfig) →
//     first Check answered, on a fresh host each time;
//   - the round trip of one Check call, over 10,000 sequential calls;
//   - kill -9 → serving again, each crash isolated (backoff reset).
func TestMeasure(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement: 10,000 calls and several launches")
	}
	dir := pluginDir(t, "testcheck", "script")
	// No plugin settings in the app block: it loads without the host.
	confDir, _ := writeConfig(t, `module "web" {
  kind  = "light"
  id    = 7
  nodes = ["node1"]
  check "testcheck" "api" {
    port = 8080
  }
}
`, nil)

	var starts []time.Duration
	for range 5 {
		h, _ := newHost(t, dir, Options{})
		mod := loadModuleNoPlugins(t, confDir)
		start := time.Now()
		cr, err := h.Checker(ctxTimeout(t, 30*time.Second), mod, mod.Checks[0])
		if err != nil {
			t.Fatal(err)
		}
		if st, msg := cr.Check(ctxTimeout(t, 5*time.Second)); st != core.CheckUp {
			t.Fatalf("check = %v %q", st, msg)
		}
		starts = append(starts, time.Since(start))
		h.Close()
	}
	slices.Sort(starts)
	t.Logf("start (launch → first check answered), 5 launches: min %s, median %s, max %s", starts[0], starts[2], starts[4])

	_, _, cr, p := startChecker(t, Options{Restart: Backoff{ResetAfter: time.Nanosecond}})
	const calls = 10000
	rtts := make([]time.Duration, calls)
	for i := range rtts {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		st, msg := cr.Check(ctx)
		rtts[i] = time.Since(start)
		cancel()
		if st != core.CheckUp {
			t.Fatalf("call %d: %v %q", i, st, msg)
		}
	}
	slices.Sort(rtts)
	t.Logf("Check round trip over %d calls: median %s, p99 %s, max %s", calls,
		rtts[calls/2], rtts[calls*99/100], rtts[calls-1])

	var restarts []time.Duration
	for range 5 {
		pid := p.pid()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		untilUp(t, cr, 10*time.Second)
		restarts = append(restarts, time.Since(killed))
	}
	slices.Sort(restarts)
	t.Logf("kill -9 → serving (backoff 100ms included), 5 crashes: min %s, median %s, max %s", restarts[0], restarts[2], restarts[4])
	if restarts[4] > time.Second {
		t.Errorf("a crashed plugin took %s to serve again, want within 1s", restarts[4])
	}
}
