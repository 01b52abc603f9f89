package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/agent/gpu"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/protocol"
)

// getJSON GETs url and decodes the JSON body into v.
func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// getText GETs url and returns the status and body.
func getText(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// TestReplicaLifecycle runs a replica from assignment to removal: states in
// order, endpoint and environment, logs, SIGTERM on removal, then dropped.
func TestReplicaLifecycle(t *testing.T) {
	t.Parallel()
	h := startAgent(t, nil)
	port := specPort(t)
	asg := serverAssignment(t, "web", 1)
	// The server dies on SIGTERM at once; the shell leading the group waits
	// 0.5s more (well inside the 1s StopGrace), so that SHUTTING_DOWN lasts
	// long enough to be published, not just set and dropped.
	asg.Spec.Run = `trap 'sleep 0.5; kill $pid 2>/dev/null' TERM; python3 ` + serverScript(t) + ` & pid=$!; wait`
	asg.Spec.Setup = "sleep 0.3; echo setup-done"
	asg.Port = port
	asg.Spec.Envs = map[string]string{"FOO": "bar", "PORT": "overridden-by-agent"}
	asg.GPUUUIDs = []string{"GPU-fake-a1-1"}
	asg.Version = 3
	h.desire(1, asg)

	rep := h.waitStatus("web", 1, protocol.ReplicaReady, readyTimeout)
	if want := []protocol.ReplicaStatus{protocol.ReplicaProvisioning, protocol.ReplicaStarting, protocol.ReplicaReady}; !slices.Equal(h.history("web", 1), want) {
		t.Errorf("history = %v, want %v", h.history("web", 1), want)
	}
	if want := net.JoinHostPort("127.0.0.1", strconv.Itoa(port)); rep.Endpoint != want {
		t.Errorf("endpoint = %q, want %q (the assigned port)", rep.Endpoint, want)
	}
	if rep.PID <= 0 || rep.Version != 3 {
		t.Errorf("report = %+v, want a pid and version 3", rep)
	}
	var env map[string]string
	if err := getJSON("http://"+rep.Endpoint+"/env", &env); err != nil {
		t.Fatal(err)
	}
	wantEnv := map[string]string{
		"PORT": strconv.Itoa(port), "CUDA_VISIBLE_DEVICES": "GPU-fake-a1-1", "FOO": "bar",
		"BATON_SERVICE": "web", "BATON_REPLICA_ID": "1", "BATON_VERSION": "3",
		"SKYPILOT_SERVE_REPLICA_ID": "1", "SKYPILOT_NUM_GPUS_PER_NODE": "1", "SKYPILOT_NUM_NODES": "1",
		"SKYPILOT_NODE_RANK": "0", "SKYPILOT_NODE_IPS": "127.0.0.1",
		"cwd": h.replicaDir("web", 1),
	}
	for k, v := range wantEnv {
		if env[k] != v {
			t.Errorf("replica env %s = %q, want %q", k, env[k], v)
		}
	}

	st := h.latest().Agent
	if st.ID != "a1" || st.Address != h.agent.HTTPAddr() || st.Host != "127.0.0.1" || st.Capacity.CPUs != 4 || st.Capacity.MemoryGB != 8 {
		t.Errorf("agent = %+v", st)
	}
	if len(st.Capacity.GPUs) != 2 || st.Capacity.GPUs[1].UUID != "GPU-fake-a1-1" || !st.Capacity.GPUs[1].Healthy {
		t.Errorf("gpus = %+v, want 2 healthy fake A100s", st.Capacity.GPUs)
	}

	code, logs := getText(t, "http://"+h.agent.HTTPAddr()+"/v1/replicas/web/1/logs")
	if code != http.StatusOK || !strings.Contains(logs, "setup-done") || !strings.Contains(logs, "serving on port "+strconv.Itoa(port)) {
		t.Errorf("logs = %d %q, want setup and server output", code, logs)
	}

	h.desire(2) // removed
	h.waitGone("web", 1, 10*time.Second)
	if hist := h.history("web", 1); hist[len(hist)-1] != protocol.ReplicaShuttingDown {
		t.Errorf("history = %v, want SHUTTING_DOWN before it was dropped", hist)
	}
	if err := groupGone(rep.PID); err != nil {
		t.Error(err)
	}
	if pidAlive(rep.PID) {
		t.Errorf("replica pid %d still exists", rep.PID)
	}
	if _, err := os.Stat(filepath.Join(h.replicaDir("web", 1), pgidFile)); !os.IsNotExist(err) {
		t.Errorf("pgid file left behind: %v", err)
	}
	// Logs of a forgotten replica are still served while its dir exists.
	if code, logs := getText(t, "http://"+h.agent.HTTPAddr()+"/v1/replicas/web/1/logs"); code != http.StatusOK || !strings.Contains(logs, "setup-done") {
		t.Errorf("logs after removal = %d %q", code, logs)
	}
}

// TestReplicaFailures covers the ways a replica ends FAILED on its own. A
// failed replica stays reported while it is in the desired set, is not
// restarted, and is forgotten when it leaves.
func TestReplicaFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		change     func(t *testing.T, asg *protocol.ReplicaAssignment)
		afterReady func(t *testing.T, h *harness, rep protocol.ReplicaReport) // nil: never READY
		want       protocol.ReplicaStatus
		reason     string
	}{
		{
			name:   "setup fails",
			change: func(t *testing.T, a *protocol.ReplicaAssignment) { a.Spec.Setup = "echo preparing; exit 3" },
			want:   protocol.ReplicaFailed,
			reason: "setup exited with code 3",
		},
		{
			name:   "workdir missing",
			change: func(t *testing.T, a *protocol.ReplicaAssignment) { a.Spec.Workdir = "/nonexistent/baton-workdir" },
			want:   protocol.ReplicaFailed,
			reason: "workdir /nonexistent/baton-workdir does not exist",
		},
		{
			name:   "run exits",
			change: func(t *testing.T, a *protocol.ReplicaAssignment) { a.Spec.Run = "echo bye; exit 7" },
			want:   protocol.ReplicaFailed,
			reason: "run exited with code 7",
		},
		{
			name: "initial delay exceeded",
			change: func(t *testing.T, a *protocol.ReplicaAssignment) {
				a.Spec.Run = "sleep 60"
				a.Spec.Service.ReadinessProbe.InitialDelaySeconds = 1
			},
			want:   protocol.ReplicaFailedInitialDelay,
			reason: "no readiness probe passed within initial_delay_seconds=1",
		},
		{
			name:   "process killed",
			change: func(t *testing.T, a *protocol.ReplicaAssignment) {},
			afterReady: func(t *testing.T, h *harness, rep protocol.ReplicaReport) {
				if err := syscall.Kill(rep.PID, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			},
			want:   protocol.ReplicaFailed,
			reason: "run killed by signal killed",
		},
		{
			name:   "probes fail after ready",
			change: func(t *testing.T, a *protocol.ReplicaAssignment) {},
			afterReady: func(t *testing.T, h *harness, rep protocol.ReplicaReport) {
				if err := os.WriteFile(filepath.Join(h.replicaDir("svc", 1), "unhealthy"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want:   protocol.ReplicaFailedProbing,
			reason: "4 readiness probes failed in a row",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := startAgent(t, nil)
			asg := serverAssignment(t, "svc", 1)
			tt.change(t, &asg)
			h.desire(1, asg)
			var pid int
			if tt.afterReady != nil {
				rep := h.waitStatus("svc", 1, protocol.ReplicaReady, readyTimeout)
				pid = rep.PID
				tt.afterReady(t, h, rep)
			}
			start := time.Now()
			rep := h.waitStatus("svc", 1, tt.want, 10*time.Second)
			if !strings.Contains(rep.Reason, tt.reason) {
				t.Errorf("reason = %q, want it to contain %q", rep.Reason, tt.reason)
			}
			if tt.afterReady != nil && time.Since(start) > 5*time.Second {
				t.Errorf("failure reported after %s, want within 5s", time.Since(start))
			}
			if tt.want == protocol.ReplicaFailedProbing && !slices.Contains(h.history("svc", 1), protocol.ReplicaNotReady) {
				t.Errorf("history = %v, want NOT_READY before FAILED_PROBING", h.history("svc", 1))
			}
			// Still reported, not restarted, processes gone.
			seen := len(h.all())
			testutil.WaitFor(t, 5*time.Second, func() error {
				if len(h.all()) < seen+3 {
					return fmt.Errorf("waiting for heartbeats")
				}
				if r, ok := h.report("svc", 1); !ok || r.Status != tt.want {
					return fmt.Errorf("failed replica reported as %+v, %v", r, ok)
				}
				if pid > 0 {
					return groupGone(pid)
				}
				return nil
			})
			if strings.Contains(tt.name, "initial delay") || strings.Contains(tt.name, "probes fail") {
				if n := strings.Count(readLog(t, h, "svc", 1), "starting run"); n != 1 {
					t.Errorf("run started %d times, want 1", n)
				}
			}
			h.desire(2)
			h.waitGone("svc", 1, 5*time.Second)
		})
	}
}

// readLog reads a replica's log file directly.
func readLog(t *testing.T, h *harness, svc string, id int) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.replicaDir(svc, id), logFileName))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestStopIgnoringSIGTERM checks that a replica ignoring SIGTERM is killed
// after StopGrace and reported SHUTTING_DOWN until then.
func TestStopIgnoringSIGTERM(t *testing.T) {
	t.Parallel()
	h := startAgent(t, nil)
	asg := serverAssignment(t, "stubborn", 1)
	// A background child too: the whole group must go.
	asg.Spec.Run = `trap "" TERM; sleep 300 & exec python3 ` + serverScript(t)
	h.desire(1, asg)
	rep := h.waitStatus("stubborn", 1, protocol.ReplicaReady, readyTimeout)

	start := time.Now()
	h.desire(2)
	h.waitStatus("stubborn", 1, protocol.ReplicaShuttingDown, 5*time.Second)
	h.waitGone("stubborn", 1, 10*time.Second)
	if d := time.Since(start); d < h.cfg.StopGrace {
		t.Errorf("dropped after %s, want at least the %s grace", d, h.cfg.StopGrace)
	}
	if err := groupGone(rep.PID); err != nil {
		t.Error(err)
	}
	if !strings.Contains(readLog(t, h, "stubborn", 1), "serving on port") {
		t.Error("log lacks the server's output")
	}
}

