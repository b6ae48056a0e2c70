// Package peerstatus encodes what a mirror node tells its peer in every
// heartbeat: its state and readiness for the module, its data generation,
// and the facts the peer needs to pick a primary without asking.
//
// The wire format carries explicit numbers, not core's Go constants, so
// renumbering an enum in core cannot silently change the protocol: the
// agent maps core.State and friends to these fields and back.
//
// Encoding, version 1: one version byte, then fields as
// (tag uint8, length uint8, value). Integers are big-endian. A decoder skips
// tags it does not know, so a newer node can add fields without breaking an
// older peer during a rolling upgrade; a change that old nodes must not
// misread takes a new version byte instead.
package peerstatus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Version is the encoding version this package writes.
const Version = 1

// MaxAncestors bounds Status.Ancestors (one field holds at most 255 bytes).
const MaxAncestors = 30

// MaxReasonSize bounds Status.Reason, in bytes.
const MaxReasonSize = 255

// Flags are yes/no facts about the sender.
type Flags uint32

const (
	// FlagFailover: failover is enabled on the sender (`halo failover on`).
	FlagFailover Flags = 1 << iota
	// FlagConsistent: the sender's replicated data is consistent (not left
	// half-written by an interrupted resync), so it could serve.
	FlagConsistent
	// FlagUpToDate: the sender knows its data is the newest (it was PRIM,
	// ALONE, or an in-sync SECOND when it last saw its peer).
	FlagUpToDate
)

// Status is one node's status for one module, as its peer sees it.
type Status struct {
	State     uint8 // numeric core.State
	Readiness uint8 // numeric core.Readiness
	Flags     Flags // unknown bits are kept, so they survive a round trip
	// Generation and Ancestors are the sender's data generation
	// (core/journal.Generation): Current, then ancestors newest first.
	Generation uint64
	Ancestors  []uint64
	// AloneSince is when the sender became ALONE (split-brain policy
	// "longest alone"); zero when it is not ALONE.
	AloneSince time.Time
	// Reason explains a WAIT (or any state) for display on the peer.
	Reason string
}

const (
	tagState      = 1 // 1 byte
	tagReadiness  = 2 // 1 byte
	tagFlags      = 3 // 4 bytes
	tagGeneration = 4 // 8 bytes current + 8 per ancestor
	tagAloneSince = 5 // 8 bytes, Unix ns
	tagReason     = 6 // UTF-8, 0..255 bytes
)

// MaxSize is the longest encoding Append produces: well inside a heartbeat
// payload and a single unfragmented datagram.
const MaxSize = 1 + 2*6 + 1 + 1 + 4 + 8*(1+MaxAncestors) + 8 + MaxReasonSize

// Append appends the encoding of s to dst.
func Append(dst []byte, s *Status) ([]byte, error) {
	if len(s.Ancestors) > MaxAncestors {
		return dst, fmt.Errorf("encode peer status: %d ancestors, max %d", len(s.Ancestors), MaxAncestors)
	}
	if len(s.Reason) > MaxReasonSize {
		return dst, fmt.Errorf("encode peer status: reason is %d bytes, max %d", len(s.Reason), MaxReasonSize)
	}
	if !utf8.ValidString(s.Reason) {
		return dst, errors.New("encode peer status: reason is not valid UTF-8")
	}
	dst = append(dst, Version)
	dst = append(dst, tagState, 1, s.State)
	dst = append(dst, tagReadiness, 1, s.Readiness)
	dst = append(dst, tagFlags, 4)
	dst = binary.BigEndian.AppendUint32(dst, uint32(s.Flags))
	dst = append(dst, tagGeneration, byte(8*(1+len(s.Ancestors))))
	dst = binary.BigEndian.AppendUint64(dst, s.Generation)
	for _, a := range s.Ancestors {
		dst = binary.BigEndian.AppendUint64(dst, a)
	}
	if !s.AloneSince.IsZero() {
		dst = append(dst, tagAloneSince, 8)
		dst = binary.BigEndian.AppendUint64(dst, uint64(s.AloneSince.UnixNano()))
	}
	if s.Reason != "" {
		dst = append(dst, tagReason, byte(len(s.Reason)))
		dst = append(dst, s.Reason...)
	}
	return dst, nil
}

// Encode returns the encoding of s.
func Encode(s *Status) ([]byte, error) {
	return Append(make([]byte, 0, 64), s)
}

// Decode parses an encoded status strictly: every known field must have its
// exact length and appear at most once, state and readiness are required,
// and nothing may be left over.
func Decode(b []byte) (Status, error) {
	var s Status
	if len(b) == 0 {
		return s, errors.New("decode peer status: empty")
	}
	if b[0] != Version {
		return s, fmt.Errorf("decode peer status: version %d, this node speaks %d", b[0], Version)
	}
	var seen [256]bool
	for rest := b[1:]; len(rest) > 0; {
		if len(rest) < 2 {
			return Status{}, errors.New("decode peer status: truncated field header")
		}
		tag, n := rest[0], int(rest[1])
		if len(rest) < 2+n {
			return Status{}, fmt.Errorf("decode peer status: field %d is %d bytes, %d remain", tag, n, len(rest)-2)
		}
		v := rest[2 : 2+n]
		rest = rest[2+n:]
		if seen[tag] {
			return Status{}, fmt.Errorf("decode peer status: field %d repeated", tag)
		}
		seen[tag] = true
		if err := s.decodeField(tag, v); err != nil {
			return Status{}, fmt.Errorf("decode peer status: %w", err)
		}
	}
	if !seen[tagState] || !seen[tagReadiness] {
		return Status{}, errors.New("decode peer status: state or readiness missing")
	}
	return s, nil
}

func (s *Status) decodeField(tag byte, v []byte) error {
	want := func(n int) error {
		if len(v) != n {
			return fmt.Errorf("field %d is %d bytes, want %d", tag, len(v), n)
		}
		return nil
	}
	switch tag {
	case tagState:
		if err := want(1); err != nil {
			return err
		}
		s.State = v[0]
	case tagReadiness:
		if err := want(1); err != nil {
			return err
		}
		s.Readiness = v[0]
	case tagFlags:
		if err := want(4); err != nil {
			return err
		}
		s.Flags = Flags(binary.BigEndian.Uint32(v))
	case tagGeneration:
		if len(v) < 8 || len(v)%8 != 0 {
			return fmt.Errorf("generation field is %d bytes, want a positive multiple of 8", len(v))
		}
		s.Generation = binary.BigEndian.Uint64(v)
		if k := len(v)/8 - 1; k > 0 {
			s.Ancestors = make([]uint64, k)
			for i := range s.Ancestors {
				s.Ancestors[i] = binary.BigEndian.Uint64(v[8*(i+1):])
			}
		}
	case tagAloneSince:
		if err := want(8); err != nil {
			return err
		}
		ns := int64(binary.BigEndian.Uint64(v))
		if ns == 0 {
			return errors.New("alone-since field holds zero; the field is omitted instead")
		}
		s.AloneSince = time.Unix(0, ns)
	case tagReason:
		if !utf8.Valid(v) {
			return errors.New("reason is not valid UTF-8")
		}
		s.Reason = string(v)
	}
	// Unknown tags: written by a newer peer, skipped on purpose.
	return nil
}
