package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-dev/baton/agent/replicalog"
	"github.com/baton-dev/baton/protocol"
)

// logFileName is the replica's log file in its directory.
const logFileName = "replica.log"

// pgidFile records a live replica's process group, so that the next agent
// start can kill it if this agent dies (see Agent.killOrphans).
const pgidFile = "pgid"

// replica is one assigned replica and its supervisor's state.
type replica struct {
	// Set at creation, then read-only.
	asg  protocol.ReplicaAssignment
	dir  string
	stop chan struct{} // closed to ask the supervisor to stop
	// binds are the file_mounts placed at absolute paths (placeCode), set
	// before the replica's processes start; only its supervisor uses it.
	binds []shimBind
	done  chan struct{} // closed when the supervisor returned: no process left

	stopOnce sync.Once

	// newPort carries another port from the leader while the replica
	// waits on a busy one; buffered 1.
	newPort chan int

	// Guarded by Agent.mu.
	status   protocol.ReplicaStatus
	reason   string
	endpoint string
	pid      int
	port     int  // the port reserved for it (0 until confirmed)
	removed  bool // left the desired set: forget it once done
	// portBusy is set while the assigned port (offeredPort) is held by
	// a process baton does not run.
	portBusy    bool
	offeredPort int
}

func newReplica(asg protocol.ReplicaAssignment, dir string) *replica {
	return &replica{
		asg:     asg,
		dir:     dir,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		newPort: make(chan int, 1),
		status:  protocol.ReplicaProvisioning,
	}
}

// requestStop asks the supervisor to stop the replica; it is idempotent.
func (r *replica) requestStop() { r.stopOnce.Do(func() { close(r.stop) }) }

// stopping reports whether a stop was requested.
func (r *replica) stopping() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// ended reports whether the supervisor has returned.
func (r *replica) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// reportLocked describes the replica. Agent.mu must be held.
func (r *replica) reportLocked() protocol.ReplicaReport {
	return protocol.ReplicaReport{
		Service:   r.asg.Service,
		ReplicaID: r.asg.ReplicaID,
		Version:   r.asg.Version,
		Status:    r.status,
		Endpoint:  r.endpoint,
		PID:       r.pid,
		Reason:    protocol.TruncateReason(r.reason),
		PortBusy:  r.portBusy,
	}
}

// setStatus records a state change and publishes it. A FAILED state is
// final: later changes (SHUTTING_DOWN while the group is killed) are
// ignored.
func (a *Agent) setStatus(r *replica, status protocol.ReplicaStatus, reason string) {
	a.mu.Lock()
	// Once told to stop, only SHUTTING_DOWN or a failure may be reported:
	// a probe that passed just before the stop must not say READY.
	late := r.stopping() && !status.IsFailed() && status != protocol.ReplicaShuttingDown
	if late || r.status.IsFailed() || (r.status == status && r.reason == reason) {
		a.mu.Unlock()
		return
	}
	r.status, r.reason = status, reason
	a.mu.Unlock()
	if status.IsFailed() {
		a.metrics.replicaFails.WithLabelValues(string(status)).Inc()
		a.logger.Warn("replica failed", "service", r.asg.Service, "replica_id", r.asg.ReplicaID, "status", status, "reason", reason)
	} else {
		a.logger.Info("replica status", "service", r.asg.Service, "replica_id", r.asg.ReplicaID, "status", status)
	}
	a.publish()
}

// setPID records the pid of the replica's current process.
func (a *Agent) setPID(r *replica, pid int) {
	a.mu.Lock()
	r.pid = pid
	a.mu.Unlock()
}

