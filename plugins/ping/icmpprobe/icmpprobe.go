// Package icmpprobe sends ICMP echo requests (IPv4 and IPv6) and counts
// the replies. It prefers the kernel's unprivileged ICMP sockets
// (SOCK_DGRAM, allowed by net.ipv4.ping_group_range) and falls back to a
// raw socket, which needs root or CAP_NET_RAW. The ping and splitbrain
// checkers share it.
//
// The socket is opened on the calling goroutine, so a caller that runs
// Probe on a thread switched into another network namespace pings from
// that namespace.
package icmpprobe

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Mode says which kind of socket to use.
type Mode string

const (
	// Auto tries an unprivileged socket, then a raw one.
	Auto Mode = "auto"
	// Unprivileged uses only the unprivileged ICMP socket.
	Unprivileged Mode = "unprivileged"
	// Raw uses only a raw socket.
	Raw Mode = "raw"
)

// Options shape a probe.
type Options struct {
	// Count is how many echo requests to send, at most.
	Count int
	// MinReplies ends the probe as soon as that many replies came.
	MinReplies int
	// Interval is the time between two requests.
	Interval time.Duration
	// Timeout is how long each request may wait for its reply.
	Timeout time.Duration
	Mode    Mode
}

// Stats is what a probe saw.
type Stats struct {
	Sent, Received int
	MinRTT, MaxRTT time.Duration
	TotalRTT       time.Duration
	// Mode is the socket kind actually used (Unprivileged or Raw).
	Mode Mode
}

// AvgRTT is the mean round-trip time of the replies.
func (s Stats) AvgRTT() time.Duration {
	if s.Received == 0 {
		return 0
	}
	return s.TotalRTT / time.Duration(s.Received)
}

// RTTs formats min/avg/max in milliseconds.
func (s Stats) RTTs() string {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return fmt.Sprintf("rtt min/avg/max %.3f/%.3f/%.3f ms", ms(s.MinRTT), ms(s.AvgRTT()), ms(s.MaxRTT))
}

// ErrNoSocket: neither socket kind could be opened.
var ErrNoSocket = errors.New("no ICMP socket allowed")

type conn struct {
	pc     *icmp.PacketConn
	mode   Mode
	v6     bool
	target net.Addr
}

func open(addr netip.Addr, mode Mode) (*conn, error) {
	v6 := addr.Is6() && !addr.Is4In6()
	dgram, raw, any := "udp4", "ip4:icmp", "0.0.0.0"
	if v6 {
		dgram, raw, any = "udp6", "ip6:ipv6-icmp", "::"
	}
	ip := addr.Unmap().AsSlice()
	var errs []error
	if mode == Auto || mode == Unprivileged {
		pc, err := icmp.ListenPacket(dgram, any)
		if err == nil {
			return &conn{pc: pc, mode: Unprivileged, v6: v6, target: &net.UDPAddr{IP: ip, Zone: addr.Zone()}}, nil
		}
		errs = append(errs, fmt.Errorf("unprivileged ICMP socket (net.ipv4.ping_group_range): %w", err))
	}
	if mode == Auto || mode == Raw {
		pc, err := icmp.ListenPacket(raw, any)
		if err == nil {
			return &conn{pc: pc, mode: Raw, v6: v6, target: &net.IPAddr{IP: ip, Zone: addr.Zone()}}, nil
		}
		errs = append(errs, fmt.Errorf("raw ICMP socket (root or CAP_NET_RAW): %w", err))
	}
	return nil, fmt.Errorf("%w: %w", ErrNoSocket, errors.Join(errs...))
}

