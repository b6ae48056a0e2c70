package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"

	"github.com/halo-ha/halo/sdk/api"
	"github.com/halo-ha/halo/sdk/base"
)

// instance is a configuration the plugin accepted, kept to replay it into
// a relaunched process.
type instance struct {
	id    string
	mod   base.ModuleContext
	value cty.Value
}

// proc supervises one plugin binary: at most one running session,
// launched on first use, relaunched with backoff after it died while it
// served instances.
type proc struct {
	h    *Host
	name string
	path string
	log  hclog.Logger

	mu   sync.Mutex
	sess *session
	// launching is closed when the launch in progress ends; nil when none.
	launching chan struct{}
	// changed is closed (and replaced) whenever sess or down changes.
	changed chan struct{}
	// down says why there is no session; nil before the first launch.
	down error
	// crash describes the last unexpected exit, for the messages of
	// failed relaunches.
	crash string
	// refused is a permanent refusal: the plugin is never launched again.
	refused error
	delay   time.Duration // next relaunch delay
	retryAt time.Time     // after a failed launch, none on demand before this
	timer   *time.Timer   // pending relaunch
	// instances are replayed, in ID order, into every new session.
	instances map[string]*instance
	closed    bool
	probing   bool
	// info is the identity of the last session, for List while down.
	info base.Info
}

func newProc(h *Host, name, path string) *proc {
	return &proc{
		h: h, name: name, path: path,
		log:       h.logger.With("plugin", name),
		changed:   make(chan struct{}),
		instances: map[string]*instance{},
	}
}

func (p *proc) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// session returns the running session, launching one if none runs or is
// scheduled, and waiting (within ctx) for a launch in progress. A plugin
// that is down is an error at once, with the cause, unless wait is set and
// a relaunch is scheduled: the call then waits for it. A launch that
// failed recently is not retried before its backoff delay.
func (p *proc) session(ctx context.Context, wait bool) (*session, error) {
	for {
		p.mu.Lock()
		switch {
		case p.closed:
			p.mu.Unlock()
			return nil, ErrClosed
		case p.refused != nil:
			err := p.refused
			p.mu.Unlock()
			return nil, err
		case p.sess != nil:
			s := p.sess
			p.mu.Unlock()
			return s, nil
		}
		if p.launching == nil && p.timer == nil && !time.Now().Before(p.retryAt) {
			p.startLocked()
		}
		if p.launching == nil && (!wait || p.timer == nil) {
			err := p.down
			p.mu.Unlock()
			return nil, err
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			p.mu.Lock()
			cause := p.down
			p.mu.Unlock()
			if cause != nil {
				return nil, cause
			}
			return nil, fmt.Errorf("start plugin %s: %w", p.name, ctx.Err())
		}
	}
}

// current returns the running session or, at once, why there is none.
// Check calls use it: a checker whose plugin is down reports unknown with
// the cause rather than wait.
func (p *proc) current() (*session, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.sess != nil:
		return p.sess, nil
	case p.closed:
		return nil, ErrClosed
	case p.refused != nil:
		return nil, p.refused
	case p.down != nil:
		return nil, p.down
	}
	return nil, fmt.Errorf("plugin %s is starting", p.name)
}

// startLocked launches a session in the background. The goroutine is
// counted in h.wg: p.closed is false here, and Close waits on h.wg only
// after marking every proc closed.
func (p *proc) startLocked() {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	done := make(chan struct{})
	p.launching = done
	p.h.wg.Add(1)
	go func() {
		defer p.h.wg.Done()
		defer close(done)
		p.launch()
	}()
}

