package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/heartbeat"
	"github.com/halo-ha/halo/internal/pki"
	"github.com/halo-ha/halo/sdk/api"
)

const (
	// peerAttemptTimeout bounds one POST of a message to one of the peer's
	// addresses; the next address is tried after it.
	peerAttemptTimeout = time.Second
	// peerQueueSize bounds the messages waiting to be sent. Messages are
	// best effort (heartbeats carry the same facts), so a full queue drops.
	peerQueueSize = 16
	// peerDeliverTimeout bounds how long the handler of a received message
	// waits for the module's event loop to take it.
	peerDeliverTimeout = time.Second
	// maxPeerMessage bounds a message body; a message is a few hundred bytes.
	maxPeerMessage = 64 << 10
	// decodeLogInterval rate-limits warnings about undecodable heartbeats.
	decodeLogInterval = 10 * time.Second
)

// PeerMessagePath is the control channel route: the peer agent POSTs a
// mirror coordination message (JSON, see mirrorwire.go) for a module. Only
// the TCP API serves it usefully: the caller must present the certificate
// of the module's other node.
const PeerMessagePath = "/v1/peer/modules/{module}/messages"

// mirrorIO is what a mirror module's runner has beyond a farm's: the
// machine itself (for its heartbeat status and view), its heartbeat
// endpoint, the control channel to the peer, and the witness checkers.
type mirrorIO struct {
	m        *mirror.Machine
	peer     string
	pulse    time.Duration
	endpoint *heartbeat.Endpoint
	pacer    *heartbeatPacer
	inbox    *heartbeatInbox
	sender   *peerSender // nil without TLS material: messages cannot be sent
	witness  []Checker   // splitbrain checkers, run on CheckWitness only
	repl     Replication
	// lastSent is the last status sent, without its sequence number, so
	// that a changed status goes out at once instead of at the next pulse.
	lastSent []byte
	// witnessBusy: a witness probe is running.
	witnessBusy bool
	// shown are the resources the machine reported at the last refresh.
	shown map[string]string
	// peerMayHaveAnnounced: since this node last announced its addresses,
	// the peer was out of sight or serving, and may have announced them
	// (see reannounceAfterPeer).
	peerMayHaveAnnounced bool
}

// heartbeatInbox keeps the newest status received on each network until
// the event loop takes it. The heartbeat readers never block on a busy
// event loop, and after a stall the loop sees the latest status of each
// network rather than a backlog of old ones (the machine only needs the
// newest: its decisions are level-triggered).
type heartbeatInbox struct {
	peer   string
	logger hclog.Logger
	notify chan struct{}

	mu     sync.Mutex
	latest map[string]mirror.PeerStatus
	order  []string // networks with a pending status, in arrival order
	// cut drops what arrives on these networks, as if the link were
	// down: tests cut one network of two agents on loopback with it.
	cut map[string]bool

	undecodable atomic.Uint64
	lastWarn    atomic.Int64 // unix nanoseconds of the last warning
	// gaps counts the peer's heartbeats lost on each network (metrics).
	gaps heartbeatGaps
}

type receivedStatus struct {
	network string
	status  mirror.PeerStatus
}

func newHeartbeatInbox(peer string, logger hclog.Logger) *heartbeatInbox {
	return &heartbeatInbox{peer: peer, logger: logger, notify: make(chan struct{}, 1), latest: map[string]mirror.PeerStatus{}}
}

// receive is the endpoint's OnReceive: it runs on the network's reading
// goroutine and must not block.
func (in *heartbeatInbox) receive(r heartbeat.Received) {
	in.gaps.note(r)
	st, err := decodeStatus(r.Payload)
	if err == nil && st.Node != r.From {
		// The frame is authenticated as r.From's: a status naming another
		// node is a bug or a tampered sender, never something to act on.
		err = fmt.Errorf("status names node %q", st.Node)
	}
	if err != nil {
		in.undecodable.Add(1)
		now := time.Now().UnixNano()
		if last := in.lastWarn.Load(); now-last >= int64(decodeLogInterval) && in.lastWarn.CompareAndSwap(last, now) {
			in.logger.Warn("heartbeat payload not understood; dropped", "from", r.From, "network", r.Network, "error", err, "dropped", in.undecodable.Load())
		}
		return
	}
	in.mu.Lock()
	if in.cut[r.Network] {
		in.mu.Unlock()
		return
	}
	if _, pending := in.latest[r.Network]; !pending {
		in.order = append(in.order, r.Network)
	}
	in.latest[r.Network] = st
	in.mu.Unlock()
	select {
	case in.notify <- struct{}{}:
	default:
	}
}

