package ip

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/sdktest"
	"github.com/halo-ha/halo/test/testbed"
)

var vip = netip.MustParsePrefix("198.18.0.100/24")

func check(t *testing.T, c checker.Checker) checker.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.Check(ctx)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return res
}

// TestIPChecker walks the address through absent, present, duplicated and
// on a cut cable, as seen from host a.
func TestIPChecker(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	bed, _ := testbed.New(t, testbed.Options{Hosts: []string{"a", "c"}})
	a, c := bed.Host("a"), bed.Host("c")
	ck := NewInNamespace(a.NetnsPath())()
	value := sdktest.DecodeConfig(t, ck.Schema(), fmt.Sprintf("address = %q\n", vip))
	if err := ck.Configure(context.Background(), &base.Config{Value: value, Logger: sdktest.Logger(t)}); err != nil {
		t.Fatal(err)
	}
	want := func(status checker.Status, text string) {
		t.Helper()
		res := check(t, ck)
		if res.Status != status || !strings.Contains(res.Message, text) {
			t.Errorf("check = %s %q, want %s containing %q", res.Status, res.Message, status, text)
		}
	}
	want(checker.StatusDown, "198.18.0.100/24 absent from eth0")
	if err := a.AddAddr("default", vip); err != nil {
		t.Fatal(err)
	}
	want(checker.StatusUp, "198.18.0.100/24 present on eth0, interface up")
	if err := c.AddAddr("default", vip); err != nil {
		t.Fatal(err)
	}
	want(checker.StatusDown, "duplicated: "+c.MAC("default").String())
	if err := c.DelAddr("default", vip); err != nil {
		t.Fatal(err)
	}
	want(checker.StatusUp, "present")
	if err := a.LinkDown("default"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for check(t, ck).Status == checker.StatusUp && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	want(checker.StatusDown, "no carrier")
}

func TestConformance(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	bed, _ := testbed.New(t, testbed.Options{Hosts: []string{"a"}})
	if err := bed.Host("a").AddAddr("default", vip); err != nil {
		t.Fatal(err)
	}
	sdktest.CheckerConformance(t, NewInNamespace(bed.Host("a").NetnsPath()), fmt.Sprintf("address = %q\n", vip),
		sdktest.WithBadConfig(`address = "not-an-address"`),
		sdktest.WithBadConfig(fmt.Sprintf("address = %q\nprobe_timeout = \"-1s\"\n", vip)))
}
