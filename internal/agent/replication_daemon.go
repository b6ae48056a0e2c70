package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/core"
	"github.com/halo-ha/halo/core/mirror"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
)

// DaemonExecutable is the halo binary that runs replication daemons
// (`halo replicate`). The halo command sets it; empty in builds that
// cannot replicate files (the agent's own tests), where modules with
// replicated directories fail their resyncs honestly.
var DaemonExecutable string

const (
	// daemonStartTimeout bounds how long a started daemon has to answer on
	// its control socket.
	daemonStartTimeout = 15 * time.Second
	// daemonCallTimeout bounds one control request. A daemon that does
	// not answer (stopped, overloaded) costs the request, never the event
	// loop: requests run on the supervisor's goroutine.
	daemonCallTimeout = 5 * time.Second
	// daemonStatusEvery is how often the daemon's status refreshes the
	// module's replication resources.
	daemonStatusEvery = time.Second
	// daemonRestartBackoff bounds how fast a dying daemon is restarted.
	daemonRestartBackoff = 2 * time.Second
	// roleSwitchWait bounds how long the event loop waits for a target to
	// leave its role: its read-only mounts give way to the capture mounts
	// before the start scripts that follow can write (a failover).
	roleSwitchWait = time.Second
)

// daemonReplication drives a module's replication ctl. The event loop
// only records what the machine wants (role, resync) and wakes the
// supervisor goroutine, which starts or reattaches to the daemon, sends
// it the wanted state, relays its events to the machine, and restarts it
// if it dies. A daemon that outlived a previous agent is reattached, not
// restarted: the applications' writes never notice an agent restart.
type daemonReplication struct {
	r       *moduleRunner
	module  string
	node    string
	dataDir string
	cfgDir  string
	exe     string
	ctl     ctl.Client
	events  *eventLog
	// roleTaken is signalled each time the daemon took a role.
	roleTaken chan struct{}
	logger    hclog.Logger
	post      func(core.Event)
	kick      chan struct{}

	mu   sync.Mutex
	want daemonWant
	// sent is what the current daemon instance was last told.
	sent     daemonWant
	instance int // pid of the daemon the state was sent to
	// resyncRunning: the machine waits for the result of this resync.
	resyncRunning uint64
	// ready is the readiness last posted to the machine (readyPosted:
	// one was).
	ready       string
	readyPosted bool
}

type daemonWant struct {
	role    string
	peer    string
	gen     uint64
	primary bool // the module is PRIM here: the peer must be in sync
	resync  *ctl.ResyncRequest
}

func newDaemonReplication(r *moduleRunner, dataDir, cfgDir string) *daemonReplication {
	// The daemon runs from / : relative paths would name other files.
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	if abs, err := filepath.Abs(cfgDir); err == nil {
		cfgDir = abs
	}
	d := &daemonReplication{
		r: r, module: r.mod.Name, node: r.node, dataDir: dataDir, cfgDir: cfgDir, exe: DaemonExecutable,
		ctl:    ctl.Client{Socket: ctl.SocketPath(dataDir, r.mod.Name)},
		events: r.events, logger: r.logger.Named("replication"), post: r.posted.post,
		kick: make(chan struct{}, 1), roleTaken: make(chan struct{}, 1),
		// No role until the machine asks for one: a daemon that outlived
		// the previous agent keeps serving as it was.
		want: daemonWant{},
	}
	go d.supervise(context.Background())
	return d
}

func (d *daemonReplication) currentGen() uint64 {
	if d.r.mirror == nil {
		return 0
	}
	return d.r.mirror.m.Status().Gen.Current
}

func (d *daemonReplication) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Start implements Replication.
func (d *daemonReplication) Start(role mirror.ReplRole, peer string) {
	d.setWant(role.String(), peer)
}

// Stop implements Replication.
func (d *daemonReplication) Stop() { d.setWant(ctl.RoleNone, "") }

// setWant records the role the machine wants and wakes the supervisor.
// A target leaving its role is waited for (at most roleSwitchWait): the
// actions that follow may start the application, which must find its
// directories writable and captured.
func (d *daemonReplication) setWant(role, peer string) {
	d.mu.Lock()
	leavingTarget := d.sent.role == ctl.RoleTarget && role != ctl.RoleTarget
	d.want.role, d.want.peer, d.want.gen = role, peer, d.currentGen()
	if role != ctl.RoleSource {
		d.want.primary = false
	}
	if role != ctl.RoleTarget {
		d.want.resync = nil
	}
	d.mu.Unlock()
	select {
	case <-d.roleTaken:
	default:
	}
	d.wake()
	if leavingTarget {
		select {
		case <-d.roleTaken:
		case <-time.After(roleSwitchWait):
			d.logger.Warn("replication daemon slow to leave the target role", "role", role)
		}
	}
}

