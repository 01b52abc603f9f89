package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/loadgen"
	"github.com/baton-dev/baton/internal/procscan"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// The coordinator cluster's acceptance: three coordinators, agents and
// LBs as separate processes (the fault harness, faults_test.go), broken
// while they serve.

// get decodes GET path from the first running, unfrozen coordinator that
// answers 200.
func (fc *faultCluster) get(path string, v any) error {
	var last error = fmt.Errorf("no coordinator is running")
	for _, c := range fc.coords {
		if !fc.running(c) || fc.isStopped(c) {
			continue
		}
		code, body, err := faultGet(fc.apiURL(c)+path, 2*time.Second)
		if err != nil {
			last = err
			continue
		}
		if code != http.StatusOK {
			last = fmt.Errorf("%s: GET %s: %d %s", c, path, code, body)
			continue
		}
		return json.Unmarshal([]byte(body), v)
	}
	return last
}

func (fc *faultCluster) status() (protocol.StatusResponse, error) {
	var st protocol.StatusResponse
	return st, fc.get("/v1/status", &st)
}

// waitStatus waits until ok accepts the cluster's status.
func (fc *faultCluster) waitStatus(timeout time.Duration, what string, ok func(protocol.StatusResponse) error) protocol.StatusResponse {
	fc.t.Helper()
	var st protocol.StatusResponse
	testutil.WaitFor(fc.t, timeout, func() error {
		var err error
		if st, err = fc.status(); err != nil {
			return err
		}
		if err := ok(st); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
	return st
}

// waitReady waits (up to 90 s: replicas start a Python server) until at
// least n replicas of the service's version are READY.
func (fc *faultCluster) waitReady(service string, version, n int) protocol.StatusResponse {
	fc.t.Helper()
	return fc.waitStatus(90*time.Second, fmt.Sprintf("%d READY replicas of %s version %d", n, service, version), func(st protocol.StatusResponse) error {
		if ready, _ := readyOf(st, service, version); ready < n {
			return fmt.Errorf("%d READY", ready)
		}
		return nil
	})
}

// waitAgentsAlive waits until n agents are registered and alive.
func (fc *faultCluster) waitAgentsAlive(n int) {
	fc.t.Helper()
	testutil.WaitFor(fc.t, 30*time.Second, func() error {
		var agents []protocol.Agent
		if err := fc.get("/v1/agents", &agents); err != nil {
			return err
		}
		alive := 0
		for _, a := range agents {
			if a.Alive {
				alive++
			}
		}
		if alive < n {
			return fmt.Errorf("%d of %d agents alive", alive, n)
		}
		return nil
	})
}

// mustCLI runs the CLI against the cluster and fails the test on error.
func (fc *faultCluster) mustCLI(args ...string) string {
	fc.t.Helper()
	out, errOut, err := fc.cli(args...)
	if err != nil {
		fc.t.Fatalf("baton %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// readyOf counts the READY replicas of a version and all replicas of it
// that are not FAILED.
func readyOf(st protocol.StatusResponse, service string, version int) (ready, live int) {
	for _, r := range st.Replicas {
		if r.ServiceName != service || r.Version != version {
			continue
		}
		if r.Status == protocol.ReplicaReady {
			ready++
		}
		if !r.Status.IsFailed() {
			live++
		}
	}
	return ready, live
}

// lbTable returns an LB's route table for a service.
func (fc *faultCluster) lbTable(lb, service string) (protocol.RouteTable, error) {
	code, body, err := faultGet("http://"+hostPort(fc.node(lb).ip, faultAdminPort)+"/v1/routes", 2*time.Second)
	if err != nil {
		return protocol.RouteTable{}, err
	}
	if code != http.StatusOK {
		return protocol.RouteTable{}, fmt.Errorf("%s /v1/routes: %d", lb, code)
	}
	var dump struct {
		Tables []protocol.RouteTable `json:"tables"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		return protocol.RouteTable{}, err
	}
	for _, t := range dump.Tables {
		if t.Service == service {
			return t, nil
		}
	}
	return protocol.RouteTable{}, fmt.Errorf("%s has no table for %s", lb, service)
}

// waitLBsRoute waits until every LB routes only to version's replicas,
// at least want of them.
func (fc *faultCluster) waitLBsRoute(service string, version, want int, timeout time.Duration) {
	fc.t.Helper()
	testutil.WaitFor(fc.t, timeout, func() error {
		for _, lb := range fc.lbs {
			t, err := fc.lbTable(lb, service)
			if err != nil {
				return err
			}
			n := 0
			for _, e := range t.Endpoints {
				if e.Version != version {
					return fmt.Errorf("%s still routes to version %d", lb, e.Version)
				}
				n++
			}
			if n < want {
				return fmt.Errorf("%s routes %d/%d replicas of version %d", lb, n, want, version)
			}
		}
		return nil
	})
}

// traffic is a load of plain requests and event streams on every LB.
type traffic struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []loadgen.Result
	streams loadgen.StreamResult
}

// startTraffic puts 3 request clients (and, with streams, 1 event stream)
// on each LB's endpoint for the service.
func (fc *faultCluster) startTraffic(endpointPort string, streams bool) *traffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{cancel: cancel}
	for _, lb := range fc.lbs {
		base := "http://" + fc.node(lb).ip + ":" + endpointPort
		tr.wg.Go(func() {
			res := loadgen.Run(ctx, loadgen.Config{URL: base + "/", Workers: 3, Pause: 10 * time.Millisecond,
				MaxDuration: 5 * time.Minute, MaxRequests: 200000})
			tr.mu.Lock()
			tr.results = append(tr.results, res...)
			tr.mu.Unlock()
		})
		if !streams {
			continue
		}
		tr.wg.Go(func() {
			s := loadgen.Streams(ctx, base+"/stream", 1, 5, 10000)
			tr.mu.Lock()
			tr.streams.Completed += s.Completed
			tr.streams.Cut += s.Cut
			tr.streams.Errors = append(tr.streams.Errors, s.Errors...)
			tr.mu.Unlock()
		})
	}
	fc.t.Cleanup(tr.stopQuietly)
	return tr
}

func (tr *traffic) stopQuietly() {
	tr.cancel()
	tr.wg.Wait()
}

// stop ends the load and fails the test if a request failed or a stream
// was cut; it returns the summary.
func (tr *traffic) stop(t *testing.T) loadgen.Summary {
	t.Helper()
	tr.stopQuietly()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	sum := loadgen.Summarize(tr.results)
	t.Logf("load: %d requests (%d failed; by version %v), %d event streams completed, %d cut",
		sum.Sent, sum.Failed, sum.ByVersion, tr.streams.Completed, tr.streams.Cut)
	if sum.Failed > 0 || tr.streams.Cut > 0 || sum.Sent == 0 {
		t.Fatalf("requests failed: %d %v; streams cut: %d %v", sum.Failed, sum.FirstErrors, tr.streams.Cut, tr.streams.Errors)
	}
	return sum
}

// flipsApplied reads how many flips a coordinator's FSM applied.
func (fc *faultCluster) flipsApplied(c string) float64 {
	fc.t.Helper()
	_, page, err := faultGet(fc.apiURL(c)+"/metrics", 2*time.Second)
	if err != nil {
		fc.t.Fatal(err)
	}
	v, _ := metricValue(page, `baton_coordinator_fsm_applied_total{result="ok",type="flip"}`)
	return v
}

var lbNATSLine = regexp.MustCompile(`(?m)^nats: connected to nats://([0-9.]+):`)

// lbNATSCoordinator is the coordinator whose NATS server an LB is
// connected to (from the LB's /healthz).
func (fc *faultCluster) lbNATSCoordinator(lb string) (string, error) {
	_, body, err := faultGet("http://"+hostPort(fc.node(lb).ip, faultAdminPort)+"/healthz", 2*time.Second)
	if err != nil {
		return "", err
	}
	m := lbNATSLine.FindStringSubmatch(body)
	if m == nil {
		return "", fmt.Errorf("%s /healthz names no NATS server: %s", lb, body)
	}
	for _, c := range fc.coords {
		if fc.node(c).ip == m[1] {
			return c, nil
		}
	}
	return "", fmt.Errorf("%s is connected to %s, no coordinator's", lb, m[1])
}

// TestLeaderKilledDuringUpdate: 3 coordinators, 3 agents and 2 LBs. During
// a blue_green update under load (plain requests and event streams on
// both LBs) the leader is killed (kill -9): the update completes with
// exactly one flip committed, no request fails, no stream is cut, and
// min_replicas replicas of the new version remain. Then the coordinator
// whose NATS server an LB uses is killed: the LB reconnects to another,
// keeps serving and applies the next flip.
func TestLeaderKilledDuringUpdate(t *testing.T) {
	fc := newFaultCluster(t, faultOpts{coordinators: 3, agents: 3, lbs: 2, agentCPUs: 4})
	fc.waitAgentsAlive(3)
	fc.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "ha", "-y")
	st := fc.waitReady("ha", 1, 2)
	port := portOf(st.Services[0].Endpoint)
	fc.waitLBsRoute("ha", 1, 2, 20*time.Second)
	tr := fc.startTraffic(port, true)
	time.Sleep(time.Second) // version-1 traffic first

	v2 := exampleTaskWith(t, `VERSION: "1"`, `VERSION: "2"`)
	fc.mustCLI("serve", "update", "ha", v2+"/task.yaml", "-y")
	leader, err := fc.leader()
	if err != nil {
		t.Fatal(err)
	}
	fc.kill9(leader)
	killedAt := time.Now()
	newLeader := fc.waitLeader(20*time.Second, leader)
	t.Logf("killed leader %s during the update; %s leads after %s", leader, newLeader, time.Since(killedAt).Round(time.Millisecond))

	fc.waitStatus(90*time.Second, "version 2 active, version 1 gone", func(st protocol.StatusResponse) error {
		svc := service(st, "ha")
		if svc == nil || len(svc.ActiveVersions) != 1 || svc.ActiveVersions[0] != 2 {
			return fmt.Errorf("service %+v", svc)
		}
		if _, live := readyOf(st, "ha", 1); live > 0 {
			return fmt.Errorf("%d replicas of version 1 left", live)
		}
		return nil
	})
	fc.waitLBsRoute("ha", 2, 2, 20*time.Second)
	time.Sleep(time.Second) // version-2 traffic after the old replicas are gone
	sum := tr.stop(t)
	if sum.ByVersion[1] == 0 || sum.ByVersion[2] == 0 || sum.StaleAfterFlip > 0 {
		t.Fatalf("by version %v; %d requests started after the first v2 answer were served by v1", sum.ByVersion, sum.StaleAfterFlip)
	}
	// Exactly min_replicas (2) replicas of version 2, and nothing else,
	// a few seconds on (no late duplicate).
	time.Sleep(3 * time.Second)
	st, err = fc.status()
	if err != nil {
		t.Fatal(err)
	}
	ready, live := readyOf(st, "ha", 2)
	if ready != 2 || live != 2 || len(st.Replicas) != 2 {
		t.Fatalf("want exactly 2 replicas of version 2, READY: %d READY, %d live, replicas %+v", ready, live, st.Replicas)
	}
	// Every surviving coordinator applied the whole log since it started:
	// one flip each means one flip committed.
	for _, c := range fc.coords {
		if c == leader {
			continue
		}
		if n := fc.flipsApplied(c); n != 1 {
			t.Fatalf("%s applied %v flips; want exactly 1", c, n)
		}
	}

	// The killed coordinator rejoins with its data dir; then the one whose
	// NATS server lb-1 uses dies.
	fc.restart(leader)
	fc.waitHealthy(leader, 30*time.Second)
	natsCoord, err := fc.lbNATSCoordinator("lb-1")
	if err != nil {
		t.Fatal(err)
	}
	tr = fc.startTraffic(port, true)
	fc.kill9(natsCoord)
	testutil.WaitFor(t, 20*time.Second, func() error {
		c, err := fc.lbNATSCoordinator("lb-1")
		if err != nil {
			return err
		}
		if c == natsCoord {
			return fmt.Errorf("lb-1 still says it is connected to %s", c)
		}
		return nil
	})
	fc.waitLeader(20*time.Second, natsCoord)
	v3 := exampleTaskWith(t, `VERSION: "1"`, `VERSION: "3"`)
	fc.mustCLI("serve", "update", "ha", v3+"/task.yaml", "-y")
	fc.waitLBsRoute("ha", 3, 2, 90*time.Second)
	time.Sleep(time.Second)
	tr.stop(t)
	t.Logf("lb-1 moved off %s's NATS server and applied the flip to version 3", natsCoord)
}

// TestAgentKilledAndFrozen: kill -9 of an agent running a replica gets
// the replica FAILED and a replacement READY on another agent within
// 10 s, with no request failed; an agent frozen (SIGSTOP) for 30 s and
// thawed leaves no duplicate replica behind.
func TestAgentKilledAndFrozen(t *testing.T) {
	fc := newFaultCluster(t, faultOpts{coordinators: 3, agents: 3, lbs: 1, agentCPUs: 2})
	fc.waitAgentsAlive(3)
	fc.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "ag", "-y")
	st := fc.waitReady("ag", 1, 2)
	port := portOf(st.Services[0].Endpoint)
	fc.waitLBsRoute("ag", 1, 2, 20*time.Second)
	// Plain requests only: a stream that a killed machine was serving is
	// cut whatever the LB does (the LB retries a request only before the
	// replica answered).
	tr := fc.startTraffic(port, false)
	time.Sleep(time.Second)

	victim := st.Replicas[0].Agent
	victimID := st.Replicas[0].ID
	fc.kill9(victim)
	killedAt := time.Now()
	var failedAfter time.Duration
	fc.waitStatus(10*time.Second, "replica FAILED and a replacement READY", func(st protocol.StatusResponse) error {
		failed := false
		for _, r := range st.Replicas {
			if r.ID == victimID && r.Status.IsFailed() {
				failed = true
				if failedAfter == 0 {
					failedAfter = time.Since(killedAt)
				}
			}
		}
		if !failed {
			return fmt.Errorf("replica %d not FAILED", victimID)
		}
		ready := 0
		for _, r := range st.Replicas {
			if r.Status == protocol.ReplicaReady && r.Agent != victim {
				ready++
			}
		}
		if ready < 2 {
			return fmt.Errorf("%d READY replicas away from %s", ready, victim)
		}
		return nil
	})
	t.Logf("agent %s killed: replica %d FAILED after %s, replacement READY after %s",
		victim, victimID, failedAfter.Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond))
	fc.waitLBsRoute("ag", 1, 2, 10*time.Second)

	// The killed agent comes back (empty: room for a replacement), then
	// an agent running a replica freezes for 30 s.
	fc.restart(victim)
	fc.waitAgentsAlive(3)
	st, err := fc.status()
	if err != nil {
		t.Fatal(err)
	}
	var frozen string
	frozenReplica := 0
	for _, r := range st.Replicas {
		if r.Status == protocol.ReplicaReady {
			frozen, frozenReplica = r.Agent, r.ID
			break
		}
	}
	fc.stop(frozen)
	time.Sleep(30 * time.Second)
	fc.cont(frozen)
	fc.waitAgentsAlive(3)
	// Afterwards: the frozen agent's replica was replaced while it slept
	// and is stopped now that it woke (not re-adopted beside its
	// replacement); two live replicas, each with its processes.
	replicaProcs := func(id int) []int {
		return procscan.WithEnv(fc.base.marker(), "BATON_SERVICE=ag", fmt.Sprintf("BATON_REPLICA_ID=%d", id))
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		st, err := fc.status()
		if err != nil {
			return err
		}
		ready, live := readyOf(st, "ag", 1)
		if ready != 2 || live != 2 {
			return fmt.Errorf("%d READY, %d live replicas: %+v", ready, live, st.Replicas)
		}
		for _, r := range st.Replicas {
			if r.ID == frozenReplica && !r.Status.IsFailed() {
				return fmt.Errorf("replica %d of the frozen agent is %s, not replaced", r.ID, r.Status)
			}
			if !r.Status.IsFailed() && len(replicaProcs(r.ID)) == 0 {
				return fmt.Errorf("live replica %d has no process", r.ID)
			}
		}
		if p := replicaProcs(frozenReplica); len(p) > 0 {
			return fmt.Errorf("replica %d still runs on the thawed agent %s: pids %v", frozenReplica, frozen, p)
		}
		return nil
	})
	testutil.Never(t, 5*time.Second, func() error {
		st, err := fc.status()
		if err != nil {
			return nil
		}
		if _, live := readyOf(st, "ag", 1); live != 2 {
			return fmt.Errorf("%d live replicas after the thaw", live)
		}
		if p := replicaProcs(frozenReplica); len(p) > 0 {
			return fmt.Errorf("replica %d runs again: pids %v", frozenReplica, p)
		}
		return nil
	})
	t.Logf("agent %s frozen 30 s: its replica %d was replaced and, after the thaw, stopped", frozen, frozenReplica)
	tr.stop(t)
}

// TestMinorityAndFullRestart: with one of three coordinators alive, writes
// are refused with the clear error, reads answer marked stale and traffic
// flows; after kill -9 of all three and a start of all three, every
// service, version and replica is kept, and the LB served throughout.
func TestMinorityAndFullRestart(t *testing.T) {
	fc := newFaultCluster(t, faultOpts{coordinators: 3, agents: 2, lbs: 1, agentCPUs: 2})
	fc.waitAgentsAlive(2)
	fc.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "keep", "-y")
	before := fc.waitReady("keep", 1, 2)
	fc.waitLBsRoute("keep", 1, 2, 20*time.Second)
	tr := fc.startTraffic(portOf(before.Services[0].Endpoint), true)
	time.Sleep(time.Second)

	survivor := fc.coords[2]
	fc.kill9(fc.coords[0])
	fc.kill9(fc.coords[1])
	// Until gossip declares them failed (a few seconds), a write may reach
	// Raft and end with an unknown outcome (it stays in the survivor's log
	// and may be committed later); once it has, writes are refused at once.
	testutil.WaitFor(t, 30*time.Second, func() error {
		var members protocol.MembersResponse
		if err := fc.get("/v1/operator/members", &members); err != nil {
			return err
		}
		failed := 0
		for _, m := range members.Members {
			if m.Role == "coordinator" && m.ID != survivor && m.Status == "failed" {
				failed++
			}
		}
		if failed != 2 {
			return fmt.Errorf("gossip shows %d of 2 coordinators failed: %+v", failed, members.Members)
		}
		return nil
	})
	for range 3 {
		start := time.Now()
		_, errOut, err := fc.cli("serve", "up", "examples/http_server/task.yaml", "-n", "refused", "-y")
		if err == nil {
			t.Fatal("a write was accepted with 1 of 3 coordinators")
		}
		if !strings.Contains(errOut, "no quorum: 1 of 3 coordinators reachable") {
			t.Fatalf("write refused without the quorum message: %s", errOut)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("the refusal took %s", took)
		}
	}
	out := fc.mustCLI("serve", "status", "--json")
	var st protocol.StatusResponse
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Stale || len(st.Services) != 1 {
		t.Fatalf("read with 1 of 3 coordinators: want the service, marked stale: %s", out)
	}
	_, errOut, _ := fc.cli("serve", "status")
	if !strings.Contains(errOut, "stale") {
		t.Fatalf("serve status with 1 of 3 coordinators printed no stale warning: %q", errOut)
	}
	t.Logf("with only %s alive: writes refused with no_quorum, reads marked stale", survivor)

	// All three die; the LB keeps serving; all three start again.
	fc.kill9(survivor)
	time.Sleep(2 * time.Second)
	for _, c := range fc.coords {
		fc.restart(c)
	}
	fc.waitLeader(30 * time.Second)
	after := fc.waitStatus(30*time.Second, "the state from before", func(st protocol.StatusResponse) error {
		if len(st.Services) != len(before.Services) || st.Services[0].Version != before.Services[0].Version ||
			st.Services[0].Endpoint != before.Services[0].Endpoint {
			return fmt.Errorf("services %+v, want %+v", st.Services, before.Services)
		}
		return nil
	})
	want := map[int]string{}
	for _, r := range before.Replicas {
		want[r.ID] = fmt.Sprintf("v%d %s %s", r.Version, r.Agent, r.Endpoint)
	}
	got := map[int]string{}
	for _, r := range after.Replicas {
		got[r.ID] = fmt.Sprintf("v%d %s %s", r.Version, r.Agent, r.Endpoint)
	}
	if fmt.Sprint(want) != fmt.Sprint(got) {
		t.Fatalf("replicas after the full restart %v, want %v", got, want)
	}
	fc.waitStatus(30*time.Second, "still 2 READY", func(st protocol.StatusResponse) error {
		if ready, live := readyOf(st, "keep", 1); ready != 2 || live != 2 {
			return fmt.Errorf("%d READY, %d live", ready, live)
		}
		return nil
	})
	tr.stop(t)
}
