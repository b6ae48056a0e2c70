package pluginhost

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// setProcAttr makes the kernel kill the plugin when the agent dies, even
// by SIGKILL: a restarted agent launches its own plugins, and an orphan
// would keep running checks and holding its resources. (Pdeathsig follows
// the launching thread; Go ends a thread only when a goroutine locked to
// it exits, which the launching goroutines never are. Should it happen,
// the plugin is seen to crash and is relaunched.)
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// processStopped reports whether the process is stopped (SIGSTOP, or
// traced): it would not answer go-plugin's graceful shutdown.
func processStopped(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	state := stat[i+2]
	return state == 'T' || state == 't'
}