// TestRunReturnStopsEverything cancels Run with replicas in every phase and
// checks that no process is left.
func TestRunReturnStopsEverything(t *testing.T) {
	t.Parallel()
	h := startAgent(t, nil)
	ready := serverAssignment(t, "keep", 1)
	stubborn := serverAssignment(t, "keep", 2)
	stubborn.Version = 2
	stubborn.Spec.Run = `trap "" TERM; sleep 300 & exec python3 ` + serverScript(t)
	inSetup := serverAssignment(t, "keep", 3)
	inSetup.Version = 3
	inSetup.Spec.Setup = "sleep 300"
	h.desire(1, ready, stubborn, inSetup)
	h.waitStatus("keep", 1, protocol.ReplicaReady, readyTimeout)
	h.waitStatus("keep", 2, protocol.ReplicaReady, readyTimeout)
	h.waitStatus("keep", 3, protocol.ReplicaProvisioning, 5*time.Second)
	var pids []int
	testutil.WaitFor(t, 5*time.Second, func() error {
		pids = pids[:0]
		for _, r := range h.latest().Replicas {
			if r.PID <= 0 {
				return fmt.Errorf("replica %d has no pid yet", r.ReplicaID)
			}
			pids = append(pids, r.PID)
		}
		return nil
	})

	h.stop()
	for _, pid := range pids {
		if err := groupGone(pid); err != nil {
			t.Error(err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(h.cfg.DataDir, "replicas", "*", pgidFile))
	if len(files) != 0 {
		t.Errorf("pgid files left: %v", files)
	}
}

// TestOldEpochIgnored checks that a desired set older than the applied one
// changes nothing, and one with the same epoch (a re-send) is applied.
func TestOldEpochIgnored(t *testing.T) {
	t.Parallel()
	h := startAgent(t, nil)
	one := serverAssignment(t, "ep", 1)
	h.desire(5, one)
	h.waitStatus("ep", 1, protocol.ReplicaReady, readyTimeout)

	h.desire(3) // stale: would remove replica 1
	two := serverAssignment(t, "ep", 2)
	h.desire(5, one, two) // re-send of epoch 5 plus a new replica
	h.waitStatus("ep", 2, protocol.ReplicaReady, readyTimeout)
	if r, ok := h.report("ep", 1); !ok || r.Status != protocol.ReplicaReady {
		t.Errorf("replica 1 = %+v, %v; want still READY", r, ok)
	}
	if slices.Contains(h.history("ep", 1), protocol.ReplicaShuttingDown) {
		t.Errorf("stale epoch stopped replica 1: history %v", h.history("ep", 1))
	}
}

// TestProbeKinds checks GET and POST probes, with headers and post data.
func TestProbeKinds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		probe protocol.ReadinessProbe
		want  protocol.ReplicaStatus
	}{
		{"get", protocol.ReadinessProbe{Path: "/health", InitialDelaySeconds: 20}, protocol.ReplicaReady},
		{"post with data and headers", protocol.ReadinessProbe{Path: "/ready", PostData: `{"q": 1}`, Headers: map[string]string{"X-Probe": "yes"}, InitialDelaySeconds: 20}, protocol.ReplicaReady},
		{"post missing header", protocol.ReadinessProbe{Path: "/ready", PostData: `{"q": 1}`, InitialDelaySeconds: 3}, protocol.ReplicaFailedInitialDelay},
		{"get of a 404 path", protocol.ReadinessProbe{Path: "/nope", InitialDelaySeconds: 3}, protocol.ReplicaFailedInitialDelay},
		{"redirect followed", protocol.ReadinessProbe{Path: "/moved", InitialDelaySeconds: 20}, protocol.ReplicaReady},
		// 0 is honoured, not taken for "unset": a probe failing after the
		// first probe interval fails it.
		{"no initial delay", protocol.ReadinessProbe{Path: "/nope", InitialDelaySeconds: 0}, protocol.ReplicaFailedInitialDelay},
	}
	h := startAgent(t, nil)
	var asgs []protocol.ReplicaAssignment
	for i, tt := range tests {
		asg := serverAssignment(t, "probe", i+1)
		asg.Version = i + 1 // a spec is a version's
		asg.Spec.Service.ReadinessProbe = tt.probe
		asgs = append(asgs, asg)
	}
	h.desire(1, asgs...)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.waitStatus("probe", i+1, tt.want, readyTimeout)
		})
	}
}

