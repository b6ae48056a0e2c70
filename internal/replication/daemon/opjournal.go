package daemon

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/capture"
	"github.com/halo-ha/halo/internal/replication/op"
)

// OpJournal journals replicated operations of one directory: the capture
// layer's Journal on a source, and the applier's on a target (each node
// journals the changes made to its own tree).
type OpJournal struct{ *Journal }

var _ capture.Journal = OpJournal{}

// mapPath converts an operation path ("." is the directory itself) to the
// map's ("" is the directory itself).
func mapPath(p string) string {
	if p == "." {
		return ""
	}
	return p
}

// Mark records o before it changes the tree and returns once the record
// is durable. Structural operations return a ticket for Done.
func (j OpJournal) Mark(o op.Op) (capture.Ticket, error) {
	var id uint64
	t, err := j.Locked(func(m *journal.ZoneMap) ([]journal.Record, error) {
		p := mapPath(o.Path)
		var r journal.Record
		var err error
		switch o.Kind {
		case op.Write:
			r, err = m.MarkWrite(p, o.Off, int64(len(o.Data)))
		case op.Truncate:
			r, err = m.MarkTruncate(p, o.Size)
		case op.Fallocate:
			// Allocation, punching or zeroing a range: its zones may read
			// differently afterwards, and the size may grow (covered by
			// the range's zones).
			r, err = m.MarkWrite(p, o.Off, o.Size)
		case op.Create, op.Mkdir, op.Mknod, op.Symlink, op.Link:
			r, id, err = begin(m, journal.Op{Kind: journal.OpCreate, Path: p})
		case op.Unlink, op.Rmdir:
			r, id, err = begin(m, journal.Op{Kind: journal.OpDelete, Path: p})
		case op.Rename:
			k := journal.OpRename
			if o.Flags&unix.RENAME_EXCHANGE != 0 {
				k = journal.OpExchange
			}
			r, id, err = begin(m, journal.Op{Kind: k, Path: p, To: mapPath(o.Target)})
		case op.Chmod, op.Chown, op.Utimes, op.Setxattr, op.Removexattr:
			r, err = m.MarkMeta(p)
		case op.Fsync:
			return nil, nil
		default:
			return nil, fmt.Errorf("journal %s: unknown operation", o.Kind)
		}
		if err != nil {
			return nil, fmt.Errorf("journal %s of %q: %w", o.Kind, o.Path, err)
		}
		return []journal.Record{r}, nil
	})
	if err != nil {
		return 0, err
	}
	if err := j.Wait(t); err != nil {
		return 0, err
	}
	return capture.Ticket(id), nil
}

func begin(m *journal.ZoneMap, o journal.Op) (journal.Record, uint64, error) {
	in, err := m.Begin(o)
	if err != nil {
		return nil, 0, err
	}
	return in, in.ID, nil
}

// Done records a structural operation's outcome (not waited for: a lost
// Done replays as an operation in flight, whose paths are sent whole).
func (j OpJournal) Done(t capture.Ticket, applied bool) {
	if t == 0 {
		return
	}
	_, _ = j.Locked(func(m *journal.ZoneMap) ([]journal.Record, error) {
		r, err := m.Finish(uint64(t), applied)
		if err != nil {
			return nil, err
		}
		return []journal.Record{r}, nil
	})
}
