package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/host"
	"github.com/halo-ha/halo/sdk/sdktest"
)

// TestBinary builds the plugin and talks to it as the agent does: a
// separate process, go-plugin's handshake, AutoMTLS, a real check.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin binary")
	}
	bin := filepath.Join(t.TempDir(), "errd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	client := plugin.NewClient(host.ClientConfig(bin, sdktest.Logger(t)))
	t.Cleanup(client.Kill)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := host.Connect(ctx, client, host.Expect{Kind: base.KindChecker, Name: "errd"})
	if err != nil {
		t.Fatal(err)
	}
	sch, err := p.Base.Schema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// This test process has a known command line.
	value := sdktest.DecodeConfig(t, sch, `pattern = "`+regexpQuote(os.Args[0])+`"`)
	if err := p.Base.SetConfig(ctx, "i1", value, sdktest.TestModule(t, "i1")); err != nil {
		t.Fatal(err)
	}
	ck, err := p.Checker()
	if err != nil {
		t.Fatal(err)
	}
	res, err := ck.Check(ctx, "i1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != checker.StatusUp || !strings.HasPrefix(res.Message, "1 process match pattern=") {
		t.Errorf("check of this test process through the binary: %s %q", res.Status, res.Message)
	}
}

func regexpQuote(s string) string {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteString(`\\`)
		}
		b.WriteRune(r)
	}
	return b.String()
}