// TestPortTaken: the agent runs a replica on the port the leader assigned
// and only confirms it. A port held by a process baton does not run is
// reported (PortBusy, nothing started, same replica) until the leader
// assigns another; the replica then starts there. A run that hard-codes
// the task's port, when it was given another, says why it failed.
func TestPortTaken(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	h := startAgent(t, nil)
	asg := serverAssignment(t, "ports", 1)
	asg.Port = busyPort
	fixed := serverAssignment(t, "ports", 2)
	fixed.Version = 2
	fixed.Spec.Service.Port = busyPort
	fixed.Spec.Run = "exec python3 -m http.server " + strconv.Itoa(busyPort)
	h.desire(1, asg, fixed)

	rep := h.waitStatus("ports", 1, protocol.ReplicaProvisioning, readyTimeout)
	testutil.WaitFor(t, 10*time.Second, func() error {
		rep, _ = h.report("ports", 1)
		if !rep.PortBusy {
			return fmt.Errorf("replica 1 not reported port-busy: %+v", rep)
		}
		return nil
	})
	if !strings.Contains(rep.Reason, fmt.Sprintf("port %d is held on this host", busyPort)) || rep.PID != 0 ||
		rep.Endpoint != net.JoinHostPort("127.0.0.1", strconv.Itoa(busyPort)) {
		t.Errorf("port-busy report = %+v, want the busy port in its reason and endpoint, and nothing started", rep)
	}
	if rep := h.waitStatus("ports", 2, protocol.ReplicaFailed, readyTimeout); !strings.Contains(rep.Reason,
		fmt.Sprintf("the task's port %d was taken on this host, so the replica got PORT=%d", busyPort, fixed.Port)) {
		t.Errorf("hard-coded port failure reason = %q, want the port hint", rep.Reason)
	}

	// The leader moves replica 1 to another port: same id, now READY there.
	asg.Port = specPort(t)
	h.desire(2, asg, fixed)
	rep = h.waitStatus("ports", 1, protocol.ReplicaReady, readyTimeout)
	var env map[string]string
	if err := getJSON("http://"+rep.Endpoint+"/env", &env); err != nil {
		t.Fatal(err)
	}
	if env["PORT"] != strconv.Itoa(asg.Port) || rep.PortBusy || rep.Reason != "" {
		t.Errorf("after the new port: PORT=%s report %+v, want PORT=%d and no port-busy", env["PORT"], rep, asg.Port)
	}

	// Two replicas given one port (a leader's mistake): the second waits.
	twin := serverAssignment(t, "ports", 3)
	twin.Port = asg.Port
	h.desire(3, asg, fixed, twin)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if r, _ := h.report("ports", 3); !r.PortBusy {
			return fmt.Errorf("replica 3 on replica 1's port is %+v, want port-busy", r)
		}
		return nil
	})
}

