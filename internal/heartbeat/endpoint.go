// Package heartbeat sends and receives a mirror module's heartbeats: small
// UDP datagrams, one per peer per network every pulse, authenticated with an
// HMAC derived from the cluster key and protected against replay.
//
// The package only frames, authenticates and transports an opaque payload
// (the agent puts the encoded peer status in it, see package
// heartbeat/peerstatus) and keeps per-network bookkeeping. Deciding that the
// peer is down is the core's job: it sees every Received and times out on
// its own ticks.
package heartbeat

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

const (
	// DefaultMaxSkew bounds |receiver clock - sender timestamp| for the
	// first frame of a sender boot (see Config.MaxSkew).
	DefaultMaxSkew = 30 * time.Second
	// DefaultDSCP marks heartbeats CS6 (network control), so that routers
	// and qdiscs that honour DSCP keep them ahead of bulk replication
	// traffic on a shared link.
	DefaultDSCP = 48
	// DefaultLogInterval is the minimum time between two log lines of the
	// same kind (a drop reason, a send error on one network).
	DefaultLogInterval = 10 * time.Second

	// maxRTT discards echo-based round-trip estimates that can only come
	// from a wall clock step.
	maxRTT = time.Minute
	// readRetryDelay paces the reader after an unexpected socket error so a
	// persistent one cannot spin a core.
	readRetryDelay = 50 * time.Millisecond
)

// Network is this node's end of one heartbeat network.
type Network struct {
	Name string
	// Local is this node's address on the network and the module's
	// heartbeat port. Port 0 picks a free port (tests).
	Local netip.AddrPort
	// Conn, when set, is used instead of binding Local (tests, socket
	// activation). The Endpoint owns it and closes it.
	Conn *net.UDPConn
}

// Peer is another node of the module.
type Peer struct {
	Name string
	// Addrs holds the peer's heartbeat address by network name. A network
	// without an entry is one the peer is not on: nothing is sent to it
	// there, and frames claiming to come from it there are dropped.
	Addrs map[string]netip.AddrPort
}

// Config configures an Endpoint.
type Config struct {
	Cluster string // cluster name; frames of another cluster are dropped
	// Key is the cluster key, at least MinKeySize bytes. The MAC key is
	// derived from it, never used as is.
	Key      []byte
	Node     string // this node's name
	Module   uint32 // module id; frames of another module are dropped
	Networks []Network
	Peers    []Peer

	// MaxSkew bounds the clock difference accepted on the first frame of a
	// sender boot. It is what stops an attacker from replaying a captured
	// boot to a node that restarted: set it no larger than the clock sync
	// between nodes allows. 0 means DefaultMaxSkew.
	MaxSkew time.Duration
	// DSCP marks outgoing heartbeats; 0 means DefaultDSCP, negative leaves
	// the socket's default. Marking is best effort.
	DSCP int
	// BootID identifies this run of the sender; 0 means random. Tests set
	// it to simulate restarts.
	BootID uint64
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives warnings (drops, send errors: rate-limited) and
	// peer restarts; nil discards them.
	Logger hclog.Logger
	// LogInterval rate-limits warnings per kind; 0 means DefaultLogInterval.
	LogInterval time.Duration
	// OnReceive is called for every accepted frame, from the reading
	// goroutine of the frame's network: concurrently for different
	// networks, in arrival order within one. It must not block for long
	// (that network stops being read meanwhile) and owns r.Payload.
	OnReceive func(r Received)
}

// Received is one accepted heartbeat.
type Received struct {
	Network string
	From    string         // sender node name
	Addr    netip.AddrPort // source address of the datagram
	At      time.Time      // receive time (Config.Now)
	Boot    uint64         // sender boot id
	Seq     uint64
	SentAt  time.Time // sender's clock
	// NewBoot is set on the first frame accepted from this sender boot on
	// this network: the sender (or this node) restarted.
	NewBoot bool
	// RTT is the round trip on this network measured from the echo of one
	// of this node's frames; 0 when the frame carried no usable echo.
	RTT     time.Duration
	Payload []byte
}

