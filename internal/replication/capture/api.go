// Package capture is the FUSE filesystem that halo mounts over a replicated
// directory on the primary. It serves the real directory underneath (opened
// before the mount hides it) and turns every modifying operation into an
// op.Op: journaled before the data changes, applied locally, then handed to
// a Sink that returns when the peer acknowledged it.
//
// # The path of one modifying operation
//
//  1. Journal.Mark(o): durable before anything changes. An error fails the
//     operation with EIO and nothing is written.
//  2. The operation is applied to the underlying tree.
//  3. Sink.Submit(o) (Sink.Sync for fsync, fdatasync and writes on O_SYNC or
//     O_DSYNC handles, after the local fsync). A nil result means the peer
//     acknowledged per the module's mode, or that the module continues alone
//     (degraded): the application is told success either way. An error
//     fails the operation with EIO although it is already applied locally
//     and journaled.
//  4. Journal.Done(ticket, applied).
//
// Operations on excluded paths are applied locally and skip steps 1, 3, 4.
//
// # Order
//
// The sequence of Submit/Sync calls is a valid history of the tree: one
// file's operations are submitted one at a time in the order they were
// applied locally, and an operation that changes the namespace (rename,
// unlink, rmdir) runs alone: no operation that names a path is between its
// Mark and its Submit's return meanwhile. Operations on different files that
// do not change the namespace run concurrently: a Sink may be called from
// several goroutines and may order such concurrent calls as it likes, but
// it must not reorder calls that did not overlap in time. Journal.Mark calls
// follow the same order, so the journal's name table changes in the order
// the tree does.
//
// # What the operations carry
//
//   - Create, Mkdir, Mknod and Symlink carry the new object's final Mode
//     (Mknod with the file type bits; none for Symlink), UID and GID: the
//     target creates it with them (the capture already gave it to the
//     calling user, or the group of a setgid directory, and undid the
//     daemon's umask).
//   - Write, Truncate, Fallocate, Create, Mkdir, Mknod and Symlink carry in
//     Mtime the object's modification time after the local apply, so the
//     target can make it identical (0: unknown). Directory times are not
//     carried (an entry created or removed changes its directory's).
//   - Utimes carries explicit times, "now" resolved on the primary.
//   - A hard link between a replicated and an excluded name, or a rename
//     of a file with several names across that boundary, fails with EXDEV
//     (as across filesystems: mv copies): a file must not be replicated
//     under one name and not under another.
//   - An object entering the replicated set (renamed from an excluded
//     path) is sent whole: its creation, hard links within it,
//     data (holes skipped), size, xattrs and times; one leaving it is
//     removed deepest first. The creations and removals are marked before
//     the local rename; the data, xattrs and times that follow a creation
//     are marked as they are submitted (the creation covers them). Such a
//     removal may name a path the new name excludes: the peer still has it
//     under that name.
//   - Sync(o) must leave o and every earlier operation on the same file
//     durable on the peer.
//
// # Data lifetime
//
// o.Data belongs to the FUSE request buffer: it is valid only until Mark,
// Submit or Sync returns. A Sink that keeps an op past its return (async
// mode) must copy Data.
package capture

import (
	"context"

	"github.com/hashicorp/go-hclog"

	"github.com/halo-ha/halo/internal/replication/op"
)

// Sink receives the operations to replicate. The wire sender implements it.
type Sink interface {
	// Submit sends o and returns when the peer acknowledged it as the
	// module's mode requires (sync: applied on the peer), or at once with
	// nil when the module runs alone. An error means the operation cannot
	// be promised to the application (it gets EIO).
	Submit(ctx context.Context, o op.Op) error
	// Sync is Submit for an operation that must be durable on the peer
	// when it returns: an op.Fsync (after the local fsync), or an op.Write
	// made through an O_SYNC or O_DSYNC handle.
	Sync(ctx context.Context, o op.Op) error
}

// Ticket identifies a marked operation to Journal.Done; 0 means there is
// nothing to finish (a write to zones already dirty, say).
type Ticket uint64

// Journal records changes durably before they reach the disk. The daemon
// implements it over core/journal.
type Journal interface {
	// Mark records that o is about to change the tree (zones dirty for a
	// Write, Truncate or Fallocate; an intent for a structural operation;
	// metadata for the others) and returns when the record is durable.
	// o.Path (and o.Target for Rename and Link) are the names the tree has
	// at that moment. A failed Mark fails the operation with EIO before
	// anything is written.
	Mark(o op.Op) (Ticket, error)
	// Done is called once for every successful Mark, after the local
	// apply and (when it applied) Submit or Sync returned, whatever their
	// result. applied tells whether the local tree changed. Done does not
	// mean the peer has the change: only the Sink knows that (an async or
	// lone module's zones stay dirty until the peer catches up).
	Done(t Ticket, applied bool)
}

// NestedMarker is implemented by a Journal that holds new operations back
// at times (a resync's final pass freezes the application until the
// operations in flight are done). The capture layer marks the later steps
// of one operation (a rename plan's steps after the first, what follows a
// creation) with MarkNested: they belong to an operation already in
// flight, so they must not wait for the freeze that waits for it. Mark is
// otherwise the same.
type NestedMarker interface {
	MarkNested(o op.Op) (Ticket, error)
}

// Options configure Mount.
type Options struct {
	// Dir is the replicated directory, absolute. The filesystem is
	// mounted over it and serves what it held before.
	Dir string
	// DirIndex is Dir's index in the module's replication block (op.Op.Dir).
	DirIndex uint16
	// Sink and Journal are required unless ReadOnly.
	Sink    Sink
	Journal Journal
	// Excludes are path.Match globs relative to Dir. A path is excluded
	// when it or one of its parent directories matches: it is served but
	// neither journaled nor replicated.
	Excludes []string
	// ReadOnly serves the directory unmodifiable (the secondary): every
	// modifying operation fails with EROFS, and nothing is cached so the
	// applications see what replication writes underneath.
	ReadOnly bool
	// Logger receives warnings (nil: discard).
	Logger hclog.Logger
	// Debug logs every FUSE request (very verbose).
	Debug bool
}
