package mirror_test

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/core/sim"
)

// TestTranscripts runs testdata/*.txt: each file is one scenario of SPEC
// §2.2/§2.3 driving two machines (node1, node2) in the simulated world with
// fixed timings (tick and heartbeat every 100ms, scripts 100ms, resync
// 500ms, network delay 10ms). Regenerate with `go test ./core/mirror -run
// TestTranscripts -rewrite` and read the diff: the transcripts are the spec.
//
// Directives:
//
//	cluster [networks=(a,b)] [timeout=500ms] [failover=false] [witness]
//	        [sync_delta=D] [default_primary=N] [stall_timeout=D] [winner=W]
//	        [max_loop=N] [loop_interval=D] [checkers=(name:action:when[:type],...)]
//	        [writes=D] [repl_ready] [async] new world, both agents down
//	                                        (Config.ReplReadiness, Config.Async)
//	setup                                   both booted, node1 PRIM, node2 SECOND (quiet)
//	boot N... | crash N | freeze N | thaw N
//	tick D                                  run the world for D
//	cmd N <command> [fullsync] [checker=C]  admin command
//	cut [net=X] | heal [net=X]              cut/heal one or all networks
//	checker N <name> up|down [msg=...]
//	witness N up|down
//	repl-block N | repl-unblock N           replication from N not acknowledged
//	repl-problem N <text> | repl-ok N       N's replicated directories unusable / usable
//	hold N <script> | release N <script> ok|failed|timeout
//	fail N <script> [failed|timeout]        next run of script fails
//	hold-resync N | finish-resync N ok|failed
//	status [N]  | persist N | data
func TestTranscripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		h := &harness{t: t}
		datadriven.RunTest(t, path, h.run)
	})
}

type harness struct {
	t     *testing.T
	w     *sim.MirrorWorld
	out   strings.Builder
	gens  map[uint64]string
	disk  map[string]mirror.Persistent
	quiet bool
}

var hexGen = regexp.MustCompile(`\b[0-9a-f]{16}\b`)

func (h *harness) genName(id uint64) string {
	if id == 0 {
		return "none"
	}
	if n, ok := h.gens[id]; ok {
		return n
	}
	n := "g" + strconv.Itoa(len(h.gens)+1)
	h.gens[id] = n
	return n
}

// names replaces generation identifiers in machine texts by g1, g2...
func (h *harness) names(s string) string {
	return hexGen.ReplaceAllStringFunc(s, func(x string) string {
		id, err := strconv.ParseUint(x, 16, 64)
		if err != nil {
			return x
		}
		return h.genName(id)
	})
}

func (h *harness) genText(g journal.Generation) string {
	parts := []string{h.genName(g.Current)}
	for _, a := range g.Ancestors {
		parts = append(parts, h.genName(a))
	}
	return strings.Join(parts, "<")
}

func (h *harness) rel(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%.3fs", t.Sub(h.w.Start()).Seconds())
}

func (h *harness) line(n *sim.MirrorNode, format string, args ...any) {
	if h.quiet {
		return
	}
	fmt.Fprintf(&h.out, "%7.3fs %s: %s\n", h.w.Now().Sub(h.w.Start()).Seconds(), n.Name, h.names(fmt.Sprintf(format, args...)))
}

func (h *harness) node(td *datadriven.TestData, i int) *sim.MirrorNode {
	if len(td.CmdArgs) <= i {
		td.Fatalf(h.t, "missing node argument")
	}
	n := h.w.Node(td.CmdArgs[i].Key)
	if n == nil {
		td.Fatalf(h.t, "unknown node %q", td.CmdArgs[i].Key)
	}
	return n
}

func (h *harness) arg(td *datadriven.TestData, i int) string {
	if len(td.CmdArgs) <= i {
		td.Fatalf(h.t, "missing argument %d", i)
	}
	return td.CmdArgs[i].Key
}

func dur(t *testing.T, s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("bad duration %q: %v", s, err)
	}
	return d
}

