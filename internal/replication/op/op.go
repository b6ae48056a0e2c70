// Package op defines the replicated file operations: what the capture layer
// (the FUSE filesystem on the primary) records, what the wire protocol
// carries, what the target applies and what a resync sends. It is the
// contract between those layers, so it holds data and validation only.
//
// Paths are relative to the root of one replicated directory (Op.Dir
// indexes the module's replication dirs in declaration order), slash
// separated, clean, never absolute, never "..": a malformed or hostile
// frame must not reach outside the replicated tree.
package op

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Kind is the kind of an operation.
type Kind uint8

const (
	Write       Kind = iota + 1 // Path, Off, Data
	Truncate                    // Path, Size
	Fallocate                   // Path, Off, Size (length), Flags (FALLOC_FL_*)
	Create                      // Path, Mode: create a regular file (exclusive)
	Mkdir                       // Path, Mode
	Mknod                       // Path, Mode (with file type bits), Dev
	Symlink                     // Path (the link), Target
	Link                        // Path (new name), Target (existing path)
	Rename                      // Path (old), Target (new), Flags (RENAME_NOREPLACE, RENAME_EXCHANGE)
	Unlink                      // Path
	Rmdir                       // Path
	Chmod                       // Path, Mode (permission bits)
	Chown                       // Path, UID, GID (NoID = unchanged)
	Utimes                      // Path, Atime, Mtime (nanoseconds since the epoch; OmitTime = unchanged)
	Setxattr                    // Path, Name, Data (value), Flags (XATTR_CREATE, XATTR_REPLACE)
	Removexattr                 // Path, Name
	Fsync                       // Path: make the file durable (fdatasync when Flags&DataOnly)
	maxKind
)

var kindNames = [...]string{"", "write", "truncate", "fallocate", "create", "mkdir", "mknod", "symlink",
	"link", "rename", "unlink", "rmdir", "chmod", "chown", "utimes", "setxattr", "removexattr", "fsync"}

func (k Kind) String() string {
	if k > 0 && k < maxKind {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k > 0 && k < maxKind }

// Sentinels.
const (
	NoID     = ^uint32(0) // Chown: leave the owner or group unchanged
	OmitTime = int64(-1)  // Utimes: leave this time unchanged
	DataOnly = 1          // Fsync flag: fdatasync
)

// MaxData bounds the payload of one operation (a write is split above it).
const MaxData = 1 << 20

// MaxPath bounds a path's length (PATH_MAX).
const MaxPath = 4096

// Op is one replicated operation.
type Op struct {
	Kind   Kind
	Dir    uint16 // index of the replicated directory in the module
	Path   string
	Target string // Rename: new path; Link: existing path; Symlink: link content
	Name   string // xattr name
	Data   []byte // Write: bytes; Setxattr: value
	Off    int64
	Size   int64 // Truncate: new size; Fallocate: length
	Mode   uint32
	UID    uint32
	GID    uint32
	Dev    uint64
	Atime  int64
	Mtime  int64
	Flags  uint32
}

// ErrInvalid wraps every validation error.
var ErrInvalid = errors.New("invalid operation")

// Validate checks an operation received from anywhere (a frame, a journal)
// before it is applied: kind, paths inside the tree, sizes.
func (o *Op) Validate() error {
	if !o.Kind.Valid() {
		return fmt.Errorf("%w: unknown kind %d", ErrInvalid, o.Kind)
	}
	if err := CheckPath(o.Path); err != nil {
		return fmt.Errorf("%w: %s path: %v", ErrInvalid, o.Kind, err)
	}
	switch o.Kind {
	case Rename, Link:
		if err := CheckPath(o.Target); err != nil {
			return fmt.Errorf("%w: %s target: %v", ErrInvalid, o.Kind, err)
		}
	case Symlink:
		// A symlink's content is data, not a path we resolve: any bytes the
		// kernel accepts, bounded.
		if o.Target == "" || len(o.Target) > MaxPath || strings.IndexByte(o.Target, 0) >= 0 {
			return fmt.Errorf("%w: symlink target of %d bytes", ErrInvalid, len(o.Target))
		}
	case Write:
		if o.Off < 0 || len(o.Data) > MaxData {
			return fmt.Errorf("%w: write of %d bytes at %d", ErrInvalid, len(o.Data), o.Off)
		}
	case Truncate:
		if o.Size < 0 {
			return fmt.Errorf("%w: truncate to %d", ErrInvalid, o.Size)
		}
	case Fallocate:
		if o.Off < 0 || o.Size <= 0 {
			return fmt.Errorf("%w: fallocate %d bytes at %d", ErrInvalid, o.Size, o.Off)
		}
	case Setxattr, Removexattr:
		if o.Name == "" || len(o.Name) > 255 || len(o.Data) > 64<<10 {
			return fmt.Errorf("%w: xattr name %q with %d bytes", ErrInvalid, o.Name, len(o.Data))
		}
	}
	if o.Path == "." {
		switch o.Kind {
		case Chmod, Chown, Utimes, Setxattr, Removexattr, Fsync:
		default:
			return fmt.Errorf("%w: %s of the replicated directory itself", ErrInvalid, o.Kind)
		}
	}
	return nil
}

// CheckPath accepts a clean relative slash path inside the tree ("." is the
// root itself).
func CheckPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty")
	case len(p) > MaxPath:
		return fmt.Errorf("%d bytes long", len(p))
	case strings.IndexByte(p, 0) >= 0:
		return errors.New("contains a NUL byte")
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q is absolute", p)
	case path.Clean(p) != p:
		return fmt.Errorf("%q is not clean", p)
	case p == ".." || strings.HasPrefix(p, "../"):
		return fmt.Errorf("%q leaves the tree", p)
	}
	return nil
}

// Modifies reports whether the operation changes data or metadata (every
// kind but Fsync).
func (o *Op) Modifies() bool { return o.Kind != Fsync }
