package resync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/op"
)

// hello is the target's opening message.
type hello struct {
	Version   int            `json:"version"`
	Kind      RequestKind    `json:"kind"`
	Since     uint64         `json:"since,omitempty"`
	ZoneSize  int64          `json:"zone_size,omitempty"`
	MapFrames int            `json:"map_frames,omitempty"`
	HasMap    bool           `json:"has_map,omitempty"`
	Compare   CompareOptions `json:"compare"`
	Rate      float64        `json:"rate,omitempty"`
}

// helloOK is the source's answer.
type helloOK struct {
	Error     string `json:"error,omitempty"`
	BlockSize int64  `json:"block_size"`
}

// doneOK is the target's answer to the result.
type doneOK struct {
	Quarantine       string `json:"quarantine,omitempty"`
	QuarantinedFiles int    `json:"quarantined_files,omitempty"`
	Error            string `json:"error,omitempty"`
}

// opFailure is an op the target could not apply.
type opFailure struct {
	Kind   op.Kind
	Path   string
	Target string
	Errno  uint32 // 0 when the error carries none
	Msg    string
}

// RunTarget runs the target end of a session: it sends the request, serves
// its tree to the source and applies what the source sends, until the
// source reports the result.
func RunTarget(ctx context.Context, conns []Conn, cfg TargetConfig) (Result, error) {
	res, err := runTarget(ctx, conns, cfg)
	if err != nil {
		// Once our context is cancelled, the other end closing the
		// connections (it was cancelled too) is a consequence, not the
		// cause: report the cancellation.
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (then: %v)", cerr, err)
		}
		return Result{}, fmt.Errorf("resync target %s: %w", cfg.Root, err)
	}
	return res, nil
}

type target struct {
	cfg    TargetConfig
	rootFD int
	fcs    []*frameConn
	q      *quarantine // full split-brain resync: copies before each change
	sent   atomic.Int64
	recv   atomic.Int64

	mu     sync.Mutex
	blocks map[string][]Sum // block hashes of files the last listings hashed
	bsize  int64
}

func runTarget(ctx context.Context, conns []Conn, cfg TargetConfig) (Result, error) {
	req := cfg.Request
	switch {
	case len(conns) == 0 || len(conns) > 1<<15:
		return Result{}, fmt.Errorf("%d connections", len(conns))
	case req.Kind < RequestFull || req.Kind > RequestEstimate:
		return Result{}, fmt.Errorf("unknown request kind %d", req.Kind)
	case (req.Kind == RequestFull || req.Kind == RequestIncremental) && cfg.Apply == nil:
		return Result{}, errors.New("a resync needs an Applier")
	case req.Kind == RequestIncremental && (req.Map == nil || !req.Map.Covers(req.Since)):
		return Result{}, fmt.Errorf("incremental resync: the target's map does not cover generation %016x", req.Since)
	}
	rootFD, err := unix.Open(cfg.Root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}, fmt.Errorf("open tree: %w", err)
	}
	defer unix.Close(rootFD)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The session owns its connections: closing them unblocks every read
	// when it is cancelled, and ends it for the peer when it is over.
	defer closeAll(conns)
	stop := context.AfterFunc(ctx, func() { closeAll(conns) })
	defer stop()

	t := &target{cfg: cfg, rootFD: rootFD, blocks: map[string][]Sum{}}
	if err := preambles(conns); err != nil {
		return Result{}, ctxErr(ctx, err)
	}
	for _, c := range conns {
		t.fcs = append(t.fcs, newFrameConn(c, nil, &t.sent, &t.recv))
	}
	if err := t.hello(ctx); err != nil {
		return Result{}, ctxErr(ctx, err)
	}
	if req.Quarantine != "" {
		t.q = newQuarantine(cfg.Root, rootFD, req.Quarantine)
		if req.Kind == RequestIncremental {
			// Before anything is overwritten: what this node changed.
			if err := t.q.saveChanged(req.Map, cfg.Excludes); err != nil {
				t.abort(ctx, err)
				return Result{}, err
			}
		}
	}

	var res Result
	var wg sync.WaitGroup
	errs := make([]error, len(t.fcs))
	for i := range t.fcs {
		wg.Go(func() {
			r, err := t.serve(ctx, i)
			if err != nil {
				errs[i] = err
				cancel() // unblocks the other connections
				return
			}
			if i == 0 {
				res = r
			}
		})
	}
	wg.Wait()
	if err := firstError(ctx, errs); err != nil {
		return Result{}, err
	}
	return res, nil
}

