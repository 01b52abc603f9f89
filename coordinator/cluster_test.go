package coordinator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/agent"
	"github.com/baton-dev/baton/coordinator"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/lbnode"
	"github.com/baton-dev/baton/protocol"
)

// exampleServer is the repository's example replica server.
func exampleServer(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(filepath.Dir(file)), "examples", "http_server", "server.py")
}

// testCluster is a coordinator, agents and an LB in this process: real
// Raft, real NATS, real replica processes, tight timings.
type testCluster struct {
	t       *testing.T
	coord   *coordinator.Server
	lb      *lbnode.Node
	api     string
	agents  map[string]context.CancelFunc
	natsURL string
	wg      sync.WaitGroup
	ctx     context.Context
}

func newTestCluster(t *testing.T, cfgFn func(*coordinator.Config), agentCPUs ...float64) *testCluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &testCluster{t: t, agents: map[string]context.CancelFunc{}, ctx: ctx}
	cfg := coordinator.DevConfig()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	cfg.NATSPort = -1
	cfg.FirstLBPort = testutil.FreePort(t, "127.0.0.1")
	cfg.RaftTimeout = 50 * time.Millisecond
	cfg.ReconcileInterval = 50 * time.Millisecond
	cfg.DrainDelay = 200 * time.Millisecond
	cfg.AgentTimeout = 2 * time.Second
	cfg.RestartBackoff = 100 * time.Millisecond
	if cfgFn != nil {
		cfgFn(&cfg)
	}
	coord, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.coord, c.api, c.natsURL = coord, coord.HTTPAddr(), coord.NATSURL()
	c.goRun(ctx, coord.Run)
	for i, cpus := range agentCPUs {
		c.startAgent(fmt.Sprintf("agent-%d", i+1), cpus)
	}
	lcfg := lbnode.DevConfig()
	lcfg.ID = "lb-1"
	lcfg.NATSURL = c.natsURL
	lcfg.AdminAddr = "127.0.0.1:0"
	lcfg.SyncInterval = 500 * time.Millisecond
	lb, err := lbnode.New(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	c.lb = lb
	c.goRun(ctx, lb.Run)
	t.Cleanup(func() {
		for _, stop := range c.agents {
			stop()
		}
		cancel()
		c.wg.Wait()
	})
	c.waitAgents(len(agentCPUs))
	return c
}

// waitAgents waits until n agents are registered and alive.
func (c *testCluster) waitAgents(n int) {
	c.t.Helper()
	testutil.WaitFor(c.t, 15*time.Second, func() error {
		var agents []protocol.Agent
		if err := c.get("/v1/agents", &agents); err != nil {
			return err
		}
		alive := 0
		for _, a := range agents {
			if a.Alive {
				alive++
			}
		}
		if alive != n {
			return fmt.Errorf("%d agents alive: %+v", alive, agents)
		}
		return nil
	})
}

func (c *testCluster) goRun(ctx context.Context, run func(context.Context) error) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := run(ctx); err != nil {
			c.t.Errorf("component stopped: %v", err)
		}
	}()
}

func (c *testCluster) startAgent(id string, cpus float64) {
	c.startAgentVia(id, cpus, c.natsURL)
}

// startAgentVia starts an agent that reaches NATS at natsURL.
func (c *testCluster) startAgentVia(id string, cpus float64, natsURL string) {
	cfg := agent.DevConfig()
	cfg.ID = id
	cfg.NATSURL = natsURL
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DataDir = c.t.TempDir()
	cfg.CPUs, cfg.MemoryGB = cpus, 4
	cfg.HeartbeatInterval = 200 * time.Millisecond
	cfg.ProbeInterval = 100 * time.Millisecond
	cfg.StopGrace = time.Second
	a, err := agent.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	c.agents[id] = cancel
	c.goRun(ctx, a.Run)
}

