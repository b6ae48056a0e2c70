package agent

import (
	"fmt"
	"time"
)

// schedulingResource shows how the agent is scheduled and how late it
// ran: the longest gap between two ticks of the module's event loop and,
// for a mirror module, between two heartbeats sent. A node that runs late
// risks false failovers (its peer misses its heartbeats); this says so
// before it happens.
const schedulingResource = "scheduling"

// schedulingEvery paces the refresh of the scheduling resource.
const schedulingEvery = time.Second

func (a *Agent) schedulingText() string {
	if a.opts.Realtime != nil {
		return a.opts.Realtime.String()
	}
	if a.opts.SchedulingNote != "" {
		return "SCHED_OTHER (normal priority): " + a.opts.SchedulingNote
	}
	return "SCHED_OTHER (normal priority)"
}

// loopLag measures the gaps between the ticks the event loop handles.
// Only the event loop uses it.
type loopLag struct {
	last, shown time.Time
	max         time.Duration
}

func (l *loopLag) tick(now time.Time) {
	if !l.last.IsZero() {
		l.max = max(l.max, now.Sub(l.last))
	}
	l.last = now
}

// refreshScheduling updates the scheduling resource, at most every
// schedulingEvery.
func (r *moduleRunner) refreshScheduling(now time.Time) {
	if now.Sub(r.lag.shown) < schedulingEvery {
		return
	}
	r.lag.shown = now
	value := "normal"
	if r.realtime {
		value = "realtime"
	}
	msg := fmt.Sprintf("%s; longest gap since start between ticks %v (every %v)", r.schedText, r.lag.max.Round(time.Millisecond), r.tickEvery)
	if mi := r.mirror; mi != nil {
		msg += fmt.Sprintf(", between heartbeats sent %v (pulse %v)", mi.pacer.longestGap().Round(time.Millisecond), mi.pulse)
	}
	r.putResource(schedulingResource, value, msg)
}