// firstError prefers a real failure over the cancellations it caused.
func firstError(ctx context.Context, errs []error) error {
	var canceled error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled) || errors.Is(err, netErrClosed) || errors.Is(err, io.EOF):
			if canceled == nil {
				canceled = err
			}
		default:
			return err
		}
	}
	if canceled != nil {
		return ctxErr(ctx, canceled)
	}
	return nil
}

func closeAll(conns []Conn) {
	for _, c := range conns {
		c.Close()
	}
}

func preambles(conns []Conn) error {
	errs := make(chan error, len(conns))
	for i, c := range conns {
		go func() { errs <- writePreamble(c, i, len(conns)) }()
	}
	for i, c := range conns {
		if err := readPreamble(c, i, len(conns)); err != nil {
			return err
		}
	}
	for range conns {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// hello sends the request (and the map) and reads the source's answer.
func (t *target) hello(ctx context.Context) error {
	req := t.cfg.Request
	h := hello{Version: ProtocolVersion, Kind: req.Kind, Since: req.Since, Compare: req.Compare, Rate: req.Rate}
	var frames [][]byte
	if req.Map != nil && (req.Kind == RequestIncremental || req.Kind == RequestEstimate) {
		h.HasMap, h.ZoneSize, h.Since = true, req.Map.ZoneSize(), req.Map.Base()
		if req.Kind == RequestIncremental {
			h.Since = req.Since
		}
		var cur []byte
		for _, r := range journal.Snapshot(req.Map) {
			var err error
			if cur, err = journal.Append(cur, r); err != nil {
				return fmt.Errorf("encode zone map: %w", err)
			}
			if len(cur) >= batchBytes {
				frames, cur = append(frames, cur), nil
			}
		}
		if len(cur) > 0 {
			frames = append(frames, cur)
		}
		h.MapFrames = len(frames)
	}
	b, _ := json.Marshal(h)
	fc := t.fcs[0]
	if err := fc.writeFrame(ctx, msgHello, b); err != nil {
		return err
	}
	for _, f := range frames {
		if err := fc.writeFrame(ctx, msgMap, f); err != nil {
			return err
		}
	}
	if err := fc.flush(); err != nil {
		return err
	}
	typ, p, err := fc.readFrame()
	if err != nil {
		return fmt.Errorf("read the source's answer: %w", err)
	}
	switch typ {
	case msgHelloOK:
	case msgAbort:
		return fmt.Errorf("source refused: %s", p)
	default:
		return fmt.Errorf("%w: frame type %d instead of the answer to hello", ErrProtocol, typ)
	}
	var ok helloOK
	if err := json.Unmarshal(p, &ok); err != nil {
		return fmt.Errorf("%w: answer to hello: %v", ErrProtocol, err)
	}
	if ok.Error != "" {
		return fmt.Errorf("source refused: %s", ok.Error)
	}
	if ok.BlockSize <= 0 || ok.BlockSize > 1<<30 {
		return fmt.Errorf("%w: block size %d", ErrProtocol, ok.BlockSize)
	}
	t.bsize = ok.BlockSize
	return nil
}

func (t *target) abort(ctx context.Context, err error) {
	for _, fc := range t.fcs {
		_ = fc.send(ctx, msgAbort, []byte(err.Error()))
	}
}

// serve answers one connection's requests until the result arrives.
func (t *target) serve(ctx context.Context, idx int) (Result, error) {
	fc := t.fcs[idx]
	var failures []opFailure
	var scratch enc
	later := false // past the first pass
	for {
		typ, p, err := fc.readFrame()
		if err != nil {
			return Result{}, ctxErr(ctx, fmt.Errorf("connection %d: %w", idx, err))
		}
		switch typ {
		case msgList:
			err = t.list(ctx, fc, p)
		case msgHashes:
			err = t.hashes(ctx, fc, p, &scratch)
		case msgOps:
			failures, err = t.apply(p, failures, later)
		case msgPass:
			// What later passes change, the first pass made identical to
			// the source: nothing of this node's is lost there.
			later = true
		case msgBarrier:
			scratch.b = scratch.b[:0]
			scratch.uv(uint64(len(failures)))
			for _, f := range failures {
				scratch.u8(byte(f.Kind))
				scratch.str(f.Path)
				scratch.str(f.Target)
				scratch.uv(uint64(f.Errno))
				scratch.str(f.Msg)
			}
			failures = failures[:0]
			err = fc.send(ctx, msgBarrierOK, scratch.b)
		case msgProgress:
			var pr Progress
			if err = json.Unmarshal(p, &pr); err != nil {
				err = fmt.Errorf("%w: progress: %v", ErrProtocol, err)
			} else if t.cfg.Progress != nil {
				t.cfg.Progress(pr)
			}
		case msgDone:
			var res Result
			if err := json.Unmarshal(p, &res); err != nil {
				return Result{}, fmt.Errorf("%w: result: %v", ErrProtocol, err)
			}
			if idx != 0 {
				return res, nil
			}
			var ok doneOK
			if t.q != nil {
				dir, n, err := t.q.finish()
				if err != nil {
					ok.Error = err.Error()
				}
				res.Quarantine, res.QuarantinedFiles = dir, n
				ok.Quarantine, ok.QuarantinedFiles = dir, n
			}
			b, _ := json.Marshal(ok)
			if err := fc.send(ctx, msgDoneOK, b); err != nil {
				return Result{}, err
			}
			if ok.Error != "" {
				return Result{}, errors.New(ok.Error)
			}
			return res, nil
		case msgAbort:
			return Result{}, fmt.Errorf("source gave up: %s", p)
		default:
			err = fmt.Errorf("%w: unexpected frame type %d", ErrProtocol, typ)
		}
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				_ = fc.send(ctx, msgAbort, []byte(err.Error()))
			}
			return Result{}, ctxErr(ctx, err)
		}
	}
}

