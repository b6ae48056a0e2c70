package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/sdk/api"
)

const (
	// vipCallTimeout bounds one acquire or release. They run on the
	// module's event loop so that a start script never runs before its
	// address is up and a handover never leaves before the address is gone;
	// netlink takes milliseconds, so this only matters for a hung plugin.
	vipCallTimeout = 2 * time.Second
	// vipRetryEvery paces new attempts after a failed acquire or release.
	vipRetryEvery = 2 * time.Second
)

// VIPRunner holds one virtual address (one vip block) through its plugin.
// Acquire and Release are idempotent. Acquire announces the address once;
// the agent repeats the announcement with Announce (see vipSlot).
type VIPRunner interface {
	Acquire(ctx context.Context) error
	Release(ctx context.Context, resetConnections bool) error
	Announce(ctx context.Context) error
}

// vipSlot is one vip block of a module and what the machine wants of it.
type vipSlot struct {
	cfg    *config.VIP
	runner VIPRunner
	// want: the machine asked for the address (SetVIP) and not since for
	// its release (UnsetVIP).
	want bool
	// synced: the last acquire or release matching want succeeded.
	synced  bool
	retryAt time.Time
	lastErr string

	// The agent repeats announcements itself, on the event loop after the
	// machine saw the time, rather than leaving a schedule to the plugin:
	// a node frozen past the heartbeat timeout (SIGSTOP, a paused VM)
	// resumes with its plugin's timers overdue, and a late announcement
	// would pull clients back from the peer that took over before the
	// machine could step down. announceLeft repeats remain, the next due
	// at nextAnnounce; one overdue by more than lateAfter is dropped with
	// the rest.
	announceLeft int
	nextAnnounce time.Time
	lateAfter    time.Duration
}

func (s *vipSlot) resourceName() string { return "vip." + s.cfg.Address.Addr().String() }

// setVIPs records what the machine wants of every address and applies it.
func (r *moduleRunner) setVIPs(ctx context.Context, want bool) {
	if len(r.vips) == 0 {
		r.logger.Debug("no vip block: nothing to do", "acquire", want)
		return
	}
	for _, s := range r.vips {
		s.want, s.synced = want, false
		r.applyVIP(ctx, s, false)
	}
}

// maintainVIPs applies again what failed, once its retry time has come,
// and repeats the announcements of held addresses. Call it after the
// machine stepped the current time.
func (r *moduleRunner) maintainVIPs(ctx context.Context, now time.Time) {
	for _, s := range r.vips {
		switch {
		case !s.synced && !now.Before(s.retryAt):
			r.applyVIP(ctx, s, false)
		case s.want && s.synced && s.announceLeft > 0 && !now.Before(s.nextAnnounce):
			r.announce(ctx, s, now)
		}
	}
}

func (r *moduleRunner) announce(ctx context.Context, s *vipSlot, now time.Time) {
	if late := now.Sub(s.nextAnnounce); late > s.lateAfter {
		r.logger.Warn("repeated VIP announcements dropped: this node did not run for a while (paused?); the address may have moved meanwhile",
			"address", s.cfg.Address, "late", late.Round(time.Millisecond), "dropped", s.announceLeft)
		s.announceLeft = 0
		return
	}
	cctx, cancel := context.WithTimeout(ctx, vipCallTimeout)
	defer cancel()
	if err := s.runner.Announce(cctx); err != nil && ctx.Err() == nil {
		// The address is in place; a neighbour that misses the repeat
		// learns it when its cache entry expires.
		r.logger.Warn("VIP announcement failed", "address", s.cfg.Address, "error", err)
	}
	s.announceLeft--
	s.nextAnnounce = s.nextAnnounce.Add(s.cfg.AnnounceInterval)
}

// reannounceAfterPeer announces the held addresses again when the peer,
// which was out of sight or serving since this node last announced them,
// is seen not serving: it may have announced them meanwhile (a split
// brain, a peer that served alone, a crashed peer's kernel that kept the
// address and answered ARP), and neighbours would keep sending to it until
// their cache entries expire. Call it after every step, with the
// machine's view.
//
// After a pause of this node the machine's view of the peer may be old;
// it cannot trigger an announcement: a view of a visible peer not serving
// already cleared the flag before the pause, and a peer lost or serving
// before it stays so until a fresh heartbeat says otherwise.
func (r *moduleRunner) reannounceAfterPeer(ctx context.Context, st mirror.Status) {
	mi := r.mirror
	held := false
	for _, s := range r.vips {
		held = held || s.want && s.synced
	}
	switch {
	case !held || !st.State.Serving():
		// An acquire announces on its own.
		mi.peerMayHaveAnnounced = false
	case !st.PeerVisible || st.Peer.State.Serving():
		mi.peerMayHaveAnnounced = true
	case mi.peerMayHaveAnnounced:
		mi.peerMayHaveAnnounced = false
		r.reannounce(ctx, fmt.Sprintf("%s is %s/%s: it may have announced the address meanwhile", mi.peer, st.Peer.State, st.Peer.Readiness))
	}
}

