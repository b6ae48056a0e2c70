package sdktest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/vip"
)

// VIPConformance checks a VIP implementation against the contract the
// host relies on. It really acquires and releases the address cfg
// describes, so a real VIP plugin runs it as root inside a network
// namespace the test created. It checks identity and configuration as
// CheckerConformance does, then that:
//
//   - release of an absent address succeeds and Status shows it absent
//   - Acquire makes it present, on an up interface, not duplicated;
//     acquiring again succeeds (idempotence)
//   - Announce succeeds while present
//   - Release (with connection reset) makes it absent; releasing again
//     succeeds
//   - every method returns promptly on a cancelled or expiring context
//   - concurrent Status calls during Acquire/Release work
//   - nothing is written to stdout
//
// The address is released when the test ends, whatever happened.
func VIPConformance(t *testing.T, newVIP func() vip.VIP, cfg string, opts ...Option) {
	t.Helper()
	o := newOptions(opts)
	guard := guardStdout(t)
	p := ServeVIP(t, newVIP)
	checkIdentity(t, p, newVIP(), base.KindVIP, cfg)

	ctx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 10*time.Second)
	}
	status := func(t *testing.T, id string) vip.Status {
		t.Helper()
		c, cancel := ctx()
		defer cancel()
		st, err := p.VIP.Status(c, id)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		if err := oneLine(st.Message); err != nil {
			t.Errorf("Status: %v", err)
		}
		return st
	}
	do := func(t *testing.T, what string, fn func(context.Context) error) {
		t.Helper()
		c, cancel := ctx()
		defer cancel()
		if err := fn(c); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	if err := p.Configure(t, "main", cfg); err != nil {
		t.Fatalf("the sample configuration is rejected: %v", err)
	}
	t.Cleanup(func() {
		c, cancel := ctx()
		defer cancel()
		_ = p.VIP.Release(c, "main", vip.ReleaseOptions{})
	})

	t.Run("lifecycle", func(t *testing.T) {
		release := func(c context.Context) error { return p.VIP.Release(c, "main", vip.ReleaseOptions{}) }
		acquire := func(c context.Context) error { return p.VIP.Acquire(c, "main") }
		do(t, "Release of an absent address", release)
		if st := status(t, "main"); st.Present {
			t.Fatalf("present after Release: %+v", st)
		}
		do(t, "Acquire", acquire)
		st := status(t, "main")
		if !st.Present || !st.InterfaceUp || st.Duplicated {
			t.Fatalf("after Acquire: %+v, want present, interface up, not duplicated", st)
		}
		do(t, "Acquire again", acquire)
		do(t, "Announce", func(c context.Context) error { return p.VIP.Announce(c, "main") })
		do(t, "Release with connection reset", func(c context.Context) error {
			return p.VIP.Release(c, "main", vip.ReleaseOptions{ResetConnections: true})
		})
		if st := status(t, "main"); st.Present {
			t.Fatalf("present after Release: %+v", st)
		}
		do(t, "Release again", release)
	})

	t.Run("unconfigured instance", func(t *testing.T) {
		c, cancel := ctx()
		defer cancel()
		if err := p.VIP.Acquire(c, "never-configured"); !errors.Is(err, base.ErrUnknownInstance) {
			t.Errorf("Acquire of an unconfigured instance = %v, want base.ErrUnknownInstance", err)
		}
	})
	checkBadConfigs(t, p, o, cfg, func(t *testing.T, id string) { status(t, id) })

	t.Run("honours context", func(t *testing.T) {
		direct := newVIP()
		if err := direct.Configure(context.Background(), instanceConfig(t, p.Schema, cfg, "direct")); err != nil {
			t.Fatalf("Configure: %v", err)
		}
		defer func() { _ = direct.Release(context.Background(), vip.ReleaseOptions{}) }()
		calls := map[string]func(context.Context){
			"Acquire":  func(c context.Context) { _ = direct.Acquire(c) },
			"Status":   func(c context.Context) { _, _ = direct.Status(c) },
			"Announce": func(c context.Context) { _ = direct.Announce(c) },
			"Release":  func(c context.Context) { _ = direct.Release(c, vip.ReleaseOptions{ResetConnections: true}) },
		}
		for _, name := range []string{"Acquire", "Status", "Announce", "Release"} {
			checkPrompt(t, name+" with a cancelled context", 0, o.slack, calls[name])
			checkPrompt(t, name+" with a 50ms deadline", 50*time.Millisecond, o.slack, calls[name])
		}
	})

	t.Run("concurrent status", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		stop := make(chan struct{})
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					c, cancel := ctx()
					_, err := p.VIP.Status(c, "main")
					cancel()
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		for range 3 {
			do(t, "Acquire", func(c context.Context) error { return p.VIP.Acquire(c, "main") })
			do(t, "Release", func(c context.Context) error { return p.VIP.Release(c, "main", vip.ReleaseOptions{}) })
		}
		close(stop)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("concurrent Status: %v", err)
		}
	})
	checkNoStdout(t, guard)
}
