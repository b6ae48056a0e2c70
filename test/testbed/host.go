package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Host is one simulated machine: a network namespace plugged into every
// network of the bed.
type Host struct {
	// Name is the host's name as given in Options.Hosts.
	Name string

	bed     *Bed
	index   int
	dir     string
	utsPath string // bind mount keeping the host's UTS namespace

	nsID nsID       // identifies the namespace in /proc/<pid>/ns/net
	nlMu sync.Mutex // serialises requests on nl
	nl   *netlink.Handle

	ifaces []string
	addrs  []netip.Addr
	macs   []net.HardwareAddr

	procMu sync.Mutex
	procs  []*Process

	faultMu sync.Mutex
	drops   map[int][]netip.Addr // network index → dropped peers (nil slice: all traffic)
}

// Netns is the name of the host's network namespace, usable with
// `ip netns exec`.
func (h *Host) Netns() string { return h.bed.prefix + h.Name }

// NetnsPath is the path of the host's network namespace file.
func (h *Host) NetnsPath() string { return filepath.Join(netnsDir, h.Netns()) }

// Dir is a scratch directory for the host (state, mounts, configuration),
// removed with the bed.
func (h *Host) Dir() string { return h.dir }

// Addr is the host's own address on a network.
func (h *Host) Addr(network string) netip.Addr { return h.addrs[h.bed.mustNetwork(network)] }

// Iface is the name, inside the host, of its interface on a network (eth<n>).
func (h *Host) Iface(network string) string { return h.ifaces[h.bed.mustNetwork(network)] }

// MAC is the hardware address of the host's interface on a network.
func (h *Host) MAC(network string) net.HardwareAddr {
	return append(net.HardwareAddr(nil), h.macs[h.bed.mustNetwork(network)]...)
}

// Command returns a command that runs name inside the host, however the
// caller runs it (Run, Start, Output, or Host.Start for a tracked process).
// It is `nsenter --net=<ns> --uts=<ns> -- name args…`; nsenter execs name in
// place, so the process's PID is name's own and ctx cancellation kills name
// itself. The network namespace and the hostname are the host's; the
// filesystem, mounts, PIDs and /sys are the machine's.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	full := append([]string{"--net=" + h.NetnsPath(), "--uts=" + h.utsPath, "--", name}, args...)
	return exec.CommandContext(ctx, h.bed.nsenter, full...)
}

// isOwnCommand reports whether cmd was made by h.Command, so Start never runs
// a program in the root namespace by mistake.
func (h *Host) isOwnCommand(cmd *exec.Cmd) bool {
	return cmd.Path == h.bed.nsenter && len(cmd.Args) > 4 &&
		cmd.Args[1] == "--net="+h.NetnsPath() && cmd.Args[2] == "--uts="+h.utsPath
}

// Run runs a command inside the host and returns its combined output. A
// non-zero exit is an error that includes the output.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("run %s %v in %s: %w: %s", name, args, h.Name, err, out)
	}
	return string(out), nil
}

// Do runs fn on an OS thread switched into the host's network namespace.
// Sockets fn creates stay in that namespace after Do returns. fn must not
// start goroutines that expect the namespace: only its own thread has it.
func (h *Host) Do(fn func() error) error {
	// Opening the namespace by path for every call (rather than sharing a
	// long-lived fd) makes a Do racing with Close fail cleanly instead of
	// entering whatever a recycled fd number points to.
	target, err := netns.GetFromPath(h.NetnsPath())
	if err != nil {
		return fmt.Errorf("open namespace of %s: %w", h.Name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread is locked and never unlocked if switching back fails:
		// the runtime then terminates it with the goroutine instead of
		// reusing a thread stuck in the wrong namespace.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace of %s: %w", h.Name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace of %s: %w", h.Name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DialContext dials from inside the host. Its signature fits
// http.Transport.DialContext. address must hold an IP literal: name
// resolution may run on other threads, outside the host.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := h.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, address)
		return err
	})
	return conn, err
}

// Listen listens inside the host (network "tcp", "tcp4", "unix", …).
func (h *Host) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := h.Do(func() error {
		var err error
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket inside the host ("udp4", "ip4:icmp", …).
func (h *Host) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := h.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// HTTPClient returns an HTTP client whose connections start in the host:
// how a test talks to an agent's API as a host of the bed would.
func (h *Host) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: h.DialContext}}
}

