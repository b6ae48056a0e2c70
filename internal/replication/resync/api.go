package resync

import (
	"context"
	"io"
	"time"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/op"
)

// DefaultBlockSize is the block size of full-resync comparisons.
const DefaultBlockSize = 1 << 20

// Sum is an XXH3-128 hash. A file's whole hash is the hash of its block
// hashes (so one read gives both).
type Sum [16]byte

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Entry is one object of a scanned tree.
type Entry struct {
	Path   string // relative, slash separated; "" is the replicated directory
	Kind   journal.FileKind
	Mode   uint32 // st_mode: type and permission bits
	UID    uint32
	GID    uint32
	Nlink  uint32
	Size   int64 // regular files
	Atime  int64 // nanoseconds since the epoch
	Mtime  int64
	Rdev   uint64 // devices
	Dev    uint64 // device and inode: hard-link identity within one scan
	Ino    uint64
	Target string  // symlink content
	Xattrs []Xattr // sorted by name; nil when none
	Hash   Sum     // whole-file hash of a regular file when Hashed
	Hashed bool
	// blocks: the block hashes of a hashed file of several blocks, when the
	// scan keeps them (a resync compares them without reading again).
	blocks []Sum
}

// Perm returns the permission bits including setuid, setgid and sticky.
func (e *Entry) Perm() uint32 { return e.Mode & 0o7777 }

// ScanOptions configure Scan.
type ScanOptions struct {
	// Excludes are path.Match globs relative to the root: a path is left
	// out when it or one of its parent directories matches (the capture
	// layer's rule). journal.DefaultStagingDir is always left out.
	Excludes []string
	// Prefix limits the scan to this subtree ("" the whole tree). When
	// Prefix does not exist the scan is empty.
	Prefix string
	// Single: list Prefix itself only, not its children.
	Single bool
	// Hash computes whole-file hashes with blocks of BlockSize.
	Hash      bool
	BlockSize int64
	// Parallel bounds the walking and hashing goroutines (default 4 ×
	// GOMAXPROCS, at least 8: a walker mostly waits in system calls).
	Parallel int
	// keepBlocks keeps block hashes of files of several blocks.
	keepBlocks bool
}

// Tree is a scanned tree: entries sorted with parents before their
// children ('/' sorts first, as journal orders paths).
type Tree struct {
	Root    string
	Entries []Entry
	Files   int64 // regular files
	Bytes   int64 // their sizes
	// vanished: directories (and files listed without a type) that were
	// renamed or deleted while the tree was walked: their contents are
	// missing from Entries.
	vanished []string
}

// DiffKind names what differs between two entries.
type DiffKind uint8

const (
	DiffMissing    DiffKind = iota + 1 // on the source only
	DiffExtra                          // on the target only
	DiffKindOf                         // file, directory, symlink or other
	DiffContent                        // hashes differ
	DiffSize                           // sizes differ
	DiffMode                           // permission bits
	DiffOwner                          // uid or gid
	DiffMtime                          // modification time
	DiffAtime                          // access time (CompareOptions.Atime)
	DiffXattrs                         // extended attributes
	DiffLinkTarget                     // symlink content
	DiffDevice                         // device numbers
	DiffHardlinks                      // hard-link structure
)

// Difference is one difference between two trees.
type Difference struct {
	Path   string
	Kind   DiffKind
	Detail string // source vs target, human readable
}

// CompareOptions configure Compare.
type CompareOptions struct {
	Atime bool // compare access times too (off by default: reads change them)
	// DirMtime compares directory modification times (on by default in
	// DefaultCompareOptions; a secondary's directories get theirs from the
	// resync and every replicated operation).
	DirMtime bool
	// Limit stops after this many differences (0: all).
	Limit int
}

// Estimate is what a resync would send.
type Estimate struct {
	Full    bool
	Files   int64 // objects created, changed or deleted
	Deletes int64
	Bytes   int64 // file data to send
	// Hashed: bytes both sides read to compare (full resync).
	Hashed int64
	// Duration at the rate given (0 when no rate).
	Duration time.Duration
	// Reason says which resync is estimated and why: an incremental one
	// from both journals, or a full one because they cannot be used.
	Reason string
}

// Conn is one connection of a session (a net.Conn, usually TLS). A
// session closes its connections when it ends.
type Conn = io.ReadWriteCloser

// Applier applies an operation to the target tree. The replication
// daemon's implementation journals the change first (core/journal: a
// resync target journals every change it makes) and never reaches outside
// the tree. It is called from several goroutines, never concurrently for
// operations of one session connection.
type Applier interface {
	Apply(o *op.Op) error
}

