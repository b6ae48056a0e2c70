package mirror

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/test/mirror/mirrorbed"
	"github.com/halo-ha/halo/test/testbed"
)

// Heartbeats are authenticated and replay-protected: with node1 dead, an
// attacker on the client's network replays node1's real heartbeats
// (captured on the wire a moment before) and sends forged ones to node2.
// If node2 took them for node1's, it would never fail over; it must drop
// them, say so in its log, and take over after the timeout as usual.
func TestReplayedAndForgedHeartbeats(t *testing.T) {
	c := newCluster(t, bedSpec{}, mirrorbed.Options{})
	n1, n2 := firstStart(t, c)
	port := uint16(20000 + c.Opts.ID) // the module's default heartbeat port
	to := netip.AddrPortFrom(n2.Host.Addr("default"), port)
	frames, err := captureUDP(n2.Host, "default", n1.Host.Addr("default"), port, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) < 5 {
		t.Fatalf("captured %d heartbeats from node1 in 1s, want about 10 (pulse %v)", len(frames), c.Opts.Pulse)
	}
	seq := lastSeq(t, n2)
	if err := n1.PowerOff(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := make(chan int, 1)
	go func() { sent <- replay(ctx, c.Client, to, frames) }()

	waitEvent(t, n2, seq, "peer node1 lost on all networks")
	waitState(t, n2, "ALONE", "Ready")
	assertServedByAfterCrash(t, c, "node2")
	cancel()
	t.Logf("replayed and forged %d datagrams to node2 while it failed over", <-sent)

	log, err := os.ReadFile(n2.Agent.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	// A replayed frame is either inside the replay window (a duplicate) or
	// behind it (stale); a forged one fails its MAC.
	for _, reasons := range [][]string{{"reason=replay", "reason=stale"}, {"reason=bad_mac"}} {
		found := false
		for _, line := range strings.Split(string(log), "\n") {
			for _, r := range reasons {
				found = found || strings.Contains(line, "dropped heartbeat") && strings.Contains(line, r)
			}
		}
		if !found {
			t.Errorf("node2's log does not report heartbeats dropped with %s", strings.Join(reasons, " or "))
		}
	}
}

// captureUDP reads, in host h, the UDP payloads sent from src to port on
// the host's interface on network, for d: the host's own view of the wire
// (an AF_PACKET socket), which does not disturb the agent bound to the
// port.
func captureUDP(h *testbed.Host, network string, src netip.Addr, port uint16, d time.Duration) ([][]byte, error) {
	ifi := h.Iface(network)
	var fd int
	err := h.Do(func() error {
		var err error
		fd, err = syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, int(htons(syscall.ETH_P_IP)))
		if err != nil {
			return err
		}
		idx, err := net.InterfaceByName(ifi)
		if err != nil {
			syscall.Close(fd)
			return err
		}
		return syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_IP), Ifindex: idx.Index})
	})
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)
	tv := syscall.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return nil, err
	}
	var out [][]byte
	buf := make([]byte, 65536)
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if p, ok := udpPayload(buf[:n], src, port); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// udpPayload returns the payload of an IPv4 UDP packet from src to port.
func udpPayload(pkt []byte, src netip.Addr, port uint16) ([]byte, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != syscall.IPPROTO_UDP {
		return nil, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if len(pkt) < ihl+8 || netip.AddrFrom4([4]byte(pkt[12:16])) != src {
		return nil, false
	}
	udp := pkt[ihl:]
	if binary.BigEndian.Uint16(udp[2:4]) != port {
		return nil, false
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < 8 || ulen > len(udp) {
		return nil, false
	}
	return append([]byte(nil), udp[8:ulen]...), true
}

// replay sends, from the client, every captured frame as is (a replay) and
// with one payload byte flipped (a forgery), over and over every 10 ms,
// until ctx ends; it returns the number of datagrams sent.
func replay(ctx context.Context, client *testbed.Host, to netip.AddrPort, frames [][]byte) int {
	var conn net.Conn
	if err := client.Do(func() error {
		var err error
		conn, err = net.Dial("udp", to.String())
		return err
	}); err != nil {
		return 0
	}
	defer conn.Close()
	sent := 0
	for i := 0; ; i++ {
		f := frames[i%len(frames)]
		forged := append([]byte(nil), f...)
		forged[len(forged)-1] ^= 0x01
		for _, b := range [][]byte{f, forged} {
			if _, err := conn.Write(b); err == nil {
				sent++
			}
		}
		select {
		case <-ctx.Done():
			return sent
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
