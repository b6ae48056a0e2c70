package journal

import (
	"fmt"
	"slices"
)

// # Full resync plans
//
// Without a usable history (first sync, unrelated data, split brain without
// a common base, `--fullsync`, a damaged journal) both trees are listed and
// compared: every source entry becomes an item; a regular file the target
// also holds is compared block by block (each side hashes its blocks, only
// differing ones travel), anything else is sent whole; target entries the
// source lacks, or holds as another kind, are deleted first.

// FileKind is the type of a directory entry.
type FileKind uint8

const (
	KindFile FileKind = iota + 1
	KindDir
	KindSymlink
	KindOther // devices, fifos, sockets
)

// FileInfo describes one entry of a listed tree.
type FileInfo struct {
	Path string
	Kind FileKind
	Size int64 // regular files
}

// FullItem is one independent unit of full resync work.
type FullItem struct {
	Path string
	Kind FileKind
	Size int64
	// Compare: the target holds a regular file there; hash the first
	// CompareBlocks blocks on both sides and send those that differ, send
	// the blocks past the target's size, truncate to Size. Otherwise send
	// the entry whole.
	Compare    bool
	TargetSize int64
}

// FullPlan is a full resync.
type FullPlan struct {
	BlockSize int64
	Delete    []string // on the target, recursively, before the items
	Items     []FullItem
	HashBytes int64 // bytes each side hashes
	SendBytes int64 // bytes sent at least (blocks the target cannot hold)
}

// Blocks is the number of blocks of the item's source file.
func (p *FullPlan) Blocks(it FullItem) int64 {
	if it.Kind != KindFile || it.Size <= 0 {
		return 0
	}
	return (it.Size + p.BlockSize - 1) / p.BlockSize
}

// CompareBlocks is the number of leading blocks both sides hash; the blocks
// after it are sent without comparing.
func (p *FullPlan) CompareBlocks(it FullItem) int64 {
	if !it.Compare {
		return 0
	}
	return (min(it.Size, it.TargetSize) + p.BlockSize - 1) / p.BlockSize
}

// Block returns the byte range of block i of the item.
func (p *FullPlan) Block(it FullItem, i int64) ByteRange {
	off := i * p.BlockSize
	return ByteRange{Off: off, Len: max(0, min(p.BlockSize, it.Size-off))}
}

// NewFullPlan compares the listings of the source and target trees (in any
// order; paths relative and unique) with blocks of blockSize bytes.
func NewFullPlan(source, target []FileInfo, blockSize int64) (*FullPlan, error) {
	if blockSize <= 0 {
		return nil, fmt.Errorf("plan full resync: block size %d", blockSize)
	}
	src, err := sortedListing(source, "source")
	if err != nil {
		return nil, err
	}
	tgt, err := sortedListing(target, "target")
	if err != nil {
		return nil, err
	}
	byPath := make(map[string]FileInfo, len(tgt))
	for _, f := range tgt {
		byPath[f.Path] = f
	}
	srcKind := make(map[string]FileKind, len(src))
	for _, f := range src {
		srcKind[f.Path] = f.Kind
	}
	p := &FullPlan{BlockSize: blockSize}
	for _, f := range tgt {
		if k, ok := srcKind[f.Path]; ok && k == f.Kind {
			continue
		}
		if n := len(p.Delete); n > 0 && isUnder(f.Path, p.Delete[n-1]) {
			continue // its directory goes
		}
		p.Delete = append(p.Delete, f.Path)
	}
	for _, f := range src {
		it := FullItem{Path: f.Path, Kind: f.Kind, Size: f.Size}
		if t, ok := byPath[f.Path]; ok && t.Kind == KindFile && f.Kind == KindFile {
			it.Compare, it.TargetSize = true, t.Size
			p.HashBytes += min(f.Size, t.Size)
			p.SendBytes += max(0, f.Size-t.Size)
		} else if f.Kind == KindFile {
			p.SendBytes += f.Size
		}
		p.Items = append(p.Items, it)
	}
	return p, nil
}

func sortedListing(in []FileInfo, side string) ([]FileInfo, error) {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b FileInfo) int { return ComparePaths(a.Path, b.Path) })
	for i, f := range out {
		if err := validPath(f.Path, false); err != nil {
			return nil, fmt.Errorf("plan full resync: %s listing: %w", side, err)
		}
		if f.Kind < KindFile || f.Kind > KindOther || f.Size < 0 {
			return nil, fmt.Errorf("plan full resync: %s listing: %q has kind %d size %d", side, f.Path, f.Kind, f.Size)
		}
		if i > 0 && out[i-1].Path == f.Path {
			return nil, fmt.Errorf("plan full resync: %s listing: %q twice", side, f.Path)
		}
	}
	return out, nil
}
