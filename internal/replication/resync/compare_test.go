package resync

import (
	"testing"
	"time"

	"github.com/halo-ha/halo/core/journal"
)

func tree(es ...Entry) *Tree { return &Tree{Entries: es} }

func TestCompareOptionsAndLimits(t *testing.T) {
	file := func(p string, mutate func(*Entry)) Entry {
		e := Entry{Path: p, Kind: journal.KindFile, Mode: 0o100644, Size: 3, Mtime: 10, Atime: 20, Hashed: true, Nlink: 1}
		if mutate != nil {
			mutate(&e)
		}
		return e
	}
	root := Entry{Path: "", Kind: journal.KindDir, Mode: 0o40755, Mtime: 5}
	src := tree(root, file("a", nil), Entry{Path: "dev", Kind: journal.KindOther, Mode: 0o20666, Rdev: 259})
	tgt := tree(func() Entry { r := root; r.Mtime = 6; return r }(),
		file("a", func(e *Entry) { e.Atime = 99 }),
		Entry{Path: "dev", Kind: journal.KindOther, Mode: 0o20666, Rdev: 260})
	got := map[DiffKind]bool{}
	for _, d := range Compare(src, tgt, CompareOptions{}) {
		got[d.Kind] = true
	}
	if !got[DiffDevice] || got[DiffAtime] || got[DiffMtime] {
		t.Errorf("default options: %v (device only: atime ignored, directory mtimes not compared)", got)
	}
	got = map[DiffKind]bool{}
	for _, d := range Compare(src, tgt, CompareOptions{Atime: true, DirMtime: true}) {
		got[d.Kind] = true
	}
	if !got[DiffAtime] || !got[DiffMtime] || !got[DiffDevice] {
		t.Errorf("with atime and directory mtimes: %v", got)
	}
	if n := len(Compare(src, tgt, CompareOptions{Atime: true, DirMtime: true, Limit: 2})); n != 2 {
		t.Errorf("limit 2: %d differences", n)
	}
	// A missing directory is one difference, not one per entry below it.
	big := tree(root, Entry{Path: "d", Kind: journal.KindDir, Mode: 0o40755}, file("d/x", nil), file("d/y", nil))
	if ds := Compare(big, tree(root), CompareOptions{}); len(ds) != 1 || ds[0].Kind != DiffMissing || ds[0].Path != "d" {
		t.Errorf("missing directory: %v", ds)
	}
	if ds := Compare(tree(root), big, CompareOptions{}); len(ds) != 1 || ds[0].Kind != DiffExtra {
		t.Errorf("extra directory: %v", ds)
	}
}

func TestEstimates(t *testing.T) {
	p := &journal.Plan{Items: []journal.Item{
		{Path: "a", Kind: journal.ItemUpdate, Ranges: []journal.ByteRange{{Off: 0, Len: 100}, {Off: 200, Len: 50}}},
		{Path: "b", Kind: journal.ItemWhole, Size: 1000},
	}, Delete: []string{"c"}, Unstage: []journal.Move{{From: ".halo-resync/0", To: "d"}}}
	p.Bytes = p.Items[0].Bytes() + p.Items[1].Bytes()
	e := EstimatePlan(p, 100)
	if e.Bytes != 1150 || e.Files != 4 || e.Deletes != 1 || e.Duration != 11500*time.Millisecond {
		t.Errorf("plan estimate %+v", e)
	}
	root := Entry{Path: "", Kind: journal.KindDir, Mode: 0o40755}
	f := func(p string, size int64, h byte) Entry {
		return Entry{Path: p, Kind: journal.KindFile, Mode: 0o100644, Size: size, Hashed: true, Hash: Sum{h}, Nlink: 1}
	}
	src := tree(root, f("same", 10, 1), f("changed", 20, 2), f("new", 30, 3))
	tgt := tree(root, f("same", 10, 1), f("changed", 20, 9), f("gone", 40, 4))
	e = EstimateTrees(src, tgt, 0)
	if e.Bytes != 50 || e.Files != 3 || e.Deletes != 1 || e.Hashed != 30 || e.Duration != 0 {
		t.Errorf("tree estimate %+v", e)
	}
}