// Resync implements Replication.
func (d *daemonReplication) Resync(a mirror.StartResync) {
	d.mu.Lock()
	d.want.resync = &ctl.ResyncRequest{
		ID: a.ID, Peer: a.Peer, Full: a.Full, Quarantine: a.Quarantine,
		Source: a.Source.Clone(), Since: a.Since,
	}
	d.want.gen = d.currentGen()
	d.resyncRunning = a.ID
	d.mu.Unlock()
	d.wake()
}

// supervise keeps a daemon running and told what the machine wants.
func (d *daemonReplication) supervise(ctx context.Context) {
	var lastStart time.Time
	for ctx.Err() == nil {
		hello, err := d.attach(ctx, &lastStart)
		if err != nil {
			d.events.add("log", "error", fmt.Sprintf("replication daemon for %s unavailable: %v", d.module, err))
			d.postReady(fmt.Sprintf("replication daemon unavailable: %v", err))
			d.failResync(fmt.Sprintf("replication daemon unavailable: %v", err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(daemonRestartBackoff):
			}
			continue
		}
		d.serve(ctx, hello)
		// The daemon died (or its socket broke): whatever resync ran in it
		// is lost; the machine retries after its ResyncFailed.
		d.failResync(fmt.Sprintf("replication daemon (pid %d) stopped", hello.PID))
	}
}

// attach finds the running daemon or starts one.
func (d *daemonReplication) attach(ctx context.Context, lastStart *time.Time) (*ctl.Hello, error) {
	if h, err := d.hello(ctx); err == nil {
		d.logger.Info("reattached to running replication daemon", "pid", h.PID, "since", h.Started)
		return h, nil
	}
	if d.exe == "" {
		return nil, errors.New("no halo executable to run it")
	}
	if wait := daemonRestartBackoff - time.Since(*lastStart); wait > 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
	*lastStart = time.Now()
	pid, err := d.startDaemon()
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(daemonStartTimeout)
	for {
		h, err := d.hello(ctx)
		if err == nil {
			d.events.add("log", "info", fmt.Sprintf("replication daemon started (pid %d)", h.PID))
			return h, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return nil, fmt.Errorf("daemon pid %d does not answer on %s: %w (see %s)", pid, d.ctl.Socket, err, d.logPath())
		}
		if syscall.Kill(pid, 0) != nil {
			return nil, fmt.Errorf("daemon pid %d exited at start (see %s)", pid, d.logPath())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *daemonReplication) logPath() string {
	return filepath.Join(d.dataDir, d.module, "repl.log")
}

// startDaemon starts `halo replicate` in its own session, so that it
// outlives this agent: it is reattached by the next one.
func (d *daemonReplication) startDaemon() (int, error) {
	logf, err := os.OpenFile(d.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return 0, fmt.Errorf("open daemon log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(d.exe, "replicate", "--module", d.module, "--config-dir", d.cfgDir,
		"--data-dir", d.dataDir, "--node", d.node)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start replication daemon: %w", err)
	}
	pid := cmd.Process.Pid
	// Reap it if it exits while this agent runs; if the agent goes first,
	// init (or the subreaper) inherits it.
	go func() { _ = cmd.Wait() }()
	return pid, nil
}

func (d *daemonReplication) hello(ctx context.Context) (*ctl.Hello, error) {
	ctx, cancel := context.WithTimeout(ctx, daemonCallTimeout)
	defer cancel()
	resp, err := d.ctl.Call(ctx, ctl.Request{Op: ctl.OpHello})
	if err != nil {
		return nil, err
	}
	h := resp.Hello
	if h == nil || h.Module != d.module || h.Node != d.node {
		return nil, fmt.Errorf("%s answers for another module or node (%+v)", d.ctl.Socket, h)
	}
	if h.Version != ctl.ProtocolVersion {
		return nil, fmt.Errorf("daemon pid %d speaks control protocol %d, this agent %d", h.PID, h.Version, ctl.ProtocolVersion)
	}
	return h, nil
}

// serve relays the daemon's events and keeps it told what the machine
// wants, until the daemon goes away.
func (d *daemonReplication) serve(ctx context.Context, h *ctl.Hello) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.mu.Lock()
	if d.instance != h.PID {
		// A new daemon knows nothing: tell it everything again.
		d.sent, d.instance = daemonWant{}, h.PID
	}
	d.mu.Unlock()
	subDone := make(chan error, 1)
	go func() { subDone <- d.ctl.Subscribe(ctx, d.onEvent) }()
	tick := time.NewTicker(daemonStatusEvery)
	defer tick.Stop()
	d.push(ctx)
	d.refreshStatus(ctx) // the machine waits for the readiness
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-subDone:
			d.logger.Warn("replication daemon event stream ended", "error", err)
			return
		case <-d.kick:
			d.push(ctx)
			d.refreshStatus(ctx)
		case <-tick.C:
			d.notePrimary()
			d.push(ctx)
			d.refreshStatus(ctx)
		}
	}
}

