package farm

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/halo-ha/halo/core"
)

// TestTranscripts runs testdata/*.txt: each file drives one or more farm
// machines through a harness with an in-memory membership (every node in the
// same partition sees the others' announcements at once) and a manual
// script executor. `go test ./core/farm -run TestTranscripts -rewrite`
// regenerates the expected output; read the diff, the transcript is the spec.
//
// Directives (positional words, then key=value):
//
//	init nodes=(n1,n2) [power=(n1:2)] [checkers=(name/type/action/when, ...)]
//	     [max-loop=N] [loop-interval=D] [light] [balance=B] [persist=(started, ...)]
//	cmd <node|all> <start|stop|...> [checker-name]
//	done <node> [ok|failed|timeout] [msg=(text)]   finish the node's running script
//	settle                                          finish every script with ok until idle
//	checker <node|all> <name> <up|down|unknown> [msg=(text)]
//	tick <duration>                                 advance the clock, tick every live node
//	crash <node> / boot <node>                      power loss / agent restart from the persisted state
//	partition <n1,n2> <n3> ... / heal
//	member-up <node> <name> <STATE> <Readiness> [owner] / member-down <node> <name>
//	status <node>
func TestTranscripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		var h *harness
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			if td.Cmd == "init" {
				h = newHarness(t, td)
			} else if h == nil {
				t.Fatalf("%s: init first", td.Pos)
			}
			h.t = t
			return h.run(td)
		})
	})
}

type hnode struct {
	name      string
	cfg       Config
	m         *Machine
	alive     bool
	persisted Persistent
	running   *core.RunScript // the one script the executor runs now
	vip       bool
	rules     *core.BucketTable // installed balancing rules
	view      core.BucketTable  // the last owner's table the node knew
	known     map[string]core.MemberUpdate
	lastP     string // last persist line printed
}

type harness struct {
	t     *testing.T
	now   time.Time
	order []string
	nodes map[string]*hnode
	part  map[string]int // partition of each node; all 0 when healed
	out   strings.Builder
}

func newHarness(t *testing.T, td *datadriven.TestData) *harness {
	h := &harness{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		nodes: map[string]*hnode{}, part: map[string]int{}}
	var base Config
	var p Persistent
	for _, arg := range td.CmdArgs {
		switch arg.Key {
		case "nodes":
			base.Nodes = arg.Vals
		case "power":
			base.Power = map[string]int{}
			for _, v := range arg.Vals {
				var n string
				var pw int
				if _, err := fmt.Sscanf(strings.Replace(v, ":", " ", 1), "%s %d", &n, &pw); err != nil {
					t.Fatalf("%s: power %q: %v", td.Pos, v, err)
				}
				base.Power[n] = pw
			}
		case "checkers":
			for _, v := range arg.Vals {
				f := strings.Split(v, "/")
				if len(f) != 4 {
					t.Fatalf("%s: checker %q: want name/type/action/when", td.Pos, v)
				}
				act, err := core.ParseCheckAction(f[2])
				if err != nil {
					t.Fatal(err)
				}
				when, err := core.ParseWhen(f[3])
				if err != nil {
					t.Fatal(err)
				}
				base.Checkers = append(base.Checkers, core.CheckerSpec{Name: f[0], Type: f[1], Action: act, When: when})
			}
		case "max-loop":
			arg.Scan(t, 0, &base.MaxLoop)
		case "loop-interval":
			d, err := time.ParseDuration(arg.Vals[0])
			if err != nil {
				t.Fatal(err)
			}
			base.LoopInterval = d
		case "light":
			base.Light = true
		case "balance":
			base.Balance = arg.Vals[0]
		case "persist":
			for _, v := range arg.Vals {
				switch {
				case v == "started":
					p.Started = true
				case v == "errd-off":
					p.ErrdOff = true
				case v == "all-checkers-off":
					p.AllCheckersOff = true
				case strings.HasPrefix(v, "checker-off:"):
					p.CheckersOff = append(p.CheckersOff, strings.TrimPrefix(v, "checker-off:"))
				default:
					t.Fatalf("%s: persist %q unknown", td.Pos, v)
				}
			}
		default:
			t.Fatalf("%s: init: unknown argument %s", td.Pos, arg.Key)
		}
	}
	for _, n := range base.Nodes {
		cfg := base
		cfg.Node = n
		h.order = append(h.order, n)
		h.nodes[n] = &hnode{name: n, cfg: cfg, persisted: p, known: map[string]core.MemberUpdate{}}
	}
	for _, n := range h.order {
		h.boot(h.nodes[n])
	}
	return h
}

