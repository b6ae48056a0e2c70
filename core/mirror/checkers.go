package mirror

import (
	"fmt"
	"slices"

	"github.com/halo-ha/halo/core"
)

func (m *Machine) checker(name string) *checker {
	for _, c := range m.checkers {
		if c.spec.Name == name {
			return c
		}
	}
	return nil
}

func (m *Machine) onCheckerResult(e core.CheckerResult) {
	c := m.checker(e.Name)
	if c == nil {
		m.logf("warn", "result of unknown checker %q ignored", e.Name)
		return
	}
	if c.status != e.Status {
		text := fmt.Sprintf("checker %s: %s -> %s", c.spec.Name, c.status, e.Status)
		if e.Message != "" {
			text += ": " + e.Message
		}
		m.logf("info", "%s", text)
	}
	c.status, c.msg = e.Status, e.Message
	// Only a check of a settled state the checker watches arms it; one
	// made during a plan, before the last plan or state change ended, or
	// in another state disarms it: a `prim` checker that saw no
	// application while this node was SECOND, or while start_prim ran,
	// must not restart the application the moment it is up.
	c.armed = m.plan == nil && applies(c.spec.When, m.state) &&
		!e.At.Before(m.since) && !e.At.Before(m.settled)
}

// applies tells whether a checker limited by w watches a node in state s.
func applies(w core.When, s core.State) bool {
	switch w {
	case core.WhenBoth:
		return s == core.Alone || s == core.Prim || s == core.Second
	case core.WhenPrim:
		return s == core.Alone || s == core.Prim
	case core.WhenSecond:
		return s == core.Second
	}
	return false
}

// suspended tells whether a checker's actions are suspended by an admin
// switch, and which.
func (m *Machine) suspended(c *checker) (bool, string) {
	switch {
	case slices.Contains(m.p.CheckersOff, "*"):
		return true, "checker off"
	case slices.Contains(m.p.CheckersOff, c.spec.Name):
		return true, "checker " + c.spec.Name + " off"
	case c.spec.Type != "" && slices.Contains(m.p.TypesOff, c.spec.Type):
		return true, c.spec.Type + " off"
	}
	return false, ""
}

// forbidder returns a down checker that forbids entering target (Alone for
// both serving states, or Second): a `pre` checker gates every start, a
// `wait` checker forbids the states it watches.
func (m *Machine) forbidder(target core.State) *checker {
	for _, c := range m.checkers {
		if c.status != core.CheckDown {
			continue
		}
		if off, _ := m.suspended(c); off {
			continue
		}
		if c.spec.When == core.WhenPre || (c.spec.Action == core.ActWait && applies(c.spec.When, target)) {
			return c
		}
	}
	return nil
}

func (m *Machine) checkerReason(c *checker) string {
	if c.msg != "" {
		return fmt.Sprintf("checker %s down (%s)", c.spec.Name, c.msg)
	}
	return fmt.Sprintf("checker %s down", c.spec.Name)
}

// checkerAction starts the action of the first down checker that watches the
// current state. Each action counts toward max_loop; past it the module
// stops here.
func (m *Machine) checkerAction() bool {
	if m.state == core.Stop || m.state == core.Wait {
		return false
	}
	for _, c := range m.checkers {
		act := c.spec.Action
		if c.status != core.CheckDown || c.spec.When == core.WhenPre || !applies(c.spec.When, m.state) {
			continue
		}
		if off, _ := m.suspended(c); off {
			continue
		}
		// wait is a level: it holds while the checker is down. The others
		// fire once per fresh down report.
		if act != core.ActWait && !c.armed {
			continue
		}
		reason := m.checkerReason(c)
		isFailover := act == core.ActSwap || (m.state == core.Prim && (act == core.ActStopStart || act == core.ActWait))
		if isFailover && m.failoverOff() {
			if c.armed {
				c.armed = false
				m.logf("warn", "%s: action %s suspended (failover off)", reason, act)
			}
			continue
		}
		if act == core.ActSwap && !m.canSwap() {
			if c.armed {
				c.armed = false
				m.logf("warn", "%s: cannot swap (%s is %s/%s, %s is %s); no action", reason,
					m.cfg.Node, m.state, m.ready, m.cfg.Peer, m.peerText())
			}
			continue
		}
		c.armed = false
		allowed := m.loops.Allow(m.now)
		m.persist(func(p *Persistent) { p.LoopTimes = m.loops.Times() })
		if !allowed {
			m.stopModule(fmt.Sprintf("%s: %d actions within %v exceed max_loop %d; module stopped on %s: fix the cause and run halo start",
				reason, m.loops.Count(), m.cfg.LoopInterval, m.cfg.MaxLoop, m.cfg.Node), "maxloop", true, false, false)
			return true
		}
		switch act {
		case core.ActRestart:
			m.restartApp(reason + ": restarting the application")
		case core.ActStopStart:
			m.stopModule(reason+": stopping and starting the module here", "stopstart", false, false, true)
		case core.ActStop:
			m.stopModule(reason+": module stopped here; run halo start when it is fixed", "stop", true, false, false)
		case core.ActWait:
			m.toWait(reason+": holding in WAIT until it is up", false)
		case core.ActSwap:
			m.swap(reason + ": swapping roles")
		}
		return true
	}
	return false
}
