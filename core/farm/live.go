package farm

import (
	"time"

	"github.com/halo-ha/halo/core"
)

// Live is the part of a farm's (or light module's) configuration that may
// change while the module runs (`halo reload`).
type Live struct {
	MaxLoop      int
	LoopInterval time.Duration
	// Checkers carries each checker's new action and scope, by name; the
	// set of checkers cannot change live.
	Checkers []core.CheckerSpec
}

// SetLive applies a new live configuration; the caller steps the machine
// from the same goroutine. Actions already counted toward max_loop keep
// counting.
func (m *Machine) SetLive(l Live) {
	m.cfg.MaxLoop, m.cfg.LoopInterval = l.MaxLoop, l.LoopInterval
	if m.cfg.MaxLoop <= 0 {
		m.cfg.MaxLoop = DefaultMaxLoop
	}
	if m.cfg.LoopInterval <= 0 {
		m.cfg.LoopInterval = DefaultLoopInterval
	}
	m.loop.Max, m.loop.Interval = m.cfg.MaxLoop, m.cfg.LoopInterval
	for _, spec := range l.Checkers {
		for _, c := range m.checkers {
			if c.spec.Name == spec.Name {
				c.spec.Action, c.spec.When = spec.Action, spec.When
			}
		}
		for i := range m.cfg.Checkers {
			if m.cfg.Checkers[i].Name == spec.Name {
				m.cfg.Checkers[i].Action, m.cfg.Checkers[i].When = spec.Action, spec.When
			}
		}
	}
}
