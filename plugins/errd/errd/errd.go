// Package errd is the errd checker: it counts the processes that match a
// name or a command-line pattern (optionally owned by one user) and is up
// while the count is within at_least..at_most.
package errd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/schema"
)

// Version is the plugin's own version.
const Version = "1.0.0"

// commLen is the length the kernel truncates a process name (comm) to.
const commLen = 15

// maxListed bounds how many PIDs a message names.
const maxListed = 5

type config struct {
	Name    string `hcl:"name"`
	Pattern string `hcl:"pattern"`
	User    string `hcl:"user"`
	AtLeast int    `hcl:"at_least"`
	AtMost  *int   `hcl:"at_most"`
}

// settings is a validated configuration, ready to match processes.
type settings struct {
	name    string
	pattern *regexp.Regexp
	uid     int // -1: any user
	user    string
	atLeast int
	atMost  int // -1: no maximum
}

// Checker is the errd checker.
type Checker struct {
	mu  sync.RWMutex
	cfg *settings
	// procRoot is /proc; tests may point it elsewhere.
	procRoot string
}

var _ checker.Checker = (*Checker)(nil)

// New returns an unconfigured errd checker.
func New() checker.Checker { return &Checker{procRoot: "/proc"} }

// Info names the plugin.
func (c *Checker) Info() base.PluginInfo {
	return base.PluginInfo{Name: "errd", Version: Version, Description: "processes by name or command-line pattern, counted against at_least/at_most"}
}

// Schema declares the checker's attributes.
func (c *Checker) Schema() *schema.Schema {
	return &schema.Schema{Attributes: []schema.Attribute{
		{Name: "name", Type: schema.TypeString, Description: "exact process name (/proc/<pid>/comm, or the base name of argv[0] for names longer than 15 characters)"},
		{Name: "pattern", Type: schema.TypeString, Description: "regular expression (RE2) matched against the full command line, arguments joined by spaces"},
		{Name: "user", Type: schema.TypeString, Description: "only processes whose real user is this name or numeric UID"},
		{Name: "at_least", Type: schema.TypeNumber, Default: 1, Description: "down when fewer processes match"},
		{Name: "at_most", Type: schema.TypeNumber, Description: "down when more processes match; unset = no maximum"},
	}}
}