func (h *harness) printf(format string, args ...any) { fmt.Fprintf(&h.out, format, args...) }

func (h *harness) node(name string) *hnode {
	n, ok := h.nodes[name]
	if !ok {
		h.t.Fatalf("no node %q", name)
	}
	return n
}

// targets resolves "all" to every live node.
func (h *harness) targets(name string) []*hnode {
	if name != "all" {
		return []*hnode{h.node(name)}
	}
	var ns []*hnode
	for _, n := range h.order {
		if h.nodes[n].alive {
			ns = append(ns, h.nodes[n])
		}
	}
	return ns
}

func (h *harness) run(td *datadriven.TestData) string {
	if td.Cmd != "init" { // newHarness already wrote what booting did
		h.out.Reset()
	}
	pos := func(i int) string {
		if i >= len(td.CmdArgs) || len(td.CmdArgs[i].Vals) > 0 {
			h.t.Fatalf("%s: argument %d missing", td.Pos, i+1)
		}
		return td.CmdArgs[i].Key
	}
	msg := ""
	if arg, ok := td.Arg("msg"); ok {
		msg = strings.Join(arg.Vals, ", ")
	}
	switch td.Cmd {
	case "init":
	case "cmd":
		kind, err := core.ParseCommand(pos(1))
		if err != nil {
			h.t.Fatal(err)
		}
		checker := ""
		if len(td.CmdArgs) > 2 && len(td.CmdArgs[2].Vals) == 0 {
			checker = pos(2)
		}
		for _, n := range h.targets(pos(0)) {
			h.step(n, core.Command{At: h.now, Kind: kind, Checker: checker, Origin: "cli"})
		}
	case "done", "script-done":
		n := h.node(pos(0))
		outcome := core.ScriptOK
		if len(td.CmdArgs) > 1 && len(td.CmdArgs[1].Vals) == 0 {
			switch pos(1) {
			case "ok":
			case "failed":
				outcome = core.ScriptFailed
			case "timeout":
				outcome = core.ScriptTimedOut
			default:
				h.t.Fatalf("%s: outcome %q", td.Pos, pos(1))
			}
		}
		if n.running == nil {
			h.t.Fatalf("%s: %s runs no script", td.Pos, n.name)
		}
		id := n.running.ID
		n.running = nil
		h.step(n, core.ScriptDone{At: h.now, ID: id, Outcome: outcome, Message: msg})
	case "settle":
		h.settle()
	case "checker":
		st, err := core.ParseCheckStatus(pos(2))
		if err != nil {
			h.t.Fatal(err)
		}
		for _, n := range h.targets(pos(0)) {
			h.step(n, core.CheckerResult{At: h.now, Name: pos(1), Status: st, Message: msg})
		}
	case "tick":
		d, err := time.ParseDuration(pos(0))
		if err != nil {
			h.t.Fatal(err)
		}
		h.now = h.now.Add(d)
		for _, n := range h.targets("all") {
			h.step(n, core.Tick{Now: h.now})
		}
	case "crash":
		n := h.node(pos(0))
		n.alive, n.m, n.running, n.vip, n.rules = false, nil, nil, false, nil
		n.known = map[string]core.MemberUpdate{}
		h.printf("%s: crashed\n", n.name)
	case "boot":
		h.boot(h.node(pos(0)))
	case "partition":
		h.part = map[string]int{}
		for i := range td.CmdArgs {
			for _, n := range strings.Split(pos(i), ",") {
				h.node(n)
				h.part[n] = i
			}
		}
	case "heal":
		h.part = map[string]int{}
	case "member-up", "member-update":
		st, err := core.ParseState(pos(2))
		if err != nil {
			h.t.Fatal(err)
		}
		ready := map[string]core.Readiness{"NotReady": core.NotReady, "Transient": core.Transient, "Ready": core.Ready}[pos(3)]
		owner := td.HasArg("owner")
		if td.Cmd == "member-up" {
			h.step(h.node(pos(0)), core.MemberUp{At: h.now, Node: pos(1), State: st, Readiness: ready, Power: 1, Owner: owner})
		} else {
			h.step(h.node(pos(0)), core.MemberUpdate{At: h.now, Node: pos(1), State: st, Readiness: ready, Power: 1, Owner: owner})
		}
	case "member-down":
		h.step(h.node(pos(0)), core.MemberDown{At: h.now, Node: pos(1)})
	case "status":
		h.printStatus(h.node(pos(0)))
		return h.out.String()
	default:
		h.t.Fatalf("%s: unknown directive %s", td.Pos, td.Cmd)
	}
	h.gossip()
	h.printStates()
	return h.out.String()
}

