// Package core holds the vocabulary shared by halo's pure state machines
// (core/mirror, core/farm): states, readiness, checker policy, events in and
// actions out.
//
// Everything under core is deterministic: no goroutines, no clock, no
// network, no os/exec, standard library only. The caller (the agent, or the
// simulator in tests) owns time and I/O: it feeds events, and executes the
// actions a machine returns. Time only enters through events (Tick.Now and
// the At fields), so a replayed event sequence reproduces the same actions.
package core

import (
	"fmt"
	"time"
)

// State is the HA state of one node for one module.
type State uint8

const (
	Stop   State = iota // module stopped on this node
	Wait                // blocked on a condition; the cause is always recorded
	Alone               // mirror: primary without secondary
	Prim                // mirror: primary with a secondary
	Second              // mirror: secondary
	Up                  // farm/light: running the application
)

var stateNames = [...]string{"STOP", "WAIT", "ALONE", "PRIM", "SECOND", "UP"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", s)
}

// ParseState is the inverse of State.String.
func ParseState(s string) (State, error) {
	for i, n := range stateNames {
		if n == s {
			return State(i), nil
		}
	}
	return 0, fmt.Errorf("unknown state %q", s)
}

// ExitCode is what `halo status <module> -q` returns for the state:
// 0..4 = STOP, WAIT, ALONE/UP, PRIM, SECOND.
func (s State) ExitCode() int {
	switch s {
	case Stop:
		return 0
	case Wait:
		return 1
	case Alone, Up:
		return 2
	case Prim:
		return 3
	case Second:
		return 4
	}
	return 1
}

// Serving reports whether a node in this state runs the application as the
// one that should receive traffic (holds the VIP for a mirror).
func (s State) Serving() bool { return s == Alone || s == Prim || s == Up }

// Readiness qualifies a state: Transient while an action (scripts, resync)
// is running.
type Readiness uint8

const (
	NotReady Readiness = iota
	Transient
	Ready
)

var readinessNames = [...]string{"NotReady", "Transient", "Ready"}

func (r Readiness) String() string {
	if int(r) < len(readinessNames) {
		return readinessNames[r]
	}
	return fmt.Sprintf("Readiness(%d)", r)
}

// CheckStatus is the last result of a checker, exposed as resource
// checker.<name>.
type CheckStatus uint8

const (
	CheckInit CheckStatus = iota
	CheckUp
	CheckDown
	CheckUnknown
)

var checkStatusNames = [...]string{"init", "up", "down", "unknown"}

func (c CheckStatus) String() string {
	if int(c) < len(checkStatusNames) {
		return checkStatusNames[c]
	}
	return fmt.Sprintf("CheckStatus(%d)", c)
}

// ParseCheckStatus is the inverse of CheckStatus.String.
func ParseCheckStatus(s string) (CheckStatus, error) {
	for i, n := range checkStatusNames {
		if n == s {
			return CheckStatus(i), nil
		}
	}
	return 0, fmt.Errorf("unknown checker status %q (want init, up, down or unknown)", s)
}

// CheckAction is what the machine does when a checker reports down.
type CheckAction uint8

const (
	ActRestart   CheckAction = iota // stop+start scripts locally, no role change
	ActStopStart                    // stop the module here and start it again (on PRIM: a failover)
	ActStop                         // stop the module here
	ActWait                         // hold the node in WAIT while down (on PRIM: a failover)
	ActSwap                         // exchange roles (mirror)
)

var checkActionNames = [...]string{"restart", "stopstart", "stop", "wait", "swap"}

func (a CheckAction) String() string {
	if int(a) < len(checkActionNames) {
		return checkActionNames[a]
	}
	return fmt.Sprintf("CheckAction(%d)", a)
}

// ParseCheckAction is the inverse of CheckAction.String.
func ParseCheckAction(s string) (CheckAction, error) {
	for i, n := range checkActionNames {
		if n == s {
			return CheckAction(i), nil
		}
	}
	return 0, fmt.Errorf("unknown action %q (want restart, stopstart, stop, wait or swap)", s)
}

// When limits a checker to some states.
type When uint8

const (
	WhenBoth   When = iota // whenever the application runs (PRIM/ALONE/SECOND/UP)
	WhenPrim               // PRIM or ALONE (or UP on a farm)
	WhenSecond             // SECOND only
	WhenPre                // before start: gates leaving STOP/WAIT
)

var whenNames = [...]string{"both", "prim", "second", "pre"}

func (w When) String() string {
	if int(w) < len(whenNames) {
		return whenNames[w]
	}
	return fmt.Sprintf("When(%d)", w)
}

