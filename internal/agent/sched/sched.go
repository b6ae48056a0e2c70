// Package sched runs the agent's threads at real-time priority, as corosync
// and keepalived run theirs: a node whose CPUs its application keeps busy
// must still send its heartbeats and judge its peer's on time, or the peer
// takes it for dead and fails over.
//
// Linux schedules threads, not processes: the policy is set on each
// thread, and a new thread inherits its creator's. The agent's threads get
// SCHED_RR with SCHED_RESET_ON_FORK, so that every process the agent
// starts (plugins, the scripts they run, replication daemons) starts under
// the normal policy, whichever goroutine starts it: the application must
// never run at real-time priority. Reset-on-fork also applies to the
// threads the Go runtime creates later (a new thread is a forked task):
// Maintain raises them in turn. The Go runtime creates threads mostly at
// start and when blocking system calls pile up, so after a warm-up new
// threads are rare; a goroutine that must never run on a normal thread
// locks its own (LockThread).
package sched

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Policy is how the agent asks to be scheduled.
type Policy string

const (
	// Realtime: SCHED_RR at a low real-time priority (DefaultPriority),
	// falling back to Normal with a warning when the process may not.
	Realtime Policy = "realtime"
	// Normal: SCHED_OTHER, as any process.
	Normal Policy = "normal"
)

// DefaultPriority is the real-time priority of the agent's threads: low
// (1..99), like keepalived's default, so that the kernel's own real-time
// threads and anything an administrator ranks higher still come first.
const DefaultPriority = 10

// ParsePolicy parses the --priority flag.
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(strings.ToLower(strings.TrimSpace(s))); p {
	case Realtime, Normal:
		return p, nil
	}
	return "", fmt.Errorf("parse scheduling priority %q: want %s or %s", s, Realtime, Normal)
}

// ThreadPolicy is the scheduling of one thread as the kernel reports it.
type ThreadPolicy struct {
	TID         int
	Policy      string // SCHED_OTHER, SCHED_RR, SCHED_FIFO, SCHED_BATCH, SCHED_IDLE, SCHED_DEADLINE
	Priority    int    // real-time priority (0 for the normal policies)
	ResetOnFork bool
	RealTime    bool // SCHED_RR or SCHED_FIFO
	Nice        int
}

func (t ThreadPolicy) String() string {
	s := t.Policy
	if t.RealTime {
		s += " " + strconv.Itoa(t.Priority)
	}
	if t.ResetOnFork {
		s += " reset-on-fork"
	}
	return s
}

// Maintain raises, at once then every interval until ctx ends, the threads
// created since the previous sweep. A failed sweep is logged once per
// distinct error.
func (r *RealtimeThreads) Maintain(ctx context.Context, every time.Duration, logger hclog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	lastErr := ""
	for {
		n, err := r.Sweep()
		switch {
		case err != nil && err.Error() != lastErr:
			logger.Warn("cannot raise new agent threads to real-time priority", "error", err)
			lastErr = err.Error()
		case err == nil && n > 0:
			logger.Debug("new agent threads raised to real-time priority", "threads", n, "raised_so_far", r.Raised())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
