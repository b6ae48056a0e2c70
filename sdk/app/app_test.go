package app

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/zclconf/go-cty/cty"

	"github.com/halo-ha/halo/sdk/base"
	pluginv1 "github.com/halo-ha/halo/sdk/proto/halo/plugin/v1"
	"github.com/halo-ha/halo/sdk/schema"
)

func TestLineSplitting(t *testing.T) {
	var got []*pluginv1.OutputLine
	sender, stdout, stderr := newOutput(func(ev *pluginv1.RunEvent) error {
		got = append(got, ev.GetLine())
		return nil
	})
	write := func(w *lineWriter, s string) {
		t.Helper()
		if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	write(stdout, "one\ntw")
	write(stderr, "err\n")
	write(stdout, "o\n\nthree")
	write(stdout, strings.Repeat("x", maxLine+10)+"\n")
	write(stderr, "no newline at the end")
	if err := sender.close(stdout, stderr); err != nil {
		t.Fatal(err)
	}
	// Late writes from a goroutine that outlived Run are dropped quietly.
	write(stdout, "late\n")

	want := []struct {
		stream pluginv1.OutputStream
		text   string
	}{
		{pluginv1.OutputStream_OUTPUT_STREAM_STDOUT, "one"},
		{pluginv1.OutputStream_OUTPUT_STREAM_STDERR, "err"},
		{pluginv1.OutputStream_OUTPUT_STREAM_STDOUT, "two"},
		{pluginv1.OutputStream_OUTPUT_STREAM_STDOUT, ""},
		{pluginv1.OutputStream_OUTPUT_STREAM_STDOUT, "three" + strings.Repeat("x", maxLine-5)},
		{pluginv1.OutputStream_OUTPUT_STREAM_STDOUT, strings.Repeat("x", 15)},
		{pluginv1.OutputStream_OUTPUT_STREAM_STDERR, "no newline at the end"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].GetStream() != w.stream || string(got[i].GetText()) != w.text {
			t.Errorf("line %d: %s %.20q (%d bytes), want %s %.20q (%d bytes)", i,
				got[i].GetStream(), got[i].GetText(), len(got[i].GetText()), w.stream, w.text, len(w.text))
		}
	}
}

func TestLineSenderStopsOnSendError(t *testing.T) {
	gone := errors.New("host gone")
	sender, stdout, _ := newOutput(func(*pluginv1.RunEvent) error { return gone })
	if _, err := stdout.Write([]byte("a\n")); !errors.Is(err, gone) {
		t.Fatalf("Write = %v, want the send error", err)
	}
	if _, err := stdout.Write([]byte("b\n")); !errors.Is(err, gone) {
		t.Fatalf("second Write = %v, want the send error", err)
	}
	if err := sender.close(stdout); !errors.Is(err, gone) {
		t.Fatalf("close = %v, want the send error", err)
	}
}

func TestClassify(t *testing.T) {
	run := Run{Script: "start_prim", Timeout: time.Second}
	tests := []struct {
		name    string
		code    int
		err     error
		runErr  error
		stopped string
		want    Outcome
		msg     string
	}{
		{"ok", 0, nil, nil, "", OutcomeOK, "exit status 0"},
		{"non-zero", 3, nil, nil, "", OutcomeFailed, "exit status 3"},
		{"error", -1, errors.New("start start_prim: no such file"), nil, "", OutcomeFailed, "no such file"},
		{"timeout wins over the status", -1, errors.New("killed"), context.DeadlineExceeded, "", OutcomeTimeout, "timed out after 1s"},
		{"stopped", -1, errors.New("killed by signal terminated"), context.Canceled, "graceful stop", OutcomeFailed, "stopped by the host (graceful stop)"},
		{"stopped but exited 0", 0, nil, nil, "graceful stop", OutcomeOK, "exit status 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := classify(run, tt.code, tt.err, tt.runErr, tt.stopped)
			if e.Outcome != tt.want || !strings.Contains(e.Message, tt.msg) || e.ExitCode != tt.code {
				t.Fatalf("classify = %+v, want %s with %q", e, tt.want, tt.msg)
			}
		})
	}
}

// gateApp runs "scripts" that are Go functions, for tests of the shim.
type gateApp struct {
	run func(ctx context.Context, run Run, out Output) (int, error)
}

func (a *gateApp) Info() base.PluginInfo                         { return base.PluginInfo{Name: "gate", Version: "0.0.1"} }
func (a *gateApp) Schema() *schema.Schema                        { return &schema.Schema{} }
func (a *gateApp) Configure(context.Context, *base.Config) error { return nil }
func (a *gateApp) Run(ctx context.Context, run Run, out Output) (int, error) {
	return a.run(ctx, run, out)
}

