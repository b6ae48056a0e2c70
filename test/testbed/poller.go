package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The bed's HTTP server is the test binary itself, started again in a host
// with these variables set: a real process, so Kill9 and Freeze hit it like
// they hit the product, and no extra binary to build or install.
const (
	helperEnv      = "HALO_TESTBED_HELPER"
	helperListen   = "HALO_TESTBED_LISTEN"
	helperLabel    = "HALO_TESTBED_LABEL"
	helperModeHTTP = "http"
)

func init() {
	if os.Getenv(helperEnv) == helperModeHTTP {
		os.Exit(serveHelperHTTP(os.Getenv(helperListen), os.Getenv(helperLabel)))
	}
}

// serveHelperHTTP answers every request with the label and a newline.
func serveHelperHTTP(addr, label string) int {
	srv := &http.Server{
		Addr: addr,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, label+"\n")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintf(os.Stderr, "testbed http helper: %v\n", err)
		return 1
	}
	return 0
}

// StartHTTPServer starts a tiny HTTP server process in the host, listening
// on every address of the host (so also on a VIP added later) at port, that
// answers any request with the host's name and a newline. It returns once
// the server accepts connections.
func (h *Host) StartHTTPServer(port uint16) (*Process, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd := h.Command(context.Background(), exe)
	cmd.Env = append(os.Environ(),
		helperEnv+"="+helperModeHTTP,
		helperListen+"=:"+strconv.Itoa(int(port)),
		helperLabel+"="+h.Name)
	p, err := h.Start("http-"+strconv.Itoa(int(port)), cmd)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := h.DialContext(ctx, "tcp", target)
		cancel()
		if err == nil {
			conn.Close()
			return p, nil
		}
		if p.Exited() || time.Now().After(deadline) {
			return nil, fmt.Errorf("http server on %s:%d did not come up (see %s): %w", h.Name, port, p.LogPath, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// PollerOptions tune a Poller. Zero values pick the defaults.
type PollerOptions struct {
	// Interval between probe starts; default 20 ms. Probes run
	// concurrently, so a hanging one does not delay the next.
	Interval time.Duration
	// Timeout of one probe; default 500 ms.
	Timeout time.Duration
	// Path of the HTTP GET; default "/".
	Path string
	// ConnectOnly makes a probe a bare TCP connect, for servers that do not
	// speak HTTP. Answers are then empty.
	ConnectOnly bool
}

// Poller probes one TCP address from a client host at a fixed interval and
// records which probes succeeded, and who answered: the tool that measures
// failover time. A probe succeeds on a 200 response (or an established
// connection with ConnectOnly) within the timeout.
type Poller struct {
	client *Host
	target netip.AddrPort
	opts   PollerOptions
	http   *http.Client

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu     sync.Mutex
	probes []Probe
	notify chan struct{} // closed and replaced on every finished probe
}

// Probe is the outcome of one request.
type Probe struct {
	Sent   time.Time
	Took   time.Duration
	OK     bool
	Answer string // response body, trimmed (HTTP mode)
	Err    error
}

// Gap is an outage seen by a Poller: every probe sent after From and before
// To failed. From is when the last successful probe before it was sent (the
// poller's start if none), To when the first successful one after it was
// sent; the resolution is the interval.
type Gap struct {
	From, To time.Time
	Failed   int  // probes that failed inside the gap
	Open     bool // no probe has succeeded since; To is the last probe's send time
}

// Duration is To − From.
func (g Gap) Duration() time.Duration { return g.To.Sub(g.From) }

// Span is a run of successful probes that got the same answer, e.g. the
// time a given host served a VIP.
type Span struct {
	Answer   string
	From, To time.Time // send times of the span's first and last probe
	Probes   int
}

// PollStats summarise a Poller's finished probes.
type PollStats struct {
	Probes, OK, Failed int
	Gaps               []Gap
	Spans              []Span
	LastErr            error // error of the last failed probe
}

// FirstGap is the first outage: the downtime of the first failover a test
// caused. ok is false when no probe failed.
func (s PollStats) FirstGap() (g Gap, ok bool) {
	if len(s.Gaps) == 0 {
		return Gap{}, false
	}
	return s.Gaps[0], true
}

// MaxGap is the longest outage, zero when none.
func (s PollStats) MaxGap() time.Duration {
	var m time.Duration
	for _, g := range s.Gaps {
		m = max(m, g.Duration())
	}
	return m
}

// Answers lists the distinct answers in the order they first appeared.
func (s PollStats) Answers() []string {
	var out []string
	for _, sp := range s.Spans {
		if !slices.Contains(out, sp.Answer) {
			out = append(out, sp.Answer)
		}
	}
	return out
}

// Poller starts probing target from the client host. The bed stops it at
// Close; Stop stops it earlier and returns the final statistics.
func (b *Bed) Poller(client string, target netip.AddrPort, opts PollerOptions) (*Poller, error) {
	h := b.Host(client)
	if opts.Interval <= 0 {
		opts.Interval = 20 * time.Millisecond
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 500 * time.Millisecond
	}
	if opts.Path == "" {
		opts.Path = "/"
	}
	if !target.IsValid() {
		return nil, fmt.Errorf("poll %v: invalid address", target)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Poller{
		client: h,
		target: target,
		opts:   opts,
		// A fresh connection per probe: a kept-alive one would keep talking
		// to the old owner of a VIP, or hang on it, and hide the failover.
		http:   &http.Client{Transport: &http.Transport{DialContext: h.DialContext, DisableKeepAlives: true}},
		cancel: cancel,
		notify: make(chan struct{}),
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		cancel()
		return nil, errors.New("poll: bed closed")
	}
	b.pollers = append(b.pollers, p)
	b.mu.Unlock()
	p.wg.Add(1)
	go p.run(ctx)
	return p, nil
}

// run starts a probe every interval until ctx ends. Probes are not tied to
// ctx: Stop lets the ones in flight finish (within their timeout), so a
// failure sent just before Stop is still counted.
func (p *Poller) run(ctx context.Context) {
	defer p.wg.Done()
	ticker := time.NewTicker(p.opts.Interval)
	defer ticker.Stop()
	for {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.record(p.probe())
		}()
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (p *Poller) probe() Probe {
	pr := Probe{Sent: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.Timeout)
	defer cancel()
	if p.opts.ConnectOnly {
		conn, err := p.client.DialContext(ctx, "tcp", p.target.String())
		if err == nil {
			conn.Close()
		}
		pr.Took, pr.OK, pr.Err = time.Since(pr.Sent), err == nil, err
		return pr
	}
	url := "http://" + p.target.String() + p.opts.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		pr.Err = err
		return pr
	}
	resp, err := p.http.Do(req)
	if err == nil {
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		switch {
		case rerr != nil:
			err = rerr
		case resp.StatusCode != http.StatusOK:
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		default:
			pr.Answer = strings.TrimSpace(string(body))
		}
	}
	pr.Took, pr.OK, pr.Err = time.Since(pr.Sent), err == nil, err
	return pr
}

func (p *Poller) record(pr Probe) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probes = append(p.probes, pr)
	close(p.notify)
	p.notify = make(chan struct{})
}

// Stop stops probing, waits for the probes in flight (at most the probe
// timeout) and returns the final statistics. Calling it again returns the
// same statistics.
func (p *Poller) Stop() PollStats {
	p.once.Do(func() {
		p.cancel()
		p.wg.Wait()
	})
	return p.Stats()
}

// Stats summarises the probes finished so far.
func (p *Poller) Stats() PollStats {
	p.mu.Lock()
	probes := slices.Clone(p.probes)
	p.mu.Unlock()
	return summarise(probes)
}

// summarise orders probes by send time and derives gaps and spans.
func summarise(probes []Probe) PollStats {
	slices.SortFunc(probes, func(a, b Probe) int { return a.Sent.Compare(b.Sent) })
	var s PollStats
	var lastOK time.Time
	var gap *Gap
	for _, pr := range probes {
		s.Probes++
		if !pr.OK {
			s.Failed++
			s.LastErr = pr.Err
			if gap == nil {
				from := lastOK
				if from.IsZero() {
					from = probes[0].Sent
				}
				gap = &Gap{From: from}
			}
			gap.Failed++
			gap.To = pr.Sent
			continue
		}
		s.OK++
		// A span of one answer ends at an outage, even if the same host
		// answers after it.
		if n := len(s.Spans); n > 0 && gap == nil && s.Spans[n-1].Answer == pr.Answer {
			s.Spans[n-1].To = pr.Sent
			s.Spans[n-1].Probes++
		} else {
			s.Spans = append(s.Spans, Span{Answer: pr.Answer, From: pr.Sent, To: pr.Sent, Probes: 1})
		}
		if gap != nil {
			gap.To = pr.Sent
			s.Gaps = append(s.Gaps, *gap)
			gap = nil
		}
		lastOK = pr.Sent
	}
	if gap != nil {
		gap.Open = true
		s.Gaps = append(s.Gaps, *gap)
	}
	return s
}

// WaitFor waits until cond holds for the statistics, re-checking after every
// finished probe, or until ctx ends.
func (p *Poller) WaitFor(ctx context.Context, cond func(PollStats) bool) error {
	for {
		p.mu.Lock()
		notify := p.notify
		p.mu.Unlock()
		if cond(p.Stats()) {
			return nil
		}
		select {
		case <-ctx.Done():
			s := p.Stats()
			return fmt.Errorf("poll %s from %s: condition not met (%d probes, %d failed, last error %v): %w",
				p.target, p.client.Name, s.Probes, s.Failed, s.LastErr, ctx.Err())
		case <-notify:
		}
	}
}

// WaitAnswer waits until a probe succeeds with the given answer (the name of
// the host now serving, for StartHTTPServer), or until ctx ends.
func (p *Poller) WaitAnswer(ctx context.Context, answer string) error {
	return p.WaitFor(ctx, func(s PollStats) bool {
		n := len(s.Spans)
		return n > 0 && s.Spans[n-1].Answer == answer && !(len(s.Gaps) > 0 && s.Gaps[len(s.Gaps)-1].Open)
	})
}
