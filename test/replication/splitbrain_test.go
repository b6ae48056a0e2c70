package replication

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// SPEC §2.2 split brain: both nodes serve and write while cut from each
// other; when they reconnect the policy's loser (node2 here) copies the
// files it changed to its quarantine folder with a manifest, resyncs, and
// both trees end identical.
func TestSplitBrainQuarantine(t *testing.T) {
	rc := newReplCluster(t, clusterOpts{splitBrain: "node1"})
	n1, n2 := rc.firstStart()
	d1, d2 := rc.dirs[n1.Name], rc.dirs[n2.Name]
	mustWrite(t, filepath.Join(d1, "shared.txt"), []byte("before the split\n"))
	rc.waitVerified(n1)

	if err := n2.Host.CutAll(); err != nil {
		t.Fatal(err)
	}
	waitState(t, n1, "ALONE", "Ready")
	waitState(t, n2, "ALONE", "Ready")
	mustWrite(t, filepath.Join(d1, "shared.txt"), []byte("node1's version\n"))
	mustWrite(t, filepath.Join(d1, "node1-only.txt"), []byte("written on node1 during the split\n"))
	mustWrite(t, filepath.Join(d2, "shared.txt"), []byte("node2's version\n"))
	mustWrite(t, filepath.Join(d2, "node2-only.txt"), []byte("written on node2 during the split\n"))

	seq := lastSeq(t, n2)
	if err := n2.Host.HealAll(); err != nil {
		t.Fatal(err)
	}
	waitRoles(t, n1, n2)
	e := waitEvent(t, n2, seq, "split brain:", "MANIFEST.json")
	t.Logf("%s: %s", n2.Name, e.Text)

	// The quarantine folder: <data>/<module>/splitbrain/<timestamp>/.
	qroot := filepath.Join(n2.DataDir, module, "splitbrain")
	ents, err := os.ReadDir(qroot)
	if err != nil || len(ents) != 1 {
		t.Fatalf("quarantine folder %s: %v entries, error %v", qroot, len(ents), err)
	}
	q := filepath.Join(qroot, ents[0].Name())
	for name, want := range map[string]string{"shared.txt": "node2's version\n", "node2-only.txt": "written on node2 during the split\n"} {
		got, err := os.ReadFile(filepath.Join(q, name))
		if err != nil || string(got) != want {
			t.Errorf("quarantined %s: %q, %v; want node2's content %q", name, got, err, want)
		}
	}
	mf, err := os.ReadFile(filepath.Join(q, "MANIFEST.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(mf) || !strings.Contains(string(mf), "node2-only.txt") || !strings.Contains(string(mf), "shared.txt") {
		t.Errorf("manifest does not list the quarantined files:\n%s", mf)
	}
	rc.waitVerified(n1)
	if b, err := os.ReadFile(filepath.Join(d2, "shared.txt")); err != nil || string(b) != "node1's version\n" {
		t.Errorf("%s's shared.txt after the resync: %q, %v; want the winner's", n2.Name, b, err)
	}
	if _, err := os.Stat(filepath.Join(d2, "node2-only.txt")); !os.IsNotExist(err) {
		t.Errorf("%s still holds node2-only.txt outside the quarantine: %v", n2.Name, err)
	}
}
