package e2e

import (
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/loadgen"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// TestSeedWalkthrough is DESIGN.md's user story with separate processes:
// up, status, update under load, the flip, old replicas draining away,
// logs and down.
func TestSeedWalkthrough(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 2}, agentOpts{cpus: 2}, agentOpts{cpus: 4}, agentOpts{cpus: 4})

	out := c.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "http-server", "-y")
	if !strings.Contains(out, "http-server") {
		t.Fatalf("up output does not name the service: %q", out)
	}
	st := c.waitReady("http-server", 1, 2, 60*time.Second)
	svc := service(st, "http-server")
	endpoint := svc.Endpoint
	if svc.Version != 1 || svc.ReadyReplicas != 2 || svc.TotalReplicas != 2 || svc.Status != protocol.ServiceReady {
		t.Fatalf("after up: %+v", svc)
	}
	reps := replicas(st, "http-server")
	if len(reps) != 2 || reps[1].Version != 1 || reps[2].Version != 1 {
		t.Fatalf("after up want replicas 1,2 at version 1, got %+v", reps)
	}
	for _, id := range []int{1, 2} {
		if a := reps[id].Agent; a != "agent-1" && a != "agent-2" {
			t.Errorf("replica %d (cpus 2+) on %s, want a 2-cpu agent", id, a)
		}
	}
	// The human-readable tables, as the seed shows them.
	table := c.mustCLI("serve", "status", "http-server")
	for _, want := range []string{"NAME", "VERSION", "UPTIME", "STATUS", "REPLICAS", "ENDPOINT",
		"SERVICE_NAME", "LAUNCHED", "RESOURCES", "REGION", "2/2", endpoint, "1x agent-"} {
		if !strings.Contains(table, want) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}

	// Load through the LB for the whole update.
	stopLoad, served := startLoad("http://"+endpoint+"/", 8)
	waitServed(t, served, 50) // some version-1 traffic before the update

	updateAt := time.Now()
	c.mustCLI("serve", "update", "http-server", "examples/http_server/task_v2.yaml", "-y")
	st = c.status("http-server")
	svc = service(st, "http-server")
	if svc.Version != 2 || fmt.Sprint(svc.ActiveVersions) != "[1]" {
		t.Fatalf("right after update: version %d active %v, want 2 and [1]", svc.Version, svc.ActiveVersions)
	}
	// The update commits the version; the controller adds its replicas on
	// its next pass, usually before the CLI has exited.
	testutil.WaitFor(t, 10*time.Second, func() error {
		st = c.status("http-server")
		if reps = replicas(st, "http-server"); len(reps) != 4 {
			return fmt.Errorf("replicas %v", ids(reps))
		}
		return nil
	})
	if reps[3].Version != 2 || reps[4].Version != 2 || reps[1].Status != protocol.ReplicaReady || reps[2].Status != protocol.ReplicaReady {
		t.Fatalf("right after update want 1,2 READY (v1) and 3,4 (v2): %+v", reps)
	}
	for _, id := range []int{3, 4} {
		if s := reps[id].Status; s != protocol.ReplicaProvisioning && s != protocol.ReplicaStarting && s != protocol.ReplicaPending {
			t.Errorf("new replica %d is %s right after update", id, s)
		}
	}

	// Poll until the old replicas are gone, recording what we saw.
	var (
		flipAt      time.Time
		sawShutting = map[int]bool{}
		goneAt      time.Time
		newAgents   = map[int]string{}
		// When 2 READY v2 replicas were first seen with v1 still active.
		allReadyAt time.Time
	)
	testutil.WaitFor(t, 90*time.Second, func() error {
		st, err := c.statusAPI()
		if err != nil {
			return err
		}
		svc := service(st, "http-server")
		reps := replicas(st, "http-server")
		if flipAt.IsZero() && fmt.Sprint(svc.ActiveVersions) == "[2]" {
			flipAt = time.Now()
		}
		if flipAt.IsZero() {
			n := 0
			for _, r := range reps {
				if r.Version == 2 && r.Status == protocol.ReplicaReady {
					n++
				}
			}
			if n >= 2 && allReadyAt.IsZero() {
				allReadyAt = time.Now()
			}
		}
		for id, r := range reps {
			if r.Version == 1 && r.Status == protocol.ReplicaShuttingDown {
				sawShutting[id] = true
			}
			if r.Version == 2 {
				newAgents[id] = r.Agent
			}
		}
		_, has1 := reps[1]
		_, has2 := reps[2]
		if flipAt.IsZero() || has1 || has2 {
			return fmt.Errorf("active %v, replicas %v", svc.ActiveVersions, ids(reps))
		}
		goneAt = time.Now()
		return nil
	})
	// The flip is its own Raft command after the one that marks the second
	// replica READY, so a poll may land between them; it must not wait long.
	if !allReadyAt.IsZero() && flipAt.Sub(allReadyAt) > 3*time.Second {
		t.Errorf("2 v2 replicas READY at %s but the flip seen only %s later; with min_replicas 2 it should come at once",
			allReadyAt.Format(time.StampMilli), flipAt.Sub(allReadyAt))
	}
	if !sawShutting[1] || !sawShutting[2] {
		t.Errorf("old replicas 1,2 should go SHUTTING_DOWN before they disappear; saw %v", sawShutting)
	}
	for id, a := range newAgents {
		if a != "agent-3" && a != "agent-4" {
			t.Errorf("v2 replica %d (cpus 4+) on %s, want a 4-cpu agent", id, a)
		}
	}
	time.Sleep(time.Second) // v2-only traffic after the old replicas are gone
	results := stopLoad()

	st = c.status("http-server")
	svc = service(st, "http-server")
	reps = replicas(st, "http-server")
	if svc.Version != 2 || svc.ReadyReplicas != 2 || svc.TotalReplicas != 2 || svc.Endpoint != endpoint {
		t.Fatalf("after update: %+v (endpoint was %s)", svc, endpoint)
	}
	if fmt.Sprint(ids(reps)) != "[3 4]" {
		t.Fatalf("after update want replicas [3 4], got %v", ids(reps))
	}
	if len(c.replicaPIDs("http-server", 1)) != 0 || len(c.replicaPIDs("http-server", 2)) != 0 {
		t.Fatal("processes of retired replicas 1 or 2 are still running")
	}

	sum := loadgen.Summarize(results)
	t.Logf("load: %d requests, %d failed, by version %v; update->flip %s, flip->old gone %s",
		sum.Sent, sum.Failed, sum.ByVersion, flipAt.Sub(updateAt).Round(time.Millisecond), goneAt.Sub(flipAt).Round(time.Millisecond))
	if sum.Failed != 0 {
		t.Errorf("%d of %d requests failed during the update: %v", sum.Failed, sum.Sent, sum.FirstErrors)
	}
	if sum.ByVersion[1] == 0 || sum.ByVersion[2] == 0 {
		t.Errorf("want requests served by both versions, got %v", sum.ByVersion)
	}
	if sum.StaleAfterFlip != 0 {
		t.Errorf("%d requests started after the first version-2 response were served by version 1", sum.StaleAfterFlip)
	}

	logs := c.mustCLI("serve", "logs", "http-server", "3", "--no-follow")
	if !strings.Contains(logs, "GET /") {
		t.Errorf("logs of replica 3 show no requests:\n%s", logs)
	}

	c.mustCLI("serve", "down", "http-server", "-y")
	testutil.WaitFor(t, 30*time.Second, func() error {
		st, err := c.statusAPI()
		if err != nil {
			return err
		}
		if len(st.Services) != 0 {
			return fmt.Errorf("services still listed: %+v", st.Services)
		}
		if pids := c.replicaProcesses("http-server"); len(pids) != 0 {
			return fmt.Errorf("replica processes still running: %v", pids)
		}
		if !portClosed(endpoint) {
			return fmt.Errorf("LB port %s still accepts connections", endpoint)
		}
		return nil
	})
}

// waitServed waits until the load has had n successful requests.
func waitServed(t *testing.T, served *atomic.Int64, n int64) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if got := served.Load(); got < n {
			return fmt.Errorf("%d of %d requests served", got, n)
		}
		return nil
	})
}

func ids(reps map[int]protocol.ReplicaStatusView) []int {
	out := make([]int, 0, len(reps))
	for id := range reps {
		out = append(out, id)
	}
	sort.Ints(out)
	return out
}