// Link describes what is known of one peer on one network.
type Link struct {
	Peer     string
	Network  string
	Addr     netip.AddrPort // where heartbeats are sent
	LastSeen time.Time      // last accepted frame; zero when none yet
	Boot     uint64         // sender boot id of the last accepted frame
	Seq      uint64         // highest sequence number accepted in that boot
	RTT      time.Duration  // last round-trip estimate; 0 when unknown
}

// Endpoint is one node's heartbeat endpoint for one module: a UDP socket
// per network, sending to every peer and receiving from them.
type Endpoint struct {
	node    string
	module  uint32
	codec   *codec
	now     func() time.Time
	log     hclog.Logger
	limiter *logLimiter
	maxSkew time.Duration
	boot    uint64
	onRecv  func(Received)
	created time.Time

	nets   []*netSocket // declaration order
	byName map[string]*netSocket

	sendMu  sync.Mutex
	seq     uint64 // guarded by sendMu
	sendBuf []byte // guarded by sendMu

	running   atomic.Bool
	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
}

type netSocket struct {
	name  string
	conn  *net.UDPConn
	local netip.AddrPort
	links []*link          // peer declaration order
	peers map[string]*link // by peer name
	netCounters
}

type link struct {
	peer    string
	network string
	addr    netip.AddrPort

	mu         sync.Mutex
	win        replayWindow
	lastSeen   time.Time
	rtt        time.Duration
	echoSentAt int64     // sender timestamp of the last accepted frame
	echoAt     time.Time // when it was accepted
}

// New validates cfg and binds one UDP socket per network. Call Run to
// receive, Send every pulse, and Close (or cancel Run's context) to stop.
// On error, New closes every Conn given in cfg.Networks too.
func New(cfg Config) (_ *Endpoint, err error) {
	defer func() {
		if err != nil {
			for _, n := range cfg.Networks {
				if n.Conn != nil {
					n.Conn.Close()
				}
			}
		}
	}()
	if err := validate(&cfg); err != nil {
		return nil, err
	}
	c, err := newCodec(cfg.Cluster, cfg.Key)
	if err != nil {
		return nil, err
	}
	e := &Endpoint{
		node:    cfg.Node,
		module:  cfg.Module,
		codec:   c,
		now:     cfg.Now,
		log:     cfg.Logger,
		maxSkew: cfg.MaxSkew,
		boot:    cfg.BootID,
		onRecv:  cfg.OnReceive,
		byName:  make(map[string]*netSocket, len(cfg.Networks)),
		closed:  make(chan struct{}),
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = hclog.NewNullLogger()
	}
	if e.maxSkew == 0 {
		e.maxSkew = DefaultMaxSkew
	}
	interval := cfg.LogInterval
	if interval == 0 {
		interval = DefaultLogInterval
	}
	e.limiter = &logLimiter{log: e.log, now: e.now, interval: interval, keys: map[string]*limitState{}}
	for e.boot == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("draw heartbeat boot id: %w", err)
		}
		e.boot = binary.BigEndian.Uint64(b[:])
	}
	dscp := cfg.DSCP
	if dscp == 0 {
		dscp = DefaultDSCP
	}

	for _, n := range cfg.Networks {
		s := &netSocket{name: n.Name, conn: n.Conn, peers: map[string]*link{}}
		if s.conn == nil {
			s.conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(n.Local))
			if err != nil {
				e.closeSockets()
				return nil, fmt.Errorf("bind heartbeat socket for network %q on %s: %w", n.Name, n.Local, err)
			}
		}
		s.local = s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
		e.nets = append(e.nets, s)
		e.byName[n.Name] = s
		if dscp > 0 {
			if err := setDSCP(s.conn, s.local.Addr(), dscp); err != nil {
				e.log.Debug("heartbeat DSCP marking unavailable", "network", n.Name, "error", err)
			}
		}
	}
	for _, p := range cfg.Peers {
		for _, s := range e.nets {
			addr, ok := p.Addrs[s.name]
			if !ok {
				continue
			}
			l := &link{peer: p.Name, network: s.name, addr: addr}
			s.links = append(s.links, l)
			s.peers[p.Name] = l
		}
	}
	e.created = e.now()
	return e, nil
}

