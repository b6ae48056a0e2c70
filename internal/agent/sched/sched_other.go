//go:build !linux

package sched

import (
	"errors"
	"fmt"
	"runtime"
)

// RealtimeThreads is Linux only; elsewhere Enable fails and the agent runs
// at normal priority.
type RealtimeThreads struct{}

var errUnsupported = errors.New("real-time scheduling of the agent is supported on Linux only")

func Enable(priority int) (*RealtimeThreads, error) {
	return nil, fmt.Errorf("set real-time priority %d: %w", priority, errUnsupported)
}

func (r *RealtimeThreads) Priority() int       { return 0 }
func (r *RealtimeThreads) Raised() int64       { return 0 }
func (r *RealtimeThreads) String() string      { return "normal priority" }
func (r *RealtimeThreads) Sweep() (int, error) { return 0, nil }
func (r *RealtimeThreads) LockThread() error   { runtime.LockOSThread(); return nil }
func Threads(string) ([]ThreadPolicy, error)   { return nil, errUnsupported }
