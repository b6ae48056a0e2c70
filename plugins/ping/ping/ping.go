// Package ping is the ping checker: up when at least min_replies of count
// ICMP echo requests to an address are answered, each within timeout.
package ping

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/halo-ha/halo/plugins/ping/icmpprobe"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/schema"
)

// Version is the plugin's own version.
const Version = "1.0.0"

type config struct {
	Address    string        `hcl:"address"`
	Count      int           `hcl:"count"`
	MinReplies int           `hcl:"min_replies"`
	Interval   time.Duration `hcl:"interval"`
	Timeout    time.Duration `hcl:"timeout"`
	Socket     string        `hcl:"socket"`
}

// Target is a validated ping configuration, ready to probe.
type Target struct {
	host string
	addr netip.Addr // valid when host is an IP literal
	opts icmpprobe.Options
}

// Checker is the ping checker.
type Checker struct {
	mu  sync.RWMutex
	cfg *Target
}

var _ checker.Checker = (*Checker)(nil)

// New returns an unconfigured ping checker.
func New() checker.Checker { return &Checker{} }

// Info names the plugin.
func (c *Checker) Info() base.PluginInfo {
	return base.PluginInfo{Name: "ping", Version: Version, Description: "ICMP echo (IPv4/IPv6): min_replies of count requests answered"}
}

// Schema declares the checker's attributes.
func (c *Checker) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "address", Type: schema.TypeString, Required: true, Description: "IPv4 or IPv6 address (a host name is resolved at every check)"},
		{Name: "count", Type: schema.TypeNumber, Default: 3, Description: "echo requests sent at most per check"},
		{Name: "min_replies", Type: schema.TypeNumber, Default: 1, Description: "replies needed to be up; the check ends as soon as they came"},
		{Name: "interval", Type: schema.TypeDuration, Default: "200ms", Description: "time between two requests"},
		{Name: "timeout", Type: schema.TypeDuration, Default: "1s", Description: "how long each request waits for its reply"},
		{Name: "socket", Type: schema.TypeString, Default: string(icmpprobe.Auto), Description: `"auto" (unprivileged ICMP socket, else raw), "unprivileged" or "raw"`},
	}}
}

// Configure validates and applies a configuration.
func (c *Checker) Configure(_ context.Context, cfg *base.Config) error {
	var raw config
	if err := cfg.Decode(&raw); err != nil {
		return err
	}
	s, err := NewTarget(raw.Address, raw.Count, raw.MinReplies, raw.Interval, raw.Timeout, raw.Socket)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.cfg = s
	c.mu.Unlock()
	return nil
}

// NewTarget validates a ping configuration; splitbrain uses it for its ICMP
// witnesses.
func NewTarget(address string, count, minReplies int, interval, timeout time.Duration, socket string) (*Target, error) {
	s := &Target{host: address, opts: icmpprobe.Options{Count: count, MinReplies: minReplies, Interval: interval, Timeout: timeout, Mode: icmpprobe.Mode(socket)}}
	var errs []error
	if a, err := netip.ParseAddr(address); err == nil {
		s.addr = a.Unmap()
	} else if address == "" || !validHostname(address) {
		errs = append(errs, schema.Errorf("address", "%q is neither an IP address nor a host name", address))
	}
	if count < 1 || count > 100 {
		errs = append(errs, schema.Errorf("count", "want 1..100, not %d", count))
	}
	if minReplies < 1 || minReplies > count {
		errs = append(errs, schema.Errorf("min_replies", "want 1..count (%d), not %d", count, minReplies))
	}
	if interval <= 0 {
		errs = append(errs, schema.Errorf("interval", "must be positive"))
	}
	if timeout <= 0 {
		errs = append(errs, schema.Errorf("timeout", "must be positive"))
	}
	switch icmpprobe.Mode(socket) {
	case icmpprobe.Auto, icmpprobe.Unprivileged, icmpprobe.Raw:
	default:
		errs = append(errs, schema.Errorf("socket", `want "auto", "unprivileged" or "raw", not %q`, socket))
	}
	return s, errors.Join(errs...)
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// Check pings once (count requests at most).
func (c *Checker) Check(ctx context.Context) (checker.Result, error) {
	c.mu.RLock()
	s := c.cfg
	c.mu.RUnlock()
	if s == nil {
		return checker.Result{}, errors.New("ping: not configured")
	}
	return s.Check(ctx)
}

// Check runs the probe and judges it.
func (s *Target) Check(ctx context.Context) (checker.Result, error) {
	addr := s.addr
	if !addr.IsValid() {
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", s.host)
		if err != nil {
			return checker.Down("resolve %s: %v", s.host, err), nil
		}
		addr = addrs[0].Unmap()
	}
	st, err := icmpprobe.Probe(ctx, addr, s.opts)
	if err != nil {
		return checker.Result{}, err
	}
	target := addr.String()
	if target != s.host {
		target = fmt.Sprintf("%s (%s)", s.host, addr)
	}
	if st.Received >= s.opts.MinReplies {
		return checker.Up("%d/%d replies from %s, %s", st.Received, st.Sent, target, st.RTTs()), nil
	}
	return checker.Down("%d/%d replies from %s, need %d", st.Received, st.Sent, target, s.opts.MinReplies), nil
}
