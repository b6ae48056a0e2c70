package heartbeat

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DropReason says why a received datagram was not delivered.
type DropReason uint8

const (
	DropMalformed     DropReason = iota // truncated, bad magic, bad lengths, trailing bytes, reserved bits set
	DropOversized                       // larger than MaxFrameSize
	DropVersion                         // a frame version this node does not speak
	DropWrongCluster                    // cluster id of another cluster
	DropBadMAC                          // forged, corrupted, or signed with another key
	DropWrongReceiver                   // addressed to another node
	DropWrongModule                     // another module's heartbeat on this port
	DropWrongNetwork                    // sent for another network than the one it arrived on
	DropUnknownSender                   // sender is not a peer on this network
	DropReplay                          // sequence number already seen (duplicate or replay)
	DropStale                           // sequence number older than the replay window
	DropSkew                            // first frame of a boot with a timestamp outside MaxSkew
	DropOldBoot                         // a boot older than the one already accepted
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{
	"malformed", "oversized", "version", "wrong_cluster", "bad_mac", "wrong_receiver",
	"wrong_module", "wrong_network", "unknown_sender", "replay", "stale", "skew", "old_boot",
}

// String returns the reason as a Prometheus-friendly label value.
func (r DropReason) String() string {
	if r < numDropReasons {
		return dropReasonNames[r]
	}
	return fmt.Sprintf("DropReason(%d)", r)
}

// DropReasons lists every reason, so that metrics can export zeros too.
func DropReasons() []DropReason {
	rs := make([]DropReason, numDropReasons)
	for i := range rs {
		rs[i] = DropReason(i)
	}
	return rs
}

// NetworkStats counts frames on one network since the Endpoint was created.
type NetworkStats struct {
	Sent       uint64 // frames handed to the kernel
	SendErrors uint64 // frames the kernel refused (link down, no route)
	Accepted   uint64 // frames verified and delivered
	// Dropped counts received datagrams by reason; every reason is present.
	Dropped map[DropReason]uint64
}

// Stats is a snapshot of an Endpoint's counters, by network name.
type Stats struct {
	Networks map[string]NetworkStats
}

// Dropped sums the drops for one reason over every network.
func (s Stats) Dropped(r DropReason) uint64 {
	var n uint64
	for _, ns := range s.Networks {
		n += ns.Dropped[r]
	}
	return n
}

// Accepted sums the accepted frames over every network.
func (s Stats) Accepted() uint64 {
	var n uint64
	for _, ns := range s.Networks {
		n += ns.Accepted
	}
	return n
}

type netCounters struct {
	sent, sendErrors, accepted atomic.Uint64
	dropped                    [numDropReasons]atomic.Uint64
}

func (c *netCounters) snapshot() NetworkStats {
	s := NetworkStats{
		Sent:       c.sent.Load(),
		SendErrors: c.sendErrors.Load(),
		Accepted:   c.accepted.Load(),
		Dropped:    make(map[DropReason]uint64, numDropReasons),
	}
	for i := range c.dropped {
		s.Dropped[DropReason(i)] = c.dropped[i].Load()
	}
	return s
}

// logLimiter lets one line per key through every interval and reports how
// many were held back, so a flood of bad datagrams (an attack, or a
// misconfigured node) cannot flood the log.
type logLimiter struct {
	log      hclog.Logger
	now      func() time.Time
	interval time.Duration

	mu   sync.Mutex
	keys map[string]*limitState
}

type limitState struct {
	last       time.Time
	suppressed uint64
}

func (l *logLimiter) warn(key, msg string, args ...any) {
	now := l.now()
	l.mu.Lock()
	st := l.keys[key]
	if st == nil {
		st = &limitState{}
		l.keys[key] = st
	} else if now.Sub(st.last) < l.interval {
		st.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := st.suppressed
	st.last, st.suppressed = now, 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Warn(msg, args...)
}