func (c *testCluster) get(path string, v any) error {
	resp, err := http.Get("http://" + c.api + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (c *testCluster) post(path string, body any) {
	c.t.Helper()
	buf, _ := json.Marshal(body)
	resp, err := http.Post("http://"+c.api+path, "application/json", bytes.NewReader(buf))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		c.t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
	}
}

func (c *testCluster) status() protocol.StatusResponse {
	c.t.Helper()
	var st protocol.StatusResponse
	if err := c.get("/v1/status", &st); err != nil {
		c.t.Fatal(err)
	}
	return st
}

// task returns a task YAML running the example server (or run, if set).
func task(t *testing.T, version, replicas int, cpus, run string) string {
	if run == "" {
		run = "exec python3 " + exampleServer(t) + " --port $PORT"
	}
	return fmt.Sprintf(`run: %s
envs: {VERSION: "%d"}
service:
  readiness_probe: {path: /health, initial_delay_seconds: 10}
  replicas: %d
resources:
  cpus: %s
`, run, version, replicas, cpus)
}

func replicaOf(st protocol.StatusResponse, id int) *protocol.ReplicaStatusView {
	for i := range st.Replicas {
		if st.Replicas[i].ID == id {
			return &st.Replicas[i]
		}
	}
	return nil
}

func (c *testCluster) waitReady(version, n int) {
	c.t.Helper()
	testutil.WaitFor(c.t, 30*time.Second, func() error {
		ready := 0
		st := c.status()
		for _, r := range st.Replicas {
			if r.Version == version && r.Status == protocol.ReplicaReady {
				ready++
			}
		}
		if ready < n {
			return fmt.Errorf("%d/%d of version %d READY: %+v", ready, n, version, st.Replicas)
		}
		return nil
	})
}

// waitLBVersions waits until the LB routes web to replicas of exactly
// these versions, one entry per replica (as fmt prints []int: "[1 1]").
// Route tables reach the LB over NATS, after the API shows the state.
func (c *testCluster) waitLBVersions(want string, timeout time.Duration) {
	c.t.Helper()
	testutil.WaitFor(c.t, timeout, func() error {
		if vs := c.lbVersions(); fmt.Sprint(vs) != want {
			return fmt.Errorf("LB routes to versions %v, want %s", vs, want)
		}
		return nil
	})
}

// lbVersions returns the versions the LB routes web to.
func (c *testCluster) lbVersions() []int {
	if tb := c.lb.Table("web"); tb != nil {
		var vs []int
		for _, e := range tb.Endpoints {
			vs = append(vs, e.Version)
		}
		return vs
	}
	return nil
}

// TestFailingVersionRollsBack: a new version whose replicas crash before
// becoming ready fails after a bounded number of tries; the old version
// keeps serving and is never touched.
func TestFailingVersionRollsBack(t *testing.T) {
	c := newTestCluster(t, nil, 4)
	c.post("/v1/services", protocol.UpRequest{Name: "web", YAML: task(t, 1, 1, "1", ""), Filename: "v1.yaml"})
	c.waitReady(1, 1)
	c.post("/v1/services/web/update", protocol.UpdateRequest{YAML: task(t, 2, 1, "1", "echo boom; exit 3"), Filename: "v2.yaml"})
	testutil.WaitFor(t, 30*time.Second, func() error {
		st := c.status()
		svc := st.Services[0]
		if !strings.Contains(svc.Reason, "failed") {
			return fmt.Errorf("service %+v", svc)
		}
		return nil
	})
	st := c.status()
	svc := st.Services[0]
	if fmt.Sprint(svc.ActiveVersions) != "[1]" || svc.Version != 2 || svc.Status != protocol.ServiceReady {
		t.Fatalf("after rollback: %+v", svc)
	}
	if r := replicaOf(st, 1); r == nil || r.Status != protocol.ReplicaReady {
		t.Fatalf("old replica 1 must keep serving: %+v", r)
	}
	failed := 0
	for _, r := range st.Replicas {
		if r.Version == 2 {
			if !r.Status.IsFailed() {
				t.Errorf("v2 replica %d is %s", r.ID, r.Status)
			}
			failed++
		}
	}
	if failed != 3 {
		t.Errorf("want exactly 3 failed tries of version 2 (MaxConsecutiveFailures x min_replicas), got %d", failed)
	}
	c.waitLBVersions("[1]", 5*time.Second)
	// The service can still be updated to a good version afterwards.
	c.post("/v1/services/web/update", protocol.UpdateRequest{YAML: task(t, 3, 1, "1", ""), Filename: "v3.yaml"})
	c.waitLBVersions("[3]", 30*time.Second)
}

// TestProgressDeadlineFailsPendingVersion: a version that never gets a
// READY replica fails at its deadline and its PENDING replicas go away.
func TestProgressDeadlineFailsPendingVersion(t *testing.T) {
	// The PENDING replica lives until the deadline (5s plus the 10s initial
	// delay): long enough for the first wait below to see it on a loaded
	// machine, short enough for the second one to see the failure.
	c := newTestCluster(t, func(cfg *coordinator.Config) { cfg.ProgressDeadline = 5 * time.Second }, 2)
	c.post("/v1/services", protocol.UpRequest{Name: "web", YAML: task(t, 1, 1, "1", ""), Filename: "v1.yaml"})
	c.waitReady(1, 1)
	c.post("/v1/services/web/update", protocol.UpdateRequest{YAML: task(t, 2, 1, "8+", ""), Filename: "v2.yaml"})
	testutil.WaitFor(t, 5*time.Second, func() error {
		r := replicaOf(c.status(), 2)
		if r == nil || r.Status != protocol.ReplicaPending || !strings.Contains(r.Reason, "no agent fits cpus 8+") {
			return fmt.Errorf("replica 2: %+v", r)
		}
		return nil
	})
	testutil.WaitFor(t, 30*time.Second, func() error {
		st := c.status()
		if replicaOf(st, 2) != nil || !strings.Contains(st.Services[0].Reason, "without progress") {
			return fmt.Errorf("service %+v replicas %+v", st.Services[0], st.Replicas)
		}
		return nil
	})
	c.waitLBVersions("[1]", 5*time.Second)
}

// upOnAgent1 starts web with one replica (cpus 2) and checks it landed on
// agent-1, the smallest agent, so that agent-2 is where it must move.
func (c *testCluster) upOnAgent1() {
	c.t.Helper()
	c.post("/v1/services", protocol.UpRequest{Name: "web", YAML: task(c.t, 1, 1, "2", ""), Filename: "v1.yaml"})
	c.waitReady(1, 1)
	if r := replicaOf(c.status(), 1); r.Agent != "agent-1" {
		c.t.Fatalf("replica 1 on %s, want the smallest agent agent-1", r.Agent)
	}
}

// waitReplicaMovedToAgent2 waits until replica 1 is FAILED with a reason
// containing reason, its replacement 2 is READY on agent-2, and the LB
// routes to replica 2 alone.
func (c *testCluster) waitReplicaMovedToAgent2(reason string) {
	c.t.Helper()
	testutil.WaitFor(c.t, 20*time.Second, func() error {
		st := c.status()
		r1, r2 := replicaOf(st, 1), replicaOf(st, 2)
		if r1 == nil || !r1.Status.IsFailed() || !strings.Contains(r1.Reason, reason) {
			return fmt.Errorf("replica 1: %+v", r1)
		}
		if r2 == nil || r2.Agent != "agent-2" || r2.Status != protocol.ReplicaReady {
			return fmt.Errorf("replica 2: %+v", r2)
		}
		return nil
	})
	testutil.WaitFor(c.t, 5*time.Second, func() error {
		if tb := c.lb.Table("web"); tb == nil || len(tb.Endpoints) != 1 || tb.Endpoints[0].ReplicaID != 2 {
			return fmt.Errorf("LB table %+v", tb)
		}
		return nil
	})
}

// TestLostAgentsReplicasMove: when an agent goes silent (here its network
// to NATS is cut), its replicas are FAILED and replaced on another agent.
func TestLostAgentsReplicasMove(t *testing.T) {
	c := newTestCluster(t, func(cfg *coordinator.Config) { cfg.AgentGCAfter = 2 * time.Second })
	natsAddr := strings.TrimPrefix(c.natsURL, "nats://")
	proxied, cut := testutil.TCPProxy(t, natsAddr)
	c.startAgentVia("agent-1", 2, "nats://"+proxied)
	c.startAgent("agent-2", 4)
	c.waitAgents(2)
	c.upOnAgent1()
	cut()
	c.waitReplicaMovedToAgent2("agent-1 lost")
	// Lost long enough, the agent is forgotten; its failed replica stays listed.
	testutil.WaitFor(t, 10*time.Second, func() error {
		var agents []protocol.Agent
		if err := c.get("/v1/agents", &agents); err != nil {
			return err
		}
		if len(agents) != 1 || agents[0].ID != "agent-2" {
			return fmt.Errorf("agents %+v", agents)
		}
		return nil
	})
	if r := replicaOf(c.status(), 1); r == nil || !r.Status.IsFailed() {
		t.Fatalf("failed replica 1 should stay listed: %+v", r)
	}
}

// TestUpdateSupersedesRollout: an update during a rollout fails the version
// being rolled out and rolls out the newest one.
func TestUpdateSupersedesRollout(t *testing.T) {
	c := newTestCluster(t, nil, 8)
	c.post("/v1/services", protocol.UpRequest{Name: "web", YAML: task(t, 1, 1, "1", ""), Filename: "v1.yaml"})
	c.waitReady(1, 1)
	slow := "sleep 30; exec python3 " + exampleServer(t) + " --port $PORT"
	c.post("/v1/services/web/update", protocol.UpdateRequest{YAML: task(t, 2, 1, "1", slow), Filename: "v2.yaml"})
	c.post("/v1/services/web/update", protocol.UpdateRequest{YAML: task(t, 3, 1, "1", ""), Filename: "v3.yaml"})
	testutil.WaitFor(t, 30*time.Second, func() error {
		st := c.status()
		if fmt.Sprint(st.Services[0].ActiveVersions) != "[3]" || len(st.Replicas) != 1 {
			return fmt.Errorf("active %v replicas %+v", st.Services[0].ActiveVersions, st.Replicas)
		}
		return nil
	})
	// Whether version 2 got a replica before it was superseded depends on
	// timing; either way only a version-3 replica is left.
	if st := c.status(); st.Replicas[0].Version != 3 {
		t.Fatalf("want only a replica of version 3, got %+v", st.Replicas)
	}
}

// TestRollingUpdate: new replicas come up one at a time, each READY one
// retires an old one, the LB routes to the READY replicas of both versions
// meanwhile, and capacity never drops below min_replicas.
func TestRollingUpdate(t *testing.T) {
	c := newTestCluster(t, nil, 8)
	c.post("/v1/services", protocol.UpRequest{Name: "web", YAML: task(t, 1, 3, "1", ""), Filename: "v1.yaml"})
	c.waitReady(1, 3)
	slowStart := "sleep 0.5; exec python3 " + exampleServer(t) + " --port $PORT"
	c.post("/v1/services/web/update", protocol.UpdateRequest{YAML: task(t, 2, 3, "1", slowStart), Filename: "v2.yaml", Mode: protocol.UpdateRolling})
	sawMixed := false
	maxStartingNew := 0
	testutil.WaitFor(t, 60*time.Second, func() error {
		st := c.status()
		ready, startingNew, old := 0, 0, 0
		for _, r := range st.Replicas {
			if r.Status == protocol.ReplicaReady {
				ready++
			}
			if r.Version == 2 && !r.Status.IsTerminal() && r.Status != protocol.ReplicaReady {
				startingNew++
			}
			if r.Version == 1 && !r.Status.IsFailed() {
				old++
			}
		}
		if ready < 3 {
			t.Errorf("only %d READY replicas during a rolling update of min_replicas 3: %+v", ready, st.Replicas)
		}
		maxStartingNew = max(maxStartingNew, startingNew)
		vs := map[int]bool{}
		for _, v := range c.lbVersions() {
			vs[v] = true
		}
		if vs[1] && vs[2] {
			sawMixed = true
		}
		if old > 0 || fmt.Sprint(st.Services[0].ActiveVersions) != "[2]" {
			return fmt.Errorf("active %v, %d old replicas left", st.Services[0].ActiveVersions, old)
		}
		return nil
	})
	if maxStartingNew > 1 {
		t.Errorf("saw %d new replicas starting at once; rolling adds one at a time", maxStartingNew)
	}
	if !sawMixed {
		t.Error("the LB never routed to both versions during the rolling update")
	}
	if st := c.status(); fmt.Sprint(st.Services[0].ActiveVersions) != "[2]" || st.Services[0].ReadyReplicas != 3 {
		t.Fatalf("after rolling update: %+v", st.Services[0])
	}
}

// TestRollingUpdateOfCrashingVersionRollsBack: a rolling update whose new
// replicas never become ready fails and leaves the old version serving.
func TestRollingUpdateOfCrashingVersionRollsBack(t *testing.T) {
	c := newTestCluster(t, nil, 8)
	c.post("/v1/services", protocol.UpRequest{Name: "web", YAML: task(t, 1, 2, "1", ""), Filename: "v1.yaml"})
	c.waitReady(1, 2)
	c.post("/v1/services/web/update", protocol.UpdateRequest{YAML: task(t, 2, 2, "1", "exit 1"), Filename: "v2.yaml", Mode: protocol.UpdateRolling})
	testutil.WaitFor(t, 30*time.Second, func() error {
		st := c.status()
		if svc := st.Services[0]; fmt.Sprint(svc.ActiveVersions) != "[1]" || !strings.Contains(svc.Reason, "failed") {
			return fmt.Errorf("service %+v", svc)
		}
		return nil
	})
	st := c.status()
	for _, id := range []int{1, 2} {
		if r := replicaOf(st, id); r == nil || r.Status != protocol.ReplicaReady {
			t.Errorf("old replica %d should still serve: %+v", id, r)
		}
	}
	c.waitLBVersions("[1 1]", 5*time.Second)
}

// TestFailedRollingUpdateKeepsCapacity: when a rolling update fails after
// some new replicas became READY (and retired old ones), those keep
// serving until the old version is back to strength: the service never
// drops to zero endpoints.
func TestFailedRollingUpdateKeepsCapacity(t *testing.T) {
	c := newTestCluster(t, func(cfg *coordinator.Config) { cfg.ProgressDeadline = 3 * time.Second }, 8)
	c.post("/v1/services", protocol.UpRequest{Name: "web", YAML: task(t, 1, 2, "1", ""), Filename: "v1.yaml"})
	c.waitReady(1, 2)
	// The first new replica gets ready; the second hangs before listening,
	// so the rollout stalls and fails at its deadline.
	flaky := `if [ "$BATON_REPLICA_ID" = 3 ]; then exec python3 ` + exampleServer(t) + ` --port $PORT; else sleep 300; fi`
	c.post("/v1/services/web/update", protocol.UpdateRequest{YAML: task(t, 2, 2, "1", flaky), Filename: "v2.yaml", Mode: protocol.UpdateRolling})
	sawFailed := false
	testutil.WaitFor(t, 60*time.Second, func() error {
		st := c.status()
		if tb := c.lb.Table("web"); tb != nil && len(tb.Endpoints) == 0 {
			t.Errorf("the LB had no endpoint at all: %+v", st.Replicas)
		}
		svc := st.Services[0]
		if strings.Contains(svc.Reason, "failed") {
			sawFailed = true
		}
		ready1 := 0
		for _, r := range st.Replicas {
			if r.Version == 1 && r.Status == protocol.ReplicaReady {
				ready1++
			}
			if r.Version == 2 && !r.Status.IsTerminal() && sawFailed && ready1 == 2 {
				return fmt.Errorf("v2 replica %d still %s after v1 is back", r.ID, r.Status)
			}
		}
		if !sawFailed || ready1 != 2 || fmt.Sprint(svc.ActiveVersions) != "[1]" {
			return fmt.Errorf("failed=%v, %d v1 READY, active %v", sawFailed, ready1, svc.ActiveVersions)
		}
		return nil
	})
}

// TestRollingUpdateInFullCluster: with no spare capacity, a rolling update
// retires one old replica at a time to make room (never dropping below one
// READY replica) instead of stalling.
func TestRollingUpdateInFullCluster(t *testing.T) {
	c := newTestCluster(t, nil, 2)
	c.post("/v1/services", protocol.UpRequest{Name: "web", YAML: task(t, 1, 2, "1", ""), Filename: "v1.yaml"})
	c.waitReady(1, 2)
	c.post("/v1/services/web/update", protocol.UpdateRequest{YAML: task(t, 2, 2, "1", ""), Filename: "v2.yaml", Mode: protocol.UpdateRolling})
	testutil.WaitFor(t, 60*time.Second, func() error {
		st := c.status()
		ready := 0
		for _, r := range st.Replicas {
			if r.Status == protocol.ReplicaReady {
				ready++
			}
		}
		if ready < 1 {
			t.Errorf("no READY replica during the rolling update: %+v", st.Replicas)
		}
		if svc := st.Services[0]; fmt.Sprint(svc.ActiveVersions) != "[2]" || svc.ReadyReplicas != 2 || svc.TotalReplicas != 2 {
			return fmt.Errorf("service %+v replicas %+v", svc, st.Replicas)
		}
		return nil
	})
}

// TestExternalNATS runs the cluster on a NATS server the coordinator did
// not start (--nats-url): agents, the LB and the controller all meet there.
func TestExternalNATS(t *testing.T) {
	external := testutil.NATS(t)
	c := newTestCluster(t, func(cfg *coordinator.Config) { cfg.NATSURL = external }, 2)
	if c.natsURL != external {
		t.Fatalf("coordinator uses NATS at %s, want the external %s", c.natsURL, external)
	}
	c.post("/v1/services", protocol.UpRequest{Name: "web", YAML: task(t, 1, 2, "1", ""), Filename: "v1.yaml"})
	c.waitReady(1, 2)
	c.waitLBVersions("[1 1]", 5*time.Second)
}

// TestLeavingAgentsReplicasMove: an agent that shuts down says so; the
// leader takes it out of service at once (long before its heartbeat
// timeout), and its replicas leave the routes and are replaced elsewhere.
func TestLeavingAgentsReplicasMove(t *testing.T) {
	c := newTestCluster(t, func(cfg *coordinator.Config) { cfg.AgentTimeout = time.Minute }, 2, 4)
	c.upOnAgent1()
	c.agents["agent-1"]()
	c.waitReplicaMovedToAgent2("agent-1 is shutting down")
	var agents []protocol.Agent
	if err := c.get("/v1/agents", &agents); err != nil {
		t.Fatal(err)
	}
	for _, a := range agents {
		if a.ID == "agent-1" && a.Alive {
			t.Errorf("agent-1 still alive after leaving: %+v", a)
		}
	}
}
