package heartbeat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

const testModule = 7

// fakeClock is a settable Config.Now shared by the endpoints of a test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: testTime} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// sink collects deliveries.
type sink struct{ ch chan Received }

func newSink() *sink { return &sink{ch: make(chan Received, 1024)} }

func (s *sink) receive(r Received) { s.ch <- r }

func (s *sink) next(t *testing.T) Received {
	t.Helper()
	select {
	case r := <-s.ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat delivered within 5s")
		return Received{}
	}
}

func (s *sink) none(t *testing.T) {
	t.Helper()
	select {
	case r := <-s.ch:
		t.Fatalf("unexpected delivery: %+v", r)
	default:
	}
}

func listen(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ip+":0")))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	return c
}

func localOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// start creates the endpoint and runs it until the test ends.
func start(t *testing.T, cfg Config) *Endpoint {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("new endpoint %s: %v", cfg.Node, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run %s: %v", cfg.Node, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("run %s did not return after cancel", cfg.Node)
		}
	})
	return e
}

var testNetworks = []struct{ name, ip string }{{"default", "127.0.0.1"}, {"replication", "127.0.0.2"}}

// startPair runs nodes a and b of module testModule, each with a socket on
// 127.0.0.1 (network "default") and 127.0.0.2 ("replication").
func startPair(t *testing.T, now func() time.Time) (a, b *Endpoint, toA, toB *sink) {
	t.Helper()
	conns := map[string][]*net.UDPConn{}
	for _, node := range []string{"a", "b"} {
		for _, n := range testNetworks {
			conns[node] = append(conns[node], listen(t, n.ip))
		}
	}
	cfg := func(node, peer string, s *sink) Config {
		c := Config{
			Cluster: "test", Key: testKey, Node: node, Module: testModule, Now: now,
			Peers:     []Peer{{Name: peer, Addrs: map[string]netip.AddrPort{}}},
			OnReceive: s.receive,
		}
		for i, n := range testNetworks {
			c.Networks = append(c.Networks, Network{Name: n.name, Conn: conns[node][i]})
			c.Peers[0].Addrs[n.name] = localOf(conns[peer][i])
		}
		return c
	}
	toA, toB = newSink(), newSink()
	a = start(t, cfg("a", "b", toA))
	b = start(t, cfg("b", "a", toB))
	return a, b, toA, toB
}

// byNetwork receives n deliveries and indexes them by network.
func byNetwork(t *testing.T, s *sink, n int) map[string]Received {
	t.Helper()
	got := map[string]Received{}
	for range n {
		r := s.next(t)
		if _, dup := got[r.Network]; dup {
			t.Fatalf("two deliveries on network %s", r.Network)
		}
		got[r.Network] = r
	}
	return got
}

