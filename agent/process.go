package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// proc is one `bash -c` process leading its own process group.
type proc struct {
	cmd  *exec.Cmd
	pgid int
	// exited is closed once the leader has exited and been reaped; err is
	// Wait's result, readable after exited is closed.
	exited chan struct{}
	err    error
}

// startProc runs `bash -c script` in dir with env, its output appended to
// out, as the leader of a new process group.
func startProc(script, dir string, env []string, out *os.File) (*proc, error) {
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = env
	// An *os.File (not a pipe) as output: Wait returns as soon as the
	// leader exits, even if a grandchild still holds the file.
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, pgid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// hasExited reports whether the leader has exited.
func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// signal sends sig to the whole group. A group that is already gone is not
// an error.
func (p *proc) signal(sig syscall.Signal) {
	if err := syscall.Kill(-p.pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		// EPERM can only mean the pgid was reused by someone else's
		// group; there is nothing of ours left to signal.
		return
	}
}

// gone reports whether the leader has exited and no live process is left
// in the group.
func (p *proc) gone() bool {
	return p.hasExited() && !groupAlive(p.pgid)
}

// terminate stops the group: SIGTERM, then up to grace for every member to
// exit, then SIGKILL, and waits until the group is gone (bounded by
// killWait after SIGKILL, which only an unkillable process in D state can
// exceed).
func (p *proc) terminate(grace time.Duration) {
	const poll = 20 * time.Millisecond
	const killWait = 10 * time.Second
	if p.gone() {
		return
	}
	p.signal(syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if p.gone() {
			return
		}
		time.Sleep(poll)
	}
	p.signal(syscall.SIGKILL)
	deadline = time.Now().Add(killWait)
	for time.Now().Before(deadline) {
		if p.gone() {
			return
		}
		time.Sleep(poll)
		p.signal(syscall.SIGKILL) // members forked since the last signal
	}
}

// exitReason describes how a process ended: "run exited with code 3",
// "run killed by signal killed".
func exitReason(what string, err error) string {
	if err == nil {
		return what + " exited with code 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Sprintf("%s killed by signal %s", what, ws.Signal())
		}
		return fmt.Sprintf("%s exited with code %d", what, ee.ExitCode())
	}
	return fmt.Sprintf("%s: %v", what, err)
}
