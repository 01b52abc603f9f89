package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// devCluster is `baton dev` in a process of its own, on ports picked for
// the test (others may hold 7400, 4222 or 30001 on this machine).
type devCluster struct {
	t       *testing.T
	api     string
	lbPort  int
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
	marker  string
}

// devLBHost is where the dev cluster's LB listens.
const devLBHost = "127.0.0.31"

// startDev runs `baton dev` with the seed's four agents.
func startDev(t *testing.T) *devCluster {
	t.Helper()
	dir := testutil.OpenTempDir(t)
	d := &devCluster{t: t, done: make(chan struct{}), logPath: filepath.Join(dir, "dev.log"), marker: "BATON_E2E_DEV=" + dir}
	for attempt := 1; ; attempt++ {
		d.api = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
		// The LB on an address of its own: the agents' HTTP servers take
		// ports of 127.0.0.1 as they start, maybe the one just picked.
		d.lbPort = testutil.FreePort(t, devLBHost)
		args := []string{"dev",
			"--agent", "cpus=2", "--agent", "cpus=2", "--agent", "cpus=4", "--agent", "cpus=4,accelerators=A100:1",
			"--http-addr", d.api, "--raft-addr", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1")),
			"--nats-port", strconv.Itoa(testutil.FreePort(t, "127.0.0.1")),
			"--lb-host", devLBHost, "--lb-admin-addr", fmt.Sprintf("%s:%d", devLBHost, testutil.FreePort(t, devLBHost)), "--first-lb-port", strconv.Itoa(d.lbPort),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("data-%d", attempt))}
		logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		d.cmd = exec.Command(batonBin, args...)
		// baton dev runs replicas as its own user, with its environment
		// passed on only where asked; the marker finds its processes.
		d.cmd.Env = append(os.Environ(), d.marker)
		d.cmd.Stdout, d.cmd.Stderr = logf, logf
		d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := d.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		d.done = make(chan struct{})
		go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); logf.Close(); close(done) }(d.cmd, d.done)
		err = d.waitHealthy()
		if err == nil {
			break
		}
		d.stop()
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			log, _ := os.ReadFile(d.logPath)
			lines := strings.Split(string(log), "\n")
			var warnings []string
			for _, l := range lines {
				if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
					warnings = append(warnings, l)
				}
			}
			if len(warnings) > 60 {
				warnings = warnings[:60]
			}
			if len(lines) > 120 {
				lines = lines[len(lines)-120:]
			}
			t.Logf("---- baton dev log (first warnings) ----\n%s", strings.Join(warnings, "\n"))
			t.Logf("---- baton dev log (last lines) ----\n%s", strings.Join(lines, "\n"))
		}
	})
	return d
}

func (d *devCluster) waitHealthy() error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-d.done:
			log, _ := os.ReadFile(d.logPath)
			return fmt.Errorf("baton dev exited while starting:\n%s", log)
		default:
		}
		if resp, err := http.Get("http://" + d.api + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("baton dev not healthy after 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *devCluster) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
}

// cli runs the CLI in workRoot against the dev cluster.
func (d *devCluster) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, batonBin, args...)
	cmd.Dir = workRoot
	cmd.Env = append(os.Environ(), "BATON_ADDR=http://"+d.api)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// seedRepeats is how many times TestSeedTaskOnDev brings the seed's task
// up and down: 20, or BATON_SEED_REPEATS.
func seedRepeats(t *testing.T) int {
	n := 20
	if s := os.Getenv("BATON_SEED_REPEATS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("BATON_SEED_REPEATS=%q: want a number >= 1", s)
		}
	}
	return n
}

// TestSeedTaskOnDev runs the seed's own task, exactly as the repository
// ships it (resources.ports: 8081, replicas: 2), on `baton dev` with the
// seed's four agents on one machine, several times over: every time it
// comes up as replicas 1 and 2, READY, on two different ports, and answers
// through the LB. Before the leader chose ports, two agents of the machine
// both handed out 8081 and replica 2 often crashed with "Address already
// in use", coming back as replica 3.
func TestSeedTaskOnDev(t *testing.T) {
	want8081 := portFree(8081) // else a process of another's holds it, and the replica is moved
	d := startDev(t)
	repeats := seedRepeats(t)
	for i := 1; i <= repeats; i++ {
		start := time.Now()
		if out, err := d.cli("serve", "up", "examples/http_server/task.yaml", "-n", "http-server", "-y"); err != nil {
			t.Fatalf("round %d: up: %v\n%s", i, err, out)
		}
		var st protocol.StatusResponse
		testutil.WaitFor(t, 60*time.Second, func() error {
			out, err := d.cli("serve", "status", "http-server", "--json")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				return err
			}
			reps := replicas(st, "http-server")
			for id, r := range reps {
				if id > 2 || r.Status.IsFailed() {
					t.Fatalf("round %d: replica %d is %s (%s): the seed's replicas must be 1 and 2, READY", i, id, r.Status, r.Reason)
				}
			}
			if len(reps) != 2 || reps[1].Status != protocol.ReplicaReady || reps[2].Status != protocol.ReplicaReady {
				return fmt.Errorf("round %d: replicas %+v", i, reps)
			}
			return nil
		})
		reps := replicas(st, "http-server")
		if reps[1].Endpoint == reps[2].Endpoint {
			t.Fatalf("round %d: replicas 1 and 2 share endpoint %s", i, reps[1].Endpoint)
		}
		ports := []string{portOf(reps[1].Endpoint), portOf(reps[2].Endpoint)}
		if ports[0] != "8081" && ports[1] != "8081" && want8081 {
			t.Errorf("round %d: neither replica got the task's port 8081 (%v) though it was free", i, ports)
		}
		endpoint := service(st, "http-server").Endpoint
		seen := map[string]bool{}
		testutil.WaitFor(t, 15*time.Second, func() error {
			resp, err := http.Get("http://" + endpoint + "/")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("LB answered %d", resp.StatusCode)
			}
			seen[resp.Header.Get(protocol.HeaderReplica)] = true
			if !seen["1"] || !seen["2"] {
				return fmt.Errorf("LB has served replicas %v, want 1 and 2", seen)
			}
			return nil
		})
		t.Logf("round %d: replicas 1,2 READY on ports %v, both served through %s, %.1fs after up",
			i, ports, endpoint, time.Since(start).Seconds())
		if out, err := d.cli("serve", "down", "http-server", "-y", "--wait"); err != nil {
			t.Fatalf("round %d: down: %v\n%s", i, err, out)
		}
	}
}

func portOf(endpoint string) string {
	_, port, _ := net.SplitHostPort(endpoint)
	return port
}

// portFree reports whether port can be bound on every address now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