// Probe pings addr. It returns early once MinReplies replies came, or once
// they can no longer come. An error means the probe could not run (no
// socket, ctx ended); unanswered requests are not errors.
func Probe(ctx context.Context, addr netip.Addr, o Options) (Stats, error) {
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	c, err := open(addr, o.Mode)
	if err != nil {
		return Stats{}, err
	}
	defer c.pc.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.pc.SetReadDeadline(time.Now()) })
	defer stop()

	// A raw socket sees every ICMP packet of the namespace; a random ID
	// and payload tell this probe's replies from anybody else's. (An
	// unprivileged socket gets only its own: the kernel sets the ID.)
	token := make([]byte, 16)
	_, _ = rand.Read(token)
	id := int(token[0])<<8 | int(token[1])

	st := Stats{Mode: c.mode, MinRTT: time.Duration(math.MaxInt64)}
	sentAt := make([]time.Time, 0, o.Count) // by sequence number
	answered := make([]bool, 0, o.Count)
	var reqType icmp.Type = ipv4.ICMPTypeEcho
	if c.v6 {
		reqType = ipv6.ICMPTypeEchoRequest
	}
	send := func() error {
		seq := len(sentAt)
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: token}}
		b, err := msg.Marshal(nil) // the kernel computes the ICMPv6 checksum
		if err != nil {
			return err
		}
		sentAt = append(sentAt, time.Now())
		answered = append(answered, false)
		st.Sent++
		if _, err := c.pc.WriteTo(b, c.target); err != nil && !transient(err) {
			return fmt.Errorf("send echo request to %s: %w", addr, err)
		}
		return nil
	}
	// possible is how many replies may still come: requests in flight
	// within their timeout, and requests not sent yet.
	possible := func(now time.Time) int {
		n := o.Count - st.Sent
		for seq, t := range sentAt {
			if !answered[seq] && now.Sub(t) <= o.Timeout {
				n++
			}
		}
		return n
	}
	if err := send(); err != nil {
		return st, err
	}
	nextSend := time.Now().Add(o.Interval)
	buf := make([]byte, 1500)
	for st.Received < o.MinReplies {
		now := time.Now()
		if st.Sent < o.Count && !now.Before(nextSend) {
			if err := send(); err != nil {
				return st, err
			}
			nextSend = now.Add(o.Interval)
		}
		if st.Received+possible(now) < o.MinReplies {
			break // hopeless, or every request answered or expired
		}
		wake := sentAt[len(sentAt)-1].Add(o.Timeout)
		if st.Sent < o.Count && nextSend.Before(wake) {
			wake = nextSend
		}
		if err := c.pc.SetReadDeadline(wake); err != nil {
			return st, err
		}
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
		n, from, err := c.pc.ReadFrom(buf)
		now = time.Now()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if ctx.Err() != nil {
				return st, ctx.Err()
			}
			continue
		}
		if err != nil {
			return st, fmt.Errorf("read ICMP: %w", err)
		}
		seq, ok := c.reply(buf[:n], from, addr, id, token)
		if !ok || seq < 0 || seq >= len(sentAt) || answered[seq] || now.Sub(sentAt[seq]) > o.Timeout {
			continue // not ours, a duplicate, or too late to count
		}
		answered[seq] = true
		rtt := now.Sub(sentAt[seq])
		st.Received++
		st.TotalRTT += rtt
		st.MinRTT = min(st.MinRTT, rtt)
		st.MaxRTT = max(st.MaxRTT, rtt)
	}
	if st.Received == 0 {
		st.MinRTT = 0
	}
	return st, nil
}

// reply returns the sequence number of an echo reply meant for this probe.
func (c *conn) reply(b []byte, from net.Addr, want netip.Addr, id int, token []byte) (int, bool) {
	proto, replyType := 1, icmp.Type(ipv4.ICMPTypeEchoReply)
	if c.v6 {
		proto, replyType = 58, ipv6.ICMPTypeEchoReply
	}
	msg, err := icmp.ParseMessage(proto, b)
	if err != nil || msg.Type != replyType {
		return 0, false
	}
	echo, ok := msg.Body.(*icmp.Echo)
	if !ok || !bytes.Equal(echo.Data, token) {
		return 0, false
	}
	if c.mode == Raw && echo.ID != id {
		return 0, false
	}
	var ip net.IP
	switch a := from.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	}
	got, ok := netip.AddrFromSlice(ip)
	if !ok || got.Unmap() != want.Unmap().WithZone("") {
		return 0, false
	}
	return echo.Seq, true
}

// transient send errors count as unanswered requests: the network may come
// back before the next one.
func transient(err error) bool {
	return errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.EHOSTDOWN) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN)
}
