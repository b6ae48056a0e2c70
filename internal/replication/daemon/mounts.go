package daemon

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// fuseMountsAt lists the FUSE mounts stacked on dir (from
// /proc/self/mountinfo): a daemon killed with -9 leaves its mount behind,
// dead ("transport endpoint is not connected").
func fuseMountsAt(dir string) (int, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return 0, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) {
			continue
		}
		if unescapeMountPath(fields[4]) == dir && strings.HasPrefix(fields[sep+1], "fuse") {
			n++
		}
	}
	return n, sc.Err()
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// releaseStaleMount detaches FUSE mounts left over dir by an earlier
// daemon, so that the directory itself is served again. Only FUSE mounts
// are touched: a data disk mounted there is the directory.
func releaseStaleMount(dir string) error {
	for range 16 {
		n, err := fuseMountsAt(dir)
		if err != nil || n == 0 {
			return err
		}
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detach stale FUSE mount on %s: %w", dir, err)
		}
	}
	return fmt.Errorf("detach stale FUSE mounts on %s: still mounted after 16 attempts", dir)
}

// lazyUnmount detaches a busy mount.
func lazyUnmount(dir string) error { return unix.Unmount(dir, unix.MNT_DETACH) }

// slogFrom gives packages that log with log/slog the daemon's output.
func slogFrom(l hclog.Logger) *slog.Logger {
	return slog.New(slog.NewTextHandler(l.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true}), nil)).With("component", l.Name())
}