func validate(cfg *Config) error {
	if err := checkName("node", cfg.Node); err != nil {
		return err
	}
	if len(cfg.Networks) == 0 {
		return errors.New("configure heartbeat: no network")
	}
	if len(cfg.Peers) == 0 {
		return errors.New("configure heartbeat: no peer")
	}
	if cfg.MaxSkew < 0 {
		return fmt.Errorf("configure heartbeat: negative max skew %s", cfg.MaxSkew)
	}
	nets := map[string]bool{}
	for _, n := range cfg.Networks {
		if err := checkName("network", n.Name); err != nil {
			return err
		}
		if nets[n.Name] {
			return fmt.Errorf("configure heartbeat: network %q listed twice", n.Name)
		}
		nets[n.Name] = true
		if n.Conn == nil && !n.Local.IsValid() {
			return fmt.Errorf("configure heartbeat: network %q has no local address", n.Name)
		}
	}
	peers := map[string]bool{}
	for _, p := range cfg.Peers {
		if err := checkName("peer", p.Name); err != nil {
			return err
		}
		if p.Name == cfg.Node {
			return fmt.Errorf("configure heartbeat: peer %q is this node", p.Name)
		}
		if peers[p.Name] {
			return fmt.Errorf("configure heartbeat: peer %q listed twice", p.Name)
		}
		peers[p.Name] = true
		if len(p.Addrs) == 0 {
			return fmt.Errorf("configure heartbeat: peer %q has no address", p.Name)
		}
		for network, a := range p.Addrs {
			if !nets[network] {
				return fmt.Errorf("configure heartbeat: peer %q has an address on network %q, which is not a heartbeat network", p.Name, network)
			}
			if !a.IsValid() || a.Port() == 0 {
				return fmt.Errorf("configure heartbeat: peer %q has no valid address and port on network %q", p.Name, network)
			}
		}
	}
	return nil
}

func checkName(what, v string) error {
	if v == "" || len(v) > maxNameSize {
		return fmt.Errorf("configure heartbeat: %s name must be 1..%d bytes, got %q", what, maxNameSize, v)
	}
	return nil
}

// BootID returns this endpoint's boot id, written in every frame it sends.
func (e *Endpoint) BootID() uint64 { return e.boot }

// LocalAddr returns the bound address on a network (useful with port 0).
func (e *Endpoint) LocalAddr(network string) (netip.AddrPort, bool) {
	s, ok := e.byName[network]
	if !ok {
		return netip.AddrPort{}, false
	}
	return s.local, true
}

// Run reads every network until ctx is cancelled or Close is called, then
// closes the sockets and returns once every reader has stopped: no
// OnReceive call happens after Run returns.
func (e *Endpoint) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("run heartbeat endpoint: already running")
	}
	for _, s := range e.nets {
		e.wg.Go(func() { e.readLoop(s) })
	}
	select {
	case <-ctx.Done():
	case <-e.closed:
	}
	e.Close()
	e.wg.Wait()
	return nil
}

// Close closes the sockets; a running Run returns. It does not wait for
// the readers (Run does), so OnReceive may call it.
func (e *Endpoint) Close() error {
	var err error
	e.closeOnce.Do(func() {
		close(e.closed)
		err = e.closeSockets()
	})
	return err
}

func (e *Endpoint) closeSockets() error {
	var errs []error
	for _, s := range e.nets {
		if err := s.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close heartbeat socket for network %q: %w", s.name, err))
		}
	}
	return errors.Join(errs...)
}