func TestRoundTripTwoNetworks(t *testing.T) {
	a, b, toA, toB := startPair(t, nil)

	if err := a.Send([]byte("hello")); err != nil {
		t.Fatalf("a sends: %v", err)
	}
	got := byNetwork(t, toB, 2)
	for _, n := range testNetworks {
		r, ok := got[n.name]
		if !ok {
			t.Fatalf("nothing on network %s", n.name)
		}
		wantAddr, _ := a.LocalAddr(n.name)
		if r.From != "a" || r.Seq != 1 || r.Boot != a.BootID() || !r.NewBoot || string(r.Payload) != "hello" || r.Addr != wantAddr {
			t.Errorf("network %s: got %+v", n.name, r)
		}
		if r.RTT != 0 {
			t.Errorf("network %s: RTT %s before any echo", n.name, r.RTT)
		}
		if d := time.Since(r.At); d < 0 || d > 5*time.Second {
			t.Errorf("network %s: receive time %s is not now", n.name, r.At)
		}
	}

	// b's answer echoes a's frame: a learns the round trip per network.
	if err := b.Send([]byte("world")); err != nil {
		t.Fatalf("b sends: %v", err)
	}
	for name, r := range byNetwork(t, toA, 2) {
		if r.From != "b" || string(r.Payload) != "world" || !r.NewBoot {
			t.Errorf("network %s: got %+v", name, r)
		}
		if r.RTT <= 0 || r.RTT > time.Second {
			t.Errorf("network %s: RTT %s, want a small positive loopback round trip", name, r.RTT)
		}
	}

	if err := a.Send([]byte("again")); err != nil {
		t.Fatalf("a sends again: %v", err)
	}
	for name, r := range byNetwork(t, toB, 2) {
		if r.Seq != 2 || r.NewBoot || string(r.Payload) != "again" || r.RTT <= 0 {
			t.Errorf("network %s: second frame %+v", name, r)
		}
	}

	st := b.Stats()
	for _, n := range testNetworks {
		ns := st.Networks[n.name]
		if ns.Accepted != 2 || ns.Sent != 1 || ns.SendErrors != 0 {
			t.Errorf("b stats on %s: %+v", n.name, ns)
		}
		for r, c := range ns.Dropped {
			if c != 0 {
				t.Errorf("b dropped %d frames on %s as %s", c, n.name, r)
			}
		}
		if len(ns.Dropped) != int(numDropReasons) {
			t.Errorf("b stats on %s list %d reasons, want all %d", n.name, len(ns.Dropped), numDropReasons)
		}
	}
	links := b.Links()
	if len(links) != 2 {
		t.Fatalf("b has %d links, want 2", len(links))
	}
	for i, l := range links {
		if l.Peer != "a" || l.Network != testNetworks[i].name || l.Boot != a.BootID() || l.Seq != 2 || l.LastSeen.IsZero() || l.RTT <= 0 {
			t.Errorf("link %d: %+v", i, l)
		}
	}
}

// receiver runs node b alone on network "default" with peers a and
// sentinel, for tests that craft a's datagrams by hand.
type receiver struct {
	e        *Endpoint
	sink     *sink
	clock    *fakeClock
	raw      *net.UDPConn
	codec    *codec
	sentinel uint64 // last sentinel sequence number
	drops    uint64 // drops waited for so far
}

func newReceiver(t *testing.T, opts ...func(*Config)) *receiver {
	t.Helper()
	r := &receiver{sink: newSink(), clock: newFakeClock(), raw: listen(t, "127.0.0.1"), codec: mustCodec(t, "test", testKey)}
	t.Cleanup(func() { r.raw.Close() })
	any := netip.MustParseAddrPort("127.0.0.1:9") // never sent to in these tests
	cfg := Config{
		Cluster: "test", Key: testKey, Node: "b", Module: testModule, Now: r.clock.Now,
		Networks: []Network{{Name: "default", Conn: listen(t, "127.0.0.1")}},
		Peers: []Peer{
			{Name: "a", Addrs: map[string]netip.AddrPort{"default": any}},
			{Name: "sentinel", Addrs: map[string]netip.AddrPort{"default": any}},
		},
		OnReceive: r.sink.receive,
	}
	for _, o := range opts {
		o(&cfg)
	}
	r.e = start(t, cfg)
	return r
}

// frame returns a valid frame from a to b on "default", sent now.
func (r *receiver) frame(boot, seq uint64) frame {
	return frame{
		module: testModule, boot: boot, seq: seq, sentAt: r.clock.Now().UnixNano(),
		sender: "a", receiver: "b", network: "default", payload: []byte("p"),
	}
}

func (r *receiver) encode(t *testing.T, f frame) []byte { return mustEncode(t, r.codec, f) }

func (r *receiver) send(t *testing.T, b []byte) {
	t.Helper()
	to, _ := r.e.LocalAddr("default")
	if _, err := r.raw.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatalf("inject datagram: %v", err)
	}
}

// waitDropped waits until the receiver counted one more drop, and checks it
// was counted as reason (want drops so far for that reason).
func (r *receiver) waitDropped(t *testing.T, reason DropReason, want uint64) {
	t.Helper()
	r.drops++
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := r.e.Stats()
		var total uint64
		for _, rs := range DropReasons() {
			total += st.Dropped(rs)
		}
		if total >= r.drops {
			if got := st.Dropped(reason); got != want || total != r.drops {
				t.Fatalf("dropped as %s: %d, want %d; %d drops in all, want %d (%+v)", reason, got, want, total, r.drops, st)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s drop within 5s (%+v)", reason, st)
		}
		select {
		case d := <-r.sink.ch:
			t.Fatalf("waiting for a %s drop, got a delivery: %+v", reason, d)
		case <-time.After(time.Millisecond):
		}
	}
}

