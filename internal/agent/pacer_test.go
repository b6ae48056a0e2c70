package agent

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

type recordingSink struct {
	mu   sync.Mutex
	sent []string
}

func (s *recordingSink) Send(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, string(p))
	return nil
}

func (s *recordingSink) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sent...)
}

// The pacer sends the latest status every pulse, a changed one at once,
// and after a pause of this process nothing until the event loop has
// published a status computed since.
func TestHeartbeatPacerBeats(t *testing.T) {
	sink := &recordingSink{}
	var warnings []string
	p := newHeartbeatPacer(sink, 100*time.Millisecond, 500*time.Millisecond, nil, func(s string) { warnings = append(warnings, s) })
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	p.beat(at(0), 100*time.Millisecond)
	if len(sink.all()) != 0 {
		t.Fatal("sent before the loop published anything")
	}
	p.publish([]byte("A"), at(10), true) // changed: sent at once
	p.publish([]byte("A"), at(60), false)
	p.beat(at(100), 100*time.Millisecond)
	p.beat(at(200), 100*time.Millisecond) // the loop is busy: A again
	p.publish([]byte("B"), at(250), true)
	p.beat(at(300), 100*time.Millisecond)
	if got := strings.Join(sink.all(), ""); got != "AAABB" {
		t.Fatalf("sent %q, want AAABB", got)
	}

	// Paused for 2s (> timeout/2): B predates the pause.
	p.beat(at(2300), 2*time.Second)
	p.beat(at(2400), 100*time.Millisecond)
	if got := strings.Join(sink.all(), ""); got != "AAABB" {
		t.Fatalf("after a pause, sent %q before the loop published again", got)
	}
	p.publish([]byte("C"), at(2410), false)
	p.beat(at(2500), 100*time.Millisecond)
	if got := strings.Join(sink.all(), ""); got != "AAABBC" {
		t.Fatalf("sent %q, want AAABBC", got)
	}
	if g := p.longestGap(); g != 2200*time.Millisecond {
		t.Fatalf("longest gap %v, want 2.2s (from 300ms to 2500ms)", g)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "heartbeats sent late: 2.2s") {
		t.Fatalf("warnings %q, want one about the 2.2s gap", warnings)
	}
}

// The pacer keeps beating from its own goroutine while the event loop is
// stuck in a slow step.
func TestHeartbeatPacerRunsWithoutTheLoop(t *testing.T) {
	sink := &recordingSink{}
	p := newHeartbeatPacer(sink, 10*time.Millisecond, 5*time.Second, nil, func(string) {})
	p.publish([]byte("S"), time.Now(), false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(sink.all()) < 10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if n := len(sink.all()); n < 10 {
		t.Fatalf("%d heartbeats in 5s at a 10ms pulse without the loop publishing again", n)
	}
}
