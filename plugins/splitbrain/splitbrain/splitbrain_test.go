package splitbrain

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/sdktest"
	"github.com/halo-ha/halo/test/testbed"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and raw ICMP sockets")
	}
}

func configure(t *testing.T, ns, src string) checker.Checker {
	t.Helper()
	c := NewInNamespace(ns)()
	value := sdktest.DecodeConfig(t, c.Schema(), src)
	if err := c.Configure(context.Background(), &base.Config{Value: value, Logger: sdktest.Logger(t)}); err != nil {
		t.Fatalf("configure %q: %v", src, err)
	}
	return c
}

func check(t *testing.T, c checker.Checker) (checker.Result, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	res, err := c.Check(ctx)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return res, time.Since(start)
}

// TestWitnesses: node n checks an ICMP witness (host w1) and a TCP witness
// (a listener on host w2), as faults take them away one by one.
func TestWitnesses(t *testing.T) {
	needRoot(t)
	bed, _ := testbed.New(t, testbed.Options{Hosts: []string{"n", "w1", "w2"}})
	n, w1, w2 := bed.Host("n"), bed.Host("w1"), bed.Host("w2")
	l, err := w2.Listen("tcp", net.JoinHostPort(w2.Addr("default").String(), "8443"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	icmpW := w1.Addr("default").String()
	tcpW := "tcp://" + net.JoinHostPort(w2.Addr("default").String(), "8443")
	witnesses := fmt.Sprintf("witnesses = [%q, %q]\ntimeout = \"300ms\"\ncount = 2\n", icmpW, tcpW)
	anyOf := configure(t, n.NetnsPath(), witnesses)
	allOf := configure(t, n.NetnsPath(), witnesses+"require = \"all\"\n")

	want := func(c checker.Checker, status checker.Status, text string) {
		t.Helper()
		res, took := check(t, c)
		if res.Status != status || !strings.Contains(res.Message, text) {
			t.Errorf("check = %s %q, want %s containing %q", res.Status, res.Message, status, text)
		}
		// Witnesses are probed at once: two requests 200ms apart and the
		// last one's 300ms wait bound a check at ~500ms, not the sum.
		if took > 1500*time.Millisecond {
			t.Errorf("check took %s", took)
		}
	}
	want(anyOf, checker.StatusUp, "witness ")
	want(allOf, checker.StatusUp, "all 2 witnesses reachable")

	// w1 cut off: the TCP witness still vouches for n.
	if err := w1.LinkDown("default"); err != nil {
		t.Fatal(err)
	}
	want(anyOf, checker.StatusUp, "witness "+tcpW+" accepted a connection")
	want(allOf, checker.StatusDown, "witness "+icmpW+": 0/2 echo requests answered (require all)")

	// And the TCP witness gone too: n is alone and must not go ALONE.
	l.Close()
	want(anyOf, checker.StatusDown, "no witness reachable: ")
	res, _ := check(t, anyOf)
	if !strings.Contains(res.Message, icmpW+": 0/2 echo requests answered") || !strings.Contains(res.Message, tcpW+": ") || !strings.Contains(res.Message, "connection refused") {
		t.Errorf("down message %q should name both witnesses and why", res.Message)
	}

	// n's own cable cut: nothing answers.
	if err := w1.LinkUp("default"); err != nil {
		t.Fatal(err)
	}
	if err := n.LinkDown("default"); err != nil {
		t.Fatal(err)
	}
	want(anyOf, checker.StatusDown, "no witness reachable")
}

func TestIPv6Loopback(t *testing.T) {
	needRoot(t)
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := configure(t, "", fmt.Sprintf("witnesses = [\"::1\", \"tcp://%s\"]\nrequire = \"all\"\n", l.Addr()))
	if res, _ := check(t, c); res.Status != checker.StatusUp {
		t.Errorf("%s %q", res.Status, res.Message)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`witnesses = []`, "witnesses: name at least one witness"},
		{`witnesses = ["witness.example"]`, `witnesses[0]: "witness.example": want an IP address`},
		{`witnesses = ["198.18.0.1", "tcp://198.18.0.2"]`, `witnesses[1]: "tcp://198.18.0.2": want a port`},
		{`witnesses = ["udp://198.18.0.2:53"]`, `unknown scheme "udp"`},
		{`witnesses = ["198.18.0.1"]` + "\nrequire = \"most\"", `require: want "any" or "all"`},
		{`witnesses = ["198.18.0.1"]` + "\ntimeout = \"0s\"", "timeout: must be positive"},
		{`witnesses = ["198.18.0.1"]` + "\ncount = 0", "count: want 1..20"},
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
	sdktest.CheckerConformance(t, New, "witnesses = [\"127.0.0.1\"]\n",
		sdktest.WithBadConfig(`witnesses = ["tcp://127.0.0.1"]`),
		sdktest.WithBadConfig("witnesses = [\"127.0.0.1\"]\nrequire = \"none\"\n"))
}
