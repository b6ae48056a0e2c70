package heartbeat

import (
	"net/netip"
	"syscall"
	"testing"
)

func TestSocketsAreMarkedCS6(t *testing.T) {
	for _, tc := range []struct {
		name string
		dscp int
		want int
	}{
		{"default", 0, DefaultDSCP << 2},
		{"custom", 46, 46 << 2},
		{"disabled", -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := New(Config{
				Cluster: "test", Key: testKey, Node: "a", Module: 1, DSCP: tc.dscp,
				Networks: []Network{{Name: "default", Local: netip.MustParseAddrPort("127.0.0.1:0")}},
				Peers:    []Peer{{Name: "b", Addrs: map[string]netip.AddrPort{"default": netip.MustParseAddrPort("127.0.0.1:9")}}},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			rc, err := e.nets[0].conn.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var tos int
			var gerr error
			if err := rc.Control(func(fd uintptr) { tos, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TOS) }); err != nil {
				t.Fatal(err)
			}
			if gerr != nil {
				t.Fatal(gerr)
			}
			if tos != tc.want {
				t.Fatalf("IP_TOS = %#x, want %#x", tos, tc.want)
			}
		})
	}
}
