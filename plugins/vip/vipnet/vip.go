package vipnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VIP is a virtual address on an interface of a namespace.
type VIP struct {
	NS Namespace
	// Prefix is the address with its subnet's prefix length
	// (198.18.0.100/24): the prefix decides the route the kernel adds.
	Prefix netip.Prefix
	// Interface carries the address; "" means the interface holding
	// another address of the same subnet.
	Interface string
}

// ParsePrefix reads "198.18.0.100/24", or a bare address taken as a host
// route (/32, /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%s: a VIP takes no zone", s)
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%s: write an IPv4 address in IPv4 form", s)
	}
	if a := p.Addr(); a.IsMulticast() || a.IsUnspecified() || a.IsLoopback() || a.IsLinkLocalUnicast() {
		return netip.Prefix{}, fmt.Errorf("%s: not a unicast address a host can take over", s)
	}
	return p, nil
}

func (v VIP) netlinkAddr() *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: v.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(v.Prefix.Bits(), v.Prefix.Addr().BitLen())}}
	if v.Prefix.Addr().Is6() {
		// Duplicate address detection would keep the address tentative
		// (unusable) for a second or more after a failover; halo probes
		// for duplicates itself instead (Status).
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// Acquire adds the address unless it is there already; added says whether
// it was. It does not announce (Announce does).
func (v VIP) Acquire(ctx context.Context) (link LinkState, added bool, err error) {
	if err := ctx.Err(); err != nil {
		return LinkState{}, false, err
	}
	h, err := v.NS.handle()
	if err != nil {
		return LinkState{}, false, err
	}
	defer h.Close()
	l, err := findLink(h, v.Prefix, v.Interface)
	if err != nil {
		return LinkState{}, false, err
	}
	link = linkState(l)
	err = h.AddrAdd(l, v.netlinkAddr())
	switch {
	case err == nil:
		return link, true, nil
	case errors.Is(err, unix.EEXIST):
		present, _, perr := v.present(h, l)
		if perr != nil {
			return link, false, perr
		}
		if !present {
			// EEXIST with another prefix length: the address is there,
			// but not as configured. Say so rather than pretend.
			return link, false, fmt.Errorf("add %s to %s: the address is already there with another prefix length", v.Prefix, link.Name)
		}
		return link, false, nil
	default:
		return link, false, fmt.Errorf("add %s to %s: %w", v.Prefix, link.Name, err)
	}
}

// present reports whether the VIP is on l, with its prefix length, and the
// address's flags.
func (v VIP) present(h *netlink.Handle, l netlink.Link) (bool, int, error) {
	addrs, err := h.AddrList(l, family(v.Prefix.Addr()))
	if err != nil {
		return false, 0, fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		ip, ok := toAddr(a.IP)
		ones, _ := a.Mask.Size()
		if ok && ip == v.Prefix.Addr() && ones == v.Prefix.Bits() {
			return true, a.Flags, nil
		}
	}
	return false, 0, nil
}

// Release removes the address from every interface holding it (only the
// configured one when Interface is set); removed says whether it was
// anywhere.
func (v VIP) Release(ctx context.Context) (removed bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	h, err := v.NS.handle()
	if err != nil {
		return false, err
	}
	defer h.Close()
	var only netlink.Link
	if v.Interface != "" {
		if only, err = h.LinkByName(v.Interface); err != nil {
			return false, fmt.Errorf("find interface %s: %w", v.Interface, err)
		}
	}
	addrs, err := h.AddrList(only, family(v.Prefix.Addr()))
	if err != nil {
		return false, fmt.Errorf("list addresses: %w", err)
	}
	var errs []error
	for _, a := range addrs {
		ip, ok := toAddr(a.IP)
		if !ok || ip != v.Prefix.Addr() {
			continue
		}
		l, err := h.LinkByIndex(a.LinkIndex)
		if err != nil {
			errs = append(errs, fmt.Errorf("find interface %d: %w", a.LinkIndex, err))
			continue
		}
		del := a
		if err := h.AddrDel(l, &del); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", v.Prefix.Addr(), l.Attrs().Name, err))
			continue
		}
		removed = true
	}
	return removed, errors.Join(errs...)
}

// Announce tells the segment that the address is here: gratuitous ARP in
// both forms for IPv4, an unsolicited neighbour advertisement for IPv6.
func (v VIP) Announce(ctx context.Context) error {
	if v.Prefix.Addr().Is4() {
		return v.SendGARP(ctx, GARPRequest, GARPReply)
	}
	return v.send(ctx, etherTypeIPv6, func(mac net.HardwareAddr) [][]byte {
		return [][]byte{unsolicitedNAFrame(mac, v.Prefix.Addr())}
	})
}

// SendGARP sends gratuitous ARP frames of the given forms.
func (v VIP) SendGARP(ctx context.Context, forms ...GARPForm) error {
	if !v.Prefix.Addr().Is4() {
		return fmt.Errorf("gratuitous ARP for %s: not an IPv4 address", v.Prefix.Addr())
	}
	return v.send(ctx, etherTypeARP, func(mac net.HardwareAddr) [][]byte {
		var frames [][]byte
		for _, f := range forms {
			frames = append(frames, garpFrame(f, mac, v.Prefix.Addr()))
		}
		return frames
	})
}