// Configure validates and applies a configuration.
func (c *Checker) Configure(_ context.Context, cfg *base.Config) error {
	var raw config
	if err := cfg.Decode(&raw); err != nil {
		return err
	}
	s := &settings{name: raw.Name, uid: -1, user: raw.User, atLeast: raw.AtLeast, atMost: -1}
	var errs []error
	switch {
	case raw.Name == "" && raw.Pattern == "":
		errs = append(errs, schema.Errorf("", "set name or pattern"))
	case raw.Name != "" && raw.Pattern != "":
		errs = append(errs, schema.Errorf("pattern", "set name or pattern, not both"))
	}
	if strings.Contains(raw.Name, "/") {
		errs = append(errs, schema.Errorf("name", "a process name has no '/': %q", raw.Name))
	}
	if raw.Pattern != "" {
		re, err := regexp.Compile(raw.Pattern)
		if err != nil {
			errs = append(errs, schema.Errorf("pattern", "compile: %v", err))
		}
		s.pattern = re
	}
	if raw.User != "" {
		uid, err := lookupUID(raw.User)
		if err != nil {
			errs = append(errs, schema.Errorf("user", "%v", err))
		}
		s.uid = uid
	}
	if raw.AtLeast < 0 {
		errs = append(errs, schema.Errorf("at_least", "must be 0 or more, not %d", raw.AtLeast))
	}
	if raw.AtMost != nil {
		s.atMost = *raw.AtMost
		if *raw.AtMost < 0 {
			errs = append(errs, schema.Errorf("at_most", "must be 0 or more, not %d", *raw.AtMost))
		} else if *raw.AtMost < raw.AtLeast {
			errs = append(errs, schema.Errorf("at_most", "%d is below at_least %d", *raw.AtMost, raw.AtLeast))
		}
	}
	if raw.AtLeast == 0 && raw.AtMost == nil {
		errs = append(errs, schema.Errorf("at_least", "at_least 0 without at_most can never be down"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.mu.Lock()
	c.cfg = s
	c.mu.Unlock()
	return nil
}

func lookupUID(name string) (int, error) {
	if uid, err := strconv.Atoi(name); err == nil {
		if uid < 0 {
			return -1, fmt.Errorf("negative UID %d", uid)
		}
		return uid, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return -1, fmt.Errorf("look up user: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return -1, fmt.Errorf("user %s has a non-numeric UID %q", name, u.Uid)
	}
	return uid, nil
}

// Check counts the matching processes.
func (c *Checker) Check(ctx context.Context) (checker.Result, error) {
	c.mu.RLock()
	s := c.cfg
	c.mu.RUnlock()
	if s == nil {
		return checker.Result{}, errors.New("errd: not configured")
	}
	pids, err := c.match(ctx, s)
	if err != nil {
		return checker.Result{}, err
	}
	what := s.describe()
	n := len(pids)
	switch {
	case n < s.atLeast:
		return checker.Down("%d %s match %s, at_least %d", n, plural(n), what, s.atLeast), nil
	case s.atMost >= 0 && n > s.atMost:
		return checker.Down("%d %s match %s, at_most %d%s", n, plural(n), what, s.atMost, listPIDs(pids)), nil
	default:
		return checker.Up("%d %s match %s%s", n, plural(n), what, listPIDs(pids)), nil
	}
}

func (s *settings) describe() string {
	var b strings.Builder
	if s.pattern != nil {
		fmt.Fprintf(&b, "pattern=%q", s.pattern.String())
	} else {
		fmt.Fprintf(&b, "name=%s", s.name)
	}
	if s.user != "" {
		fmt.Fprintf(&b, " user=%s", s.user)
	}
	return b.String()
}

func plural(n int) string {
	if n == 1 {
		return "process"
	}
	return "processes"
}

func listPIDs(pids []int) string {
	if len(pids) == 0 {
		return ""
	}
	parts := make([]string, 0, maxListed)
	for i, p := range pids {
		if i == maxListed {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, strconv.Itoa(p))
	}
	return " (pid " + strings.Join(parts, ", ") + ")"
}

// match scans the process table. Processes that vanish during the scan are
// skipped: they no longer count.
func (c *Checker) match(ctx context.Context, s *settings) ([]int, error) {
	entries, err := os.ReadDir(c.procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var pids []int
	for i, e := range entries {
		if i%256 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		ok, err := c.matches(s, pid)
		if err != nil {
			continue
		}
		if ok {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func (c *Checker) matches(s *settings, pid int) (bool, error) {
	dir := filepath.Join(c.procRoot, strconv.Itoa(pid))
	st, err := readStatus(filepath.Join(dir, "status"))
	if err != nil {
		return false, err
	}
	// A zombie has exited; it only waits for its parent to reap it.
	if st.state == "Z" || st.state == "X" {
		return false, nil
	}
	if s.uid >= 0 && st.uid != s.uid {
		return false, nil
	}
	if s.pattern != nil {
		argv, err := readCmdline(filepath.Join(dir, "cmdline"))
		if err != nil || len(argv) == 0 {
			return false, err // kernel threads have no command line
		}
		return s.pattern.MatchString(strings.Join(argv, " ")), nil
	}
	if st.name == s.name {
		return true, nil
	}
	// comm is cut at 15 characters: confirm a longer name with argv[0].
	if len(s.name) > commLen && st.name == s.name[:commLen] {
		argv, err := readCmdline(filepath.Join(dir, "cmdline"))
		if err != nil || len(argv) == 0 {
			return false, err
		}
		return filepath.Base(argv[0]) == s.name, nil
	}
	return false, nil
}

type procStatus struct {
	name  string
	state string
	uid   int
}

// readStatus reads /proc/<pid>/status, whose Name line is unambiguous
// (unlike /proc/<pid>/stat, where a name may hold spaces and parentheses).
func readStatus(path string) (procStatus, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return procStatus{}, err
	}
	st := procStatus{uid: -1}
	for line := range strings.Lines(string(data)) {
		key, val, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ":")
		if !ok {
			continue
		}
		val = strings.TrimLeft(val, " \t")
		switch key {
		case "Name":
			st.name = unescapeName(val)
		case "State":
			st.state, _, _ = strings.Cut(val, " ")
		case "Uid":
			real, _, _ := strings.Cut(val, "\t")
			if st.uid, err = strconv.Atoi(real); err != nil {
				return procStatus{}, fmt.Errorf("parse %s: Uid %q", path, val)
			}
		}
	}
	if st.uid < 0 {
		return procStatus{}, fmt.Errorf("parse %s: no Uid line", path)
	}
	return st, nil
}

// unescapeName undoes the kernel's escaping of the Name field: a newline is
// "\n" and a backslash "\\".
func unescapeName(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	return strings.NewReplacer(`\n`, "\n", `\\`, `\`).Replace(s)
}

func readCmdline(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	data = []byte(strings.TrimRight(string(data), "\x00"))
	if len(data) == 0 {
		return nil, nil
	}
	return strings.Split(string(data), "\x00"), nil
}
