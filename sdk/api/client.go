package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to one halo agent. The zero value is not usable: use
// NewUnixClient or NewClient.
type Client struct {
	base   string
	http   *http.Client
	origin string
}

// OriginHeader names who sends a request ("cli", "console", ...): the agent
// logs commands as "<command> from <origin>". Informational only: it is not
// authenticated (the socket and the mutual TLS API are). Without it, the
// agent says "api".
const OriginHeader = "Halo-Origin"

// WithOrigin returns a copy of c whose requests carry origin in
// OriginHeader: a lowercase word (letters, digits, '-', at most 32
// characters); the agent ignores anything else.
func (c *Client) WithOrigin(origin string) *Client {
	cc := *c
	cc.origin = origin
	return &cc
}

// NewUnixClient returns a client for the agent's local Unix socket.
func NewUnixClient(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
	}
	return &Client{base: "http://halo", http: &http.Client{Transport: tr}}
}

// NewClient returns a client for baseURL (e.g. https://198.18.0.1:9453)
// using hc, which carries the TLS configuration.
func NewClient(baseURL string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), http: hc}
}

// StatusError is returned for a non-2xx answer; Message is the agent's
// {"error": ...} text.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string { return e.Message }

// IsNotFound reports whether err is a 404 from the agent.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.origin != "" {
		req.Header.Set(OriginHeader, c.origin)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach agent: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s answer: %w", method, path, err)
	}
	return nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e Error
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	return &StatusError{Code: resp.StatusCode, Message: fmt.Sprintf("agent answered %s", resp.Status)}
}

// Version returns the agent's version and node name.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	var v VersionInfo
	return v, c.do(ctx, http.MethodGet, "/v1/version", nil, &v)
}

// Modules lists every module's status on the agent's node.
func (c *Client) Modules(ctx context.Context) ([]ModuleStatus, error) {
	var ms []ModuleStatus
	return ms, c.do(ctx, http.MethodGet, "/v1/modules", nil, &ms)
}

// Module returns one module's status, resources included.
func (c *Client) Module(ctx context.Context, name string) (ModuleStatus, error) {
	var m ModuleStatus
	return m, c.do(ctx, http.MethodGet, "/v1/modules/"+url.PathEscape(name), nil, &m)
}

// Command runs an admin command on a module.
func (c *Client) Command(ctx context.Context, module string, req CommandRequest) (CommandResult, error) {
	var r CommandResult
	return r, c.do(ctx, http.MethodPost, "/v1/modules/"+url.PathEscape(module)+"/commands", req, &r)
}

// Events returns the module's event log lines with Seq > after, at most limit
// (0 = the agent's default).
func (c *Client) Events(ctx context.Context, module string, after uint64, limit int) ([]Event, error) {
	q := url.Values{"after": {strconv.FormatUint(after, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var evs []Event
	return evs, c.do(ctx, http.MethodGet, "/v1/modules/"+url.PathEscape(module)+"/events?"+q.Encode(), nil, &evs)
}

// FollowEvents streams the module's events with Seq > after (server-sent
// events) and calls fn for each until ctx ends, fn returns an error, or the
// stream breaks.
func (c *Client) FollowEvents(ctx context.Context, module string, after uint64, fn func(Event) error) error {
	path := "/v1/modules/" + url.PathEscape(module) + "/events/stream?after=" + strconv.FormatUint(after, 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach agent: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue // comments (keep-alives), event names, blank separators
		}
		var ev Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read event stream: %w", err)
	}
	return io.ErrUnexpectedEOF
}

// Resource returns one resource of a module.
func (c *Client) Resource(ctx context.Context, module, name string) (Resource, error) {
	var r Resource
	return r, c.do(ctx, http.MethodGet, "/v1/modules/"+url.PathEscape(module)+"/resources/"+url.PathEscape(name), nil, &r)
}

// SetResource sets a resource of a module (e.g. checker.<name> from a
// long-running custom checker).
func (c *Client) SetResource(ctx context.Context, module, name string, set ResourceSet) error {
	return c.do(ctx, http.MethodPut, "/v1/modules/"+url.PathEscape(module)+"/resources/"+url.PathEscape(name), set, nil)
}

// Plugins lists the plugins the agent found.
func (c *Client) Plugins(ctx context.Context) ([]PluginInfo, error) {
	var ps []PluginInfo
	return ps, c.do(ctx, http.MethodGet, "/v1/plugins", nil, &ps)
}

// WaitState polls until the module reaches state (and readiness, if not
// empty) or ctx ends. Tests and scripts use it instead of sleeping.
func (c *Client) WaitState(ctx context.Context, module, state, readiness string) (ModuleStatus, error) {
	for {
		m, err := c.Module(ctx, module)
		if err == nil && m.State == state && (readiness == "" || m.Readiness == readiness) {
			return m, nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return m, fmt.Errorf("wait for %s %s: %w (last error: %v)", module, state, ctx.Err(), err)
			}
			return m, fmt.Errorf("wait for %s %s: %w (last: %s %s %q)", module, state, ctx.Err(), m.State, m.Readiness, m.Reason)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
