package daemon

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/internal/config"
	"github.com/halo-ha/halo/internal/pki"
	"github.com/halo-ha/halo/internal/replication/wire"
)

// ALPN protocol names of the peer port.
const (
	ALPNStream = "halo-repl-stream/1"
	ALPNResync = "halo-repl-resync/1"
)

// Config is what a daemon needs.
type Config struct {
	Module  *config.Module
	Cluster *config.Cluster
	Node    string
	DataDir string
	TLS     *pki.Material
	Logger  hclog.Logger
	Build   string
}

// Daemon is one module's replication process.
type Daemon struct {
	cfg      Config
	repl     *config.Replication
	peer     string
	stateDir string
	logger   hclog.Logger
	started  time.Time

	journals []*Journal
	tracker  *tracker
	events   *broker
	sessions sessions

	// roleMu serialises role and resync changes; ckptMu checkpoints.
	roleMu, ckptMu sync.Mutex

	mu      sync.Mutex
	role    string
	gen     uint64
	src     *sourceRole
	tgt     *targetRole
	lastErr string
	want    wantedRole // the last role asked for, retried while not held
	// roleErr: why the last role asked for could not be taken ("" once
	// it was).
	roleErr string

	shutdown     chan struct{}
	shutdownOnce sync.Once
}

// New checks the configuration and opens the module's journals.
func New(cfg Config) (*Daemon, error) {
	mod := cfg.Module
	if mod == nil || mod.Replication == nil || len(mod.Replication.Dirs) == 0 {
		return nil, errors.New("module replicates no directory")
	}
	if cfg.Cluster == nil {
		return nil, errors.New("replication needs the cluster file (node addresses)")
	}
	if cfg.TLS == nil {
		return nil, errors.New("replication needs the node's TLS material (run halo cluster init)")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	peer := ""
	for _, n := range mod.Nodes {
		if n != cfg.Node {
			peer = n
		}
	}
	d := &Daemon{
		cfg: cfg, repl: mod.Replication, peer: peer, logger: cfg.Logger,
		stateDir: filepath.Join(cfg.DataDir, mod.Name), started: time.Now(),
		events: newBroker(), role: ctl.RoleNone, shutdown: make(chan struct{}),
	}
	if err := os.MkdirAll(d.stateDir, 0o750); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	for i := range mod.Replication.Dirs {
		j, err := OpenJournal(JournalFile(cfg.DataDir, mod.Name, i), mod.Replication.ZoneSize)
		if err != nil {
			d.closeJournals()
			return nil, err
		}
		if info := j.Info(); info.Damage != nil {
			d.logger.Warn("journal damaged", "dir", mod.Replication.Dirs[i].Path, "damage", info.Damage, "trusted", j.Trusted())
		}
		d.journals = append(d.journals, j)
	}
	d.tracker = newTracker(d.journals)
	return d, nil
}

func (d *Daemon) closeJournals() {
	for _, j := range d.journals {
		_ = j.Close()
	}
}

// addr returns a node's address on the replication network.
func (d *Daemon) addr(node string) (netip.AddrPort, error) {
	n := d.cfg.Cluster.Node(node)
	if n == nil {
		return netip.AddrPort{}, fmt.Errorf("node %s is not in the cluster file", node)
	}
	a, ok := n.Addresses[d.repl.Network]
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("node %s has no address on replication network %s", node, d.repl.Network)
	}
	return netip.AddrPortFrom(a, uint16(d.repl.Port)), nil
}