// flush sends a frame from the sentinel peer and checks it is the next
// delivery: everything injected before it was handled, and nothing else
// was delivered.
func (r *receiver) flush(t *testing.T) {
	t.Helper()
	r.sentinel++
	f := r.frame(1, r.sentinel)
	f.sender = "sentinel"
	r.send(t, r.encode(t, f))
	if got := r.sink.next(t); got.From != "sentinel" || got.Seq != r.sentinel {
		t.Fatalf("delivered before the sentinel: %+v", got)
	}
	r.sink.none(t)
}

// step is one injected datagram and what must become of it.
type step struct {
	build   func(t *testing.T, r *receiver) []byte
	advance time.Duration // clock change before building
	deliver bool          // accepted, with this sequence number
	seq     uint64
	drop    DropReason
}

func deliver(boot, seq uint64) step {
	return step{build: func(t *testing.T, r *receiver) []byte { return r.encode(t, r.frame(boot, seq)) }, deliver: true, seq: seq}
}

func dropped(reason DropReason, build func(t *testing.T, r *receiver) []byte) step {
	return step{build: build, drop: reason}
}

func withFrame(boot, seq uint64, mut func(*frame)) func(t *testing.T, r *receiver) []byte {
	return func(t *testing.T, r *receiver) []byte {
		f := r.frame(boot, seq)
		mut(&f)
		return r.encode(t, f)
	}
}

