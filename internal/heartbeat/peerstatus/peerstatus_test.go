package peerstatus

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

func full() Status {
	anc := make([]uint64, MaxAncestors)
	for i := range anc {
		anc[i] = uint64(1000 + i)
	}
	return Status{
		State: 3, Readiness: 2, Flags: FlagFailover | FlagConsistent | 1<<31,
		Generation: 0xdeadbeef, Ancestors: anc,
		AloneSince: time.Unix(1893456000, 123456789),
		Reason:     strings.Repeat("é", MaxReasonSize/2) + "x",
	}
}

func TestRoundTrip(t *testing.T) {
	for name, s := range map[string]Status{
		"minimal": {State: 1},
		"wait":    {State: 1, Readiness: 0, Flags: FlagUpToDate, Generation: 7, Reason: "data may not be up to date"},
		"full":    full(),
	} {
		t.Run(name, func(t *testing.T) {
			b, err := Encode(&s)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !got.AloneSince.Equal(s.AloneSince) {
				t.Fatalf("alone since %v, want %v", got.AloneSince, s.AloneSince)
			}
			got.AloneSince, s.AloneSince = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, s) {
				t.Fatalf("decoded %+v\nwant %+v", got, s)
			}
		})
	}
}

func TestMaxSize(t *testing.T) {
	s := full()
	b, err := Encode(&s)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != MaxSize {
		t.Fatalf("largest status is %d bytes, MaxSize says %d", len(b), MaxSize)
	}
}

func TestEncodeRejects(t *testing.T) {
	for name, s := range map[string]Status{
		"too many ancestors": {Ancestors: make([]uint64, MaxAncestors+1)},
		"long reason":        {Reason: strings.Repeat("r", MaxReasonSize+1)},
		"invalid UTF-8":      {Reason: "\xff"},
	} {
		if _, err := Encode(&s); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
}

func TestDecodeSkipsUnknownFields(t *testing.T) {
	s := Status{State: 4, Readiness: 1, Generation: 9, Reason: "r"}
	b, _ := Encode(&s)
	// A newer peer adds fields 200 and 7, one of them empty.
	b = append(b, 200, 3, 'a', 'b', 'c', 7, 0)
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("decoded %+v, want %+v", got, s)
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := Encode(&Status{State: 1, Readiness: 2, Generation: 3})
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"version 2", append([]byte{2}, good[1:]...), "version 2"},
		{"truncated header", append(bytes.Clone(good), tagReason), "truncated"},
		{"truncated value", good[:len(good)-1], "remain"},
		{"missing state", []byte{1, tagReadiness, 1, 0}, "missing"},
		{"repeated field", append(bytes.Clone(good), tagState, 1, 2), "repeated"},
		{"state too long", []byte{1, tagState, 2, 0, 0, tagReadiness, 1, 0}, "want 1"},
		{"flags too short", []byte{1, tagState, 1, 0, tagReadiness, 1, 0, tagFlags, 3, 0, 0, 0}, "want 4"},
		{"generation not a multiple of 8", []byte{1, tagState, 1, 0, tagReadiness, 1, 0, tagGeneration, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "multiple of 8"},
		{"empty generation", []byte{1, tagState, 1, 0, tagReadiness, 1, 0, tagGeneration, 0}, "multiple of 8"},
		{"zero alone-since", append(bytes.Clone(good), tagAloneSince, 8, 0, 0, 0, 0, 0, 0, 0, 0), "zero"},
		{"invalid UTF-8 reason", append(bytes.Clone(good), tagReason, 1, 0xff), "UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.b)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// FuzzDecode checks that decoding never panics and that whatever decodes
// encodes again to something that decodes to the same status.
func FuzzDecode(f *testing.F) {
	for _, s := range []Status{{State: 1}, full(), {State: 2, Readiness: 1, Reason: "x", Generation: 5, Ancestors: []uint64{4, 3}}} {
		b, err := Encode(&s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{1, 200, 0, tagState, 1, 0, tagReadiness, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Encode(&s)
		if err != nil {
			t.Fatalf("decoded status does not encode: %v (%+v)", err, s)
		}
		s2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded status does not decode: %v", err)
		}
		if !s2.AloneSince.Equal(s.AloneSince) {
			t.Fatalf("alone since changed: %v -> %v", s.AloneSince, s2.AloneSince)
		}
		s.AloneSince, s2.AloneSince = time.Time{}, time.Time{}
		if !reflect.DeepEqual(s, s2) {
			t.Fatalf("round trip changed the status:\n%+v\n%+v", s, s2)
		}
	})
}
