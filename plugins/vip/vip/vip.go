// Package vip is halo's built-in VIP plugin: it adds an IPv4 or IPv6
// address to an interface with netlink, announces it (gratuitous ARP in
// request and reply forms, or an unsolicited neighbour advertisement) at
// once and again on a schedule, removes it resetting the TCP connections
// that used it, and reports whether it is present, duplicated (another
// host answers an RFC 5227 probe for it) and on an up interface.
package vip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/plugins/vip/vipnet"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/schema"
	sdkvip "github.com/halo-ha/halo/sdk/vip"
)

// Version is the plugin's own version.
const Version = "1.0.0"

type config struct {
	Address          string        `hcl:"address"`
	Interface        string        `hcl:"interface"`
	AnnounceCount    int           `hcl:"announce_count"`
	AnnounceInterval time.Duration `hcl:"announce_interval"`
	ProbeTimeout     time.Duration `hcl:"probe_timeout"`
}

type settings struct {
	vip              vipnet.VIP
	announceCount    int
	announceInterval time.Duration
	probeTimeout     time.Duration
	logger           hclog.Logger
}

// Plugin is one VIP instance.
type Plugin struct {
	ns vipnet.Namespace

	// opMu serialises Acquire, Release and Close, which start and stop
	// the announcement schedule; Status and Announce do not wait for it.
	opMu sync.Mutex

	mu  sync.Mutex
	cfg *settings
	// stopAnnouncing ends the repeated announcements of the last Acquire.
	stopAnnouncing context.CancelFunc
	announcing     sync.WaitGroup
}

var (
	_ sdkvip.VIP = (*Plugin)(nil)
	_ io.Closer  = (*Plugin)(nil)
)

// New returns an unconfigured VIP instance working in the process's
// network namespace.
func New() sdkvip.VIP { return &Plugin{} }

// NewInNamespace returns a factory of instances working in the network
// namespace at path (/run/netns/<name>): for tests, and for a host that
// serves several namespaces from one process.
func NewInNamespace(path string) func() sdkvip.VIP {
	return func() sdkvip.VIP { return &Plugin{ns: vipnet.Namespace(path)} }
}

// Info names the plugin.
func (p *Plugin) Info() base.PluginInfo {
	return base.PluginInfo{Name: "vip", Version: Version, Description: "virtual IPv4/IPv6 address with netlink, gratuitous ARP / unsolicited NA, connection reset on release"}
}

// Schema declares the plugin's attributes. They are those of a module's
// vip block, which the host passes on.
func (p *Plugin) Schema() *schema.Schema {
	return Schema()
}

// Schema is the vip plugin's schema, shared with the ip checker.
func Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "address", Type: schema.TypeString, Required: true, Description: `the address with its subnet's prefix length ("198.18.0.100/24", "2001:db8::100/64"); a bare address is a /32 or /128`},
		{Name: "interface", Type: schema.TypeString, Default: "", Description: `interface to carry the address; "" = the one holding another address of the same subnet`},
		{Name: "announce_count", Type: schema.TypeNumber, Default: 3, Description: "announcements sent by Acquire: the first at once, the others every announce_interval; 0 = none"},
		{Name: "announce_interval", Type: schema.TypeDuration, Default: "1s", Description: "time between repeated announcements"},
		{Name: "probe_timeout", Type: schema.TypeDuration, Default: "300ms", Description: `how long Status waits for another host to answer a duplicate-address probe; "0s" = no probe`},
	}}
}

