package custom

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/sdk/checker"
)

// stopGrace is how long a stopping reporter gets between SIGTERM and
// SIGKILL.
const stopGrace = 2 * time.Second

// reporter keeps one long-running program alive.
type reporter struct {
	cfg    *config
	env    []string
	logger hclog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	pid       int // 0 while not running
	since     time.Time
	lastExit  string // how the previous run ended
	nextStart time.Time
	starts    int
}

func startReporter(cfg *config, env []string, logger hclog.Logger) *reporter {
	ctx, cancel := context.WithCancel(context.Background())
	r := &reporter{cfg: cfg, env: env, logger: logger.Named("reporter"), cancel: cancel, done: make(chan struct{})}
	go r.supervise(ctx)
	return r
}

// stop ends the program (SIGTERM to its group, SIGKILL after stopGrace)
// and the supervision.
func (r *reporter) stop() {
	r.cancel()
	<-r.done
}

func (r *reporter) status() checker.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pid != 0 {
		return checker.Up("reporter pid %d running for %s", r.pid, time.Since(r.since).Round(time.Second))
	}
	if r.starts == 0 {
		return checker.Down("reporter not started yet: %s", r.lastExit)
	}
	return checker.Down("reporter exited (%s), restart in %s", r.lastExit, time.Until(r.nextStart).Round(time.Millisecond))
}

func (r *reporter) supervise(ctx context.Context) {
	defer close(r.done)
	delay := r.cfg.RestartDelay
	for {
		started := time.Now()
		exit := r.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		// A program that ran a while was healthy: start the backoff over.
		if time.Since(started) >= r.cfg.MaxRestartDelay {
			delay = r.cfg.RestartDelay
		}
		r.mu.Lock()
		r.lastExit = exit
		r.nextStart = time.Now().Add(delay)
		r.mu.Unlock()
		r.logger.Warn("reporter exited", "exit", exit, "restart_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, r.cfg.MaxRestartDelay)
	}
}

// runOnce starts the program and waits for it to exit, or stops it when
// ctx ends. It returns how it ended.
func (r *reporter) runOnce(ctx context.Context) string {
	// The program gets SIGTERM when the thread that started it dies
	// (Pdeathsig is per thread): keep this goroutine on its thread for
	// the program's life so that only the plugin's death triggers it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	cmd := exec.Command(r.cfg.Command, r.cfg.Args...)
	cmd.Env = r.env
	cmd.Dir = filepath.Dir(r.cfg.Command)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	stdout, stderr := r.logWriter("stdout"), r.logWriter("stderr")
	defer stdout.Close()
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		r.mu.Lock()
		r.starts++
		r.mu.Unlock()
		return fmt.Sprintf("start: %v", err)
	}
	pid := cmd.Process.Pid
	r.mu.Lock()
	r.pid, r.since = pid, time.Now()
	r.starts++
	r.mu.Unlock()
	r.logger.Info("reporter started", "pid", pid)

	exited := make(chan struct{})
	go func() {
		select {
		case <-exited:
			return
		case <-ctx.Done():
		}
		killGroup(pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(stopGrace):
		}
		killGroup(pid, syscall.SIGKILL)
	}()
	err := cmd.Wait()
	close(exited)
	// Children left in its group would keep reporting for a dead parent.
	killGroup(pid, syscall.SIGKILL)
	r.mu.Lock()
	r.pid = 0
	r.mu.Unlock()
	if err != nil {
		return err.Error()
	}
	return "exit status 0"
}

// logWriter sends each line the program prints to the plugin's log.
func (r *reporter) logWriter(stream string) io.WriteCloser {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 4096), 64<<10)
		for sc.Scan() {
			r.logger.Info(sc.Text(), "stream", stream)
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	return pw
}
