// Package apply applies replicated operations (op.Op) to the target's copy
// of a module's replicated directories.
//
// # Confinement
//
// Every path is resolved relative to a descriptor of the replicated
// directory opened once, with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS):
// ".." cannot climb out, an absolute or relative symlink anywhere in the
// path fails the operation instead of being followed, and operations that
// act on the final name (unlink, rename, link, symlink, chown, utimes,
// chmod, xattrs) act on the name itself through its parent's descriptor,
// never on what a symlink there points to. Symlinks are never followed at
// all: the primary's capture layer reports real paths (the kernel resolved
// symlinks on the primary before the request reached it), so a path with
// a symlink in it means a diverged or hostile stream, and the operation
// fails. Files are opened for writing only after checking, on an O_PATH
// descriptor, that they are regular files: a stream cannot make this node
// open a device node or a FIFO. /proc must be mounted (an O_PATH
// descriptor is reopened, and xattrs of a name are set, through
// /proc/self/fd).
//
// # What operations carry
//
// As capture sends them: Create, Mkdir, Mknod and Symlink carry the new
// object's final mode (not subject to this process's umask), owner (UID,
// GID; op.NoID leaves one as created) and modification time; Write,
// Truncate and Fallocate carry the file's modification time after the
// change. A zero Mtime (or op.OmitTime) leaves the time the kernel set.
// Atime, ctime and directory times are not reproduced.
//
// # Idempotency
//
// An operation may be applied again to a tree that already holds its
// effect (a replayed suffix of a stream, a resync that overlaps the
// stream). Each operation therefore establishes its postcondition rather
// than insisting on the precondition the primary had:
//
//   - Write, Truncate, Fallocate, Chmod, Chown, Utimes, Fsync are
//     idempotent as they are.
//   - Create leaves an empty regular file with the mode: an existing
//     regular file is truncated to 0 bytes and its mode set. Everything the
//     stream did to the file after its creation follows in the stream, so
//     replaying from the Create rebuilds it.
//   - Mkdir, Mknod: an existing object of the same type (and device
//     number) is kept and its mode set.
//   - Symlink: an existing symlink with the same content is kept. Link: an
//     existing name for the same inode is kept.
//   - Unlink, Rmdir, Removexattr: a name already absent is success.
//   - Setxattr sets the value whatever XATTR_CREATE or XATTR_REPLACE said
//     (the primary checked them).
//   - Rename is not idempotent: a missing source fails (whether the
//     destination is the renamed object cannot be known), as does
//     RENAME_NOREPLACE over an existing name.
//
// Anything else that does not fit (a Create over a directory, a Write to a
// missing file) is an error: the target diverged and needs a resync.
//
// # Durability
//
// Apply makes an Fsync durable before returning. ApplyDeferred lets a
// receiver group the disk flushes of many operations: it records what
// must reach the disk for an operation to be durable (the file, its
// parent directories), holding descriptors so a later rename or unlink
// does not lose them, and Flush syncs them all at once, in parallel.
//
// A Tree assumes it is the only writer of its directories (the secondary
// serves them read-only to applications).
package apply

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/internal/replication/op"
)

// resolveFlags confine every lookup to the tree and refuse symlinks.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// Default sizes of the descriptor caches.
const (
	defaultMaxFiles = 128
	defaultMaxDirs  = 64
)

// Tree is a module's replicated directories on the target, indexed like
// op.Op.Dir. It is safe for concurrent use; operations are applied one at
// a time.
type Tree struct {
	paths []string
	roots []*entry // pinned: never evicted

	applyMu sync.Mutex // serializes operations (they mutate the caches)
	files   *fdCache
	dirs    *fdCache

	mu      sync.Mutex         // guards pending, syncfs and every entry's refs
	pending map[*entry]syncHow // what the next Flush syncs
	syncfs  map[int]bool       // roots whose whole filesystem the next Flush syncs
	closed  bool
}

type syncHow uint8

const (
	syncData syncHow = 1 // fdatasync
	syncFull syncHow = 2 // fsync
)

// Open opens the replicated directories (in the module's order).
func Open(dirs ...string) (*Tree, error) {
	if len(dirs) == 0 {
		return nil, errors.New("open replicated tree: no directory")
	}
	if len(dirs) > 1<<16 {
		return nil, fmt.Errorf("open replicated tree: %d directories", len(dirs))
	}
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		return nil, fmt.Errorf("open replicated tree: /proc is needed: %w", err)
	}
	t := &Tree{
		paths:   append([]string(nil), dirs...),
		pending: map[*entry]syncHow{},
		syncfs:  map[int]bool{},
	}
	t.files = newFDCache(t, defaultMaxFiles)
	t.dirs = newFDCache(t, defaultMaxDirs)
	for i, d := range dirs {
		fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("open replicated directory %s: %w", d, err)
		}
		t.roots = append(t.roots, &entry{key: key{dir: uint16(i), path: "."}, fd: fd, refs: 1, dir: true})
	}
	return t, nil
}

// Dirs is the number of replicated directories.
func (t *Tree) Dirs() int { return len(t.roots) }