// Configure validates and applies a configuration. A reconfiguration does
// not touch the address: the host releases and acquires when it moves.
func (p *Plugin) Configure(_ context.Context, cfg *base.Config) error {
	var raw config
	if err := cfg.Decode(&raw); err != nil {
		return err
	}
	s := &settings{announceCount: raw.AnnounceCount, announceInterval: raw.AnnounceInterval, probeTimeout: raw.ProbeTimeout, logger: cfg.Logger}
	var errs []error
	prefix, err := vipnet.ParsePrefix(raw.Address)
	if err != nil {
		errs = append(errs, schema.Errorf("address", "%v", err))
	}
	s.vip = vipnet.VIP{NS: p.ns, Prefix: prefix, Interface: raw.Interface}
	if raw.AnnounceCount < 0 || raw.AnnounceCount > 100 {
		errs = append(errs, schema.Errorf("announce_count", "want 0..100, not %d", raw.AnnounceCount))
	}
	if raw.AnnounceInterval < 10*time.Millisecond {
		errs = append(errs, schema.Errorf("announce_interval", "want at least 10ms, not %s", raw.AnnounceInterval))
	}
	if raw.ProbeTimeout < 0 {
		errs = append(errs, schema.Errorf("probe_timeout", "must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	p.mu.Lock()
	p.cfg = s
	p.mu.Unlock()
	return nil
}

func (p *Plugin) settings() (*settings, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg == nil {
		return nil, errors.New("vip: not configured")
	}
	return p.cfg, nil
}

// Acquire adds the address if absent, announces it at once and schedules
// the remaining announcements.
func (p *Plugin) Acquire(ctx context.Context) error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	s, err := p.settings()
	if err != nil {
		return err
	}
	link, added, err := s.vip.Acquire(ctx)
	if err != nil {
		return err
	}
	if added {
		s.logger.Info("address added", "address", s.vip.Prefix, "interface", link.Name)
	}
	p.stopSchedule()
	if s.announceCount == 0 {
		return nil
	}
	if err := s.vip.Announce(ctx); err != nil {
		// The address is in place; a neighbour that missed the
		// announcement learns it when its cache entry expires.
		s.logger.Warn("announce failed", "address", s.vip.Prefix, "error", err)
	}
	if s.announceCount > 1 {
		p.schedule(s)
	}
	return nil
}

// schedule repeats the announcement announceCount-1 times. The repeats
// outlive Acquire's call; Release, a new Acquire and Close end them.
func (p *Plugin) schedule(s *settings) {
	ctx, cancel := context.WithCancel(context.Background())
	p.mu.Lock()
	p.stopAnnouncing = cancel
	p.mu.Unlock()
	p.announcing.Add(1)
	go func() {
		defer p.announcing.Done()
		t := time.NewTicker(s.announceInterval)
		defer t.Stop()
		for i := 1; i < s.announceCount; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			actx, acancel := context.WithTimeout(ctx, s.announceInterval)
			err := s.vip.Announce(actx)
			acancel()
			if err != nil && ctx.Err() == nil {
				s.logger.Warn("repeated announce failed", "address", s.vip.Prefix, "error", err)
			}
		}
	}()
}

func (p *Plugin) stopSchedule() {
	p.mu.Lock()
	cancel := p.stopAnnouncing
	p.stopAnnouncing = nil
	p.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	p.announcing.Wait()
}

// Release removes the address and, when asked, resets the TCP connections
// that used it. The reset comes first: the kernel can only send the
// clients their RST while the address is still local. A second pass after
// the removal aborts what connected in between (those clients get no RST,
// but nothing keeps their connections on this node).
func (p *Plugin) Release(ctx context.Context, opts sdkvip.ReleaseOptions) error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	s, err := p.settings()
	if err != nil {
		return err
	}
	p.stopSchedule()
	var resetErr error
	if opts.ResetConnections {
		resetErr = p.reset(ctx, s)
	}
	removed, err := s.vip.Release(ctx)
	if err != nil {
		return errors.Join(err, resetErr)
	}
	if removed {
		s.logger.Info("address removed", "address", s.vip.Prefix)
	}
	if opts.ResetConnections && ctx.Err() == nil {
		resetErr = errors.Join(resetErr, p.reset(ctx, s))
	}
	return resetErr
}

func (p *Plugin) reset(ctx context.Context, s *settings) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n, err := s.vip.NS.ResetConnections(s.vip.Prefix.Addr())
	if n > 0 {
		s.logger.Info("connections reset", "address", s.vip.Prefix.Addr(), "count", n)
	}
	if err != nil {
		return fmt.Errorf("reset connections of %s: %w", s.vip.Prefix.Addr(), err)
	}
	return nil
}

// Status reports presence, duplication and the interface's state.
func (p *Plugin) Status(ctx context.Context) (sdkvip.Status, error) {
	s, err := p.settings()
	if err != nil {
		return sdkvip.Status{}, err
	}
	st, err := s.vip.Status(ctx, s.probeTimeout)
	if err != nil {
		return sdkvip.Status{}, err
	}
	return sdkvip.Status{
		Present:     st.Present,
		Duplicated:  st.Duplicated(),
		InterfaceUp: st.Link.Up(),
		Message:     st.Message(s.vip.Prefix),
	}, nil
}

// Announce sends one announcement now.
func (p *Plugin) Announce(ctx context.Context) error {
	s, err := p.settings()
	if err != nil {
		return err
	}
	return s.vip.Announce(ctx)
}

// Close ends the repeated announcements. It leaves the address: it must
// outlive the plugin process (see sdk/vip.VIP).
func (p *Plugin) Close() error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	p.stopSchedule()
	return nil
}
