package heartbeat

// ReplayWindow is how many sequence numbers below the highest one seen are
// still accepted (once each): heartbeats are small and sent every pulse, so
// reordering beyond a few frames means the frame is obsolete anyway.
const ReplayWindow = 64

// replayWindow tracks one sender boot on one network, in the manner of the
// IPsec anti-replay window (RFC 4303 §3.4.3): bit i of seen is sequence
// number max-i.
type replayWindow struct {
	valid      bool
	boot       uint64
	max        uint64
	seen       uint64
	lastSentAt int64 // highest sender timestamp accepted in this boot
}

// reset starts tracking a new boot from its first accepted frame.
func (w *replayWindow) reset(boot, seq uint64, sentAt int64) {
	*w = replayWindow{valid: true, boot: boot, max: seq, seen: 1, lastSentAt: sentAt}
}

// check reports whether seq is new for the current boot, without recording
// it: DropReplay for a duplicate, DropStale when below the window.
func (w *replayWindow) check(seq uint64) (DropReason, bool) {
	if seq > w.max {
		return 0, true
	}
	d := w.max - seq
	if d >= ReplayWindow {
		return DropStale, false
	}
	if w.seen&(1<<d) != 0 {
		return DropReplay, false
	}
	return 0, true
}

// record marks seq as seen; check must have accepted it.
func (w *replayWindow) record(seq uint64, sentAt int64) {
	if seq > w.max {
		if shift := seq - w.max; shift >= ReplayWindow {
			w.seen = 1
		} else {
			w.seen = w.seen<<shift | 1
		}
		w.max = seq
	} else {
		w.seen |= 1 << (w.max - seq)
	}
	w.lastSentAt = max(w.lastSentAt, sentAt)
}
