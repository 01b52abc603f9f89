//go:build !linux

package agent

import "syscall"

// procAttr puts a replica's process in its own group. (Only Linux can have
// the kernel kill it when the agent dies.)
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// groupAlive reports whether group pgid has a member (zombies included).
func groupAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) != syscall.ESRCH
}

// groupHasEnv cannot read other processes' environments here, so it never
// claims a group.
func groupHasEnv(pgid int, pairs ...string) bool { return false }
