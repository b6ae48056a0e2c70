package sdktest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
)

// CheckerConformance checks a checker implementation against the contract
// the host relies on. cfg is a working configuration: the body of the
// plugin's block in a module file. It checks that:
//
//   - Info is sane (name, semantic version, kind, API version) and Schema
//     survives the wire and decodes cfg
//   - cfg is accepted, Check answers with a valid status and a one-line
//     message, and an unconfigured instance is refused
//   - bad configurations (WithBadConfig) are rejected, and leave a
//     configured instance working
//   - Check returns promptly on a cancelled or expiring context, called
//     directly and over the wire
//   - concurrent Check calls, and a reconfiguration during them, work
//     (run the test with -race for this to mean most)
//   - nothing is written to stdout
//
// The suite swaps os.Stdout while it runs: do not call it from parallel
// tests.
func CheckerConformance(t *testing.T, newChecker func() checker.Checker, cfg string, opts ...Option) {
	t.Helper()
	o := newOptions(opts)
	guard := guardStdout(t)
	p := ServeChecker(t, newChecker)
	impl := newChecker()
	checkIdentity(t, p, impl, base.KindChecker, cfg)

	check := func(t *testing.T, id string) checker.Result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := p.Checker.Check(ctx, id)
		if err != nil {
			t.Fatalf("Check(%s): %v", id, err)
		}
		if res.Status != checker.StatusUp && res.Status != checker.StatusDown && res.Status != checker.StatusUnknown {
			t.Errorf("Check(%s): invalid status %v", id, res.Status)
		}
		if err := oneLine(res.Message); err != nil {
			t.Errorf("Check(%s): %v", id, err)
		}
		return res
	}

	t.Run("configure and check", func(t *testing.T) {
		if err := p.Configure(t, "main", cfg); err != nil {
			t.Fatalf("the sample configuration is rejected: %v", err)
		}
		res := check(t, "main")
		t.Logf("check: %s %q in %s", res.Status, res.Message, res.Elapsed)
		if res.Elapsed <= 0 {
			t.Errorf("elapsed %s, want > 0", res.Elapsed)
		}
	})
	t.Run("unconfigured instance", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := p.Checker.Check(ctx, "never-configured"); !errors.Is(err, base.ErrUnknownInstance) {
			t.Errorf("Check of an unconfigured instance = %v, want base.ErrUnknownInstance", err)
		}
	})
	checkBadConfigs(t, p, o, cfg, func(t *testing.T, id string) { check(t, id) })

	t.Run("honours context", func(t *testing.T) {
		direct := newChecker()
		if err := direct.Configure(context.Background(), instanceConfig(t, p.Schema, cfg, "direct")); err != nil {
			t.Fatalf("Configure: %v", err)
		}
		checkPrompt(t, "Check with a cancelled context", 0, o.slack, func(ctx context.Context) { _, _ = direct.Check(ctx) })
		checkPrompt(t, "Check with a 50ms deadline", 50*time.Millisecond, o.slack, func(ctx context.Context) { _, _ = direct.Check(ctx) })
		checkPrompt(t, "Check over the wire with a 50ms deadline", 50*time.Millisecond, o.slack, func(ctx context.Context) {
			_, _ = p.Checker.Check(ctx, "main")
		})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := p.Checker.Check(ctx, "main"); !errors.Is(err, context.Canceled) {
			t.Errorf("Check over the wire with a cancelled context = %v, want context.Canceled", err)
		}
	})

	t.Run("concurrent checks", func(t *testing.T) {
		const workers, calls = 8, 10
		var wg sync.WaitGroup
		errs := make(chan error, workers*calls+1)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range calls {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := p.Checker.Check(ctx, "main")
					cancel()
					if err != nil {
						errs <- err
					}
				}
			}()
		}
		// A reload while checks run: Configure must be safe against them.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := p.Base.SetConfig(ctx, "main", DecodeConfig(t, p.Schema, cfg), TestModule(t, "main")); err != nil {
			errs <- err
		}
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("concurrent use: %v", err)
		}
	})

	t.Run("close instance", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Base.CloseInstance(ctx, "main"); err != nil {
			t.Fatalf("CloseInstance: %v", err)
		}
		if _, err := p.Checker.Check(ctx, "main"); !errors.Is(err, base.ErrUnknownInstance) {
			t.Errorf("Check after CloseInstance = %v, want base.ErrUnknownInstance", err)
		}
		if err := p.Base.CloseInstance(ctx, "main"); err != nil {
			t.Errorf("closing twice: %v", err)
		}
	})
	checkNoStdout(t, guard)
}
