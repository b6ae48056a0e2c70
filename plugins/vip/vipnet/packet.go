package vipnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

const (
	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd

	arpRequest = 1
	arpReply   = 2

	icmpv6NeighborSolicitation  = 135
	icmpv6NeighborAdvertisement = 136
	protoICMPv6                 = 58

	// minFrame is the shortest Ethernet frame without its FCS; shorter
	// ones are padded, as a NIC would.
	minFrame = 60
)

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// packetConn is an AF_PACKET socket bound to one interface and one
// EtherType, read through the runtime's poller so reads honour deadlines.
type packetConn struct {
	file    *os.File
	fd      int
	ifindex int
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openPacket opens the socket inside ns.
func (ns Namespace) openPacket(ifindex int, etherType uint16) (*packetConn, error) {
	var pc *packetConn
	err := ns.do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(etherType)))
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(etherType), Ifindex: ifindex}); err != nil {
			_ = unix.Close(fd)
			return fmt.Errorf("bind packet socket to interface %d: %w", ifindex, err)
		}
		pc = &packetConn{file: os.NewFile(uintptr(fd), "packet"), fd: fd, ifindex: ifindex}
		return nil
	})
	return pc, err
}

func (c *packetConn) Close() error { return c.file.Close() }

func (c *packetConn) send(dst net.HardwareAddr, frame []byte) error {
	if len(frame) < minFrame {
		frame = append(frame, make([]byte, minFrame-len(frame))...)
	}
	sa := &unix.SockaddrLinklayer{Ifindex: c.ifindex, Halen: 6}
	copy(sa.Addr[:], dst)
	raw, err := c.file.SyscallConn()
	if err != nil {
		return err
	}
	var sendErr error
	err = raw.Write(func(fd uintptr) bool {
		sendErr = unix.Sendto(int(fd), frame, 0, sa)
		return !errors.Is(sendErr, unix.EAGAIN)
	})
	if err != nil {
		return err
	}
	return sendErr
}

// receive calls match with every frame until it returns true, ctx ends or
// wait elapses; it reports whether a frame matched.
func (c *packetConn) receive(ctx context.Context, wait time.Duration, match func(frame []byte) bool) (bool, error) {
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.file.SetReadDeadline(deadline); err != nil {
		return false, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.file.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 2048)
	for {
		n, err := c.file.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return false, ctx.Err()
			}
			return false, err
		}
		if match(buf[:n]) {
			return true, nil
		}
	}
}

func ethernet(dst, src net.HardwareAddr, etherType uint16, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], etherType)
	return append(f, payload...)
}

func arpPacket(op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(p[2:4], etherTypeIPv4)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:8], op)
	copy(p[8:14], sha)
	s4, t4 := spa.As4(), tpa.As4()
	copy(p[14:18], s4[:])
	copy(p[18:24], tha)
	copy(p[24:28], t4[:])
	return p
}

// GARPForm selects a gratuitous ARP's form. Hosts differ in which they
// heed, so announcements send both.
type GARPForm int

const (
	// GARPRequest: an ARP request for the address, from the address.
	GARPRequest GARPForm = iota
	// GARPReply: an unsolicited ARP reply, broadcast.
	GARPReply
)

func garpFrame(form GARPForm, mac net.HardwareAddr, ip netip.Addr) []byte {
	if form == GARPReply {
		// Linux takes a reply as gratuitous only when its target hardware
		// address is the sender's (net/ipv4/arp.c, arp_is_garp).
		return ethernet(broadcastMAC, mac, etherTypeARP, arpPacket(arpReply, mac, ip, mac, ip))
	}
	return ethernet(broadcastMAC, mac, etherTypeARP, arpPacket(arpRequest, mac, ip, make(net.HardwareAddr, 6), ip))
}

// arpProbeFrame is an RFC 5227 probe: sender address 0.0.0.0, so that
// nobody's cache learns from it.
func arpProbeFrame(mac net.HardwareAddr, ip netip.Addr) []byte {
	return ethernet(broadcastMAC, mac, etherTypeARP, arpPacket(arpRequest, mac, netip.IPv4Unspecified(), make(net.HardwareAddr, 6), ip))
}

