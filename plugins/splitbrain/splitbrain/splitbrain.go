// Package splitbrain is the splitbrain checker: up when the witnesses the
// module names are reachable (any one of them, or all), by ICMP echo or
// TCP connect. The core asks for it before a node goes ALONE: a node that
// cannot reach a witness is the one cut off, and must wait instead.
package splitbrain

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"github.com/halo-ha/halo/plugins/ping/icmpprobe"
	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/schema"
)

// Version is the plugin's own version.
const Version = "1.0.0"

type config struct {
	Witnesses []string      `hcl:"witnesses"`
	Require   string        `hcl:"require"`
	Timeout   time.Duration `hcl:"timeout"`
	Count     int           `hcl:"count"`
	Socket    string        `hcl:"socket"`
}

// witness is one parsed witness.
type witness struct {
	raw  string
	tcp  bool
	addr netip.Addr // ICMP
	dial string     // TCP host:port
}

type settings struct {
	witnesses []witness
	all       bool
	timeout   time.Duration
	icmp      icmpprobe.Options
}

// Checker is the splitbrain checker.
type Checker struct {
	ns  string // network namespace path; "" = the process's own
	mu  sync.RWMutex
	cfg *settings
}

var _ checker.Checker = (*Checker)(nil)

// New returns an unconfigured splitbrain checker.
func New() checker.Checker { return &Checker{} }

// NewInNamespace returns a factory of checkers probing from the network
// namespace at path (for tests).
func NewInNamespace(path string) func() checker.Checker {
	return func() checker.Checker { return &Checker{ns: path} }
}

// Info names the plugin.
func (c *Checker) Info() base.PluginInfo {
	return base.PluginInfo{Name: "splitbrain", Version: Version, Description: "witness reachability (ICMP or TCP), any or all, before going ALONE"}
}

// Schema declares the checker's attributes.
func (c *Checker) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "witnesses", Type: schema.TypeListOfString, Required: true, Description: `"198.18.0.254" or "icmp://198.18.0.254" (ICMP echo), "tcp://198.18.0.253:443" (TCP connect); IP literals`},
		{Name: "require", Type: schema.TypeString, Default: "any", Description: `"any": up when one witness answers; "all": only when every one does`},
		{Name: "timeout", Type: schema.TypeDuration, Default: "1s", Description: "per witness: TCP connect timeout, or the wait for each echo reply"},
		{Name: "count", Type: schema.TypeNumber, Default: 3, Description: "echo requests per ICMP witness (200ms apart); one reply suffices"},
		{Name: "socket", Type: schema.TypeString, Default: string(icmpprobe.Auto), Description: `ICMP socket: "auto", "unprivileged" or "raw"`},
	}}
}

