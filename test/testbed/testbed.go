// Package testbed builds a throw-away multi-host network out of Linux network
// namespaces, for halo's integration tests, the demo and the benchmarks.
//
// Every host is a network namespace with loopback up and one veth interface
// per named network (eth0, eth1, … in the order the networks are given). The
// other end of each veth is a port of that network's bridge. The bridges live
// in one extra "switch" namespace per bed, never in the root namespace: the
// bed then adds no link, route or firewall rule to the machine it runs on, and
// deleting the switch namespace takes every bridge and veth with it.
//
// Host i (0-based, in Options.Hosts order) gets 198.18.<n>.<10+i>/24 on
// network n. Nothing is routed: every network is one flat L2 segment.
//
// Programs enter a host through Host.Command, which wraps them in
// `nsenter --net=<ns> --uts=<ns>`. nsenter execs, so the PID is the
// program's own, and the returned *exec.Cmd lands in the host however the
// caller runs it. Each host has its own hostname (its name). The mount
// namespace stays shared: a FUSE mount made inside a host is visible to the
// test and to the host's other programs.
// Go code enters a host with Host.Do, which switches one locked OS thread;
// sockets keep the namespace they were created in, so Host.DialContext and
// Host.Listen return ordinary net.Conn and net.Listener values.
//
// Everything a bed creates carries its prefix, "hb<pid>.<seq>-": the
// namespaces ("<prefix><host>", "<prefix>switch") and the scratch directory
// (<tmp>/halo-testbed/<prefix>). A bed holds a lock file there for its whole
// life, so New can tell the leftovers of a crashed run (owner gone, lock free)
// from another process's live bed and removes only the former.
package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Options describe the bed to build.
type Options struct {
	// Hosts are the host names, in order: host i gets address .10+i on every
	// network. Names are 1–12 characters of [a-z0-9] starting with a letter,
	// unique, and not "switch".
	Hosts []string
	// Networks are the network names, in order: network n is 198.18.n.0/24
	// and appears in every host as eth<n>. Same rules as host names.
	// Empty means one network, "default".
	Networks []string
	// KeepDir keeps the bed's scratch directory (process logs, host
	// directories) after Close, for a post-mortem. The environment variable
	// HALO_TESTBED_KEEP=1 does the same.
	KeepDir bool
}

// Bed is a running test bed. Its methods are safe for concurrent use.
type Bed struct {
	prefix   string
	dir      string
	keepDir  bool
	nsenter  string
	tb       testing.TB
	lockFile *os.File

	hosts    []*Host
	byName   map[string]*Host
	networks []string
	netIndex map[string]int

	switchNS  netns.NsHandle
	switchNL  *netlink.Handle
	switchMu  sync.Mutex // serialises requests on switchNL
	nsCreated []string   // namespace names to delete at Close

	mu      sync.Mutex
	pollers []*Poller
	closed  bool

	closeOnce sync.Once
	closeErr  error
}

const (
	// netnsDir is where `ip netns` keeps its named namespaces.
	netnsDir = "/run/netns"
	// maxNameLen keeps "br-<network>" and "<host>-<n>" within the kernel's
	// 15-character interface-name limit.
	maxNameLen  = 12
	maxHosts    = 200
	maxNetworks = 64
	firstHostID = 10
)

var (
	nameRE   = regexp.MustCompile(`^[a-z][a-z0-9]*$`)
	bedSeq   atomic.Uint64
	prefixRE = regexp.MustCompile(`^hb([0-9]+)\.([0-9]+)-`)
)

