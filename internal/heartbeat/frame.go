package heartbeat

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Frame layout, version 1. All integers are big-endian.
//
//	off  size  field
//	  0     4  magic "HLHB"
//	  4     1  version (1)
//	  5     1  flags (reserved, must be 0)
//	  6     8  cluster id: SHA-256("halo cluster id\x00" + cluster name)[:8]
//	 14     4  module id
//	 18     8  sender boot id (random per Endpoint)
//	 26     8  sequence number (per boot, starts at 1)
//	 34     8  sender timestamp, Unix nanoseconds
//	 42     8  echo: timestamp of the receiver's last frame the sender accepted on this network (0 = none)
//	 50     8  echo hold: nanoseconds between accepting that frame and sending this one
//	 58   1+n  sender node name   (n = 1..255)
//	  .   1+n  receiver node name (n = 1..255)
//	  .   1+n  network name       (n = 1..255)
//	  .   2+n  payload            (n = 0..MaxPayloadSize)
//	end-32 32  HMAC-SHA256 over every byte before it
//
// The MAC key is derived from the cluster key with HKDF-SHA256 (info
// "halo heartbeat v1"), so the cluster key can serve other purposes without
// a heartbeat MAC ever being valid elsewhere.
const (
	// Version is the frame format version this package writes and reads.
	Version = 1
	// MaxFrameSize bounds a datagram; anything larger is dropped unread.
	MaxFrameSize = 8192
	// MaxPayloadSize is the largest payload Send accepts. Any payload up to
	// this size fits in MaxFrameSize whatever the name lengths. Keep real
	// payloads well under the path MTU (about 1200 bytes): a fragmented
	// heartbeat is lost when any fragment is.
	MaxPayloadSize = 7168
	// MinKeySize is the shortest cluster key accepted.
	MinKeySize = 32

	macSize         = sha256.Size
	fixedHeaderSize = 58
	maxNameSize     = 255
	minFrameSize    = fixedHeaderSize + 3*(1+1) + 2 + macSize
)

var frameMagic = [4]byte{'H', 'L', 'H', 'B'}

// frame is a decoded heartbeat, minus the fields the codec checks itself
// (magic, version, cluster id, MAC).
type frame struct {
	module     uint32
	boot       uint64
	seq        uint64
	sentAt     int64 // Unix ns, sender's clock
	echoSentAt int64 // Unix ns, receiver's clock; 0 = no echo
	echoHold   int64 // ns
	sender     string
	receiver   string
	network    string
	payload    []byte // aliases the decoded buffer
}

// codec encodes and authenticates frames for one cluster. It is safe for
// concurrent use.
type codec struct {
	clusterID [8]byte
	macKey    []byte
}

// ClusterID returns the 8-byte cluster identifier written in every frame.
// It is not secret; it lets a node tell a frame from another cluster (a
// configuration mistake) from a forged one.
func ClusterID(cluster string) [8]byte {
	sum := sha256.Sum256([]byte("halo cluster id\x00" + cluster))
	var id [8]byte
	copy(id[:], sum[:8])
	return id
}

func newCodec(cluster string, clusterKey []byte) (*codec, error) {
	if cluster == "" {
		return nil, errors.New("derive heartbeat key: cluster name is empty")
	}
	if len(clusterKey) < MinKeySize {
		return nil, fmt.Errorf("derive heartbeat key: cluster key is %d bytes, need at least %d", len(clusterKey), MinKeySize)
	}
	key, err := hkdf.Key(sha256.New, clusterKey, nil, "halo heartbeat v1", sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("derive heartbeat key: %w", err)
	}
	return &codec{clusterID: ClusterID(cluster), macKey: key}, nil
}

