//go:build !linux

package agent

import (
	"errors"
	"os"
	"syscall"
	"time"
)

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

// The shim needs Linux (child subreapers, parent-death signals).
func readShimEvents(r interface{ Read([]byte) (int, error) }, fn func(shimEvent)) {}

const killWait = 10 * time.Second

var errShimUnsupported = errors.New("replica supervision needs Linux")

var _ = os.Getpid