// Send sends one heartbeat carrying payload to every peer on every network.
// Each call uses a new sequence number. A network that fails does not stop
// the others; the returned error joins the failures, which are also counted
// (Stats) and logged with rate limiting, so callers may ignore it.
func (e *Endpoint) Send(payload []byte) error {
	if len(payload) > MaxPayloadSize {
		return fmt.Errorf("send heartbeat: payload is %d bytes, max %d", len(payload), MaxPayloadSize)
	}
	select {
	case <-e.closed:
		return fmt.Errorf("send heartbeat: %w", net.ErrClosed)
	default:
	}
	e.sendMu.Lock()
	defer e.sendMu.Unlock()
	e.seq++
	now := e.now()
	var errs []error
	for _, s := range e.nets {
		for _, l := range s.links {
			echoSentAt, hold := l.echo(now)
			f := frame{
				module: e.module, boot: e.boot, seq: e.seq, sentAt: now.UnixNano(),
				echoSentAt: echoSentAt, echoHold: int64(hold),
				sender: e.node, receiver: l.peer, network: s.name, payload: payload,
			}
			buf, err := e.codec.appendFrame(e.sendBuf[:0], &f)
			if err != nil {
				// Names and payload size were validated: a bug.
				return fmt.Errorf("send heartbeat: %w", err)
			}
			e.sendBuf = buf
			if _, err := s.conn.WriteToUDPAddrPort(buf, l.addr); err != nil {
				s.sendErrors.Add(1)
				err = fmt.Errorf("send heartbeat to %s on network %q (%s): %w", l.peer, s.name, l.addr, err)
				e.limiter.warn("send:"+s.name+":"+l.peer, "heartbeat send failed", "network", s.name, "peer", l.peer, "error", err)
				errs = append(errs, err)
				continue
			}
			s.sent.Add(1)
		}
	}
	return errors.Join(errs...)
}

func (e *Endpoint) readLoop(s *netSocket) {
	// One byte more than the largest frame: the kernel truncates a larger
	// datagram silently, and this way decode still sees it as oversized.
	buf := make([]byte, MaxFrameSize+1)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			e.limiter.warn("recv:"+s.name, "heartbeat receive failed", "network", s.name, "error", err)
			t := time.NewTimer(readRetryDelay)
			select {
			case <-e.closed:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		e.handle(s, buf[:n], from)
	}
}

// handle verifies one datagram and delivers it, or counts why not.
func (e *Endpoint) handle(s *netSocket, b []byte, from netip.AddrPort) {
	at := e.now()
	f, reason, err := e.codec.decode(b)
	if err != nil {
		e.drop(s, reason, from, err)
		return
	}
	switch {
	case f.receiver != e.node:
		e.drop(s, DropWrongReceiver, from, fmt.Errorf("frame from %q addressed to %q", f.sender, f.receiver))
		return
	case f.module != e.module:
		e.drop(s, DropWrongModule, from, fmt.Errorf("frame from %q for module %d on the port of module %d", f.sender, f.module, e.module))
		return
	case f.network != s.name:
		e.drop(s, DropWrongNetwork, from, fmt.Errorf("frame from %q for network %q arrived on network %q", f.sender, f.network, s.name))
		return
	}
	l := s.peers[f.sender]
	if l == nil {
		e.drop(s, DropUnknownSender, from, fmt.Errorf("%q is not a peer on network %q", f.sender, s.name))
		return
	}
	r, reason, err := l.accept(&f, at, e.maxSkew)
	if err != nil {
		e.drop(s, reason, from, err)
		return
	}
	s.accepted.Add(1)
	if r.NewBoot {
		e.log.Info("peer heartbeat from a new boot", "peer", f.sender, "network", s.name, "boot", fmt.Sprintf("%016x", f.boot))
	}
	r.Addr = from
	r.Payload = append([]byte(nil), f.payload...)
	if e.onRecv != nil {
		e.onRecv(r)
	}
}

func (e *Endpoint) drop(s *netSocket, reason DropReason, from netip.AddrPort, err error) {
	s.dropped[reason].Add(1)
	e.limiter.warn("drop:"+reason.String(), "dropped heartbeat", "network", s.name, "reason", reason.String(), "from", from.String(), "error", err.Error())
}

