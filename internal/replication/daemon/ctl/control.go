// Package ctl is the replication daemon's control protocol: the requests
// the agent and the CLI send on the daemon's Unix socket, the status and
// reports it answers, and the events it streams back (see package daemon
// for the process design). It is its own package so that the agent and
// the CLI do not link the daemon's FUSE and resync code.
package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/halo-ha/halo/core/journal"
)

// Paths of a module's daemon under the agent's data directory.
func SocketPath(dataDir, module string) string {
	return filepath.Join(dataDir, module, "repl.sock")
}

// PIDPath is where the daemon writes its pid.
func PIDPath(dataDir, module string) string { return filepath.Join(dataDir, module, "repl.pid") }

// JournalPath is the module's journal file.
func JournalPath(dataDir, module string) string {
	return filepath.Join(dataDir, module, "journal.log")
}

// ProtocolVersion is the control protocol's version; Hello reports it and
// an agent refuses a daemon of another version (it asks it to shut down
// once no application depends on it).
const ProtocolVersion = 1

// Request ops.
const (
	OpHello     = "hello"
	OpRole      = "role"
	OpResync    = "resync"
	OpStatus    = "status"
	OpVerify    = "verify"
	OpDiff      = "diff"
	OpSubscribe = "subscribe"
	OpShutdown  = "shutdown"
)

// Roles, as the control protocol spells them (mirror.ReplRole's String).
const (
	RoleNone   = "none"
	RoleSource = "source"
	RoleTarget = "target"
)

// Request is one control request.
type Request struct {
	Op string `json:"op"`
	// Role and Peer: OpRole.
	Role string `json:"role,omitempty"`
	Peer string `json:"peer,omitempty"`
	// Gen is the node's current data generation (OpRole, OpResync): new
	// journal records carry it.
	Gen uint64 `json:"gen,omitempty"`
	// Primary (OpRole, source only): the machine runs this node as PRIM,
	// so the peer must be in sync. A source that cannot say so (its
	// daemon restarted, its stream broke) holds the writes and reports a
	// stall until the machine degrades it.
	Primary bool `json:"primary,omitempty"`
	// Resync: OpResync.
	Resync *ResyncRequest `json:"resync,omitempty"`
}

// ResyncRequest mirrors mirror.StartResync.
type ResyncRequest struct {
	ID         uint64             `json:"id"`
	Peer       string             `json:"peer"`
	Full       bool               `json:"full,omitempty"`
	Quarantine bool               `json:"quarantine,omitempty"`
	Source     journal.Generation `json:"source"`
	Since      uint64             `json:"since,omitempty"`
}

// Response answers a request.
type Response struct {
	Error  string        `json:"error,omitempty"`
	Hello  *Hello        `json:"hello,omitempty"`
	Status *Status       `json:"status,omitempty"`
	Verify *VerifyReport `json:"verify,omitempty"`
	Diff   *DiffReport   `json:"diff,omitempty"`
}

// Hello identifies a running daemon.
type Hello struct {
	Module   string    `json:"module"`
	Node     string    `json:"node"`
	PID      int       `json:"pid"`
	Version  int       `json:"version"`
	Started  time.Time `json:"started"`
	Build    string    `json:"build,omitempty"`
	DataDirs []string  `json:"dirs,omitempty"`
}

// Status is what `halo status -v` shows of replication.
type Status struct {
	Role string `json:"role"`
	Peer string `json:"peer,omitempty"`
	Mode string `json:"mode"`
	// Link: "down", "connecting", "resync" (peer catching up), "in sync".
	Link string `json:"link"`
	// PeerInSync: writes wait for the peer (sync and durable modes).
	PeerInSync bool `json:"peer_in_sync"`
	// InFlight: operations sent and not yet acknowledged; Lag is the age
	// of the oldest of them.
	InFlight     int           `json:"in_flight"`
	Lag          time.Duration `json:"lag"`
	BytesPerSec  float64       `json:"bytes_per_sec"`
	OpsSent      uint64        `json:"ops_sent"`
	BytesSent    uint64        `json:"bytes_sent"`
	StalledSince time.Time     `json:"stalled_since,omitzero"`
	// Sequence numbers of the current stream (every operation and
	// barrier takes one, from 1): Submitted given out, Applied and
	// Durable acknowledged by the peer; InFlightBytes are the bytes of
	// the operations not yet applied, RTT the stream's latest ping. A
	// source only; zero from a daemon that predates them.
	Submitted     uint64        `json:"submitted,omitempty"`
	Applied       uint64        `json:"applied,omitempty"`
	Durable       uint64        `json:"durable,omitempty"`
	InFlightBytes int64         `json:"in_flight_bytes,omitempty"`
	RTT           time.Duration `json:"rtt,omitempty"`
	// WriteLatency is how long the application's operations waited for
	// the stream (the peer's acknowledgement in sync and durable modes,
	// room in the window in async); SyncLatency the same for fsync and
	// O_SYNC writes, which wait for the peer's disk. Since the source
	// role began, on a live stream only; nil before the first.
	WriteLatency *Histogram `json:"write_latency,omitempty"`
	SyncLatency  *Histogram `json:"sync_latency,omitempty"`
	// Journal: size of the journal file and what its map holds.
	JournalBytes int64         `json:"journal_bytes"`
	Dirty        journal.Stats `json:"dirty"`
	Trusted      bool          `json:"journal_trusted"`
	Resync       *ResyncStatus `json:"resync,omitempty"`
	// LastError is the latest problem worth showing (a refused mount, a
	// peer that cannot be reached).
	LastError string `json:"last_error,omitempty"`
	// MaxLag is the lag bound of async mode (zero in the other modes):
	// writes wait while the oldest operation the peer has not applied is
	// older.
	MaxLag time.Duration `json:"max_lag,omitempty"`
	// DataLossPossible (async mode, source): operations already
	// acknowledged to applications are not applied on the peer yet
	// (InFlight of them, the oldest Lag old): a failover now loses them.
	DataLossPossible bool `json:"data_loss_possible,omitempty"`
	// NotReady says why the replicated directories cannot be used on this
	// node now (a must_exist file missing: the data disk is not mounted;
	// the directories not mounted by the daemon); empty when they can.
	// The node neither serves nor becomes SECOND meanwhile.
	NotReady string `json:"not_ready,omitempty"`
}

