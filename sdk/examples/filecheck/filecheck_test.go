package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/sdktest"
)

func TestConformance(t *testing.T) {
	path := filepath.Join(t.TempDir(), "healthy")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sdktest.CheckerConformance(t, New, `
path    = "`+path+`"
max_age = "30s"
`,
		sdktest.WithBadConfig(`path = "relative/healthy"`),
		sdktest.WithBadConfig(`
path    = "/run/healthy"
max_age = "-5s"
`))
}

func TestCheck(t *testing.T) {
	p := sdktest.ServeChecker(t, New)
	dir := t.TempDir()
	path := filepath.Join(dir, "healthy")
	if err := p.Configure(t, "app", `path = "`+path+`"`); err != nil {
		t.Fatal(err)
	}
	check := func() checker.Result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := p.Checker.Check(ctx, "app")
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	if res := check(); res.Status != checker.StatusDown {
		t.Fatalf("missing file: %+v, want down", res)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if res := check(); res.Status != checker.StatusUp {
		t.Fatalf("fresh file: %+v, want up", res)
	}
	// max_age defaults to one minute.
	old := time.Now().Add(-2 * time.Minute)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if res := check(); res.Status != checker.StatusDown {
		t.Fatalf("file 2m old with the default max_age: %+v, want down", res)
	}
	// max_age = 0s checks existence only; reconfiguration applies live.
	if err := p.Configure(t, "app", `
path    = "`+path+`"
max_age = "0s"
`); err != nil {
		t.Fatal(err)
	}
	if res := check(); res.Status != checker.StatusUp {
		t.Fatalf("old file without an age limit: %+v, want up", res)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if res := check(); res.Status != checker.StatusDown {
		t.Fatalf("a directory: %+v, want down", res)
	}
}

func TestCheckAgeBoundary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mtime := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	f := New().(*FileCheck)
	cfg := sdktest.DecodeConfig(t, f.Schema(), `
path    = "`+path+`"
max_age = "10s"
`)
	if err := f.Configure(context.Background(), &base.Config{Value: cfg, Logger: sdktest.Logger(t)}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		age  time.Duration
		want checker.Status
	}{
		{10 * time.Second, checker.StatusUp},
		{11 * time.Second, checker.StatusDown},
	} {
		f.now = func() time.Time { return mtime.Add(tt.age) }
		res, err := f.Check(context.Background())
		if err != nil || res.Status != tt.want {
			t.Errorf("age %s: %+v, %v; want %s", tt.age, res, err, tt.want)
		}
	}
}
