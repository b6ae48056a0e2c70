package agent

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/internal/heartbeat"
)

// publishHeartbeat hands the machine's status to the heartbeat pacer after
// a step: the pacer sends it every pulse, and it goes out at once when it
// changed, so that votes, handovers and state changes do not wait for the
// pulse.
func (r *moduleRunner) publishHeartbeat() {
	mi := r.mirror
	st := mi.m.Heartbeat()
	seq := st.Seq
	st.Seq = 0
	key, err := encodeStatus(st)
	if err != nil {
		r.logger.Error("heartbeat not sent", "error", err)
		return
	}
	changed := !bytes.Equal(key, mi.lastSent)
	mi.lastSent = key
	st.Seq = seq
	payload, err := encodeStatus(st)
	if err != nil {
		r.logger.Error("heartbeat not sent", "error", err)
		return
	}
	mi.pacer.publish(payload, time.Now(), changed)
}

// refreshMirrorStatus copies the machine's view into the API's resources,
// and returns it.
func (r *moduleRunner) refreshMirrorStatus() mirror.Status {
	mi := r.mirror
	st := mi.m.Status()
	links := mi.endpoint.Links()
	r.mu.Lock()
	defer r.mu.Unlock()
	// A WAIT's reason can change without a state change (the machine then
	// logs it rather than announcing a state): the API shows the current
	// one.
	r.status.Reason = st.Reason
	for k, v := range st.Resources {
		msg := ""
		if strings.HasPrefix(k, "checker.") {
			// The runner's entry is the checker's latest result (the
			// machine may not have stepped it yet); the machine only adds
			// whether the checker is suspended.
			old := r.resources[k]
			status, _ := splitSuspended(old.Value)
			_, suffix := splitSuspended(v)
			v, msg = status+suffix, old.Message
		}
		if net, ok := strings.CutPrefix(k, "heartbeat."); ok {
			msg = linkText(links, net, v)
		}
		r.putResourceLocked(k, v, msg)
	}
	if st.State.Serving() {
		st.Resources["basis"] = st.Basis.String()
		r.putResourceLocked("basis", st.Basis.String(), "why this node serves")
	}
	// Resources the machine no longer reports (a resync that ended, a
	// stall that cleared) go away.
	for k := range mi.shown {
		if _, ok := st.Resources[k]; !ok {
			delete(r.resources, k)
		}
	}
	mi.shown = st.Resources
	return st
}

// linkText describes the peer's heartbeats on one network.
func linkText(links []heartbeat.Link, network, value string) string {
	for _, l := range links {
		if l.Network != network {
			continue
		}
		switch {
		case l.LastSeen.IsZero():
			return fmt.Sprintf("no heartbeat from %s yet (to %s)", l.Peer, l.Addr)
		case value == "up" && l.RTT > 0:
			return fmt.Sprintf("round trip %v", l.RTT.Round(10*time.Microsecond))
		case value != "up":
			return fmt.Sprintf("last heartbeat from %s at %s", l.Peer, l.LastSeen.UTC().Format(time.RFC3339Nano))
		}
	}
	return ""
}

// checkWitness probes the split-brain witness (every splitbrain checker
// of the module, at once, each within its timeout) off the event loop and
// answers the machine with core.WitnessResult.
func (r *moduleRunner) checkWitness(ctx context.Context) {
	mi := r.mirror
	if mi == nil || len(mi.witness) == 0 {
		r.posted.post(core.WitnessResult{At: time.Now(), Message: "no splitbrain checker in the module"})
		return
	}
	if mi.witnessBusy {
		return // the machine gets the running probe's answer
	}
	mi.witnessBusy = true
	r.scripts.Add(1)
	go func() {
		defer r.scripts.Done()
		results := make([]string, len(mi.witness))
		up := make([]bool, len(mi.witness))
		var wg sync.WaitGroup
		for i, c := range mi.witness {
			wg.Go(func() {
				cctx, cancel := context.WithTimeout(ctx, c.Timeout)
				defer cancel()
				st, msg := c.Runner.Check(cctx)
				r.recordChecker(c.Name, st, msg)
				up[i] = st == core.CheckUp
				results[i] = fmt.Sprintf("%s %s", c.Name, st)
				if msg != "" {
					results[i] += ": " + msg
				}
			})
		}
		wg.Wait()
		reachable := true
		for _, ok := range up {
			reachable = reachable && ok
		}
		r.posted.post(witnessDone{core.WitnessResult{At: time.Now(), Reachable: reachable, Message: strings.Join(results, "; ")}})
	}()
}

// witnessDone carries a witness probe's result, so the event loop knows
// the probe ended before the machine sees its result.
type witnessDone struct{ core.WitnessResult }

// sendPeer queues a coordination message for the peer.
func (r *moduleRunner) sendPeer(msg mirror.Message) {
	mi := r.mirror
	if mi == nil {
		return
	}
	if mi.sender == nil {
		r.events.add("log", "error", fmt.Sprintf("cannot send %s to %s: the control channel needs the cluster's TLS material (run halo cluster init)", msg.Kind, mi.peer))
		return
	}
	mi.sender.enqueue(msg)
}