// Close closes every descriptor. Pending durability records are dropped.
func (t *Tree) Close() error {
	t.applyMu.Lock()
	defer t.applyMu.Unlock()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	for e := range t.pending {
		t.releaseLocked(e)
	}
	clear(t.pending)
	t.mu.Unlock()
	t.files.clear()
	t.dirs.clear()
	var first error
	for _, r := range t.roots {
		if err := unix.Close(r.fd); err != nil && first == nil {
			first = fmt.Errorf("close replicated directory %s: %w", t.paths[r.key.dir], err)
		}
	}
	return first
}

// Apply applies o. An Fsync is durable when Apply returns; other
// operations are as durable as any write the kernel has not flushed yet.
func (t *Tree) Apply(o op.Op) error { return t.apply(&o, false, true) }

// ApplyDeferred applies o. When durable is true, or o is an Fsync, it
// records what must reach the disk for o to be durable; the next Flush
// syncs it.
func (t *Tree) ApplyDeferred(o op.Op, durable bool) error {
	return t.apply(&o, durable, false)
}

func (t *Tree) apply(o *op.Op, durable, syncNow bool) error {
	if err := o.Validate(); err != nil {
		return err
	}
	if int(o.Dir) >= len(t.roots) {
		return fmt.Errorf("%w: dir %d of a module with %d", op.ErrInvalid, o.Dir, len(t.roots))
	}
	t.applyMu.Lock()
	defer t.applyMu.Unlock()
	if t.isClosed() {
		return fmt.Errorf("apply %s %q: tree closed", o.Kind, o.Path)
	}
	a := applier{t: t, o: o, durable: durable || o.Kind == op.Fsync}
	err := a.run()
	a.releaseUses()
	if err == nil {
		if syncNow {
			err = a.syncNow()
		} else {
			a.deferSyncs()
		}
	} else {
		a.dropSyncs()
	}
	if err != nil {
		if o.Kind == op.Rename || o.Kind == op.Link {
			return fmt.Errorf("apply %s %q -> %q: %w", o.Kind, o.Path, o.Target, err)
		}
		return fmt.Errorf("apply %s %q: %w", o.Kind, o.Path, err)
	}
	return nil
}

func (t *Tree) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// split returns the parent and the final name of a checked path.
func split(p string) (parent, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return ".", p
	}
	return p[:i], p[i+1:]
}

// under reports whether p is root or inside it.
func under(p, root string) bool {
	if root == "." {
		return true
	}
	return p == root || (len(p) > len(root) && p[len(root)] == '/' && strings.HasPrefix(p, root))
}

// invalidate forgets the cached descriptors of p and everything under it
// (a rename, an unlink or a replaced name changes what those paths name).
func (t *Tree) invalidate(dir uint16, p string) {
	t.files.dropUnder(dir, p)
	t.dirs.dropUnder(dir, p)
}

// Flush makes durable everything ApplyDeferred recorded before Flush was
// called. It may run while operations are applied.
func (t *Tree) Flush() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return errors.New("flush replicated tree: closed")
	}
	pending, fs := t.pending, t.syncfs
	t.pending, t.syncfs = map[*entry]syncHow{}, map[int]bool{}
	t.mu.Unlock()
	return t.syncEntries(pending, fs)
}

// SyncAll makes the whole tree durable: syncfs of every replicated
// directory's filesystem. What ApplyDeferred recorded is covered too.
func (t *Tree) SyncAll() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return errors.New("sync replicated tree: closed")
	}
	pending := t.pending
	t.pending, t.syncfs = map[*entry]syncHow{}, map[int]bool{}
	t.mu.Unlock()
	all := map[int]bool{}
	for i := range t.roots {
		all[i] = true
	}
	// The entries need no fsync of their own (syncfs covers them): release
	// them.
	for e := range pending {
		pending[e] = 0
	}
	return t.syncEntries(pending, all)
}

// maxParallelSyncs bounds the fsyncs a Flush runs at once: concurrent
// fsyncs let the filesystem commit them in one journal transaction.
const maxParallelSyncs = 8

func (t *Tree) syncEntries(pending map[*entry]syncHow, fs map[int]bool) error {
	type job struct {
		e   *entry
		how syncHow
	}
	var jobs []job
	for e, how := range pending {
		if how != 0 {
			jobs = append(jobs, job{e, how})
		}
	}
	errs := make([]error, len(jobs))
	run := func(i int) {
		j := jobs[i]
		var err error
		if j.how == syncData && !j.e.dir {
			err = unix.Fdatasync(j.e.fd)
		} else {
			err = unix.Fsync(j.e.fd)
		}
		if err != nil {
			errs[i] = fmt.Errorf("sync %s: %w", t.describe(j.e), err)
		}
	}
	if len(jobs) == 1 {
		run(0)
	} else if len(jobs) > 1 {
		var wg sync.WaitGroup
		sem := make(chan struct{}, maxParallelSyncs)
		for i := range jobs {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				run(i)
			}()
		}
		wg.Wait()
	}
	for dir := range fs {
		if err := unix.Syncfs(t.roots[dir].fd); err != nil {
			errs = append(errs, fmt.Errorf("syncfs %s: %w", t.paths[dir], err))
		}
	}
	t.mu.Lock()
	for e := range pending {
		t.releaseLocked(e)
	}
	t.mu.Unlock()
	return errors.Join(errs...)
}

func (t *Tree) describe(e *entry) string {
	return fmt.Sprintf("%s in %s", e.key.path, t.paths[e.key.dir])
}