// New builds a bed. With a non-nil tb, it registers Close with tb.Cleanup (so
// the bed is removed even when the test fails or panics) and fails the test
// if building fails; a nil tb is for non-test use (the demo), where the
// caller must Close the bed.
//
// Before building, New removes the leftovers of beds whose owning process
// has died (see CleanupStale).
func New(tb testing.TB, opts Options) (*Bed, error) {
	// A nil *testing.T in the interface is not a nil interface.
	if tb != nil && reflect.ValueOf(tb).Kind() == reflect.Pointer && reflect.ValueOf(tb).IsNil() {
		tb = nil
	}
	if tb != nil {
		tb.Helper()
	}
	b, err := build(tb, opts)
	if err != nil {
		if tb != nil {
			tb.Fatalf("testbed: %v", err)
		}
		return nil, err
	}
	if tb != nil {
		tb.Cleanup(func() {
			if tb.Failed() {
				b.logProcessTails(tb)
			}
			if err := b.Close(); err != nil {
				tb.Errorf("testbed: close: %v", err)
			}
		})
	}
	return b, nil
}

func build(tb testing.TB, opts Options) (*Bed, error) {
	if err := validate(&opts); err != nil {
		return nil, err
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, fmt.Errorf("find nsenter (util-linux): %w", err)
	}
	for _, tool := range []struct{ name, pkg string }{{"ip", "iproute2"}, {"unshare", "util-linux"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			return nil, fmt.Errorf("find %s (%s): %w", tool.name, tool.pkg, err)
		}
	}
	removed, err := CleanupStale()
	if err != nil {
		return nil, fmt.Errorf("remove leftovers of crashed beds: %w", err)
	}
	if tb != nil && len(removed) > 0 {
		tb.Logf("testbed: removed leftovers of crashed beds: %v", removed)
	}

	prefix := fmt.Sprintf("hb%d.%d-", os.Getpid(), bedSeq.Add(1))
	b := &Bed{
		prefix:   prefix,
		dir:      filepath.Join(scratchRoot(), prefix),
		keepDir:  opts.KeepDir || os.Getenv("HALO_TESTBED_KEEP") == "1",
		nsenter:  nsenter,
		tb:       tb,
		byName:   map[string]*Host{},
		networks: opts.Networks,
		netIndex: map[string]int{},
		switchNS: -1,
	}
	for i, n := range opts.Networks {
		b.netIndex[n] = i
	}
	// The lock must exist before any namespace does: CleanupStale in another
	// process treats namespaces whose owner holds no lock as leftovers.
	if err := b.lock(); err != nil {
		return nil, err
	}
	if err := b.buildNetwork(opts.Hosts); err != nil {
		if cerr := b.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("undo partial bed: %w", cerr))
		}
		return nil, err
	}
	return b, nil
}

func validate(opts *Options) error {
	if len(opts.Networks) == 0 {
		opts.Networks = []string{"default"}
	}
	if len(opts.Hosts) == 0 {
		return errors.New("no hosts")
	}
	if len(opts.Hosts) > maxHosts {
		return fmt.Errorf("%d hosts: at most %d", len(opts.Hosts), maxHosts)
	}
	if len(opts.Networks) > maxNetworks {
		return fmt.Errorf("%d networks: at most %d", len(opts.Networks), maxNetworks)
	}
	for kind, names := range map[string][]string{"host": opts.Hosts, "network": opts.Networks} {
		seen := map[string]bool{}
		for _, n := range names {
			if !nameRE.MatchString(n) || len(n) > maxNameLen {
				return fmt.Errorf("%s name %q: want 1-%d characters of [a-z0-9], starting with a letter", kind, n, maxNameLen)
			}
			if seen[n] {
				return fmt.Errorf("%s %q given twice", kind, n)
			}
			seen[n] = true
		}
	}
	for _, h := range opts.Hosts {
		if h == "switch" {
			return errors.New(`host name "switch" is reserved for the bed's bridges`)
		}
	}
	return nil
}

// buildNetwork creates the switch namespace with one bridge per network,
// then every host with its veths.
func (b *Bed) buildNetwork(hostNames []string) error {
	var err error
	b.switchNS, b.switchNL, err = b.addNamespace("switch")
	if err != nil {
		return err
	}
	for _, network := range b.networks {
		off := false
		br := &netlink.Bridge{
			LinkAttrs: netlink.LinkAttrs{Name: "br-" + network},
			// Snooping would stop multicast heartbeats from reaching a port
			// that never sent an IGMP report.
			MulticastSnooping: &off,
		}
		if err := b.switchNL.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge for network %s: %w", network, err)
		}
		if err := b.switchNL.LinkSetUp(br); err != nil {
			return fmt.Errorf("set bridge for network %s up: %w", network, err)
		}
	}
	for i, name := range hostNames {
		h, err := b.addHost(i, name)
		if err != nil {
			return fmt.Errorf("add host %s: %w", name, err)
		}
		b.hosts = append(b.hosts, h)
		b.byName[name] = h
	}
	return b.waitLinksReady(5 * time.Second)
}

