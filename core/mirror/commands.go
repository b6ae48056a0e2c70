package mirror

import (
	"fmt"
	"slices"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/journal"
)

func (m *Machine) onCommand(c core.Command) {
	origin := c.Origin
	if origin == "" {
		origin = "admin"
	}
	refuse := func(format string, args ...any) {
		m.emit(core.Refuse{Command: c.Kind, Reason: fmt.Sprintf(format, args...)})
	}
	busy := func() bool {
		if m.plan == nil {
			return false
		}
		refuse("%s in progress on %s; try again when it ends", m.plan.what, m.cfg.Node)
		return true
	}
	accept := func() {
		m.logf("info", "command %s from %s", c.Kind, origin)
		// The agent's own start at boot is not an administrator's decision:
		// a restart must not reset max_loop.
		if m.loops.Count() > 0 && origin != OriginBoot {
			// An administrator looked at the module: give checkers a fresh
			// max_loop budget.
			m.loops.Reset()
			m.persist(func(p *Persistent) { p.LoopTimes = nil })
		}
	}
	cause := fmt.Sprintf("halo %s (%s)", c.Kind, origin)

	switch c.Kind {
	case core.CmdStart:
		if m.state != core.Stop || m.plan != nil {
			refuse("module already started on %s (%s)", m.cfg.Node, m.state)
			return
		}
		accept()
		m.startModule(cause)

	case core.CmdStop, core.CmdStopStart:
		if m.state == core.Stop && m.plan == nil {
			refuse("module already stopped on %s", m.cfg.Node)
			return
		}
		if m.plan != nil {
			if m.plan.what == "stop" || m.pending != nil {
				refuse("%s in progress on %s", m.plan.what, m.cfg.Node)
				return
			}
			m.pending = &c
			m.logf("info", "%s from %s queued until %s ends", c.Kind, origin, m.plan.what)
			return
		}
		accept()
		adminStop := c.Kind == core.CmdStop && origin != core.OriginShutdown
		m.stopModule(cause, c.Kind.String(), adminStop, false, c.Kind == core.CmdStopStart)

	case core.CmdForceStop:
		if m.state == core.Stop && m.plan == nil {
			refuse("module already stopped on %s", m.cfg.Node)
			return
		}
		accept()
		if m.plan != nil {
			m.logf("warn", "forcestop: abandoning %s; results of its scripts will be ignored", m.plan.what)
			m.plan, m.pending = nil, nil
		}
		m.stopModule(cause, "forcestop", true, true, false)

	case core.CmdRestart:
		if !m.state.Serving() && m.state != core.Second {
			refuse("restart needs the application running; %s is %s", m.cfg.Node, m.state)
			return
		}
		if busy() {
			return
		}
		accept()
		m.restartApp(cause)

	case core.CmdSwap:
		switch {
		case m.plan != nil:
			busy()
		case m.canSwap():
			accept()
			m.swap(cause + ": stopping the application")
		case m.state == core.Second && m.ready == core.Ready && m.peerAlive && m.peer.State == core.Prim && m.peer.Readiness == core.Ready:
			accept()
			m.logf("info", "swap requested from %s", m.cfg.Peer)
			m.sendPeer(MsgSwapRequest)
		default:
			refuse("swap needs PRIM and SECOND in sync: %s is %s/%s, %s is %s", m.cfg.Node, m.state, m.ready, m.cfg.Peer, m.peerText())
		}

	case core.CmdPrim, core.CmdPrimForce:
		m.cmdPrim(c, cause, refuse, busy, accept)

	case core.CmdSecond:
		switch {
		case m.state == core.Stop:
			refuse("module stopped on %s: run halo start first", m.cfg.Node)
		case m.state == core.Second:
			refuse("%s is already SECOND", m.cfg.Node)
		case m.state.Serving():
			refuse("%s serves: use halo swap to hand over to a SECOND in sync, or halo stop", m.cfg.Node)
		case busy():
		default:
			accept()
			m.yield, m.yieldFull, m.yieldAuto = true, c.FullSync, false
			m.yieldWhy = fmt.Sprintf("halo second was run on %s", m.cfg.Node)
			m.logf("info", "%s yields: it becomes SECOND of %s as soon as %s serves", m.cfg.Node, m.cfg.Peer, m.cfg.Peer)
		}

	case core.CmdFailoverOn:
		if !m.cfg.Failover {
			refuse("failover = false in the module file")
			return
		}
		accept()
		m.persist(func(p *Persistent) { p.FailoverOff = false })
	case core.CmdFailoverOff:
		accept()
		m.persist(func(p *Persistent) { p.FailoverOff = true })

	case core.CmdCheckerOn, core.CmdCheckerOff:
		name := c.Checker
		if name == "" {
			name = "*"
		} else if m.checker(name) == nil {
			refuse("no checker named %q in this module", name)
			return
		}
		accept()
		m.persist(func(p *Persistent) {
			if c.Kind == core.CmdCheckerOff {
				p.CheckersOff = addName(p.CheckersOff, name)
			} else if name == "*" {
				p.CheckersOff = nil
			} else {
				p.CheckersOff = slices.DeleteFunc(p.CheckersOff, func(s string) bool { return s == name })
			}
		})
		m.rearm()

	case core.CmdErrdOn, core.CmdErrdOff:
		accept()
		m.persist(func(p *Persistent) {
			if c.Kind == core.CmdErrdOff {
				p.TypesOff = addName(p.TypesOff, "errd")
			} else {
				p.TypesOff = slices.DeleteFunc(p.TypesOff, func(s string) bool { return s == "errd" })
			}
		})
		m.rearm()

	default:
		refuse("command %s does not apply to a mirror module", c.Kind)
	}
}

