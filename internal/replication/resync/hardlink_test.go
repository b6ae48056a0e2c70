package resync

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/halo-ha/halo/core/journal"
	"github.com/halo-ha/halo/internal/replication/op"
)

// TestIncrementalKeepsHardLinks: hard links made on the source since the
// common generation (the journal sees only the creation of the new name)
// end up as links on the target, not as separate copies, including a
// write made through the new name only, links whose names are all new,
// and a new name in a new directory.
func TestIncrementalKeepsHardLinks(t *testing.T) {
	src, tgt := sameBase(t, 6, 200000)
	js, jt := newJournaledTree(t, src, baseGen), newJournaledTree(t, tgt, baseGen)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// An old file gets a new name, and is written through the new one:
	// the journal records the zone under the new name only.
	must(js.Link("d0/f0", "d1/hard"))
	must(js.WriteAt("d1/hard", 70000, []byte("through the new name")))
	// Both names new.
	must(js.Create("d2/n1", pattern(5000, 3)))
	must(js.Link("d2/n1", "d2/n2"))
	// A new name in a new directory, of an old file of another directory.
	must(js.Mkdir("newdir"))
	must(js.Link("d1/f1", "newdir/h"))
	// A link that already exists on both sides stays one.
	must(js.Chmod("d2/f2", 0o600))

	// The estimate compares the linked files as relink will.
	est := runSession(context.Background(), t, 1,
		SourceConfig{Root: src, Map: func() (*journal.ZoneMap, error) { return js.Snapshot(), nil }},
		TargetConfig{Root: tgt, Request: Request{Kind: RequestEstimate, Map: jt.Snapshot()}})
	est.check(t)
	e := est.tgt.Estimate
	if e == nil || e.Full {
		t.Fatalf("estimate %+v, want an incremental one", e)
	}
	a := newApplier(t, tgt)
	r := runSession(context.Background(), t, 2,
		SourceConfig{Root: src, Map: func() (*journal.ZoneMap, error) { return js.Snapshot(), nil }},
		TargetConfig{Root: tgt, Apply: a, Request: Request{Kind: RequestIncremental, Since: baseGen, Map: jt.Snapshot()}})
	r.check(t)
	assertSame(t, src, tgt)
	for _, pair := range [][2]string{{"d0/f0", "d1/hard"}, {"d2/n1", "d2/n2"}, {"d1/f1", "newdir/h"}} {
		if !sameInode(t, tgt, pair[0], pair[1]) {
			t.Errorf("target: %s and %s are separate files, want one linked file", pair[0], pair[1])
		}
	}
	if a.counts[op.Link] == 0 {
		t.Errorf("no link applied on the target (ops %v)", a.counts)
	}
	if e.Bytes != r.src.DataBytes {
		t.Errorf("estimated %d bytes; the resync sent %d", e.Bytes, r.src.DataBytes)
	}
	t.Logf("incremental with hard links: %d data bytes, ops %v", r.src.DataBytes, a.counts)
}

func sameInode(tb testing.TB, root, a, b string) bool {
	tb.Helper()
	fa, err := os.Lstat(filepath.Join(root, a))
	if err != nil {
		tb.Fatal(err)
	}
	fb, err := os.Lstat(filepath.Join(root, b))
	if err != nil {
		tb.Fatal(err)
	}
	return os.SameFile(fa, fb)
}
