package wire

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/halo-ha/halo/internal/replication/op"
)

// ProtocolVersion is the stream protocol this package speaks (Hello).
const ProtocolVersion = 1

// Mode is when a submitted operation counts as done (SPEC §2.5, the
// module's replication mode).
type Mode uint8

const (
	// ModeSync: Submit returns when the peer applied the operation, Sync
	// when it is durable there.
	ModeSync Mode = iota + 1
	// ModeDurable: every operation is durable on the peer before Submit
	// returns.
	ModeDurable
	// ModeAsync: Submit and Sync return once the operation is queued,
	// blocking while the peer lags by more than MaxLag.
	ModeAsync
)

func (m Mode) String() string {
	switch m {
	case ModeSync:
		return "sync"
	case ModeDurable:
		return "durable"
	case ModeAsync:
		return "async"
	}
	return fmt.Sprintf("Mode(%d)", m)
}

// ParseMode reads a mode as the configuration spells it.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "sync":
		return ModeSync, nil
	case "durable":
		return ModeDurable, nil
	case "async":
		return ModeAsync, nil
	}
	return 0, fmt.Errorf("unknown replication mode %q (want sync, durable or async)", s)
}

// Hello is what each end announces when a stream opens.
type Hello struct {
	// Version is the protocol version; filled in by this package.
	Version uint64
	// Module and Node name the module and the announcing node.
	Module string
	Node   string
	// Generation is the node's current data generation
	// (journal.Generation.Current).
	Generation uint64
	// Dirs is the number of replicated directories (op.Op.Dir indexes
	// them); both ends must agree.
	Dirs uint16
}

// Errors.
var (
	// ErrDegraded wraps every error a Sender returns once its stream has
	// ended: the operation may not have reached the peer; it is journaled
	// and the module continues alone.
	ErrDegraded = errors.New("replication stream ended: continuing without the peer")
	// ErrProtocol wraps every violation of the protocol by the peer (or a
	// damaged connection).
	ErrProtocol = errors.New("replication protocol error")
)

// PeerError is the reason the peer gave in an Error frame.
type PeerError struct{ Reason string }

func (e *PeerError) Error() string { return "peer closed the stream: " + e.Reason }

// SenderOptions configure NewSender.
type SenderOptions struct {
	Mode Mode
	// Hello is what this node announces (Version is filled in).
	Hello Hello
	// CheckPeer may refuse the peer's Hello (another node than expected, a
	// generation the daemon does not accept). Module and dir count are
	// checked already.
	CheckPeer func(Hello) error
	// MaxLag bounds, in async mode, how old the oldest operation the peer
	// has not applied may be before Submit blocks. 0: 5 s.
	MaxLag time.Duration
	// WindowBytes and WindowOps bound the operations submitted and not yet
	// applied by the peer; Submit blocks beyond them. 0: 64 MiB, 65536.
	WindowBytes int64
	WindowOps   int
	// StallTimeout: with operations waiting and no acknowledgement for
	// this long (or a Ping unanswered that long), the stream is stalled.
	// 0: 10 s.
	StallTimeout time.Duration
	// OnStall is called once when the stream stalls, with the time the
	// peer last made progress; OnResume when acknowledgements resume
	// before the stream ends. Neither may block. The writes stay blocked
	// until acknowledged or Degrade.
	OnStall  func(since time.Time)
	OnResume func()
	// PingInterval is how often a Ping measures the round trip and proves
	// the peer alive. 0: 1 s.
	PingInterval time.Duration
	// Logger receives the reason a stream ended (nil: discard).
	Logger *slog.Logger
}

// Stats describe a Sender, for `halo status` and the metrics.
type Stats struct {
	Mode Mode
	// OpsSent and BytesSent count operations and frame bytes written;
	// FramesSent the frames.
	OpsSent, BytesSent, FramesSent uint64
	// Submitted is the highest sequence number given out, Applied and
	// Durable the highest the peer acknowledged.
	Submitted, Applied, Durable uint64
	// InFlight and InFlightBytes count operations submitted and not yet
	// applied by the peer; Lag is the age of the oldest of them.
	InFlight      int
	InFlightBytes int64
	Lag           time.Duration
	// RTT is the latest Ping round trip.
	RTT time.Duration
	// StalledSince is set while the stream is stalled.
	StalledSince time.Time
	// Err is why the stream ended (nil while it runs).
	Err error
}

// Target is what a receiver applies operations to: an *apply.Tree, or a
// wrapper that journals what it applies.
type Target interface {
	// ApplyDeferred applies o (operations arrive in stream order, one at
	// a time). When durable is true or o is an op.Fsync, it records what
	// must reach the disk for o to be durable, for the next Flush.
	ApplyDeferred(o op.Op, durable bool) error
	// Flush makes durable what the ApplyDeferred calls that returned
	// before it recorded. It may run concurrently with ApplyDeferred.
	Flush() error
	// SyncAll makes the whole target durable (a Barrier).
	SyncAll() error
}

// ReceiverOptions configure Serve.
type ReceiverOptions struct {
	// Hello is what this node announces (Version is filled in).
	Hello Hello
	// CheckPeer may refuse the source's Hello; module and dir count are
	// checked already.
	CheckPeer func(Hello) error
	// IdleTimeout closes a stream that sends nothing (not even a Ping)
	// for this long. 0: 30 s.
	IdleTimeout time.Duration
	// OnHello is called with the source's accepted Hello before any
	// operation is applied (nil: nothing).
	OnHello func(Hello)
	// Logger receives the reason a stream ended (nil: discard).
	Logger *slog.Logger
}
