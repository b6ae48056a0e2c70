package pluginhost

import (
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/base"
)

const vipModule = `module "web" {
  kind  = "light"
  id    = 1
  nodes = ["node1"]
  vip {
    plugin  = "testvip"
    address = "198.18.0.100/24"
    table   = 7
  }
}
`

// TestVIPRunner: a vip block's instance gets halo's address, acquires and
// releases it, and survives a kill -9 of its plugin (relaunch and replay).
func TestVIPRunner(t *testing.T) {
	h, _ := newHost(t, pluginDir(t, "testvip", "script"), Options{})
	confDir, _ := writeConfig(t, vipModule, nil)
	mod := loadModule(t, h, confDir)
	ctx := ctxTimeout(t, 30*time.Second)
	r, err := h.VIP(ctx, mod, mod.VIPs[0])
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.lookup(base.KindVIP, "testvip")
	if err != nil {
		t.Fatal(err)
	}
	present := func() bool {
		t.Helper()
		s, err := p.current()
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.vip.Status(ctx, "web/vip.198.18.0.100")
		if err != nil {
			t.Fatal(err)
		}
		if st.Message != "198.18.0.100/24" {
			t.Fatalf("plugin configured with address %q, want halo's 198.18.0.100/24", st.Message)
		}
		return st.Present
	}
	if err := r.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if !present() {
		t.Fatal("not present after Acquire")
	}
	if err := r.Release(ctx, true); err != nil {
		t.Fatal(err)
	}
	if present() {
		t.Fatal("present after Release")
	}

	// The plugin dies: the next call waits for its relaunch, which
	// replays the instance's configuration.
	old := p.pid()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the relaunch", func() bool { n := p.pid(); return n != 0 && n != old })
	if err := r.Acquire(ctx); err != nil {
		t.Fatalf("acquire after a crash: %v", err)
	}
	if !present() {
		t.Fatal("not present after Acquire in the relaunched plugin")
	}
}
