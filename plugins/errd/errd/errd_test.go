package errd

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/halo-ha/halo/sdk/base"
	"github.com/halo-ha/halo/sdk/checker"
	"github.com/halo-ha/halo/sdk/sdktest"
)

// uniqueName is a process name no other process on the machine has, so
// counts are exact even while other tests run.
func uniqueName(t *testing.T) string {
	return fmt.Sprintf("errd%d", os.Getpid()%100000000)
}

// sleeper copies sleep to dir/name, so its processes are named name.
func sleeper(t *testing.T, name string) string {
	t.Helper()
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatalf("find sleep: %v", err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	path := filepath.Join(t.TempDir(), name)
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// spawn starts a process and kills it (by PID) when the test ends; the
// returned function kills it earlier.
func spawn(t *testing.T, cred *syscall.Credential, path string, args ...string) (kill func()) {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	done := false
	kill = func() {
		if done {
			return
		}
		done = true
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // reaped: no zombie left to count
	}
	t.Cleanup(kill)
	return kill
}

func configure(t *testing.T, src string) (*Checker, error) {
	t.Helper()
	c := New().(*Checker)
	value := sdktest.DecodeConfig(t, c.Schema(), src)
	err := c.Configure(context.Background(), &base.Config{Module: sdktest.TestModule(t, "t"), Value: value, Logger: sdktest.Logger(t)})
	return c, err
}

func check(t *testing.T, c *Checker) checker.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.Check(ctx)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return res
}

func wantResult(t *testing.T, c *Checker, status checker.Status, msgPrefix string) {
	t.Helper()
	res := check(t, c)
	if res.Status != status || !strings.HasPrefix(res.Message, msgPrefix) {
		t.Errorf("check = %s %q, want %s %q...", res.Status, res.Message, status, msgPrefix)
	}
}

func TestCountsByName(t *testing.T) {
	name := uniqueName(t)
	bin := sleeper(t, name)
	c, err := configure(t, fmt.Sprintf("name = %q\nat_least = 2\nat_most = 3\n", name))
	if err != nil {
		t.Fatal(err)
	}
	wantResult(t, c, checker.StatusDown, fmt.Sprintf("0 processes match name=%s, at_least 2", name))
	spawn(t, nil, bin, "3600")
	wantResult(t, c, checker.StatusDown, fmt.Sprintf("1 process match name=%s, at_least 2", name))
	spawn(t, nil, bin, "3600")
	wantResult(t, c, checker.StatusUp, fmt.Sprintf("2 processes match name=%s (pid ", name))
	spawn(t, nil, bin, "3600")
	kill4 := spawn(t, nil, bin, "3600")
	wantResult(t, c, checker.StatusDown, fmt.Sprintf("4 processes match name=%s, at_most 3 (pid ", name))
	kill4()
	wantResult(t, c, checker.StatusUp, fmt.Sprintf("3 processes match name=%s", name))
}

func TestDefaultAtLeastOne(t *testing.T) {
	name := uniqueName(t)
	bin := sleeper(t, name)
	c, err := configure(t, fmt.Sprintf("name = %q\n", name))
	if err != nil {
		t.Fatal(err)
	}
	wantResult(t, c, checker.StatusDown, fmt.Sprintf("0 processes match name=%s, at_least 1", name))
	kill := spawn(t, nil, bin, "3600")
	wantResult(t, c, checker.StatusUp, "1 process match")
	kill()
	wantResult(t, c, checker.StatusDown, "0 processes match")
}

// TestLongName: the kernel cuts comm at 15 characters; the full name is
// confirmed with argv[0], and a name that only shares the prefix does not
// match.
func TestLongName(t *testing.T) {
	long := uniqueName(t) + "-a-rather-long-daemon"
	bin := sleeper(t, long)
	spawn(t, nil, bin, "3600")
	c, err := configure(t, fmt.Sprintf("name = %q\n", long))
	if err != nil {
		t.Fatal(err)
	}
	wantResult(t, c, checker.StatusUp, "1 process match")
	other, err := configure(t, fmt.Sprintf("name = %q\n", long[:commLen]+"-something-else"))
	if err != nil {
		t.Fatal(err)
	}
	wantResult(t, other, checker.StatusDown, "0 processes match")
}

func TestPatternOnFullCommandLine(t *testing.T) {
	// sleep accepts fractional seconds: a unique argument makes a unique
	// command line.
	arg := fmt.Sprintf("3600.%d", os.Getpid())
	c, err := configure(t, fmt.Sprintf("pattern = %q\n", `^sleep 3600\.`+strconv.Itoa(os.Getpid())+`$`))
	if err != nil {
		t.Fatal(err)
	}
	wantResult(t, c, checker.StatusDown, "0 processes match pattern=")
	spawn(t, nil, "sleep", arg)
	spawn(t, nil, "sleep", arg)
	wantResult(t, c, checker.StatusUp, "2 processes match pattern=")
}

func TestUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a process as another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	name := uniqueName(t)
	bin := sleeper(t, name)
	// The copy must be readable and executable by nobody.
	for _, dir := range []string{filepath.Dir(bin), filepath.Dir(filepath.Dir(bin))} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	spawn(t, nil, bin, "3600") // root's: must not count
	c, err := configure(t, fmt.Sprintf("name = %q\nuser = \"nobody\"\n", name))
	if err != nil {
		t.Fatal(err)
	}
	wantResult(t, c, checker.StatusDown, fmt.Sprintf("0 processes match name=%s user=nobody, at_least 1", name))
	spawn(t, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, bin, "3600")
	wantResult(t, c, checker.StatusUp, fmt.Sprintf("1 process match name=%s user=nobody", name))
	byUID, err := configure(t, fmt.Sprintf("name = %q\nuser = %q\n", name, nobody.Uid))
	if err != nil {
		t.Fatal(err)
	}
	wantResult(t, byUID, checker.StatusUp, "1 process match")
}

