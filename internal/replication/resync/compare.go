package resync

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/halo-ha/halo/core/journal"
)

var diffKindNames = [...]string{"", "missing", "extra", "kind", "content", "size", "mode", "owner", "mtime",
	"atime", "xattrs", "link target", "device", "hard links"}

func (k DiffKind) String() string {
	if int(k) < len(diffKindNames) && k > 0 {
		return diffKindNames[k]
	}
	return fmt.Sprintf("DiffKind(%d)", k)
}

func (d Difference) String() string {
	p := d.Path
	if p == "" {
		p = "."
	}
	if d.Detail == "" {
		return fmt.Sprintf("%s: %s", p, d.Kind)
	}
	return fmt.Sprintf("%s: %s (%s)", p, d.Kind, d.Detail)
}

// DefaultCompareOptions is what `halo verify` compares.
var DefaultCompareOptions = CompareOptions{DirMtime: true}

var kindNames = [...]string{"", "file", "directory", "symlink", "other"}

func kindName(k journal.FileKind) string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind %d", k)
}

// Compare lists the differences between a source and a target tree (both
// sorted, as Scan returns them). Contents are compared by hash where both
// entries are hashed; a missing or extra directory is one difference, not
// one per entry below it.
func Compare(src, tgt *Tree, opt CompareOptions) []Difference {
	var out []Difference
	full := func() bool { return opt.Limit > 0 && len(out) >= opt.Limit }
	add := func(p string, k DiffKind, format string, args ...any) {
		if !full() {
			out = append(out, Difference{Path: p, Kind: k, Detail: fmt.Sprintf(format, args...)})
		}
	}
	sg, tg := groups(src.Entries), groups(tgt.Entries)
	s, t := src.Entries, tgt.Entries
	i, j := 0, 0
	skip := func(es []Entry, k int, dir string) int {
		for k < len(es) && isUnder(es[k].Path, dir) {
			k++
		}
		return k
	}
	for (i < len(s) || j < len(t)) && !full() {
		switch {
		case j >= len(t) || (i < len(s) && journal.ComparePaths(s[i].Path, t[j].Path) < 0):
			add(s[i].Path, DiffMissing, "%s on the source only", kindName(s[i].Kind))
			i = skip(s, i+1, s[i].Path)
		case i >= len(s) || journal.ComparePaths(s[i].Path, t[j].Path) > 0:
			add(t[j].Path, DiffExtra, "%s on the target only", kindName(t[j].Kind))
			j = skip(t, j+1, t[j].Path)
		default:
			a, b := &s[i], &t[j]
			i++
			j++
			if a.Kind != b.Kind {
				add(a.Path, DiffKindOf, "%s vs %s", kindName(a.Kind), kindName(b.Kind))
				i, j = skip(s, i, a.Path), skip(t, j, b.Path)
				continue
			}
			compareEntries(a, b, opt, add)
			if a.Kind == journal.KindFile && (a.Nlink > 1 || b.Nlink > 1) {
				ga, gb := groupOf(sg, a), groupOf(tg, b)
				if !slices.Equal(ga, gb) {
					add(a.Path, DiffHardlinks, "linked with %s vs %s", strings.Join(ga, ", "), strings.Join(gb, ", "))
				}
			}
		}
	}
	return out
}

func compareEntries(a, b *Entry, opt CompareOptions, add func(string, DiffKind, string, ...any)) {
	p := a.Path
	switch a.Kind {
	case journal.KindFile:
		if a.Size != b.Size {
			add(p, DiffSize, "%d vs %d bytes", a.Size, b.Size)
		} else if a.Hashed && b.Hashed && a.Hash != b.Hash {
			add(p, DiffContent, "hash %s vs %s", a.Hash, b.Hash)
		}
	case journal.KindSymlink:
		if a.Target != b.Target {
			add(p, DiffLinkTarget, "%q vs %q", a.Target, b.Target)
		}
	case journal.KindOther:
		if a.Mode&0o170000 != b.Mode&0o170000 || a.Rdev != b.Rdev {
			add(p, DiffDevice, "type %o device %d vs type %o device %d", a.Mode&0o170000, a.Rdev, b.Mode&0o170000, b.Rdev)
		}
	}
	if a.Kind != journal.KindSymlink && a.Perm() != b.Perm() {
		add(p, DiffMode, "%04o vs %04o", a.Perm(), b.Perm())
	}
	if a.UID != b.UID || a.GID != b.GID {
		add(p, DiffOwner, "%d:%d vs %d:%d", a.UID, a.GID, b.UID, b.GID)
	}
	if a.Mtime != b.Mtime && (a.Kind != journal.KindDir || opt.DirMtime) {
		add(p, DiffMtime, "%s vs %s", fmtTime(a.Mtime), fmtTime(b.Mtime))
	}
	if opt.Atime && a.Atime != b.Atime {
		add(p, DiffAtime, "%s vs %s", fmtTime(a.Atime), fmtTime(b.Atime))
	}
	if !slices.EqualFunc(a.Xattrs, b.Xattrs, func(x, y Xattr) bool { return x.Name == y.Name && string(x.Value) == string(y.Value) }) {
		add(p, DiffXattrs, "%s vs %s", xattrNames(a.Xattrs), xattrNames(b.Xattrs))
	}
}

func fmtTime(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

func xattrNames(xs []Xattr) string {
	if len(xs) == 0 {
		return "none"
	}
	names := make([]string, len(xs))
	for i, x := range xs {
		names[i] = x.Name
	}
	return strings.Join(names, ",")
}

// EstimatePlan is what an incremental plan sends, and how long it takes at
// rate bytes per second (0: no duration).
func EstimatePlan(p *journal.Plan, rate float64) Estimate {
	e := Estimate{Bytes: p.Bytes, Files: int64(len(p.Items) + len(p.Delete) + len(p.Unstage)), Deletes: int64(len(p.Delete))}
	e.Duration = atRate(e.Bytes, rate)
	return e
}

// EstimateTrees is what a full resync from src to tgt sends at most, from
// two hashed scans: differing files are counted whole past the blocks
// their hashes cannot vouch for (a resync compares their blocks and may
// send less).
func EstimateTrees(src, tgt *Tree, rate float64) Estimate {
	e := Estimate{Full: true}
	d := diffTrees(src.Entries, tgt.Entries)
	e.Deletes = int64(len(d.deletes))
	e.Files = int64(len(d.deletes) + len(d.mkdirs) + len(d.links))
	for _, w := range d.objects {
		if w.src.Kind != journal.KindFile {
			if w.tgt == nil {
				e.Files++
			}
			continue
		}
		if w.tgt != nil {
			e.Hashed += min(w.src.Size, w.tgt.Size)
			if w.tgt.Hashed && w.src.Hashed && w.tgt.Size == w.src.Size && w.tgt.Hash == w.src.Hash {
				continue
			}
		}
		e.Files++
		e.Bytes += w.src.Size
	}
	e.Duration = atRate(e.Bytes, rate)
	return e
}

func atRate(bytes int64, rate float64) time.Duration {
	if rate <= 0 {
		return 0
	}
	return time.Duration(float64(bytes) / rate * float64(time.Second))
}