// Run serves the control socket and the peer port until ctx ends or a
// Shutdown request; it then leaves every role (unmounting) and closes the
// journals.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sock := ctl.SocketPath(d.cfg.DataDir, d.cfg.Module.Name)
	hctx, hcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := (ctl.Client{Socket: sock}).Call(hctx, ctl.Request{Op: ctl.OpHello})
	hcancel()
	if err == nil {
		d.closeJournals()
		return fmt.Errorf("another replication daemon of module %s answers on %s", d.cfg.Module.Name, sock)
	}
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		d.closeJournals()
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		d.closeJournals()
		return fmt.Errorf("restrict %s: %w", sock, err)
	}
	pidFile := ctl.PIDPath(d.cfg.DataDir, d.cfg.Module.Name)
	_ = os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)

	var wg sync.WaitGroup
	wg.Go(func() { d.servePeers(ctx) })
	wg.Go(func() {
		<-ctx.Done()
		ln.Close()
	})
	wg.Go(func() { d.checkpointLoop(ctx) })
	wg.Go(func() { d.retryLoop(ctx) })
	d.logger.Info("replication daemon running", "module", d.cfg.Module.Name, "node", d.cfg.Node, "pid", os.Getpid(), "socket", sock)
	// Captured from the start: a node that serves alone is never told a
	// role (it has no peer), and its writes must be journaled.
	if err := d.setRole(ctx, ctl.RoleNone, "", 0, false); err != nil {
		d.logger.Error("directories not captured yet", "error", err)
	}
	go func() {
		select {
		case <-d.shutdown:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			break
		}
		go d.serveControl(ctx, conn)
	}
	cancel()
	wg.Wait()
	d.roleMu.Lock()
	d.leaveRoles("daemon stopping")
	d.roleMu.Unlock()
	d.events.close()
	d.closeJournals()
	_ = os.Remove(sock)
	_ = os.Remove(pidFile)
	d.logger.Info("replication daemon stopped")
	return nil
}

// serveControl answers requests on one control connection.
func (d *Daemon) serveControl(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), ctl.MaxLine)
	enc := json.NewEncoder(conn)
	for sc.Scan() {
		var req ctl.Request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			_ = enc.Encode(ctl.Response{Error: fmt.Sprintf("decode request: %v", err)})
			return
		}
		if req.Op == ctl.OpSubscribe {
			d.streamEvents(ctx, conn, enc)
			return
		}
		resp := d.handle(ctx, req)
		if err := enc.Encode(resp); err != nil {
			return
		}
	}
}

func (d *Daemon) streamEvents(ctx context.Context, conn net.Conn, enc *json.Encoder) {
	ch, cancel := d.events.subscribe()
	defer cancel()
	// A closed connection is noticed by reading it.
	gone := make(chan struct{})
	go func() {
		var b [1]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				close(gone)
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-gone:
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := enc.Encode(ev); err != nil {
				return
			}
		}
	}
}

func (d *Daemon) handle(ctx context.Context, req ctl.Request) ctl.Response {
	switch req.Op {
	case ctl.OpHello:
		h := &ctl.Hello{Module: d.cfg.Module.Name, Node: d.cfg.Node, PID: os.Getpid(), Version: ctl.ProtocolVersion, Started: d.started, Build: d.cfg.Build}
		for _, dir := range d.repl.Dirs {
			h.DataDirs = append(h.DataDirs, dir.Path)
		}
		return ctl.Response{Hello: h}
	case ctl.OpStatus:
		return ctl.Response{Status: d.status()}
	case ctl.OpRole:
		if err := d.setRole(ctx, req.Role, req.Peer, req.Gen, req.Primary); err != nil {
			return ctl.Response{Error: err.Error()}
		}
		return ctl.Response{}
	case ctl.OpResync:
		if req.Resync == nil {
			return ctl.Response{Error: "resync request without parameters"}
		}
		if err := d.startResync(ctx, *req.Resync, req.Gen); err != nil {
			return ctl.Response{Error: err.Error()}
		}
		return ctl.Response{}
	case ctl.OpVerify:
		rep, err := d.verify(ctx)
		if err != nil {
			return ctl.Response{Error: err.Error()}
		}
		return ctl.Response{Verify: rep}
	case ctl.OpDiff:
		rep, err := d.diff(ctx)
		if err != nil {
			return ctl.Response{Error: err.Error()}
		}
		return ctl.Response{Diff: rep}
	case ctl.OpShutdown:
		d.shutdownOnce.Do(func() { close(d.shutdown) })
		return ctl.Response{}
	}
	return ctl.Response{Error: fmt.Sprintf("unknown request %q", req.Op)}
}