func (h *harness) run(t *testing.T, td *datadriven.TestData) string {
	h.out.Reset()
	if td.Cmd != "cluster" && h.w == nil {
		td.Fatalf(t, "cluster first")
	}
	switch td.Cmd {
	case "cluster":
		h.cluster(t, td)
		return "ok\n"
	case "setup":
		h.setup(t)
	case "boot":
		for i := range td.CmdArgs {
			h.w.Boot(h.node(td, i))
		}
	case "crash":
		n := h.node(td, 0)
		h.line(n, "** crash (power off)")
		h.w.Crash(n)
	case "freeze":
		n := h.node(td, 0)
		h.line(n, "** agent frozen")
		h.w.Freeze(n)
	case "thaw":
		n := h.node(td, 0)
		h.line(n, "** agent resumes")
		h.w.Thaw(n)
	case "tick":
		h.w.RunFor(dur(t, h.arg(td, 0)))
	case "cmd":
		n := h.node(td, 0)
		kind, err := core.ParseCommand(h.arg(td, 1))
		if err != nil {
			td.Fatalf(t, "%v", err)
		}
		c := core.Command{Kind: kind, FullSync: td.HasArg("fullsync")}
		td.MaybeScanArgs(t, "checker", &c.Checker)
		h.w.Command(n, c)
	case "cut", "heal":
		var net string
		td.MaybeScanArgs(t, "net", &net)
		h.w.SetNetwork(net, td.Cmd == "heal")
		if net == "" {
			net = "all networks"
		}
		fmt.Fprintf(&h.out, "%7.3fs ** %s %s\n", h.w.Now().Sub(h.w.Start()).Seconds(), td.Cmd, net)
	case "checker":
		n := h.node(td, 0)
		st, err := core.ParseCheckStatus(h.arg(td, 2))
		if err != nil {
			td.Fatalf(t, "%v", err)
		}
		var msg string
		td.MaybeScanArgs(t, "msg", &msg)
		h.w.Checker(n, h.arg(td, 1), st, msg)
	case "witness":
		n := h.node(td, 0)
		n.WitnessUp = h.arg(td, 1) == "up"
		h.line(n, "** witness %s from %s", h.arg(td, 1), n.Name)
	case "repl-block", "repl-unblock":
		n := h.node(td, 0)
		n.ReplBlocked = td.Cmd == "repl-block"
		h.line(n, "** replication from %s %s", n.Name, map[bool]string{true: "blocked", false: "unblocked"}[n.ReplBlocked])
	case "repl-problem", "repl-ok":
		n := h.node(td, 0)
		problem := ""
		if td.Cmd == "repl-problem" {
			problem = h.arg(td, 1)
		}
		h.line(n, "** replicated directories of %s: %s", n.Name, map[bool]string{true: "usable", false: "unusable (" + problem + ")"}[problem == ""])
		h.w.SetReplProblem(n, problem)
	case "hold":
		n := h.node(td, 0)
		n.Hold[h.arg(td, 1)] = true
	case "release":
		n := h.node(td, 0)
		script := h.arg(td, 1)
		delete(n.Hold, script)
		if h.w.ReleaseScript(n, script, outcome(t, h.arg(td, 2))) == 0 {
			td.Fatalf(t, "no held run of %s on %s", script, n.Name)
		}
	case "fail":
		n := h.node(td, 0)
		o := core.ScriptFailed
		if len(td.CmdArgs) > 2 {
			o = outcome(t, h.arg(td, 2))
		}
		n.Fail[h.arg(td, 1)] = o
	case "hold-resync":
		h.w.HoldResync(h.node(td, 0), true)
	case "finish-resync":
		n := h.node(td, 0)
		h.w.HoldResync(n, false)
		ok := h.arg(td, 1) == "ok"
		if !h.w.FinishResync(n, ok, "connection reset by "+h.w.Nodes[0].Name) {
			td.Fatalf(t, "no resync running on %s", n.Name)
		}
	case "status":
		nodes := h.w.Nodes[:]
		if len(td.CmdArgs) > 0 {
			nodes = []*sim.MirrorNode{h.node(td, 0)}
		}
		for _, n := range nodes {
			h.status(n)
		}
		return h.out.String()
	case "persist":
		n := h.node(td, 0)
		return h.persistText(n.Disk) + "\n"
	case "data":
		return h.dataText()
	default:
		td.Fatalf(t, "unknown directive %q", td.Cmd)
	}
	h.out.WriteString(h.summary())
	for _, v := range h.w.Oracle.Violations {
		fmt.Fprintf(&h.out, "!! invariant violated: %s\n", v)
	}
	h.w.Oracle.Violations = nil
	return h.out.String()
}

// setup brings a new pair to node1 PRIM / node2 SECOND the way an
// administrator does (first_start.txt shows it in full), without printing
// it.
func (h *harness) setup(t *testing.T) {
	h.quiet = true
	defer func() { h.quiet = false }()
	h.w.Boot(h.w.Nodes[0])
	h.w.Boot(h.w.Nodes[1])
	h.w.RunFor(time.Second)
	h.w.Command(h.w.Nodes[0], core.Command{Kind: core.CmdPrim})
	h.w.RunFor(2 * time.Second)
	if a, b := h.w.Nodes[0], h.w.Nodes[1]; a.State != core.Prim || b.State != core.Second || b.Ready != core.Ready {
		t.Fatalf("setup: want node1 PRIM, node2 SECOND/Ready; got %s/%s, %s/%s", a.State, a.Ready, b.State, b.Ready)
	}
}

