package farm

import (
	"fmt"
	"maps"
	"slices"

	"github.com/halo-ha/halo/core"
)

// Owner election, from this node's membership view (itself included):
//
//  1. An incumbent keeps the VIP: among the UP members that announce they
//     own it, the lowest name wins. A lower-named node that joins, or an
//     owner that is briefly not Ready (UP Transient while a checker restarts
//     its application), does not move the VIP: moving it costs a gap in
//     service for no gain, and would flap with every restart.
//  2. With no incumbent, the lowest-named UP Ready member takes it. Ready,
//     because a node still running its start script may fail it.
//
// Both rules read only what every member announces, so nodes with the same
// view agree. With different views (lag, partition) two nodes may both
// claim; as soon as each sees the other's claim, rule 1 keeps the lower
// name and the other releases. A node leaving UP releases at once.

func (m *Machine) onMember(node string, mem member, joined bool) {
	if m.cfg.Light || node == m.cfg.Node {
		// A light module has no membership; our own entry is our state.
		return
	}
	if len(m.cfg.Nodes) > 0 && !slices.Contains(m.cfg.Nodes, node) {
		m.log("warn", fmt.Sprintf("member %s is not a node of this module: ignored", node))
		return
	}
	if mem.buckets != nil {
		t := *mem.buckets // the event may be shared: keep our own copy
		mem.buckets = &t
	}
	_, known := m.members[node]
	m.members[node] = mem
	if joined && !known {
		m.log("info", fmt.Sprintf("member %s joined (%s %s)", node, mem.state, mem.ready))
	}
}

func (m *Machine) onMemberDown(node string) {
	if _, ok := m.members[node]; !ok {
		return
	}
	delete(m.members, node)
	m.log("info", fmt.Sprintf("member %s left", node))
}

// electedOwner returns the node that should hold the VIP in this node's
// view, and why; "" when no node can.
func (m *Machine) electedOwner() (string, string) {
	self := m.cfg.Node
	best := ""
	if m.holdsVIP && m.state == core.Up {
		best = self
	}
	for name, mem := range m.members {
		if mem.owner && mem.state == core.Up && (best == "" || name < best) {
			best = name
		}
	}
	if best != "" {
		return best, "the lowest-named UP node holding the VIP keeps it"
	}
	if m.state == core.Up && m.ready == core.Ready {
		best = self
	}
	for name, mem := range m.members {
		if mem.state == core.Up && mem.ready == core.Ready && (best == "" || name < best) {
			best = name
		}
	}
	return best, "no UP node holds the VIP: the lowest-named UP Ready node takes it"
}

// serving returns the nodes that get buckets: UP Ready, with their power.
func (m *Machine) serving() map[string]int {
	s := make(map[string]int)
	if m.state == core.Up && m.ready == core.Ready {
		s[m.cfg.Node] = m.cfg.power(m.cfg.Node)
	}
	for name, mem := range m.members {
		if mem.state == core.Up && mem.ready == core.Ready {
			p := mem.power
			if p <= 0 {
				p = m.cfg.power(name)
			}
			s[name] = p
		}
	}
	return s
}

// reconcileOwnership takes or releases the VIP as the election says, keeps
// the owner's rules in line with the serving nodes, and lets a follower
// adopt the owner's table.
func (m *Machine) reconcileOwnership() {
	if m.cfg.Light {
		return
	}
	self := m.cfg.Node
	owner, why := m.electedOwner()
	switch {
	case owner == self && !m.holdsVIP:
		m.holdsVIP = true
		m.allocatedFor = m.serving()
		m.setTable(Allocate(m.table, m.allocatedFor))
		m.log("info", "taking the VIP and the balancing rules: "+why)
		// Rules first: a flow that reaches the VIP must find its bucket.
		m.emit(core.SetBalancing{Owner: self, Buckets: m.table})
		m.emit(core.SetVIP{})
		return
	case owner != self && m.holdsVIP:
		m.holdsVIP = false
		m.emit(core.UnsetVIP{})
		m.emit(core.ClearBalancing{})
		switch {
		case m.state != core.Up && owner == "":
			m.log("info", fmt.Sprintf("released the VIP: this node is %s; no other node is UP Ready to take it", m.state))
		case m.state != core.Up:
			m.log("info", fmt.Sprintf("released the VIP: this node is %s; %s takes over (%s)", m.state, owner, why))
		default:
			m.log("info", fmt.Sprintf("released the VIP: %s holds it too and keeps it (%s)", owner, why))
		}
	}
	if m.holdsVIP {
		// Allocate is a fixed point for an unchanged serving set: skip it.
		if serving := m.serving(); !maps.Equal(serving, m.allocatedFor) {
			m.allocatedFor = serving
			if next := Allocate(m.table, serving); next != m.table {
				m.setTable(next)
				m.emit(core.SetBalancing{Owner: self, Buckets: m.table})
			}
		}
		return
	}
	if mem, ok := m.members[owner]; ok && mem.owner && mem.buckets != nil {
		m.setTable(*mem.buckets)
	}
}