// setRole takes a role. Taking the same role again only updates the
// generation.
func (d *Daemon) setRole(ctx context.Context, role, peer string, gen uint64, primary bool) error {
	d.roleMu.Lock()
	defer d.roleMu.Unlock()
	if peer != "" && peer != d.peer {
		return fmt.Errorf("%s is not the other node of module %s (%s)", peer, d.cfg.Module.Name, d.peer)
	}
	switch role {
	case ctl.RoleSource, ctl.RoleTarget, ctl.RoleNone:
		d.mu.Lock()
		d.want = wantedRole{role: role, peer: peer, primary: primary}
		d.mu.Unlock()
	}
	if role == ctl.RoleSource {
		// Applied after the role below, if it changes.
		defer func() {
			d.mu.Lock()
			src := d.src
			d.mu.Unlock()
			if src != nil {
				src.sink.expectInSync(primary)
			}
		}()
	}
	if gen != 0 {
		d.mu.Lock()
		prevGen, src, cur := d.gen, d.src, d.role
		d.gen = gen
		d.mu.Unlock()
		for _, j := range d.journals {
			j.SetGeneration(gen)
		}
		if role == ctl.RoleSource && cur == ctl.RoleSource && src != nil && prevGen != 0 && prevGen != gen {
			// A source in a new data generation: the cluster went on
			// without the peer (the agent's stop and restart of the role
			// can reach this daemon as this one request). A stream of the
			// old generation, maybe stalled with writes waiting on it,
			// must not carry on: they complete journaled, and the peer
			// resyncs over a new stream.
			d.logger.Info("new data generation on the source: replication stream restarted",
				"from", fmt.Sprintf("%016x", prevGen), "to", fmt.Sprintf("%016x", gen))
			src.detach("new data generation: the peer is not in it")
			src.attach()
		}
	}
	d.mu.Lock()
	cur, mounted := d.role, d.src != nil || d.tgt != nil
	d.mu.Unlock()
	if cur == role && mounted {
		return nil
	}
	d.logger.Info("role change", "from", cur, "to", role, "gen", fmt.Sprintf("%016x", gen))
	var err error
	switch role {
	case ctl.RoleSource:
		d.stopTarget("becoming the source")
		err = d.startSource(ctx, true)
	case ctl.RoleTarget:
		d.stopSource("becoming the target")
		err = d.startTarget(ctx)
	case ctl.RoleNone:
		// No peer: the directories are captured and journaled, so that
		// whatever is written here (a node serving alone, an
		// administrator on a stopped node) is known to the next resync.
		// Only a target's directories are read-only.
		d.stopTarget("no longer a replication target")
		err = d.startSource(ctx, false)
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		d.mu.Lock()
		repeated := d.lastErr == err.Error()
		d.lastErr, d.roleErr = err.Error(), err.Error()
		d.mu.Unlock()
		if !repeated {
			// The agent asks again every second: say it once.
			d.log("error", fmt.Sprintf("cannot take the %s role: %v", role, err))
		}
		return err
	}
	d.mu.Lock()
	d.role = role
	d.lastErr, d.roleErr = "", ""
	d.mu.Unlock()
	return nil
}

// leaveRoles unmounts everything (daemon exit).
func (d *Daemon) leaveRoles(why string) {
	d.stopSource(why)
	d.stopTarget(why)
	d.mu.Lock()
	d.role = ctl.RoleNone
	d.mu.Unlock()
}

func (d *Daemon) setError(err error) {
	d.mu.Lock()
	d.lastErr = err.Error()
	d.mu.Unlock()
}

// log sends an event-log line to the agent and logs it.
func (d *Daemon) log(level, text string) {
	switch level {
	case "error":
		d.logger.Error(text)
	case "warn":
		d.logger.Warn(text)
	default:
		d.logger.Info(text)
	}
	d.events.publish(ctl.Event{Kind: ctl.EvLog, At: time.Now(), Level: level, Text: text})
}

func (d *Daemon) status() *ctl.Status {
	d.mu.Lock()
	st := &ctl.Status{Role: d.role, Peer: d.peer, Mode: string(d.repl.Mode), Link: "down", LastError: d.lastErr}
	src, tgt := d.src, d.tgt
	d.mu.Unlock()
	trusted := true
	for _, j := range d.journals {
		s, size := j.Stats()
		st.Dirty.Paths += s.Paths
		st.Dirty.Zones += s.Zones
		st.Dirty.Bytes += s.Bytes
		st.Dirty.New += s.New
		st.Dirty.Pending += s.Pending
		st.JournalBytes += size
		trusted = trusted && j.Trusted()
	}
	st.Trusted = trusted
	st.NotReady = d.notReady()
	if src != nil {
		src.fillStatus(st)
	}
	if tgt != nil {
		tgt.fillStatus(st)
	}
	return st
}

// ---- peer port ----

