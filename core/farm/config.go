// Package farm is the pure state machine of a farm module (SPEC §3) and of
// a light module (a farm of one node without membership: checkers and local
// restart only).
//
// Every node of a farm runs the application (start_both/stop_both) and is
// STOP, WAIT or UP, each NotReady, Transient (scripts running) or Ready.
// One UP node, elected from the membership view, owns the VIP and installs
// the load-balancing rules (bucket -> serving node); the others serve the
// flows it forwards to them.
//
// The machine does no I/O: the caller feeds events (ticks, member up/update/
// down from memberlist, checker results, admin commands, script
// completions) and executes the returned actions in order.
package farm

import (
	"fmt"
	"slices"
	"time"

	"github.com/halo-ha/halo/core"
)

// Defaults (SPEC §2.3).
const (
	DefaultMaxLoop      = 3
	DefaultLoopInterval = 24 * time.Hour
	DefaultBalance      = BalanceClientIP
)

// Balance criteria: what the owner hashes to pick a bucket.
const (
	BalanceClientIP     = "client_ip"
	BalanceClientIPPort = "client_ip_port"
)

// Script names run by a farm (SPEC §2.4).
const (
	ScriptStart = "start_both"
	ScriptStop  = "stop_both"
)

// Config is the part of a farm module's configuration the machine reasons
// about.
type Config struct {
	Node         string         // this node
	Nodes        []string       // every node of the module, this one included
	Power        map[string]int // relative share of new flows; missing or <= 0 means 1
	MaxLoop      int            // checker actions allowed within LoopInterval; 0 means DefaultMaxLoop
	LoopInterval time.Duration  // 0 means DefaultLoopInterval
	Checkers     []core.CheckerSpec
	Balance      string // BalanceClientIP (default) or BalanceClientIPPort; carried to Status for the rules
	// Light makes this a light module: one node, no membership, no VIP, no
	// balancing; checkers and local restart only. A farm configured with a
	// single node stays a farm (it owns its VIP and balances to itself), so
	// nodes can join it later without changing the module's kind.
	Light bool
}

// Persistent is what the machine needs to survive an agent restart. The
// machine emits core.Persist{Data: Persistent} whenever it changes, before
// the actions that depend on it; the caller stores it and passes it back
// to New.
type Persistent struct {
	// Started: the module should run on this node. Set by start, cleared by
	// stop, forcestop, a checker's stop action, max_loop and a failed start,
	// so that a module stopped for a reason stays stopped after a reboot.
	Started   bool
	LastState core.State
	LastCause string

	// Checker switches (halo checker|errd on|off), SPEC §2.3.
	AllCheckersOff bool
	CheckersOff    []string // sorted names suspended one by one
	ErrdOff        bool     // suspends every checker of type errd

	// LoopTimes are the checker actions counted in the current max_loop
	// window: an agent restart must not reset max_loop.
	LoopTimes []time.Time
}

func (p Persistent) clone() Persistent {
	p.CheckersOff = slices.Clone(p.CheckersOff)
	p.LoopTimes = slices.Clone(p.LoopTimes)
	return p
}

func (p Persistent) equal(q Persistent) bool {
	return p.Started == q.Started && p.LastState == q.LastState && p.LastCause == q.LastCause &&
		p.AllCheckersOff == q.AllCheckersOff && p.ErrdOff == q.ErrdOff &&
		slices.Equal(p.CheckersOff, q.CheckersOff) &&
		slices.EqualFunc(p.LoopTimes, q.LoopTimes, time.Time.Equal)
}

// normalize fills defaults and returns the warnings the configuration
// deserves; they are logged on the machine's first step.
func (c *Config) normalize() []string {
	var warns []string
	if c.MaxLoop <= 0 {
		c.MaxLoop = DefaultMaxLoop
	}
	if c.LoopInterval <= 0 {
		c.LoopInterval = DefaultLoopInterval
	}
	switch c.Balance {
	case "":
		c.Balance = DefaultBalance
	case BalanceClientIP, BalanceClientIPPort:
	default:
		warns = append(warns, fmt.Sprintf("balance %q is unknown (want %s or %s): using %s",
			c.Balance, BalanceClientIP, BalanceClientIPPort, DefaultBalance))
		c.Balance = DefaultBalance
	}
	if c.Light && len(c.Nodes) > 1 {
		warns = append(warns, fmt.Sprintf("light module lists %d nodes: each node runs on its own, without membership or VIP", len(c.Nodes)))
	}
	if len(c.Nodes) > 0 && !slices.Contains(c.Nodes, c.Node) {
		warns = append(warns, fmt.Sprintf("this node %q is not among the module's nodes %v", c.Node, c.Nodes))
	}
	seen := make(map[string]bool)
	kept := c.Checkers[:0:0]
	for _, ck := range c.Checkers {
		if seen[ck.Name] {
			warns = append(warns, fmt.Sprintf("checker %s is declared twice: the second declaration is ignored", ck.Name))
			continue
		}
		seen[ck.Name] = true
		// A farm has no primary and no secondary. "prim" is documented in
		// core.When as "UP on a farm", so it means both; "second" can never
		// hold, so the checker would silently do nothing: say so.
		if ck.When == core.WhenSecond {
			warns = append(warns, fmt.Sprintf("checker %s: when = second never applies to a farm (no SECOND state): the checker is ignored", ck.Name))
		}
		// Swapping roles needs a peer to take them; on a farm the nearest
		// meaning is "stop serving here and start again", and the other UP
		// nodes take this node's flows meanwhile.
		if ck.Action == core.ActSwap {
			warns = append(warns, fmt.Sprintf("checker %s: action swap does not apply to a farm: treated as stopstart", ck.Name))
		}
		kept = append(kept, ck)
	}
	c.Checkers = kept
	return warns
}

func (c *Config) power(node string) int {
	if p := c.Power[node]; p > 0 {
		return p
	}
	return 1
}
