package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/internal/heartbeat"
)

// What a mirror node tells its peer travels as JSON: inside the
// authenticated heartbeat frame (the status) and in the body of a control
// channel POST (a message). JSON because a decoder ignores fields it does
// not know, so a newer node can add facts without breaking an older peer
// during a rolling upgrade. States and readiness go by name, not by core's
// Go constants, so renumbering an enum cannot silently change the
// protocol. A change old nodes must not misread takes a new version.

// wireVersion is the encoding version this agent writes and reads.
const wireVersion = 1

// maxBlockerSize bounds the free text a status carries, so a status always
// fits in a heartbeat (heartbeat.MaxPayloadSize) whatever a checker says.
const maxBlockerSize = 1024

type wireGen struct {
	Current   uint64   `json:"cur,omitempty"`
	Ancestors []uint64 `json:"anc,omitempty"`
}

type wireStatus struct {
	V                 int       `json:"v"`
	Node              string    `json:"node"`
	Incarnation       int64     `json:"inc"`
	Seq               uint64    `json:"seq"`
	State             string    `json:"state"`
	Readiness         string    `json:"ready"`
	Gen               wireGen   `json:"gen"`
	Role              string    `json:"role"`
	Inconsistent      bool      `json:"inconsistent,omitempty"`
	Outdated          bool      `json:"outdated,omitempty"`
	Forced            bool      `json:"forced,omitempty"`
	Degrading         bool      `json:"degrading,omitempty"`
	CanServe          bool      `json:"can_serve,omitempty"`
	Blocker           string    `json:"blocker,omitempty"`
	BlockerNeedsAdmin bool      `json:"blocker_admin,omitempty"`
	Candidate         uint64    `json:"candidate,omitempty"`
	VoteFor           string    `json:"vote_for,omitempty"`
	VoteTerm          uint64    `json:"vote_term,omitempty"`
	Yield             bool      `json:"yield,omitempty"`
	Handover          bool      `json:"handover,omitempty"`
	AloneSince        time.Time `json:"alone_since,omitzero"`
}

type wireMessage struct {
	V      int        `json:"v"`
	From   string     `json:"from"`
	Kind   string     `json:"kind"`
	Gen    wireGen    `json:"gen"`
	Status wireStatus `json:"status"`
}

var messageKinds = map[mirror.MessageKind]string{
	mirror.MsgSwapRequest: "swap-request",
	mirror.MsgOutdate:     "outdate",
	mirror.MsgHandover:    "handover",
}

func toWireGen(g journal.Generation) wireGen {
	return wireGen{Current: g.Current, Ancestors: g.Ancestors}
}

func (g wireGen) generation() (journal.Generation, error) {
	if len(g.Ancestors) > journal.MaxAncestors {
		return journal.Generation{}, fmt.Errorf("generation has %d ancestors, at most %d expected", len(g.Ancestors), journal.MaxAncestors)
	}
	return journal.Generation{Current: g.Current, Ancestors: g.Ancestors}, nil
}

func toWireStatus(s mirror.PeerStatus) wireStatus {
	return wireStatus{
		V: wireVersion, Node: s.Node, Incarnation: s.Incarnation, Seq: s.Seq,
		State: s.State.String(), Readiness: s.Readiness.String(), Gen: toWireGen(s.Gen), Role: s.Role.String(),
		Inconsistent: s.Inconsistent, Outdated: s.Outdated, Forced: s.Forced, Degrading: s.Degrading,
		CanServe: s.CanServe, Blocker: truncateUTF8(s.Blocker, maxBlockerSize), BlockerNeedsAdmin: s.BlockerNeedsAdmin,
		Candidate: s.Candidate, VoteFor: s.VoteFor, VoteTerm: s.VoteTerm,
		Yield: s.Yield, Handover: s.Handover, AloneSince: s.AloneSince,
	}
}