// TestPortHeldBrieflyIsNotBusy: a port that is held for a moment when
// the replica starts (a process of the host on its way out) is waited
// for, not reported busy: a port-busy report makes the leader move the
// replica and keep the port out of placement on this host for minutes.
func TestPortHeldBrieflyIsNotBusy(t *testing.T) {
	t.Parallel()
	holder, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := holder.Addr().(*net.TCPAddr).Port
	h := startAgent(t, nil)
	asg := serverAssignment(t, "brief", 1)
	asg.Port = port
	h.desire(1, asg)
	h.waitStatus("brief", 1, protocol.ReplicaProvisioning, readyTimeout)
	release := time.Now().Add(portBusyConfirm / 2)
	sawBusy := false
	for time.Now().Before(release) {
		if rep, ok := h.report("brief", 1); ok && rep.PortBusy {
			sawBusy = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	holder.Close()
	rep := h.waitStatus("brief", 1, protocol.ReplicaReady, readyTimeout)
	if sawBusy {
		t.Errorf("replica reported port-busy while port %d was held for %v only", port, portBusyConfirm/2)
	}
	if rep.Endpoint != net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) || rep.PortBusy {
		t.Errorf("report %+v, want READY on the assigned port %d", rep, port)
	}
}

// TestLogs checks the logs endpoint: 404s, tail=N (alone, with follow, and
// bad values), a plain read, and follow, which streams new lines and ends
// when the replica is gone.
func TestLogs(t *testing.T) {
	t.Parallel()
	h := startAgent(t, nil)
	asg := serverAssignment(t, "logs", 1)
	asg.Spec.Run = `i=0; while true; do i=$((i+1)); echo "line-$i"; sleep 0.05; done`
	h.desire(1, asg)
	h.waitStatus("logs", 1, protocol.ReplicaStarting, 5*time.Second)
	base := "http://" + h.agent.HTTPAddr()

	t.Run("unknown replica", func(t *testing.T) {
		code, body := getText(t, base+"/v1/replicas/logs/99/logs")
		var apiErr protocol.APIError
		if code != http.StatusNotFound || json.Unmarshal([]byte(body), &apiErr) != nil || apiErr.Code != protocol.CodeNotFound {
			t.Errorf("got %d %q, want 404 not_found", code, body)
		}
	})
	t.Run("bad name", func(t *testing.T) {
		if code, _ := getText(t, base+"/v1/replicas/..%2F..%2Fetc/1/logs"); code != http.StatusBadRequest && code != http.StatusNotFound {
			t.Errorf("got %d, want 400 or 404", code)
		}
	})
	// The tail cases want a few lines written already.
	testutil.WaitFor(t, 10*time.Second, func() error {
		if _, body := getText(t, base+"/v1/replicas/logs/1/logs"); !strings.Contains(body, "line-6\n") {
			return fmt.Errorf("log so far %q", body)
		}
		return nil
	})
	t.Run("tail", func(t *testing.T) {
		code, body := getText(t, base+"/v1/replicas/logs/1/logs?tail=5")
		if code != http.StatusOK {
			t.Fatalf("got %d %q", code, body)
		}
		consecutiveLines(t, strings.Split(strings.TrimSuffix(body, "\n"), "\n"))
		if n := strings.Count(body, "\n"); n != 5 {
			t.Errorf("tail=5 gave %d lines: %q", n, body)
		}
		if _, all := getText(t, base+"/v1/replicas/logs/1/logs"); !strings.Contains(all, "\n"+body) {
			t.Errorf("tail %q is not a part of the log", body)
		}
	})
	t.Run("bad tail", func(t *testing.T) {
		for _, q := range []string{"tail=abc", "tail=0&follow=1", "tail=100001"} {
			code, body := getText(t, base+"/v1/replicas/logs/1/logs?"+q)
			var apiErr protocol.APIError
			if code != http.StatusBadRequest || json.Unmarshal([]byte(body), &apiErr) != nil ||
				apiErr.Code != protocol.CodeBadRequest || !strings.Contains(apiErr.Message, "use a number of lines from 1 to 100000") {
				t.Errorf("%s: got %d %q, want 400 bad_request naming tail", q, code, body)
			}
		}
	})
	t.Run("tail and follow", func(t *testing.T) {
		resp, err := http.Get(base + "/v1/replicas/logs/1/logs?tail=2&follow=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// The last two lines, then new ones, with none lost or repeated
		// between the two.
		var lines []string
		sc := bufio.NewScanner(resp.Body)
		for len(lines) < 8 && sc.Scan() {
			lines = append(lines, sc.Text())
		}
		if sc.Err() != nil || len(lines) < 8 {
			t.Fatalf("stream ended after %q: %v", lines, sc.Err())
		}
		consecutiveLines(t, lines)
	})
	t.Run("follow", func(t *testing.T) {
		resp, err := http.Get(base + "/v1/replicas/logs/1/logs?follow=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("content type %q", ct)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() == "line-20" { // written ~1s after start: streamed, not read at once
				break
			}
		}
		if sc.Err() != nil {
			t.Fatal(sc.Err())
		}
		h.desire(2)
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, resp.Body)
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("follow stream ended with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("follow stream did not end after the replica was removed")
		}
	})
	t.Run("plain", func(t *testing.T) {
		code, body := getText(t, base+"/v1/replicas/logs/1/logs")
		if code != http.StatusOK || !strings.Contains(body, "line-20\n") || !strings.Contains(body, "baton: starting run") {
			t.Errorf("got %d, %d bytes", code, len(body))
		}
	})
}