// ParseWhen is the inverse of When.String.
func ParseWhen(s string) (When, error) {
	for i, n := range whenNames {
		if n == s {
			return When(i), nil
		}
	}
	return 0, fmt.Errorf("unknown when %q (want both, prim, second or pre)", s)
}

// CheckerSpec is the part of a checker's configuration the core reasons
// about. The plugin's own settings never reach the core.
type CheckerSpec struct {
	Name   string // instance name: resource checker.<Name>
	Type   string // plugin type (errd, tcp, ...): `halo errd off` suspends type errd
	Action CheckAction
	When   When
}

// CommandKind enumerates admin commands (SPEC §4).
type CommandKind uint8

const (
	CmdStart CommandKind = iota
	CmdStop
	CmdRestart
	CmdStopStart
	CmdForceStop
	CmdSwap
	CmdPrim
	CmdSecond
	CmdPrimForce
	CmdFailoverOn
	CmdFailoverOff
	CmdCheckerOn
	CmdCheckerOff
	CmdErrdOn
	CmdErrdOff
)

var commandNames = [...]string{"start", "stop", "restart", "stopstart", "forcestop", "swap",
	"prim", "second", "primforce", "failover-on", "failover-off", "checker-on", "checker-off",
	"errd-on", "errd-off"}

func (c CommandKind) String() string {
	if int(c) < len(commandNames) {
		return commandNames[c]
	}
	return fmt.Sprintf("CommandKind(%d)", c)
}

// ParseCommand is the inverse of CommandKind.String.
func ParseCommand(s string) (CommandKind, error) {
	for i, n := range commandNames {
		if n == s {
			return CommandKind(i), nil
		}
	}
	return 0, fmt.Errorf("unknown command %q", s)
}

// OriginShutdown is the Command.Origin of the stop the agent sends to every
// module when it shuts down (SIGTERM): the application is stopped and the
// VIP released, so a peer can take over without two nodes holding the VIP,
// but the module is not marked stopped by an administrator: it starts
// again when the agent does.
const OriginShutdown = "shutdown"

// ScriptOutcome is how a script run ended.
type ScriptOutcome uint8

const (
	ScriptOK ScriptOutcome = iota
	ScriptFailed
	ScriptTimedOut
)

var scriptOutcomeNames = [...]string{"ok", "failed", "timeout"}

func (o ScriptOutcome) String() string {
	if int(o) < len(scriptOutcomeNames) {
		return scriptOutcomeNames[o]
	}
	return fmt.Sprintf("ScriptOutcome(%d)", o)
}

// Event is an input to a state machine.
type Event interface{ isEvent() }

// Action is an output of a state machine, executed by the caller.
type Action interface{ isAction() }

// Tick carries the current time. Machines evaluate every timeout on ticks.
type Tick struct{ Now time.Time }

// CheckerResult is one checker's report. At is when the check began: what
// it saw may predate a change made while it ran.
type CheckerResult struct {
	At      time.Time
	Name    string
	Status  CheckStatus
	Message string
}

// Command is an admin command addressed to this node.
type Command struct {
	At       time.Time
	Kind     CommandKind
	FullSync bool   // --fullsync (mirror prim/second)
	Checker  string // checker on/off: one checker; empty = all
	Origin   string // who asked ("cli", "api:user", "peer:<node>"), for the event log
}

// ScriptDone reports the end of a RunScript action, matched by ID.
type ScriptDone struct {
	At      time.Time
	ID      uint64
	Outcome ScriptOutcome
	Message string
}

// WitnessResult reports whether a split-brain witness answered.
type WitnessResult struct {
	At        time.Time
	Reachable bool
	Message   string
}

func (Tick) isEvent()          {}
func (CheckerResult) isEvent() {}
func (Command) isEvent()       {}
func (ScriptDone) isEvent()    {}
func (WitnessResult) isEvent() {}

// RunScript asks the caller to run an application script (start_prim,
// stop_prim, start_second, stop_second, start_both, stop_both, prestart,
// poststop, transition) with arguments (current state, next state, action).
// The caller answers with ScriptDone{ID}.
type RunScript struct {
	ID     uint64
	Script string
	Args   []string
	Force  bool // stop scripts: the forced run after the graceful one failed or timed out
}

// EnterState announces a state change, with its cause for the event log.
type EnterState struct {
	State     State
	Readiness Readiness
	Cause     string
}

// Log records an event-log line that is not a state change (a warning, an
// action taken, a refusal).
type Log struct {
	Level string // "info", "warn", "error"
	Text  string
}