// notePrimary records whether the module is PRIM here: a source daemon
// then holds writes if its peer is not in sync (see ctl.Request.Primary).
// The machine enters PRIM only once the peer is in sync, so learning it
// within a tick leaves no window.
func (d *daemonReplication) notePrimary() {
	d.r.mu.Lock()
	prim := d.r.status.State == core.Prim.String()
	d.r.mu.Unlock()
	d.mu.Lock()
	d.want.primary = prim && d.want.role == ctl.RoleSource
	d.mu.Unlock()
}

// push sends the wanted role and resync the daemon has not been told.
func (d *daemonReplication) push(ctx context.Context) {
	d.mu.Lock()
	want, sent := d.want, d.sent
	d.mu.Unlock()
	if want.role != "" && (want.role != sent.role || want.peer != sent.peer || want.gen != sent.gen || want.primary != sent.primary) {
		cctx, cancel := context.WithTimeout(ctx, daemonCallTimeout)
		_, err := d.ctl.Call(cctx, ctl.Request{Op: ctl.OpRole, Role: want.role, Peer: want.peer, Gen: want.gen, Primary: want.primary})
		cancel()
		if err != nil {
			d.logger.Warn("replication role not taken", "role", want.role, "error", err)
			return
		}
		d.mu.Lock()
		d.sent.role, d.sent.peer, d.sent.gen, d.sent.primary = want.role, want.peer, want.gen, want.primary
		d.mu.Unlock()
		select {
		case d.roleTaken <- struct{}{}:
		default:
		}
	}
	if want.resync != nil && (sent.resync == nil || sent.resync.ID != want.resync.ID) {
		cctx, cancel := context.WithTimeout(ctx, daemonCallTimeout)
		_, err := d.ctl.Call(cctx, ctl.Request{Op: ctl.OpResync, Gen: want.gen, Resync: want.resync})
		cancel()
		if err != nil {
			var re *ctl.RemoteError
			if errors.As(err, &re) {
				// Refused outright: the machine retries after ResyncFailed.
				d.mu.Lock()
				d.sent.resync = want.resync
				d.mu.Unlock()
				d.post(mirror.ResyncFailed{At: time.Now(), ID: want.resync.ID, Reason: re.Msg})
				return
			}
			d.logger.Warn("resync request not delivered", "id", want.resync.ID, "error", err)
			return
		}
		d.mu.Lock()
		d.sent.resync = want.resync
		d.mu.Unlock()
	}
}

// failResync answers a resync the machine waits for that can no longer
// finish.
func (d *daemonReplication) failResync(reason string) {
	d.mu.Lock()
	id := d.resyncRunning
	d.resyncRunning = 0
	d.sent = daemonWant{}
	// The machine asks again (with a new ID) after the failure.
	d.want.resync = nil
	d.mu.Unlock()
	if id != 0 {
		d.post(mirror.ResyncFailed{At: time.Now(), ID: id, Reason: reason})
	}
}

func (d *daemonReplication) onEvent(ev ctl.Event) {
	switch ev.Kind {
	case ctl.EvInSync:
		d.post(mirror.ReplInSync{At: ev.At})
	case ctl.EvStalled:
		d.post(mirror.ReplStalled{At: ev.At, Since: ev.Since})
	case ctl.EvResyncProgress:
		d.post(mirror.ResyncProgress{At: ev.At, ID: ev.ID, Done: ev.Done, Total: ev.Total})
	case ctl.EvResyncDone:
		d.clearResync(ev.ID)
		d.post(mirror.ResyncDone{At: ev.At, ID: ev.ID})
	case ctl.EvResyncFailed:
		d.clearResync(ev.ID)
		d.post(mirror.ResyncFailed{At: ev.At, ID: ev.ID, Reason: ev.Reason})
	case ctl.EvLog:
		lvl := ev.Level
		if lvl == "" {
			lvl = "info"
		}
		d.events.add("log", lvl, ev.Text)
	default:
		d.logger.Warn("unknown replication daemon event", "kind", ev.Kind)
	}
}

func (d *daemonReplication) clearResync(id uint64) {
	d.mu.Lock()
	if d.resyncRunning == id {
		d.resyncRunning = 0
	}
	d.mu.Unlock()
}