func TestZombiesDoNotCount(t *testing.T) {
	name := uniqueName(t)
	bin := sleeper(t, name)
	cmd := exec.Command(bin, "0.01")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Wait() })
	// Not reaped yet: a zombie until Wait.
	waitState(t, cmd.Process.Pid, "Z")
	c, err := configure(t, fmt.Sprintf("name = %q\n", name))
	if err != nil {
		t.Fatal(err)
	}
	wantResult(t, c, checker.StatusDown, "0 processes match")
}

func waitState(t *testing.T, pid int, state string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := readStatus(fmt.Sprintf("/proc/%d/status", pid))
		if err == nil && st.state == state {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d never reached state %s", pid, state)
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{``, "set name or pattern"},
		{`name = "a"` + "\n" + `pattern = "b"`, "pattern: set name or pattern, not both"},
		{`pattern = "("`, "pattern: compile:"},
		{`name = "a/b"`, "name: a process name has no '/'"},
		{`name = "a"` + "\n" + `at_least = -1`, "at_least: must be 0 or more"},
		{`name = "a"` + "\n" + `at_least = 3` + "\n" + `at_most = 2`, "at_most: 2 is below at_least 3"},
		{`name = "a"` + "\n" + `at_least = 0`, "at_least: at_least 0 without at_most can never be down"},
		{`name = "a"` + "\n" + `user = "no-such-user-here"`, "user: look up user:"},
	} {
		_, err := configure(t, tc.src)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: error %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestConformance(t *testing.T) {
	sdktest.CheckerConformance(t, New, `name = "init"`+"\nat_least = 0\nat_most = 1000\n",
		sdktest.WithBadConfig(`pattern = "(unclosed"`),
		sdktest.WithBadConfig(`name = "x"`+"\nat_least = 5\nat_most = 1\n"))
}
