// Package tcp is the tcp checker: it is up when a TCP connection to an
// address succeeds within a timeout and, when asked, the peer answers what
// was sent with an expected string.
package tcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/schema"
)

// Version is the plugin's own version.
const Version = "1.0.0"

// maxResponse bounds how much of the answer is read looking for expect.
const maxResponse = 64 << 10

type config struct {
	Address string        `hcl:"address"`
	Timeout time.Duration `hcl:"timeout"`
	Send    string        `hcl:"send"`
	Expect  string        `hcl:"expect"`
}

// Checker is the tcp checker.
type Checker struct {
	mu  sync.RWMutex
	cfg *config
}

var _ checker.Checker = (*Checker)(nil)

// New returns an unconfigured tcp checker.
func New() checker.Checker { return &Checker{} }

// Info names the plugin.
func (c *Checker) Info() base.PluginInfo {
	return base.PluginInfo{Name: "tcp", Version: Version, Description: "TCP connection to address:port, with an optional request and expected answer"}
}

// Schema declares the checker's attributes.
func (c *Checker) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "address", Type: schema.TypeString, Required: true, Description: `"host:port" or "[v6addr]:port"; a host name is resolved at every check`},
		{Name: "timeout", Type: schema.TypeDuration, Default: "5s", Description: "bound on connecting (and on the exchange); the check's own deadline applies when shorter"},
		{Name: "send", Type: schema.TypeString, Description: "bytes written once connected (HCL escapes such as \\r\\n apply)"},
		{Name: "expect", Type: schema.TypeString, Description: "the answer must contain this string before the timeout or the peer closing"},
	}}
}

// Configure validates and applies a configuration.
func (c *Checker) Configure(_ context.Context, cfg *base.Config) error {
	var raw config
	if err := cfg.Decode(&raw); err != nil {
		return err
	}
	var errs []error
	host, port, err := net.SplitHostPort(raw.Address)
	if err != nil {
		errs = append(errs, schema.Errorf("address", "want host:port: %v", err))
	} else {
		if host == "" {
			errs = append(errs, schema.Errorf("address", "no host in %q", raw.Address))
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			errs = append(errs, schema.Errorf("address", "port %q: want 1..65535", port))
		}
	}
	if raw.Timeout <= 0 {
		errs = append(errs, schema.Errorf("timeout", "must be positive, not %s", raw.Timeout))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.mu.Lock()
	c.cfg = &raw
	c.mu.Unlock()
	return nil
}

// Check connects, and exchanges send/expect when configured.
func (c *Checker) Check(ctx context.Context) (checker.Result, error) {
	c.mu.RLock()
	cfg := c.cfg
	c.mu.RUnlock()
	if cfg == nil {
		return checker.Result{}, errors.New("tcp: not configured")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return checker.Down("no connection to %s within %s", cfg.Address, time.Since(start).Round(time.Millisecond)), nil
		}
		return checker.Down("%v", err), nil
	}
	defer conn.Close()
	connected := time.Since(start)
	if cfg.Send == "" && cfg.Expect == "" {
		return checker.Up("connected to %s in %s", conn.RemoteAddr(), round(connected)), nil
	}
	// The connection has no context: stop its I/O when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if cfg.Send != "" {
		if _, err := conn.Write([]byte(cfg.Send)); err != nil {
			return checker.Down("send to %s: %v", conn.RemoteAddr(), err), nil
		}
	}
	if cfg.Expect == "" {
		return checker.Up("connected to %s in %s, request sent", conn.RemoteAddr(), round(connected)), nil
	}
	got, err := readUntil(conn, []byte(cfg.Expect))
	if err == nil {
		return checker.Up("%s answered %q in %s", conn.RemoteAddr(), cfg.Expect, round(time.Since(start))), nil
	}
	return checker.Down("%s did not answer %q: %v (got %q)", conn.RemoteAddr(), cfg.Expect, readError(ctx, err), excerpt(got)), nil
}

// readUntil reads until want appears, the peer closes, or maxResponse
// bytes came without it.
func readUntil(conn net.Conn, want []byte) ([]byte, error) {
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if bytes.Contains(got, want) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		if len(got) >= maxResponse {
			return got, fmt.Errorf("not within the first %d bytes", maxResponse)
		}
	}
}

func readError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errors.New("timed out")
	}
	if errors.Is(err, io.EOF) {
		return errors.New("connection closed")
	}
	return err
}

func excerpt(b []byte) string {
	const max = 80
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

func round(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(100 * time.Microsecond)
}
