package sdktest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/app"
	"github.com/halo-ha/halo/sdk/base"
)

// AppScripts names scripts, available under the sample configuration, with
// known behaviour for AppConformance.
type AppScripts struct {
	// Succeeds exits 0 after writing at least one line to stdout.
	Succeeds string
	// Fails exits with a non-zero status.
	Fails string
	// Hangs runs until it is stopped (a `sleep 3600`), and ends on SIGTERM.
	Hangs string
}

// AppConformance checks an app implementation against the contract the
// host relies on. It checks identity and configuration as
// CheckerConformance does, then that:
//
//   - scripts.Succeeds ends OK with exit code 0 and its output streamed
//   - scripts.Fails ends Failed with its non-zero exit code
//   - scripts.Hangs with a 300ms timeout ends Timeout, promptly
//   - scripts.Hangs is ended within 5s by a graceful Stop, and by a
//     forced Stop
//   - a run whose call is cancelled returns promptly
//   - concurrent runs work
//   - nothing is written to stdout
func AppConformance(t *testing.T, newApp func() app.App, cfg string, scripts AppScripts, opts ...Option) {
	t.Helper()
	o := newOptions(opts)
	guard := guardStdout(t)
	p := ServeApp(t, newApp)
	checkIdentity(t, p, newApp(), base.KindApp, cfg)
	if err := p.Configure(t, "main", cfg); err != nil {
		t.Fatalf("the sample configuration is rejected: %v", err)
	}

	args := app.Args{Current: "SECOND", Next: "ALONE", Action: "failover"}
	run := func(t *testing.T, id, script string, timeout time.Duration) (app.Exit, []app.Line, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
		defer cancel()
		var mu sync.Mutex
		var lines []app.Line
		exit, err := p.App.Run(ctx, "main", app.Run{ID: id, Script: script, Args: args, Timeout: timeout,
			Env: map[string]string{"HALO_SDKTEST": "1"}}, func(l app.Line) {
			mu.Lock()
			lines = append(lines, l)
			mu.Unlock()
		})
		return exit, lines, err
	}

	t.Run("succeeds", func(t *testing.T) {
		exit, lines, err := run(t, "ok", scripts.Succeeds, 10*time.Second)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if exit.Outcome != app.OutcomeOK || exit.ExitCode != 0 {
			t.Errorf("exit %+v, want ok with code 0", exit)
		}
		stdout := 0
		for _, l := range lines {
			if l.Stream == app.Stdout {
				stdout++
			}
		}
		if stdout == 0 {
			t.Errorf("no stdout line streamed (got %v)", lines)
		}
	})
	t.Run("fails", func(t *testing.T) {
		exit, _, err := run(t, "fail", scripts.Fails, 10*time.Second)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if exit.Outcome != app.OutcomeFailed || exit.ExitCode == 0 {
			t.Errorf("exit %+v, want failed with a non-zero code", exit)
		}
	})
	t.Run("times out", func(t *testing.T) {
		start := time.Now()
		exit, _, err := run(t, "hang", scripts.Hangs, 300*time.Millisecond)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if exit.Outcome != app.OutcomeTimeout {
			t.Errorf("exit %+v, want timeout", exit)
		}
		if took := time.Since(start); took > 300*time.Millisecond+o.slack+time.Second {
			t.Errorf("a 300ms timeout took %s to report", took)
		}
	})
	for _, force := range []bool{false, true} {
		t.Run(fmt.Sprintf("stop force=%v", force), func(t *testing.T) {
			id := fmt.Sprintf("stop-%v", force)
			done := make(chan app.Exit, 1)
			errc := make(chan error, 1)
			go func() {
				exit, _, err := run(t, id, scripts.Hangs, time.Minute)
				errc <- err
				done <- exit
			}()
			stopWhenRunning(t, p, id, force)
			select {
			case err := <-errc:
				exit := <-done
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				if exit.Outcome == app.OutcomeOK {
					t.Errorf("a stopped run ended ok: %+v", exit)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the run did not end within 5s of Stop")
			}
		})
	}
	t.Run("honours context", func(t *testing.T) {
		direct := newApp()
		if err := direct.Configure(context.Background(), instanceConfig(t, p.Schema, cfg, "direct")); err != nil {
			t.Fatalf("Configure: %v", err)
		}
		discard := app.Output{Stdout: nopWriter{}, Stderr: nopWriter{}}
		call := func(ctx context.Context) {
			_, _ = direct.Run(ctx, app.Run{ID: "ctx", Script: scripts.Hangs, Args: args}, discard)
		}
		checkPrompt(t, "Run with a cancelled context", 0, o.slack, call)
		checkPrompt(t, "Run with a 100ms deadline", 100*time.Millisecond, o.slack, call)
		checkPrompt(t, "Run over the wire with a 100ms deadline", 100*time.Millisecond, o.slack, func(ctx context.Context) {
			_, _ = p.App.Run(ctx, "main", app.Run{ID: "ctx-wire", Script: scripts.Hangs, Args: args}, nil)
		})
	})
	t.Run("concurrent runs", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				exit, _, err := run(t, fmt.Sprintf("par-%d", i), scripts.Succeeds, 10*time.Second)
				if err == nil && exit.Outcome != app.OutcomeOK {
					err = fmt.Errorf("run %d: %+v", i, exit)
				}
				if err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	checkBadConfigs(t, p, o, cfg, func(t *testing.T, id string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		exit, err := p.App.Run(ctx, id, app.Run{ID: "alive", Script: scripts.Succeeds, Args: args, Timeout: 5 * time.Second}, nil)
		if err != nil || exit.Outcome != app.OutcomeOK {
			t.Errorf("instance broken after a rejected configuration: %+v, %v", exit, err)
		}
	})
	t.Run("stop everything", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.App.Stop(ctx, "main", "", true); err != nil {
			t.Errorf("Stop of every run: %v", err)
		}
	})
	checkNoStdout(t, guard)
}

// stopWhenRunning stops a run as soon as it is in progress: a Stop that
// arrives before the run started reports app.ErrNoSuchRun, and is retried.
func stopWhenRunning(t *testing.T, p *Plugin, runID string, force bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := p.App.Stop(ctx, "main", runID, force)
		cancel()
		switch {
		case err == nil:
			return
		case !errors.Is(err, app.ErrNoSuchRun):
			t.Fatalf("Stop: %v", err)
		case time.Now().After(deadline):
			t.Fatalf("run %q never started", runID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
