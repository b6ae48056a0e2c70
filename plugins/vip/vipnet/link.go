package vipnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// ErrNoInterface: no interface was named and none holds an address in the
// VIP's subnet.
var ErrNoInterface = errors.New("no interface holds an address in the subnet")

// LinkState is what an interface looks like.
type LinkState struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	// AdminUp: the interface is up (ip link set up).
	AdminUp bool
	// Carrier: the link has a carrier (cable, peer of a veth, ...).
	// Virtual interfaces without the notion count as having one.
	Carrier bool
	// OperState as the kernel reports it ("up", "down", "lowerlayerdown",
	// "unknown", ...).
	OperState string
}

// Up reports whether the interface can carry traffic.
func (s LinkState) Up() bool { return s.AdminUp && s.Carrier }

func linkState(l netlink.Link) LinkState {
	a := l.Attrs()
	oper := a.OperState
	return LinkState{
		Name:    a.Name,
		Index:   a.Index,
		MAC:     a.HardwareAddr,
		AdminUp: a.Flags&net.FlagUp != 0,
		// IFF_RUNNING mirrors the carrier; oper state "unknown" is what
		// drivers without carrier reporting (loopback, dummy) show.
		Carrier:   a.RawFlags&unixIFFRunning != 0 || (a.Flags&net.FlagUp != 0 && oper == netlink.OperUnknown),
		OperState: oper.String(),
	}
}

// unixIFFRunning is IFF_RUNNING (include/uapi/linux/if.h).
const unixIFFRunning = 0x40

// Link returns the state of an interface by name.
func (ns Namespace) Link(name string) (LinkState, error) {
	h, err := ns.handle()
	if err != nil {
		return LinkState{}, err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return LinkState{}, fmt.Errorf("find interface %s: %w", name, err)
	}
	return linkState(l), nil
}

// findLink returns the named interface, or when name is "" the one holding
// an address (other than vip itself) in vip's subnet.
func findLink(h *netlink.Handle, vip netip.Prefix, name string) (netlink.Link, error) {
	if name != "" {
		l, err := h.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("find interface %s: %w", name, err)
		}
		return l, nil
	}
	addrs, err := h.AddrList(nil, family(vip.Addr()))
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	subnet := vip.Masked()
	for _, a := range addrs {
		ip, ok := toAddr(a.IP)
		if !ok || ip == vip.Addr() || !subnet.Contains(ip) {
			continue
		}
		l, err := h.LinkByIndex(a.LinkIndex)
		if err != nil {
			return nil, fmt.Errorf("find interface %d: %w", a.LinkIndex, err)
		}
		return l, nil
	}
	return nil, fmt.Errorf("find interface for %s: %w %s", vip, ErrNoInterface, subnet)
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func toAddr(ip net.IP) (netip.Addr, bool) {
	if v4 := ip.To4(); v4 != nil {
		return netip.AddrFrom4([4]byte(v4)), true
	}
	a, ok := netip.AddrFromSlice(ip)
	return a, ok
}