func (w wireStatus) peerStatus() (mirror.PeerStatus, error) {
	if w.V != wireVersion {
		return mirror.PeerStatus{}, fmt.Errorf("status encoding version %d, this node reads %d", w.V, wireVersion)
	}
	if w.Node == "" {
		return mirror.PeerStatus{}, errors.New("status names no node")
	}
	state, err := core.ParseState(w.State)
	if err != nil {
		return mirror.PeerStatus{}, fmt.Errorf("status state: %w", err)
	}
	ready, err := parseReadiness(w.Readiness)
	if err != nil {
		return mirror.PeerStatus{}, err
	}
	role, err := core.ParseState(w.Role)
	if err != nil {
		return mirror.PeerStatus{}, fmt.Errorf("status role: %w", err)
	}
	gen, err := w.Gen.generation()
	if err != nil {
		return mirror.PeerStatus{}, err
	}
	return mirror.PeerStatus{
		Node: w.Node, Incarnation: w.Incarnation, Seq: w.Seq, State: state, Readiness: ready,
		Gen: gen, Role: role, Inconsistent: w.Inconsistent, Outdated: w.Outdated, Forced: w.Forced,
		Degrading: w.Degrading, CanServe: w.CanServe, Blocker: w.Blocker, BlockerNeedsAdmin: w.BlockerNeedsAdmin,
		Candidate: w.Candidate, VoteFor: w.VoteFor, VoteTerm: w.VoteTerm,
		Yield: w.Yield, Handover: w.Handover, AloneSince: w.AloneSince,
	}, nil
}

func parseReadiness(s string) (core.Readiness, error) {
	for _, r := range []core.Readiness{core.NotReady, core.Transient, core.Ready} {
		if r.String() == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("unknown readiness %q", s)
}

// encodeStatus is the heartbeat payload carrying s.
func encodeStatus(s mirror.PeerStatus) ([]byte, error) {
	b, err := json.Marshal(toWireStatus(s))
	if err != nil {
		return nil, fmt.Errorf("encode peer status: %w", err)
	}
	if len(b) > heartbeat.MaxPayloadSize {
		return nil, fmt.Errorf("encode peer status: %d bytes, a heartbeat carries at most %d", len(b), heartbeat.MaxPayloadSize)
	}
	return b, nil
}

// decodeStatus reads a heartbeat payload.
func decodeStatus(b []byte) (mirror.PeerStatus, error) {
	var w wireStatus
	if err := json.Unmarshal(b, &w); err != nil {
		return mirror.PeerStatus{}, fmt.Errorf("decode peer status: %w", err)
	}
	return w.peerStatus()
}

// encodeMessage is the body of a control channel POST carrying m.
func encodeMessage(m mirror.Message) ([]byte, error) {
	kind, ok := messageKinds[m.Kind]
	if !ok {
		return nil, fmt.Errorf("encode peer message: unknown kind %v", m.Kind)
	}
	b, err := json.Marshal(wireMessage{V: wireVersion, From: m.From, Kind: kind, Gen: toWireGen(m.Gen), Status: toWireStatus(m.Status)})
	if err != nil {
		return nil, fmt.Errorf("encode peer message: %w", err)
	}
	return b, nil
}

// decodeMessage reads a control channel message.
func decodeMessage(b []byte) (mirror.Message, error) {
	var w wireMessage
	if err := json.Unmarshal(b, &w); err != nil {
		return mirror.Message{}, fmt.Errorf("decode peer message: %w", err)
	}
	if w.V != wireVersion {
		return mirror.Message{}, fmt.Errorf("decode peer message: encoding version %d, this node reads %d", w.V, wireVersion)
	}
	var kind mirror.MessageKind
	for k, name := range messageKinds {
		if name == w.Kind {
			kind = k
		}
	}
	if kind == 0 {
		return mirror.Message{}, fmt.Errorf("decode peer message: unknown kind %q", w.Kind)
	}
	gen, err := w.Gen.generation()
	if err != nil {
		return mirror.Message{}, fmt.Errorf("decode peer message: %w", err)
	}
	st, err := w.Status.peerStatus()
	if err != nil {
		return mirror.Message{}, fmt.Errorf("decode peer message: %w", err)
	}
	return mirror.Message{From: w.From, Kind: kind, Gen: gen, Status: st}, nil
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