// TestGPUsAndMetrics checks that fake GPU health reaches the status and
// /metrics, and that /healthz answers.
func TestGPUsAndMetrics(t *testing.T) {
	t.Parallel()
	h := startAgent(t, func(c *Config) { c.Accelerators = "A100:2,H100:1" })
	fake := h.agent.GPUSource().(*gpu.Fake)
	if err := fake.SetHealth("GPU-fake-a1-2", false, "xid 79"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		gpus := h.latest().Agent.Capacity.GPUs
		if len(gpus) != 3 || gpus[2].Name != "H100" || gpus[2].Healthy || gpus[2].Reason != "xid 79" || !gpus[0].Healthy {
			return fmt.Errorf("gpus = %+v", gpus)
		}
		return nil
	})
	base := "http://" + h.agent.HTTPAddr()
	if code, body := getText(t, base+"/healthz"); code != http.StatusOK || !strings.HasPrefix(body, "ok\nnats: connected to nats://") {
		t.Errorf("healthz = %d %q", code, body)
	}
	code, body := getText(t, base+"/metrics")
	for _, want := range []string{
		`baton_agent_gpus{agent="a1",healthy="false"} 1`,
		`baton_agent_gpus{agent="a1",healthy="true"} 2`,
		`baton_agent_replicas{agent="a1",status="READY"} 0`,
		`baton_agent_probe_failures_total{agent="a1"} 0`,
	} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestOrphansKilledOnStart leaves a replica group behind as a crashed
