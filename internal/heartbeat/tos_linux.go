package heartbeat

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// setDSCP marks the socket's outgoing datagrams with dscp (the upper six
// bits of the IPv4 TOS / IPv6 traffic class byte).
func setDSCP(c *net.UDPConn, local netip.Addr, dscp int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("set DSCP: %w", err)
	}
	level, opt := syscall.IPPROTO_IP, syscall.IP_TOS
	if local.Is6() && !local.Is4In6() {
		level, opt = syscall.IPPROTO_IPV6, syscall.IPV6_TCLASS
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), level, opt, dscp<<2)
	}); err != nil {
		return fmt.Errorf("set DSCP: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("set DSCP %d: %w", dscp, serr)
	}
	return nil
}
