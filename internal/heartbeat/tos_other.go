//go:build !linux

package heartbeat

import (
	"errors"
	"net"
	"net/netip"
)

func setDSCP(*net.UDPConn, netip.Addr, int) error {
	return errors.New("set DSCP: not implemented on this platform")
}
