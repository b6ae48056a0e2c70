package vipnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TCP states (include/net/tcp_states.h) whose sockets are not reset: a
// listener is not a connection that used the address, and TIME_WAIT and
// CLOSE sockets have nothing left to reset.
const (
	tcpTimeWait = 6
	tcpClose    = 7
	tcpListen   = 10
)

// ErrDestroyUnsupported: the kernel was built without
// CONFIG_INET_DIAG_DESTROY, so connections cannot be reset from outside
// their process. `ss -K` relies on the same request and fails the same way.
var ErrDestroyUnsupported = errors.New("the kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY)")

// ResetConnections aborts every TCP connection whose local address is
// addr, the way `ss -K src <addr>` does: the kernel sends the peer a RST,
// so a client notices at once instead of waiting for its own timeout. It
// returns how many connections were reset.
func (ns Namespace) ResetConnections(addr netip.Addr) (int, error) {
	h, err := ns.handle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	// A v4 address also shows in AF_INET6 dumps: a server listening on
	// [::] accepts IPv4 clients on sockets with v4-mapped addresses.
	families := []uint8{unix.AF_INET6}
	if addr.Is4() {
		families = append(families, unix.AF_INET)
	}
	var victims []*netlink.Socket
	for _, fam := range families {
		socks, err := h.SocketDiagTCP(fam)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return 0, fmt.Errorf("list TCP sockets: %w", err)
		}
		for _, s := range socks {
			local, ok := toAddr(s.ID.Source)
			if !ok || local != addr {
				continue
			}
			switch s.State {
			case tcpListen, tcpTimeWait, tcpClose:
				continue
			}
			victims = append(victims, s)
		}
	}
	if len(victims) == 0 {
		return 0, nil
	}
	sock, err := ns.diagSocket()
	if err != nil {
		return 0, err
	}
	defer sock.Close()
	reset := 0
	var errs []error
	for _, s := range victims {
		err := destroy(sock, s.Family, s.ID)
		switch {
		case err == nil:
			reset++
		case errors.Is(err, unix.ENOENT):
			// Closed meanwhile: nothing to reset.
		case errors.Is(err, unix.EOPNOTSUPP):
			return reset, ErrDestroyUnsupported
		default:
			errs = append(errs, fmt.Errorf("reset %s:%d-%s:%d: %w", s.ID.Source, s.ID.SourcePort, s.ID.Destination, s.ID.DestinationPort, err))
		}
	}
	return reset, errors.Join(errs...)
}

func (ns Namespace) diagSocket() (*nl.NetlinkSocket, error) {
	target := netns.None()
	if ns != "" {
		var err error
		if target, err = netns.GetFromPath(string(ns)); err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", ns, err)
		}
		defer target.Close()
	}
	s, err := nl.GetNetlinkSocketAt(target, netns.None(), unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open socket diagnosis netlink: %w", err)
	}
	tv := unix.NsecToTimeval(int64(nl.SocketTimeoutTv.Nano()))
	if err := s.SetReceiveTimeout(&tv); err != nil {
		s.Close()
		return nil, fmt.Errorf("set netlink receive timeout: %w", err)
	}
	return s, nil
}

func destroy(sock *nl.NetlinkSocket, fam uint8, id netlink.SocketID) error {
	req := nl.NewNetlinkRequest(nl.SOCK_DESTROY, unix.NLM_F_ACK)
	req.AddData(&inetDiagReq{family: fam, id: id})
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_INET_DIAG: {Socket: sock}}
	_, err := req.Execute(unix.NETLINK_INET_DIAG, 0)
	return err
}

// inetDiagReq is struct inet_diag_req_v2 naming one TCP socket by its
// addresses, ports, interface and cookie (the cookie makes the match
// exact: a socket reusing the same four-tuple is left alone).
type inetDiagReq struct {
	family uint8
	id     netlink.SocketID
}

func (r *inetDiagReq) Len() int { return 56 }

func (r *inetDiagReq) Serialize() []byte {
	b := make([]byte, 56)
	b[0] = r.family
	b[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:8], 0xffffffff)
	binary.BigEndian.PutUint16(b[8:10], r.id.SourcePort)
	binary.BigEndian.PutUint16(b[10:12], r.id.DestinationPort)
	if r.family == unix.AF_INET {
		copy(b[12:28], r.id.Source.To4())
		copy(b[28:44], r.id.Destination.To4())
	} else {
		copy(b[12:28], r.id.Source.To16())
		copy(b[28:44], r.id.Destination.To16())
	}
	binary.NativeEndian.PutUint32(b[44:48], r.id.Interface)
	binary.NativeEndian.PutUint32(b[48:52], r.id.Cookie[0])
	binary.NativeEndian.PutUint32(b[52:56], r.id.Cookie[1])
	return b
}
