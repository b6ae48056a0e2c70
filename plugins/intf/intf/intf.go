// Package intf is the intf checker: up while a network interface is up
// and, unless told otherwise, has a carrier.
package intf

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/halo-ha/halo/plugins/vip/vipnet"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/schema"
)

// Version is the plugin's own version.
const Version = "1.0.0"

type config struct {
	Interface string `hcl:"interface"`
	Carrier   bool   `hcl:"carrier"`
}

// Checker is the intf checker.
type Checker struct {
	ns  vipnet.Namespace
	mu  sync.RWMutex
	cfg *config
}

var _ checker.Checker = (*Checker)(nil)

// New returns an unconfigured intf checker for the process's namespace.
func New() checker.Checker { return &Checker{} }

// NewInNamespace returns a factory of checkers looking at the network
// namespace at path.
func NewInNamespace(path string) func() checker.Checker {
	return func() checker.Checker { return &Checker{ns: vipnet.Namespace(path)} }
}

// Info names the plugin.
func (c *Checker) Info() base.PluginInfo {
	return base.PluginInfo{Name: "intf", Version: Version, Description: "a network interface is up and has a carrier"}
}

// Schema declares the checker's attributes.
func (c *Checker) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "interface", Type: schema.TypeString, Required: true, Description: "interface name (eth0, bond0, ...)"},
		{Name: "carrier", Type: schema.TypeBool, Default: true, Description: "also require a carrier (cable plugged, link partner present)"},
	}}
}

// Configure validates and applies a configuration.
func (c *Checker) Configure(_ context.Context, cfg *base.Config) error {
	var raw config
	if err := cfg.Decode(&raw); err != nil {
		return err
	}
	// The kernel's rules for interface names (dev_valid_name).
	if raw.Interface == "" || len(raw.Interface) > 15 || raw.Interface == "." || raw.Interface == ".." ||
		strings.ContainsAny(raw.Interface, "/: \t\n") {
		return schema.Errorf("interface", "%q is not a valid interface name", raw.Interface)
	}
	c.mu.Lock()
	c.cfg = &raw
	c.mu.Unlock()
	return nil
}

// Check looks at the interface.
func (c *Checker) Check(ctx context.Context) (checker.Result, error) {
	c.mu.RLock()
	cfg := c.cfg
	c.mu.RUnlock()
	if cfg == nil {
		return checker.Result{}, errors.New("intf: not configured")
	}
	if err := ctx.Err(); err != nil {
		return checker.Result{}, err
	}
	st, err := c.ns.Link(cfg.Interface)
	if err != nil {
		return checker.Down("%v", err), nil
	}
	switch {
	case !st.AdminUp:
		return checker.Down("%s is down (state %s)", st.Name, st.OperState), nil
	case cfg.Carrier && !st.Carrier:
		return checker.Down("%s has no carrier (state %s)", st.Name, st.OperState), nil
	case !st.Carrier:
		return checker.Up("%s is up, no carrier (state %s)", st.Name, st.OperState), nil
	default:
		return checker.Up("%s is up with carrier (state %s)", st.Name, st.OperState), nil
	}
}
