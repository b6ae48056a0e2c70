// Package mirror is the state machine of one node of a mirror module: two
// nodes, one serving the application (ALONE or PRIM) and replicating its
// files to the other (SECOND).
//
// The machine is pure (see package core): the agent feeds it events and
// executes the actions it returns, in order. Decisions are level-triggered:
// after every event the machine compares what it knows (its state, its
// persistent data, the last status its peer sent) with what should be, and
// starts at most one transition (a plan of scripts and actions) at a time.
//
// Safety rules, each enforced in one place:
//   - a node serves without seeing its peer only if it knows its data is the
//     newest (it was ALONE, or SECOND in sync when the peer vanished), or
//     sync_delta allows it, or an administrator said so; with a witness it
//     must also reach the witness;
//   - a node that sees its peer serves only if both nodes elect it: it
//     becomes a candidate for a new term and waits for the peer's vote for
//     that term; a node never votes while it is a candidate or serves, so
//     two nodes that see each other never both start serving;
//   - a node that stops replicating to a SECOND it can see (stall) first
//     makes it mark its data outdated, so the SECOND never takes over
//     without writes the primary acknowledged meanwhile;
//   - after a pause (SIGSTOP, VM freeze) a node promotes nothing until it
//     hears its peer again: statuses read at once were buffered and old;
//   - data generations (core/journal) tell who holds the newest data, and a
//     split brain, without looking at the data.
package mirror

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/journal"
)

// OriginBoot is the Command.Origin of the start the agent sends at boot.
const OriginBoot = "boot"

// Split-brain winner policies (Config.SplitBrainWinner); any other value is
// a node name.
const (
	WinnerLongestAlone   = "longest_alone"
	WinnerDefaultPrimary = "default_primary"
)

// Config is the part of a mirror module's configuration the machine reasons
// about. Both nodes must use the same values (they come from the same
// module file): elections and split-brain policies are computed on both
// sides and must agree.
type Config struct {
	Node, Peer string
	// Networks carry heartbeats; the peer is lost when it is lost on all.
	Networks []string
	// HeartbeatTimeout: no heartbeat on a network for this long = the
	// network is lost.
	HeartbeatTimeout time.Duration
	// Failover false: a SECOND whose primary vanishes goes WAIT instead of
	// ALONE; only `halo prim` promotes it.
	Failover bool
	// DefaultPrimary ("" or a node name): after a resync the roles swap back
	// to that node.
	DefaultPrimary string
	MaxLoop        int           // checker actions allowed within LoopInterval (default 3)
	LoopInterval   time.Duration // default 24h
	// SyncDelta (0 = disabled): a node whose peer is absent may start ALONE
	// on data last in sync at most this long ago.
	SyncDelta time.Duration
	// StallTimeout: replication not acknowledged this long turns PRIM into
	// ALONE (degraded). 0 = as soon as the replication layer reports a stall.
	StallTimeout time.Duration
	// ResyncRetry: a failed resync is tried again after this long (default
	// 10s).
	ResyncRetry time.Duration
	Checkers    []core.CheckerSpec
	// Witness: a splitbrain checker exists; a node must reach the witness
	// before serving without seeing its peer.
	Witness bool
	// SplitBrainWinner: WinnerLongestAlone (default), WinnerDefaultPrimary
	// or a node name.
	SplitBrainWinner string
	// ReplReadiness: the replication layer reports (ReplReady) whether
	// this node's replicated directories can be used (their must_exist
	// files are present, the capture can mount). Until its first report
	// and while it reports a problem, the node neither serves nor
	// becomes SECOND, and tells its peer why; a node that already serves
	// goes on (must_exist is checked before a start).
	ReplReadiness bool
	// Async: replication acknowledges writes before the peer has them
	// (mode async): PRIM says so, since a failover may lose the latest.
	Async bool
}

