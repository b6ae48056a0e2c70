package daemon

import (
	"context"
	"errors"
	"fmt"
	"github.com/halo-ha/halo/internal/replication/daemon/ctl"
	"net"
	"os"
	"sync"
	"time"

	"github.com/halo-ha/halo/internal/replication/apply"
	"github.com/halo-ha/halo/internal/replication/capture"
	"github.com/halo-ha/halo/internal/replication/op"
	"github.com/halo-ha/halo/internal/replication/wire"
)

// targetRole is the secondary's side: the replicated directories opened
// underneath, mounted read-only for applications, and the stream and
// resyncs applied to the directories underneath.
type targetRole struct {
	d      *Daemon
	tree   *apply.Tree
	under  []*os.File // the directories, opened before mounting
	mounts []*capture.FS
	apply  *journaledTree

	mu sync.Mutex
	// stream is the running receiver (nil when none): a new stream from
	// the source replaces it.
	stream *targetStream
	// inSync: a resync finished on the current stream, which has not
	// ended since; syncedGen is the generation it brought.
	inSync    bool
	syncedGen uint64
	resync    *resyncRun
	// forceFull: an incremental resync failed; the next one is full.
	forceFull bool
	last      *ctl.ResyncStatus
	rate      rateMeter
	applied   uint64 // bytes of data applied from streams, for the rate
}

type targetStream struct {
	cancel context.CancelFunc
	done   chan struct{}
	source wire.Hello
	hello  bool
	err    error
}

func (d *Daemon) startTarget(ctx context.Context) error {
	d.mu.Lock()
	have := d.tgt != nil
	d.mu.Unlock()
	if have {
		return nil
	}
	t := &targetRole{d: d}
	var paths []string
	for _, dir := range d.repl.Dirs {
		if err := releaseStaleMount(dir.Path); err != nil {
			return err
		}
		paths = append(paths, dir.Path)
	}
	// A resync into the mount point of an absent data disk would fill
	// the wrong filesystem.
	if err := d.checkMustExist("receive replication into"); err != nil {
		return err
	}
	tree, err := apply.Open(paths...)
	if err != nil {
		return fmt.Errorf("open replicated directories: %w", err)
	}
	t.tree = tree
	t.apply = &journaledTree{tree: tree, tracker: d.tracker, t: t}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.close()
			return fmt.Errorf("open %s: %w", p, err)
		}
		t.under = append(t.under, f)
	}
	for i, dir := range d.repl.Dirs {
		fs, err := capture.Mount(capture.Options{Dir: dir.Path, DirIndex: uint16(i), ReadOnly: true, Logger: d.logger.Named("capture")})
		if err != nil {
			t.close()
			return fmt.Errorf("mount %s read-only: %w", dir.Path, err)
		}
		t.mounts = append(t.mounts, fs)
	}
	d.mu.Lock()
	d.tgt = t
	d.mu.Unlock()
	d.log("info", fmt.Sprintf("%s read-only for applications: receiving replication from %s", dirList(d), d.peer))
	return nil
}

// underPath is a path that reaches directory i underneath its mount.
func (t *targetRole) underPath(i int) string { return fdPath(t.under[i]) }

func fdPath(f *os.File) string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd()) }

func (t *targetRole) close() {
	for _, fs := range t.mounts {
		if err := fs.Unmount(); err != nil {
			_ = lazyUnmount(fs.Dir())
		}
	}
	t.mounts = nil
	for _, f := range t.under {
		f.Close()
	}
	t.under = nil
	if t.tree != nil {
		_ = t.tree.Close()
	}
}

// stopTarget leaves the target role entirely.
func (d *Daemon) stopTarget(why string) {
	d.mu.Lock()
	t := d.tgt
	d.tgt = nil
	d.mu.Unlock()
	if t == nil {
		return
	}
	t.stopStream(why)
	t.cancelResync(why)
	t.close()
	d.log("info", fmt.Sprintf("target role left: %s", why))
}

func (t *targetRole) stopStream(why string) {
	t.mu.Lock()
	s := t.stream
	t.stream, t.inSync = nil, false
	t.mu.Unlock()
	if s != nil {
		s.cancel()
		<-s.done
	}
}

