//go:build !linux

package agent

import (
	"fmt"
	"io"
	"runtime"
	"syscall"
	"time"
)

// checkPlatform refuses to run an agent here: replica supervision needs
// Linux (child subreapers, parent-death signals, cgroups).
func checkPlatform() error {
	return fmt.Errorf("baton agent runs replicas on Linux only, not %s", runtime.GOOS)
}

// groupAlive reports whether group pgid has a member (zombies included).
func groupAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) != syscall.ESRCH
}

// groupHasEnv cannot read other processes' environments here, so it never
// claims a group.
func groupHasEnv(pgid int, pairs ...string) bool { return false }

func killGroup(pgid int) { _ = syscall.Kill(-pgid, syscall.SIGKILL) }

func isShim(pid int) bool { return false }

func detectNetNS() string { return "" }

func shimProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func readShimEvents(io.Reader, func(shimEvent)) {}

const killWait = 10 * time.Second
