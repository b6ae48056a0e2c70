package vip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/halo-ha/halo/plugins/vip/vipnet"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/sdktest"
	sdkvip "github.com/halo-ha/halo/sdk/vip"
	"github.com/halo-ha/halo/test/testbed"
)

const network = "default"

var (
	vip4 = netip.MustParsePrefix("198.18.0.100/24")
	// 2001:db8::/32 is the documentation prefix; it never leaves the bed.
	vip6 = netip.MustParsePrefix("2001:db8:18::100/64")
	// bogusMAC stands for a stale owner in a neighbour's cache.
	bogusMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
}

// bed builds hosts on one network; besides the bed's IPv4 addresses, host
// i gets 2001:db8:18::<10+i>/64 so that the IPv6 VIP's subnet is on-link.
func bed(t *testing.T, hosts ...string) *testbed.Bed {
	t.Helper()
	needRoot(t)
	b, _ := testbed.New(t, testbed.Options{Hosts: hosts})
	for i, h := range b.Hosts() {
		addr := fmt.Sprintf("2001:db8:18::%d/64", 10+i)
		if _, err := h.Run(ctx(t), "ip", "-6", "addr", "add", addr, "dev", h.Iface(network), "nodad"); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// instance configures a VIP instance working inside host h.
func instance(t *testing.T, h *testbed.Host, src string) *Plugin {
	t.Helper()
	p := NewInNamespace(h.NetnsPath())().(*Plugin)
	value := sdktest.DecodeConfig(t, p.Schema(), src)
	if err := p.Configure(context.Background(), &base.Config{Module: sdktest.TestModule(t, "vip"), Value: value, Logger: sdktest.Logger(t)}); err != nil {
		t.Fatalf("configure %q: %v", src, err)
	}
	t.Cleanup(func() {
		_ = p.Close()
		_ = p.Release(context.Background(), sdkvip.ReleaseOptions{})
	})
	return p
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// neighbour returns h's cache entry for addr on eth0, read with netlink in
// h's namespace.
func neighbour(t *testing.T, h *testbed.Host, addr netip.Addr) (netlink.Neigh, bool) {
	t.Helper()
	ns, err := netns.GetFromPath(h.NetnsPath())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	l, err := nl.LinkByName(h.Iface(network))
	if err != nil {
		t.Fatal(err)
	}
	fam := netlink.FAMILY_V4
	if addr.Is6() {
		fam = netlink.FAMILY_V6
	}
	list, err := nl.NeighList(l.Attrs().Index, fam)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range list {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == addr {
			return n, true
		}
	}
	return netlink.Neigh{}, false
}

// seedNeighbour plants a stale cache entry in h, as a neighbour that
// talked to a previous owner of addr has.
func seedNeighbour(t *testing.T, h *testbed.Host, addr netip.Addr, mac net.HardwareAddr) {
	t.Helper()
	fam := "-4"
	if addr.Is6() {
		fam = "-6"
	}
	if _, err := h.Run(ctx(t), "ip", fam, "neigh", "replace", addr.String(), "lladdr", mac.String(), "nud", "stale", "dev", h.Iface(network)); err != nil {
		t.Fatal(err)
	}
}

// waitNeighbour waits until h caches addr at want.
func waitNeighbour(t *testing.T, h *testbed.Host, addr netip.Addr, want net.HardwareAddr, why string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	var got net.HardwareAddr
	for time.Now().Before(deadline) {
		n, ok := neighbour(t, h, addr)
		if ok && n.HardwareAddr.String() == want.String() {
			return
		}
		got = n.HardwareAddr
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %s caches %s at %v, want %s", why, h.Name, addr, got, want)
}

// stillNeighbour checks h keeps caching addr at want for a while.
func stillNeighbour(t *testing.T, h *testbed.Host, addr netip.Addr, want net.HardwareAddr, why string) {
	t.Helper()
	end := time.Now().Add(700 * time.Millisecond)
	for time.Now().Before(end) {
		if n, ok := neighbour(t, h, addr); !ok || n.HardwareAddr.String() != want.String() {
			t.Fatalf("%s: %s caches %s at %v, want it unchanged at %s", why, h.Name, addr, n.HardwareAddr, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNeighboursFollowTheVIP moves the address a → c and checks that a
// neighbour's cache follows through the announcements alone: b sends
// nothing to the address in between. A control run without announcements
// shows the cache would not have moved by itself.
func TestNeighboursFollowTheVIP(t *testing.T) {
	b := bed(t, "a", "b", "c")
	hostA, hostB, hostC := b.Host("a"), b.Host("b"), b.Host("c")
	for _, prefix := range []netip.Prefix{vip4, vip6} {
		t.Run(prefix.String(), func(t *testing.T) {
			addr := prefix.Addr()
			cfg := fmt.Sprintf("address = %q\ninterface = \"eth0\"\nannounce_count = 1\n", prefix)
			onA, onC := instance(t, hostA, cfg), instance(t, hostC, cfg)
			seedNeighbour(t, hostB, addr, bogusMAC)

			if err := onA.Acquire(ctx(t)); err != nil {
				t.Fatal(err)
			}
			waitNeighbour(t, hostB, addr, hostA.MAC(network), "after acquire on a")

			if err := onA.Release(ctx(t), sdkvip.ReleaseOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := onC.Acquire(ctx(t)); err != nil {
				t.Fatal(err)
			}
			waitNeighbour(t, hostB, addr, hostC.MAC(network), "after the move to c")

			// Control: back to a, announcing nothing: b's cache stays wrong
			// until Announce.
			silentA := instance(t, hostA, fmt.Sprintf("address = %q\ninterface = \"eth0\"\nannounce_count = 0\n", prefix))
			if err := onC.Release(ctx(t), sdkvip.ReleaseOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := silentA.Acquire(ctx(t)); err != nil {
				t.Fatal(err)
			}
			stillNeighbour(t, hostB, addr, hostC.MAC(network), "acquire without announcement")
			if err := silentA.Announce(ctx(t)); err != nil {
				t.Fatal(err)
			}
			waitNeighbour(t, hostB, addr, hostA.MAC(network), "after Announce")

			// And the address answers from a.
			if err := hostB.Do(func() error {
				c, err := net.DialTimeout("udp", netip.AddrPortFrom(addr, 9).String(), time.Second)
				if err == nil {
					c.Close()
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if err := silentA.Release(ctx(t), sdkvip.ReleaseOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := hostB.Ping(ctx(t), hostA.Addr(network)); err != nil {
		t.Fatalf("the bed itself is broken: %v", err)
	}
}

// TestGARPForms: receivers heed either form on its own.
func TestGARPForms(t *testing.T) {
	b := bed(t, "a", "b")
	hostA, hostB := b.Host("a"), b.Host("b")
	v := vipnet.VIP{NS: vipnet.Namespace(hostA.NetnsPath()), Prefix: vip4, Interface: "eth0"}
	if _, _, err := v.Acquire(ctx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = v.Release(context.Background()) })
	for _, form := range []vipnet.GARPForm{vipnet.GARPRequest, vipnet.GARPReply} {
		seedNeighbour(t, hostB, vip4.Addr(), bogusMAC)
		if err := v.SendGARP(ctx(t), form); err != nil {
			t.Fatal(err)
		}
		waitNeighbour(t, hostB, vip4.Addr(), hostA.MAC(network), fmt.Sprintf("gratuitous ARP form %d", form))
	}
}

// TestRepeatedAnnouncements: with announce_count 3 the cache is corrected
// again after being spoiled between the announcements.
func TestRepeatedAnnouncements(t *testing.T) {
	b := bed(t, "a", "b")
	hostA, hostB := b.Host("a"), b.Host("b")
	p := instance(t, hostA, fmt.Sprintf("address = %q\nannounce_count = 3\nannounce_interval = \"400ms\"\n", vip4))
	seedNeighbour(t, hostB, vip4.Addr(), bogusMAC)
	if err := p.Acquire(ctx(t)); err != nil {
		t.Fatal(err)
	}
	waitNeighbour(t, hostB, vip4.Addr(), hostA.MAC(network), "first announcement")
	seedNeighbour(t, hostB, vip4.Addr(), bogusMAC)
	waitNeighbour(t, hostB, vip4.Addr(), hostA.MAC(network), "repeated announcement")
	// Release stops the schedule: a spoiled cache stays spoiled.
	if err := p.Release(ctx(t), sdkvip.ReleaseOptions{}); err != nil {
		t.Fatal(err)
	}
	seedNeighbour(t, hostB, vip4.Addr(), bogusMAC)
	stillNeighbour(t, hostB, vip4.Addr(), bogusMAC, "after Release")
}

func TestDuplicateDetected(t *testing.T) {
	b := bed(t, "a", "c")
	hostA, hostC := b.Host("a"), b.Host("c")
	for _, prefix := range []netip.Prefix{vip4, vip6} {
		t.Run(prefix.String(), func(t *testing.T) {
			p := instance(t, hostA, fmt.Sprintf("address = %q\ninterface = \"eth0\"\nannounce_count = 0\n", prefix))
			if err := p.Acquire(ctx(t)); err != nil {
				t.Fatal(err)
			}
			st, err := p.Status(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if !st.Present || st.Duplicated || !st.InterfaceUp {
				t.Fatalf("alone: %+v", st)
			}
			// c takes the address too: a split brain.
			other := vipnet.VIP{NS: vipnet.Namespace(hostC.NetnsPath()), Prefix: prefix, Interface: "eth0"}
			if _, _, err := other.Acquire(ctx(t)); err != nil {
				t.Fatal(err)
			}
			st, err = p.Status(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if !st.Duplicated || !strings.Contains(st.Message, hostC.MAC(network).String()) {
				t.Errorf("with c holding it too: %+v, want duplicated naming %s", st, hostC.MAC(network))
			}
			if _, err := other.Release(ctx(t)); err != nil {
				t.Fatal(err)
			}
			st, err = p.Status(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if st.Duplicated {
				t.Errorf("after c released it: %+v", st)
			}
		})
	}
}

// TestReleaseResetsConnections: clients of the old owner get a RST at
// release, for connections accepted on the address itself, on a
// dual-stack wildcard listener (v4-mapped sockets) and over IPv6; without
// the option they are left alone.
func TestReleaseResetsConnections(t *testing.T) {
	b := bed(t, "a", "b")
	hostA, hostB := b.Host("a"), b.Host("b")
	cases := []struct {
		prefix netip.Prefix
		listen string
	}{
		{vip4, netip.AddrPortFrom(vip4.Addr(), 7001).String()},
		{vip4, "[::]:7002"},
		{vip6, netip.AddrPortFrom(vip6.Addr(), 7003).String()},
	}
	for _, tc := range cases {
		t.Run(tc.listen, func(t *testing.T) {
			p := instance(t, hostA, fmt.Sprintf("address = %q\ninterface = \"eth0\"\nannounce_count = 0\n", tc.prefix))
			_, port, _ := net.SplitHostPort(tc.listen)
			target := net.JoinHostPort(tc.prefix.Addr().String(), port)
			connect := func() net.Conn {
				t.Helper()
				if err := p.Acquire(ctx(t)); err != nil {
					t.Fatal(err)
				}
				l, err := hostA.Listen("tcp", tc.listen)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				c, err := hostB.DialContext(ctx(t), "tcp", target)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				s, err := l.Accept()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return c
			}

			kept := connect()
			if err := p.Release(ctx(t), sdkvip.ReleaseOptions{}); err != nil {
				t.Fatal(err)
			}
			_ = kept.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := kept.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("release without reset: read = %v, want a timeout (no RST)", err)
			}

			reset := connect()
			if err := p.Release(ctx(t), sdkvip.ReleaseOptions{ResetConnections: true}); err != nil {
				t.Fatal(err)
			}
			_ = reset.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := reset.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("release with reset: read = %v, want connection reset", err)
			}
		})
	}
}

func TestInterfaceState(t *testing.T) {
	b := bed(t, "a")
	hostA := b.Host("a")
	p := instance(t, hostA, fmt.Sprintf("address = %q\n", vip4))
	if err := p.Acquire(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := hostA.LinkDown(network); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		st, err := p.Status(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if !st.InterfaceUp {
			if !st.Present || !strings.Contains(st.Message, "no carrier") {
				t.Errorf("cable cut: %+v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("interface still up after the cable was cut: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestInterfaceFromSubnet: without interface, the address goes where the
// subnet is; outside any subnet it is refused.
func TestInterfaceFromSubnet(t *testing.T) {
	b := bed(t, "a")
	hostA := b.Host("a")
	p := instance(t, hostA, fmt.Sprintf("address = %q\nannounce_count = 0\n", vip4))
	if err := p.Acquire(ctx(t)); err != nil {
		t.Fatal(err)
	}
	addrs, err := hostA.Addrs(network)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range addrs {
		found = found || a == vip4
	}
	if !found {
		t.Errorf("%s not on eth0: %v", vip4, addrs)
	}
	stray := instance(t, hostA, "address = \"198.19.5.5/24\"\n")
	if err := stray.Acquire(ctx(t)); !errors.Is(err, vipnet.ErrNoInterface) {
		t.Errorf("acquire outside every subnet = %v, want ErrNoInterface", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`address = "198.18.0.300/24"`, "address:"},
		{`address = "224.0.0.5/4"`, "address: 224.0.0.5/4: not a unicast address"},
		{`address = "::ffff:198.18.0.1/120"`, "address: ::ffff:198.18.0.1/120: write an IPv4 address in IPv4 form"},
		{`address = "198.18.0.1/24"` + "\nannounce_count = -1", "announce_count: want 0..100"},
		{`address = "198.18.0.1/24"` + "\nannounce_interval = \"1ms\"", "announce_interval: want at least 10ms"},
		{`address = "198.18.0.1/24"` + "\nprobe_timeout = \"-1s\"", "probe_timeout: must not be negative"},
	} {
		p := New()
		value := sdktest.DecodeConfig(t, p.Schema(), tc.src)
		err := p.Configure(context.Background(), &base.Config{Value: value, Logger: sdktest.Logger(t)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: error %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestConformance(t *testing.T) {
	b := bed(t, "a")
	for _, prefix := range []netip.Prefix{vip4, vip6} {
		t.Run(prefix.String(), func(t *testing.T) {
			sdktest.VIPConformance(t, NewInNamespace(b.Host("a").NetnsPath()), fmt.Sprintf("address = %q\ninterface = \"eth0\"\n", prefix),
				sdktest.WithBadConfig(`address = "224.0.0.1/4"`),
				sdktest.WithBadConfig(fmt.Sprintf("address = %q\nannounce_count = -1\n", prefix)))
		})
	}
}