// serveStream applies a stream from the source; it replaces the stream
// running (the source reconnected).
func (t *targetRole) serveStream(ctx context.Context, conn net.Conn) {
	d := t.d
	ctx, cancel := context.WithCancel(ctx)
	s := &targetStream{cancel: cancel, done: make(chan struct{})}
	t.mu.Lock()
	old := t.stream
	t.stream, t.inSync = s, false
	t.mu.Unlock()
	if old != nil {
		old.cancel()
		<-old.done
	}
	defer close(s.done)
	defer conn.Close()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	err := wire.Serve(ctx, conn, t.apply, wire.ReceiverOptions{
		Hello: d.hello(), CheckPeer: d.checkPeerHello,
		OnHello: func(h wire.Hello) {
			t.mu.Lock()
			s.source, s.hello = h, true
			t.mu.Unlock()
		},
		Logger: slogFrom(d.logger.Named("stream")),
	})
	t.mu.Lock()
	s.err = err
	wasSynced := t.stream == s && t.inSync
	if t.stream == s {
		t.stream, t.inSync = nil, false
	}
	t.mu.Unlock()
	if wasSynced && ctx.Err() == nil {
		d.log("warn", fmt.Sprintf("replication stream from %s ended: %v; a resync is needed", d.peer, err))
	}
	cancel()
}

// liveStream returns the current stream if it is open.
func (t *targetRole) liveStream() *targetStream {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stream
	if s == nil {
		return nil
	}
	select {
	case <-s.done:
		return nil
	default:
		return s
	}
}

func (t *targetRole) fillStatus(st *ctl.Status) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.resync != nil:
		st.Link = "resync"
	case t.stream != nil && t.inSync:
		st.Link = "in sync"
	case t.stream != nil:
		st.Link = "connected (not in sync)"
	default:
		st.Link = "down"
	}
	st.PeerInSync = t.inSync
	st.BytesPerSec = t.rate.rate(t.applied)
	if t.resync != nil {
		rs := t.resync.status()
		st.Resync = &rs
	} else if t.last != nil {
		rs := *t.last
		st.Resync = &rs
	}
}

// journaledTree applies operations to the tree underneath, journaling each
// before it changes anything (core/journal: each node journals the
// changes made to its own tree, a resync target included). It is the
// stream's wire.Target and a resync's Applier.
type journaledTree struct {
	tree    *apply.Tree
	tracker *tracker
	t       *targetRole
}

var _ wire.Target = (*journaledTree)(nil)

func (j *journaledTree) journal(o *op.Op) (OpJournal, error) {
	if int(o.Dir) >= len(j.tracker.journals) {
		return OpJournal{}, fmt.Errorf("operation on directory %d: the module replicates %d", o.Dir, len(j.tracker.journals))
	}
	return j.tracker.journalFor(int(o.Dir)), nil
}

// ApplyDeferred implements wire.Target.
func (j *journaledTree) ApplyDeferred(o op.Op, durable bool) error {
	jn, err := j.journal(&o)
	if err != nil {
		return err
	}
	tk, err := jn.Mark(o)
	if err != nil {
		return fmt.Errorf("journal %s of %s: %w", o.Kind, o.Path, err)
	}
	err = j.tree.ApplyDeferred(o, durable)
	jn.Done(tk, err == nil)
	if err == nil && o.Kind == op.Write {
		j.t.mu.Lock()
		j.t.applied += uint64(len(o.Data))
		j.t.mu.Unlock()
	}
	return err
}

// Flush implements wire.Target.
func (j *journaledTree) Flush() error { return j.tree.Flush() }

// SyncAll implements wire.Target.
func (j *journaledTree) SyncAll() error { return j.tree.SyncAll() }

// Apply implements resync.Applier.
func (j *journaledTree) Apply(o *op.Op) error {
	jn, err := j.journal(o)
	if err != nil {
		return err
	}
	tk, err := jn.Mark(*o)
	if err != nil {
		return fmt.Errorf("journal %s of %s: %w", o.Kind, o.Path, err)
	}
	err = j.tree.Apply(*o)
	jn.Done(tk, err == nil)
	return err
}

// errNotTarget refuses a resync on a node that is not a target.
var errNotTarget = errors.New("this node is not a replication target (role target first)")

// syncedWait bounds how long a finished resync waits for the live stream.
const syncedWait = 10 * time.Second
