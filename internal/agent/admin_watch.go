package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/halo-ha/halo/internal/bundle"
	"github.com/halo-ha/halo/internal/config"
)

// watchSettle is how long module files must stay quiet before an edit is
// judged: an editor's save is several events, a copy of a directory many.
const watchSettle = 500 * time.Millisecond

// watchModules watches <config-dir>/modules, each module directory and its
// scripts, and reports a module whose files no longer match what it runs
// as "changed on disk, not applied", in its event log and its status.
// Nothing is applied: `halo reload` does that.
func (a *Agent) watchModules(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.logger.Warn("module files are not watched: edits will not be reported", "error", err)
		return
	}
	defer w.Close()
	a.addWatches(w)
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Has(fsnotify.Create) {
				// A new module or scripts directory: watch it too.
				if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
					a.addWatches(w)
				}
			}
			settle.Reset(watchSettle)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			a.logger.Warn("watch of module files", "error", err)
		case <-settle.C:
			a.addWatches(w)
			a.checkDisk()
		}
	}
}

// addWatches watches the configuration directory (for modules/ to
// appear), modules/, every module directory and scripts/.
func (a *Agent) addWatches(w *fsnotify.Watcher) {
	dirs := []string{a.opts.ConfigDir, a.modulesDir()}
	entries, _ := os.ReadDir(a.modulesDir())
	for _, e := range entries {
		if e.IsDir() {
			d := filepath.Join(a.modulesDir(), e.Name())
			dirs = append(dirs, d, filepath.Join(d, bundle.ScriptsDir))
		}
	}
	watched := map[string]bool{}
	for _, p := range w.WatchList() {
		watched[p] = true
	}
	for _, d := range dirs {
		if watched[d] {
			continue
		}
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			continue
		}
		if err := w.Add(d); err != nil {
			a.logger.Warn("cannot watch module directory", "dir", d, "error", err)
		}
	}
}

// checkDisk compares each running module's files with what it runs and
// reports a difference once per on-disk version.
func (a *Agent) checkDisk() {
	// Not while an install or reload moves files and records checksums.
	a.admin.mu.Lock()
	defer a.admin.mu.Unlock()
	for _, r := range a.moduleRunners() {
		name := r.mod.Name
		dir := filepath.Join(a.modulesDir(), name)
		sum, err := bundle.DirChecksum(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "no "+config.ModuleFileName) {
				sum = "removed"
			} else {
				sum = "unreadable: " + err.Error()
			}
		}
		a.mu.Lock()
		applied, reported := a.admin.applied[name], a.admin.reported[name]
		changed := sum != applied
		switch {
		case changed && reported != sum:
			a.admin.reported[name] = sum
		case !changed && reported != "":
			delete(a.admin.reported, name)
		default:
			a.mu.Unlock()
			continue
		}
		a.mu.Unlock()
		r.mu.Lock()
		r.status.ConfigChanged = changed
		r.mu.Unlock()
		switch {
		case changed && sum == "removed":
			r.events.add("config", "warn", fmt.Sprintf("module directory removed from disk, not applied: the module still runs %s; halo module uninstall %s removes it once stopped", applied, name))
			a.logger.Warn("module directory removed from disk while the module runs", "module", name)
		case changed:
			r.events.add("config", "warn", fmt.Sprintf("configuration changed on disk, not applied (on disk %s, running %s): halo reload %s applies what may change live", sum, applied, name))
			a.logger.Warn("module configuration changed on disk, not applied", "module", name, "disk", sum, "running", applied)
		default:
			r.events.add("config", "info", "configuration on disk matches the running one again")
		}
	}
}