// parseARP returns the sender addresses of an ARP frame.
func parseARP(frame []byte) (op uint16, sha net.HardwareAddr, spa netip.Addr, ok bool) {
	if len(frame) < 14+28 || binary.BigEndian.Uint16(frame[12:14]) != etherTypeARP {
		return 0, nil, netip.Addr{}, false
	}
	p := frame[14:]
	if binary.BigEndian.Uint16(p[2:4]) != etherTypeIPv4 || p[4] != 6 || p[5] != 4 {
		return 0, nil, netip.Addr{}, false
	}
	return binary.BigEndian.Uint16(p[6:8]), net.HardwareAddr(p[8:14]), netip.AddrFrom4([4]byte(p[14:18])), true
}

var allNodes = netip.MustParseAddr("ff02::1")

func multicastMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As16()
	return net.HardwareAddr{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

func solicitedNode(ip netip.Addr) netip.Addr {
	b := ip.As16()
	return netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 11: 0x01, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
}

// ipv6Frame wraps an ICMPv6 message in IPv6 (hop limit 255, as neighbour
// discovery requires) and Ethernet, computing the ICMPv6 checksum.
func ipv6Frame(srcMAC net.HardwareAddr, src, dst netip.Addr, icmp []byte) []byte {
	s, d := src.As16(), dst.As16()
	sum := checksum(s[:], d[:], icmp)
	binary.BigEndian.PutUint16(icmp[2:4], sum)
	h := make([]byte, 40, 40+len(icmp))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:6], uint16(len(icmp)))
	h[6] = protoICMPv6
	h[7] = 255
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return ethernet(multicastMAC(dst), srcMAC, etherTypeIPv6, append(h, icmp...))
}

func checksum(src, dst, icmp []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src)
	add(dst)
	var pseudo [8]byte
	binary.BigEndian.PutUint32(pseudo[0:4], uint32(len(icmp)))
	pseudo[7] = protoICMPv6
	add(pseudo[:])
	add(icmp)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// unsolicitedNAFrame advertises ip at mac to all nodes with the override
// flag, so that neighbours replace what they cached (RFC 4861 7.2.6).
func unsolicitedNAFrame(mac net.HardwareAddr, ip netip.Addr) []byte {
	m := make([]byte, 32)
	m[0] = icmpv6NeighborAdvertisement
	m[4] = 0x20 // Override
	t := ip.As16()
	copy(m[8:24], t[:])
	m[24], m[25] = 2, 1 // target link-layer address option, 8 bytes
	copy(m[26:32], mac)
	return ipv6Frame(mac, ip, allNodes, m)
}

// dadProbeFrame is a neighbour solicitation from the unspecified address,
// as duplicate address detection sends it (RFC 4862 5.4.2).
func dadProbeFrame(mac net.HardwareAddr, ip netip.Addr) []byte {
	m := make([]byte, 24)
	m[0] = icmpv6NeighborSolicitation
	t := ip.As16()
	copy(m[8:24], t[:])
	return ipv6Frame(mac, netip.IPv6Unspecified(), solicitedNode(ip), m)
}

// parseNA returns the target and the Ethernet source of a neighbour
// advertisement.
func parseNA(frame []byte) (target netip.Addr, srcMAC net.HardwareAddr, ok bool) {
	if len(frame) < 14+40+24 || binary.BigEndian.Uint16(frame[12:14]) != etherTypeIPv6 {
		return netip.Addr{}, nil, false
	}
	ip := frame[14:]
	if ip[6] != protoICMPv6 || ip[7] != 255 {
		return netip.Addr{}, nil, false
	}
	icmp := ip[40:]
	if icmp[0] != icmpv6NeighborAdvertisement || icmp[1] != 0 {
		return netip.Addr{}, nil, false
	}
	return netip.AddrFrom16([16]byte(icmp[8:24])), net.HardwareAddr(frame[6:12]), true
}
