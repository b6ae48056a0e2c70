package agent

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

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
