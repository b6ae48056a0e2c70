package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/host"
)

// TestBinary follows the README: build the plugin, put it in a plugin
// directory, and drive it as halo's agent does.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	pluginDir := t.TempDir()
	bin := filepath.Join(pluginDir, "filecheck")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	client := plugin.NewClient(host.ClientConfig(bin, hclog.NewNullLogger()))
	defer client.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := host.Connect(ctx, client, host.Expect{Kind: base.KindChecker, Name: "filecheck"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Info.Version != Version {
		t.Fatalf("version %s, want %s", p.Info.Version, Version)
	}
	s, err := p.Base.Schema(ctx)
	if err != nil {
		t.Fatal(err)
	}

	flag := filepath.Join(t.TempDir(), "healthy")
	src := "checker \"app-alive\" {\n  plugin  = \"filecheck\"\n  path    = \"" + flag + "\"\n  max_age = \"30s\"\n}\n"
	f, diags := hclsyntax.ParseConfig([]byte(src), "module.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	// The host takes its own attributes (plugin, interval, action...) and
	// decodes the rest with the plugin's schema.
	block := f.Body.(*hclsyntax.Body).Blocks[0]
	_, rest, diags := block.Body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "plugin", Required: true}}})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	value, diags := s.Decode(rest, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	mod := base.ModuleContext{Module: "web", Node: "node1", StateDir: t.TempDir(), Name: "app-alive"}
	if err := p.Base.SetConfig(ctx, "web/app-alive", value, mod); err != nil {
		t.Fatal(err)
	}
	chk, err := p.Checker()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []checker.Status{checker.StatusDown, checker.StatusUp} {
		if want == checker.StatusUp {
			if err := os.WriteFile(flag, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		res, err := chk.Check(cctx, "web/app-alive")
		ccancel()
		if err != nil || res.Status != want {
			t.Fatalf("Check = %+v, %v; want %s", res, err, want)
		}
	}
}