// agent would and checks that the next agent start kills it.
func TestOrphansKilledOnStart(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	dir := filepath.Join(dataDir, "replicas", "orphan-7")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", "sleep 300 & sleep 300")
	cmd.Env = append(os.Environ(), "BATON_SERVICE=orphan", "BATON_REPLICA_ID=7")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-waited })
	rec := fmt.Sprintf("%d orphan 7\n", cmd.Process.Pid)
	if err := os.WriteFile(filepath.Join(dir, pgidFile), []byte(rec), 0o644); err != nil {
		t.Fatal(err)
	}
	// A group not ours (no BATON_* env) must survive.
	bystander := exec.Command("sleep", "300")
	bystander.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := bystander.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bystander.Process.Kill(); bystander.Wait() })
	other := filepath.Join(dataDir, "replicas", "other-1")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, pgidFile), fmt.Appendf(nil, "%d other 1\n", bystander.Process.Pid), 0o644)

	startAgent(t, func(c *Config) { c.DataDir = dataDir })
	testutil.WaitFor(t, 5*time.Second, func() error { return groupGone(cmd.Process.Pid) })
	if !groupAlive(bystander.Process.Pid) {
		t.Error("an unrelated process group was killed")
	}
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"ok", Config{ID: "agent-1", Accelerators: "T4"}, false},
		{"no id: derived from the host name", Config{Accelerators: "T4"}, false},
		{"bad id", Config{ID: "Agent.1"}, true},
		{"id too long", Config{ID: strings.Repeat("a", 64)}, true},
		{"bad port range", Config{ID: "a", PortRange: protocol.PortRange{Min: 2000, Max: 1000}}, true},
		{"no such replica user", Config{ID: "a", ReplicaUser: "no-such-user-baton"}, true},
		{"bad accelerators", Config{ID: "a", Accelerators: "A100:x"}, true},
		{"negative cpus", Config{ID: "a", CPUs: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.ReplicaUser == "" {
				tt.cfg.ReplicaUser = currentUser(t)
			}
			a, err := New(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (a.cpus <= 0 || a.memGB <= 0) {
				t.Errorf("detected cpus %g memory %g", a.cpus, a.memGB)
			}
		})
	}
}

