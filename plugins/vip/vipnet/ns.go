// Package vipnet holds the network primitives of halo's vip plugin and of
// the ip and intf checkers: adding and removing an address with netlink,
// gratuitous ARP and unsolicited neighbour advertisements, duplicate
// address probes (RFC 5227 ARP probes, RFC 4862 DAD-style neighbour
// solicitations) and the reset of the TCP connections that used an
// address (SOCK_DESTROY).
//
// Everything happens in one network namespace: the process's own by
// default, or another one named by path, which is how tests drive a
// namespace without moving the test process into it.
package vipnet

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Namespace is a network namespace: "" is the process's own, anything else
// the path of a namespace file (/run/netns/<name>, /proc/<pid>/ns/net).
type Namespace string

// handle opens a netlink handle in the namespace, for routing and socket
// diagnosis requests. The caller closes it.
func (ns Namespace) handle() (*netlink.Handle, error) {
	families := []int{unix.NETLINK_ROUTE, unix.NETLINK_INET_DIAG}
	if ns == "" {
		h, err := netlink.NewHandle(families...)
		if err != nil {
			return nil, fmt.Errorf("open netlink: %w", err)
		}
		return h, nil
	}
	target, err := netns.GetFromPath(string(ns))
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", ns, err)
	}
	defer target.Close()
	h, err := netlink.NewHandleAt(target, families...)
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", ns, err)
	}
	return h, nil
}

// do runs fn in the namespace. Sockets fn opens stay in it afterwards, so
// only the opening needs to happen here.
func (ns Namespace) do(fn func() error) error {
	if ns == "" {
		return fn()
	}
	target, err := netns.GetFromPath(string(ns))
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", ns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		// A thread whose namespace cannot be restored stays locked, so the
		// runtime ends it with the goroutine instead of reusing it.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave network namespace %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