// waitLinksReady waits until the kernel has finished bringing every veth end
// up. Carrier changes are applied asynchronously (linkwatch); until then an
// interface still has the "noop" qdisc, which drops what is sent: a SYN sent
// right after New would be lost and cost a 1 s retransmission.
func (b *Bed) waitLinksReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, h := range b.hosts {
		for _, network := range b.networks {
			check := func(nl *netlink.Handle, l netlink.Link) error {
				for {
					ready, err := linkReady(nl, l.Attrs().Name)
					if err != nil || ready {
						return err
					}
					if time.Now().After(deadline) {
						return fmt.Errorf("%s not operational after %v", l.Attrs().Name, timeout)
					}
					time.Sleep(time.Millisecond)
				}
			}
			if err := h.onBothEnds(network, check); err != nil {
				return fmt.Errorf("wait for %s's link on %s: %w", h.Name, network, err)
			}
		}
	}
	return nil
}

func linkReady(nl *netlink.Handle, name string) (bool, error) {
	l, err := nl.LinkByName(name)
	if err != nil {
		return false, fmt.Errorf("find %s: %w", name, err)
	}
	if l.Attrs().OperState != netlink.OperUp {
		return false, nil
	}
	qdiscs, err := nl.QdiscList(l)
	if err != nil {
		return false, fmt.Errorf("list qdiscs of %s: %w", name, err)
	}
	for _, q := range qdiscs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Type() == "noop" {
			return false, nil
		}
	}
	return true, nil
}

// addNamespace creates the named namespace <prefix><suffix> with `ip netns
// add` (which also sets up /run/netns propagation the way every other tool
// expects), brings its loopback up and returns a handle and a netlink handle
// into it.
func (b *Bed) addNamespace(suffix string) (netns.NsHandle, *netlink.Handle, error) {
	name := b.prefix + suffix
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return -1, nil, fmt.Errorf("create namespace %s: %w: %s", name, err, out)
	}
	b.nsCreated = append(b.nsCreated, name)
	ns, err := netns.GetFromPath(filepath.Join(netnsDir, name))
	if err != nil {
		return -1, nil, fmt.Errorf("open namespace %s: %w", name, err)
	}
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return -1, nil, fmt.Errorf("open netlink in namespace %s: %w", name, err)
	}
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		nl.Close()
		ns.Close()
		return -1, nil, fmt.Errorf("set loopback up in namespace %s: %w", name, err)
	}
	return ns, nl, nil
}

func (b *Bed) addHost(index int, name string) (*Host, error) {
	h := &Host{Name: name, bed: b, index: index}
	ns, nl, err := b.addNamespace(name)
	if err != nil {
		return nil, err
	}
	h.nl = nl
	var st syscall.Stat_t
	err = syscall.Fstat(int(ns), &st)
	ns.Close()
	if err != nil {
		h.closeHandles()
		return nil, fmt.Errorf("identify namespace of %s: %w", name, err)
	}
	h.nsID = nsID{dev: st.Dev, ino: st.Ino}
	h.dir = filepath.Join(b.dir, name)
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		h.closeHandles()
		return nil, fmt.Errorf("create host directory: %w", err)
	}
	if err := b.addUTS(h); err != nil {
		h.closeHandles()
		return nil, err
	}
	for n, network := range b.networks {
		if err := b.plug(h, n, network); err != nil {
			h.closeHandles()
			return nil, err
		}
	}
	return h, nil
}