func (h *harness) boot(n *hnode) {
	n.m = New(n.cfg, n.persisted)
	n.alive = true
	n.known = map[string]core.MemberUpdate{}
	h.printf("%s: booted\n", n.name)
	// The agent joins the membership before its first tick.
	h.gossip()
	h.step(n, core.Tick{Now: h.now})
}

func (h *harness) visible(a, b *hnode) bool {
	return a != b && a.alive && b.alive && h.part[a.name] == h.part[b.name]
}

// gossip delivers every announcement that changed until nothing changes:
// membership with no lag. The sim (core/sim) adds lag and loss.
func (h *harness) gossip() {
	for changed := true; changed; {
		changed = false
		for _, on := range h.order {
			obs := h.nodes[on]
			if !obs.alive {
				continue
			}
			for _, sn := range h.order {
				sub := h.nodes[sn]
				old, known := obs.known[sn]
				if !h.visible(obs, sub) {
					if known {
						delete(obs.known, sn)
						h.deliver(obs, core.MemberDown{At: h.now, Node: sn}, "member-down "+sn)
						changed = true
					}
					continue
				}
				ann := sub.m.Announce()
				ann.At = h.now
				if known && sameAnnounce(old, ann) {
					continue
				}
				obs.known[sn] = ann
				changed = true
				if !known {
					h.deliver(obs, core.MemberUp(ann), "member-up "+describe(ann))
				} else {
					h.deliver(obs, ann, "member-update "+describe(ann))
				}
			}
		}
	}
}

func sameAnnounce(a, b core.MemberUpdate) bool {
	if a.State != b.State || a.Readiness != b.Readiness || a.Power != b.Power || a.Owner != b.Owner {
		return false
	}
	if (a.Buckets == nil) != (b.Buckets == nil) {
		return false
	}
	return a.Buckets == nil || *a.Buckets == *b.Buckets
}

func describe(u core.MemberUpdate) string {
	s := fmt.Sprintf("%s %s %s", u.Node, u.State, u.Readiness)
	if u.Owner {
		s += " owner"
	}
	return s
}

// deliver steps a membership event and prints it only when it made the
// node act: most announcements change nothing, and the states block at the
// end of each directive shows the views.
func (h *harness) deliver(n *hnode, ev core.Event, what string) {
	acts := n.m.Step(ev)
	if len(acts) > 0 {
		h.printf("%s <- %s\n", n.name, what)
		h.apply(n, acts)
	}
	h.remember(n)
}

// remember keeps the last owner's table the node knew, the starting point
// of its rules if it takes over.
func (h *harness) remember(n *hnode) {
	if t := n.m.Status().Buckets; t != (core.BucketTable{}) {
		n.view = t
	}
}

func (h *harness) step(n *hnode, ev core.Event) {
	if !n.alive {
		h.t.Fatalf("%s is down", n.name)
	}
	h.apply(n, n.m.Step(ev))
	h.remember(n)
	h.gossip()
}

func (h *harness) settle() {
	for progress := true; progress; {
		progress = false
		for _, name := range h.order {
			n := h.nodes[name]
			if n.alive && n.running != nil {
				id := n.running.ID
				n.running = nil
				h.step(n, core.ScriptDone{At: h.now, ID: id, Outcome: core.ScriptOK})
				progress = true
			}
		}
	}
}

