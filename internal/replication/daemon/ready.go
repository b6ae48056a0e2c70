package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Readiness. The agent's machine lets a node serve, or become SECOND, only
// while its daemon says the replicated directories are usable
// (ctl.Status.NotReady empty): every must_exist file is there, so the
// directories are the data disk and not the empty mount point beneath it,
// and the daemon holds them (captured, or read-only as a target). Without
// that, an application would start on directories whose writes are
// neither replicated nor journaled, or a resync would fill the wrong disk.

// retryEvery is how often a role that could not be taken (a refused
// mount) is tried again: the disk may be mounted later, and nobody else
// asks (the machine asks for a role once).
const retryEvery = 2 * time.Second

// notReady tells why the replicated directories cannot be used now, ""
// when they can. A missing must_exist file counts whatever the role: the
// file is looked up through the mount, which serves the directory
// underneath.
func (d *Daemon) notReady() string {
	if err := d.checkMustExist("use"); err != nil {
		return err.Error()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.src == nil && d.tgt == nil && d.roleErr != "" {
		// Not while a role changes: the directories are between two
		// mounts for a moment.
		return "replicated directories not held by the replication daemon: " + d.roleErr
	}
	return ""
}

// retryLoop takes again the last role asked for while it is not held.
func (d *Daemon) retryLoop(ctx context.Context) {
	tk := time.NewTicker(retryEvery)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		d.mu.Lock()
		held := d.src != nil || d.tgt != nil
		w := d.want
		d.mu.Unlock()
		if held || w.role == "" {
			continue
		}
		// setRole logs a repeated failure once.
		_ = d.setRole(ctx, w.role, w.peer, 0, w.primary)
	}
}

// wantedRole is the last role asked for (setRole).
type wantedRole struct {
	role, peer string
	primary    bool
}

// checkMustExist refuses to take a role (what: "replicate", ...) on
// directories whose must_exist files are missing.
func (d *Daemon) checkMustExist(what string) error {
	for _, dir := range d.repl.Dirs {
		for _, rel := range dir.MustExist {
			if _, err := os.Lstat(filepath.Join(dir.Path, rel)); err != nil {
				return fmt.Errorf("refusing to %s %s: must_exist %q is missing (%v): is the data disk mounted?", what, dir.Path, rel, err)
			}
		}
	}
	return nil
}