func TestParseMemTotal(t *testing.T) {
	got, err := parseMemTotal(strings.NewReader("MemFree: 1 kB\nMemTotal:       16777216 kB\n"))
	if err != nil || got != 16 {
		t.Errorf("parseMemTotal = %g, %v; want 16", got, err)
	}
	if _, err := parseMemTotal(strings.NewReader("nothing\n")); err == nil {
		t.Error("no MemTotal line: want an error")
	}
}

func TestRunTwice(t *testing.T) {
	h := startAgent(t, nil)
	if err := h.agent.Run(context.Background()); err != ErrAlreadyRun {
		t.Errorf("second Run = %v, want ErrAlreadyRun", err)
	}
}

// TestFailureReportedAfterGroupStops: the leader frees a FAILED replica's
// CPUs and GPUs for a replacement, so the agent reports the failure only
// once the replica's whole group is gone, NOT_READY until then.
func TestFailureReportedAfterGroupStops(t *testing.T) {
	t.Parallel()
	h := startAgent(t, func(c *Config) { c.StopGrace = 2 * time.Second })
	asg := serverAssignment(t, "stubborn", 1)
	asg.Spec.Run = "trap '' TERM; sleep 30"
	asg.Spec.Service.ReadinessProbe = protocol.ReadinessProbe{Path: "/", InitialDelaySeconds: 1, TimeoutSeconds: 1}
	h.desire(1, asg)
	var pgid int
	testutil.WaitFor(t, 15*time.Second, func() error {
		r, ok := h.report("stubborn", 1)
		if ok && r.PID > 0 {
			pgid = r.PID
		}
		if !ok || !r.Status.IsFailed() {
			return fmt.Errorf("not failed yet: %+v", r)
		}
		return nil
	})
	if pgid == 0 {
		t.Fatal("never saw the replica's pid")
	}
	if groupAlive(pgid) {
		t.Errorf("FAILED reported while process group %d still runs", pgid)
	}
	hist := h.history("stubborn", 1)
	if len(hist) < 2 || hist[len(hist)-1] != protocol.ReplicaFailedInitialDelay || hist[len(hist)-2] != protocol.ReplicaNotReady {
		t.Errorf("history %v, want NOT_READY (stopping) then FAILED_INITIAL_DELAY at the end", hist)
	}
}