func TestDropsAreCountedAndNotDelivered(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"forged MAC", []step{dropped(DropBadMAC, func(t *testing.T, r *receiver) []byte {
			b := r.encode(t, r.frame(1, 1))
			b[len(b)-5] ^= 0x10
			return b
		})}},
		{"forged payload", []step{dropped(DropBadMAC, func(t *testing.T, r *receiver) []byte {
			b := r.encode(t, r.frame(1, 1))
			b[len(b)-macSize-1] = 'q'
			return b
		})}},
		{"wrong key", []step{dropped(DropBadMAC, func(t *testing.T, r *receiver) []byte {
			f := r.frame(1, 1)
			return mustEncode(t, mustCodec(t, "test", otherKey), f)
		})}},
		{"truncated", []step{dropped(DropMalformed, func(t *testing.T, r *receiver) []byte {
			b := r.encode(t, r.frame(1, 1))
			return b[:len(b)-1]
		})}},
		{"garbage", []step{dropped(DropMalformed, func(*testing.T, *receiver) []byte { return []byte("GET / HTTP/1.0\r\n\r\n") })}},
		{"oversized", []step{dropped(DropOversized, func(t *testing.T, r *receiver) []byte {
			return append(r.encode(t, r.frame(1, 1)), make([]byte, MaxFrameSize)...)
		})}},
		{"wrong receiver", []step{dropped(DropWrongReceiver, withFrame(1, 1, func(f *frame) { f.receiver = "c" }))}},
		{"wrong cluster", []step{dropped(DropWrongCluster, func(t *testing.T, r *receiver) []byte {
			return mustEncode(t, mustCodec(t, "other", testKey), r.frame(1, 1))
		})}},
		{"wrong module", []step{dropped(DropWrongModule, withFrame(1, 1, func(f *frame) { f.module = 8 }))}},
		{"wrong network", []step{dropped(DropWrongNetwork, withFrame(1, 1, func(f *frame) { f.network = "replication" }))}},
		{"unknown sender", []step{dropped(DropUnknownSender, withFrame(1, 1, func(f *frame) { f.sender = "mallory" }))}},
		{"replayed exact frame", []step{
			deliver(1, 1),
			dropped(DropReplay, func(t *testing.T, r *receiver) []byte { return r.encode(t, r.frame(1, 1)) }),
		}},
		{"replayed frame later", []step{
			deliver(1, 1),
			deliver(1, 2),
			{advance: time.Second, build: withFrame(1, 1, func(*frame) {}), drop: DropReplay},
		}},
		{"old sequence outside the window", []step{
			deliver(1, 100),
			dropped(DropStale, withFrame(1, 100-ReplayWindow, func(*frame) {})),
			deliver(1, 100-ReplayWindow+1),
		}},
		{"reordered within the window", []step{
			deliver(1, 10),
			deliver(1, 7),
			deliver(1, 9),
			dropped(DropReplay, withFrame(1, 7, func(*frame) {})),
			deliver(1, 11),
		}},
		{"new boot with stale timestamp", []step{
			deliver(1, 1),
			dropped(DropSkew, withFrame(2, 1, func(f *frame) { f.sentAt -= int64(31 * time.Second) })),
			dropped(DropSkew, withFrame(2, 1, func(f *frame) { f.sentAt += int64(31 * time.Second) })),
			deliver(1, 2), // the current boot is undisturbed
		}},
		{"first frame with stale timestamp", []step{
			dropped(DropSkew, withFrame(1, 1, func(f *frame) { f.sentAt -= int64(time.Hour) })),
			deliver(1, 2),
		}},
		{"skew at the limit is accepted", []step{
			{build: withFrame(1, 1, func(f *frame) { f.sentAt -= int64(DefaultMaxSkew) }), deliver: true, seq: 1},
		}},
		{"old boot replayed after a restart", []step{
			{build: withFrame(1, 5, func(f *frame) { f.sentAt -= int64(2 * time.Second) }), deliver: true, seq: 5},
			deliver(2, 1),
			dropped(DropOldBoot, withFrame(1, 6, func(f *frame) { f.sentAt -= int64(time.Second) })),
			deliver(2, 2),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReceiver(t)
			want := map[DropReason]uint64{}
			for i, s := range tc.steps {
				r.clock.Advance(s.advance)
				r.send(t, s.build(t, r))
				if s.deliver {
					got := r.sink.next(t)
					if got.From != "a" || got.Seq != s.seq || got.Network != "default" || string(got.Payload) != "p" {
						t.Fatalf("step %d: delivered %+v, want seq %d from a", i, got, s.seq)
					}
					continue
				}
				want[s.drop]++
				r.waitDropped(t, s.drop, want[s.drop])
			}
			r.flush(t)
			st := r.e.Stats().Networks["default"]
			for _, reason := range DropReasons() {
				if st.Dropped[reason] != want[reason] {
					t.Errorf("dropped as %s: %d, want %d", reason, st.Dropped[reason], want[reason])
				}
			}
		})
	}
}

func TestNewBootIsReported(t *testing.T) {
	r := newReceiver(t)
	r.send(t, r.encode(t, r.frame(1, 1)))
	if got := r.sink.next(t); !got.NewBoot || got.Boot != 1 {
		t.Fatalf("first frame: %+v", got)
	}
	r.send(t, r.encode(t, r.frame(1, 2)))
	if got := r.sink.next(t); got.NewBoot {
		t.Fatalf("second frame of the same boot marked new: %+v", got)
	}
	r.clock.Advance(time.Second)
	r.send(t, r.encode(t, r.frame(2, 1))) // the peer restarted: sequence starts over
	if got := r.sink.next(t); !got.NewBoot || got.Boot != 2 || got.Seq != 1 {
		t.Fatalf("restarted peer: %+v", got)
	}
}

func TestMaxSkewIsConfigurable(t *testing.T) {
	r := newReceiver(t, func(c *Config) { c.MaxSkew = time.Second })
	r.send(t, r.encode(t, withFrameValue(r.frame(1, 1), func(f *frame) { f.sentAt -= int64(2 * time.Second) })))
	r.waitDropped(t, DropSkew, 1)
	r.flush(t)
}

func withFrameValue(f frame, mut func(*frame)) frame {
	mut(&f)
	return f
}

