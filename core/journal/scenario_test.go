package journal

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// Scripted resyncs: a base tree, operations on each node, and what the plan
// must look like. Each case also runs the plan on the target and compares
// the trees.

// script runs operations written one per line:
//
//	mkdir P | create P | write P OFF LEN | trunc P SIZE | chmod P
//	rm P (recursive) | mv A B | xchg A B
func (n *simNode) script(rng *rand.Rand, lines string) {
	for _, line := range strings.Split(strings.TrimSpace(lines), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		num := func(i int) int64 {
			v, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				n.t.Fatalf("script %q: %v", line, err)
			}
			return v
		}
		switch f[0] {
		case "mkdir":
			n.mkdir(f[1], 0o700)
		case "create":
			n.createFile(f[1], 0o600)
		case "write":
			n.write(f[1], num(2), randomData(rng, int(num(3))))
		case "trunc":
			n.truncate(f[1], num(2))
		case "chmod":
			n.setMode(f[1], n.fs[f[1]].mode+1)
		case "rm":
			n.removeAll(f[1])
		case "mv":
			n.structural(Op{Kind: OpRename, Path: f[1], To: f[2]}, nil)
		case "xchg":
			n.structural(Op{Kind: OpExchange, Path: f[1], To: f[2]}, nil)
		default:
			n.t.Fatalf("script: unknown operation %q", line)
		}
		n.checkModel(line)
	}
}

// scriptTree builds a base tree from "d/" (directory) and "f:SIZE" entries.
func scriptTree(rng *rand.Rand, spec string) map[string]*fent {
	t := map[string]*fent{"": {dir: true, mode: 0o755}}
	for _, e := range strings.Fields(spec) {
		if p, ok := strings.CutSuffix(e, "/"); ok {
			t[p] = &fent{dir: true, mode: 0o755}
			continue
		}
		p, size, _ := strings.Cut(e, ":")
		n, _ := strconv.Atoi(size)
		t[p] = &fent{data: randomData(rng, n), mode: 0o644}
	}
	return t
}

func TestPlanScenarios(t *testing.T) {
	cases := []struct {
		name     string
		base     string
		src, tgt string
		moves    int   // unstaged moves expected
		wholes   int   // whole items expected (-1: don't check)
		bytes    int64 // plan bytes expected (-1: don't check)
	}{
		{name: "rename only", base: "a:3000", src: "mv a b", moves: 1, bytes: 0},
		{name: "rename over an existing file", base: "a:3000 b:100", src: "mv a b", moves: 1, bytes: 0},
		{name: "swap through a temporary", base: "a:700 b:900", src: "mv a t\nmv b a\nmv t b", moves: 2, bytes: 0},
		{name: "exchange", base: "d/ d/x:600 e:800", src: "xchg d e", moves: 2, bytes: 0},
		{name: "chain", base: "a:700 b:900", src: "mv b c\nmv a b", moves: 2, bytes: 0},
		{name: "directory rename with a write inside", base: "d/ d/f:5000 d/g:100",
			src: "mv d e\nwrite e/f 1000 10", moves: 1, bytes: 512},
		{name: "move out of a deleted directory", base: "d/ d/f:4000 d/x:100",
			src: "mv d/f g\nrm d", moves: 1, bytes: 0},
		{name: "target rename undone", base: "a:2000", tgt: "mv a b", moves: 1, bytes: 0},
		{name: "both renamed differently", base: "a:2000", src: "mv a b", tgt: "mv a c", moves: 1, bytes: 0},
		{name: "both renamed alike", base: "a:2000", src: "mv a b\nwrite b 0 1", tgt: "mv a b\nwrite b 600 1",
			moves: 0, bytes: 1024},
		{name: "union of zones", base: "f:10000", src: "write f 0 1", tgt: "write f 5000 1", moves: 0, bytes: 1024},
		{name: "truncate then extend", base: "f:10000", src: "trunc f 700\ntrunc f 3000", moves: 0, bytes: 3000 - 512},
		{name: "file replaced by a directory", base: "f:1000", src: "rm f\nmkdir f\ncreate f/g\nwrite f/g 0 10",
			moves: 0, wholes: 1, bytes: -1},
		{name: "new directory with a file moved in", base: "big:50000", src: "mkdir n\nmv big n/big",
			moves: 1, wholes: 1, bytes: 0},
		{
			// The target did the same move into a directory the source
			// replaced: the object is at its final path on the target, but
			// inside a directory that moves away. It must move too.
			name:  "same path, unstable region",
			base:  "Y/ P/ o:3000",
			tgt:   "mkdir Y/x\nmv o Y/x/k",
			src:   "mv Y Q\nmv P Y\nmkdir Y/x\nmv o Y/x/k",
			moves: 3, wholes: -1, bytes: -1,
		},
		{
			// A base object moves into a new directory where the target
			// still holds another file of that name.
			name:  "destination occupied inside a whole item",
			base:  "X/ X/k/ X/k/z:10 o/ o/f:100",
			src:   "rm X\nmkdir X\nmv o X/k",
			moves: 1, wholes: 1, bytes: 0,
		},
		{name: "metadata only", base: "d/ d/f:10", src: "chmod d/f\nchmod d", moves: 0, bytes: 0},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 9))
			base := scriptTree(rng, c.base)
			src := newSimNode(t, "source", base)
			tgt := newSimNode(t, "target", base)
			src.script(rng, c.src)
			tgt.script(rng, c.tgt)
			pl, err := NewPlan(src.m, tgt.m, PlanOptions{Stat: src.stat})
			if err != nil {
				t.Fatal(err)
			}
			if err := checkPlanShape(pl); err != nil {
				t.Fatalf("%v\n%s", err, dumpPlan(pl))
			}
			wholes := 0
			for _, it := range pl.Items {
				if it.Kind == ItemWhole {
					wholes++
				}
			}
			got := fmt.Sprintf("moves %d wholes %d bytes %d", len(pl.Unstage), wholes, pl.Bytes)
			if len(pl.Unstage) != c.moves || (c.wholes >= 0 && wholes != c.wholes) || (c.bytes >= 0 && pl.Bytes != c.bytes) {
				t.Errorf("%s; want moves %d wholes %d bytes %d\n%s", got, c.moves, c.wholes, c.bytes, dumpPlan(pl))
			}
			if !tgt.applyPlan(src, pl, -1) {
				t.Fatal("interrupted without a budget")
			}
			if err := sameTrees(src, tgt); err != nil {
				t.Fatalf("%v\n%s\nsource:\n%s\ntarget:\n%s", err, dumpPlan(pl), src.dump(), tgt.dump())
			}
		})
	}
}