// appendFrame appends the encoded, authenticated frame to dst.
func (c *codec) appendFrame(dst []byte, f *frame) ([]byte, error) {
	for _, n := range [...]struct{ what, v string }{
		{"sender", f.sender}, {"receiver", f.receiver}, {"network", f.network},
	} {
		if len(n.v) == 0 || len(n.v) > maxNameSize {
			return dst, fmt.Errorf("encode heartbeat: %s name must be 1..%d bytes, got %d", n.what, maxNameSize, len(n.v))
		}
	}
	if len(f.payload) > MaxPayloadSize {
		return dst, fmt.Errorf("encode heartbeat: payload is %d bytes, max %d", len(f.payload), MaxPayloadSize)
	}
	start := len(dst)
	dst = append(dst, frameMagic[:]...)
	dst = append(dst, Version, 0)
	dst = append(dst, c.clusterID[:]...)
	dst = binary.BigEndian.AppendUint32(dst, f.module)
	dst = binary.BigEndian.AppendUint64(dst, f.boot)
	dst = binary.BigEndian.AppendUint64(dst, f.seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(f.sentAt))
	dst = binary.BigEndian.AppendUint64(dst, uint64(f.echoSentAt))
	dst = binary.BigEndian.AppendUint64(dst, uint64(f.echoHold))
	dst = append(dst, byte(len(f.sender)))
	dst = append(dst, f.sender...)
	dst = append(dst, byte(len(f.receiver)))
	dst = append(dst, f.receiver...)
	dst = append(dst, byte(len(f.network)))
	dst = append(dst, f.network...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(f.payload)))
	dst = append(dst, f.payload...)
	m := hmac.New(sha256.New, c.macKey)
	m.Write(dst[start:])
	return m.Sum(dst), nil
}

// decode checks and parses one datagram. On error the reason says why the
// frame was dropped. The MAC is checked in constant time, and no field is
// returned unless it verifies.
func (c *codec) decode(b []byte) (frame, DropReason, error) {
	var f frame
	switch {
	case len(b) > MaxFrameSize:
		return f, DropOversized, fmt.Errorf("frame is larger than %d bytes", MaxFrameSize)
	case len(b) < minFrameSize:
		return f, DropMalformed, fmt.Errorf("frame is %d bytes, shorter than the minimum %d", len(b), minFrameSize)
	case !bytes.Equal(b[0:4], frameMagic[:]):
		return f, DropMalformed, errors.New("bad magic: not a halo heartbeat")
	case b[4] != Version:
		return f, DropVersion, fmt.Errorf("frame version %d, this node speaks %d", b[4], Version)
	case !bytes.Equal(b[6:14], c.clusterID[:]):
		return f, DropWrongCluster, fmt.Errorf("cluster id %x, want %x", b[6:14], c.clusterID)
	}
	body, sum := b[:len(b)-macSize], b[len(b)-macSize:]

	// The layout is checked before the MAC so that a truncated or padded
	// frame is reported as such; nothing parsed here is used unless the
	// MAC verifies, and every length is bounds-checked.
	rest := body[fixedHeaderSize:]
	var err error
	if f.sender, rest, err = readName(rest, "sender"); err != nil {
		return frame{}, DropMalformed, err
	}
	if f.receiver, rest, err = readName(rest, "receiver"); err != nil {
		return frame{}, DropMalformed, err
	}
	if f.network, rest, err = readName(rest, "network"); err != nil {
		return frame{}, DropMalformed, err
	}
	if len(rest) < 2 {
		return frame{}, DropMalformed, errors.New("truncated payload length")
	}
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if n > MaxPayloadSize {
		return frame{}, DropMalformed, fmt.Errorf("payload length %d exceeds %d", n, MaxPayloadSize)
	}
	if n != len(rest) {
		return frame{}, DropMalformed, fmt.Errorf("payload length %d, but %d bytes remain before the MAC", n, len(rest))
	}
	f.payload = rest

	m := hmac.New(sha256.New, c.macKey)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), sum) {
		return frame{}, DropBadMAC, errors.New("MAC does not verify with the cluster key")
	}
	if b[5] != 0 {
		return frame{}, DropMalformed, fmt.Errorf("reserved flags %#x set", b[5])
	}
	f.module = binary.BigEndian.Uint32(b[14:])
	f.boot = binary.BigEndian.Uint64(b[18:])
	f.seq = binary.BigEndian.Uint64(b[26:])
	f.sentAt = int64(binary.BigEndian.Uint64(b[34:]))
	f.echoSentAt = int64(binary.BigEndian.Uint64(b[42:]))
	f.echoHold = int64(binary.BigEndian.Uint64(b[50:]))
	return f, 0, nil
}

func readName(b []byte, what string) (string, []byte, error) {
	if len(b) < 1 {
		return "", nil, fmt.Errorf("truncated %s name", what)
	}
	n := int(b[0])
	if n == 0 {
		return "", nil, fmt.Errorf("empty %s name", what)
	}
	if len(b) < 1+n {
		return "", nil, fmt.Errorf("truncated %s name", what)
	}
	return string(b[1 : 1+n]), b[1+n:], nil
}
