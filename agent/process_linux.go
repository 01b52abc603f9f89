//go:build linux

package agent

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-dev/baton/internal/procscan"
)

// groupMembers lists the live (not zombie) processes in group pgid.
func groupMembers(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) state ppid pgrp ...": comm may hold spaces and ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 3 || fields[0] == "Z" || fields[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(fields[2]); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// groupAlive reports whether group pgid has a live member. Zombies do not
// count: in a container whose init does not reap, they never go away.
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); err == syscall.ESRCH {
		return false
	}
	return len(groupMembers(pgid)) > 0
}

// groupHasEnv reports whether a live member of group pgid has every one
// of the given KEY=value pairs in its environment. It tells a replica's
// group from an unrelated one that reused the pgid.
func groupHasEnv(pgid int, pairs ...string) bool {
	for _, pid := range groupMembers(pgid) {
		if procscan.HasEnv(pid, pairs...) {
			return true
		}
	}
	return false
}

// checkPlatform: agents run here.
func checkPlatform() error { return nil }

// shimProcAttr puts a shim in its own process group (signals for the
// agent's group do not reach it) and has the kernel send it SIGTERM if
// the agent dies: the shim then stops its replica's tree.
func shimProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// killGroup SIGKILLs every member of group pgid until none is left
// (bounded by killWait).
func killGroup(pgid int) {
	deadline := time.Now().Add(killWait)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(20 * time.Millisecond)
	}
}

// isShim reports whether pid is a replica shim (by its command line).
func isShim(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(b, []byte("\x00"+shimArg))
}

// detectNetNS identifies this process's network namespace: the kernel's
// boot id (which machine, which boot) and the namespace's inode (which
// namespace on it). Agents with the same value share one port space.
func detectNetNS() string {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		return ""
	}
	return strings.TrimSpace(string(boot)) + ":" + strconv.FormatUint(st.Ino, 10)
}
