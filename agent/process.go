package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// proc is one `bash -c` process tree (a replica's setup or run) and the
// shim that supervises it (see shim.go).
type proc struct {
	shim  *exec.Cmd
	group replicaCgroup // nil without cgroups
	// pgid is the main process's pid and process group, once started.
	pgid int
	// started is closed once the main process runs (pgid is set) or could
	// not be started (status says why).
	started chan struct{}
	// exited is closed once the main process has exited, could not start,
	// or its shim died; status is readable after that.
	exited chan struct{}
	status exitStatus
	// gone is closed once the shim has exited: no process of the tree is
	// left.
	gone chan struct{}
}

// exitStatus is how a replica's main process ended.
type exitStatus struct {
	text     string // "exited with code 3", "killed by signal killed"
	code     int
	signal   string
	startErr string // set when it never started
}

// startProc starts a shim running script in dir with env, its output and
// the tree's going to out. It returns once the main process runs.
func (a *Agent) startProc(script, dir string, env []string, out *os.File, group replicaCgroup, binds []shimBind) (*proc, error) {
	cfg := shimConfig{Script: script, Dir: dir, Env: env, Credential: a.user.credential(), Grace: a.cfg.StopGrace, Binds: binds}
	if group != nil {
		cfg.Cgroup = &shimCgroup{Parent: a.iso.parent(), Name: group.Name(), ProcsFiles: group.ProcsFiles()}
	}
	conf, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(a.shimPath, shimArg)
	cmd.Stdin = bytes.NewReader(conf)
	// An *os.File (not a pipe of exec's making) as output, so that Wait
	// returns when the shim exits, not when the last holder of the
	// replica's log pipe does.
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{evW}
	cmd.Env = []string{}
	cmd.SysProcAttr = shimProcAttr()
	if err := cmd.Start(); err != nil {
		evR.Close()
		evW.Close()
		return nil, fmt.Errorf("start the replica supervisor %s: %w", a.shimPath, err)
	}
	evW.Close()
	p := &proc{shim: cmd, group: group, started: make(chan struct{}), exited: make(chan struct{}), gone: make(chan struct{})}
	go p.follow(evR)
	<-p.started
	if p.status.startErr != "" {
		p.terminate(0)
		return nil, fmt.Errorf("%s", p.status.startErr)
	}
	return p, nil
}

// follow reads the shim's events until it exits.
func (p *proc) follow(events *os.File) {
	startedOnce, exitedOnce := false, false
	markStarted := func() {
		if !startedOnce {
			startedOnce = true
			close(p.started)
		}
	}
	markExited := func(st exitStatus) {
		if !exitedOnce {
			exitedOnce = true
			p.status = st
			close(p.exited)
		}
	}
	readShimEvents(events, func(e shimEvent) {
		switch {
		case e.PID > 0:
			p.pgid = e.PID
			markStarted()
		case e.StartError != "":
			markExited(exitStatus{startErr: e.StartError, text: e.StartError})
			markStarted()
		case e.Exit != "":
			markExited(exitStatus{text: e.Exit, code: e.Code, signal: e.Signal})
		}
	})
	events.Close()
	err := p.shim.Wait()
	why := "ended with its supervisor"
	if err != nil {
		why += " (" + err.Error() + ")"
	}
	st := exitStatus{text: why, code: -1}
	if !startedOnce {
		st.startErr = "the replica supervisor exited before starting it: " + why
	}
	markExited(st)
	markStarted()
	close(p.gone)
}

// hasExited reports whether the main process has exited.
func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// isGone reports whether no process of the tree is left.
func (p *proc) isGone() bool {
	select {
	case <-p.gone:
		return true
	default:
		return false
	}
}

// terminate stops the tree — SIGTERM to every member, up to grace for
// them to exit, SIGKILL — and waits until it is gone. The shim does the
// work; if it does not finish in time, the agent kills the shim, the
// cgroup and the process group itself.
func (p *proc) terminate(grace time.Duration) {
	if p.isGone() {
		return
	}
	_ = p.shim.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.gone:
		return
	case <-time.After(grace + killWait + 5*time.Second):
	}
	_ = p.shim.Process.Kill()
	if p.group != nil {
		_ = p.group.Kill(killWait)
	}
	if p.pgid > 0 {
		_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
	}
	select {
	case <-p.gone:
	case <-time.After(5 * time.Second):
	}
}

// exitReason describes how a process ended: "run exited with code 3",
// "run killed by signal killed".
func exitReason(what string, st exitStatus) string {
	return what + " " + st.text
}