func outcome(t *testing.T, s string) core.ScriptOutcome {
	switch s {
	case "ok":
		return core.ScriptOK
	case "failed":
		return core.ScriptFailed
	case "timeout":
		return core.ScriptTimedOut
	}
	t.Fatalf("unknown script outcome %q", s)
	return 0
}

func (h *harness) cluster(t *testing.T, td *datadriven.TestData) {
	cfg := mirror.Config{
		Networks:         []string{"default"},
		HeartbeatTimeout: 500 * time.Millisecond,
		Failover:         true,
	}
	var s string
	if arg, ok := td.Arg("networks"); ok {
		cfg.Networks = slices.Clone(arg.Vals)
	}
	if td.MaybeScanArgs(t, "timeout", &s) {
		cfg.HeartbeatTimeout = dur(t, s)
	}
	if td.MaybeScanArgs(t, "failover", &s) {
		cfg.Failover = s == "true"
	}
	cfg.Witness = td.HasArg("witness")
	if td.MaybeScanArgs(t, "sync_delta", &s) {
		cfg.SyncDelta = dur(t, s)
	}
	td.MaybeScanArgs(t, "default_primary", &cfg.DefaultPrimary)
	if td.MaybeScanArgs(t, "stall_timeout", &s) {
		cfg.StallTimeout = dur(t, s)
	}
	td.MaybeScanArgs(t, "winner", &cfg.SplitBrainWinner)
	td.MaybeScanArgs(t, "max_loop", &cfg.MaxLoop)
	if td.MaybeScanArgs(t, "loop_interval", &s) {
		cfg.LoopInterval = dur(t, s)
	}
	if arg, ok := td.Arg("checkers"); ok {
		for _, v := range arg.Vals {
			f := strings.Split(v, ":")
			if len(f) < 3 {
				td.Fatalf(t, "checker %q: want name:action:when[:type]", v)
			}
			act, err := core.ParseCheckAction(f[1])
			if err != nil {
				td.Fatalf(t, "%v", err)
			}
			when, err := core.ParseWhen(f[2])
			if err != nil {
				td.Fatalf(t, "%v", err)
			}
			spec := core.CheckerSpec{Name: f[0], Action: act, When: when}
			if len(f) > 3 {
				spec.Type = f[3]
			}
			cfg.Checkers = append(cfg.Checkers, spec)
		}
	}
	cfg.ReplReadiness = td.HasArg("repl_ready")
	cfg.Async = td.HasArg("async")
	opt := sim.DefaultMirrorOptions(cfg)
	opt.WriteEvery = 100 * time.Millisecond
	if td.MaybeScanArgs(t, "writes", &s) {
		opt.WriteEvery = dur(t, s)
	}
	for _, n := range opt.Nodes {
		c := cfg
		c.Node, c.Peer = n, "x"
		if n == "node1" {
			c.Peer = "node2"
		} else {
			c.Peer = "node1"
		}
		if err := c.Validate(); err != nil {
			td.Fatalf(t, "%v", err)
		}
	}
	h.w = sim.NewMirrorWorld(opt)
	h.gens = map[uint64]string{}
	h.disk = map[string]mirror.Persistent{}
	h.w.OnEvent = h.onEvent
	h.w.OnAction = h.onAction
}

func (h *harness) onEvent(n *sim.MirrorNode, ev core.Event) {
	switch e := ev.(type) {
	case core.Command:
		text := "<- command " + e.Kind.String()
		if e.FullSync {
			text += " --fullsync"
		}
		if e.Checker != "" {
			text += " " + e.Checker
		}
		h.line(n, "%s (%s)", text, e.Origin)
	case core.ScriptDone:
		if e.Outcome != core.ScriptOK {
			h.line(n, "<- script #%d %s: %s", e.ID, e.Outcome, e.Message)
		}
	case core.CheckerResult:
		h.line(n, "<- checker %s %s", e.Name, e.Status)
	case core.WitnessResult:
		h.line(n, "<- witness reachable=%v", e.Reachable)
	case mirror.ResyncDone:
		h.line(n, "<- resync done")
	case mirror.ResyncFailed:
		h.line(n, "<- resync failed: %s", e.Reason)
	case mirror.ReplStalled:
		h.line(n, "<- replication stalled since %s", h.rel(e.Since))
	case mirror.ReplInSync:
		h.line(n, "<- replication in sync")
	case mirror.ReplReady:
		if e.Problem == "" {
			h.line(n, "<- replication ready")
		} else {
			h.line(n, "<- replication not ready: %s", e.Problem)
		}
	case mirror.PeerMessage:
		h.line(n, "<- message %s from %s", e.Msg.Kind, e.Msg.From)
	}
}

