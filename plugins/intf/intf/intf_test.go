package intf

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/sdktest"
	"github.com/halo-ha/halo/test/testbed"
)

func configure(t *testing.T, ns, src string) checker.Checker {
	t.Helper()
	c := NewInNamespace(ns)()
	value := sdktest.DecodeConfig(t, c.Schema(), src)
	if err := c.Configure(context.Background(), &base.Config{Value: value, Logger: sdktest.Logger(t)}); err != nil {
		t.Fatal(err)
	}
	return c
}

// eventually waits for a check to match.
func eventually(t *testing.T, c checker.Checker, status checker.Status, text string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	var res checker.Result
	for time.Now().Before(deadline) {
		var err error
		res, err = c.Check(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if res.Status == status && strings.Contains(res.Message, text) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("check = %s %q, want %s containing %q", res.Status, res.Message, status, text)
}

func TestCarrierAndAdminState(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	bed, _ := testbed.New(t, testbed.Options{Hosts: []string{"a"}})
	a := bed.Host("a")
	strict := configure(t, a.NetnsPath(), `interface = "eth0"`)
	lax := configure(t, a.NetnsPath(), "interface = \"eth0\"\ncarrier = false\n")
	missing := configure(t, a.NetnsPath(), `interface = "eth9"`)

	eventually(t, strict, checker.StatusUp, "eth0 is up with carrier")
	eventually(t, missing, checker.StatusDown, "find interface eth9")

	// Cable cut: the switch end goes down, eth0 stays administratively up.
	if err := a.LinkDown("default"); err != nil {
		t.Fatal(err)
	}
	eventually(t, strict, checker.StatusDown, "eth0 has no carrier")
	eventually(t, lax, checker.StatusUp, "eth0 is up, no carrier")
	if err := a.LinkUp("default"); err != nil {
		t.Fatal(err)
	}
	eventually(t, strict, checker.StatusUp, "with carrier")

	if _, err := a.Run(context.Background(), "ip", "link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	eventually(t, lax, checker.StatusDown, "eth0 is down")
}

func TestConformance(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	bed, _ := testbed.New(t, testbed.Options{Hosts: []string{"a"}})
	sdktest.CheckerConformance(t, NewInNamespace(bed.Host("a").NetnsPath()), `interface = "eth0"`,
		sdktest.WithBadConfig(`interface = "a/b"`),
		sdktest.WithBadConfig(`interface = "much-too-long-interface-name"`))
}
