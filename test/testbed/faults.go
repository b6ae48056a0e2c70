package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkDown cuts the host's cable on a network: the switch-side end of its
// veth goes down, so the host sees its interface lose carrier (NO-CARRIER)
// and nothing passes either way. Addresses and routes in the host stay.
func (h *Host) LinkDown(network string) error { return h.setPort(network, false) }

// LinkUp plugs the cable back in.
func (h *Host) LinkUp(network string) error { return h.setPort(network, true) }

// CutAll cuts every network of the host.
func (h *Host) CutAll() error {
	var errs []error
	for _, n := range h.bed.networks {
		errs = append(errs, h.LinkDown(n))
	}
	return errors.Join(errs...)
}

// HealAll plugs every network of the host back in and removes its drops.
func (h *Host) HealAll() error {
	var errs []error
	for _, n := range h.bed.networks {
		errs = append(errs, h.LinkUp(n))
	}
	errs = append(errs, h.undropAll())
	return errors.Join(errs...)
}

func (h *Host) setPort(network string, up bool) error {
	port := portName(h.Name, h.bed.mustNetwork(network))
	b := h.bed
	b.switchMu.Lock()
	defer b.switchMu.Unlock()
	if b.switchNL == nil {
		return errors.New("bed closed")
	}
	l, err := b.switchNL.LinkByName(port)
	if err != nil {
		return fmt.Errorf("find switch port %s: %w", port, err)
	}
	if up {
		err = b.switchNL.LinkSetUp(l)
	} else {
		err = b.switchNL.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("set %s's link on %s up=%v: %w", h.Name, network, up, err)
	}
	return nil
}

// nftTable is the host's nftables table for drops. It is in family netdev,
// hooked at ingress and egress of the interface with a priority ahead of
// anything the product installs, so a drop also beats the farm's netdev
// rules, and it drops ARP too: the link stays up but the path is dead, as
// with a failed switch further away.
const nftTable = "halo_testbed"

// Drop silently drops the host's traffic on a network, in both directions,
// with nftables: all of it, or only to and from the given peer addresses. The
// link stays up (unlike LinkDown). Drops on one network accumulate until
// Undrop.
func (h *Host) Drop(ctx context.Context, network string, peers ...netip.Addr) error {
	n := h.bed.mustNetwork(network)
	for _, p := range peers {
		if !p.Is4() {
			return fmt.Errorf("drop %s on %s: only IPv4 peers are supported", p, h.Name)
		}
	}
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	if h.drops == nil {
		h.drops = map[int][]netip.Addr{}
	}
	cur, dropped := h.drops[n]
	switch {
	case len(peers) == 0:
		h.drops[n] = nil // everything
	case dropped && cur == nil:
		// Already dropping everything.
	default:
		for _, p := range peers {
			if !slices.Contains(cur, p) {
				cur = append(cur, p)
			}
		}
		h.drops[n] = cur
	}
	return h.applyDrops(ctx)
}

// Undrop removes the host's drops on a network.
func (h *Host) Undrop(ctx context.Context, network string) error {
	n := h.bed.mustNetwork(network)
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	delete(h.drops, n)
	return h.applyDrops(ctx)
}

func (h *Host) undropAll() error {
	h.faultMu.Lock()
	defer h.faultMu.Unlock()
	if len(h.drops) == 0 {
		return nil
	}
	h.drops = nil
	ctx, cancel := withTimeout(defaultCmdTimeout)
	defer cancel()
	return h.applyDrops(ctx)
}