// addUTS gives the host a UTS namespace of its own whose hostname is the
// host's name, so a program that asks os.Hostname() gets the host it runs
// on. The namespace is kept alive by a bind mount on a file under the
// scratch directory, which Close unmounts with everything else there.
func (b *Bed) addUTS(h *Host) error {
	h.utsPath = filepath.Join(b.dir, "uts", h.Name)
	if err := os.MkdirAll(filepath.Dir(h.utsPath), 0o755); err != nil {
		return fmt.Errorf("create UTS directory: %w", err)
	}
	if err := os.WriteFile(h.utsPath, nil, 0o644); err != nil {
		return fmt.Errorf("create UTS namespace file: %w", err)
	}
	if out, err := exec.Command("unshare", "--uts="+h.utsPath, "hostname", h.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("create UTS namespace with hostname %s: %w: %s", h.Name, err, out)
	}
	return nil
}

// plug connects host h to network n: a veth whose host end is eth<n> with
// the host's address and whose switch end is a port of the network's bridge.
func (b *Bed) plug(h *Host, n int, network string) error {
	ifname := fmt.Sprintf("eth%d", n)
	port := portName(h.Name, n)
	// Fixed MACs make captures and neighbour tables readable: 02:00:c6:12
	// is locally administered and echoes 198.18; then network and host ID.
	mac := net.HardwareAddr{0x02, 0x00, 0xc6, 0x12, byte(n), byte(firstHostID + h.index)}
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name:         ifname,
			HardwareAddr: mac,
			Alias:        network,
		},
		PeerName:      port,
		PeerNamespace: netlink.NsFd(b.switchNS),
	}
	// Created through the host's handle, the veth is born in the host's
	// namespace and its peer in the switch's: nothing ever appears in the
	// root namespace, not even for a moment.
	if err := h.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s for network %s: %w", ifname, network, err)
	}
	link, err := h.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifname, err)
	}
	addr := b.hostAddr(h.index, n)
	if err := h.nl.AddrAdd(link, &netlink.Addr{IPNet: prefixToIPNet(netip.PrefixFrom(addr, 24))}); err != nil {
		return fmt.Errorf("add address %s to %s: %w", addr, ifname, err)
	}
	if err := h.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", ifname, err)
	}

	b.switchMu.Lock()
	defer b.switchMu.Unlock()
	peer, err := b.switchNL.LinkByName(port)
	if err != nil {
		return fmt.Errorf("find switch port %s: %w", port, err)
	}
	if err := b.switchNL.LinkSetAlias(peer, h.Name+"/"+network); err != nil {
		return fmt.Errorf("name switch port %s: %w", port, err)
	}
	br, err := b.switchNL.LinkByName("br-" + network)
	if err != nil {
		return fmt.Errorf("find bridge for network %s: %w", network, err)
	}
	if err := b.switchNL.LinkSetMaster(peer, br); err != nil {
		return fmt.Errorf("attach %s to bridge %s: %w", port, br.Attrs().Name, err)
	}
	if err := b.switchNL.LinkSetUp(peer); err != nil {
		return fmt.Errorf("set switch port %s up: %w", port, err)
	}
	h.ifaces = append(h.ifaces, ifname)
	h.addrs = append(h.addrs, addr)
	h.macs = append(h.macs, mac)
	return nil
}

// portName is the switch-side name of host's veth on network n.
func portName(host string, n int) string { return fmt.Sprintf("%s-%d", host, n) }

// hostAddr is host index i's address on network n: 198.18.n.10+i.
func (b *Bed) hostAddr(i, n int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(n), byte(firstHostID + i)})
}

// NetworkPrefix returns the /24 of a network, e.g. 198.18.1.0/24.
func (b *Bed) NetworkPrefix(network string) netip.Prefix {
	n := b.mustNetwork(network)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(n), 0}), 24)
}

// Prefix is the name prefix of everything this bed creates ("hb<pid>.<seq>-").
func (b *Bed) Prefix() string { return b.prefix }

// Dir is the bed's scratch directory: process logs and one directory per
// host. It is removed at Close unless Options.KeepDir is set.
func (b *Bed) Dir() string { return b.dir }

