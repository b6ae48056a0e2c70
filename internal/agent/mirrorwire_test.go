package agent

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/internal/heartbeat"
)

func fullStatus() mirror.PeerStatus {
	anc := make([]uint64, journal.MaxAncestors)
	for i := range anc {
		anc[i] = ^uint64(0) - uint64(i)
	}
	return mirror.PeerStatus{
		Node: strings.Repeat("n", 63), Incarnation: -1 << 62, Seq: ^uint64(0),
		State: core.Second, Readiness: core.Transient, Gen: journal.Generation{Current: ^uint64(0), Ancestors: anc},
		Role: core.Prim, Inconsistent: true, Outdated: true, Forced: true, Degrading: true,
		CanServe: true, Blocker: strings.Repeat("é", 600), BlockerNeedsAdmin: true,
		Candidate: ^uint64(0), VoteFor: strings.Repeat("v", 63), VoteTerm: ^uint64(0),
		Yield: true, Handover: true, AloneSince: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
	}
}

// Every field survives the trip; the largest status fits in a heartbeat;
// a long blocker is cut on a character boundary.
func TestStatusRoundTrip(t *testing.T) {
	st := fullStatus()
	b, err := encodeStatus(st)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("largest status: %d bytes (heartbeat payload max %d)", len(b), heartbeat.MaxPayloadSize)
	got, err := decodeStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Blocker) > maxBlockerSize || !strings.HasPrefix(st.Blocker, got.Blocker) || strings.ContainsRune(got.Blocker, '\uFFFD') {
		t.Fatalf("blocker of %d bytes cut to %d: %q", len(st.Blocker), len(got.Blocker), got.Blocker[len(got.Blocker)-4:])
	}
	want := st
	want.Blocker = got.Blocker
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	// A field added by a newer node is ignored; a state this node does
	// not know is an error, never a guess.
	if _, err := decodeStatus([]byte(strings.Replace(string(b), `"v":1,`, `"v":1,"future":[1,2],`, 1))); err != nil {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := decodeStatus([]byte(strings.Replace(string(b), `"state":"SECOND"`, `"state":"LIMBO"`, 1))); err == nil {
		t.Fatal("unknown state accepted")
	}
	if _, err := decodeStatus([]byte(strings.Replace(string(b), `"v":1,`, `"v":2,`, 1))); err == nil {
		t.Fatal("another encoding version accepted")
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, kind := range []mirror.MessageKind{mirror.MsgSwapRequest, mirror.MsgOutdate, mirror.MsgHandover} {
		m := mirror.Message{From: "n1", Kind: kind, Gen: journal.Generation{Current: 7, Ancestors: []uint64{5, 3}}, Status: fullStatus()}
		m.Status.Blocker = "short"
		b, err := encodeMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%v round trip:\n got %+v\nwant %+v", kind, got, m)
		}
	}
	if _, err := encodeMessage(mirror.Message{Kind: 99}); err == nil {
		t.Fatal("unknown kind encoded")
	}
}

func FuzzDecodeStatus(f *testing.F) {
	b, _ := encodeStatus(fullStatus())
	f.Add(b)
	f.Add([]byte(`{"v":1,"node":"n","state":"PRIM","ready":"Ready","role":"PRIM","gen":{"anc":[1,2,3]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeStatus(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to something that decodes the same.
		again, err := encodeStatus(st)
		if err != nil {
			// Only the size can fail: names from a large input, escaped
			// again, may not fit a heartbeat.
			if !strings.Contains(err.Error(), "a heartbeat carries at most") {
				t.Fatalf("decoded status does not encode: %v", err)
			}
			return
		}
		st2, err := decodeStatus(again)
		if err != nil {
			t.Fatalf("re-encoded status does not decode: %v", err)
		}
		if st2.Node != st.Node || st2.State != st.State || !st2.Gen.Equal(st.Gen) {
			t.Fatalf("re-decoded %+v, was %+v", st2, st)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	b, _ := encodeMessage(mirror.Message{From: "n1", Kind: mirror.MsgHandover, Status: fullStatus()})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		if m.Kind != mirror.MsgSwapRequest && m.Kind != mirror.MsgOutdate && m.Kind != mirror.MsgHandover {
			t.Fatalf("decoded unknown kind %v", m.Kind)
		}
		if len(m.Gen.Ancestors) > journal.MaxAncestors || len(m.Status.Gen.Ancestors) > journal.MaxAncestors {
			t.Fatal("decoded more ancestors than a generation holds")
		}
	})
}