func (c *Config) applyDefaults() {
	if len(c.Networks) == 0 {
		c.Networks = []string{"default"}
	}
	if c.MaxLoop == 0 {
		c.MaxLoop = 3
	}
	if c.LoopInterval == 0 {
		c.LoopInterval = 24 * time.Hour
	}
	if c.ResyncRetry == 0 {
		c.ResyncRetry = 10 * time.Second
	}
	if c.SplitBrainWinner == "" {
		c.SplitBrainWinner = WinnerLongestAlone
	}
}

// Validate reports configuration errors the machine cannot work with.
func (c Config) Validate() error {
	switch {
	case c.Node == "" || c.Peer == "":
		return fmt.Errorf("validate mirror config: node and peer names are required")
	case c.Node == c.Peer:
		return fmt.Errorf("validate mirror config: node and peer are both %q", c.Node)
	case c.HeartbeatTimeout <= 0:
		return fmt.Errorf("validate mirror config: heartbeat timeout must be positive")
	case c.DefaultPrimary != "" && c.DefaultPrimary != c.Node && c.DefaultPrimary != c.Peer:
		return fmt.Errorf("validate mirror config: default_primary %q is neither %s nor %s", c.DefaultPrimary, c.Node, c.Peer)
	}
	switch w := c.SplitBrainWinner; w {
	case "", WinnerLongestAlone, WinnerDefaultPrimary, c.Node, c.Peer:
	default:
		return fmt.Errorf("validate mirror config: split-brain winner %q is not %s, %s, %s or %s", w, WinnerLongestAlone, WinnerDefaultPrimary, c.Node, c.Peer)
	}
	seen := map[string]bool{}
	for _, ch := range c.Checkers {
		if seen[ch.Name] {
			return fmt.Errorf("validate mirror config: checker %q declared twice", ch.Name)
		}
		seen[ch.Name] = true
	}
	return nil
}

// Persistent is what a node must keep on disk across crashes and restarts.
// The machine emits core.Persist{Data: Persistent} whenever it changes, before
// the actions that depend on it; the agent stores it durably before executing
// those actions and passes it back to New after a restart.
type Persistent struct {
	// Gen identifies the data this node holds.
	Gen journal.Generation
	// Shared: the peer may hold Gen too, so serving without the peer must
	// fork a new generation first.
	Shared bool
	// Inconsistent: a resync into this node started and did not finish; its
	// data is a mix that no application should use.
	Inconsistent bool
	// ResyncFull: the interrupted resync was a full one (resume it as full).
	ResyncFull bool
	// Outdated: the peer could not replicate to this node and continues
	// without it; this node's data is consistent but old until a resync.
	// The peer waits for this flag before writing alone (DRBD's "outdate
	// peer" fencing), so a SECOND never fails over without writes the
	// primary acknowledged.
	Outdated bool
	// Role is the last running role: Alone, Prim or Second (Stop = never ran).
	// A node whose last role was Alone knows its data is the newest.
	Role core.State
	// AloneSince: when this node last started serving without its peer
	// (split-brain policy longest_alone).
	AloneSince time.Time
	// LastInSync: last time this node's data was known identical to the
	// peer's (sync_delta).
	LastInSync time.Time
	// Forced: Gen was imposed by primforce or prim --fullsync; the peer takes
	// a full resync from it whatever its own generation says.
	Forced bool
	// Stopped: stopped by the administrator, max_loop or a failed start
	// script: the agent must not start the module at boot.
	Stopped bool
	// Peer is what this node last learnt of its peer's data: after a
	// restart it still knows that the peer holds newer data, or won a split
	// brain, and does not serve its own copy just because it was ALONE.
	Peer        PeerData
	FailoverOff bool        // `halo failover off`
	CheckersOff []string    // `halo checker off [name]`; "*" = all
	TypesOff    []string    // `halo errd off` suspends checkers of type errd
	LoopTimes   []time.Time // checker actions in the max_loop window
}

// PeerData is the part of the peer's status worth remembering across
// restarts.
type PeerData struct {
	Gen        journal.Generation
	Forced     bool
	AloneSince time.Time
}