// reannounce announces every held address now and schedules the usual
// repeats, as after an acquire.
func (r *moduleRunner) reannounce(ctx context.Context, why string) {
	now := time.Now()
	for _, s := range r.vips {
		if !s.want || !s.synced || s.cfg.AnnounceCount == 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, vipCallTimeout)
		err := s.runner.Announce(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.logger.Warn("VIP announcement failed", "address", s.cfg.Address, "error", err)
		}
		s.announceLeft, s.nextAnnounce = s.cfg.AnnounceCount-1, now.Add(s.cfg.AnnounceInterval)
		r.events.add("action", "info", fmt.Sprintf("VIP %s announced again: %s", s.cfg.Address, why))
	}
}

// releaseLeftoverVIPs releases every address when the runner starts: a
// previous run that crashed while serving may have left one, and the
// machine starts in STOP, serving nothing.
func (r *moduleRunner) releaseLeftoverVIPs(ctx context.Context) {
	for _, s := range r.vips {
		s.want, s.synced = false, false
		r.applyVIP(ctx, s, true)
	}
}

func (r *moduleRunner) applyVIP(ctx context.Context, s *vipSlot, atStart bool) {
	cctx, cancel := context.WithTimeout(ctx, vipCallTimeout)
	defer cancel()
	var err error
	if s.want {
		err = s.runner.Acquire(cctx)
	} else {
		// Clients of a released address reconnect at once to the new
		// primary instead of waiting for their own timeouts.
		err = s.runner.Release(cctx, true)
	}
	if ctx.Err() != nil {
		return // shutting down: nothing to report
	}
	addr := s.cfg.Address.String()
	verb := map[bool]string{true: "acquire", false: "release"}[s.want]
	if err != nil {
		s.retryAt = time.Now().Add(vipRetryEvery)
		msg := fmt.Sprintf("cannot %s VIP %s: %v", verb, addr, err)
		r.putResource(s.resourceName(), "failed", msg)
		if msg != s.lastErr {
			// Logged once per distinct failure; retries go on every
			// vipRetryEvery.
			r.events.add("log", "error", fmt.Sprintf("%s (retrying every %v)", msg, vipRetryEvery))
			r.logger.Error("VIP", "action", verb, "address", addr, "error", err)
		}
		s.lastErr = msg
		return
	}
	retried := s.lastErr != ""
	s.synced, s.lastErr = true, ""
	s.announceLeft = 0
	if s.want && s.cfg.AnnounceCount > 1 {
		s.announceLeft, s.nextAnnounce = s.cfg.AnnounceCount-1, time.Now().Add(s.cfg.AnnounceInterval)
	}
	value, text := "held", fmt.Sprintf("VIP %s acquired", addr)
	if !s.want {
		value, text = "released", fmt.Sprintf("VIP %s released", addr)
	}
	if s.cfg.Interface != "" {
		text += " on " + s.cfg.Interface
	}
	r.putResource(s.resourceName(), value, text)
	switch {
	case atStart && !retried:
		// Releasing at start is a precaution, usually a no-op.
		r.logger.Debug("VIP released at start", "address", addr)
	case retried:
		r.events.add("log", "info", text+" after failed attempts")
	default:
		r.events.add("action", "info", text)
	}
}

// putResource records a resource the agent itself maintains, keeping its
// Since when the value did not change.
func (r *moduleRunner) putResource(name, value, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.putResourceLocked(name, value, msg)
}

func (r *moduleRunner) putResourceLocked(name, value, msg string) {
	old, ok := r.resources[name]
	if ok && old.Value == value {
		old.Message = msg
		r.resources[name] = old
		return
	}
	r.resources[name] = api.Resource{Value: value, Message: msg, Since: time.Now().UTC()}
}

// localInterface returns the name of the interface holding addr, or ""
// when no interface of this host (network namespace) does.
func localInterface(addr netip.Addr) string {
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == addr.Unmap() {
					return ifc.Name
				}
			}
		}
	}
	return ""
}