// AddAddr adds an address to the host's interface on a network. The bed
// never adds VIPs itself (the product does); this is for tests that need a
// second address or want to fake a VIP.
func (h *Host) AddAddr(network string, p netip.Prefix) error {
	return h.withLink(network, func(nl *netlink.Handle, l netlink.Link) error {
		if err := nl.AddrAdd(l, &netlink.Addr{IPNet: prefixToIPNet(p)}); err != nil {
			return fmt.Errorf("add %s to %s on %s: %w", p, l.Attrs().Name, h.Name, err)
		}
		return nil
	})
}

// DelAddr removes an address from the host's interface on a network.
func (h *Host) DelAddr(network string, p netip.Prefix) error {
	return h.withLink(network, func(nl *netlink.Handle, l netlink.Link) error {
		if err := nl.AddrDel(l, &netlink.Addr{IPNet: prefixToIPNet(p)}); err != nil {
			return fmt.Errorf("remove %s from %s on %s: %w", p, l.Attrs().Name, h.Name, err)
		}
		return nil
	})
}

// Addrs lists the IPv4 addresses on the host's interface on a network (its
// own address and any VIPs the product added).
func (h *Host) Addrs(network string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := h.withLink(network, func(nl *netlink.Handle, l netlink.Link) error {
		addrs, err := nl.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list addresses of %s on %s: %w", l.Attrs().Name, h.Name, err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP.To4())
			if !ok {
				continue
			}
			ones, _ := a.Mask.Size()
			out = append(out, netip.PrefixFrom(ip, ones))
		}
		return nil
	})
	return out, err
}

// Neighbour is one entry of a host's ARP table.
type Neighbour struct {
	Addr  netip.Addr
	MAC   net.HardwareAddr
	State string // "REACHABLE", "STALE", "FAILED", … as `ip neigh` says
}

// Neighbours reads the host's IPv4 neighbour (ARP) table for its interface
// on a network, e.g. to check that a VIP's entry moved to the new owner's MAC.
func (h *Host) Neighbours(network string) ([]Neighbour, error) {
	var out []Neighbour
	err := h.withLink(network, func(nl *netlink.Handle, l netlink.Link) error {
		neighs, err := nl.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list neighbours of %s on %s: %w", l.Attrs().Name, h.Name, err)
		}
		for _, n := range neighs {
			ip, ok := netip.AddrFromSlice(n.IP.To4())
			if !ok {
				continue
			}
			out = append(out, Neighbour{Addr: ip, MAC: n.HardwareAddr, State: neighState(n.State)})
		}
		return nil
	})
	return out, err
}

// Neighbour returns the host's ARP entry for addr on a network; ok is false
// when there is none.
func (h *Host) Neighbour(network string, addr netip.Addr) (n Neighbour, ok bool, err error) {
	all, err := h.Neighbours(network)
	if err != nil {
		return Neighbour{}, false, err
	}
	for _, n := range all {
		if n.Addr == addr {
			return n, true, nil
		}
	}
	return Neighbour{}, false, nil
}

func neighState(s int) string {
	names := []struct {
		bit  int
		name string
	}{
		{netlink.NUD_INCOMPLETE, "INCOMPLETE"}, {netlink.NUD_REACHABLE, "REACHABLE"},
		{netlink.NUD_STALE, "STALE"}, {netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"},
		{netlink.NUD_FAILED, "FAILED"}, {netlink.NUD_NOARP, "NOARP"}, {netlink.NUD_PERMANENT, "PERMANENT"},
	}
	for _, n := range names {
		if s&n.bit != 0 {
			return n.name
		}
	}
	return "NONE"
}

// withLink runs fn with the host's netlink handle and its link on a network.
func (h *Host) withLink(network string, fn func(*netlink.Handle, netlink.Link) error) error {
	ifname := h.Iface(network)
	h.nlMu.Lock()
	defer h.nlMu.Unlock()
	if h.nl == nil {
		return fmt.Errorf("host %s: bed closed", h.Name)
	}
	l, err := h.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s on %s: %w", ifname, h.Name, err)
	}
	return fn(h.nl, l)
}

func (h *Host) closeHandles() {
	h.nlMu.Lock()
	defer h.nlMu.Unlock()
	if h.nl != nil {
		h.nl.Close()
		h.nl = nil
	}
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}