func (p *proc) launch() {
	ctx, cancel := context.WithTimeout(context.Background(), p.h.opts.StartTimeout)
	defer cancel()
	s, err := p.h.connect(ctx, p)
	if err == nil {
		if err = p.replay(ctx, s); err != nil {
			s.stop()
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	p.launching = nil
	defer p.broadcastLocked()
	if err != nil {
		p.launchFailedLocked(err)
		return
	}
	// Published even when closing: close waits for this launch to end,
	// then stops whatever session it left.
	p.sess, p.info, p.down, p.retryAt = s, s.info, nil, time.Time{}
	p.h.wg.Add(1) // counted goroutine: safe while closing
	go func() {
		defer p.h.wg.Done()
		p.watch(s)
	}()
	p.log.Info("plugin serving", "pid", s.pid, "version", s.info.Version, "api_version", s.info.APIVersion,
		"kind", s.info.Kind, "instances", len(p.instances), "start_time", time.Since(s.started))
}

func (p *proc) launchFailedLocked(err error) {
	var ref *refusal
	if errors.As(err, &ref) {
		p.refused, p.down = err, err
		p.log.Error("plugin refused", "error", err)
		return
	}
	delay := p.nextDelayLocked()
	p.retryAt = time.Now().Add(delay)
	if p.crash != "" {
		p.down = fmt.Errorf("plugin %s %s; relaunch failed: %w; next try in %s", p.name, p.crash, err, delay)
	} else {
		p.down = err
	}
	if len(p.instances) > 0 && !p.closed {
		p.timer = time.AfterFunc(delay, p.relaunch)
	}
	p.log.Error("plugin launch failed", "error", err, "retry_in", delay)
}

func (p *proc) nextDelayLocked() time.Duration {
	b := p.h.opts.Restart
	d := p.delay
	if d == 0 {
		d = b.Initial
	}
	p.delay = min(2*d, b.Max)
	return d
}

// relaunch is the backoff timer's callback.
func (p *proc) relaunch() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.timer = nil
	if p.closed || p.sess != nil || p.launching != nil {
		return
	}
	p.startLocked()
}

// replay sends every instance's configuration to a new session before it
// serves. A configuration the plugin now rejects (an upgraded binary) is
// logged and left out: that instance's calls report the rejection.
func (p *proc) replay(ctx context.Context, s *session) error {
	p.mu.Lock()
	ids := slices.Sorted(maps.Keys(p.instances))
	insts := make([]*instance, len(ids))
	for i, id := range ids {
		insts[i] = p.instances[id]
	}
	p.mu.Unlock()
	for _, in := range insts {
		err := s.base.SetConfig(ctx, in.id, in.value, in.mod)
		var cerr *base.ConfigError
		switch {
		case err == nil:
		case errors.As(err, &cerr):
			p.log.Error("plugin rejects a configuration it accepted before", "instance", in.id, "error", err)
		default:
			return fmt.Errorf("launch plugin %s: replay configuration of %s: %w", p.name, in.id, err)
		}
	}
	if len(insts) > 0 {
		p.log.Debug("configurations replayed", "instances", len(insts))
	}
	return nil
}

// watch waits for the session's process to end and, unless the host is
// closing it, schedules a relaunch.
func (p *proc) watch(s *session) {
	<-s.done
	p.mu.Lock()
	if p.sess != s { // closing: close stops it
		p.mu.Unlock()
		return
	}
	p.sess = nil
	p.crash = s.exitCause()
	if time.Since(s.started) >= p.h.opts.Restart.ResetAfter {
		p.delay = 0
	}
	var delay time.Duration
	if len(p.instances) > 0 && !p.closed {
		delay = p.nextDelayLocked()
		p.down = fmt.Errorf("plugin %s %s; restarting", p.name, p.crash)
		p.timer = time.AfterFunc(delay, p.relaunch)
	} else {
		// Nothing to serve: launched again on demand.
		p.down = fmt.Errorf("plugin %s %s", p.name, p.crash)
	}
	p.broadcastLocked()
	p.mu.Unlock()
	p.log.Error("plugin process ended", "pid", s.pid, "cause", p.crash, "relaunch_in", delay)
	s.stop() // reap go-plugin's goroutines, remove the socket directory
}

// configure sends an instance's configuration to a session.
func (p *proc) configure(ctx context.Context, s *session, in *instance) error {
	ctx, cancel := p.h.withCallTimeout(ctx)
	defer cancel()
	return s.base.SetConfig(ctx, in.id, in.value, in.mod)
}

// register keeps an accepted configuration for replay.
func (p *proc) register(in *instance) {
	p.mu.Lock()
	p.instances[in.id] = in
	p.mu.Unlock()
}

// forget drops an instance from the replay set and closes it in the
// plugin.
func (p *proc) forget(ctx context.Context, id string) error {
	p.mu.Lock()
	delete(p.instances, id)
	s := p.sess
	p.mu.Unlock()
	if s == nil {
		return nil // a relaunch will not know it
	}
	ctx, cancel := p.h.withCallTimeout(ctx)
	defer cancel()
	return s.base.CloseInstance(ctx, id)
}

// callFailed words a failed call for a checker's message or a script's
// outcome, and starts the hang probe when the plugin did not answer.
func (p *proc) callFailed(ctx context.Context, s *session, err error, budget time.Duration) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		p.suspectHang(s)
		return fmt.Sprintf("plugin %s did not answer within %s", p.name, roundBudget(budget))
	case ctx.Err() != nil:
		return fmt.Sprintf("call to plugin %s cancelled", p.name)
	}
	// A transport error usually means the process is gone: give go-plugin
	// a moment to reap it, so the message says how it ended.
	wait := 200 * time.Millisecond
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl))
	}
	select {
	case <-s.done:
		return fmt.Sprintf("plugin %s %s; restarting", p.name, s.exitCause())
	case <-time.After(wait):
	}
	return fmt.Sprintf("plugin %s: %v", p.name, err)
}