// Clone returns a deep copy.
func (p Persistent) Clone() Persistent {
	c := p
	c.Gen = p.Gen.Clone()
	c.Peer.Gen = p.Peer.Gen.Clone()
	c.CheckersOff = slices.Clone(p.CheckersOff)
	c.TypesOff = slices.Clone(p.TypesOff)
	c.LoopTimes = slices.Clone(p.LoopTimes)
	return c
}

// PeerStatus is what a heartbeat carries about its sender's module: enough
// for the receiver to take every coordination decision on its own.
type PeerStatus struct {
	Node string
	// Incarnation and Seq order statuses: heartbeats travel on several
	// networks and may arrive out of order. Incarnation changes when the
	// sender's machine is recreated (agent restart).
	Incarnation  int64
	Seq          uint64
	State        core.State
	Readiness    core.Readiness
	Gen          journal.Generation
	Role         core.State // sender's last running role
	Inconsistent bool
	Outdated     bool
	Forced       bool
	// Degrading: the sender's replication to the receiver is stalled; it
	// asks the receiver to mark its data outdated before it continues alone.
	Degrading bool
	// CanServe: the sender could serve now if elected; Blocker says why
	// not, BlockerNeedsAdmin whether only an administrator can change it.
	CanServe          bool
	Blocker           string
	BlockerNeedsAdmin bool
	// Candidate: the sender wants to serve and asks for the receiver's vote
	// in this term (0 = no candidacy). VoteFor/VoteTerm: the sender
	// promised not to serve in favour of VoteFor's candidacy VoteTerm. A
	// node that sees its peer starts serving only with the peer's vote for
	// its current candidacy; a node never votes while it is a candidate or
	// serves, so two nodes that see each other never both start serving.
	Candidate uint64
	VoteFor   string
	VoteTerm  uint64
	// Yield: `halo second` was run on the sender: it wants to become SECOND
	// of the other node whatever the generations say.
	Yield bool
	// Handover: the sender was PRIM, stopped its application for a swap and
	// waits for the other node to take over.
	Handover   bool
	AloneSince time.Time
}

func (s PeerStatus) after(o PeerStatus) bool {
	if s.Incarnation != o.Incarnation {
		return s.Incarnation > o.Incarnation
	}
	return s.Seq > o.Seq
}

// MessageKind is the kind of a coordination message between the two nodes.
type MessageKind uint8

const (
	// MsgSwapRequest: the SECOND asks the PRIM to swap roles (`halo swap`
	// run on the SECOND).
	MsgSwapRequest MessageKind = iota + 1
	// MsgOutdate: replication is stalled; the sender asks the receiver to
	// mark its data outdated (also carried by PeerStatus.Degrading).
	MsgOutdate
	// MsgHandover: the former PRIM stopped its application and released
	// the VIP: the receiver may take over. Also carried by heartbeats
	// (PeerStatus.Handover) in case the message is lost.
	MsgHandover
)

func (k MessageKind) String() string {
	switch k {
	case MsgSwapRequest:
		return "swap-request"
	case MsgHandover:
		return "handover"
	case MsgOutdate:
		return "outdate"
	}
	return "MessageKind(" + strconv.Itoa(int(k)) + ")"
}

// Message is a coordination message sent with SendPeer and received as
// PeerMessage.
type Message struct {
	From string
	Kind MessageKind
	Gen  journal.Generation // sender's generation when sent
	// Status is the sender's status when it sent the message, so that the
	// receiver does not act on an older heartbeat.
	Status PeerStatus
}

// ReplRole is the role the replication layer plays on this node.
type ReplRole uint8

const (
	ReplNone   ReplRole = iota
	ReplSource          // capture changes and send them to the peer
	ReplTarget          // receive and apply the peer's changes; files read-only
)

func (r ReplRole) String() string {
	switch r {
	case ReplSource:
		return "source"
	case ReplTarget:
		return "target"
	}
	return "none"
}

// ---- events ----