// supervise runs one replica from setup to its end: setup, run, probes,
// and stopping. It owns the replica's processes; when it returns none is
// left.
func (a *Agent) supervise(r *replica) {
	defer a.wg.Done()
	defer a.finish(r)
	spec := &r.asg.Spec

	// A directory left by an earlier replica of the same key (a service
	// deleted and created again, or a replica restarted after an agent
	// restart) is kept aside as <dir>.prev, so this one starts with its own
	// log and an empty working directory. Its processes, if any, were
	// stopped or killed as orphans before this key could start again.
	if _, err := os.Stat(r.dir); err == nil {
		prev := r.dir + ".prev"
		if err := os.RemoveAll(prev); err == nil && os.Rename(r.dir, prev) == nil {
			os.Remove(filepath.Join(prev, pgidFile))
		}
	}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		a.setStatus(r, protocol.ReplicaFailed, fmt.Sprintf("create replica dir: %v", err))
		return
	}
	if err := a.user.prepareDir(r.dir); err != nil {
		a.setStatus(r, protocol.ReplicaFailed, fmt.Sprintf("prepare replica dir for user %s: %v", a.user.name, err))
		return
	}
	logw, err := replicalog.Open(r.dir, a.cfg.LogMaxBytes, a.cfg.LogMaxFiles)
	if err != nil {
		a.setStatus(r, protocol.ReplicaFailed, fmt.Sprintf("open log file: %v", err))
		return
	}
	defer logw.Close()
	out, closeOut, err := logPipe(logw)
	if err != nil {
		a.setStatus(r, protocol.ReplicaFailed, fmt.Sprintf("open log pipe: %v", err))
		return
	}
	defer closeOut()
	note := func(format string, args ...any) {
		fmt.Fprintf(logw, "baton: "+format+"\n", args...)
	}

	cwd := r.dir
	if spec.Bundle != "" {
		work, reason := a.placeCode(r, spec, note)
		if reason != "" {
			note("%s", reason)
			a.setStatus(r, protocol.ReplicaFailed, reason)
			return
		}
		if work == "" {
			return // stopped while fetching
		}
		cwd = work
	} else if spec.Workdir != "" {
		st, err := os.Stat(spec.Workdir)
		if err != nil || !st.IsDir() {
			reason := fmt.Sprintf("workdir %s does not exist on agent %s (copy it there or use a shared path)", spec.Workdir, a.cfg.ID)
			note("%s", reason)
			a.setStatus(r, protocol.ReplicaFailed, reason)
			return
		}
		if err := a.user.canReach(spec.Workdir); err != nil {
			reason := fmt.Sprintf("workdir %s is not usable by replica user %s: %v (make it readable, or set the agent's --replica-user)",
				spec.Workdir, a.user.name, err)
			note("%s", reason)
			a.setStatus(r, protocol.ReplicaFailed, reason)
			return
		}
		cwd = spec.Workdir
	}

	port, ok := a.confirmPort(r)
	if !ok {
		return
	}
	env := a.replicaEnv(r, port)

	group, err := a.iso.create(cgroupName(r.asg.Service, r.asg.ReplicaID), spec.Resources)
	if err != nil {
		reason := fmt.Sprintf("create the replica's cgroup: %v", err)
		note("%s", reason)
		a.setStatus(r, protocol.ReplicaFailed, reason)
		return
	}
	if group != nil {
		defer func() {
			if err := group.Delete(); err != nil {
				a.logger.Warn("remove replica cgroup", "service", r.asg.Service, "replica_id", r.asg.ReplicaID, "error", err)
			}
		}()
	}

	if r.stopping() {
		return
	}
	a.publish() // PROVISIONING, with its endpoint
	if strings.TrimSpace(spec.Setup) != "" {
		note("running setup")
		p, err := a.start(r, spec.Setup, cwd, env, out, group)
		if err != nil {
			a.setStatus(r, protocol.ReplicaFailed, fmt.Sprintf("start setup: %v", err))
			return
		}
		select {
		case <-p.exited:
			p.terminate(a.cfg.StopGrace) // whatever setup left running
			if p.status.code != 0 {
				reason := a.failureReason("setup", p, spec)
				if cwd == spec.Workdir && a.user.cannotWrite(cwd) {
					reason += fmt.Sprintf(" (workdir %s is not writable by replica user %s: if setup writes there, make it writable or set the agent's --replica-user)", cwd, a.user.name)
				}
				note("%s", reason)
				a.setStatus(r, protocol.ReplicaFailed, reason)
				return
			}
		case <-r.stop:
			a.setStatus(r, protocol.ReplicaShuttingDown, "")
			p.terminate(a.cfg.StopGrace)
			return
		}
	}
	if r.stopping() {
		return
	}

	note("starting run")
	p, err := a.start(r, spec.Run, cwd, env, out, group)
	if err != nil {
		a.setStatus(r, protocol.ReplicaFailed, fmt.Sprintf("start run: %v", err))
		return
	}
	a.metrics.replicaStarts.Inc()
	a.setStatus(r, protocol.ReplicaStarting, "")
	failed, reason := a.watch(r, p, port)
	if failed != "" {
		note("%s", reason)
		// The tree goes before the failure is reported: the leader frees
		// a FAILED replica's CPUs and GPUs for a replacement, so nothing
		// of it may still be running then. NOT_READY meanwhile takes it
		// out of the LBs' routes.
		a.setStatus(r, protocol.ReplicaNotReady, reason+"; stopping")
		p.terminate(a.cfg.StopGrace)
		a.setStatus(r, failed, reason)
		note("stopped")
		return
	}
	p.terminate(a.cfg.StopGrace)
	note("stopped")
}

