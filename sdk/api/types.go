// Package api holds the REST types of the halo agent API (/v1) and the one
// Go client shared by the CLI, the tests, the console and third parties.
package api

import "time"

// ModuleStatus is one module's state on one node.
type ModuleStatus struct {
	Module    string    `json:"module"`
	Kind      string    `json:"kind"` // mirror, farm, light
	Node      string    `json:"node"`
	State     string    `json:"state"`     // STOP, WAIT, ALONE, PRIM, SECOND, UP
	Readiness string    `json:"readiness"` // NotReady, Transient, Ready
	Reason    string    `json:"reason,omitempty"`
	Since     time.Time `json:"since"`
	// ExitCode is what `halo status <module> -q` exits with (0..4).
	ExitCode  int                 `json:"exit_code"`
	Resources map[string]Resource `json:"resources,omitempty"`
	Switches  Switches            `json:"switches"`
	Loop      LoopInfo            `json:"loop"`
	// ConfigChanged is set when the module file changed on disk and was not applied.
	ConfigChanged bool `json:"config_changed,omitempty"`
	// Replication is set for a mirror module that replicates directories:
	// what its replication daemon last reported.
	Replication *ReplicationStatus `json:"replication,omitempty"`
}

// ReplicationStatus is a mirror module's file replication as its
// replication daemon reports it (refreshed about every second).
type ReplicationStatus struct {
	// Up: the daemon answered at UpdatedAt; otherwise Error says why not
	// and the figures are absent.
	Up        bool      `json:"up"`
	Error     string    `json:"error,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`

	Role string `json:"role,omitempty"` // none, source, target
	Peer string `json:"peer,omitempty"`
	Mode string `json:"mode,omitempty"` // sync, durable, async
	// Link is the daemon's description of the stream: down, fenced,
	// connected (not in sync), resync, in sync.
	Link      string `json:"link,omitempty"`
	Connected bool   `json:"connected"`
	// PeerUpToDate: the peer holds every write (on a source), or this
	// node does (on a target).
	PeerUpToDate bool      `json:"peer_up_to_date"`
	StalledSince time.Time `json:"stalled_since,omitzero"`
	// InFlight operations were sent and not yet acknowledged; LagSeconds
	// is the age of the oldest of them.
	InFlight      int     `json:"in_flight"`
	InFlightBytes int64   `json:"in_flight_bytes"`
	LagSeconds    float64 `json:"lag_seconds"`
	// AckedOps and DurableOps count the operations (and barriers) of the
	// current stream the peer acknowledged as applied and as durable;
	// RTTSeconds is the stream's latest ping (0 = unknown).
	AckedOps   uint64  `json:"acked_ops"`
	DurableOps uint64  `json:"durable_ops"`
	RTTSeconds float64 `json:"rtt_seconds"`
	// BytesPerSec is the recent throughput: bytes sent on a source,
	// applied on a target.
	BytesPerSec float64 `json:"bytes_per_sec"`
	OpsSent     uint64  `json:"ops_sent"`
	BytesSent   uint64  `json:"bytes_sent"`

	JournalBytes   int64  `json:"journal_bytes"`
	JournalTrusted bool   `json:"journal_trusted"`
	DirtyPaths     int    `json:"dirty_paths"`
	DirtyZones     uint64 `json:"dirty_zones"`
	DirtyBytes     int64  `json:"dirty_bytes"`

	// Resync is the running resync, or the last one, on a target.
	Resync    *ResyncProgress `json:"resync,omitempty"`
	LastError string          `json:"last_error,omitempty"`
	// MaxLagSeconds is async mode's lag bound (0 in the other modes);
	// DataLossPossible: operations acknowledged to applications are not
	// on the peer yet (async), so a failover now would lose them.
	MaxLagSeconds    float64 `json:"max_lag_seconds,omitempty"`
	DataLossPossible bool    `json:"data_loss_possible,omitempty"`
	// NotReady says why the replicated directories cannot be used on
	// this node now (a must_exist file missing, a role not held); the
	// node neither serves nor becomes SECOND meanwhile.
	NotReady string `json:"not_ready,omitempty"`
}

// ResyncProgress is a resync on the node that receives it.
type ResyncProgress struct {
	ID      uint64 `json:"id"`
	Full    bool   `json:"full"`
	Running bool   `json:"running"`
	// DoneBytes of TotalBytes are done; Percent is their ratio (0..100).
	DoneBytes   int64     `json:"done_bytes"`
	TotalBytes  int64     `json:"total_bytes"`
	Percent     float64   `json:"percent"`
	BytesPerSec float64   `json:"bytes_per_sec"`
	ETASeconds  float64   `json:"eta_seconds"`
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished,omitzero"`
	Error       string    `json:"error,omitempty"`
	// SentBytes crossed the network for this resync (data and protocol).
	SentBytes  int64  `json:"sent_bytes"`
	Quarantine string `json:"quarantine,omitempty"`
}

// Switches are the admin on/off settings, persisted by the agent.
type Switches struct {
	Failover bool `json:"failover"`
	Checkers bool `json:"checkers"`
	Errd     bool `json:"errd"`
}

// LoopInfo shows how close the module is to max_loop.
type LoopInfo struct {
	Count    int    `json:"count"`
	Max      int    `json:"max"`
	Interval string `json:"interval"`
}

// Resource is a named fact the state machine reads (checker.<name>, ...).
type Resource struct {
	Value   string    `json:"value"` // init, up, down, unknown, or a free value
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since"`
}

// Event is one line of a module's event log: a state change with its cause,
// an action, a script run or its output, a warning.
type Event struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Module string    `json:"module"`
	Node   string    `json:"node"`
	Kind   string    `json:"kind"`  // state, action, script, output, log, command, config
	Level  string    `json:"level"` // info, warn, error
	Text   string    `json:"text"`
}

// CommandRequest asks the agent to run an admin command on a module.
type CommandRequest struct {
	Command  string `json:"command"` // start, stop, restart, stopstart, forcestop, swap, prim, second, primforce, failover-on, ...
	FullSync bool   `json:"fullsync,omitempty"`
	Checker  string `json:"checker,omitempty"`
}

// CommandResult is the agent's answer to an accepted command.
type CommandResult struct {
	Module string `json:"module"`
	Node   string `json:"node"`
	Text   string `json:"text"`
}

// ResourceSet sets a resource (used by long-running custom checkers through
// `halo resource set`).
type ResourceSet struct {
	Value   string `json:"value"`
	Message string `json:"message,omitempty"`
}

// PluginInfo describes one installed plugin.
type PluginInfo struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	Version    string `json:"version"`
	APIVersion int    `json:"api_version"`
	Path       string `json:"path"`
	Error      string `json:"error,omitempty"`
}

// VersionInfo is returned by GET /v1/version.
type VersionInfo struct {
	Version string `json:"version"`
	Node    string `json:"node"`
	Cluster string `json:"cluster,omitempty"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
}