// roundBudget rounds a call's time budget up for messages ("5s",
// "300ms"): measured at the call, it is a little under the timeout the
// caller set.
func roundBudget(d time.Duration) time.Duration {
	unit := 10 * time.Millisecond
	if d >= time.Second {
		unit = 100 * time.Millisecond
	}
	if r := d % unit; r != 0 {
		d += unit - r
	}
	return d
}

// suspectHang starts the liveness probe of a session whose call timed
// out, unless one runs.
func (p *proc) suspectHang(s *session) {
	if p.h.opts.HangTimeout < 0 || s.exited() {
		return
	}
	p.mu.Lock()
	if p.probing || p.sess != s || p.closed {
		p.mu.Unlock()
		return
	}
	p.probing = true
	p.h.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.h.wg.Done()
		p.probe(s)
		p.mu.Lock()
		p.probing = false
		p.mu.Unlock()
	}()
}

// probe tells a slow check from a dead plugin: it asks for Info, with a
// short deadline, until the plugin answers (the check itself was slow) or
// HangTimeout has passed, when the process is killed and the exit watcher
// relaunches it.
func (p *proc) probe(s *session) {
	const interval = time.Second
	since := time.Now()
	timeout := min(p.h.opts.CallTimeout, interval)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		_, err := s.base.Info(ctx)
		cancel()
		if err == nil || s.exited() {
			return
		}
		silent := time.Since(since)
		if silent >= p.h.opts.HangTimeout {
			p.log.Error("plugin does not answer; killing it", "pid", s.pid, "silent", silent)
			s.killFor(fmt.Sprintf("it did not answer for %s", silent.Round(100*time.Millisecond)))
			return
		}
		p.log.Warn("plugin does not answer", "pid", s.pid, "silent", silent, "error", err)
		select {
		case <-s.done:
			return
		case <-time.After(interval):
		}
	}
}

// close stops the plugin for good: no relaunch, the session ended.
func (p *proc) close() {
	p.mu.Lock()
	p.closed = true
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	launching := p.launching
	p.mu.Unlock()
	if launching != nil {
		<-launching
	}
	p.mu.Lock()
	s := p.sess
	p.sess, p.down = nil, ErrClosed
	p.broadcastLocked()
	p.mu.Unlock()
	if s != nil {
		s.stop()
	}
}

// describe is the plugin's line in `halo plugin list`, launching it if
// needed.
func (p *proc) describe(ctx context.Context) api.PluginInfo {
	out := api.PluginInfo{Name: p.name, Path: p.path}
	var info base.Info
	if s, err := p.session(ctx, false); err == nil {
		info = s.info
	} else {
		out.Error = err.Error()
		p.mu.Lock()
		info = p.info
		p.mu.Unlock()
	}
	out.Kind, out.Version, out.APIVersion = string(info.Kind), info.Version, info.APIVersion
	return out
}

// pid returns the running process's pid, 0 when down; for tests.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sess == nil {
		return 0
	}
	return p.sess.pid
}