// servePeers listens on the replication address (retrying while the
// address is not configured on this host yet) and dispatches connections
// by ALPN.
func (d *Daemon) servePeers(ctx context.Context) {
	addr, err := d.addr(d.cfg.Node)
	if err != nil {
		d.setError(err)
		d.log("error", fmt.Sprintf("replication port not served: %v", err))
		return
	}
	tcfg := d.cfg.TLS.PeerServerConfig(d.peer)
	tcfg.NextProtos = []string{ALPNStream, ALPNResync}
	var ln net.Listener
	for {
		var lc net.ListenConfig
		ln, err = lc.Listen(ctx, "tcp", addr.String())
		if err == nil {
			break
		}
		d.setError(fmt.Errorf("listen on %s: %w", addr, err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go d.servePeer(ctx, tls.Server(c, tcfg))
	}
}

func (d *Daemon) servePeer(ctx context.Context, c *tls.Conn) {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := c.HandshakeContext(hctx)
	cancel()
	if err != nil {
		d.logger.Warn("peer connection refused", "remote", c.RemoteAddr(), "error", err)
		c.Close()
		return
	}
	switch p := c.ConnectionState().NegotiatedProtocol; p {
	case ALPNStream:
		d.mu.Lock()
		tgt := d.tgt
		d.mu.Unlock()
		if tgt == nil {
			d.logger.Warn("replication stream refused: this node is not a replication target", "remote", c.RemoteAddr())
			c.Close()
			return
		}
		tgt.serveStream(ctx, c)
	case ALPNResync:
		d.serveResyncConn(ctx, c)
	default:
		d.logger.Warn("peer connection without a known protocol", "remote", c.RemoteAddr(), "alpn", p)
		c.Close()
	}
}

// dialPeer opens a mutual-TLS connection to the peer's daemon for one
// protocol.
func (d *Daemon) dialPeer(ctx context.Context, proto string) (*tls.Conn, error) {
	addr, err := d.addr(d.peer)
	if err != nil {
		return nil, err
	}
	cfg := d.cfg.TLS.ClientConfig(d.peer)
	cfg.NextProtos = []string{proto}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	td := tls.Dialer{NetDialer: &net.Dialer{KeepAlive: 5 * time.Second}, Config: cfg}
	c, err := td.DialContext(dctx, "tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("connect to %s's replication port %s: %w", d.peer, addr, err)
	}
	tc := c.(*tls.Conn)
	if got := tc.ConnectionState().NegotiatedProtocol; got != proto {
		tc.Close()
		return nil, fmt.Errorf("%s's replication port does not speak %s", d.peer, proto)
	}
	return tc, nil
}

// wireMode converts the configured mode.
func (d *Daemon) wireMode() wire.Mode {
	m, err := wire.ParseMode(string(d.repl.Mode))
	if err != nil {
		return wire.ModeSync
	}
	return m
}

func (d *Daemon) hello() wire.Hello {
	d.mu.Lock()
	defer d.mu.Unlock()
	return wire.Hello{Module: d.cfg.Module.Name, Node: d.cfg.Node, Generation: d.gen, Dirs: uint16(len(d.repl.Dirs))}
}

// checkPeerHello accepts only the module's other node.
func (d *Daemon) checkPeerHello(h wire.Hello) error {
	if h.Node != d.peer {
		return fmt.Errorf("node %q is not %s, the other node of module %s", h.Node, d.peer, d.cfg.Module.Name)
	}
	return nil
}

// ---- events ----

// broker fans events out to the subscribed agents (normally one). A slow
// subscriber loses events rather than stall replication: the agent
// re-reads the status and the machine retries what it waits for.
type broker struct {
	mu     sync.Mutex
	subs   map[chan ctl.Event]struct{}
	closed bool
}

func newBroker() *broker { return &broker{subs: map[chan ctl.Event]struct{}{}} }

func (b *broker) subscribe() (<-chan ctl.Event, func()) {
	ch := make(chan ctl.Event, 256)
	b.mu.Lock()
	if b.closed {
		close(ch)
	} else {
		b.subs[ch] = struct{}{}
	}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		if _, ok := b.subs[ch]; ok {
			delete(b.subs, ch)
			close(ch)
		}
		b.mu.Unlock()
	}
}

func (b *broker) publish(ev ctl.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

func (b *broker) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for ch := range b.subs {
		close(ch)
		delete(b.subs, ch)
	}
}