// take returns the pending statuses and empties the inbox.
func (in *heartbeatInbox) take() []receivedStatus {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]receivedStatus, 0, len(in.order))
	for _, n := range in.order {
		out = append(out, receivedStatus{network: n, status: in.latest[n]})
		delete(in.latest, n)
	}
	in.order = in.order[:0]
	return out
}

// newMirrorIO sets up a mirror module's heartbeats (sockets bound now, so
// a port in use fails the start) and its control channel.
func (a *Agent) newMirrorIO(mod *config.Module, m *mirror.Machine, r *moduleRunner) (*mirrorIO, error) {
	c := a.opts.Cluster
	if c == nil {
		return nil, errors.New("a mirror module needs the cluster file (node addresses)")
	}
	if len(a.opts.ClusterKey) == 0 {
		return nil, errors.New("a mirror module needs the cluster key to authenticate heartbeats (run halo cluster init)")
	}
	peer := peerOf(mod, a.opts.Node)
	self, other := c.Node(a.opts.Node), c.Node(peer)
	if self == nil || other == nil {
		return nil, fmt.Errorf("nodes %s and %s must both be declared in %s", a.opts.Node, peer, c.File)
	}
	mi := &mirrorIO{m: m, peer: peer, pulse: mod.Heartbeat.Pulse, repl: newReplication(r)}
	mi.inbox = newHeartbeatInbox(peer, r.logger.Named("heartbeat"))
	hcfg := heartbeat.Config{
		Cluster: c.Name, Key: a.opts.ClusterKey, Node: a.opts.Node, Module: uint32(mod.ID),
		Peers:     []heartbeat.Peer{{Name: peer, Addrs: map[string]netip.AddrPort{}}},
		Logger:    r.logger.Named("heartbeat"),
		OnReceive: mi.inbox.receive,
	}
	port := uint16(mod.Heartbeat.Port)
	for _, net := range mod.Heartbeat.Networks {
		local, ok := self.Addresses[net]
		if !ok {
			return nil, fmt.Errorf("node %s has no address on heartbeat network %s", a.opts.Node, net)
		}
		hcfg.Networks = append(hcfg.Networks, heartbeat.Network{Name: net, Local: netip.AddrPortFrom(local, port)})
		if addr, ok := other.Addresses[net]; ok {
			hcfg.Peers[0].Addrs[net] = netip.AddrPortFrom(addr, port)
		}
	}
	ep, err := heartbeat.New(hcfg)
	if err != nil {
		return nil, fmt.Errorf("start heartbeats: %w", err)
	}
	mi.endpoint = ep
	mi.pacer = newHeartbeatPacer(ep, mod.Heartbeat.Pulse, mod.Heartbeat.Timeout, a.opts.Realtime, func(msg string) {
		r.events.add("log", "warn", msg)
	})
	if a.opts.TLS != nil {
		mi.sender = newPeerSender(mod.Name, peer, peerURLs(c, other, mod), a.opts.TLS.ClientConfig(peer), r.events, r.logger.Named("peer"))
	}
	return mi, nil
}

// peerOf returns the mirror module's other node.
func peerOf(mod *config.Module, node string) string {
	for _, n := range mod.Nodes {
		if n != node {
			return n
		}
	}
	return ""
}

// peerURLs lists where the peer's API takes messages for the module: its
// heartbeat networks first (they are the ones known to link the nodes),
// then its other addresses.
func peerURLs(c *config.Cluster, peer *config.Node, mod *config.Module) []string {
	var nets []string
	seen := map[string]bool{}
	for _, n := range append(append([]string(nil), mod.Heartbeat.Networks...), c.NetworkNames()...) {
		if _, ok := peer.Addresses[n]; ok && !seen[n] {
			seen[n] = true
			nets = append(nets, n)
		}
	}
	path := "/v1/peer/modules/" + url.PathEscape(mod.Name) + "/messages"
	urls := make([]string, 0, len(nets))
	for _, n := range nets {
		urls = append(urls, "https://"+net.JoinHostPort(peer.Addresses[n].String(), strconv.Itoa(c.APIPort))+path)
	}
	return urls
}

// peerSender posts coordination messages to the peer agent from its own
// goroutine: the event loop only queues them, so a slow or unreachable
// peer never holds the machine.
type peerSender struct {
	module, peer string
	urls         []string
	client       *http.Client
	events       *eventLog
	logger       hclog.Logger
	queue        chan mirror.Message
}