func serveGate(t *testing.T, fn func(ctx context.Context, run Run, out Output) (int, error)) *Client {
	t.Helper()
	sets, err := VersionedPlugins(func() App { return &gateApp{run: fn} }, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	// Closing the client shuts the server down (go-plugin's controller);
	// stopping it here as well would race with that.
	client, _ := plugin.TestPluginGRPCConn(t, false, sets[base.APIVersion])
	t.Cleanup(func() { _ = client.Close() })
	rawBase, _ := client.Dispense(base.PluginName)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rawBase.(*base.Client).SetConfig(ctx, "i", mustEmptyObject(), base.ModuleContext{}); err != nil {
		t.Fatal(err)
	}
	raw, _ := client.Dispense(PluginName)
	return raw.(*Client)
}

func mustEmptyObject() cty.Value { return cty.EmptyObjectVal }

func TestRunIDInProgressIsRefused(t *testing.T) {
	started := make(chan struct{})
	c := serveGate(t, func(ctx context.Context, run Run, _ Output) (int, error) {
		if run.Script == "block" {
			close(started)
			<-ctx.Done()
			return -1, ctx.Err()
		}
		return 0, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan Exit, 1)
	go func() {
		exit, _ := c.Run(ctx, "i", Run{ID: "r", Script: "block"}, nil)
		done <- exit
	}()
	<-started
	if _, err := c.Run(ctx, "i", Run{ID: "r", Script: "other"}, nil); !errors.Is(err, ErrRunInProgress) {
		t.Fatalf("second Run with the same ID = %v, want ErrRunInProgress", err)
	}
	if err := c.Stop(ctx, "i", "r", true); err != nil {
		t.Fatal(err)
	}
	if exit := <-done; exit.Outcome != OutcomeFailed || !strings.Contains(exit.Message, "forced stop") {
		t.Fatalf("forced stop ended the run with %+v", exit)
	}
	if err := c.Stop(ctx, "i", "r", true); !errors.Is(err, ErrNoSuchRun) {
		t.Fatalf("Stop of an ended run = %v, want ErrNoSuchRun", err)
	}
}

// TestGracefulStopBeforeStart: a graceful Stop that arrives before the
// script started is seen through Run.Stopping, not lost.
func TestGracefulStopBeforeStart(t *testing.T) {
	entered := make(chan struct{})
	proceed := make(chan struct{})
	c := serveGate(t, func(ctx context.Context, run Run, _ Output) (int, error) {
		close(entered)
		<-proceed // the "script" starts only after the Stop
		select {
		case <-run.Stopping:
			return 143, nil
		case <-ctx.Done():
			return -1, ctx.Err()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan Exit, 1)
	go func() {
		exit, _ := c.Run(ctx, "i", Run{ID: "r", Script: "s"}, nil)
		done <- exit
	}()
	<-entered
	if err := c.Stop(ctx, "i", "r", false); err != nil {
		t.Fatal(err)
	}
	close(proceed)
	exit := <-done
	if exit.ExitCode != 143 || !strings.Contains(exit.Message, "graceful stop") {
		t.Fatalf("exit %+v, want 143 after a graceful stop", exit)
	}
}

func TestRunPanicIsContained(t *testing.T) {
	c := serveGate(t, func(context.Context, Run, Output) (int, error) { panic("boom") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Run(ctx, "i", Run{ID: "r", Script: "s"}, nil); err == nil || !strings.Contains(err.Error(), "panicked in Run: boom") {
		t.Fatalf("Run of a panicking plugin = %v", err)
	}
	// The process and the instance survive.
	if _, err := c.Run(ctx, "i", Run{ID: "r2", Script: "s"}, nil); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("second Run = %v", err)
	}
}

func TestRunCommand(t *testing.T) {
	var mu sync.Mutex
	var out strings.Builder
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	})
	o := Output{Stdout: w, Stderr: w}
	ctx := context.Background()

	code, err := RunCommand(ctx, Run{Script: "ok"}, o, exec.Command("/bin/sh", "-c", "echo hi; exit 0"))
	if code != 0 || err != nil || !strings.Contains(out.String(), "hi") {
		t.Fatalf("ok: %d, %v, %q", code, err, out.String())
	}
	code, err = RunCommand(ctx, Run{Script: "fail"}, o, exec.Command("/bin/sh", "-c", "exit 7"))
	if code != 7 || err != nil {
		t.Fatalf("fail: %d, %v; want 7, nil", code, err)
	}
	code, err = RunCommand(ctx, Run{Script: "missing"}, o, exec.Command("/nonexistent/script"))
	if code != -1 || err == nil {
		t.Fatalf("missing: %d, %v; want -1 and an error", code, err)
	}

	// A graceful stop reaches the script's children (process group).
	stopping := make(chan struct{})
	start := time.Now()
	go func() { time.Sleep(100 * time.Millisecond); close(stopping) }()
	code, err = RunCommand(ctx, Run{Script: "hang", Stopping: stopping}, o, exec.Command("/bin/sh", "-c", "sleep 30; exit 0"))
	if code != -1 || err == nil || !strings.Contains(err.Error(), "terminated") || time.Since(start) > 5*time.Second {
		t.Fatalf("graceful stop: %d, %v after %s", code, err, time.Since(start))
	}

	// A script that traps SIGTERM is killed when ctx ends.
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	stopped := make(chan struct{})
	close(stopped)
	start = time.Now()
	code, err = RunCommand(tctx, Run{Script: "stubborn", Stopping: stopped}, o,
		exec.Command("/bin/sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"))
	if code != -1 || err == nil || !strings.Contains(err.Error(), "killed") || time.Since(start) > 5*time.Second {
		t.Fatalf("forced: %d, %v after %s", code, err, time.Since(start))
	}

	// A daemon holding the output pipe open does not hold the run.
	start = time.Now()
	daemon := exec.Command("/bin/sh", "-c", "(sleep 30 &) ; exit 0")
	code, err = RunCommand(ctx, Run{Script: "daemon"}, o, daemon)
	_ = syscall.Kill(-daemon.Process.Pid, syscall.SIGKILL) // the left-behind sleep
	if code != 0 || err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("daemon: %d, %v after %s", code, err, time.Since(start))
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
