package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// sumMetric adds every sample of a metric on a /metrics page.
func sumMetric(page, name string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? ([0-9.e+-]+)$`)
	sum := 0.0
	for _, m := range re.FindAllStringSubmatch(page, -1) {
		if v, err := strconv.ParseFloat(m[2], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// exampleTaskWith writes the example's task.yaml into a new directory as
// task.yaml, with old replaced by new and its workdir made absolute, and
// returns the directory.
func exampleTaskWith(t *testing.T, old, new string) string {
	t.Helper()
	task := readFile(t, workRoot+"/examples/http_server/task.yaml")
	if !strings.Contains(task, old) {
		t.Fatalf("the example task has no %q", old)
	}
	task = strings.Replace(task, old, new, 1)
	task = strings.Replace(task, "workdir: examples/http_server", "workdir: "+workRoot+"/examples/http_server", 1)
	home := testutil.OpenTempDir(t)
	writeTask(t, home, "task.yaml", task)
	return home
}

// agentAddrs returns each agent's HTTP address.
func (c *cluster) agentAddrs(t *testing.T) map[string]string {
	t.Helper()
	resp, err := http.Get("http://" + c.apiAddr + "/v1/agents")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var agents []protocol.Agent
	if err := json.NewDecoder(resp.Body).Decode(&agents); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, a := range agents {
		out[a.ID] = a.Address
	}
	return out
}

// TestHostileMessagesOnNATS publishes, on the cluster's loopback NATS
// port, what a careless or hostile process on the machine could: an agent
// status whose agent id is 5,000 characters long, statuses and desired
// sets and route tables and acks that are invalid in every field, trailing
// data and garbage, and raw protocol abuse. The control plane drops and
// counts each; the coordinator stays healthy, the agents stay alive, no
// replica fails, a load through the LB sees no error and a new service
// still comes up. Before the fix the long agent id alone made the
// coordinator publish on a subject over the server's limit: the server
// closed its connection, nats.go never reconnected, every agent was lost
// and every replica FAILED, while /healthz said ok.
func TestHostileMessagesOnNATS(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 4}, agentOpts{cpus: 4})
	c.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "web", "-y")
	st := c.waitReady("web", 1, 2, 60*time.Second)
	endpoint := service(st, "web").Endpoint
	stopLoad, served := startLoad("http://"+endpoint+"/", 2)
	waitServed(t, served, 20)

	nc, err := nats.Connect(c.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub := func(subject string, v any) {
		t.Helper()
		var data []byte
		switch x := v.(type) {
		case []byte:
			data = x
		case string:
			data = []byte(x)
		default:
			data, _ = json.Marshal(v)
		}
		if err := nc.Publish(subject, data); err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
	}
	agent := func(id string) protocol.Agent {
		return protocol.Agent{ID: id, Host: "127.0.0.99", Address: "127.0.0.99:7403", Capacity: protocol.Capacity{CPUs: 64, MemoryGB: 64}}
	}
	long := strings.Repeat("x", 5000)
	for range 3 {
		pub(protocol.AgentStatusSubject("evil-0"), protocol.AgentStatus{Agent: agent(long)})
		pub(protocol.AgentStatusSubject("evil-0"), protocol.AgentStatus{Agent: agent("evil.agent")})
		// An agent reporting for another (agent-1, which runs replicas).
		pub(protocol.AgentStatusSubject("evil-0"), protocol.AgentStatus{Agent: agent("agent-1")})
		pub(protocol.AgentStatusSubject("evil-1"), protocol.AgentStatus{Agent: agent("evil-1"), Replicas: []protocol.ReplicaReport{
			{Service: "web", ReplicaID: -1, Version: 1, Status: protocol.ReplicaReady}}})
		pub(protocol.AgentStatusSubject("evil-2"), protocol.AgentStatus{Agent: agent("evil-2"), Replicas: []protocol.ReplicaReport{
			{Service: long, ReplicaID: 1, Version: 1, Status: protocol.ReplicaReady}}})
		pub(protocol.AgentStatusSubject("evil-3"), `{"agent":{"id":"evil-3","host":"127.0.0.1"}} and more`)
		pub(protocol.AgentStatusSubject("evil-3"), strings.Repeat("[", 100000))
		pub(protocol.AgentStatusSubject("evil-3"), make([]byte, protocol.MaxStatusBytes+10))
		// Desired sets the agents must refuse whole: no spec, a bad port,
		// another agent's id, garbage.
		for _, id := range []string{"agent-1", "agent-2"} {
			pub(protocol.AgentDesiredSubject(id), protocol.DesiredReplicas{AgentID: id, Epoch: 1 << 62,
				Replicas: []protocol.ReplicaAssignment{{Service: "web", ReplicaID: 1, Version: 1, Port: 1}}})
			pub(protocol.AgentDesiredSubject(id), protocol.DesiredReplicas{AgentID: id, Epoch: 1 << 62,
				Replicas: []protocol.ReplicaAssignment{{Service: "web", ReplicaID: 1, Version: 1, Port: 70000}},
				Specs:    map[string]protocol.TaskSpec{"web/1": {Run: "true"}}})
			pub(protocol.AgentDesiredSubject(id), protocol.DesiredReplicas{AgentID: "someone-else", Epoch: 1 << 62})
			pub(protocol.AgentDesiredSubject(id), `{"agent_id":`)
		}
		// Route tables the LB must refuse: an impossible port, a bad
		// address, another service's name, garbage.
		pub(protocol.RoutesSubject("web"), protocol.RouteTable{Service: "web", Epoch: 1 << 62, Port: 0,
			Endpoints: []protocol.Endpoint{{ReplicaID: 1, Version: 1, Address: "evil:1"}}})
		pub(protocol.RoutesSubject("web"), protocol.RouteTable{Service: "web", Epoch: 1 << 62, Port: 80,
			Endpoints: []protocol.Endpoint{{ReplicaID: 1, Version: 1, Address: "not an address"}}})
		pub(protocol.RoutesSubject("web"), protocol.RouteTable{Service: "other", Epoch: 1 << 62, Port: 80})
		pub(protocol.RoutesSubject("web"), "]]]")
		// A valid table but for its epoch, far ahead of the cluster's: it
		// would shadow every real table if applied.
		pub(protocol.RoutesSubject("web"), protocol.RouteTable{Service: "web", Epoch: 1 << 62, Port: 30001, Policy: "round_robin", ActiveVersions: []int{1},
			Endpoints: []protocol.Endpoint{{ReplicaID: 1, Version: 1, Address: "127.0.0.99:1"}}})
		// Acks and sync requests the leader must shrug off.
		pub(protocol.LBAckSubject("lb-x"), protocol.LBAck{LBID: long})
		pub(protocol.LBAckSubject("lb-x"), protocol.LBAck{LBID: "lb-x", Draining: map[string]int64{"nowhere": -5}})
		pub(protocol.LBAckSubject("lb-x"), "{}{}")
		pub(protocol.LBAckSubject("lb-x"), protocol.LBAck{LBID: "lb-y"})
		if _, err := nc.Request(protocol.SubjectRoutesSync, []byte("garbage"), 2*time.Second); err != nil {
			t.Errorf("route sync with a garbage body: %v", err)
		}
	}
	// Raw protocol abuse on a connection of its own: the server closes that
	// one, nobody else's.
	raw, err := net.Dial("tcp", strings.TrimPrefix(c.natsURL, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(raw, "CONNECT {}\r\nPUB baton.agent.%s.desired 2\r\nhi\r\nSUB %s 1\r\n", long, long)
	raw.Close()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// For a few seconds (several reconcile passes and heartbeats) all is
	// as it was.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		healthy(t, c.apiAddr)
		st, err := c.statusAPI()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range replicas(st, "web") {
			if r.Status != protocol.ReplicaReady || r.ID > 2 {
				t.Fatalf("replica %d is %s (%s) after hostile messages", r.ID, r.Status, r.Reason)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	var agents []protocol.Agent
	resp, err := http.Get("http://" + c.apiAddr + "/v1/agents")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&agents)
	resp.Body.Close()
	for _, a := range agents {
		if !strings.HasPrefix(a.ID, "agent-") || !a.Alive {
			t.Errorf("agent %q (alive %v) after hostile messages, want only the real agents, alive", a.ID, a.Alive)
		}
	}
	if len(agents) != 2 {
		t.Errorf("%d agents registered, want the 2 real ones", len(agents))
	}
	// The control plane still works end to end.
	c.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "after", "-y")
	c.waitReady("after", 1, 2, 60*time.Second)
	res := stopLoad()
	failed := 0
	for _, r := range res {
		if r.Failed() {
			failed++
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed during the hostile messages", failed, len(res))
	}
	coord := scrape(t, c.apiAddr)
	if n := sumMetric(coord, "baton_coordinator_invalid_messages_total"); n < 3*10 {
		t.Errorf("coordinator counted %v invalid messages, want at least 30", n)
	}
	if n := sumMetric(coord, "baton_coordinator_identity_mismatch_total"); n < 3*2 {
		t.Errorf("coordinator counted %v messages whose sender was not the one their subject names, want at least 6", n)
	}
	for id, addr := range c.agentAddrs(t) {
		if n := sumMetric(scrape(t, addr), "baton_agent_invalid_messages_total"); n < 3*4 {
			t.Errorf("%s counted %v invalid desired sets, want at least 12", id, n)
		}
	}
	if n := sumMetric(scrape(t, c.lbAdminAddr(t)), "baton_lb_invalid_messages_total"); n < 3*5 {
		t.Errorf("LB counted %v invalid tables, want at least 15", n)
	}
	t.Logf("load: %d requests, %d failed; invalid messages dropped: coordinator %v", len(res), failed,
		sumMetric(coord, "baton_coordinator_invalid_messages_total"))
}

// TestHungReplicaEjected: a replica that hangs (SIGSTOP: it accepts
// connections, the kernel does, and never answers) is skipped by the LB
// after a few response timeouts, without waiting for the control plane.
// Before, a request waited until the replica's probe timed out (14.97 s
// measured) and every later request that chose it did the same.
func TestHungReplicaEjected(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 2}, agentOpts{cpus: 2})
	home := exampleTaskWith(t, "  replicas: 2", "  replicas: 2\n  response_timeout_seconds: 1\n  load_balancing_policy: round_robin")
	if _, stderr, err := c.cliIn(home, "serve", "up", "task.yaml", "-n", "web", "-y"); err != nil {
		t.Fatalf("up: %v: %s", err, stderr)
	}
	st := c.waitReady("web", 1, 2, 60*time.Second)
	endpoint := service(st, "web").Endpoint
	pids := c.replicaPIDs("web", 1)
	if len(pids) == 0 {
		t.Fatal("no process of replica 1 found")
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	client := &http.Client{Timeout: 20 * time.Second}
	var slowest time.Duration
	var late []time.Duration
	for i := range 30 {
		start := time.Now()
		resp, err := client.Get("http://" + endpoint + "/")
		d := time.Since(start)
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d", i+1, resp.StatusCode)
		}
		if got := resp.Header.Get(protocol.HeaderReplica); got != "2" {
			t.Fatalf("request %d served by replica %s, want 2 (1 is stopped)", i+1, got)
		}
		slowest = max(slowest, d)
		if i >= 10 {
			late = append(late, d)
		}
	}
	if slowest > 3*time.Second {
		t.Errorf("slowest request took %s; the response timeout is 1s", slowest)
	}
	for i, d := range late {
		if d > 300*time.Millisecond {
			t.Errorf("request %d took %s after the hung replica should have been ejected", i+11, d)
		}
	}
	page := scrape(t, c.lbAdminAddr(t))
	if n := sumMetric(page, "baton_lb_ejections_total"); n < 1 {
		t.Errorf("no ejection counted:\n%s", page)
	}
	if n := sumMetric(page, `baton_lb_upstream_failures_total{kind="timeout",service="web"}`); n < 3 {
		t.Errorf("%v response timeouts counted, want at least 3", n)
	}
	t.Logf("30 requests with replica 1 stopped: slowest %s, after the 10th at most %s", slowest.Round(time.Millisecond), maxOf(late).Round(time.Millisecond))
}

func maxOf(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// TestReplicaTreesStopped: a replica that daemonizes children (setsid,
// double fork) is stopped whole by `serve down` and when its agent is
// killed with SIGKILL, without waiting for the agent to come back. Before,
// the setsid children outlived both.
func TestReplicaTreesStopped(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 2}, agentOpts{cpus: 2})
	home := exampleTaskWith(t, "run: python3 server.py --port $PORT",
		"run: |\n  (setsid sleep 1000 &)\n  setsid -f sleep 1001\n  exec python3 server.py --port $PORT")
	up := func(name string) {
		if _, stderr, err := c.cliIn(home, "serve", "up", "task.yaml", "-n", name, "-y"); err != nil {
			t.Fatalf("up: %v: %s", err, stderr)
		}
	}
	up("trees")
	c.waitReady("trees", 1, 2, 60*time.Second)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := len(c.replicaProcesses("trees")); n < 6 {
			return fmt.Errorf("%d processes, want a server and two daemons per replica", n)
		}
		return nil
	})
	c.mustCLI("serve", "down", "trees", "-y", "--wait")
	if pids := c.replicaProcesses("trees"); len(pids) > 0 {
		t.Fatalf("processes of a service that is down: %v", pids)
	}

	up("again")
	st := c.waitReady("again", 1, 2, 60*time.Second)
	onAgent1 := 0
	for _, r := range replicas(st, "again") {
		if r.Agent == "agent-1" {
			onAgent1 = r.ID
		}
	}
	if onAgent1 == 0 {
		t.Fatalf("no replica on agent-1: %+v", st.Replicas)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := len(c.replicaPIDs("again", onAgent1)); n < 3 {
			return fmt.Errorf("%d processes of replica %d", n, onAgent1)
		}
		return nil
	})
	killedAt := time.Now()
	c.kill9("agent-1")
	// Stop grace in these tests is 3s: SIGTERM, then SIGKILL.
	testutil.WaitFor(t, 8*time.Second, func() error {
		if pids := c.replicaPIDs("again", onAgent1); len(pids) > 0 {
			return fmt.Errorf("processes of replica %d outlive their agent: %v", onAgent1, pids)
		}
		return nil
	})
	t.Logf("replica %d's whole tree gone %s after its agent's SIGKILL", onAgent1, time.Since(killedAt).Round(time.Millisecond))
}

// TestLimitsAndErrorsShown: a replica asking `memory: 0.5` that allocates
// 1.5 GiB is killed by the kernel and `serve status` says why; a task with
// a huge env is refused with the file, the field and the limit, and
// creates nothing; `serve logs --tail` prints the last lines.
func TestLimitsAndErrorsShown(t *testing.T) {
	testutil.RequireRoot(t, "the agents enforce limits in cgroups only as root")
	c := newCluster(t, agentOpts{cpus: 4})
	home := testutil.OpenTempDir(t)
	writeTask(t, home, "hog.yaml", `service:
  replicas: 1
  readiness_probe: {path: /, initial_delay_seconds: 30}
resources:
  memory: 0.5
run: python3 -c 'import time; b = bytearray(1536 << 20); print("allocated", flush=True); time.sleep(600)'
`)
	if _, stderr, err := c.cliIn(home, "serve", "up", "hog.yaml", "-n", "hog", "-y"); err != nil {
		t.Fatalf("up: %v: %s", err, stderr)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		st, err := c.statusAPI()
		if err != nil {
			return err
		}
		for _, r := range replicas(st, "hog") {
			if r.Status.IsFailed() && strings.Contains(r.Reason, "out of memory") && strings.Contains(r.Reason, "512 MiB") {
				return nil
			}
		}
		return fmt.Errorf("no replica FAILED out of memory yet: %+v", st.Replicas)
	})
	if table := c.mustCLI("serve", "status", "hog"); !strings.Contains(table, "out of memory") {
		t.Errorf("status does not say out of memory:\n%s", table)
	}
	c.mustCLI("serve", "down", "hog", "-y", "--wait")

	big := "BIG=" + strings.Repeat("x", 17000)
	_, stderr, err := c.cli("serve", "up", "examples/http_server/task.yaml", "-n", "big", "-y", "--env", big)
	if err == nil || !strings.Contains(stderr, "--env BIG: the value is 17000 bytes; an env's value is limited to 16384") {
		t.Fatalf("huge env: err %v, stderr %q", err, stderr)
	}
	if st := c.status(); len(st.Services) != 0 {
		t.Fatalf("a refused up created %+v", st.Services)
	}

	c.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "web", "-y")
	st := c.waitReady("web", 1, 2, 60*time.Second)
	for range 5 {
		get(t, "http://"+service(st, "web").Endpoint+"/")
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		out := c.mustCLI("serve", "logs", "web", "1", "--tail", "2", "--no-follow")
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		if len(lines) != 2 || !strings.Contains(out, "GET / ") {
			return fmt.Errorf("--tail 2 printed %q", out)
		}
		return nil
	})
}
