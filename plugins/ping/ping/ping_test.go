package ping

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/plugins/ping/icmpprobe"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/sdktest"
	"github.com/halo-ha/halo/test/testbed"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: raw ICMP sockets and network namespaces")
	}
}

func configure(t *testing.T, src string) checker.Checker {
	t.Helper()
	c := New()
	value := sdktest.DecodeConfig(t, c.Schema(), src)
	if err := c.Configure(context.Background(), &base.Config{Value: value, Logger: sdktest.Logger(t)}); err != nil {
		t.Fatalf("configure %q: %v", src, err)
	}
	return c
}

// checkIn runs a check from inside a host of the bed (nil: from here).
func checkIn(t *testing.T, h *testbed.Host, c checker.Checker) (checker.Result, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var res checker.Result
	start := time.Now()
	do := func() error {
		var err error
		res, err = c.Check(ctx)
		return err
	}
	var err error
	if h == nil {
		err = do()
	} else {
		err = h.Do(do)
	}
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return res, time.Since(start)
}

func TestLoopback(t *testing.T) {
	needRoot(t)
	for _, addr := range []string{"127.0.0.1", "::1"} {
		res, _ := checkIn(t, nil, configure(t, fmt.Sprintf("address = %q\ncount = 3\nmin_replies = 3\ninterval = \"20ms\"\n", addr)))
		if res.Status != checker.StatusUp || !strings.HasPrefix(res.Message, "3/3 replies from "+addr+", rtt min/avg/max ") {
			t.Errorf("%s: %s %q", addr, res.Status, res.Message)
		}
	}
}

// TestInNamespace pings a neighbour that answers and an address nobody
// has, from inside a test bed host.
func TestInNamespace(t *testing.T) {
	needRoot(t)
	bed, _ := testbed.New(t, testbed.Options{Hosts: []string{"a", "b"}})
	a, b := bed.Host("a"), bed.Host("b")

	res, _ := checkIn(t, a, configure(t, fmt.Sprintf("address = %q\n", b.Addr("default"))))
	if res.Status != checker.StatusUp || !strings.HasPrefix(res.Message, "1/1 replies from "+b.Addr("default").String()) {
		t.Errorf("neighbour: %s %q", res.Status, res.Message)
	}

	// Nobody has .99: every request goes unanswered.
	silent := configure(t, "address = \"198.18.0.99\"\ncount = 3\ninterval = \"100ms\"\ntimeout = \"300ms\"\n")
	res, took := checkIn(t, a, silent)
	if res.Status != checker.StatusDown || res.Message != "0/3 replies from 198.18.0.99, need 1" {
		t.Errorf("silent address: %s %q", res.Status, res.Message)
	}
	// Three requests 100ms apart, the last waited 300ms for: ~500ms.
	if took < 450*time.Millisecond || took > 2*time.Second {
		t.Errorf("silent address: check took %s, want about 500ms", took)
	}

	// The neighbour that answered above, with its cable cut.
	if err := b.LinkDown("default"); err != nil {
		t.Fatal(err)
	}
	res, _ = checkIn(t, a, configure(t, fmt.Sprintf("address = %q\ncount = 2\ninterval = \"50ms\"\ntimeout = \"200ms\"\n", b.Addr("default"))))
	if res.Status != checker.StatusDown || !strings.HasPrefix(res.Message, "0/2 replies") {
		t.Errorf("neighbour with its cable cut: %s %q", res.Status, res.Message)
	}
}

// TestSocketKinds: the unprivileged socket works where ping_group_range
// allows it, auto falls back to a raw socket where it does not, and an
// explicit "unprivileged" then fails clearly.
func TestSocketKinds(t *testing.T) {
	needRoot(t)
	bed, _ := testbed.New(t, testbed.Options{Hosts: []string{"open", "closed"}})
	open, closed := bed.Host("open"), bed.Host("closed")
	// ping_group_range belongs to the network namespace.
	if _, err := open.Run(context.Background(), "sysctl", "-w", "net.ipv4.ping_group_range=0 2147483647"); err != nil {
		t.Fatal(err)
	}
	if _, err := closed.Run(context.Background(), "sysctl", "-w", "net.ipv4.ping_group_range=1 0"); err != nil {
		t.Fatal(err)
	}
	probe := func(h *testbed.Host, dst netip.Addr, mode icmpprobe.Mode) (icmpprobe.Stats, error) {
		var st icmpprobe.Stats
		err := h.Do(func() error {
			var err error
			st, err = icmpprobe.Probe(context.Background(), dst, icmpprobe.Options{Count: 2, MinReplies: 2, Interval: 20 * time.Millisecond, Timeout: time.Second, Mode: mode})
			return err
		})
		return st, err
	}
	for _, dst := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"), closed.Addr("default")} {
		st, err := probe(open, dst, icmpprobe.Unprivileged)
		if err != nil || st.Received != 2 || st.Mode != icmpprobe.Unprivileged {
			t.Errorf("unprivileged to %s where allowed: %+v, %v", dst, st, err)
		}
		st, err = probe(closed, dst, icmpprobe.Auto)
		if err != nil || st.Received != 2 || st.Mode != icmpprobe.Raw {
			t.Errorf("auto to %s where unprivileged is refused: %+v, %v; want 2 replies over a raw socket", dst, st, err)
		}
	}
	if _, err := probe(closed, netip.MustParseAddr("127.0.0.1"), icmpprobe.Unprivileged); !errors.Is(err, icmpprobe.ErrNoSocket) || !strings.Contains(err.Error(), "ping_group_range") {
		t.Errorf("unprivileged where refused: %v, want ErrNoSocket naming ping_group_range", err)
	}
	// The checker reports that as a check that could not run.
	c := configure(t, "address = \"127.0.0.1\"\nsocket = \"unprivileged\"\n")
	if err := closed.Do(func() error { _, err := c.Check(context.Background()); return err }); !errors.Is(err, icmpprobe.ErrNoSocket) {
		t.Errorf("checker without a socket: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`address = "not an address"`, "address: \"not an address\" is neither"},
		{`address = "127.0.0.1"` + "\ncount = 0", "count: want 1..100"},
		{`address = "127.0.0.1"` + "\ncount = 2\nmin_replies = 3", "min_replies: want 1..count (2), not 3"},
		{`address = "127.0.0.1"` + "\ninterval = \"0s\"", "interval: must be positive"},
		{`address = "127.0.0.1"` + "\ntimeout = \"0s\"", "timeout: must be positive"},
		{`address = "127.0.0.1"` + "\nsocket = \"dgram\"", "socket: want"},
	} {
		c := New()
		value := sdktest.DecodeConfig(t, c.Schema(), tc.src)
		err := c.Configure(context.Background(), &base.Config{Value: value, Logger: sdktest.Logger(t)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestConformance(t *testing.T) {
	needRoot(t)
	sdktest.CheckerConformance(t, New, "address = \"127.0.0.1\"\ncount = 2\nmin_replies = 2\n",
		sdktest.WithBadConfig("address = \"127.0.0.1\"\ncount = 1\nmin_replies = 2\n"),
		sdktest.WithBadConfig("address = \"127.0.0.1\"\nsocket = \"magic\"\n"))
}