func (h *harness) onAction(n *sim.MirrorNode, a core.Action) {
	switch a := a.(type) {
	case core.EnterState:
		h.line(n, "=> %s/%s: %s", a.State, a.Readiness, a.Cause)
	case core.RunScript:
		force := ""
		if a.Force {
			force = " force"
		}
		h.line(n, "run %s%s %v #%d", a.Script, force, a.Args, a.ID)
	case core.Persist:
		p := a.Data.(mirror.Persistent)
		if d := h.persistDiff(h.disk[n.Name], p); d != "" {
			h.line(n, "persist %s", d)
		}
		h.disk[n.Name] = p.Clone()
	case core.SetVIP:
		h.line(n, "vip set")
	case core.UnsetVIP:
		h.line(n, "vip unset")
	case core.CheckWitness:
		h.line(n, "check witness")
	case core.Log:
		h.line(n, "log %s: %s", a.Level, a.Text)
	case core.Refuse:
		h.line(n, "REFUSED %s: %s", a.Command, a.Reason)
	case mirror.StartReplication:
		h.line(n, "replication %s", a.Role)
	case mirror.StopReplication:
		h.line(n, "replication stop")
	case mirror.StartResync:
		kind := "incremental"
		if a.Full {
			kind = "full"
		}
		if a.Quarantine {
			kind += "+quarantine"
		}
		h.line(n, "resync %s from %s to %s since %s", kind, a.Peer, h.genText(a.Source), h.genName(a.Since))
	case mirror.SendPeer:
		h.line(n, "send %s", a.Msg.Kind)
	default:
		h.line(n, "%T %+v", a, a)
	}
}

func (h *harness) persistFields(p mirror.Persistent) map[string]string {
	f := map[string]string{
		"gen": h.genText(p.Gen), "shared": fmt.Sprint(p.Shared), "inconsistent": fmt.Sprint(p.Inconsistent),
		"resync_full": fmt.Sprint(p.ResyncFull), "outdated": fmt.Sprint(p.Outdated), "role": p.Role.String(), "alone_since": h.rel(p.AloneSince),
		"last_in_sync": h.rel(p.LastInSync), "forced": fmt.Sprint(p.Forced), "stopped": fmt.Sprint(p.Stopped),
		"failover_off": fmt.Sprint(p.FailoverOff), "checkers_off": fmt.Sprint(p.CheckersOff),
		"types_off": fmt.Sprint(p.TypesOff), "loops": strconv.Itoa(len(p.LoopTimes)),
	}
	return f
}

var persistOrder = []string{"gen", "shared", "inconsistent", "resync_full", "outdated", "role", "alone_since", "last_in_sync",
	"forced", "stopped", "failover_off", "checkers_off", "types_off", "loops"}

func (h *harness) persistDiff(old, cur mirror.Persistent) string {
	a, b := h.persistFields(old), h.persistFields(cur)
	var parts []string
	for _, k := range persistOrder {
		if a[k] != b[k] {
			parts = append(parts, k+"="+b[k])
		}
	}
	return strings.Join(parts, " ")
}

func (h *harness) persistText(p mirror.Persistent) string {
	f := h.persistFields(p)
	var parts []string
	for _, k := range persistOrder {
		parts = append(parts, k+"="+f[k])
	}
	return strings.Join(parts, " ")
}

func (h *harness) summary() string {
	var parts []string
	for _, n := range h.w.Nodes {
		if !n.Up {
			parts = append(parts, n.Name+" down")
			continue
		}
		s := fmt.Sprintf("%s %s/%s", n.Name, n.State, n.Ready)
		if n.Frozen {
			s += " (frozen)"
		}
		if n.VIP {
			s += " vip"
		}
		parts = append(parts, s)
	}
	return "> " + strings.Join(parts, " | ") + "\n"
}

func (h *harness) status(n *sim.MirrorNode) {
	if !n.Up {
		fmt.Fprintf(&h.out, "%s: agent down\n", n.Name)
		return
	}
	st := n.M.Status()
	fmt.Fprintf(&h.out, "%s: %s/%s since %s basis=%s admin=%v\n", n.Name, st.State, st.Readiness, h.rel(st.Since), st.Basis, st.NeedsAdmin)
	fmt.Fprintf(&h.out, "  reason: %s\n", h.names(st.Reason))
	keys := make([]string, 0, len(st.Resources))
	for k := range st.Resources {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := st.Resources[k]
		if k == "generation" {
			v = h.names(v)
		}
		fmt.Fprintf(&h.out, "  %s = %s\n", k, v)
	}
}

func (h *harness) dataText() string {
	var b strings.Builder
	o := h.w.Oracle
	fmt.Fprintf(&b, "acknowledged writes: %d, quarantined: %d, lost by accepted decision: %d\n",
		o.Stats.Writes, o.Quarantined(), o.AcceptedLost())
	for _, n := range h.w.Nodes {
		fmt.Fprintf(&b, "%s lacks %d of them\n", n.Name, o.MissingWrites(n))
	}
	return b.String()
}