func TestLossOnOneNetwork(t *testing.T) {
	clock := newFakeClock()
	a, b, _, toB := startPair(t, clock.Now)
	const timeout = 1500 * time.Millisecond

	if lost := b.LostNetworks(clock.Now(), timeout); lost != nil {
		t.Fatalf("lost right after start: %v", lost)
	}
	if lost := b.LostNetworks(clock.Now().Add(timeout), timeout); !slices.Equal(lost, []string{"default", "replication"}) {
		t.Fatalf("lost after a silent timeout since start: %v", lost)
	}
	if err := a.Send([]byte("1")); err != nil {
		t.Fatal(err)
	}
	byNetwork(t, toB, 2)

	// Cut "replication" on a's side: its frames stop, "default" goes on.
	if err := a.byName["replication"].conn.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		clock.Advance(time.Second)
		err := a.Send([]byte("more"))
		if err == nil || !strings.Contains(err.Error(), `network "replication"`) || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("send %d after the cut: err = %v, want the replication failure", i, err)
		}
		r := toB.next(t)
		if r.Network != "default" || r.Seq != uint64(i+2) {
			t.Fatalf("send %d after the cut: delivered %+v", i, r)
		}
	}
	toB.none(t)

	now := clock.Now() // 3s after the last frame on replication, 0s on default
	if lost := b.LostNetworks(now, timeout); !slices.Equal(lost, []string{"replication"}) {
		t.Fatalf("lost networks = %v, want [replication]", lost)
	}
	if lost := b.LostNetworks(now, 4*time.Second); lost != nil {
		t.Fatalf("lost networks with a 4s timeout = %v, want none", lost)
	}
	st := a.Stats().Networks
	if st["replication"].SendErrors != 3 || st["replication"].Sent != 1 || st["default"].Sent != 4 || st["default"].SendErrors != 0 {
		t.Fatalf("a stats: %+v", st)
	}
}

