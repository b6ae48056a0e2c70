package sched

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// RealtimeThreads keeps every thread of this process under SCHED_RR with
// SCHED_RESET_ON_FORK at one priority. A nil *RealtimeThreads is a process
// at normal priority: its methods do nothing.
type RealtimeThreads struct {
	priority int
	raised   atomic.Int64 // threads raised by sweeps since Enable
}

// Enable raises every current thread of this process to SCHED_RR at
// priority, with SCHED_RESET_ON_FORK. It fails, changing nothing, when the
// process may not (no CAP_SYS_NICE and RLIMIT_RTPRIO below priority, or a
// cgroup without real-time runtime).
func Enable(priority int) (*RealtimeThreads, error) {
	if priority < 1 || priority > 99 {
		return nil, fmt.Errorf("set real-time priority %d: want 1..99", priority)
	}
	r := &RealtimeThreads{priority: priority}
	// The calling thread first: refused, nothing has changed.
	if err := r.raise(unix.Gettid()); err != nil {
		return nil, fmt.Errorf("set real-time priority %d (SCHED_RR): %w", priority, err)
	}
	// Threads created during a sweep by threads not yet raised start
	// normal: sweep until one finds nothing to do.
	for range 8 {
		n, err := r.Sweep()
		if err != nil {
			return nil, fmt.Errorf("set real-time priority %d (SCHED_RR): %w", priority, err)
		}
		if n == 0 {
			break
		}
	}
	r.raised.Store(0)
	return r, nil
}

// Priority is the real-time priority of the threads (0 when r is nil).
func (r *RealtimeThreads) Priority() int {
	if r == nil {
		return 0
	}
	return r.priority
}

// Raised is the number of threads the sweeps raised since Enable: threads
// the Go runtime created after it.
func (r *RealtimeThreads) Raised() int64 {
	if r == nil {
		return 0
	}
	return r.raised.Load()
}

// String describes the policy for logs and the API.
func (r *RealtimeThreads) String() string {
	if r == nil {
		return "SCHED_OTHER (normal priority)"
	}
	return fmt.Sprintf("SCHED_RR priority %d, children reset to SCHED_OTHER", r.priority)
}

// Sweep raises the threads of this process that are not at the policy yet
// (created since the last sweep) and returns how many it raised. A thread
// that ends meanwhile is no error.
func (r *RealtimeThreads) Sweep() (int, error) {
	if r == nil {
		return 0, nil
	}
	tids, err := threadIDs("self")
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, tid := range tids {
		a, err := unix.SchedGetAttr(tid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read scheduling of thread %d: %w", tid, err))
			continue
		}
		if a.Policy == unix.SCHED_RR && int(a.Priority) == r.priority && a.Flags&unix.SCHED_FLAG_RESET_ON_FORK != 0 {
			continue
		}
		if err := r.raise(tid); err != nil {
			if !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("raise thread %d: %w", tid, err))
			}
			continue
		}
		n++
	}
	r.raised.Add(int64(n))
	return n, errors.Join(errs...)
}

func (r *RealtimeThreads) raise(tid int) error {
	attr := unix.SchedAttr{
		Policy:   unix.SCHED_RR,
		Priority: uint32(r.priority),
		Flags:    unix.SCHED_FLAG_RESET_ON_FORK,
	}
	return unix.SchedSetAttr(tid, &attr, 0)
}

// LockThread locks the calling goroutine to its OS thread for good and
// makes sure that thread runs at the real-time policy now, without waiting
// for a sweep. The caller never unlocks: when the goroutine ends, Go ends
// the thread with it. With a nil r it only locks.
func (r *RealtimeThreads) LockThread() error {
	runtime.LockOSThread()
	if r == nil {
		return nil
	}
	if err := r.raise(unix.Gettid()); err != nil {
		return fmt.Errorf("raise locked thread to real-time priority: %w", err)
	}
	return nil
}

// Threads reports the scheduling of every thread of process pid ("self"
// or a number).
func Threads(pid string) ([]ThreadPolicy, error) {
	tids, err := threadIDs(pid)
	if err != nil {
		return nil, err
	}
	out := make([]ThreadPolicy, 0, len(tids))
	for _, tid := range tids {
		a, err := unix.SchedGetAttr(tid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read scheduling of thread %d: %w", tid, err)
		}
		out = append(out, describe(tid, a))
	}
	return out, nil
}

func describe(tid int, a *unix.SchedAttr) ThreadPolicy {
	t := ThreadPolicy{TID: tid, Priority: int(a.Priority), Nice: int(a.Nice), ResetOnFork: a.Flags&unix.SCHED_FLAG_RESET_ON_FORK != 0}
	switch a.Policy {
	case unix.SCHED_NORMAL:
		t.Policy = "SCHED_OTHER"
	case unix.SCHED_FIFO:
		t.Policy, t.RealTime = "SCHED_FIFO", true
	case unix.SCHED_RR:
		t.Policy, t.RealTime = "SCHED_RR", true
	case unix.SCHED_BATCH:
		t.Policy = "SCHED_BATCH"
	case unix.SCHED_IDLE:
		t.Policy = "SCHED_IDLE"
	case unix.SCHED_DEADLINE:
		t.Policy = "SCHED_DEADLINE"
	default:
		t.Policy = fmt.Sprintf("policy %d", a.Policy)
	}
	return t
}

func threadIDs(pid string) ([]int, error) {
	dir := filepath.Join("/proc", pid, "task")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list threads: %w", err)
	}
	tids := make([]int, 0, len(entries))
	for _, e := range entries {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