func addName(list []string, name string) []string {
	if slices.Contains(list, name) {
		return list
	}
	return append(slices.Clone(list), name)
}

// rearm lets checkers that are down act again once resumed.
func (m *Machine) rearm() {
	for _, c := range m.checkers {
		c.armed = true
	}
}

func (m *Machine) peerText() string {
	if !m.peerAlive {
		return "not visible"
	}
	return fmt.Sprintf("%s/%s", m.peer.State, m.peer.Readiness)
}

func (m *Machine) cmdPrim(c core.Command, cause string, refuse func(string, ...any), busy func() bool, accept func()) {
	force := c.Kind == core.CmdPrimForce
	switch {
	case m.state == core.Stop:
		refuse("module stopped on %s: run halo start first", m.cfg.Node)
		return
	case m.state.Serving():
		refuse("%s is already %s", m.cfg.Node, m.state)
		return
	case busy():
		return
	case m.peerAlive && m.peer.State.Serving():
		refuse("%s is %s and serves: use halo swap, or stop it first", m.cfg.Peer, m.peer.State)
		return
	case m.peerAlive && m.peer.Candidate != 0 && m.voted == m.peer.Candidate && m.votedFor == m.cfg.Peer:
		refuse("%s is about to serve (%s voted for it): wait for it, or stop it first", m.cfg.Peer, m.cfg.Node)
		return
	}
	if !force {
		if m.p.Inconsistent {
			refuse("data on %s is inconsistent: a resync from %s was interrupted; halo primforce serves it anyway and forces a full resync of %s later", m.cfg.Node, m.cfg.Peer, m.cfg.Peer)
			return
		}
		if m.peerAlive && journal.Compare(m.peer.Gen, m.p.Gen) == journal.ANewer && !m.peer.Inconsistent {
			refuse("%s has newer data (generation %v descends from %v): run halo prim on %s, or halo primforce here to discard its changes (they are quarantined)", m.cfg.Peer, m.peer.Gen, m.p.Gen, m.cfg.Peer)
			return
		}
	}
	if ch := m.forbidder(core.Alone); ch != nil {
		refuse("%s", m.checkerReason(ch))
		return
	}
	if why, _ := m.replBlocker(); why != "" {
		if !m.replReported {
			// The replication layer reports moments after the agent
			// starts: the command waits for it (settle runs it again)
			// rather than fail.
			m.heldPrim = &c
			m.logf("info", "%s held until the replication layer of %s has checked its directories", c.Kind, m.cfg.Node)
			return
		}
		// Even primforce: the application would run on directories that
		// are not captured (or not the data disk), unjournaled.
		refuse("%s", why)
		return
	}
	accept()
	m.witness = witnessState{}
	m.yield = false
	basis := BasisAdmin
	if force || c.FullSync {
		if force {
			basis = BasisForced
			m.logf("warn", "primforce: %s serves its data as it is; %s will take a full resync from it", m.cfg.Node, m.cfg.Peer)
		}
		m.persist(func(p *Persistent) {
			// A forced generation must differ from anything the peer holds.
			p.Forced, p.Inconsistent, p.Outdated, p.ResyncFull, p.Shared = true, false, false, false, true
		})
	}
	m.goAlone(cause, c.Kind.String(), basis, func() bool { return !m.peerAlive || !m.peer.State.Serving() })
}