func TestCloseStopsRunAndSend(t *testing.T) {
	c := Config{
		Cluster: "test", Key: testKey, Node: "a", Module: 1,
		Networks: []Network{{Name: "default", Local: netip.MustParseAddrPort("127.0.0.1:0")}},
		Peers:    []Peer{{Name: "b", Addrs: map[string]netip.AddrPort{"default": netip.MustParseAddrPort("127.0.0.1:9")}}},
	}
	e, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if addr, ok := e.LocalAddr("default"); !ok || addr.Port() == 0 || addr.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("local address %s, %v", addr, ok)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(context.Background()) }()
	if err := e.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after close")
	}
	if err := e.Send(nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := e.Run(context.Background()); err == nil {
		t.Fatal("second run accepted")
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("pair", func(t *testing.T) {
		a, b, toA, toB := startPair(t, nil)
		for range 3 {
			if err := a.Send([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if err := b.Send([]byte("y")); err != nil {
				t.Fatal(err)
			}
			byNetwork(t, toA, 2)
			byNetwork(t, toB, 2)
		}
	}) // cleanups cancel both endpoints and wait for Run
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSendRejectsOversizedPayload(t *testing.T) {
	a, _, _, _ := startPair(t, nil)
	if err := a.Send(make([]byte, MaxPayloadSize+1)); err == nil {
		t.Fatal("oversized payload sent")
	}
	if st := a.Stats().Networks["default"]; st.Sent != 0 {
		t.Fatalf("sent %d frames", st.Sent)
	}
}

func TestDropLogIsRateLimited(t *testing.T) {
	var buf syncBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Warn})
	r := newReceiver(t, func(c *Config) { c.Logger = logger })
	forged := func() []byte {
		b := r.encode(t, r.frame(1, 1))
		b[len(b)-1] ^= 1
		return b
	}
	for i := range 5 {
		r.send(t, forged())
		r.waitDropped(t, DropBadMAC, uint64(i+1))
	}
	if n := strings.Count(buf.String(), "dropped heartbeat"); n != 1 {
		t.Fatalf("%d log lines for 5 drops within the interval, want 1:\n%s", n, buf.String())
	}
	r.clock.Advance(DefaultLogInterval)
	r.send(t, forged())
	r.waitDropped(t, DropBadMAC, 6)
	// The drop is counted before its line is logged: give the line a moment.
	out := buf.String()
	for deadline := time.Now().Add(2 * time.Second); strings.Count(out, "dropped heartbeat") < 2 && time.Now().Before(deadline); out = buf.String() {
		time.Sleep(time.Millisecond)
	}
	if n := strings.Count(out, "dropped heartbeat"); n != 2 || !strings.Contains(out, "suppressed=4") || !strings.Contains(out, "reason=bad_mac") {
		t.Fatalf("after the interval, want a second line reporting 4 suppressed:\n%s", out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestConfigValidation(t *testing.T) {
	peerAddr := netip.MustParseAddrPort("127.0.0.1:9")
	base := func() Config {
		return Config{
			Cluster: "test", Key: testKey, Node: "a", Module: 1,
			Networks: []Network{{Name: "default", Local: netip.MustParseAddrPort("127.0.0.1:0")}},
			Peers:    []Peer{{Name: "b", Addrs: map[string]netip.AddrPort{"default": peerAddr}}},
		}
	}
	for _, tc := range []struct {
		name, want string
		mut        func(*Config)
	}{
		{"short key", "at least 32", func(c *Config) { c.Key = c.Key[:16] }},
		{"no cluster", "cluster name", func(c *Config) { c.Cluster = "" }},
		{"no node", "node name", func(c *Config) { c.Node = "" }},
		{"no network", "no network", func(c *Config) { c.Networks = nil }},
		{"no peer", "no peer", func(c *Config) { c.Peers = nil }},
		{"duplicate network", "listed twice", func(c *Config) { c.Networks = append(c.Networks, c.Networks[0]) }},
		{"no local address", "no local address", func(c *Config) { c.Networks[0].Local = netip.AddrPort{} }},
		{"peer is self", "is this node", func(c *Config) { c.Peers[0].Name = "a" }},
		{"peer on unknown network", `network "other"`, func(c *Config) { c.Peers[0].Addrs["other"] = peerAddr }},
		{"peer without port", "valid address and port", func(c *Config) {
			c.Peers[0].Addrs["default"] = netip.AddrPortFrom(peerAddr.Addr(), 0)
		}},
		{"negative skew", "negative max skew", func(c *Config) { c.MaxSkew = -time.Second }},
		{"address in use", "bind heartbeat socket", func(c *Config) {
			taken := listen(t, "127.0.0.1")
			t.Cleanup(func() { taken.Close() })
			c.Networks[0].Local = localOf(taken)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mut(&c)
			e, err := New(c)
			if err == nil {
				e.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestNewClosesGivenConnsOnError(t *testing.T) {
	conn := listen(t, "127.0.0.1")
	_, err := New(Config{
		Cluster: "test", Key: testKey[:8], Node: "a", Module: 1,
		Networks: []Network{{Name: "default", Conn: conn}},
		Peers:    []Peer{{Name: "b", Addrs: map[string]netip.AddrPort{"default": netip.MustParseAddrPort("127.0.0.1:9")}}},
	})
	if err == nil {
		t.Fatal("short key accepted")
	}
	if _, err := conn.WriteToUDPAddrPort([]byte("x"), localOf(conn)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("given conn still open after New failed: write err = %v", err)
	}
}

func ExampleEndpoint() {
	a, err := New(Config{
		Cluster: "prod", Key: bytes.Repeat([]byte{1}, 32), Node: "node1", Module: 12,
		Networks: []Network{{Name: "default", Local: netip.MustParseAddrPort("127.0.0.1:0")}},
		Peers:    []Peer{{Name: "node2", Addrs: map[string]netip.AddrPort{"default": netip.MustParseAddrPort("127.0.0.1:20012")}}},
		OnReceive: func(r Received) {
			// Hand r to the agent's event loop; decode r.Payload with peerstatus.Decode.
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	_ = a.Send([]byte("status")) // every pulse
	cancel()
	fmt.Println(<-done)
	// Output: <nil>
}
