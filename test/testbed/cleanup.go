package testbed

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	lockName          = ".lock"
	defaultCmdTimeout = 10 * time.Second
)

// scratchRoot holds one directory per bed, named by its prefix.
func scratchRoot() string { return filepath.Join(os.TempDir(), "halo-testbed") }

// CleanupStale removes what beds of dead processes left behind: their
// namespaces (killing any process still inside, by PID), mounts under their
// scratch directories and the directories. A bed is dead when the process
// named in its prefix is gone, or when nobody holds its lock file (the PID
// was reused). Beds of live processes, including other test binaries running
// at the same time, are left alone. It returns the prefixes it removed. New
// calls it.
func CleanupStale() ([]string, error) {
	prefixes, err := leftoverPrefixes("")
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, prefix := range prefixes {
		stale, unlock := isStale(prefix)
		if !stale {
			continue
		}
		err := removeBed(prefix)
		unlock()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, prefix)
	}
	return removed, errors.Join(errs...)
}

// Cleanup removes every bed whose prefix starts with prefix, dead or alive:
// for a person cleaning up by hand (Cleanup("hb") removes all beds), or a
// test removing a bed it knows is dead. prefix must start with "hb".
func Cleanup(prefix string) error {
	if !strings.HasPrefix(prefix, "hb") {
		return fmt.Errorf("cleanup %q: bed prefixes start with \"hb\"", prefix)
	}
	prefixes, err := leftoverPrefixes(prefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range prefixes {
		errs = append(errs, removeBed(p))
	}
	return errors.Join(errs...)
}

// leftoverPrefixes lists the bed prefixes found among named namespaces and
// scratch directories, restricted to those starting with filter.
func leftoverPrefixes(filter string) ([]string, error) {
	var names []string
	for _, dir := range []string{netnsDir, scratchRoot()} {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("list %s: %w", dir, err)
		}
		for _, e := range entries {
			names = append(names, e.Name())
		}
	}
	var prefixes []string
	for _, n := range names {
		m := prefixRE.FindString(n)
		if m == "" || !strings.HasPrefix(m, filter) || slices.Contains(prefixes, m) {
			continue
		}
		prefixes = append(prefixes, m)
	}
	slices.Sort(prefixes)
	return prefixes, nil
}

// isStale reports whether the bed with this prefix belongs to a dead
// process. When it does and its lock file exists, the lock is held until
// unlock is called, so two cleaners never race on one bed.
func isStale(prefix string) (stale bool, unlock func()) {
	noop := func() {}
	pid, err := strconv.Atoi(prefixRE.FindStringSubmatch(prefix)[1])
	if err != nil || pid == os.Getpid() {
		return false, noop
	}
	alive := syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM)
	f, err := os.OpenFile(filepath.Join(scratchRoot(), prefix, lockName), os.O_RDWR, 0)
	if err != nil {
		// No lock file: the directory is gone or not made yet; only the
		// PID can tell.
		return !alive, noop
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false, noop // its owner holds it: alive
	}
	return true, func() { f.Close() }
}

// removeBed kills the processes in the bed's namespaces and removes the
// namespaces, mounts and scratch directory.
func removeBed(prefix string) error {
	var errs []error
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("list %s: %w", netnsDir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		if id, err := nsIDOf(filepath.Join(netnsDir, name)); err == nil {
			if err := killInNetns(id, 5*time.Second); err != nil {
				errs = append(errs, fmt.Errorf("namespace %s: %w", name, err))
			}
		}
		if err := deleteNamespace(name); err != nil {
			errs = append(errs, err)
		}
	}
	dir := filepath.Join(scratchRoot(), prefix)
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	return errors.Join(errs...)
}

func killInNetns(id nsID, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := pidsInNetns(id)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v survived SIGKILL for %v", pids, timeout)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL) // ESRCH: already gone
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// deleteNamespace removes a named namespace with `ip netns del`. The
// namespace itself goes when its last process and open handle do.
func deleteNamespace(name string) error {
	out, err := exec.Command("ip", "netns", "del", name).CombinedOutput()
	if err != nil {
		if _, serr := os.Stat(filepath.Join(netnsDir, name)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete namespace %s: %w: %s", name, err, out)
	}
	return nil
}

// unmountUnder lazily unmounts everything mounted at or below dir, deepest
// first: a FUSE daemon killed by Kill9 leaves its mount behind, and the
// directory could not be removed through it.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mounts = append(mounts, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, mp := range mounts {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space, …).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
