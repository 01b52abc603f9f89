package agent

import (
	"encoding/json"
	"fmt"
	"syscall"
	"time"
)

// A replica's processes are supervised by a shim: a small process of the
// agent's own binary (re-executed with shimArg) that starts `bash -c` for
// setup or run, and stays its parent until the whole process tree is gone.
// It exists because the agent itself may die (kill -9, OOM, a crash): the
// kernel then signals each shim (parent-death signal), and the shim stops
// its replica's tree instead of leaving it running until the agent
// returns. It is also the tree's child subreaper, so a daemonised
// grandchild (setsid, double fork) is re-parented to it rather than to
// init, and on hosts where cgroups cannot be written it finds and kills
// the whole tree through those parent links.
//
// The agent talks to a shim over three channels: the shim's stdin carries
// its shimConfig (JSON); its stdout and stderr are the replica's log pipe,
// which the replica inherits; file descriptor 3 carries shimEvents (JSON
// lines) back to the agent. SIGTERM to the shim asks it to stop the tree:
// SIGTERM to every member, Grace, then SIGKILL.
//
// When cgroups are in use, the shim does not start bash directly but
// itself again with execArg: that trampoline joins the replica's cgroup
// before anything of the replica runs, drops to the replica user, and
// then execs bash, so nothing the replica forks can start outside it.
const (
	shimArg = "__baton-replica-shim"
	execArg = "__baton-replica-exec"
)

// shimConfig is what the agent tells a shim.
type shimConfig struct {
	Script string   `json:"script"`
	Dir    string   `json:"dir"`
	Env    []string `json:"env"`
	// Credential is who the replica runs as; nil: the agent's user.
	Credential *syscall.Credential `json:"credential,omitempty"`
	// Cgroup names the replica's cgroup; nil when cgroups are not used.
	Cgroup *shimCgroup `json:"cgroup,omitempty"`
	// Grace is the wait between SIGTERM and SIGKILL.
	Grace time.Duration `json:"grace"`
	// Binds are file_mounts placed at absolute paths: bind mounts in a
	// mount namespace of the replica's own (its processes see them, no
	// one else does). They need a root agent.
	Binds []shimBind `json:"binds,omitempty"`
}

// shimBind mounts Source (a file or directory in the replica's dir) at
// Target.
type shimBind struct {
	Source string `json:"source"`
	Target string `json:"target"`
}

// shimCgroup locates a replica's cgroup.
type shimCgroup struct {
	Parent string `json:"parent"`
	Name   string `json:"name"`
	// ProcsFiles are the cgroup.procs files the trampoline joins.
	ProcsFiles []string `json:"procs_files"`
}

// shimEvent is one line the shim writes to the agent. Exactly one of its
// fields is set.
type shimEvent struct {
	// PID is the replica's main process (also its process group id), sent
	// once it has started.
	PID int `json:"pid,omitempty"`
	// Exit describes how the main process ended ("exited with code 3",
	// "killed by signal killed"); Code is its exit code, Signal the signal
	// that killed it.
	Exit   string `json:"exit,omitempty"`
	Code   int    `json:"code,omitempty"`
	Signal string `json:"signal,omitempty"`
	// StartError says the main process could not be started.
	StartError string `json:"start_error,omitempty"`
	// Gone says no process of the tree is left; the shim exits next.
	Gone bool `json:"gone,omitempty"`
}

// shimGroup is what the shim needs of a replica's cgroup.
type shimGroup interface {
	Signal(sig syscall.Signal) error
	Kill(timeout time.Duration) error
	Populated() (bool, error)
}

// describeWait turns a wait status into an exit description.
func describeWait(ws syscall.WaitStatus) shimEvent {
	switch {
	case ws.Signaled():
		return shimEvent{Exit: fmt.Sprintf("killed by signal %s", ws.Signal()), Signal: ws.Signal().String(), Code: -1}
	default:
		return shimEvent{Exit: fmt.Sprintf("exited with code %d", ws.ExitStatus()), Code: ws.ExitStatus()}
	}
}

func (e shimEvent) encode() []byte {
	b, _ := json.Marshal(e)
	return append(b, '\n')
}
