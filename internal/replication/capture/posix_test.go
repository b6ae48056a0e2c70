package capture

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// posix runs one case's steps in a directory and logs what each returned.
type posix struct {
	t    *testing.T
	root string
	log  []string
}

func (c *posix) p(name string) string { return filepath.Join(c.root, name) }

// do records a step's result.
func (c *posix) do(step string, err error) {
	c.log = append(c.log, step+": "+errnoOf(err))
}

// note records a value a step observed.
func (c *posix) note(step string, format string, args ...any) {
	c.log = append(c.log, step+": "+fmt.Sprintf(format, args...))
}

func (c *posix) stat(step, name string) {
	var st unix.Stat_t
	if err := unix.Lstat(c.p(name), &st); err != nil {
		c.do(step, err)
		return
	}
	c.note(step, "mode=%o nlink=%d uid=%d gid=%d size=%d blocks>0=%v", st.Mode, st.Nlink, st.Uid, st.Gid, st.Size, st.Blocks > 0)
}

// sh runs a shell script in the directory as uid:gid (with a umask of 0
// when asked), recording its exit status and output.
func (c *posix) sh(step string, uid, gid uint32, script string) {
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = c.root
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.CombinedOutput()
	// Shells name the path they failed on: keep only the reason.
	msg := string(out)
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	c.note(step, "%v %q", err, strings.TrimSpace(msg))
}