// cgroupName is a replica's cgroup: <service>-<id>, like its directory.
func cgroupName(service string, id int) string { return fmt.Sprintf("%s-%d", service, id) }

// portBusyConfirm is how long an assigned port must stay unbindable
// before the replica is reported port-busy: a port is briefly held by
// more than squatters (a process of the host on its way out, a replica
// of this agent that is still stopping), and a leader told "busy" keeps
// the port out of placement on this host for minutes.
const portBusyConfirm = 2 * time.Second

// confirmPort checks that the port the leader assigned can be bound on
// this host and reserves it. A port that stays held for portBusyConfirm
// by a process baton does not run is reported (PortBusy, still
// PROVISIONING, nothing started) and the replica waits for the leader to
// assign another. It returns false if the replica is stopped meanwhile.
func (a *Agent) confirmPort(r *replica) (int, bool) {
	port := r.asg.Port
	var busySince time.Time
	for {
		a.mu.Lock()
		held := portHeld(a.ports[port], a.cfg.Host, port)
		r.endpoint = net.JoinHostPort(a.cfg.Host, strconv.Itoa(port))
		r.offeredPort = port
		if held == nil {
			a.ports[port] = true
			r.port, r.portBusy, r.reason = port, false, ""
		}
		a.mu.Unlock()
		if held == nil {
			return port, true
		}
		if busySince.IsZero() {
			busySince = time.Now()
		}
		wait := 100 * time.Millisecond
		if time.Since(busySince) >= portBusyConfirm {
			a.mu.Lock()
			report := !r.portBusy
			r.portBusy = true
			r.reason = fmt.Sprintf("port %d is held on this host by a process baton does not run (%v); waiting for the coordinator to assign another", port, held)
			a.mu.Unlock()
			if report {
				a.logger.Warn("assigned port busy", "service", r.asg.Service, "replica_id", r.asg.ReplicaID, "port", port, "error", held)
				a.publish()
			}
			wait = time.Second
		}
		select {
		case p := <-r.newPort:
			port, busySince = p, time.Time{}
		case <-time.After(wait):
		case <-r.stop:
			a.mu.Lock()
			r.portBusy = false
			a.mu.Unlock()
			return 0, false
		}
	}
}

// start starts a process tree for r and records its shim and process
// group in the pgid file (for the orphan cleanup of a later agent start).
func (a *Agent) start(r *replica, script, cwd string, env []string, out *os.File, group replicaCgroup) (*proc, error) {
	p, err := a.startProc(script, cwd, env, out, group, r.binds)
	if err != nil {
		return nil, err
	}
	a.setPID(r, p.pgid)
	rec := fmt.Sprintf("%d %s %d %d\n", p.pgid, r.asg.Service, r.asg.ReplicaID, p.shim.Process.Pid)
	if err := os.WriteFile(filepath.Join(r.dir, pgidFile), []byte(rec), 0o644); err != nil {
		a.logger.Warn("write pgid file", "service", r.asg.Service, "replica_id", r.asg.ReplicaID, "error", err)
	}
	return p, nil
}

// failureReason says how a replica's setup or run ended, naming the
// memory limit when the kernel killed it for exceeding it.
func (a *Agent) failureReason(what string, p *proc, spec *protocol.TaskSpec) string {
	reason := exitReason(what, p.status)
	if p.group != nil && p.status.signal != "" {
		if n, err := p.group.OOMKills(); err == nil && n > 0 {
			limit := "its memory limit"
			if m := spec.Resources.Memory; m.IsSet() && !m.AtLeast {
				limit = "its memory limit of " + memoryText(m.Value) + " (resources.memory)"
			}
			reason = fmt.Sprintf("%s: out of memory, the kernel killed it for using more than %s", reason, limit)
		}
	}
	return reason
}