// refreshStatus shows the daemon's view in the module's resources.
func (d *daemonReplication) refreshStatus(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, daemonCallTimeout)
	defer cancel()
	resp, err := d.ctl.Call(ctx, ctl.Request{Op: ctl.OpStatus})
	d.r.noteReplication(resp.Status, err)
	if err != nil || resp.Status == nil {
		d.putResources(map[string][2]string{"replication.link": {"unknown", fmt.Sprintf("daemon does not answer: %v", err)}})
		return
	}
	d.putResources(statusResources(resp.Status))
	d.postReady(resp.Status.NotReady)
	d.correctRole(resp.Status.Role)
}

// postReady tells the machine whether the replicated directories can be
// used here (mirror.ReplReady), when that changed.
func (d *daemonReplication) postReady(problem string) {
	d.mu.Lock()
	changed := !d.readyPosted || d.ready != problem
	d.ready, d.readyPosted = problem, true
	d.mu.Unlock()
	if !changed {
		return
	}
	// The machine logs the change.
	d.post(mirror.ReplReady{At: time.Now(), Problem: problem})
}

// correctRole takes a serving node's directories out of the target role.
// A machine that starts (agent restart) believes no role is held, so a
// daemon that was a target and outlived the previous agent would stay
// read-only under an application that now runs here.
func (d *daemonReplication) correctRole(daemonRole string) {
	d.r.mu.Lock()
	state := d.r.status.State
	d.r.mu.Unlock()
	if daemonRole != ctl.RoleTarget || (state != core.Alone.String() && state != core.Prim.String()) {
		return
	}
	d.mu.Lock()
	if d.want.role == ctl.RoleTarget {
		d.mu.Unlock()
		return
	}
	if d.want.role == "" {
		d.want.role = ctl.RoleNone
	}
	d.sent.role = "" // push again even if it was sent
	d.mu.Unlock()
	d.events.add("log", "warn", fmt.Sprintf("replication daemon still a target while %s is %s: taking its directories out of read-only", d.node, state))
	d.wake()
}

// statusResources turns a daemon status into resources: value and message.
func statusResources(s *ctl.Status) map[string][2]string {
	res := map[string][2]string{
		"replication.mode":     {s.Mode, ""},
		"replication.link":     {s.Link, s.LastError},
		"replication.lag":      {s.Lag.Round(time.Microsecond).String(), fmt.Sprintf("%d operations in flight", s.InFlight)},
		"replication.rate":     {fmt.Sprintf("%.0f B/s", s.BytesPerSec), fmt.Sprintf("%d operations, %d bytes sent", s.OpsSent, s.BytesSent)},
		"replication.journal":  {fmt.Sprintf("%d dirty zones, %d paths", s.Dirty.Zones, s.Dirty.Paths), fmt.Sprintf("journal %d bytes, trusted %v", s.JournalBytes, s.Trusted)},
		"replication.progress": {"", ""},
	}
	if s.MaxLag > 0 {
		// async: the honest state of what a failover would lose now.
		v, msg := "no", fmt.Sprintf("async mode, max_lag %v: every acknowledged write is on the peer", s.MaxLag)
		if s.DataLossPossible {
			v = "yes"
			msg = fmt.Sprintf("async mode, max_lag %v: %d acknowledged operations not on the peer yet, the oldest %v old", s.MaxLag, s.InFlight, s.Lag.Round(time.Millisecond))
		}
		res["replication.data_loss_possible"] = [2]string{v, msg}
	}
	if rs := s.Resync; rs != nil {
		v := fmt.Sprintf("%d/%d bytes", rs.Done, rs.Total)
		msg := fmt.Sprintf("resync %d (%s) at %.0f B/s, ETA %v", rs.ID, map[bool]string{true: "full", false: "incremental"}[rs.Full], rs.BytesPerSec, rs.ETA.Round(time.Second))
		switch {
		case rs.Error != "":
			msg = fmt.Sprintf("resync %d failed: %s", rs.ID, rs.Error)
		case !rs.Finished.IsZero():
			msg = fmt.Sprintf("resync %d done in %v, %d bytes sent", rs.ID, rs.Finished.Sub(rs.Started).Round(time.Millisecond), rs.Sent)
		}
		res["replication.progress"] = [2]string{v, msg}
	} else {
		delete(res, "replication.progress")
	}
	return res
}

func (d *daemonReplication) putResources(res map[string][2]string) {
	d.r.mu.Lock()
	defer d.r.mu.Unlock()
	for k, v := range res {
		d.r.putResourceLocked(k, v[0], v[1])
	}
}