// applyDrops replaces the host's drop table with one built from h.drops, in
// one nft transaction. Callers hold faultMu.
func (h *Host) applyDrops(ctx context.Context) error {
	var s strings.Builder
	// "add" then "delete" makes the delete valid whether or not the table
	// exists; the whole script is one atomic transaction.
	fmt.Fprintf(&s, "add table netdev %s\ndelete table netdev %s\n", nftTable, nftTable)
	if len(h.drops) > 0 {
		fmt.Fprintf(&s, "table netdev %s {\n", nftTable)
		nets := make([]int, 0, len(h.drops))
		for n := range h.drops {
			nets = append(nets, n)
		}
		slices.Sort(nets)
		for _, n := range nets {
			iface := h.ifaces[n]
			peers := h.drops[n]
			in, out := "drop", "drop"
			if peers != nil {
				set := addrSet(peers)
				in = fmt.Sprintf("ip saddr %s drop; arp saddr ip %s drop", set, set)
				out = fmt.Sprintf("ip daddr %s drop; arp daddr ip %s drop", set, set)
			}
			fmt.Fprintf(&s, "  chain in_%s { type filter hook ingress device %q priority -1000; policy accept; %s; }\n", iface, iface, in)
			fmt.Fprintf(&s, "  chain out_%s { type filter hook egress device %q priority -1000; policy accept; %s; }\n", iface, iface, out)
		}
		s.WriteString("}\n")
	}
	cmd := h.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(s.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apply nftables drops on %s: %w: %s", h.Name, err, out)
	}
	return nil
}

func addrSet(addrs []netip.Addr) string {
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = a.String()
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

// Limit shapes the host's traffic on a network with a tc token bucket
// filter: rateBits bits per second with a bucket of burstBytes, in both
// directions (on the host's end of the veth for what it sends, on the
// switch's end for what it receives). burstBytes 0 picks 10 ms worth of
// rate, at least 4 KiB. Packets wait at most about 50 ms in the queue
// before being dropped, so TCP sees a real bottleneck rather than a huge
// buffer.
func (h *Host) Limit(network string, rateBits uint64, burstBytes uint32) error {
	if rateBits < 8000 {
		return fmt.Errorf("limit %s on %s: rate %d bit/s is below 8 kbit/s", network, h.Name, rateBits)
	}
	rate := rateBits / 8 // tc works in bytes per second
	if burstBytes == 0 {
		burstBytes = uint32(max(rate/100, 4096))
	}
	limit := uint32(max(rate/20, 2*1514)) + burstBytes
	tbf := func(index int) *netlink.Tbf {
		return &netlink.Tbf{
			QdiscAttrs: netlink.QdiscAttrs{
				LinkIndex: index,
				Handle:    netlink.MakeHandle(1, 0),
				Parent:    netlink.HANDLE_ROOT,
			},
			Rate:   rate,
			Buffer: netlink.Xmittime(rate, burstBytes),
			Limit:  limit,
		}
	}
	return h.onBothEnds(network, func(nl *netlink.Handle, l netlink.Link) error {
		if err := nl.QdiscReplace(tbf(l.Attrs().Index)); err != nil {
			return fmt.Errorf("limit %s to %d bit/s: %w", l.Attrs().Name, rateBits, err)
		}
		return nil
	})
}

// Unlimit removes the host's bandwidth limit on a network. Removing a limit
// that is not there is not an error.
func (h *Host) Unlimit(network string) error {
	return h.onBothEnds(network, func(nl *netlink.Handle, l netlink.Link) error {
		err := nl.QdiscDel(&netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: l.Attrs().Index,
			Handle:    netlink.MakeHandle(1, 0),
			Parent:    netlink.HANDLE_ROOT,
		}})
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("remove limit on %s: %w", l.Attrs().Name, err)
		}
		return nil
	})
}

// onBothEnds runs fn on the host's end and on the switch's end of the
// host's veth on a network.
func (h *Host) onBothEnds(network string, fn func(*netlink.Handle, netlink.Link) error) error {
	if err := h.withLink(network, fn); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	b := h.bed
	port := portName(h.Name, b.mustNetwork(network))
	b.switchMu.Lock()
	defer b.switchMu.Unlock()
	if b.switchNL == nil {
		return errors.New("bed closed")
	}
	l, err := b.switchNL.LinkByName(port)
	if err != nil {
		return fmt.Errorf("find switch port %s: %w", port, err)
	}
	if err := fn(b.switchNL, l); err != nil {
		return fmt.Errorf("switch port of %s: %w", h.Name, err)
	}
	return nil
}