// ResyncStatus is a running (or the last) resync on a target.
type ResyncStatus struct {
	ID          uint64        `json:"id"`
	Full        bool          `json:"full"`
	Done        int64         `json:"done"`
	Total       int64         `json:"total"`
	BytesPerSec float64       `json:"bytes_per_sec"`
	ETA         time.Duration `json:"eta"`
	Started     time.Time     `json:"started"`
	Finished    time.Time     `json:"finished,omitzero"`
	Error       string        `json:"error,omitempty"`
	// Sent counts the bytes that crossed the network for this resync
	// (payload and protocol), Changed the bytes of file data planned.
	Sent       int64  `json:"sent"`
	Quarantine string `json:"quarantine,omitempty"`
}

// VerifyReport lists the differences between both nodes' trees.
type VerifyReport struct {
	Local, Peer string
	Files       int64    `json:"files"`
	Bytes       int64    `json:"bytes"`
	Differences []string `json:"differences"`
	// Truncated: more differences than listed.
	Truncated bool          `json:"truncated,omitempty"`
	Took      time.Duration `json:"took"`
}

// DiffReport estimates what a resync would send now, from Source (the
// node that is not a target) to Target.
type DiffReport struct {
	Source, Target string
	Full           bool          `json:"full"`
	Files          int64         `json:"files"`
	Bytes          int64         `json:"bytes"`
	Estimate       time.Duration `json:"estimate"`
	Reason         string        `json:"reason,omitempty"`
}

// Event kinds.
const (
	EvInSync         = "in_sync"
	EvStalled        = "stalled"
	EvResyncProgress = "resync_progress"
	EvResyncDone     = "resync_done"
	EvResyncFailed   = "resync_failed"
	// EvLog is an event-log line for the module (a mount refused, a
	// quarantine written).
	EvLog = "log"
)

// Event is what the daemon tells the agent.
type Event struct {
	Kind   string    `json:"kind"`
	At     time.Time `json:"at"`
	Since  time.Time `json:"since,omitzero"`
	ID     uint64    `json:"id,omitempty"`
	Done   int64     `json:"done,omitempty"`
	Total  int64     `json:"total,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Level  string    `json:"level,omitempty"`
	Text   string    `json:"text,omitempty"`
}

// MaxLine bounds one line of the control protocol.
const MaxLine = 4 << 20

// Client talks to a daemon's control socket.
type Client struct {
	Socket string
}

// Call sends one request on a new connection and returns the response;
// a response carrying an error is returned as an error.
func (c Client) Call(ctx context.Context, req Request) (Response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return Response{}, fmt.Errorf("connect to replication daemon at %s: %w", c.Socket, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return Response{}, fmt.Errorf("send %s to replication daemon: %w", req.Op, err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	if !sc.Scan() {
		err := sc.Err()
		if err == nil {
			err = errors.New("connection closed")
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return Response{}, fmt.Errorf("read %s answer from replication daemon: %w", req.Op, err)
	}
	var resp Response
	if err := json.Unmarshal(sc.Bytes(), &resp); err != nil {
		return Response{}, fmt.Errorf("decode %s answer from replication daemon: %w", req.Op, err)
	}
	if resp.Error != "" {
		return resp, &RemoteError{Op: req.Op, Msg: resp.Error}
	}
	return resp, nil
}

// RemoteError is a request the daemon refused or failed.
type RemoteError struct{ Op, Msg string }

func (e *RemoteError) Error() string { return e.Op + ": " + e.Msg }

// Subscribe streams the daemon's events to fn until ctx ends or the
// connection breaks (the daemon died); it returns why it stopped.
func (c Client) Subscribe(ctx context.Context, fn func(Event)) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return fmt.Errorf("connect to replication daemon at %s: %w", c.Socket, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := json.NewEncoder(conn).Encode(Request{Op: OpSubscribe}); err != nil {
		return fmt.Errorf("subscribe to replication daemon: %w", err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("decode replication daemon event: %w", err)
		}
		fn(ev)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read replication daemon events: %w", err)
	}
	return errors.New("replication daemon closed the event stream")
}
