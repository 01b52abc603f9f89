package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/loadgen"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// writeTask writes a task file into dir and returns its path.
func writeTask(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPendingWhenNothingFits: a version whose resources fit no agent stays
// PENDING with the reason shown, and the old version keeps serving.
func TestPendingWhenNothingFits(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 2}, agentOpts{cpus: 4})
	c.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "web", "-y")
	st := c.waitReady("web", 1, 2, 60*time.Second)
	endpoint := service(st, "web").Endpoint

	c.mustCLI("serve", "update", "web", "examples/http_server/task_toolarge.yaml", "-y")
	testutil.WaitFor(t, 20*time.Second, func() error {
		st, err := c.statusAPI()
		if err != nil {
			return err
		}
		for _, r := range replicas(st, "web") {
			if r.Version == 2 {
				if r.Status != protocol.ReplicaPending || !strings.Contains(r.Reason, "no agent fits cpus 64+") {
					return fmt.Errorf("v2 replica %d: %s %q", r.ID, r.Status, r.Reason)
				}
				return nil
			}
		}
		return fmt.Errorf("no v2 replica yet")
	})
	table := c.mustCLI("serve", "status", "web")
	if !strings.Contains(table, "PENDING") || !strings.Contains(table, "no agent fits cpus 64+") {
		t.Errorf("status does not show the PENDING reason:\n%s", table)
	}
	res := loadgen.Run(context.Background(), loadgen.Config{URL: "http://" + endpoint + "/", Workers: 4, MaxDuration: 2 * time.Second})
	sum := loadgen.Summarize(res)
	if sum.Sent == 0 || sum.Failed != 0 || sum.ByVersion[1] != sum.Sent {
		t.Fatalf("old version must keep serving every request: %+v", sum)
	}
	st = c.status("web")
	if v := service(st, "web"); fmt.Sprint(v.ActiveVersions) != "[1]" || v.Status != protocol.ServiceReady {
		t.Fatalf("service %+v, want active [1] and READY", v)
	}
}

// TestKilledReplicaIsReplaced: killing a replica's process makes it FAILED,
// the LB stops routing to it and a new replica takes its place.
func TestKilledReplicaIsReplaced(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 4}, agentOpts{cpus: 4})
	c.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "web", "-y")
	st := c.waitReady("web", 1, 2, 60*time.Second)
	endpoint := service(st, "web").Endpoint

	pids := c.replicaPIDs("web", 1)
	if len(pids) == 0 {
		t.Fatal("no process found for replica 1")
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	killedAt := time.Now()
	var failedAt time.Time
	testutil.WaitFor(t, 30*time.Second, func() error {
		st, err := c.statusAPI()
		if err != nil {
			return err
		}
		reps := replicas(st, "web")
		if failedAt.IsZero() && reps[1].Status.IsFailed() {
			failedAt = time.Now()
		}
		if !reps[1].Status.IsFailed() {
			return fmt.Errorf("replica 1 is %s", reps[1].Status)
		}
		if r, ok := reps[3]; !ok || r.Status != protocol.ReplicaReady {
			return fmt.Errorf("replacement replica 3 not READY yet: %+v", reps)
		}
		return nil
	})
	t.Logf("replica 1 FAILED %s after kill", failedAt.Sub(killedAt).Round(time.Millisecond))
	if r := replicas(c.status("web"), "web")[1]; !strings.Contains(r.Reason, "exited") && !strings.Contains(r.Reason, "killed") {
		t.Errorf("FAILED replica should say why: %+v", replicas(c.status("web"), "web")[1])
	}
	// The LB no longer routes to replica 1: its table and its traffic say so.
	lbRoutes := c.lbRoutes(t)
	if strings.Contains(lbRoutes, `"replica_id": 1,`) || strings.Contains(lbRoutes, `"replica_id":1,`) {
		t.Errorf("LB table still lists replica 1: %s", lbRoutes)
	}
	res := loadgen.Run(context.Background(), loadgen.Config{URL: "http://" + endpoint + "/", Workers: 4, MaxRequests: 200})
	for _, r := range res {
		if r.Failed() || r.Replica == 1 {
			t.Fatalf("request after replacement: replica %d err %q", r.Replica, r.Err)
		}
	}
}