// list answers a listing request: prefix, single, hash, block size.
func (t *target) list(ctx context.Context, fc *frameConn, p []byte) error {
	d := dec{b: p}
	prefix := d.str()
	single := d.u8() == 1
	hash := d.u8() == 1
	bs := d.sv()
	if err := d.end("list request"); err != nil {
		return err
	}
	if err := checkRel(prefix); err != nil {
		return fmt.Errorf("%w: list %v", ErrProtocol, err)
	}
	if hash && bs != t.bsize {
		return fmt.Errorf("%w: listing with blocks of %d bytes, session uses %d", ErrProtocol, bs, t.bsize)
	}
	tree, err := Scan(ctx, t.cfg.Root, ScanOptions{Prefix: prefix, Single: single, Hash: hash, BlockSize: t.bsize, Excludes: t.cfg.Excludes, keepBlocks: hash})
	if err != nil {
		var e enc
		e.str(err.Error())
		return fc.send(ctx, msgListEnd, e.b)
	}
	if hash {
		t.mu.Lock()
		for i := range tree.Entries {
			if b := tree.Entries[i].blocks; b != nil {
				t.blocks[tree.Entries[i].Path] = b
			}
		}
		t.mu.Unlock()
	}
	var e enc
	prev := ""
	for i := range tree.Entries {
		e.entry(&tree.Entries[i], prev)
		prev = tree.Entries[i].Path
		if len(e.b) >= batchBytes {
			if err := fc.writeFrame(ctx, msgEntries, e.b); err != nil {
				return err
			}
			e.b, prev = e.b[:0], ""
		}
	}
	if len(e.b) > 0 {
		if err := fc.writeFrame(ctx, msgEntries, e.b); err != nil {
			return err
		}
	}
	e.b = e.b[:0]
	e.str("")
	return fc.send(ctx, msgListEnd, e.b)
}

// maxHashWindow bounds the block hashes of one answer.
const maxHashWindow = 1 << 16