// PeerHeartbeat is a heartbeat received from the peer on one network.
type PeerHeartbeat struct {
	core.EventMarker
	At      time.Time
	Network string
	Peer    PeerStatus
}

// HeartbeatLost reports that a network is known down (link down) without
// waiting for the heartbeat timeout.
type HeartbeatLost struct {
	core.EventMarker
	At      time.Time
	Network string
}

// PeerMessage is a coordination message received from the peer.
type PeerMessage struct {
	core.EventMarker
	At  time.Time
	Msg Message
}

// ReplInSync: on the source, replication is acknowledged again after a
// stall.
type ReplInSync struct {
	core.EventMarker
	At time.Time
}

// ReplReady reports whether the replication layer can serve this node's
// replicated directories (Config.ReplReadiness): Problem is why not, ""
// when it can.
type ReplReady struct {
	core.EventMarker
	At      time.Time
	Problem string
}

// ReplStalled: on the source, the peer has not acknowledged replicated
// changes since Since. Applications writing to replicated files are blocked
// meanwhile (synchronous mode), hence StallTimeout.
type ReplStalled struct {
	core.EventMarker
	At, Since time.Time
}

// ResyncProgress reports a running resync on the target.
type ResyncProgress struct {
	core.EventMarker
	At          time.Time
	ID          uint64
	Done, Total int64 // bytes
}

// ResyncDone: the resync ID finished; the target's files equal the
// source's and live replication continues.
type ResyncDone struct {
	core.EventMarker
	At time.Time
	ID uint64
}

// ResyncFailed: the resync ID stopped before the end.
type ResyncFailed struct {
	core.EventMarker
	At     time.Time
	ID     uint64
	Reason string
}

// ---- actions ----

// StartReplication asks the replication layer to take a role (after a
// StopReplication when it changes role).
type StartReplication struct {
	core.ActionMarker
	Role ReplRole
	Peer string
}

// StopReplication stops replication on this node: a source goes on
// journaling changed zones for the next resync.
type StopReplication struct{ core.ActionMarker }

// StartResync asks the target's replication layer to bring its files to the
// source's state, then keep them in sync. It answers with ResyncDone or
// ResyncFailed carrying ID.
type StartResync struct {
	core.ActionMarker
	ID   uint64
	Peer string // the source
	// Full: compare every block; otherwise only the zones changed on either
	// node since Since (their last common generation).
	Full bool
	// Quarantine: this node's data diverged from the source's (split brain,
	// unrelated data): copy the files it changed since Since (all files for
	// a full resync without common history) to the quarantine folder before
	// overwriting them.
	Quarantine bool
	Source     journal.Generation // the generation the target adopts when done
	Since      uint64             // common ancestor, 0 if none
}

// SendPeer asks the agent to send a coordination message to the peer (best
// effort: heartbeats carry the same facts).
type SendPeer struct {
	core.ActionMarker
	Msg Message
}

// Basis says why a serving node serves; the simulator checks that a node
// serving on data that may not be the newest had a reason allowed to.
type Basis uint8

const (
	BasisNone      Basis = iota
	BasisNewest          // its data is known to be the newest
	BasisSyncDelta       // sync_delta allowed data up to that old
	BasisAdmin           // `halo prim`
	BasisForced          // `halo primforce`
	BasisPolicy          // split-brain policy picked it
)

var basisNames = [...]string{"none", "newest", "sync_delta", "admin", "forced", "policy"}

func (b Basis) String() string {
	if int(b) < len(basisNames) {
		return basisNames[b]
	}
	return "Basis(" + strconv.Itoa(int(b)) + ")"
}

// Status is the node's view for the API and the console.
type Status struct {
	Node        string
	State       core.State
	Readiness   core.Readiness
	Since       time.Time
	Reason      string // why the node is in this state; always set in WAIT and STOP
	NeedsAdmin  bool   // the reason asks for an administrator
	Basis       Basis  // serving states: why this node serves
	Gen         journal.Generation
	PeerVisible bool
	Peer        PeerStatus // last status received
	Resources   map[string]string
}
