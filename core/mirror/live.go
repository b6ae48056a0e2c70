package mirror

import (
	"time"

	"github.com/halo-ha/halo/core"
)

// Live is the part of a mirror's configuration that may change while the
// module runs (`halo reload`): none of it changes what the node is, only
// how it reacts from now on.
type Live struct {
	Failover     bool
	MaxLoop      int
	LoopInterval time.Duration
	// Checkers carries each checker's new action and scope, by name; the
	// set of checkers cannot change live.
	Checkers []core.CheckerSpec
}

// SetLive applies a new live configuration. The caller steps the machine
// from the same goroutine, so the next event sees the new values; the
// actions already counted toward max_loop keep counting.
func (m *Machine) SetLive(l Live) {
	m.cfg.Failover = l.Failover
	m.cfg.MaxLoop, m.cfg.LoopInterval = l.MaxLoop, l.LoopInterval
	m.cfg.applyDefaults()
	m.loops.Max, m.loops.Interval = m.cfg.MaxLoop, m.cfg.LoopInterval
	for _, spec := range l.Checkers {
		if c := m.checker(spec.Name); c != nil {
			c.spec.Action, c.spec.When = spec.Action, spec.When
		}
	}
	for i := range m.cfg.Checkers {
		for _, spec := range l.Checkers {
			if m.cfg.Checkers[i].Name == spec.Name {
				m.cfg.Checkers[i].Action, m.cfg.Checkers[i].When = spec.Action, spec.When
			}
		}
	}
}