// Changes is the source's live journal during a resync (see "Writes during
// a resync" in the package text). The replication daemon implements it.
type Changes interface {
	// Track starts recording every change applied to the source tree from
	// now on, including those of operations in flight, into a fresh map
	// whose zone size is the journal's. Each map is marked on its own (a
	// zone already dirty in the journal's map is still new to a tracking
	// map). A tracking in progress should end at the same instant, so
	// that each change is in exactly one map: a change recorded in both
	// is safe but sent twice.
	Track() (Tracking, error)
	// Freeze blocks the application's modifying operations and returns
	// once none is in flight; thaw lets them go on.
	Freeze(ctx context.Context) (thaw func(), err error)
}

// Tracking is a tracking started by Changes.Track.
type Tracking interface {
	// Stop ends the tracking and returns what it recorded. The map's base
	// is whatever the implementation chose; the session only plans from it.
	Stop() (*journal.ZoneMap, error)
}

// Options tune a session; the source's apply.
type Options struct {
	Parallel  int   // files in flight (default 4 × connections)
	BlockSize int64 // default DefaultBlockSize
	// RateLimit caps what the source writes on all connections, bytes per
	// second (0: no cap).
	RateLimit float64
	// Progress is called about twice a second, and once at the end.
	Progress func(Progress)
	// MaxPasses bounds the passes before the final frozen pass (default 8).
	MaxPasses int
	// FreezeBelow: a pass that sent fewer bytes than this is followed by
	// the frozen final pass (default 64 MiB).
	FreezeBelow int64
}

// Progress reports a running session.
type Progress struct {
	Phase       string // "scan", "compare", "send", "final"
	Pass        int
	FilesDone   int64
	FilesTotal  int64
	BytesDone   int64 // source bytes dealt with: compared or sent
	BytesTotal  int64
	Sent        int64   // bytes written on the connections
	BytesPerSec float64 // recent rate of BytesDone
	ETA         time.Duration
}

// Request is what the target asks of the source.
type Request struct {
	Kind RequestKind
	// Incremental: the common generation and the target's map since it.
	Since uint64
	Map   *journal.ZoneMap
	// Quarantine, when not empty, is the folder under which the target
	// copies what it is about to lose (split brain).
	Quarantine string
	// Compare: what a verify request compares.
	Compare CompareOptions
	// Rate: the rate an estimate's duration assumes, bytes per second.
	Rate float64
}

// RequestKind is the purpose of a session.
type RequestKind uint8

const (
	RequestFull        RequestKind = iota + 1 // full resync
	RequestIncremental                        // from both zone maps
	RequestVerify                             // read-only: the source lists both trees and compares
	RequestEstimate                           // read-only: what an incremental (both maps) or full resync would send
)

// SourceConfig configures the source end of a session.
type SourceConfig struct {
	Root     string
	DirIndex uint16 // op.Op.Dir of what is sent
	Excludes []string
	// Map returns a copy of the source's zone map since its base; asked
	// after tracking started (incremental requests only).
	Map func() (*journal.ZoneMap, error)
	// Changes: the live journal; nil when the tree does not change during
	// the session.
	Changes Changes
	// Synced is called after the final pass while the source is frozen:
	// start replicating live. An error fails the session.
	Synced  func(ctx context.Context) error
	Options Options
}

// TargetConfig configures the target end of a session.
type TargetConfig struct {
	Root string
	// DirIndex is op.Op.Dir of what the target applies (whatever the
	// source says).
	DirIndex uint16
	Excludes []string
	// Apply applies what the source sends (nil: read-only, for verify and
	// estimate requests).
	Apply   Applier
	Request Request
	// Progress receives the source's progress reports.
	Progress func(Progress)
}

// Result describes a finished session (both ends see the same numbers).
type Result struct {
	Passes       int
	Files        int64 // source objects examined
	Changed      int64 // objects created, changed or deleted on the target
	Deleted      int64
	DataBytes    int64 // file bytes sent in writes
	SentBytes    int64 // bytes the source wrote on the connections
	ReceivedByte int64 // bytes the source read from them (listings, hashes)
	HashedBytes  int64 // bytes the source hashed to compare
	Frozen       time.Duration
	Took         time.Duration
	// Quarantine is the folder holding what the target lost (empty when
	// nothing was quarantined); QuarantinedFiles counts its files.
	Quarantine       string
	QuarantinedFiles int
	// Warnings: what could not be made identical without failing the
	// resync (a directory the source deleted that still holds excluded
	// entries on the target).
	Warnings []string
	// Estimate (estimate requests): what a resync would send.
	Estimate *Estimate
	// Differences (verify requests), up to CompareOptions.Limit.
	Differences []Difference
}
