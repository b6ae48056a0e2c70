package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/schema"
)

// Version is the plugin's own version, independent of halo's.
const Version = "1.0.0"

// FileCheck is one configured filecheck instance.
type FileCheck struct {
	mu     sync.RWMutex
	config config
	logger hclog.Logger
	now    func() time.Time // the clock; tests replace it
}

// config is the decoded block: field tags name the schema's attributes.
type config struct {
	Path   string        `hcl:"path"`
	MaxAge time.Duration `hcl:"max_age"`
}

var _ checker.Checker = (*FileCheck)(nil)

// New makes an instance; checker.Serve calls it once per checker block.
func New() checker.Checker { return &FileCheck{now: time.Now} }

func (*FileCheck) Info() base.PluginInfo {
	return base.PluginInfo{
		Name:        "filecheck",
		Version:     Version,
		Description: "up while a file exists and is younger than max_age",
	}
}

func (*FileCheck) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "path", Type: schema.TypeString, Required: true,
			Description: "absolute path of the file to watch"},
		{Name: "max_age", Type: schema.TypeDuration, Default: time.Minute,
			Description: "down when the file was last modified longer ago than this; 0s: existence only"},
	}}
}

func (f *FileCheck) Configure(_ context.Context, cfg *base.Config) error {
	var c config
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	// The host has checked types and required attributes; what is left is
	// what only this plugin knows.
	var errs []error
	if !filepath.IsAbs(c.Path) {
		errs = append(errs, schema.Errorf("path", "must be an absolute path, not %q", c.Path))
	}
	if c.MaxAge < 0 {
		errs = append(errs, schema.Errorf("max_age", "must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return err // the previous configuration, if any, stays in force
	}
	f.mu.Lock()
	f.config, f.logger = c, cfg.Logger
	f.mu.Unlock()
	cfg.Logger.Debug("configured", "path", c.Path, "max_age", c.MaxAge)
	return nil
}

func (f *FileCheck) Check(ctx context.Context) (checker.Result, error) {
	f.mu.RLock()
	c, now := f.config, f.now
	f.mu.RUnlock()

	// stat can block for a long time on a dead network filesystem: run it
	// aside, so the host's deadline is honoured whatever the kernel does.
	type statResult struct {
		fi  fs.FileInfo
		err error
	}
	done := make(chan statResult, 1)
	go func() {
		fi, err := os.Stat(c.Path)
		done <- statResult{fi, err}
	}()
	var r statResult
	select {
	case r = <-done:
	case <-ctx.Done():
		return checker.Result{}, fmt.Errorf("stat %s: %w", c.Path, ctx.Err())
	}

	switch {
	case errors.Is(r.err, fs.ErrNotExist):
		return checker.Down("%s does not exist", c.Path), nil
	case r.err != nil:
		return checker.Result{}, r.err // cannot tell: the host reads unknown
	case r.fi.IsDir():
		return checker.Down("%s is a directory", c.Path), nil
	}
	age := now().Sub(r.fi.ModTime()).Round(time.Second)
	if c.MaxAge > 0 && age > c.MaxAge {
		return checker.Down("%s is %s old, max %s", c.Path, age, c.MaxAge), nil
	}
	return checker.Up("%s is %s old", c.Path, age), nil
}
