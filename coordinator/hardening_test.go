package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/baton-dev/baton/internal/natsembed"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// runningServer is a coordinator of these tests, running until stop.
type runningServer struct {
	*Server
	stop func()
}

// startServer starts a coordinator on dataDir (a restart when it holds
// state) with fast loops; mutate may change the config.
func startServer(t *testing.T, dataDir string, mutate func(*Config)) *runningServer {
	t.Helper()
	cfg := DevConfig()
	cfg.DataDir = dataDir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	cfg.NATSPort = -1
	cfg.FirstLBPort = 40000
	cfg.RaftTimeout = 50 * time.Millisecond
	cfg.ReconcileInterval = 50 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Run(ctx); err != nil {
			t.Errorf("coordinator Run: %v", err)
		}
	}()
	var once sync.Once
	rs := &runningServer{Server: s, stop: func() { once.Do(func() { cancel(); <-done }) }}
	t.Cleanup(rs.stop)
	return rs
}

func (s *runningServer) url(path string) string { return "http://" + s.HTTPAddr() + path }

func waitHealthy(t *testing.T, s *runningServer) {
	t.Helper()
	testutil.WaitFor(t, 15*time.Second, func() error {
		resp, err := http.Get(s.url("/healthz"))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz %d: %s", resp.StatusCode, body)
		}
		return nil
	})
}

