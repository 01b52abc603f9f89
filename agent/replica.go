package agent

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

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
	done chan struct{} // closed when the supervisor returned: no process left

	stopOnce sync.Once

	// Guarded by Agent.mu.
	status   protocol.ReplicaStatus
	reason   string
	endpoint string
	pid      int
	port     int
	removed  bool // left the desired set: forget it once done
}

func newReplica(asg protocol.ReplicaAssignment, dir string) *replica {
	return &replica{
		asg:    asg,
		dir:    dir,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		status: protocol.ReplicaProvisioning,
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
		Reason:    r.reason,
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
	// log and an empty working directory. Its process group, if any, was
	// stopped or killed as an orphan before this key could start again.
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
	logf, err := os.OpenFile(filepath.Join(r.dir, logFileName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		a.setStatus(r, protocol.ReplicaFailed, fmt.Sprintf("open log file: %v", err))
		return
	}
	defer logf.Close()
	note := func(format string, args ...any) {
		fmt.Fprintf(logf, "baton: "+format+"\n", args...)
	}

	cwd := r.dir
	if spec.Workdir != "" {
		st, err := os.Stat(spec.Workdir)
		if err != nil || !st.IsDir() {
			reason := fmt.Sprintf("workdir %s does not exist on agent %s (copy it there or use a shared path)", spec.Workdir, a.cfg.ID)
			note("%s", reason)
			a.setStatus(r, protocol.ReplicaFailed, reason)
			return
		}
		cwd = spec.Workdir
	}

	port, err := a.pickPort(spec.Service.Port)
	if err != nil {
		a.setStatus(r, protocol.ReplicaFailed, fmt.Sprintf("pick port: %v", err))
		return
	}
	a.mu.Lock()
	r.port = port
	r.endpoint = net.JoinHostPort(a.cfg.Host, strconv.Itoa(port))
	a.mu.Unlock()
	env := a.replicaEnv(r, port)

	if r.stopping() {
		return
	}
	a.publish() // PROVISIONING, with its endpoint
	if strings.TrimSpace(spec.Setup) != "" {
		note("running setup")
		p, err := a.start(r, spec.Setup, cwd, env, logf)
		if err != nil {
			a.setStatus(r, protocol.ReplicaFailed, fmt.Sprintf("start setup: %v", err))
			return
		}
		select {
		case <-p.exited:
			p.terminate(a.cfg.StopGrace) // whatever setup left running
			if p.err != nil {
				reason := exitReason("setup", p.err)
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
	p, err := a.start(r, spec.Run, cwd, env, logf)
	if err != nil {
		a.setStatus(r, protocol.ReplicaFailed, fmt.Sprintf("start run: %v", err))
		return
	}
	a.metrics.replicaStarts.Inc()
	a.setStatus(r, protocol.ReplicaStarting, "")
	failed, reason := a.watch(r, p, port)
	if failed != "" {
		note("%s", reason)
		// The group goes before the failure is reported: the leader frees
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

// start starts a process for r and records its pid and pgid file.
func (a *Agent) start(r *replica, script, cwd string, env []string, logf *os.File) (*proc, error) {
	p, err := startProc(script, cwd, env, logf)
	if err != nil {
		return nil, err
	}
	a.setPID(r, p.pgid)
	rec := fmt.Sprintf("%d %s %d\n", p.pgid, r.asg.Service, r.asg.ReplicaID)
	if err := os.WriteFile(filepath.Join(r.dir, pgidFile), []byte(rec), 0o644); err != nil {
		a.logger.Warn("write pgid file", "service", r.asg.Service, "replica_id", r.asg.ReplicaID, "error", err)
	}
	return p, nil
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
			reason := exitReason("run", p.err)
			if want := r.asg.Spec.Service.Port; want > 0 && want != port {
				// The usual cause: a run that hard-codes the task's port.
				reason += fmt.Sprintf(" (port %d was in use on this host, so the replica got PORT=%d; listen on $PORT)", want, port)
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
	delete(a.ports, r.port)
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

// replicaEnv is the agent's environment, then the spec's envs, then
// PORT, CUDA_VISIBLE_DEVICES, the BATON_* variables and the SKYPILOT_*
// ones that SkyServe task YAMLs use, for a single-node replica (later wins).
func (a *Agent) replicaEnv(r *replica, port int) []string {
	env := os.Environ()
	keys := make([]string, 0, len(r.asg.Spec.Envs))
	for k := range r.asg.Spec.Envs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+r.asg.Spec.Envs[k])
	}
	return append(env,
		"PORT="+strconv.Itoa(port),
		"CUDA_VISIBLE_DEVICES="+strings.Join(r.asg.GPUUUIDs, ","),
		"BATON_SERVICE="+r.asg.Service,
		"BATON_REPLICA_ID="+strconv.Itoa(r.asg.ReplicaID),
		"BATON_VERSION="+strconv.Itoa(r.asg.Version),
		"SKYPILOT_SERVE_REPLICA_ID="+strconv.Itoa(r.asg.ReplicaID),
		"SKYPILOT_NUM_GPUS_PER_NODE="+strconv.Itoa(len(r.asg.GPUUUIDs)),
		"SKYPILOT_NUM_NODES=1",
		"SKYPILOT_NODE_RANK=0",
		"SKYPILOT_NODE_IPS="+a.cfg.Host,
	)
}

// Ports the agent picks for replicas whose spec port is busy or unset:
// below the LB service ports (30001 up) and outside the kernel's ephemeral
// range, so that outgoing connections (probes, proxies) cannot take a
// port between the pick and the replica binding it.
const (
	pickPortMin = 10000
	pickPortMax = 29999
)

// pickPort returns want when it is free on this machine (on all addresses
// and on Host) and not handed to another replica here, else a free port
// from pickPortMin-pickPortMax (or, failing that, from the OS). The port is
// reserved until the replica ends.
func (a *Agent) pickPort(want int) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if want > 0 && !a.ports[want] && portFree(a.cfg.Host, want) {
		a.ports[want] = true
		return want, nil
	}
	ephLo, ephHi := ephemeralPorts()
	for range 200 {
		port := pickPortMin + rand.IntN(pickPortMax-pickPortMin+1)
		if port >= ephLo && port <= ephHi {
			continue
		}
		if !a.ports[port] && portFree(a.cfg.Host, port) {
			a.ports[port] = true
			return port, nil
		}
	}
	for range 50 {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !a.ports[port] && portFree(a.cfg.Host, port) {
			a.ports[port] = true
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port found")
}

// ephemeralPorts is the kernel's range for outgoing connections' local
// ports (Linux's default when it cannot be read).
func ephemeralPorts() (lo, hi int) {
	lo, hi = 32768, 60999
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	if f := strings.Fields(string(data)); len(f) == 2 {
		l, err1 := strconv.Atoi(f[0])
		h, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil && l <= h {
			return l, h
		}
	}
	return lo, hi
}

// portFree reports whether port can be bound on 0.0.0.0 and on host.
func portFree(host string, port int) bool {
	for _, h := range []string{"0.0.0.0", host} {
		l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}