// accept applies replay protection to an authenticated frame addressed to
// this node and, when it passes, records it.
func (l *link) accept(f *frame, at time.Time, maxSkew time.Duration) (Received, DropReason, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sentAt := time.Unix(0, f.sentAt)
	newBoot := !l.win.valid || f.boot != l.win.boot
	if newBoot {
		// Sequence numbers say nothing across boots, so the sender's
		// clock has to: a captured boot is only replayable while its
		// timestamps are within maxSkew of now, and never once a later
		// boot was seen.
		if skew := at.Sub(sentAt); skew > maxSkew || skew < -maxSkew {
			return Received{}, DropSkew, fmt.Errorf("first frame of boot %016x from %q has timestamp %s, %s from this node's clock (max %s)",
				f.boot, f.sender, sentAt.UTC().Format(time.RFC3339Nano), skew, maxSkew)
		}
		if l.win.valid && f.sentAt <= l.win.lastSentAt {
			return Received{}, DropOldBoot, fmt.Errorf("boot %016x from %q is older than its current boot %016x",
				f.boot, f.sender, l.win.boot)
		}
		l.win.reset(f.boot, f.seq, f.sentAt)
	} else {
		if reason, ok := l.win.check(f.seq); !ok {
			return Received{}, reason, fmt.Errorf("sequence %d of boot %016x from %q (highest %d)", f.seq, f.boot, f.sender, l.win.max)
		}
		l.win.record(f.seq, f.sentAt)
	}
	l.lastSeen = at
	l.echoSentAt, l.echoAt = f.sentAt, at
	r := Received{
		Network: l.network, From: l.peer, At: at, Boot: f.boot, Seq: f.seq,
		SentAt: sentAt, NewBoot: newBoot,
	}
	if f.echoSentAt != 0 {
		// NTP-style: both timestamps are this node's clock, and the
		// peer's hold time is taken off, so clock offset does not matter.
		rtt := at.Sub(time.Unix(0, f.echoSentAt)) - time.Duration(f.echoHold)
		if rtt >= 0 && rtt <= maxRTT {
			l.rtt, r.RTT = rtt, rtt
		}
	}
	return r, 0, nil
}

// echo returns what to echo to the peer in a frame sent at now.
func (l *link) echo(now time.Time) (sentAt int64, hold time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.echoSentAt == 0 {
		return 0, 0
	}
	hold = now.Sub(l.echoAt)
	if hold < 0 || hold > maxRTT {
		return 0, 0
	}
	return l.echoSentAt, hold
}

// Stats returns a snapshot of the counters.
func (e *Endpoint) Stats() Stats {
	st := Stats{Networks: make(map[string]NetworkStats, len(e.nets))}
	for _, s := range e.nets {
		st.Networks[s.name] = s.snapshot()
	}
	return st
}

// Links describes every (peer, network) pair, networks in declaration
// order, then peers in declaration order.
func (e *Endpoint) Links() []Link {
	var out []Link
	for _, s := range e.nets {
		for _, l := range s.links {
			l.mu.Lock()
			out = append(out, Link{
				Peer: l.peer, Network: l.network, Addr: l.addr, LastSeen: l.lastSeen,
				Boot: l.win.boot, Seq: l.win.max, RTT: l.rtt,
			})
			l.mu.Unlock()
		}
	}
	return out
}

// LostNetworks lists, in declaration order, the networks on which some
// peer has not been heard for at least timeout at now. Time before the
// Endpoint was created does not count, so a node that just started does
// not report every network lost. This is for status display and warnings;
// the core decides failover from the Received stream itself.
func (e *Endpoint) LostNetworks(now time.Time, timeout time.Duration) []string {
	var lost []string
	for _, s := range e.nets {
		for _, l := range s.links {
			l.mu.Lock()
			last := l.lastSeen
			l.mu.Unlock()
			if last.Before(e.created) {
				last = e.created
			}
			if now.Sub(last) >= timeout {
				lost = append(lost, s.name)
				break
			}
		}
	}
	return lost
}