// hugeSpec is a valid spec whose replica count is far beyond what the
// parser accepts today: what a Raft log written before the bound holds.
func hugeSpec(t *testing.T) protocol.TaskSpec {
	t.Helper()
	spec, err := protocol.ParseTask("huge.yaml", []byte("run: sleep 1000\nservice:\n  replicas: 2\nresources:\n  cpus: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	spec.Service.ReplicaPolicy.MinReplicas = 2147483647
	spec.Service.ReplicaPolicy.MaxReplicas = 2147483647
	return *spec
}

// TestHugeReplicaCountCannotCrashLoop: a committed service asking for
// 2,147,483,647 replicas (the parser refuses it now; an older log may hold
// it) makes the controller build at most protocol.MaxReplicas of them, in
// bounded passes, and a restart on the same log comes up. Before the
// bound the controller built every missing replica in one pass, ran out
// of memory, and died again on every restart.
func TestHugeReplicaCountCannotCrashLoop(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, nil)
	waitHealthy(t, s)
	if _, _, err := s.raftApply(CmdCreateService, CreateServiceCmd{Name: "huge", Spec: hugeSpec(t), FirstPort: 40000, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		n := 0
		s.fsm.Read(func(st *State) { n = len(st.Replicas) })
		return n
	}
	testutil.WaitFor(t, 60*time.Second, func() error {
		if n := count(); n < protocol.MaxReplicas {
			return fmt.Errorf("%d replicas so far", n)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // several more passes
	if n := count(); n != protocol.MaxReplicas {
		t.Fatalf("%d replicas, want exactly %d", n, protocol.MaxReplicas)
	}
	// Each pass commits at most maxAddsPerPass replicas in one command.
	adds := testutil.CounterValue(t, s.cfg.Gatherer, "baton_coordinator_raft_commands_total")
	if want := float64((protocol.MaxReplicas + maxAddsPerPass - 1) / maxAddsPerPass); adds < want {
		t.Errorf("%v commands for %d replicas, want at least %v (at most %d replicas a pass)", adds, protocol.MaxReplicas, want, maxAddsPerPass)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > 512<<20 {
		t.Errorf("heap %d MiB after the huge service", ms.HeapAlloc>>20)
	}
	s.stop()

	again := startServer(t, dir, nil)
	waitHealthy(t, again)
	time.Sleep(500 * time.Millisecond)
	var n int
	again.fsm.Read(func(st *State) { n = len(st.Replicas) })
	if n != protocol.MaxReplicas {
		t.Errorf("after the restart: %d replicas, want %d", n, protocol.MaxReplicas)
	}
}

// TestReadsWaitForReplay: right after a restart, before Raft has replayed
// the log, reads either wait for it or answer 503 catching_up; none
// answers with a partial state (before the fix: zero services for about
// two seconds).
func TestReadsWaitForReplay(t *testing.T) {
	dir := t.TempDir()
	// Real election timings: the replay waits for the node to win one.
	slow := func(c *Config) { c.RaftTimeout = time.Second }
	s := startServer(t, dir, slow)
	waitHealthy(t, s)
	const services = 12
	for i := range services {
		body, _ := json.Marshal(protocol.UpRequest{Name: fmt.Sprintf("svc-%d", i), Filename: "t.yaml",
			YAML: "run: sleep 1000\nservice:\n  replicas: 1\n"})
		resp, err := http.Post(s.url("/v1/services"), "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("up svc-%d: %d", i, resp.StatusCode)
		}
	}
	s.stop()

	again := startServer(t, dir, slow)
	var ok, catchingUp int
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(again.url("/v1/status"))
		if err != nil {
			continue // not serving yet
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			var st protocol.StatusResponse
			if err := json.Unmarshal(body, &st); err != nil {
				t.Fatal(err)
			}
			if len(st.Services) != services {
				t.Fatalf("a read after the restart answered %d services of %d", len(st.Services), services)
			}
			ok++
		case http.StatusServiceUnavailable:
			if !strings.Contains(string(body), protocol.CodeCatchingUp) {
				t.Fatalf("503 without catching_up: %s", body)
			}
			catchingUp++
		default:
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
	if ok == 0 {
		t.Fatal("no read succeeded within 4s of the restart")
	}
	t.Logf("after the restart: %d full answers, %d catching_up", ok, catchingUp)
}

// TestHealthReportsNATS: /healthz says ok only while Raft has a leader,
// the log is replayed and NATS is connected; with the NATS server gone it
// answers 503 and says so.
func TestHealthReportsNATS(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Config{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, t.TempDir(), func(c *Config) { c.NATSURL = ns.ClientURL() })
	waitHealthy(t, s)
	resp, err := http.Get(s.url("/healthz"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"ok\n", "raft: Leader, leader coord-1", "state: caught up", "nats: connected to nats://"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("healthz lacks %q:\n%s", want, body)
		}
	}
	ns.Shutdown()
	testutil.WaitFor(t, 10*time.Second, func() error {
		resp, err := http.Get(s.url("/healthz"))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "unhealthy: nats down") {
			return fmt.Errorf("healthz %d: %s", resp.StatusCode, body)
		}
		return nil
	})
}

// TestAPIRejectsMalformedBodies: trailing data after the JSON object,
// unknown fields, oversize bodies and bad file fields are refused with a
// 400 that names the request; nothing is created.
func TestAPIRejectsMalformedBodies(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	waitHealthy(t, s)
	good := `{"name":"web","yaml":"run: x\nservice: {replicas: 1}\n","filename":"t.yaml"}`
	for _, tc := range []struct{ name, body, want string }{
		{"trailing object", good + `{"name":"other"}`, "POST /v1/services: request body: unexpected data after the JSON value"},
		{"trailing garbage", good + ` garbage`, "POST /v1/services: request body: unexpected data after the JSON value"},
		{"unknown field", `{"name":"web","yml":"x"}`, `unknown field "yml"`},
		{"oversize", `{"name":"web","yaml":"` + strings.Repeat("x", maxRequestBytes) + `"}`, "the body is over"},
		{"filename with a line break", `{"name":"web","yaml":"run: x\nservice: {replicas: 1}\n","filename":"a\nb"}`, "filename: must be a file name"},
		{"relative base_dir", `{"name":"web","yaml":"run: x\nservice: {replicas: 1}\n","base_dir":"rel/dir"}`, "POST /v1/services: request body: base_dir: \"rel/dir\" is not an absolute directory path"},
		{"huge replicas", `{"name":"web","yaml":"run: x\nservice: {replicas: 2147483647}\n"}`, "baton runs at most 1000 replicas of a service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(s.url("/v1/services"), "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			var apiErr protocol.APIError
			err = json.NewDecoder(resp.Body).Decode(&apiErr)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusBadRequest || !strings.Contains(apiErr.Message, tc.want) {
				t.Fatalf("answer %d %+v (%v), want 400 with %q", resp.StatusCode, apiErr, err, tc.want)
			}
		})
	}
	var n int
	s.fsm.Read(func(st *State) { n = len(st.Services) })
	if n != 0 {
		t.Fatalf("rejected requests created %d services", n)
	}
}

// TestHostileAgentStatus: status messages a careless or hostile process
// publishes (an agent id of 5,000 characters, invalid fields, trailing
// data, a megabyte and more) are dropped and counted; the coordinator
// never publishes on a subject built from them, so its NATS connection is
// never closed by the server, and a real agent stays registered. Before
// the fix the long id made the coordinator publish on a subject over the
// server's limit, the server closed its connection and nats.go never
// reconnected: every agent was then lost.
func TestHostileAgentStatus(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	waitHealthy(t, s)
	nc, err := nats.Connect(s.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	status := func(id string, mutate func(*protocol.AgentStatus)) []byte {
		st := protocol.AgentStatus{Agent: protocol.Agent{ID: id, Host: "127.0.0.1", Address: "127.0.0.1:7403",
			Capacity: protocol.Capacity{CPUs: 4, MemoryGB: 8}}, Replicas: []protocol.ReplicaReport{}}
		if mutate != nil {
			mutate(&st)
		}
		b, _ := json.Marshal(st)
		return b
	}
	hostile := [][]byte{
		status(strings.Repeat("a", 5000), nil),
		status("agent.with.dots", nil),
		status("agent-x", func(st *protocol.AgentStatus) { st.Agent.Capacity.CPUs = -4 }),
		status("agent-x", func(st *protocol.AgentStatus) { st.Agent.Host = "bad host" }),
		status("agent-x", func(st *protocol.AgentStatus) {
			st.Replicas = []protocol.ReplicaReport{{Service: "web", ReplicaID: 1, Version: 1, Status: "BOGUS"}}
		}),
		status("agent-x", func(st *protocol.AgentStatus) {
			st.Replicas = []protocol.ReplicaReport{{Service: strings.Repeat("s", 5000), ReplicaID: 1, Version: 1, Status: protocol.ReplicaReady}}
		}),
		append(status("agent-x", nil), []byte(`{"agent":{"id":"agent-y"}}`)...),
		[]byte(`{"agent":`),
		[]byte(`[1,2,3]`),
		bytes.Repeat([]byte(" "), protocol.MaxStatusBytes+1),
	}
	for _, msg := range hostile {
		if err := nc.Publish(protocol.AgentStatusSubject("agent-x"), msg); err != nil {
			t.Fatal(err)
		}
	}
	// Agent x reporting as agent y is dropped and counted.
	if err := nc.Publish(protocol.AgentStatusSubject("agent-x"), status("agent-y", nil)); err != nil {
		t.Fatal(err)
	}
	// A real agent registers through its own subject meanwhile.
	testutil.WaitFor(t, 10*time.Second, func() error {
		if err := nc.Publish(protocol.AgentStatusSubject("agent-ok"), status("agent-ok", nil)); err != nil {
			return err
		}
		var alive bool
		s.fsm.Read(func(st *State) { a := st.Agents["agent-ok"]; alive = a != nil && a.Alive })
		if !alive {
			return fmt.Errorf("agent-ok not registered")
		}
		return nil
	})
	var agents []string
	s.fsm.Read(func(st *State) { agents = st.AgentIDs() })
	if len(agents) != 1 {
		t.Errorf("agents %v, want only agent-ok", agents)
	}
	if n := promtest.ToFloat64(s.metrics.identityMismatch.WithLabelValues(protocol.SubjectAgentStatusAll)); n != 1 {
		t.Errorf("identity mismatches counted: %v, want 1", n)
	}
	if n := s.nc.Replacements(); n != 0 {
		t.Errorf("the coordinator's NATS connection was closed by the server %d times", n)
	}
	if err := s.nc.Health(); err != nil {
		t.Errorf("NATS: %v", err)
	}
	if got := testutil.CounterValue(t, s.cfg.Gatherer, "baton_coordinator_invalid_messages_total"); got < float64(len(hostile)) {
		t.Errorf("invalid messages counted %v, want %d", got, len(hostile))
	}
}

// TestDesiredSetNamesSpecsByDigest: an agent running 200 replicas of a
// version with a 60 KiB spec gets a desired set of 200 short assignments
// that name the spec by digest, and fetches the spec itself once from any
// coordinator. Before specs travelled by reference, every assignment (and
// later every set) carried it: 12 MB at first, over NATS's payload limit,
// so that agent got no updates at all.
func TestDesiredSetNamesSpecsByDigest(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Config{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	// A coordinator without Raft or a controller of its own: the test
	// applies the commands and runs the controller's publish itself.
	s := bareServer(t, ns.ClientURL())
	ctx, cancel := context.WithCancel(context.Background())
	specsDone := make(chan struct{})
	go func() { defer close(specsDone); s.serveSpecs(ctx) }()
	defer func() { cancel(); <-specsDone }()
	spec := hugeSpec(t)
	spec.Service.ReplicaPolicy = protocol.ReplicaPolicy{MinReplicas: 200, MaxReplicas: 200}
	spec.Run = "echo " + strings.Repeat("x", 60<<10)
	now := time.Now()
	mustApply := (&fsmApplier{t: t, f: s.fsm}).apply
	mustApply(CmdCreateService, CreateServiceCmd{Name: "web", Spec: spec, FirstPort: 30001, At: now})
	mustApply(CmdUpsertAgent, UpsertAgentCmd{Agent: protocol.Agent{ID: "a1", Host: "127.0.0.1", Capacity: protocol.Capacity{CPUs: 64}}, At: now})
	var reps []protocol.Replica
	for id := 1; id <= 200; id++ {
		reps = append(reps, protocol.Replica{Service: "web", Version: 1, AgentID: "a1", Status: protocol.ReplicaReady,
			Endpoint: fmt.Sprintf("127.0.0.1:%d", 20000+id), Resources: protocol.Allocation{Port: 20000 + id}})
	}
	mustApply(CmdAddReplicas, AddReplicasCmd{Replicas: reps, At: now})
	st := s.fsm.State()
	digest := st.Version("web", 1).SpecDigest

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(protocol.AgentDesiredSubject("a1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := newController(s.controllerDeps())
	c.publishDesired(st, time.Now())
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("agent a1 got no desired set: %v", err)
	}
	var d protocol.DesiredReplicas
	if err := protocol.DecodeMessage(msg.Data, protocol.MaxMessageBytes, &d); err != nil {
		t.Fatal(err)
	}
	if err := d.ResolveSpecs(); err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(d.Replicas) != 200 || d.Replicas[0].Port != 20001 || d.Replicas[199].SpecDigest != digest {
		t.Fatalf("desired set: %d replicas, first port %d, last digest %q (want %q)", len(d.Replicas), d.Replicas[0].Port, d.Replicas[199].SpecDigest, digest)
	}
	if got := d.Unresolved(); len(got) != 1 || got[0] != digest {
		t.Fatalf("unresolved digests %v, want [%s]", got, digest)
	}
	if len(msg.Data) > 40<<10 {
		t.Errorf("desired set is %d bytes; specs should travel by reference", len(msg.Data))
	}
	// The agent fetches the spec once, from any coordinator.
	req := protocol.SpecRequest{Service: "web", Version: 1, Digest: digest}
	body, _ := json.Marshal(req)
	rep, err := nc.Request(protocol.SpecGetSubject("a1"), body, 5*time.Second)
	if err != nil {
		t.Fatalf("spec request: %v", err)
	}
	got, err := protocol.DecodeSpecReply(rep.Data, req)
	if err != nil || got.Run != spec.Run {
		t.Fatalf("spec reply: %v (run %d bytes, want %d)", err, len(got.Run), len(spec.Run))
	}
	// A digest the version does not have gets an error reply, not a spec.
	wrong := protocol.SpecRequest{Service: "web", Version: 1, Digest: "sha256:" + strings.Repeat("0", 64)}
	body, _ = json.Marshal(wrong)
	if rep, err = nc.Request(protocol.SpecGetSubject("a1"), body, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.DecodeSpecReply(rep.Data, wrong); err == nil {
		t.Fatal("a wrong digest got a spec")
	}
	// An agent that runs no replica of the version gets no spec (its
	// secrets go only to the agents that run it).
	body, _ = json.Marshal(req)
	if rep, err = nc.Request(protocol.SpecGetSubject("a2"), body, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.DecodeSpecReply(rep.Data, req); err == nil || !strings.Contains(err.Error(), `no replica on agent "a2"`) {
		t.Fatalf("agent a2 asked for a1's spec: %v", err)
	}
	// A request whose reply subject is a control subject gets no reply
	// there.
	routes, err := nc.SubscribeSync(protocol.RoutesSubject("web"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest(protocol.SpecGetSubject("a1"), protocol.RoutesSubject("web"), body); err != nil {
		t.Fatal(err)
	}
	if m, err := routes.NextMsg(500 * time.Millisecond); err == nil {
		t.Fatalf("a spec request made the coordinator publish on %s: %s", m.Subject, m.Data)
	}
	t.Logf("desired set of 200 replicas of a %d KiB spec: %d KiB", len(spec.Run)>>10, len(msg.Data)>>10)
}

// TestSoleVoterTimeouts: a coordinator that is its cluster's only voter
// runs with short election timeouts (a restart serves again at once), and
// takes its configured ones as soon as another voter joins.
func TestSoleVoterTimeouts(t *testing.T) {
	s := startServer(t, t.TempDir(), func(c *Config) { c.RaftTimeout = time.Second })
	waitHealthy(t, s)
	if got := s.raft.raft.ReloadableConfig().HeartbeatTimeout; got != singleVoterTimeout {
		t.Fatalf("sole voter's heartbeat timeout %s, want %s", got, singleVoterTimeout)
	}
	// Another voter (never reachable: only the configuration matters).
	if err := s.raft.raft.AddVoter("ghost", raft.ServerAddress(fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))), 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if got := s.raft.raft.ReloadableConfig().HeartbeatTimeout; got != time.Second {
			return fmt.Errorf("heartbeat timeout %s with two voters, want the configured 1s", got)
		}
		return nil
	})
}
