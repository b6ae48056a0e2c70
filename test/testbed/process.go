package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Process is a program the bed started in a host with Host.Start.
type Process struct {
	// Name is the name given to Start; it names the log file too.
	Name string
	// Host is where the process runs.
	Host *Host
	// Cmd is the command as started.
	Cmd *exec.Cmd
	// LogPath is the file that receives the process's stdout and stderr
	// when the caller set neither; empty otherwise.
	LogPath string

	done    chan struct{}
	waitErr error
	logFile *os.File
}

// PID is the process's ID (the program's own: nsenter execs in place).
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited and been reaped.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns what exec.Cmd.Wait said.
func (p *Process) Wait() error {
	<-p.done
	return p.waitErr
}

// Signal sends sig to the process alone (not to its children).
func (p *Process) Signal(sig os.Signal) error {
	if err := p.Cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s/%s (pid %d): %w", p.Host.Name, p.Name, p.PID(), err)
	}
	return nil
}

// Start starts cmd, which must come from h.Command, as a process the bed
// tracks: it is reaped when it exits and killed at Close. When cmd has
// neither Stdout nor Stderr set, both go to <Dir>/<host>-<name>.log, whose
// tail a failing test prints.
func (h *Host) Start(name string, cmd *exec.Cmd) (*Process, error) {
	if !h.isOwnCommand(cmd) {
		return nil, fmt.Errorf("start %s on %s: command was not made by this host's Command, it would run outside the host", name, h.Name)
	}
	h.bed.mu.Lock()
	closed := h.bed.closed
	h.bed.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("start %s on %s: bed closed", name, h.Name)
	}
	p := &Process{Name: name, Host: h, Cmd: cmd, done: make(chan struct{})}
	if cmd.Stdout == nil && cmd.Stderr == nil {
		p.LogPath = filepath.Join(h.bed.dir, h.Name+"-"+name+".log")
		f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open log for %s on %s: %w", name, h.Name, err)
		}
		cmd.Stdout, cmd.Stderr, p.logFile = f, f, f
	}
	if cmd.WaitDelay == 0 {
		// A daemonised child holding the output pipe must not hang Wait.
		cmd.WaitDelay = 5 * time.Second
	}
	if err := cmd.Start(); err != nil {
		if p.logFile != nil {
			p.logFile.Close()
		}
		return nil, fmt.Errorf("start %s on %s: %w", name, h.Name, err)
	}
	h.procMu.Lock()
	h.procs = append(h.procs, p)
	h.procMu.Unlock()
	go func() {
		p.waitErr = cmd.Wait()
		if p.logFile != nil {
			p.logFile.Close()
		}
		close(p.done)
	}()
	return p, nil
}

// Processes returns the processes started in the host, in start order,
// including those that have exited.
func (h *Host) Processes() []*Process {
	h.procMu.Lock()
	defer h.procMu.Unlock()
	return append([]*Process(nil), h.procs...)
}

// Kill9 crashes the host's software: SIGKILL to every process in the host's
// namespace (the ones Start started and any children or daemons they made),
// repeated until none is left, then waits for the started ones to be reaped.
func (h *Host) Kill9() error { return h.killAll(5 * time.Second) }

func (h *Host) killAll(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := h.PIDs()
		if err != nil {
			return err
		}
		started := h.liveStarted()
		if len(pids) == 0 && len(started) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in %s survived SIGKILL for %v", pids, h.Name, timeout)
		}
		for _, pid := range pids {
			// ESRCH: it died between the scan and now.
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("kill -9 %d in %s: %w", pid, h.Name, err)
			}
		}
		// A process started a moment ago may still be nsenter, outside the
		// namespace: the scan misses it, its own PID does not.
		for _, p := range started {
			_ = p.Cmd.Process.Kill() // fails only if it already exited
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, p := range h.Processes() {
		select {
		case <-p.done:
		case <-time.After(time.Until(deadline)):
			return fmt.Errorf("%s (pid %d) in %s not reaped after SIGKILL", p.Name, p.PID(), h.Name)
		}
	}
	return nil
}

// Freeze stops every process in the host with SIGSTOP (a hung machine: its
// sockets stay open, nothing answers) and returns once all are stopped.
// Processes in uninterruptible sleep stop when they leave it; Freeze waits
// up to 5 s for that.
func (h *Host) Freeze() error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := h.PIDs()
		if err != nil {
			return err
		}
		for _, p := range h.liveStarted() {
			pids = appendUnique(pids, p.PID())
		}
		running := 0
		for _, pid := range pids {
			if st := procState(pid); st == 'T' || st == 0 || st == 'Z' {
				continue
			}
			running++
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("stop %d in %s: %w", pid, h.Name, err)
			}
		}
		// Rescan after every round: a process may have forked between the
		// scan and its SIGSTOP.
		if running == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("freeze %s: %d processes still running after 5s", h.Name, running)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Thaw resumes every process in the host with SIGCONT.
func (h *Host) Thaw() error {
	pids, err := h.PIDs()
	if err != nil {
		return err
	}
	for _, p := range h.liveStarted() {
		pids = appendUnique(pids, p.PID())
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("continue %d in %s: %w", pid, h.Name, err)
		}
	}
	return nil
}

// liveStarted returns the started processes that have not been reaped.
func (h *Host) liveStarted() []*Process {
	var live []*Process
	for _, p := range h.Processes() {
		if !p.Exited() {
			live = append(live, p)
		}
	}
	return live
}

func appendUnique(pids []int, pid int) []int {
	for _, p := range pids {
		if p == pid {
			return pids
		}
	}
	return append(pids, pid)
}

// PIDs lists the live processes in the host's network namespace. Only the bed
// puts processes there, so these are exactly what it started and their
// descendants. The test process itself is never listed, even while one of
// its threads is in the host for Do.
func (h *Host) PIDs() ([]int, error) {
	return pidsInNetns(h.nsID)
}

// nsID identifies a namespace the way stat(2) on its nsfs file does.
type nsID struct{ dev, ino uint64 }

func nsIDOf(path string) (nsID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

func pidsInNetns(id nsID) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		// A process that exited since ReadDir, or a zombie (which has
		// released its namespaces), fails here and is not listed.
		got, err := nsIDOf(filepath.Join("/proc", e.Name(), "ns", "net"))
		if err != nil || got != id {
			continue
		}
		if procState(pid) == 'Z' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// procState is the state letter of /proc/<pid>/stat ('R', 'S', 'T', 'Z', …),
// or 0 when the process is gone.
func procState(pid int) byte {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may itself contain ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// tailFile returns the last n lines of a file.
func tailFile(path string, n int) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n"))), nil
}
