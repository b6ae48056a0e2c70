package wire

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/halo-ha/halo/internal/replication/apply"
	"github.com/halo-ha/halo/internal/replication/op"
)

// trees opens n fresh directories as a source and a target tree.
func trees(t testing.TB, n int) (srcDirs, dstDirs []string, src, dst *apply.Tree) {
	t.Helper()
	for range n {
		srcDirs = append(srcDirs, t.TempDir())
		dstDirs = append(dstDirs, t.TempDir())
	}
	var err error
	if src, err = apply.Open(srcDirs...); err != nil {
		t.Fatal(err)
	}
	if dst, err = apply.Open(dstDirs...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close(); dst.Close() })
	return
}

// Random operations applied on a source tree and streamed to a target
// tree leave both identical: contents, holes, names, types, modes,
// owners, times, xattrs, symlinks, hard links, FIFOs.
func TestStreamReproducesTree(t *testing.T) {
	for _, tc := range []struct {
		mode Mode
		ops  int
	}{
		{ModeSync, 10000},
		{ModeAsync, 10000},
		{ModeDurable, 1000},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			srcDirs, dstDirs, src, dst := trees(t, 2)
			client, server := tcpPair(t)
			st := startStream(t, client, server, dst, 2, SenderOptions{Mode: tc.mode}, ReceiverOptions{})
			ctx := context.Background()
			start := time.Now()
			sent := replicate(t, ctx, st.s, src, srcDirs, tc.ops, uint64(tc.mode)*1000+7)
			if err := st.s.Barrier(ctx); err != nil {
				t.Fatal(err)
			}
			stats := st.s.Stats()
			t.Logf("%s: %d operations replicated in %v (%d frames, %d bytes)", tc.mode, sent, time.Since(start).Round(time.Millisecond), stats.FramesSent, stats.BytesSent)
			if stats.Applied != uint64(sent)+1 || stats.Durable != stats.Applied || stats.InFlight != 0 {
				t.Fatalf("stats after barrier: %+v, %d sent", stats, sent)
			}
			for i := range srcDirs {
				compareTrees(t, srcDirs[i], dstDirs[i])
			}
			if err := st.closeAndWait(t); !closedBySource(err) {
				t.Fatalf("Serve after the sender closed: %v", err)
			}
		})
	}
}

// Submit returns only once the peer applied the operation (sync mode),
// whatever the concurrency; waiters are released as acknowledgements
// arrive.
func TestSyncModeWaitsForApply(t *testing.T) {
	target := &fakeTarget{}
	client, server := tcpPair(t)
	st := startStream(t, client, server, target, 1, SenderOptions{Mode: ModeSync}, ReceiverOptions{})
	var wg sync.WaitGroup
	var failures atomic.Int32
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				p := fmt.Sprintf("g%d/f%d", g, i)
				if err := st.s.Submit(context.Background(), op.Op{Kind: op.Write, Path: p, Data: []byte("x")}); err != nil {
					t.Error(err)
					return
				}
				if !target.has(p) {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d Submit calls returned before the peer applied the operation", n)
	}
	if target.count() != 3200 || st.s.Stats().Applied != 3200 {
		t.Fatalf("applied %d, acknowledged %d", target.count(), st.s.Stats().Applied)
	}
	// One goroutine's operations are applied in its order.
	last := map[string]int{}
	for _, o := range target.applied {
		var g, i int
		fmt.Sscanf(o.Path, "g%d/f%d", &g, &i)
		key := fmt.Sprint(g)
		if prev, ok := last[key]; ok && i != prev+1 {
			t.Fatalf("goroutine %d: operation %d applied after %d", g, i, prev)
		}
		last[key] = i
	}
}

