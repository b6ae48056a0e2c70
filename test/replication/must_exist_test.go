package replication

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMustExistBlocksStart: both nodes lose power; the primary comes back
// without its data disk (an empty filesystem mounted where the replicated
// directory's disk should be, so its must_exist file is missing). It must
// not start the application on that directory: it holds in WAIT with the
// reason, and its peer, which holds the same data, takes over. Once the disk is back it becomes SECOND and both trees end
// identical.
func TestMustExistBlocksStart(t *testing.T) {
	rc := newReplCluster(t, clusterOpts{mustExist: []string{"MARKER"}})
	prim, second := rc.firstStart()
	mustWrite(t, rc.dirs[prim.Name]+"/data", []byte("written while in sync\n"))
	waitClean(t, prim)

	// Both at once: nobody fails over before the power loss.
	for _, n := range []string{second.Name, prim.Name} {
		if err := rc.node(n).Host.Freeze(); err != nil {
			t.Fatal(err)
		}
	}
	rc.powerOff(second)
	rc.powerOff(prim)

	// The disk of the old primary is missing: the dead daemon's FUSE mount
	// goes, an empty filesystem takes the disk's place.
	dir := rc.dirs[prim.Name]
	for range 16 {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			if !errors.Is(err, unix.EINVAL) {
				t.Fatalf("release the dead daemon's mount on %s: %v", dir, err)
			}
			break
		}
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
		t.Fatalf("mount an empty filesystem on %s: %v", dir, err)
	}
	diskBack := false
	restoreDisk := func() {
		if !diskBack {
			diskBack = true
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount the empty filesystem from %s: %v", dir, err)
			}
		}
	}
	t.Cleanup(restoreDisk)

	restarted := time.Now()
	for _, n := range []string{prim.Name, second.Name} {
		if err := rc.node(n).Restart(ctxFor(t, waitLong), true); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, second, "ALONE", "Ready")
	st := waitState(t, prim, "WAIT", "")
	if !strings.Contains(st.Reason, `must_exist "MARKER" is missing`) {
		t.Errorf("%s waits for another reason: %q", prim.Name, st.Reason)
	}
	waitEvent(t, prim, 0, "replicated directories not usable", "MARKER")
	// Refused (here first because the peer serves; core/mirror's
	// must_exist transcript covers the refusal for the missing file).
	if err := prim.Command(ctxFor(t, 10*time.Second), "prim"); err == nil {
		t.Errorf("halo prim on %s without its must_exist file was accepted", prim.Name)
	}
	// Give it time to do the wrong thing.
	time.Sleep(2 * time.Second)
	if st := waitState(t, prim, "WAIT", ""); !strings.Contains(st.Reason, "MARKER") {
		t.Errorf("%s left WAIT or changed its reason: %+v", prim.Name, st)
	}
	runs, err := prim.ScriptRuns()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.Begin.After(restarted) && (r.Script == "start_prim" || r.Script == "start_second") {
			t.Errorf("%s ran %s without its data disk: %s", prim.Name, r.Script, r)
		}
	}

	// The disk is back: the daemon mounts it by itself, the node joins as
	// SECOND and receives what changed.
	restoreDisk()
	waitRoles(t, second, prim)
	rc.waitVerified(second)
}