// lbRoutes returns the LB's /v1/routes dump.
func (c *cluster) lbRoutes(t *testing.T) string {
	t.Helper()
	addr := c.lbAdminAddr(t)
	resp, err := http.Get("http://" + addr + "/v1/routes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	buf, _ := json.MarshalIndent(v, "", "  ")
	return string(buf)
}

// lbAdminAddr finds the LB's admin address in its log.
func (c *cluster) lbAdminAddr(t *testing.T) string {
	t.Helper()
	buf, err := os.ReadFile(filepath.Join(c.dir, "lb.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(buf), "\n") {
		if i := strings.Index(line, "admin_addr="); i >= 0 {
			f := strings.Fields(line[i+len("admin_addr="):])
			if len(f) > 0 {
				return strings.Trim(f[0], `"`)
			}
		}
	}
	t.Fatalf("LB admin address not in its log:\n%s", buf)
	return ""
}

// TestCoordinatorRestart: kill -9 the only coordinator and start it again
// with the same data dir. Services, versions and replicas survive; the LB
// kept serving meanwhile.
func TestCoordinatorRestart(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 2}, agentOpts{cpus: 2})
	c.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "web", "-y")
	before := c.waitReady("web", 1, 2, 60*time.Second)
	endpoint := service(before, "web").Endpoint

	stop, served := startLoad("http://"+endpoint+"/", 4)
	waitServed(t, served, 20)
	c.kill9("coordinator")
	down := time.Now()
	time.Sleep(2 * time.Second) // the LB serves from its last table meanwhile
	c.startCoordinator()
	t.Logf("coordinator down for %s", time.Since(down).Round(time.Millisecond))
	c.waitAgents(2)
	after := c.waitReady("web", 1, 2, 30*time.Second)
	time.Sleep(time.Second)
	results := stop()

	b, a := service(before, "web"), service(after, "web")
	if a.Version != b.Version || a.Endpoint != b.Endpoint || fmt.Sprint(a.ActiveVersions) != fmt.Sprint(b.ActiveVersions) {
		t.Fatalf("service changed across restart: before %+v after %+v", b, a)
	}
	if fmt.Sprint(ids(replicas(after, "web"))) != "[1 2]" {
		t.Fatalf("replicas after restart %v, want [1 2]", ids(replicas(after, "web")))
	}
	for id, r := range replicas(after, "web") {
		if r.Endpoint != replicas(before, "web")[id].Endpoint {
			t.Errorf("replica %d endpoint changed: %s -> %s", id, replicas(before, "web")[id].Endpoint, r.Endpoint)
		}
	}
	sum := loadgen.Summarize(results)
	t.Logf("load during restart: %d requests, %d failed", sum.Sent, sum.Failed)
	if sum.Failed != 0 || sum.Sent == 0 {
		t.Fatalf("LB must keep serving while the coordinator is down: %d of %d failed: %v", sum.Failed, sum.Sent, sum.FirstErrors)
	}
}

// TestAgentRestartLeavesNoOrphans: kill -9 an agent and start it again with
// the same data dir. Its old replica processes are gone (from the OS's
// view), and the service is back at full strength.
func TestAgentRestartLeavesNoOrphans(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 4})
	c.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "web", "-y")
	c.waitReady("web", 1, 2, 60*time.Second)
	before := map[int]bool{}
	for _, pid := range c.replicaProcesses("web") {
		before[pid] = true
	}
	if len(before) == 0 {
		t.Fatal("no replica processes found")
	}
	c.kill9("agent-1")
	c.startAgent("agent-1", "127.0.0.11", agentOpts{cpus: 4})
	testutil.WaitFor(t, 60*time.Second, func() error {
		for _, pid := range c.replicaProcesses("web") {
			if before[pid] {
				return fmt.Errorf("replica process %d from before the agent restart still runs", pid)
			}
		}
		st, err := c.statusAPI()
		if err != nil {
			return err
		}
		if s := service(st, "web"); s.ReadyReplicas != 2 {
			return fmt.Errorf("%d READY: %+v", s.ReadyReplicas, st.Replicas)
		}
		return nil
	})
}