var posixCases = []struct {
	name string
	run  func(c *posix)
}{
	{"create exclusive", func(c *posix) {
		f, err := os.OpenFile(c.p("f"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		c.do("create", err)
		f.Close()
		_, err = os.OpenFile(c.p("f"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		c.do("create again", err)
		f, err = os.OpenFile(c.p("f"), os.O_CREATE|os.O_WRONLY, 0o600)
		c.do("create without O_EXCL", err)
		f.Close()
		c.stat("mode kept", "f")
		_, err = os.OpenFile(c.p("missing/f"), os.O_CREATE|os.O_WRONLY, 0o644)
		c.do("create in a missing directory", err)
		c.do("mkdir", os.Mkdir(c.p("d"), 0o700))
		c.do("mkdir again", os.Mkdir(c.p("d"), 0o700))
		c.do("mkdir in a file", os.Mkdir(c.p("f/d"), 0o700))
		_, err = os.OpenFile(c.p("d"), os.O_WRONLY, 0)
		c.do("open a directory for writing", err)
		c.do("truncate a directory", os.Truncate(c.p("d"), 0))
	}},
	{"rename over existing", func(c *posix) {
		os.WriteFile(c.p("a"), []byte("from a"), 0o644)
		os.WriteFile(c.p("b"), []byte("from b"), 0o600)
		c.do("rename a over b", os.Rename(c.p("a"), c.p("b")))
		b, err := os.ReadFile(c.p("b"))
		c.note("b holds", "%q %v", b, err)
		c.stat("a gone", "a")
		c.stat("b mode", "b")
		os.Mkdir(c.p("d1"), 0o755)
		os.Mkdir(c.p("d2"), 0o755)
		os.Mkdir(c.p("full"), 0o755)
		os.WriteFile(c.p("full/x"), nil, 0o644)
		c.do("rename dir over empty dir", os.Rename(c.p("d1"), c.p("d2")))
		c.do("rename dir over non-empty dir", os.Rename(c.p("d2"), c.p("full")))
		c.do("rename file over dir", os.Rename(c.p("b"), c.p("d2")))
		c.do("rename dir over file", os.Rename(c.p("d2"), c.p("b")))
		c.do("rename missing", os.Rename(c.p("nope"), c.p("x")))
		c.do("rename to itself", os.Rename(c.p("b"), c.p("b")))
		c.do("noreplace over existing", unix.Renameat2(unix.AT_FDCWD, c.p("b"), unix.AT_FDCWD, c.p("full/x"), unix.RENAME_NOREPLACE))
		c.do("exchange with missing", unix.Renameat2(unix.AT_FDCWD, c.p("b"), unix.AT_FDCWD, c.p("none"), unix.RENAME_EXCHANGE))
		c.do("exchange file and dir", unix.Renameat2(unix.AT_FDCWD, c.p("b"), unix.AT_FDCWD, c.p("full"), unix.RENAME_EXCHANGE))
		c.stat("full is the file", "full")
		c.stat("b is the dir", "b")
	}},
	{"rename into itself", func(c *posix) {
		os.MkdirAll(c.p("d/e"), 0o755)
		c.do("rename d into d/e", os.Rename(c.p("d"), c.p("d/e/x")))
		c.do("rename d to d/x", os.Rename(c.p("d"), c.p("d/x")))
		c.do("rename d/e to d/e/f", os.Rename(c.p("d/e"), c.p("d/e/f")))
		c.do("rename . away", os.Rename(c.p("d/."), c.p("z")))
	}},
	{"rmdir and unlink", func(c *posix) {
		os.MkdirAll(c.p("d/e"), 0o755)
		os.WriteFile(c.p("f"), nil, 0o644)
		c.do("rmdir non-empty", os.Remove(c.p("d")))
		c.do("rmdir a file", unix.Rmdir(c.p("f")))
		c.do("unlink a directory", unix.Unlink(c.p("d/e")))
		c.do("unlink missing", unix.Unlink(c.p("nope")))
		c.do("rmdir empty", unix.Rmdir(c.p("d/e")))
		c.do("rmdir now empty", unix.Rmdir(c.p("d")))
		c.do("unlink file", unix.Unlink(c.p("f")))
		// An unlinked file stays usable through its descriptor.
		os.WriteFile(c.p("open"), []byte("kept"), 0o644)
		f, _ := os.OpenFile(c.p("open"), os.O_RDWR, 0)
		c.do("unlink open file", unix.Unlink(c.p("open")))
		_, err := f.WriteAt([]byte("still writable"), 0)
		c.do("write after unlink", err)
		buf := make([]byte, 14)
		_, err = f.ReadAt(buf, 0)
		c.note("read after unlink", "%q %v", buf, errnoOf(err))
		f.Close()
	}},
	{"hard links", func(c *posix) {
		os.WriteFile(c.p("f"), []byte("data"), 0o644)
		os.Mkdir(c.p("d"), 0o755)
		c.do("link", os.Link(c.p("f"), c.p("d/g")))
		c.do("link again", os.Link(c.p("f"), c.p("h")))
		c.stat("three names", "f")
		c.do("link over existing", os.Link(c.p("f"), c.p("h")))
		c.do("link a directory", os.Link(c.p("d"), c.p("d2")))
		c.do("unlink one", os.Remove(c.p("f")))
		c.stat("two names", "h")
		c.do("rename one link over the other", os.Rename(c.p("h"), c.p("d/g")))
		c.stat("both still there", "h")
		os.WriteFile(c.p("d/g"), []byte("changed through g"), 0o644)
		b, _ := os.ReadFile(c.p("h"))
		c.note("h sees it", "%q", b)
	}},
	{"symlinks", func(c *posix) {
		os.WriteFile(c.p("target"), []byte("t"), 0o644)
		c.do("symlink", os.Symlink("target", c.p("l")))
		c.do("dangling symlink", os.Symlink("nowhere/at/all", c.p("dangling")))
		c.do("symlink over existing", os.Symlink("x", c.p("l")))
		s, err := os.Readlink(c.p("l"))
		c.note("readlink", "%q %v", s, errnoOf(err))
		s, err = os.Readlink(c.p("dangling"))
		c.note("readlink dangling", "%q %v", s, errnoOf(err))
		_, err = os.Readlink(c.p("target"))
		c.do("readlink a file", err)
		c.stat("lstat", "l")
		b, err := os.ReadFile(c.p("l"))
		c.note("read through", "%q %v", b, errnoOf(err))
		_, err = os.OpenFile(c.p("l"), os.O_RDONLY|unix.O_NOFOLLOW, 0)
		c.do("open O_NOFOLLOW", err)
		_, err = os.ReadFile(c.p("dangling"))
		c.do("read dangling", err)
		c.do("write through a symlink creates the target", os.WriteFile(c.p("l2"), nil, 0o644))
		os.Symlink("made", c.p("l3"))
		c.do("create through dangling symlink", os.WriteFile(c.p("l3"), []byte("m"), 0o644))
		c.stat("made", "made")
	}},
	{"attributes", func(c *posix) {
		os.WriteFile(c.p("f"), []byte("x"), 0o644)
		os.Mkdir(c.p("d"), 0o755)
		c.do("chmod", unix.Chmod(c.p("f"), 0o4755))
		c.stat("setuid", "f")
		c.do("chown", os.Chown(c.p("f"), 1234, 5678))
		c.stat("chown clears setuid", "f")
		c.do("chmod sticky dir", unix.Chmod(c.p("d"), 0o1777))
		c.stat("sticky", "d")
		c.do("chown group only", os.Chown(c.p("f"), -1, 42))
		c.stat("group", "f")
		os.Symlink("f", c.p("l"))
		c.do("lchown", os.Lchown(c.p("l"), 7, 8))
		c.stat("symlink owner", "l")
		c.stat("target untouched", "f")
		c.do("utimes", os.Chtimes(c.p("f"), time.Unix(100, 1), time.Unix(200, 2)))
		var st unix.Stat_t
		unix.Lstat(c.p("f"), &st)
		c.note("times", "atime=%d mtime=%d", st.Atim.Nano(), st.Mtim.Nano())
		c.do("utimes mtime only", unix.UtimesNanoAt(unix.AT_FDCWD, c.p("f"), []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: 300}}, 0))
		unix.Lstat(c.p("f"), &st)
		c.note("times", "atime=%d mtime=%d", st.Atim.Nano(), st.Mtim.Nano())
		c.do("utimes symlink", unix.UtimesNanoAt(unix.AT_FDCWD, c.p("l"), []unix.Timespec{{Sec: 5}, {Sec: 6}}, unix.AT_SYMLINK_NOFOLLOW))
		unix.Lstat(c.p("l"), &st)
		c.note("symlink times", "atime=%d mtime=%d", st.Atim.Nano(), st.Mtim.Nano())
		c.do("chmod missing", os.Chmod(c.p("nope"), 0o644))
	}},
	{"xattrs", func(c *posix) {
		os.WriteFile(c.p("f"), nil, 0o644)
		c.do("set", unix.Setxattr(c.p("f"), "user.a", []byte("1"), 0))
		c.do("create existing", unix.Setxattr(c.p("f"), "user.a", []byte("2"), unix.XATTR_CREATE))
		c.do("replace missing", unix.Setxattr(c.p("f"), "user.b", []byte("2"), unix.XATTR_REPLACE))
		c.do("replace", unix.Setxattr(c.p("f"), "user.a", []byte("3"), unix.XATTR_REPLACE))
		c.do("set empty", unix.Setxattr(c.p("f"), "user.empty", nil, 0))
		buf := make([]byte, 100)
		n, err := unix.Getxattr(c.p("f"), "user.a", buf)
		c.note("get", "%q %v", buf[:max(n, 0)], errnoOf(err))
		_, err = unix.Getxattr(c.p("f"), "user.missing", buf)
		c.do("get missing", err)
		_, err = unix.Getxattr(c.p("f"), "user.a", make([]byte, 0))
		c.do("size query", err)
		c.note("list", "%s", xattrs(c.p("f")))
		c.do("remove", unix.Removexattr(c.p("f"), "user.a"))
		c.do("remove missing", unix.Removexattr(c.p("f"), "user.a"))
		c.do("bad namespace", unix.Setxattr(c.p("f"), "nonsense.a", []byte("1"), 0))
		c.do("on the directory", unix.Setxattr(c.root, "user.root", []byte("r"), 0))
		c.note("root list", "%s", xattrs(c.root))
	}},
	{"sparse files and truncate", func(c *posix) {
		f, _ := os.Create(c.p("f"))
		_, err := f.WriteAt([]byte("end"), 1<<20)
		c.do("write far", err)
		c.stat("size", "f")
		buf := make([]byte, 4)
		_, err = f.ReadAt(buf, 4096)
		c.note("hole reads zeros", "%v %v", buf, errnoOf(err))
		off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA)
		c.note("seek data", "%d %v", off, errnoOf(err))
		off, err = unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
		c.note("seek hole", "%d %v", off, errnoOf(err))
		c.do("extend", f.Truncate(3<<20))
		c.stat("extended", "f")
		c.do("shrink", f.Truncate(10))
		c.stat("shrunk", "f")
		c.do("truncate by path", os.Truncate(c.p("f"), 100))
		c.do("negative", os.Truncate(c.p("f"), -1))
		c.do("punch", unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 50))
		c.do("allocate", unix.Fallocate(int(f.Fd()), 0, 0, 1<<16))
		c.stat("allocated", "f")
		f.Close()
		g, _ := os.OpenFile(c.p("g"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		g.Write([]byte("one "))
		g.WriteAt([]byte("x"), 0) // Go refuses WriteAt on O_APPEND
		g.Write([]byte("two"))
		g.Close()
		b, _ := os.ReadFile(c.p("g"))
		c.note("append", "%q", b)
		r, _ := os.Open(c.p("g"))
		_, err = r.Write([]byte("no"))
		c.do("write on a read-only descriptor", err)
		r.Close()
	}},
	{"ownership and permissions of other users", func(c *posix) {
		os.Mkdir(c.p("open"), 0)
		os.Mkdir(c.p("closed"), 0)
		os.Mkdir(c.p("group"), 0)
		os.Chmod(c.p("open"), 0o777) // past the test's umask
		os.Chmod(c.p("closed"), 0o755)
		os.Chown(c.p("group"), 0, 50)
		unix.Chmod(c.p("group"), 0o2777)
		c.sh("create in a closed directory", 1000, 1000, "echo x > closed/f")
		c.sh("create in an open one", 1000, 1000, "echo x > open/f && mkdir open/d && ln -s f open/l && mkfifo open/p")
		c.stat("owned by the caller", "open/f")
		c.stat("directory too", "open/d")
		c.stat("symlink too", "open/l")
		c.stat("fifo too", "open/p")
		c.sh("setgid directory", 1000, 1000, "echo x > group/f && mkdir group/d")
		c.stat("group of the directory", "group/f")
		c.stat("setgid inherited", "group/d")
		c.sh("someone else's file", 1001, 1001, "echo y >> open/f")
		c.sh("rename someone else's in sticky dir", 1001, 1001, "chmod +t open 2>/dev/null; mv open/f open/g")
		c.sh("umask 0 modes", 0, 0, "umask 000 && mkdir m && touch m/f && mkfifo m/p && chmod 2777 m && mkdir m/sub")
		c.stat("mode 777 dir", "m")
		c.stat("mode 666 file", "m/f")
		c.stat("mode 666 fifo", "m/p")
		c.stat("setgid from parent", "m/sub")
	}},
}

func TestPOSIXSemantics(t *testing.T) {
	for _, tc := range posixCases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			plain := filepath.Join(traversableTemp(t), "plain")
			must(t, os.Mkdir(plain, 0o755))
			want := &posix{t: t, root: plain}
			tc.run(want)

			m, peer := replica(t, Options{}, nil)
			got := &posix{t: t, root: m.dir}
			tc.run(got)

			if !slices.Equal(got.log, want.log) {
				t.Errorf("results differ from the plain directory:")
				for i := range max(len(got.log), len(want.log)) {
					g, w := "", ""
					if i < len(got.log) {
						g = got.log[i]
					}
					if i < len(want.log) {
						w = want.log[i]
					}
					mark := "  "
					if g != w {
						mark = "!="
					}
					t.Errorf("%s mount: %-60s plain: %s", mark, g, w)
				}
			}
			if testing.Verbose() {
				t.Logf("%s", strings.Join(got.log, "\n"))
			}
			sameTree(t, "mount vs plain", describe(t, m.under, treeOpts{}), describe(t, plain, treeOpts{}))
			converge(t, m, peer, nil)
		})
	}
}
