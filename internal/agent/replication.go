package agent

import (
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/mirror"
)

// Replication is a mirror module's file replication layer, driven by the
// machine's replication actions. The agent calls it from the module's event
// loop: no method may block on the network or the disk for long. Results
// (mirror.ReplInSync, ReplStalled, ResyncProgress, ResyncDone,
// ResyncFailed) go back through the post function it was built with,
// which never blocks and may be called from any goroutine, the event loop
// included.
//
// Modules with replicated directories are served by a replication daemon
// per module (daemonReplication); modules that replicate nothing need no
// daemon, and a build without the halo executable (the agent's own
// tests) says replication is not available.
type Replication interface {
	// Start takes a role (source or target) towards peer.
	Start(role mirror.ReplRole, peer string)
	// Stop leaves the current role; a source goes on journaling.
	Stop()
	// Resync brings this node's files to the source's, then keeps them in
	// sync; it answers with ResyncDone or ResyncFailed carrying a.ID.
	Resync(a mirror.StartResync)
}

// errNoReplication is why a module with replicated directories cannot
// resync in this build: pretending a resync succeeded would let a SECOND
// believe stale files are current.
const errNoReplication = "file replication is not available in this build"

// newReplication returns the replication layer of a mirror module.
func newReplication(r *moduleRunner) Replication {
	if r.mod.Replication != nil {
		if DaemonExecutable == "" {
			return unavailableReplication{r.events, r.posted.post}
		}
		// The module file is <config>/modules/<name>/module.hcl: the
		// daemon loads the same configuration directory.
		return newDaemonReplication(r, filepath.Dir(r.stateDir), filepath.Dir(filepath.Dir(r.mod.Dir)))
	}
	return filelessReplication{r.mod.Name, r.events, r.logger, r.posted.post}
}

// filelessReplication serves a module that replicates no files: there is
// nothing to copy, so a resync is done at once.
type filelessReplication struct {
	module string
	events *eventLog
	logger hclog.Logger
	post   func(core.Event)
}

func (f filelessReplication) Start(role mirror.ReplRole, peer string) {
	f.logger.Debug("replication role: no replicated directories, nothing to do", "role", role, "peer", peer)
}

func (f filelessReplication) Stop() {
	f.logger.Debug("replication stop: no replicated directories, nothing to do")
}

func (f filelessReplication) Resync(a mirror.StartResync) {
	f.events.add("log", "info", fmt.Sprintf("resync from %s: nothing to copy (module %s replicates no files)", a.Peer, f.module))
	f.post(mirror.ResyncDone{At: time.Now(), ID: a.ID})
}

// unavailableReplication serves a module with replicated directories in a
// build without file replication: it says so, and every resync fails.
type unavailableReplication struct {
	events *eventLog
	post   func(core.Event)
}

func (u unavailableReplication) Start(role mirror.ReplRole, peer string) {
	u.events.add("log", "error", fmt.Sprintf("%s: cannot replicate as %s with %s", errNoReplication, role, peer))
}

func (u unavailableReplication) Stop() {}

func (u unavailableReplication) Resync(a mirror.StartResync) {
	u.events.add("log", "error", fmt.Sprintf("resync from %s cannot run: %s", a.Peer, errNoReplication))
	u.post(mirror.ResyncFailed{At: time.Now(), ID: a.ID, Reason: errNoReplication})
}

// eventQueue takes events for the event loop without ever blocking the
// poster, which may be the event loop itself answering an action at once
// (the machine cannot be re-entered, so the answer waits for the step to
// end). The loop drains it after every step and when notified.
type eventQueue struct {
	notify chan struct{}
	mu     sync.Mutex
	evs    []core.Event
}

func newEventQueue() *eventQueue { return &eventQueue{notify: make(chan struct{}, 1)} }

func (q *eventQueue) post(ev core.Event) {
	q.mu.Lock()
	q.evs = append(q.evs, ev)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// take returns the queued events, oldest first, and empties the queue.
func (q *eventQueue) take() []core.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.evs
	q.evs = nil
	return evs
}