// Configure validates and applies a configuration.
func (c *Checker) Configure(_ context.Context, cfg *base.Config) error {
	var raw config
	if err := cfg.Decode(&raw); err != nil {
		return err
	}
	s := &settings{timeout: raw.Timeout}
	var errs []error
	if len(raw.Witnesses) == 0 {
		errs = append(errs, schema.Errorf("witnesses", "name at least one witness"))
	}
	for i, w := range raw.Witnesses {
		pw, err := parseWitness(w)
		if err != nil {
			errs = append(errs, schema.Errorf(fmt.Sprintf("witnesses[%d]", i), "%v", err))
			continue
		}
		s.witnesses = append(s.witnesses, pw)
	}
	switch raw.Require {
	case "any":
	case "all":
		s.all = true
	default:
		errs = append(errs, schema.Errorf("require", `want "any" or "all", not %q`, raw.Require))
	}
	if raw.Timeout <= 0 {
		errs = append(errs, schema.Errorf("timeout", "must be positive"))
	}
	if raw.Count < 1 || raw.Count > 20 {
		errs = append(errs, schema.Errorf("count", "want 1..20, not %d", raw.Count))
	}
	mode := icmpprobe.Mode(raw.Socket)
	switch mode {
	case icmpprobe.Auto, icmpprobe.Unprivileged, icmpprobe.Raw:
	default:
		errs = append(errs, schema.Errorf("socket", `want "auto", "unprivileged" or "raw", not %q`, raw.Socket))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.icmp = icmpprobe.Options{Count: raw.Count, MinReplies: 1, Interval: 200 * time.Millisecond, Timeout: raw.Timeout, Mode: mode}
	c.mu.Lock()
	c.cfg = s
	c.mu.Unlock()
	return nil
}

// parseWitness reads "addr", "icmp://addr" or "tcp://addr:port". Names are
// refused: a witness that needs DNS depends on one more server.
func parseWitness(s string) (witness, error) {
	w := witness{raw: s}
	scheme, rest, found := strings.Cut(s, "://")
	if !found {
		scheme, rest = "icmp", s
	}
	switch scheme {
	case "icmp":
		a, err := netip.ParseAddr(strings.Trim(rest, "[]"))
		if err != nil {
			return w, fmt.Errorf("%q: want an IP address: %w", s, err)
		}
		w.addr = a.Unmap()
	case "tcp":
		u, err := url.Parse(s)
		if err != nil || u.Path != "" || u.User != nil || u.RawQuery != "" {
			return w, fmt.Errorf("%q: want tcp://address:port", s)
		}
		if _, err := netip.ParseAddr(u.Hostname()); err != nil {
			return w, fmt.Errorf("%q: want an IP address: %w", s, err)
		}
		port, err := strconv.Atoi(u.Port())
		if err != nil || port < 1 || port > 65535 {
			return w, fmt.Errorf("%q: want a port 1..65535", s)
		}
		w.tcp, w.dial = true, u.Host
	default:
		return w, fmt.Errorf("%q: unknown scheme %q (icmp or tcp)", s, scheme)
	}
	return w, nil
}

type outcome struct {
	ok     bool
	detail string
}

// Check probes every witness at once.
func (c *Checker) Check(ctx context.Context) (checker.Result, error) {
	c.mu.RLock()
	s := c.cfg
	c.mu.RUnlock()
	if s == nil {
		return checker.Result{}, errors.New("splitbrain: not configured")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]outcome, len(s.witnesses))
	errs := make([]error, len(s.witnesses))
	var wg sync.WaitGroup
	for i, w := range s.witnesses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.inNamespace(func() error {
				var err error
				results[i], err = s.probe(ctx, w)
				return err
			})
			// The answer is known as soon as one witness decides it.
			if errs[i] == nil && results[i].ok != s.all {
				cancel()
			}
		}()
	}
	wg.Wait()

	var up, down, unknown []string
	for i, w := range s.witnesses {
		switch {
		case errs[i] == nil && results[i].ok:
			up = append(up, w.raw+" "+results[i].detail)
		case errs[i] == nil:
			down = append(down, w.raw+": "+results[i].detail)
		case errors.Is(errs[i], context.Canceled) && ctx.Err() != nil:
			// Cut short because another witness decided.
		default:
			unknown = append(unknown, fmt.Sprintf("%s: %v", w.raw, errs[i]))
		}
	}
	if len(up) > 0 && (!s.all || len(up) == len(s.witnesses)) {
		if s.all {
			return checker.Up("all %d witnesses reachable", len(up)), nil
		}
		return checker.Up("witness %s", up[0]), nil
	}
	if len(down) > 0 {
		if s.all {
			return checker.Down("witness %s (require all)", down[0]), nil
		}
		return checker.Down("no witness reachable: %s", strings.Join(append(down, unknown...), "; ")), nil
	}
	// Nothing decided: every probe failed to run (no ICMP socket, ctx).
	if err := context.Cause(ctx); err != nil && len(unknown) == 0 {
		return checker.Result{}, err
	}
	return checker.Result{}, fmt.Errorf("no witness could be probed: %s", strings.Join(unknown, "; "))
}

func (s *settings) probe(ctx context.Context, w witness) (outcome, error) {
	if !w.tcp {
		st, err := icmpprobe.Probe(ctx, w.addr, s.icmp)
		if err != nil {
			return outcome{}, err
		}
		if st.Received > 0 {
			return outcome{ok: true, detail: fmt.Sprintf("answered %d/%d echo requests (%s)", st.Received, st.Sent, st.RTTs())}, nil
		}
		return outcome{detail: fmt.Sprintf("0/%d echo requests answered", st.Sent)}, nil
	}
	dctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", w.dial)
	if err != nil {
		if ctx.Err() != nil {
			return outcome{}, ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return outcome{detail: fmt.Sprintf("no connection within %s", s.timeout)}, nil
		}
		return outcome{detail: err.Error()}, nil
	}
	_ = conn.Close()
	return outcome{ok: true, detail: fmt.Sprintf("accepted a connection in %s", time.Since(start).Round(10*time.Microsecond))}, nil
}

// inNamespace runs fn on a thread in the checker's network namespace;
// sockets opened there stay in it.
func (c *Checker) inNamespace(fn func() error) error {
	if c.ns == "" {
		return fn()
	}
	target, err := netns.GetFromPath(c.ns)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", c.ns, err)
	}
	defer target.Close()
	// A thread whose namespace cannot be restored stays locked: the
	// runtime ends it with the goroutine.
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open current network namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", c.ns, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("leave network namespace %s: %w", c.ns, err))
	}
	runtime.UnlockOSThread()
	return ferr
}