func newPeerSender(module, peer string, urls []string, tlsCfg *tls.Config, events *eventLog, logger hclog.Logger) *peerSender {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: peerAttemptTimeout}).DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: peerAttemptTimeout,
		// Keep the connection: a swap's messages then cost one round trip,
		// not a TLS handshake each.
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     time.Minute,
	}
	return &peerSender{
		module: module, peer: peer, urls: urls, events: events, logger: logger,
		client: &http.Client{Transport: tr},
		queue:  make(chan mirror.Message, peerQueueSize),
	}
}

// enqueue queues msg without blocking; a full queue drops it.
func (s *peerSender) enqueue(msg mirror.Message) {
	select {
	case s.queue <- msg:
	default:
		s.events.add("log", "warn", fmt.Sprintf("%s to %s dropped: %d messages already wait to be sent (heartbeats carry the same facts)", msg.Kind, s.peer, peerQueueSize))
	}
}

func (s *peerSender) run(ctx context.Context) {
	defer s.client.CloseIdleConnections()
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-s.queue:
			s.send(ctx, msg)
		}
	}
}

// send tries each of the peer's addresses in turn until one takes the
// message.
func (s *peerSender) send(ctx context.Context, msg mirror.Message) {
	body, err := encodeMessage(msg)
	if err != nil {
		s.events.add("log", "error", fmt.Sprintf("cannot send %s to %s: %v", msg.Kind, s.peer, err))
		return
	}
	var errs []error
	for _, u := range s.urls {
		err := s.post(ctx, u, body)
		if err == nil {
			s.events.add("log", "info", fmt.Sprintf("sent %s to %s", msg.Kind, s.peer))
			return
		}
		if ctx.Err() != nil {
			return
		}
		errs = append(errs, err)
	}
	if len(s.urls) == 0 {
		errs = append(errs, errors.New("the peer has no address"))
	}
	s.events.add("log", "warn", fmt.Sprintf("could not send %s to %s (heartbeats carry the same facts): %v", msg.Kind, s.peer, errors.Join(errs...)))
}

func (s *peerSender) post(ctx context.Context, u string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, peerAttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("post to %s: %w", u, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("post to %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil
	}
	var e api.Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = string(bytes.TrimSpace(b))
	}
	return fmt.Errorf("post to %s: %s: %s", u, resp.Status, e.Error)
}

// handlePeerMessage serves PeerMessagePath: a message from the module's
// other node, authenticated by its certificate, fed to the machine.
func (a *Agent) handlePeerMessage(w http.ResponseWriter, req *http.Request) {
	module := mux.Vars(req)["module"]
	r, ok := a.lookup(module)
	if !ok || r.mirror == nil {
		writeAPIError(w, http.StatusNotFound, fmt.Sprintf("no mirror module %q on node %s", module, a.opts.Node))
		return
	}
	id, err := pki.PeerIdentity(req.TLS)
	if err != nil {
		writeAPIError(w, http.StatusForbidden, fmt.Sprintf("peer messages need the mutual TLS API and a node certificate: %v", err))
		return
	}
	if id.Kind != pki.KindNode || id.Name != r.mirror.peer {
		writeAPIError(w, http.StatusForbidden, fmt.Sprintf("%s is not the other node of module %s (%s)", id, module, r.mirror.peer))
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxPeerMessage+1))
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("read message: %v", err))
		return
	}
	if len(body) > maxPeerMessage {
		writeAPIError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("message larger than %d bytes", maxPeerMessage))
		return
	}
	msg, err := decodeMessage(body)
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, err.Error())
		return
	}
	if msg.From != id.Name || msg.Status.Node != id.Name {
		writeAPIError(w, http.StatusForbidden, fmt.Sprintf("message claims to come from %q but the certificate is of %s", msg.From, id))
		return
	}
	r.events.add("log", "info", fmt.Sprintf("received %s from %s", msg.Kind, msg.From))
	ctx, cancel := context.WithTimeout(req.Context(), peerDeliverTimeout)
	defer cancel()
	select {
	case r.in <- mirror.PeerMessage{At: time.Now(), Msg: msg}:
	case <-ctx.Done():
		writeAPIError(w, http.StatusServiceUnavailable, fmt.Sprintf("module %s is busy; message not taken", module))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte("{}\n"))
}

func writeAPIError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(api.Error{Error: msg})
}