// SetVIP / UnsetVIP ask the caller to acquire or release the virtual IP.
type SetVIP struct{}
type UnsetVIP struct{}

// CheckWitness asks the caller to probe the split-brain witness and answer
// with WitnessResult.
type CheckWitness struct{}

// Refuse answers a command that cannot be carried out; the caller reports
// Reason to whoever sent the command.
type Refuse struct {
	Command CommandKind
	Reason  string
}

func (RunScript) isAction()    {}
func (EnterState) isAction()   {}
func (Log) isAction()          {}
func (SetVIP) isAction()       {}
func (UnsetVIP) isAction()     {}
func (CheckWitness) isAction() {}
func (Refuse) isAction()       {}

// LoopCounter enforces max_loop within loop_interval: actions caused by
// checkers are counted; past the limit the module stops locally.
type LoopCounter struct {
	Max      int
	Interval time.Duration
	times    []time.Time
}

// Allow records an action at now and reports whether it is within the
// limit. When it returns false the caller must stop the module.
func (l *LoopCounter) Allow(now time.Time) bool {
	cut := now.Add(-l.Interval)
	kept := l.times[:0]
	for _, t := range l.times {
		if t.After(cut) {
			kept = append(kept, t)
		}
	}
	l.times = append(kept, now)
	return len(l.times) <= l.Max
}

// Count is the number of actions in the current window.
func (l *LoopCounter) Count() int { return len(l.times) }

// Reset clears the counter (admin commands do this).
func (l *LoopCounter) Reset() { l.times = l.times[:0] }

// ---- Farm vocabulary (core/farm) ----

// NumBuckets is the number of load-balancing buckets of a farm module: new
// flows are spread by a hash of the client address over this many buckets,
// each served by one node.
const NumBuckets = 256

// BucketTable maps each bucket to the node serving it ("" = nobody).
type BucketTable [NumBuckets]string

// MemberUp reports that a farm member joined this node's membership view
// (memberlist NotifyJoin), with what it announces about itself. A member
// that owns the VIP also announces the bucket table it installed, so that
// every node shares the owner's table and a new owner moves only what it
// must.
type MemberUp struct {
	At        time.Time
	Node      string
	State     State
	Readiness Readiness
	Power     int
	Owner     bool         // the member holds the VIP and the balancing rules
	Buckets   *BucketTable // the owner's installed table; nil when not Owner
}

// MemberUpdate reports a change in what a known member announces
// (memberlist NotifyUpdate). Same fields as MemberUp.
type MemberUpdate struct {
	At        time.Time
	Node      string
	State     State
	Readiness Readiness
	Power     int
	Owner     bool
	Buckets   *BucketTable
}

// MemberDown reports that a member left this node's view: dead, partitioned
// away or left (memberlist NotifyLeave).
type MemberDown struct {
	At   time.Time
	Node string
}

func (MemberUp) isEvent()     {}
func (MemberUpdate) isEvent() {}
func (MemberDown) isEvent()   {}

// SetBalancing asks the VIP owner to install (or replace) its load-balancing
// rules: bucket -> serving node. Only the owner receives it.
type SetBalancing struct {
	Owner   string
	Buckets BucketTable
}

// ClearBalancing asks a node that no longer owns the VIP to remove its
// load-balancing rules.
type ClearBalancing struct{}

// Persist asks the caller to store the machine's persistent state durably
// before it executes the actions that follow. Data is the machine's own
// type (for example farm.Persistent); the caller encodes it and gives it
// back to the machine's constructor after a restart.
type Persist struct{ Data any }

func (SetBalancing) isAction()   {}
func (ClearBalancing) isAction() {}
func (Persist) isAction()        {}

// Times returns a copy of the actions recorded in the current window, so
// that a machine can persist them: an agent restart must not reset
// max_loop.
func (l *LoopCounter) Times() []time.Time { return append([]time.Time(nil), l.times...) }

// Restore replaces the recorded actions by times (from Times, after a
// restart).
func (l *LoopCounter) Restore(times []time.Time) { l.times = append(l.times[:0], times...) }

// ---- Extension points (core/mirror) ----

// EventMarker is embedded by events defined in other core packages
// (core/mirror) so that they satisfy Event; isEvent stays unexported so that
// an arbitrary type cannot be passed to Step by mistake.
type EventMarker struct{}

// ActionMarker is embedded by actions defined in other core packages.
type ActionMarker struct{}

func (EventMarker) isEvent()   {}
func (ActionMarker) isAction() {}
