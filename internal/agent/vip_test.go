package agent

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/internal/config"
)

func newVIPTestRunner(t *testing.T) (*moduleRunner, *vipSlot, *fakeVIP) {
	t.Helper()
	mod := &config.Module{Name: "m", Kind: config.KindMirror}
	r, err := newModuleRunner(mod, "n1", nil, nil, nil, t.TempDir(), nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.events.close() })
	fv := &fakeVIP{}
	v := &config.VIP{Address: netip.MustParsePrefix("198.18.0.100/24"), AnnounceCount: 3, AnnounceInterval: time.Second}
	s := &vipSlot{cfg: v, runner: fv, lateAfter: 250 * time.Millisecond}
	r.vips = []*vipSlot{s}
	return r, s, fv
}

// The agent repeats a held address's announcements on schedule, and stops
// repeating once the address is released.
func TestVIPAnnouncementsRepeated(t *testing.T) {
	r, s, fv := newVIPTestRunner(t)
	ctx := context.Background()
	r.setVIPs(ctx, true)
	if !fv.isHeld() || s.announceLeft != 2 {
		t.Fatalf("after acquire: held %v, %d repeats left", fv.isHeld(), s.announceLeft)
	}
	due := s.nextAnnounce
	r.maintainVIPs(ctx, due.Add(-time.Millisecond))
	r.maintainVIPs(ctx, due.Add(10*time.Millisecond))
	r.maintainVIPs(ctx, due.Add(20*time.Millisecond)) // the next is a second later
	if fv.announces != 1 {
		t.Fatalf("%d announcements after the first repeat's time, want 1", fv.announces)
	}
	r.maintainVIPs(ctx, due.Add(time.Second+10*time.Millisecond))
	r.maintainVIPs(ctx, due.Add(2*time.Second+10*time.Millisecond))
	if fv.announces != 2 || s.announceLeft != 0 {
		t.Fatalf("%d announcements, %d left; want 2 (announce_count 3 = 1 at acquire + 2)", fv.announces, s.announceLeft)
	}

	r.setVIPs(ctx, true)
	r.setVIPs(ctx, false)
	r.maintainVIPs(ctx, time.Now().Add(time.Hour))
	if fv.announces != 2 || fv.isHeld() {
		t.Fatalf("after release: %d announcements, held %v", fv.announces, fv.isHeld())
	}
}

// A node that did not run for a while (frozen, paused VM) drops the
// announcements it missed: its peer may hold the address by now, and only
// the machine, after seeing the pause, decides whether this node still
// serves.
func TestVIPAnnouncementsDroppedWhenLate(t *testing.T) {
	r, s, fv := newVIPTestRunner(t)
	ctx := context.Background()
	r.setVIPs(ctx, true)
	r.maintainVIPs(ctx, s.nextAnnounce.Add(3*time.Second))
	r.maintainVIPs(ctx, s.nextAnnounce.Add(4*time.Second))
	if fv.announces != 0 || s.announceLeft != 0 {
		t.Fatalf("late repeats: %d sent, %d left; want none", fv.announces, s.announceLeft)
	}
	if !fv.isHeld() {
		t.Fatal("dropping announcements released the address")
	}
}

// A serving node announces its address again, with the usual repeats, when
// its peer, out of sight or serving since the last announcement, is seen
// not serving: the split-brain loser that stepped down, a peer back after
// a crash. Never while the peer serves, nor twice for one change.
func TestVIPAnnouncedAgainWhenPeerStopsServing(t *testing.T) {
	r, s, fv := newVIPTestRunner(t)
	r.mirror = &mirrorIO{peer: "n2"}
	ctx := context.Background()
	view := func(self core.State, visible bool, peer core.State) mirror.Status {
		return mirror.Status{State: self, Readiness: core.Ready, PeerVisible: visible,
			Peer: mirror.PeerStatus{Node: "n2", State: peer, Readiness: core.Ready}}
	}
	r.setVIPs(ctx, true)
	s.announceLeft = 0 // the acquire's repeats are done

	steps := []struct {
		name      string
		st        mirror.Status
		announces int
	}{
		{"peer SECOND all along", view(core.Prim, true, core.Second), 0},
		{"peer lost", view(core.Alone, false, core.Second), 0},
		{"still lost", view(core.Alone, false, core.Second), 0},
		{"peer back, serving (split brain)", view(core.Alone, true, core.Alone), 0},
		{"peer stepped down", view(core.Alone, true, core.Second), 1},
		{"same view again", view(core.Prim, true, core.Second), 1},
		{"peer WAIT, never served since", view(core.Prim, true, core.Wait), 1},
	}
	for _, x := range steps {
		r.reannounceAfterPeer(ctx, x.st)
		if fv.announces != x.announces {
			t.Fatalf("%s: %d announcements, want %d", x.name, fv.announces, x.announces)
		}
	}
	if s.announceLeft != 2 || s.nextAnnounce.Before(time.Now().Add(500*time.Millisecond)) {
		t.Fatalf("after the new announcement: %d repeats left, next at %v; want announce_count-1 = 2, a second from now", s.announceLeft, s.nextAnnounce)
	}
	if !logHas(r.events.since(0, 0), "VIP 198.18.0.100/24 announced again: n2 is SECOND/Ready") {
		t.Fatalf("no event for the new announcement: %v", texts(r.events.since(0, 0)))
	}

	// A node that does not serve (it stepped down itself) announces
	// nothing, and forgets what it saw: an acquire announces on its own.
	r.reannounceAfterPeer(ctx, view(core.Alone, true, core.Alone))
	r.setVIPs(ctx, false)
	r.reannounceAfterPeer(ctx, view(core.Second, true, core.Alone))
	r.setVIPs(ctx, true)
	r.reannounceAfterPeer(ctx, view(core.Alone, true, core.Second))
	if fv.announces != 1 {
		t.Fatalf("%d announcements by a node that stepped down then served again, want the 1 before", fv.announces)
	}
}