func (m *Machine) setTable(t core.BucketTable) {
	if t != m.table {
		m.table = t
		m.announced = nil
	}
}

// Status is a snapshot of the machine for `halo status`, the console, the
// health endpoint and the member announcement.
type Status struct {
	Node         string
	Light        bool
	State        core.State
	Readiness    core.Readiness
	Cause        string
	Power        int
	Balance      string
	Owner        string           // VIP owner in this node's view; "" if none
	HoldsVIP     bool             // this node holds the VIP and the rules
	Buckets      core.BucketTable // the owner's table as this node knows it; empty when no owner announced one
	Members      []MemberStatus   // the other nodes in this node's view, by name
	Checkers     []CheckerStatus  // in configuration order
	LoopCount    int              // checker actions in the current window
	MaxLoop      int
	LoopInterval string
	Running      string // script running now ("" when idle)
	Queued       string // admin command waiting for the running script
	Persistent   Persistent
}

// MemberStatus is one other node as this node sees it.
type MemberStatus struct {
	Node      string
	State     core.State
	Readiness core.Readiness
	Power     int
	Owner     bool
}

// CheckerStatus is one checker's last result and switch.
type CheckerStatus struct {
	Name      string
	Type      string
	Action    core.CheckAction
	When      core.When
	Status    core.CheckStatus
	Message   string
	Suspended bool
}

// Status returns a snapshot; it never changes the machine.
func (m *Machine) Status() Status {
	s := Status{
		Node:         m.cfg.Node,
		Light:        m.cfg.Light,
		State:        m.state,
		Readiness:    m.ready,
		Cause:        m.cause,
		Power:        m.cfg.power(m.cfg.Node),
		Balance:      m.cfg.Balance,
		HoldsVIP:     m.holdsVIP,
		LoopCount:    m.loop.Count(),
		MaxLoop:      m.cfg.MaxLoop,
		LoopInterval: m.cfg.LoopInterval.String(),
		Persistent:   m.p.clone(),
	}
	s.Persistent.LastState, s.Persistent.LastCause = m.state, m.cause
	s.Persistent.LoopTimes = m.loop.Times()
	if !m.cfg.Light {
		s.Owner, _ = m.electedOwner()
		if mem, ok := m.members[s.Owner]; m.holdsVIP || (ok && mem.owner && mem.buckets != nil) {
			s.Buckets = m.table
		}
	}
	for name, mem := range m.members {
		s.Members = append(s.Members, MemberStatus{name, mem.state, mem.ready, mem.power, mem.owner})
	}
	slices.SortFunc(s.Members, func(a, b MemberStatus) int {
		if a.Node < b.Node {
			return -1
		}
		if a.Node > b.Node {
			return 1
		}
		return 0
	})
	for _, c := range m.checkers {
		s.Checkers = append(s.Checkers, CheckerStatus{c.spec.Name, c.spec.Type, c.spec.Action,
			c.spec.When, c.status, c.message, m.suspended(c)})
	}
	if m.op != nil {
		s.Running = m.op.steps[m.op.i].script
	}
	if m.pending != nil {
		s.Queued = m.pending.Kind.String()
	}
	return s
}

// Announce is what this node tells the other members about itself (the
// agent puts it in its memberlist metadata): state, readiness, power, and,
// when it owns the VIP, the table it installed. Cheaper than Status: the
// table is shared between calls until it changes, and must not be modified.
func (m *Machine) Announce() core.MemberUpdate {
	u := core.MemberUpdate{Node: m.cfg.Node, State: m.state, Readiness: m.ready,
		Power: m.cfg.power(m.cfg.Node), Owner: m.holdsVIP}
	if m.holdsVIP {
		if m.announced == nil {
			t := m.table
			m.announced = &t
		}
		u.Buckets = m.announced
	}
	return u
}
