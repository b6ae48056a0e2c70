package app

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// RunCommand runs cmd as the process of a run, with the stop semantics the
// host expects:
//
//   - the process gets its own process group, so signals reach the
//     children a script starts (a `sleep`, a `pg_ctl`)
//   - run.Stopping closing sends SIGTERM to the group; ctx ending (timeout,
//     forced stop, host gone) sends SIGKILL
//   - output goes to out unless cmd already has Stdout or Stderr set
//   - a daemon that keeps the output pipes open does not hold the run
//     open: once the script exits, pipes are closed after cmd.WaitDelay
//     (1s when unset)
//
// cmd must not have been started, and must not come from
// exec.CommandContext: RunCommand owns the process's lifetime. It returns
// the exit code, -1 with an error when the process was killed or never
// started.
func RunCommand(ctx context.Context, run Run, out Output, cmd *exec.Cmd) (int, error) {
	if cmd.Stdout == nil {
		cmd.Stdout = out.Stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = out.Stderr
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = time.Second
	}
	if err := ctx.Err(); err != nil {
		return -1, fmt.Errorf("start %s: %w", run.Script, err)
	}
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("start %s: %w", run.Script, err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		select {
		case <-run.Stopping:
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
		case <-ctx.Done():
		case <-exited:
			return
		}
		select {
		case <-ctx.Done():
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		case <-exited:
		}
	}()
	err := cmd.Wait()
	close(exited)
	state := cmd.ProcessState
	if state == nil {
		return -1, fmt.Errorf("run %s: %w", run.Script, err)
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1, fmt.Errorf("%s killed by signal %s", run.Script, ws.Signal())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) && !errors.Is(err, exec.ErrWaitDelay) {
		return state.ExitCode(), fmt.Errorf("run %s: %w", run.Script, err)
	}
	// A non-zero status is the script's answer, not an error of the run.
	return state.ExitCode(), nil
}