// apply executes a node's actions in the harness and prints them; it also
// checks what a real executor relies on.
func (h *harness) apply(n *hnode, acts []core.Action) {
	for _, a := range acts {
		switch a := a.(type) {
		case core.EnterState:
			if a.Cause == "" {
				h.t.Errorf("%s entered %s %s without a cause", n.name, a.State, a.Readiness)
			}
			h.printf("%s: enter %s %s: %s\n", n.name, a.State, a.Readiness, a.Cause)
		case core.RunScript:
			if n.running != nil {
				h.t.Errorf("%s runs %s while %s #%d still runs", n.name, a.Script, n.running.Script, n.running.ID)
			}
			r := a
			n.running = &r
			force := ""
			if a.Force {
				force = " force"
			}
			h.printf("%s: run #%d %s %s%s\n", n.name, a.ID, a.Script, strings.Join(a.Args, " "), force)
		case core.Log:
			h.printf("%s: log %s: %s\n", n.name, a.Level, a.Text)
		case core.SetVIP:
			if n.vip {
				h.t.Errorf("%s: SetVIP while holding the VIP", n.name)
			}
			n.vip = true
			h.printf("%s: set-vip\n", n.name)
		case core.UnsetVIP:
			if !n.vip {
				h.t.Errorf("%s: UnsetVIP without the VIP", n.name)
			}
			n.vip = false
			h.printf("%s: unset-vip\n", n.name)
		case core.SetBalancing:
			// Movement against the rules this node had, or, when it takes
			// over, against the owner's table it knew.
			prev := n.view
			if n.rules != nil {
				prev = *n.rules
			}
			moved := fmt.Sprintf(" (moved %d)", Moved(prev, a.Buckets))
			t := a.Buckets
			n.rules = &t
			h.printf("%s: set-balancing %s%s\n", n.name, counts(a.Buckets), moved)
		case core.ClearBalancing:
			n.rules = nil
			h.printf("%s: clear-balancing\n", n.name)
		case core.Persist:
			p := a.Data.(Persistent)
			n.persisted = p
			line := persistLine(p)
			if line != n.lastP {
				n.lastP = line
				h.printf("%s: persist %s\n", n.name, line)
			}
		case core.Refuse:
			h.printf("%s: refuse %s: %s\n", n.name, a.Command, a.Reason)
		default:
			h.t.Errorf("%s: unexpected action %T", n.name, a)
		}
	}
}

func persistLine(p Persistent) string {
	s := fmt.Sprintf("started=%t loop=%d", p.Started, len(p.LoopTimes))
	if p.AllCheckersOff {
		s += " checkers=off"
	}
	if len(p.CheckersOff) > 0 {
		s += " checkers-off=" + strings.Join(p.CheckersOff, ",")
	}
	if p.ErrdOff {
		s += " errd=off"
	}
	return s
}

func counts(t core.BucketTable) string {
	c := BucketCounts(t)
	if len(c) == 0 {
		return "none"
	}
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, fmt.Sprintf("%s:%d", n, c[n]))
	}
	return strings.Join(parts, " ")
}

func (h *harness) printStates() {
	h.printf("states:\n")
	for _, name := range h.order {
		n := h.nodes[name]
		if !n.alive {
			h.printf("  %s: down\n", name)
			continue
		}
		s := n.m.Status()
		line := fmt.Sprintf("  %s: %s %s", name, s.State, s.Readiness)
		if !s.Light {
			if s.HoldsVIP {
				line += " vip"
			}
			line += fmt.Sprintf(" owner=%s table=[%s]", orNone(s.Owner), counts(s.Buckets))
		}
		if s.LoopCount > 0 {
			line += fmt.Sprintf(" loop=%d/%d", s.LoopCount, s.MaxLoop)
		}
		if s.Running != "" {
			line += " running=" + s.Running
		}
		if s.Queued != "" {
			line += " queued=" + s.Queued
		}
		h.printf("%s (%s)\n", line, s.Cause)
		// The machine's own view of its VIP must match what it asked for.
		if s.HoldsVIP != n.vip {
			h.t.Errorf("%s: status says HoldsVIP=%t, executor holds %t", name, s.HoldsVIP, n.vip)
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (h *harness) printStatus(n *hnode) {
	s := n.m.Status()
	h.printf("node %s: %s %s (%s)\n", s.Node, s.State, s.Readiness, s.Cause)
	h.printf("light=%t power=%d balance=%s owner=%s vip=%t\n", s.Light, s.Power, s.Balance, orNone(s.Owner), s.HoldsVIP)
	for _, m := range s.Members {
		h.printf("member %s: %s %s power=%d owner=%t\n", m.Node, m.State, m.Readiness, m.Power, m.Owner)
	}
	for _, c := range s.Checkers {
		h.printf("checker %s (%s, action %s, when %s): %s %q suspended=%t\n", c.Name, c.Type, c.Action, c.When, c.Status, c.Message, c.Suspended)
	}
	h.printf("loop %d/%d in %s; started=%t; running=%q queued=%q\n", s.LoopCount, s.MaxLoop, s.LoopInterval, s.Persistent.Started, s.Running, s.Queued)
}
