// Package ip is the ip checker: up while an address (usually the module's
// VIP) is on this node, no other host answers for it, and its interface is
// up. It shares the vip plugin's network code.
package ip

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/halo-ha/halo/plugins/vip/vipnet"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/schema"
)

// Version is the plugin's own version.
const Version = "1.0.0"

type config struct {
	Address      string        `hcl:"address"`
	Interface    string        `hcl:"interface"`
	ProbeTimeout time.Duration `hcl:"probe_timeout"`
}

type settings struct {
	vip   vipnet.VIP
	probe time.Duration
}

// Checker is the ip checker.
type Checker struct {
	ns  vipnet.Namespace
	mu  sync.RWMutex
	cfg *settings
}

var _ checker.Checker = (*Checker)(nil)

// New returns an unconfigured ip checker for the process's namespace.
func New() checker.Checker { return &Checker{} }

// NewInNamespace returns a factory of checkers looking at the network
// namespace at path.
func NewInNamespace(path string) func() checker.Checker {
	return func() checker.Checker { return &Checker{ns: vipnet.Namespace(path)} }
}

// Info names the plugin.
func (c *Checker) Info() base.PluginInfo {
	return base.PluginInfo{Name: "ip", Version: Version, Description: "an address is present on this node, not duplicated, on an up interface"}
}

// Schema declares the checker's attributes.
func (c *Checker) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "address", Type: schema.TypeString, Required: true, Description: `the address with its prefix length, as in the vip block ("198.18.0.100/24")`},
		{Name: "interface", Type: schema.TypeString, Default: "", Description: `"" = the interface holding another address of the same subnet`},
		{Name: "probe_timeout", Type: schema.TypeDuration, Default: "300ms", Description: `how long to wait for another host to answer a duplicate-address probe; "0s" = no probe`},
	}}
}

// Configure validates and applies a configuration.
func (c *Checker) Configure(_ context.Context, cfg *base.Config) error {
	var raw config
	if err := cfg.Decode(&raw); err != nil {
		return err
	}
	var errs []error
	prefix, err := vipnet.ParsePrefix(raw.Address)
	if err != nil {
		errs = append(errs, schema.Errorf("address", "%v", err))
	}
	if raw.ProbeTimeout < 0 {
		errs = append(errs, schema.Errorf("probe_timeout", "must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.mu.Lock()
	c.cfg = &settings{vip: vipnet.VIP{NS: c.ns, Prefix: prefix, Interface: raw.Interface}, probe: raw.ProbeTimeout}
	c.mu.Unlock()
	return nil
}

// Check looks at the address.
func (c *Checker) Check(ctx context.Context) (checker.Result, error) {
	c.mu.RLock()
	s := c.cfg
	c.mu.RUnlock()
	if s == nil {
		return checker.Result{}, errors.New("ip: not configured")
	}
	st, err := s.vip.Status(ctx, s.probe)
	if errors.Is(err, vipnet.ErrNoInterface) {
		return checker.Down("%v", err), nil
	}
	if err != nil {
		return checker.Result{}, err
	}
	msg := st.Message(s.vip.Prefix)
	if st.Present && !st.Duplicated() && st.Link.Up() {
		return checker.Up("%s", msg), nil
	}
	return checker.Down("%s", msg), nil
}