// In sync mode a write needs no flush, an fsync waits for one; in durable
// mode every operation waits for one.
func TestDurabilitySemantics(t *testing.T) {
	ctx := context.Background()
	t.Run("sync", func(t *testing.T) {
		target := &fakeTarget{flushGate: make(chan struct{})}
		client, server := tcpPair(t)
		st := startStream(t, client, server, target, 1, SenderOptions{Mode: ModeSync}, ReceiverOptions{})
		done := make(chan error, 1)
		go func() { done <- st.s.Submit(ctx, op.Op{Kind: op.Write, Path: "a", Data: []byte("x")}) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a write in sync mode waited for the peer's disk")
		}
		go func() { done <- st.s.Sync(ctx, op.Op{Kind: op.Fsync, Path: "a"}) }()
		select {
		case err := <-done:
			t.Fatalf("fsync returned (%v) before the peer flushed", err)
		case <-time.After(300 * time.Millisecond):
		}
		// A write submitted meanwhile is still only waiting to be applied.
		if err := st.s.Submit(ctx, op.Op{Kind: op.Write, Path: "b", Data: []byte("y")}); err != nil {
			t.Fatal(err)
		}
		close(target.flushGate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !target.isSynced("a") {
			t.Fatal("fsync acknowledged without a flush covering it")
		}
		// Sync of a write (O_SYNC) is flagged durable for the target.
		if err := st.s.Sync(ctx, op.Op{Kind: op.Write, Path: "c", Data: []byte("z")}); err != nil {
			t.Fatal(err)
		}
		if !target.isSynced("c") || target.durable[len(target.durable)-1] != true {
			t.Fatal("O_SYNC write not made durable")
		}
		if target.durable[0] || target.durable[2] {
			t.Fatal("plain writes flagged durable in sync mode")
		}
	})
	t.Run("durable", func(t *testing.T) {
		target := &fakeTarget{flushGate: make(chan struct{})}
		client, server := tcpPair(t)
		st := startStream(t, client, server, target, 1, SenderOptions{Mode: ModeDurable}, ReceiverOptions{})
		done := make(chan error, 1)
		go func() { done <- st.s.Submit(ctx, op.Op{Kind: op.Mkdir, Path: "d", Mode: 0o755}) }()
		eventually(t, 10*time.Second, "the target to apply", func() bool { return target.count() == 1 })
		select {
		case err := <-done:
			t.Fatalf("durable-mode write returned (%v) before the peer flushed", err)
		case <-time.After(300 * time.Millisecond):
		}
		close(target.flushGate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !target.isSynced("d") || !target.durable[0] {
			t.Fatal("durable-mode operation not made durable")
		}
	})
	t.Run("barrier", func(t *testing.T) {
		target := &fakeTarget{}
		client, server := tcpPair(t)
		st := startStream(t, client, server, target, 1, SenderOptions{Mode: ModeAsync}, ReceiverOptions{})
		for i := range 100 {
			if err := st.s.Submit(ctx, op.Op{Kind: op.Create, Path: fmt.Sprint(i), Mode: 0o644}); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.s.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		target.mu.Lock()
		defer target.mu.Unlock()
		if len(target.applied) != 100 || target.syncAlls != 1 {
			t.Fatalf("barrier: %d applied, %d syncs of everything", len(target.applied), target.syncAlls)
		}
	})
}

// Acknowledgements settle waiters in sequence order; one that goes
// backwards, or acknowledges what was never sent, ends the stream.
func TestAckOrderAndValidity(t *testing.T) {
	ctx := context.Background()
	open := func(t *testing.T) (*Sender, *rawPeer) {
		client, server := tcpPair(t)
		peer := newRawPeer(t, server)
		go peer.acceptHello(testHello("node2", 1))
		s, err := NewSender(ctx, client, SenderOptions{Mode: ModeSync, Hello: testHello("node1", 1), PingInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		t.Cleanup(func() { server.Close() }) // first: the sender's close drains until the peer closes
		return s, peer
	}
	s, peer := open(t)
	results := make([]chan error, 3)
	for i := range results {
		results[i] = make(chan error, 1)
		go func() { results[i] <- s.Submit(ctx, op.Op{Kind: op.Create, Path: fmt.Sprint(i), Mode: 0o644}) }()
		// Wait for the frame so that seq i+1 is operation i.
		f := peer.read()
		if f.Type != FrameOps {
			t.Fatalf("got %s", f.Type)
		}
	}
	peer.send(FrameAck, appendUvarints(nil, 2, 0))
	for i := range 2 {
		if err := <-results[i]; err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-results[2]:
		t.Fatalf("operation 3 settled (%v) by an ack of 2", err)
	case <-time.After(100 * time.Millisecond):
	}
	peer.send(FrameAck, appendUvarints(nil, 3, 1))
	if err := <-results[2]; err != nil {
		t.Fatal(err)
	}

	for _, bad := range [][2]uint64{{1, 1}, {2, 0}, {4, 2}, {2, 3}} {
		t.Run(fmt.Sprint(bad), func(t *testing.T) {
			s, peer := open(t)
			for i := range 3 {
				go s.Submit(ctx, op.Op{Kind: op.Create, Path: fmt.Sprint(i), Mode: 0o644})
				peer.read()
			}
			peer.send(FrameAck, appendUvarints(nil, 2, 1))
			peer.send(FrameAck, appendUvarints(nil, bad[0], bad[1]))
			<-s.Done()
			if err := s.Err(); !errors.Is(err, ErrProtocol) || !errors.Is(err, ErrDegraded) {
				t.Fatalf("stream error %v", err)
			}
			if err := s.Submit(ctx, op.Op{Kind: op.Create, Path: "x"}); !errors.Is(err, ErrDegraded) {
				t.Fatalf("submit after a protocol error: %v", err)
			}
			t.Logf("sender: %v", s.Err())
			f := peer.read()
			if f.Type != FrameError {
				t.Fatalf("no error frame to the peer: %s", f.Type)
			}
			t.Logf("reason sent: %s", f.Payload)
			peer.conn.Close()
		})
	}
}

// In async mode Submit returns at once while the peer keeps up, and
// blocks once the oldest unapplied operation is older than MaxLag or the
// window is full.
func TestAsyncLagBound(t *testing.T) {
	ctx := context.Background()
	gate := make(chan struct{})
	target := &fakeTarget{applyGate: gate}
	client, server := tcpPair(t)
	const maxLag = 300 * time.Millisecond
	st := startStream(t, client, server, target, 1, SenderOptions{Mode: ModeAsync, MaxLag: maxLag, StallTimeout: time.Minute}, ReceiverOptions{})
	start := time.Now()
	for i := range 50 {
		if err := st.s.Submit(ctx, op.Op{Kind: op.Create, Path: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > maxLag {
		t.Fatalf("50 async submits took %v with the peer stuck", d)
	}
	if lag := st.s.Stats().Lag; lag <= 0 {
		t.Fatalf("lag %v", lag)
	}
	time.Sleep(maxLag + 50*time.Millisecond)
	blocked := make(chan error, 1)
	go func() { blocked <- st.s.Submit(ctx, op.Op{Kind: op.Create, Path: "late"}) }()
	select {
	case err := <-blocked:
		t.Fatalf("submit returned (%v) with the peer %v behind", err, st.s.Stats().Lag)
	case <-time.After(200 * time.Millisecond):
	}
	close(gate)
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	if err := st.s.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if target.count() != 51 {
		t.Fatalf("%d applied", target.count())
	}

	// The window bounds operations in flight too.
	gate2 := make(chan struct{})
	target2 := &fakeTarget{applyGate: gate2}
	c2, s2 := tcpPair(t)
	st2 := startStream(t, c2, s2, target2, 1, SenderOptions{Mode: ModeAsync, MaxLag: time.Hour, WindowOps: 10}, ReceiverOptions{})
	for i := range 10 {
		if err := st2.s.Submit(ctx, op.Op{Kind: op.Create, Path: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := st2.s.Submit(tctx, op.Op{Kind: op.Create, Path: "11th"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("11th submit with a window of 10: %v", err)
	}
	close(gate2)
}

// A peer that stops acknowledging is reported stalled; Degrade releases
// the writers with ErrDegraded; acknowledgements that resume first are
// reported too.
func TestStallAndDegrade(t *testing.T) {
	ctx := context.Background()
	gate := make(chan struct{})
	target := &fakeTarget{applyGate: gate}
	client, server := tcpPair(t)
	stalled := make(chan time.Time, 1)
	resumed := make(chan struct{}, 1)
	opts := SenderOptions{
		Mode:         ModeSync,
		StallTimeout: 300 * time.Millisecond,
		PingInterval: 50 * time.Millisecond,
		OnStall:      func(since time.Time) { stalled <- since },
		OnResume:     func() { resumed <- struct{}{} },
	}
	st := startStream(t, client, server, target, 1, opts, ReceiverOptions{})
	before := time.Now()
	first := make(chan error, 1)
	go func() { first <- st.s.Submit(ctx, op.Op{Kind: op.Create, Path: "a"}) }()
	var since time.Time
	select {
	case since = <-stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("no stall reported")
	}
	if since.Before(before) || time.Since(since) < opts.StallTimeout {
		t.Fatalf("stalled since %v (submitted at %v)", since, before)
	}
	if st.s.Stats().StalledSince.IsZero() {
		t.Fatal("stats do not show the stall")
	}
	// The peer recovers: the waiter completes, the stall ends.
	close(gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	select {
	case <-resumed:
	case <-time.After(10 * time.Second):
		t.Fatal("no resume reported")
	}

	// Stalled again, and this time the daemon degrades.
	target.mu.Lock()
	gate2 := make(chan struct{})
	target.applyGate = gate2
	target.mu.Unlock()
	defer close(gate2)
	go func() { first <- st.s.Submit(ctx, op.Op{Kind: op.Create, Path: "b"}) }()
	<-stalled
	st.s.Degrade(errors.New("stall_timeout"))
	if err := <-first; !errors.Is(err, ErrDegraded) {
		t.Fatalf("waiting submit after Degrade: %v", err)
	}
	if err := st.s.Sync(ctx, op.Op{Kind: op.Fsync, Path: "a"}); !errors.Is(err, ErrDegraded) {
		t.Fatalf("submit after Degrade: %v", err)
	}
	select {
	case <-st.s.Done():
	default:
		t.Fatal("Done not closed")
	}
}

// A peer that is silent (not even answering pings) with nothing waiting
// is detected too.
func TestSilentPeerStalls(t *testing.T) {
	client, server := tcpPair(t)
	peer := newRawPeer(t, server)
	go peer.acceptHello(testHello("node2", 1))
	stalled := make(chan time.Time, 1)
	s, err := NewSender(context.Background(), client, SenderOptions{
		Mode: ModeSync, Hello: testHello("node1", 1),
		StallTimeout: 200 * time.Millisecond, PingInterval: 20 * time.Millisecond,
		OnStall: func(since time.Time) { stalled <- since },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer server.Close()
	if f := peer.read(); f.Type != FramePing {
		t.Fatalf("first frame %s", f.Type)
	}
	select {
	case <-stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("unanswered ping not reported")
	}
}

// Both ends check the other's hello.
func TestHelloMismatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		recv   Hello
		check  func(Hello) error
		reason string
	}{
		{"module", Hello{Module: "web", Node: "node2", Dirs: 1}, nil, `streams module "db", this is "web"`},
		{"dirs", Hello{Module: "db", Node: "node2", Dirs: 2}, nil, "has 1 replicated directories"},
		{"check", Hello{Module: "db", Node: "node2", Dirs: 1}, func(h Hello) error { return fmt.Errorf("generation %d unknown", h.Generation) }, "generation 42 unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			served := make(chan error, 1)
			go func() {
				served <- Serve(context.Background(), server, &fakeTarget{}, ReceiverOptions{Hello: tc.recv, CheckPeer: tc.check})
			}()
			_, err := NewSender(context.Background(), client, SenderOptions{Mode: ModeSync, Hello: testHello("node1", 1)})
			var pe *PeerError
			if !errors.As(err, &pe) || !contains(pe.Reason, tc.reason) {
				t.Fatalf("NewSender: %v", err)
			}
			if err := <-served; err == nil || !contains(err.Error(), tc.reason) {
				t.Fatalf("Serve: %v", err)
			}
		})
	}
	t.Run("version", func(t *testing.T) {
		client, server := tcpPair(t)
		served := make(chan error, 1)
		go func() {
			served <- Serve(context.Background(), server, &fakeTarget{}, ReceiverOptions{Hello: testHello("node2", 1)})
		}()
		h := testHello("node1", 1)
		h.Version = 2
		client.Write(AppendFrame(nil, FrameHello, 0, appendHello(nil, h)))
		if err := <-served; err == nil || !contains(err.Error(), "protocol version 2") {
			t.Fatalf("Serve: %v", err)
		}
	})
	t.Run("sender refuses", func(t *testing.T) {
		client, server := tcpPair(t)
		served := make(chan error, 1)
		go func() {
			served <- Serve(context.Background(), server, &fakeTarget{}, ReceiverOptions{Hello: testHello("node3", 1)})
		}()
		_, err := NewSender(context.Background(), client, SenderOptions{Mode: ModeSync, Hello: testHello("node1", 1),
			CheckPeer: func(h Hello) error {
				if h.Node != "node2" {
					return fmt.Errorf("expected node2, got %s", h.Node)
				}
				return nil
			}})
		if err == nil || !contains(err.Error(), "expected node2") {
			t.Fatalf("NewSender: %v", err)
		}
		if err := <-served; !errors.As(err, new(*PeerError)) {
			t.Fatalf("Serve: %v", err)
		}
	})
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// The receiver applies what it received before the source closed, and a
// cancelled context ends Serve.
func TestServeEnds(t *testing.T) {
	target := &fakeTarget{}
	client, server := tcpPair(t)
	st := startStream(t, client, server, target, 1, SenderOptions{Mode: ModeAsync}, ReceiverOptions{})
	for i := range 1000 {
		st.s.Submit(context.Background(), op.Op{Kind: op.Create, Path: fmt.Sprint(i)})
	}
	eventually(t, 10*time.Second, "operations to be sent", func() bool { return st.s.Stats().OpsSent == 1000 })
	if err := st.closeAndWait(t); !closedBySource(err) {
		t.Fatal(err)
	}
	if target.count() != 1000 {
		t.Fatalf("%d of 1000 sent operations applied", target.count())
	}

	client, server = tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, server, &fakeTarget{}, ReceiverOptions{Hello: testHello("node2", 1)}) }()
	s, err := NewSender(context.Background(), client, SenderOptions{Mode: ModeSync, Hello: testHello("node1", 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cancel()
	if err := <-served; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve after cancel: %v", err)
	}
	<-s.Done()
	var pe *PeerError
	if !errors.As(s.Err(), &pe) && !errors.Is(s.Err(), ErrDegraded) {
		t.Fatalf("sender after the receiver stopped: %v", s.Err())
	}
}

// An apply error ends the stream with the reason on both sides.
func TestApplyErrorEndsStream(t *testing.T) {
	_, dstDirs, _, dst := trees(t, 1)
	client, server := tcpPair(t)
	st := startStream(t, client, server, dst, 1, SenderOptions{Mode: ModeSync}, ReceiverOptions{})
	err := st.s.Submit(context.Background(), op.Op{Kind: op.Write, Path: "missing", Data: []byte("x")})
	if !errors.Is(err, ErrDegraded) {
		t.Fatalf("submit of an operation the target cannot apply: %v", err)
	}
	var pe *PeerError
	if !errors.As(err, &pe) || !contains(pe.Reason, `apply write "missing"`) {
		t.Fatalf("reason: %v", err)
	}
	if err := <-st.served; err == nil || !contains(err.Error(), "no such file") {
		t.Fatalf("Serve: %v", err)
	}
	st.served <- nil
	if ents, _ := os.ReadDir(dstDirs[0]); len(ents) != 0 {
		t.Fatalf("target holds %d entries", len(ents))
	}
}

// Invalid operations are refused by Submit before anything is sent.
func TestSubmitValidates(t *testing.T) {
	target := &fakeTarget{}
	client, server := tcpPair(t)
	st := startStream(t, client, server, target, 1, SenderOptions{Mode: ModeSync}, ReceiverOptions{})
	for _, o := range []op.Op{
		{Kind: op.Write, Path: "../x"},
		{Kind: op.Create, Path: "x", Dir: 1},
		{Kind: 0, Path: "x"},
	} {
		if err := st.s.Submit(context.Background(), o); err == nil || errors.Is(err, ErrDegraded) {
			t.Fatalf("submit %+v: %v", o, err)
		}
	}
	if st.s.Stats().Submitted != 0 {
		t.Fatal("an invalid operation got a sequence number")
	}
}

func closedBySource(err error) bool {
	var pe *PeerError
	return errors.As(err, &pe) && pe.Reason == errClosed.Error()
}

// slowTarget applies writes at about rate bytes per second, like a peer
// behind a slow link, and records when it applied each offset.
type slowTarget struct {
	fakeTarget
	rate float64
	mu   sync.Mutex
	at   map[int64]time.Time
}

func (s *slowTarget) ApplyDeferred(o op.Op, durable bool) error {
	time.Sleep(time.Duration(float64(len(o.Data)) / s.rate * float64(time.Second)))
	s.mu.Lock()
	s.at[o.Off] = time.Now()
	s.mu.Unlock()
	return s.fakeTarget.ApplyDeferred(o, durable)
}

// In async mode an application writing much faster than the peer applies
// still has every acknowledged write on the peer within about MaxLag:
// what is admitted must drain within MaxLag at the peer's rate, not only
// be younger than MaxLag when admitted.
func TestAsyncLagBoundedUnderLoad(t *testing.T) {
	ctx := context.Background()
	target := &slowTarget{rate: 4 << 20, at: map[int64]time.Time{}}
	client, server := tcpPair(t)
	const maxLag = 200 * time.Millisecond
	st := startStream(t, client, server, target, 1, SenderOptions{Mode: ModeAsync, MaxLag: maxLag, StallTimeout: time.Minute}, ReceiverOptions{})
	data := make([]byte, 64<<10)
	acked := map[int64]time.Time{}
	start := time.Now()
	for i := 0; time.Since(start) < 2*time.Second; i++ {
		off := int64(i) * int64(len(data))
		if err := st.s.Submit(ctx, op.Op{Kind: op.Write, Path: "f", Off: off, Data: data}); err != nil {
			t.Fatal(err)
		}
		acked[off] = time.Now()
	}
	if err := st.s.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// The window of a failover: how long an acknowledged write waited to
	// be on the peer.
	var worst time.Duration
	target.mu.Lock()
	for off, a := range acked {
		worst = max(worst, target.at[off].Sub(a))
	}
	target.mu.Unlock()
	bytes := int64(len(acked)) * int64(len(data))
	t.Logf("%d bytes in %v (%.1f MB/s, the peer applies %.1f MB/s), acknowledged writes reached the peer within %v (max_lag %v)",
		bytes, took.Round(time.Millisecond), float64(bytes)/took.Seconds()/1e6, target.rate/1e6, worst.Round(time.Millisecond), maxLag)
	// The oldest operation may age a little past MaxLag while it is
	// applied; a queue admitted without regard to the rate would take
	// seconds to drain.
	if worst > 3*maxLag {
		t.Errorf("an acknowledged write reached the peer %v later, with MaxLag %v", worst, maxLag)
	}
}