// logPipe returns the write end of a pipe whose contents are copied into
// w (the replica's rotating log), and a function that closes it and waits
// for the copy to finish. The replica's processes hold the write end; the
// copy ends when the last of them has gone.
func logPipe(w io.Writer) (*os.File, func(), error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Output that cannot be written (a full disk) is dropped: the
		// replica must not stall or die on a full pipe because of it.
		buf := make([]byte, 32<<10)
		for {
			n, err := pr.Read(buf)
			if n > 0 {
				_, _ = w.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	return pw, func() {
		pw.Close()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			// A process that escaped its tree still holds the pipe.
		}
		pr.Close()
		<-done
	}, nil
}

// watch probes the running replica until it must stop, and returns the
// failed status to report and why ("" when asked to stop). The caller then
// terminates the group and reports the failure.
func (a *Agent) watch(r *replica, p *proc, port int) (protocol.ReplicaStatus, string) {
	pr := newProber(a.cfg.Host, port, r.asg.Spec.Service.ReadinessProbe)
	// A replica always gets one probe interval: the first probe goes out as
	// the process starts, before any server could listen, so a delay of 0
	// would otherwise fail every replica (SkyServe's first probe, too, comes
	// one probe interval after the start).
	initialDelay := max(time.Duration(pr.initialDelaySeconds)*time.Second, a.cfg.ProbeInterval)
	runStart := time.Now()

	results := make(chan error, 1)
	stopProbe := make(chan struct{})
	defer close(stopProbe)
	inFlight := false
	launch := func() {
		inFlight = true
		go func() { results <- pr.probe(stopProbe) }()
	}
	ticker := time.NewTicker(a.cfg.ProbeInterval)
	defer ticker.Stop()
	launch()

	everReady := false
	failures := 0
	for {
		select {
		case <-p.exited:
			reason := a.failureReason("run", p, &r.asg.Spec)
			if want := r.asg.Spec.Service.Port; want > 0 && want != port {
				// The usual cause: a run that hard-codes the task's port.
				reason += fmt.Sprintf(" (the task's port %d was taken on this host, so the replica got PORT=%d; listen on $PORT)", want, port)
			}
			return protocol.ReplicaFailed, reason
		case <-r.stop:
			a.setStatus(r, protocol.ReplicaShuttingDown, "")
			return "", ""
		case <-ticker.C:
			if !inFlight {
				launch()
			}
		case err := <-results:
			inFlight = false
			if p.hasExited() || r.stopping() {
				continue // the cases above say why
			}
			if err == nil {
				failures = 0
				everReady = true
				a.setStatus(r, protocol.ReplicaReady, "")
				continue
			}
			a.metrics.probeFailures.Inc()
			if !everReady {
				if time.Since(runStart) > initialDelay {
					reason := fmt.Sprintf("no readiness probe passed within initial_delay_seconds=%d; last: %v", pr.initialDelaySeconds, err)
					return protocol.ReplicaFailedInitialDelay, reason
				}
				continue
			}
			failures++
			if failures > a.cfg.ProbeFailureThreshold {
				reason := fmt.Sprintf("%d readiness probes failed in a row; last: %v", failures, err)
				return protocol.ReplicaFailedProbing, reason
			}
			a.setStatus(r, protocol.ReplicaNotReady, err.Error())
		}
	}
}

// finish runs when a supervisor returns: it frees the port, removes the
// pgid file, and forgets the replica if it left the desired set.
func (a *Agent) finish(r *replica) {
	os.Remove(filepath.Join(r.dir, pgidFile))
	a.mu.Lock()
	if r.port > 0 {
		delete(a.ports, r.port)
	}
	r.pid = 0
	close(r.done)
	key := r.asg.Key()
	forget := r.removed && a.replicas[key] == r
	if forget {
		delete(a.replicas, key)
	}
	a.mu.Unlock()
	if forget {
		a.logger.Info("replica stopped", "service", r.asg.Service, "replica_id", r.asg.ReplicaID)
	}
	a.publish()
}

// portHeld says why port cannot be given to a new replica, nil when it
// can: ours (a replica of this agent holds it), or it cannot be bound on
// all addresses and on host. An address that is not this machine's (an
// agent advertising the address a NAT gives it) does not make a port
// busy; a port in use or one the replica may not bind (a privileged one)
// does.
func portHeld(ours bool, host string, port int) error {
	if ours {
		return errors.New("a replica of this agent listens there")
	}
	for _, h := range []string{"0.0.0.0", host} {
		l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
		if err == nil {
			l.Close()
			continue
		}
		if h == host && errors.Is(err, syscall.EADDRNOTAVAIL) {
			continue
		}
		return err
	}
	return nil
}