// TestDrainingReplicaNotStarted: a retired replica stays in the desired set
// while LBs drain it; an agent that no longer runs it (it stopped it for an
// earlier leader, or restarted) must not start it again.
func TestDrainingReplicaNotStarted(t *testing.T) {
	t.Parallel()
	h := startAgent(t, nil)
	asg := serverAssignment(t, "web", 1)
	h.desire(1, asg)
	h.waitStatus("web", 1, protocol.ReplicaReady, readyTimeout)
	// Still draining: kept running.
	draining := asg
	draining.Draining = true
	h.desire(2, draining)
	time.Sleep(500 * time.Millisecond)
	if r, ok := h.report("web", 1); !ok || r.Status != protocol.ReplicaReady {
		t.Fatalf("draining replica = %+v (reported %v), want it kept READY", r, ok)
	}
	h.desire(3) // drained: stopped
	h.waitGone("web", 1, 10*time.Second)
	h.desire(4, draining) // a new leader still lists it as draining
	time.Sleep(2 * time.Second)
	if r, ok := h.report("web", 1); ok {
		t.Errorf("retired replica started again: %+v", r)
	}
}

// TestReusedKeyStartsFresh: a replica key assigned again after its
// replica ended (a service deleted and created again) starts with its own
// log and directory; the earlier one is kept as <dir>.prev.
func TestReusedKeyStartsFresh(t *testing.T) {
	t.Parallel()
	h := startAgent(t, nil)
	asg := serverAssignment(t, "again", 1)
	asg.Spec.Setup = "echo first > marker"
	h.desire(1, asg)
	h.waitStatus("again", 1, protocol.ReplicaReady, readyTimeout)
	h.desire(2)
	h.waitGone("again", 1, 10*time.Second)
	asg.Spec.Setup = "test ! -e marker"
	h.desire(3, asg)
	h.waitStatus("again", 1, protocol.ReplicaReady, readyTimeout)
	dir := h.replicaDir("again", 1)
	log, err := os.ReadFile(filepath.Join(dir, logFileName))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "baton: starting run"); n != 1 {
		t.Errorf("log has %d runs, want only this replica's:\n%s", n, log)
	}
	prev, err := os.ReadFile(filepath.Join(dir+".prev", logFileName))
	if err != nil || !strings.Contains(string(prev), "baton: starting run") {
		t.Errorf("earlier log not kept in %s.prev: %v %q", dir, err, prev)
	}
}

// TestFarAheadEpochRejected: a desired set whose epoch is more than
// MaxEpochAhead past the index the leader confirms is dropped whole (it
// would make every real set look stale), and the next real set applies.
func TestFarAheadEpochRejected(t *testing.T) {
	t.Parallel()
	h := startAgent(t, nil)
	var asks atomic.Int64
	if _, err := h.nc.Subscribe(protocol.SubjectClusterIndex, func(m *nats.Msg) {
		asks.Add(1)
		_ = m.Respond([]byte(`{"index":40}`))
	}); err != nil {
		t.Fatal(err)
	}
	_ = h.nc.Flush()
	one := serverAssignment(t, "far", 1)
	h.desire(5, one)
	h.waitStatus("far", 1, protocol.ReplicaReady, readyTimeout)
	h.desire(1 << 40) // forged: would stop replica 1 and shadow every set
	two := serverAssignment(t, "far", 2)
	h.desire(6, one, two)
	h.waitStatus("far", 2, protocol.ReplicaReady, readyTimeout)
	if slices.Contains(h.history("far", 1), protocol.ReplicaShuttingDown) {
		t.Errorf("the far-ahead set stopped replica 1: history %v", h.history("far", 1))
	}
	if asks.Load() != 1 {
		t.Errorf("%d questions to the leader, want 1", asks.Load())
	}
	if n := promValue(t, h.agent, "baton_agent_invalid_messages_total"); n != 1 {
		t.Errorf("invalid messages counted: %v, want 1", n)
	}
}