// hashes answers a block-hash request: path, first block, count. The
// answer: exists, size, then the hashes of the blocks that exist.
func (t *target) hashes(ctx context.Context, fc *frameConn, p []byte, e *enc) error {
	d := dec{b: p}
	path := d.str()
	first := d.sv()
	count := d.sv()
	if err := d.end("hash request"); err != nil {
		return err
	}
	if err := checkRel(path); err != nil || path == "" || first < 0 || count <= 0 || count > maxHashWindow {
		return fmt.Errorf("%w: hash request for %q blocks %d+%d", ErrProtocol, path, first, count)
	}
	e.b = e.b[:0]
	t.mu.Lock()
	cached := t.blocks[path]
	t.mu.Unlock()
	var st unix.Stat_t
	if err := statBeneath(t.rootFD, path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		e.u8(0)
		return fc.send(ctx, msgHashesOK, e.b)
	}
	size := st.Size
	nb := (size + t.bsize - 1) / t.bsize
	last := min(first+count, nb)
	e.u8(1)
	e.sv(size)
	e.sv(max(0, last-first))
	if cached != nil && int64(len(cached)) == nb {
		for b := first; b < last; b++ {
			e.sum(cached[b])
		}
		return fc.send(ctx, msgHashesOK, e.b)
	}
	fd, err := openBeneath(t.rootFD, path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME|unix.O_NONBLOCK)
	if err != nil {
		return fmt.Errorf("hash %q: %w", path, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, t.bsize)
	for b := first; b < last; b++ {
		n, err := preadFull(fd, buf[:min(t.bsize, size-b*t.bsize)], b*t.bsize)
		if err != nil {
			return fmt.Errorf("hash %q: %w", path, err)
		}
		e.sum(blockSum(buf[:n]))
	}
	return fc.send(ctx, msgHashesOK, e.b)
}

// apply applies a batch of ops, recording those that fail.
func (t *target) apply(p []byte, failures []opFailure, later bool) ([]opFailure, error) {
	d := dec{b: p}
	flags := d.u8()
	n := d.uv()
	if n > uint64(len(p)) {
		return failures, fmt.Errorf("%w: %d ops in %d bytes", ErrProtocol, n, len(p))
	}
	for range n {
		o := d.op()
		if d.err != nil {
			break
		}
		if err := t.applyOne(&o, flags, later); err != nil {
			f := opFailure{Kind: o.Kind, Path: o.Path, Target: o.Target, Msg: err.Error()}
			var errno unix.Errno
			if errors.As(err, &errno) {
				f.Errno = uint32(errno)
			}
			if len(failures) < 1000 {
				failures = append(failures, f)
			}
		}
	}
	return failures, d.end("ops")
}

func (t *target) applyOne(o *op.Op, flags byte, later bool) error {
	o.Dir = t.cfg.DirIndex
	if err := o.Validate(); err != nil {
		return err
	}
	paths := []string{o.Path}
	if o.Kind == op.Rename || o.Kind == op.Link {
		paths = append(paths, o.Target)
	}
	for _, p := range paths {
		if excludedPath(t.cfg.Excludes, p) {
			return fmt.Errorf("%s of %q: %q is excluded from replication on this node", o.Kind, o.Path, p)
		}
	}
	t.forget(o)
	if t.q != nil && t.cfg.Request.Kind == RequestFull && !later {
		if err := t.quarantineBefore(o); err != nil {
			return err
		}
	}
	err := t.cfg.Apply.Apply(o)
	if err != nil && flags&batchTolerateMissing != 0 && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)) {
		return nil
	}
	return err
}

// forget drops cached block hashes of a path an op changes (and of what
// lies below a renamed or replaced directory).
func (t *target) forget(o *op.Op) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.blocks) == 0 {
		return
	}
	delete(t.blocks, o.Path)
	if o.Kind == op.Rename {
		delete(t.blocks, o.Target)
		for p := range t.blocks {
			if isUnder(p, o.Path) || isUnder(p, o.Target) {
				delete(t.blocks, p)
			}
		}
	}
}

// quarantineBefore copies the files a full resync's op is about to change
// or remove.
func (t *target) quarantineBefore(o *op.Op) error {
	reason := ReasonOverwritten
	switch o.Kind {
	case op.Mkdir, op.Rmdir, op.Fsync:
		return nil
	case op.Unlink:
		reason = ReasonDeleted
	case op.Rename:
		if err := t.q.save(o.Path, reason); err != nil {
			return err
		}
		if err := t.q.save(o.Target, reason); err != nil {
			return err
		}
		t.q.madeHere(o.Target)
		return nil
	}
	if err := t.q.save(o.Path, reason); err != nil {
		return err
	}
	switch o.Kind {
	case op.Create, op.Link, op.Symlink, op.Mknod:
		t.q.madeHere(o.Path)
	}
	return nil
}
