package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/halo-ha/halo/internal/agent/sched"
)

// heartbeatSink sends one heartbeat payload on every network
// (*heartbeat.Endpoint).
type heartbeatSink interface {
	Send(payload []byte) error
}

// heartbeatPacer sends a mirror module's status to its peer every pulse
// from its own goroutine, locked to its own thread (real-time when the
// agent is), so that a slow step of the event loop (an fsync, a plugin
// call, a burst of events) never delays the heartbeats: a node whose loop
// is busy is alive, and its peer must not take over. The event loop
// publishes the machine's status after every step and sends it at once
// when it changed.
//
// A status must not outlive a pause of this process (SIGSTOP, a paused
// VM): the node may have been taken over meanwhile, and telling the peer
// what it claimed before would contradict it. The loop sees a pause as a
// gap in its ticks, the pacer as a gap in its own wake-ups; after one, the
// pacer sends nothing until the loop has published a status computed
// since, by a machine that has seen the time after the pause.
type heartbeatPacer struct {
	sink  heartbeatSink
	pulse time.Duration
	// pauseAfter: a longer gap between two wake-ups is a pause of this
	// process (the machine's own threshold: half the heartbeat timeout).
	pauseAfter time.Duration
	rt         *sched.RealtimeThreads
	// warn reports heartbeats sent late, at most every warnEvery.
	warn func(string)

	mu          sync.Mutex
	payload     []byte
	publishedAt time.Time
	resumedAt   time.Time
	lastSent    time.Time
	maxGap      time.Duration
	lastWarn    time.Time
	lateSince   int // late sends since the last warning
}

// warnEvery rate-limits the warnings about late heartbeats.
const warnEvery = time.Minute

func newHeartbeatPacer(sink heartbeatSink, pulse, timeout time.Duration, rt *sched.RealtimeThreads, warn func(string)) *heartbeatPacer {
	return &heartbeatPacer{sink: sink, pulse: pulse, pauseAfter: timeout / 2, rt: rt, warn: warn}
}

// publish records the status the machine computed at at; sendNow sends it
// at once (it changed).
func (p *heartbeatPacer) publish(payload []byte, at time.Time, sendNow bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.payload, p.publishedAt = payload, at
	if sendNow {
		p.sendLocked(at)
	}
}

// run sends the latest status every pulse until ctx ends.
func (p *heartbeatPacer) run(ctx context.Context) {
	// The thread ends with the goroutine: LockThread is never undone.
	if err := p.rt.LockThread(); err != nil {
		p.warn(fmt.Sprintf("heartbeat thread left at normal priority: %v", err))
	}
	t := time.NewTicker(p.pulse)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		p.beat(now, now.Sub(last))
		last = now
	}
}

// beat is one wake-up of the pacer, slept since the previous one.
func (p *heartbeatPacer) beat(now time.Time, slept time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slept > p.pauseAfter {
		p.resumedAt = now
	}
	p.sendCurrentLocked(now)
}

// sendCurrent sends the latest status now, unless it predates a pause.
func (p *heartbeatPacer) sendCurrent(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sendCurrentLocked(now)
}

func (p *heartbeatPacer) sendCurrentLocked(now time.Time) {
	if p.payload == nil || p.publishedAt.Before(p.resumedAt) {
		return
	}
	p.sendLocked(now)
}

func (p *heartbeatPacer) sendLocked(now time.Time) {
	if !p.lastSent.IsZero() {
		gap := now.Sub(p.lastSent)
		p.maxGap = max(p.maxGap, gap)
		if gap > 2*p.pulse {
			p.lateSince++
			if now.Sub(p.lastWarn) >= warnEvery {
				p.warn(fmt.Sprintf("heartbeats sent late: %v between two (pulse %v), %d such gaps since the last warning: this node did not run on time",
					gap.Round(time.Millisecond), p.pulse, p.lateSince))
				p.lastWarn, p.lateSince = now, 0
			}
		}
	}
	p.lastSent = now
	// Failures are counted and logged (rate-limited) by the endpoint; a
	// network that fails does not stop the others.
	_ = p.sink.Send(p.payload)
}

// longestGap is the longest time between two heartbeats sent since start.
func (p *heartbeatPacer) longestGap() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxGap
}
