package testbed

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Ping sends ICMP echo requests from the host to dst every 100 ms until one
// is answered (returning its round-trip time) or ctx ends. It needs no ping
// binary: a raw socket opened inside the host does the work.
func (h *Host) Ping(ctx context.Context, dst netip.Addr) (time.Duration, error) {
	if !dst.Is4() {
		return 0, fmt.Errorf("ping %s from %s: only IPv4 is supported", dst, h.Name)
	}
	conn, err := h.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return 0, fmt.Errorf("open ICMP socket in %s: %w", h.Name, err)
	}
	defer conn.Close()

	// A raw socket sees every ICMP packet of the namespace: the random ID
	// tells our replies from those of a concurrent Ping.
	id := uint16(rand.Uint32())
	replies := make(chan time.Duration, 1)
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				readErr <- err
				return
			}
			got := time.Now()
			ip, ok := from.(*net.IPAddr)
			if !ok || !ip.IP.Equal(dst.AsSlice()) || n < 8 || buf[0] != 0 /* echo reply */ {
				continue
			}
			if binary.BigEndian.Uint16(buf[4:]) != id {
				continue
			}
			stamp := int64(binary.BigEndian.Uint64(append(buf[8:n:n], make([]byte, 8)...)))
			replies <- got.Sub(time.Unix(0, stamp))
			return
		}
	}()

	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	addr := &net.IPAddr{IP: dst.AsSlice()}
	for seq := uint16(1); ; seq++ {
		if _, err := conn.WriteTo(echoRequest(id, seq, time.Now()), addr); err != nil {
			// "Network unreachable" while a link is down is an unanswered
			// ping, not a broken test bed: keep trying until ctx says stop.
			if !isTransientSendError(err) {
				return 0, fmt.Errorf("send ICMP echo from %s to %s: %w", h.Name, dst, err)
			}
		}
		select {
		case rtt := <-replies:
			return rtt, nil
		case err := <-readErr:
			return 0, fmt.Errorf("read ICMP in %s: %w", h.Name, err)
		case <-ctx.Done():
			return 0, fmt.Errorf("ping %s from %s: no reply to %d requests: %w", dst, h.Name, seq, ctx.Err())
		case <-ticker.C:
		}
	}
}

// echoRequest builds an ICMP echo request carrying its send time.
func echoRequest(id, seq uint16, at time.Time) []byte {
	m := make([]byte, 16)
	m[0] = 8 // echo request
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	binary.BigEndian.PutUint64(m[8:], uint64(at.UnixNano()))
	binary.BigEndian.PutUint16(m[2:], icmpChecksum(m))
	return m
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func isTransientSendError(err error) bool {
	for _, e := range []error{syscall.ENETUNREACH, syscall.EHOSTUNREACH, syscall.EHOSTDOWN, syscall.ENOBUFS, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