func (v VIP) send(ctx context.Context, etherType uint16, frames func(net.HardwareAddr) [][]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	link, err := v.link()
	if err != nil {
		return err
	}
	if len(link.MAC) != 6 {
		return fmt.Errorf("announce %s on %s: the interface has no Ethernet address", v.Prefix.Addr(), link.Name)
	}
	pc, err := v.NS.openPacket(link.Index, etherType)
	if err != nil {
		return err
	}
	defer pc.Close()
	for _, f := range frames(link.MAC) {
		if err := pc.send(f[:6], f); err != nil {
			return fmt.Errorf("announce %s on %s: %w", v.Prefix.Addr(), link.Name, err)
		}
	}
	return nil
}

func (v VIP) link() (LinkState, error) {
	h, err := v.NS.handle()
	if err != nil {
		return LinkState{}, err
	}
	defer h.Close()
	l, err := findLink(h, v.Prefix, v.Interface)
	if err != nil {
		return LinkState{}, err
	}
	return linkState(l), nil
}

// Status is what this node sees of its address.
type Status struct {
	Present bool
	// Conflict is the Ethernet address of another host answering for the
	// address; nil when none did (or no probe was made).
	Conflict net.HardwareAddr
	// DADFailed: the kernel's own duplicate address detection failed for
	// the (IPv6) address.
	DADFailed bool
	Link      LinkState
}

// Duplicated reports whether another host claims the address.
func (s Status) Duplicated() bool { return s.Conflict != nil || s.DADFailed }

// Message describes the status in one line.
func (s Status) Message(addr netip.Prefix) string {
	var b strings.Builder
	if s.Present {
		fmt.Fprintf(&b, "%s present on %s", addr, s.Link.Name)
	} else {
		fmt.Fprintf(&b, "%s absent from %s", addr, s.Link.Name)
	}
	switch {
	case s.Conflict != nil:
		fmt.Fprintf(&b, ", duplicated: %s also answers for it", s.Conflict)
	case s.DADFailed:
		b.WriteString(", duplicated: duplicate address detection failed")
	}
	switch {
	case !s.Link.AdminUp:
		b.WriteString(", interface down")
	case !s.Link.Carrier:
		b.WriteString(", interface has no carrier")
	default:
		b.WriteString(", interface up")
	}
	return b.String()
}

// Status reports presence and the interface's state and, when the address
// is present and probe is positive, probes for another host answering for
// it during at most probe (or until ctx ends).
func (v VIP) Status(ctx context.Context, probe time.Duration) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	h, err := v.NS.handle()
	if err != nil {
		return Status{}, err
	}
	l, err := findLink(h, v.Prefix, v.Interface)
	if err != nil {
		h.Close()
		return Status{}, err
	}
	st := Status{Link: linkState(l)}
	present, flags, err := v.present(h, l)
	h.Close()
	if err != nil {
		return Status{}, err
	}
	st.Present = present
	st.DADFailed = flags&unix.IFA_F_DADFAILED != 0
	if !present || probe <= 0 || !st.Link.Up() {
		return st, nil
	}
	st.Conflict, err = v.probe(ctx, st.Link, probe)
	if err != nil {
		return Status{}, err
	}
	return st, nil
}

// probe asks who has the address, as a host about to configure it would,
// and returns the Ethernet address of a host other than this one that
// answered within wait.
func (v VIP) probe(ctx context.Context, link LinkState, wait time.Duration) (net.HardwareAddr, error) {
	addr := v.Prefix.Addr()
	etherType, frame := uint16(etherTypeIPv6), dadProbeFrame(link.MAC, addr)
	if addr.Is4() {
		etherType, frame = etherTypeARP, arpProbeFrame(link.MAC, addr)
	}
	pc, err := v.NS.openPacket(link.Index, etherType)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	if err := pc.send(frame[:6], frame); err != nil {
		return nil, fmt.Errorf("probe for %s on %s: %w", addr, link.Name, err)
	}
	var conflict net.HardwareAddr
	foreign := func(mac net.HardwareAddr) bool { return mac.String() != link.MAC.String() }
	_, err = pc.receive(ctx, wait, func(f []byte) bool {
		if addr.Is4() {
			// A reply, or another host's own announcement or probe
			// defence: any ARP whose sender claims the address.
			_, sha, spa, ok := parseARP(f)
			if ok && spa == addr && foreign(sha) {
				conflict = append(net.HardwareAddr(nil), sha...)
				return true
			}
			return false
		}
		target, src, ok := parseNA(f)
		if ok && target == addr && foreign(src) {
			conflict = append(net.HardwareAddr(nil), src...)
			return true
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("probe for %s on %s: %w", addr, link.Name, err)
	}
	return conflict, nil
}