// Networks returns the network names in order (network n is eth<n>).
func (b *Bed) Networks() []string { return append([]string(nil), b.networks...) }

// Hosts returns the hosts in order.
func (b *Bed) Hosts() []*Host { return append([]*Host(nil), b.hosts...) }

// Host returns the named host. It panics on an unknown name: that is a bug in
// the test, not a condition to handle.
func (b *Bed) Host(name string) *Host {
	h, ok := b.byName[name]
	if !ok {
		panic(fmt.Sprintf("testbed: no host %q in bed %s", name, b.prefix))
	}
	return h
}

func (b *Bed) mustNetwork(network string) int {
	n, ok := b.netIndex[network]
	if !ok {
		panic(fmt.Sprintf("testbed: no network %q in bed %s", network, b.prefix))
	}
	return n
}

// Close removes the bed: it stops the pollers, kills every process in every
// host (by PID, found through the host's namespace, so children of started
// processes go too) and reaps the ones it started, unmounts anything left
// mounted under Dir, deletes the namespaces (and with them every veth and
// bridge) and the scratch directory. It is idempotent; later calls return
// the first call's result.
func (b *Bed) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.close() })
	return b.closeErr
}

func (b *Bed) close() error {
	var errs []error
	b.mu.Lock()
	b.closed = true
	pollers := b.pollers
	b.mu.Unlock()
	for _, p := range pollers {
		p.Stop()
	}
	for _, h := range b.hosts {
		if err := h.killAll(10 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("host %s: %w", h.Name, err))
		}
	}
	for _, h := range b.hosts {
		h.closeHandles()
	}
	if b.switchNL != nil {
		b.switchNL.Close()
	}
	if b.switchNS >= 0 {
		b.switchNS.Close()
	}
	for _, name := range b.nsCreated {
		if err := deleteNamespace(name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmountUnder(b.dir); err != nil {
		errs = append(errs, err)
	}
	if !b.keepDir {
		if err := os.RemoveAll(b.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove scratch directory: %w", err))
		}
	} else if b.tb != nil {
		b.tb.Logf("testbed: kept %s", b.dir)
	}
	if b.lockFile != nil {
		b.lockFile.Close() // releases the flock
	}
	return errors.Join(errs...)
}

// lock creates the scratch directory and holds an exclusive flock on its
// lock file until Close (or until the process dies, when the kernel drops
// it): that is how another process tells a live bed from a crashed one.
func (b *Bed) lock() error {
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return fmt.Errorf("create scratch directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(b.dir, lockName), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("create lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	b.lockFile = f
	return nil
}

func (b *Bed) logProcessTails(tb testing.TB) {
	for _, h := range b.hosts {
		for _, p := range h.Processes() {
			if p.LogPath == "" {
				continue
			}
			tail, err := tailFile(p.LogPath, 30)
			if err != nil {
				tb.Logf("testbed: %s/%s: read log: %v", h.Name, p.Name, err)
				continue
			}
			tb.Logf("testbed: last lines of %s/%s (%s):\n%s", h.Name, p.Name, p.LogPath, tail)
		}
	}
}

// RequireRoot skips the test, loudly, unless the process runs as root, which
// namespaces, veths, tc and nftables need. With HALO_REQUIRE_ROOT=1 in the
// environment (CI sets it) a missing root is a failure instead, so the
// integration tests can never be skipped into a green run.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	requireRoot(tb, os.Geteuid(), os.Getenv("HALO_REQUIRE_ROOT"))
}

func requireRoot(tb testing.TB, euid int, required string) {
	tb.Helper()
	if euid == 0 {
		return
	}
	const msg = "TESTBED NEEDS ROOT: network namespaces, veths, tc and nftables need root; these integration tests did NOT run"
	if required == "1" {
		tb.Fatal(msg + " (HALO_REQUIRE_ROOT=1 makes this a failure)")
		return
	}
	tb.Skip(msg)
}

// withTimeout is a small helper for internal waits that have no caller ctx.
func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
