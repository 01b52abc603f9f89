package coordinator

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/protocol"
)

func agentWith(id string, cpus float64, gpus ...string) *protocol.Agent {
	a := &protocol.Agent{ID: id, Alive: true, Capacity: protocol.Capacity{CPUs: cpus, MemoryGB: 16}}
	for i, g := range gpus {
		a.Capacity.GPUs = append(a.Capacity.GPUs, protocol.GPU{Index: i, Name: g, UUID: id + "-gpu-" + string(rune('0'+i)), Healthy: true})
	}
	return a
}

func TestPlacement(t *testing.T) {
	seedFleet := []*protocol.Agent{
		agentWith("agent-1", 2), agentWith("agent-2", 2), agentWith("agent-3", 4), agentWith("agent-4", 4),
		agentWith("agent-5", 4, "NVIDIA A100-SXM4-40GB"),
	}
	cpus := func(v float64, atLeast bool) protocol.Resources {
		return protocol.Resources{CPUs: protocol.Quantity{Value: v, AtLeast: atLeast}}
	}
	acc := func(ordered bool, opts ...protocol.AcceleratorOption) protocol.Resources {
		return protocol.Resources{Accelerators: protocol.AcceleratorRequest{Options: opts, Ordered: ordered}}
	}
	tests := []struct {
		name       string
		agents     []*protocol.Agent
		res        []protocol.Resources
		want       []string // agent per replica; "" = PENDING
		reasonHas  string
		gpuPerRepl int
	}{
		{name: "2+ fills the small agents first", agents: seedFleet, res: []protocol.Resources{cpus(2, true), cpus(2, true)}, want: []string{"agent-1", "agent-2"}},
		{name: "4+ skips small agents and prefers no-GPU ones", agents: seedFleet, res: []protocol.Resources{cpus(4, true), cpus(4, true), cpus(4, true)}, want: []string{"agent-3", "agent-4", "agent-5"}},
		{name: "exact 4 reserves 4 on the smallest agent with 4 free", agents: []*protocol.Agent{agentWith("big", 8), agentWith("four", 4)}, res: []protocol.Resources{cpus(4, false), cpus(4, false), cpus(4, false), cpus(4, false)}, want: []string{"four", "big", "big", ""}, reasonHas: "no agent fits cpus 4 among 2 alive agents (closest: big 0/8 cpus free; four 0/4 cpus free)"},
		{name: "2+ packs onto one bigger agent", agents: []*protocol.Agent{agentWith("big", 8)}, res: []protocol.Resources{cpus(2, true), cpus(2, true), cpus(2, true), cpus(2, true), cpus(2, true)}, want: []string{"big", "big", "big", "big", ""}},
		{name: "too large stays pending with reason", agents: seedFleet, res: []protocol.Resources{cpus(64, true)}, want: []string{""}, reasonHas: "no agent fits cpus 64+"},
		{name: "accelerator by short name", agents: seedFleet, res: []protocol.Resources{acc(false, protocol.AcceleratorOption{Name: "A100", Count: 1}), acc(false, protocol.AcceleratorOption{Name: "a100", Count: 1})}, want: []string{"agent-5", ""}, reasonHas: "accelerators a100:1", gpuPerRepl: 1},
		{name: "set: any option that fits", agents: seedFleet, res: []protocol.Resources{acc(false, protocol.AcceleratorOption{Name: "H100", Count: 1}, protocol.AcceleratorOption{Name: "A100", Count: 1})}, want: []string{"agent-5"}, gpuPerRepl: 1},
		{name: "list: first option that fits wins", agents: []*protocol.Agent{agentWith("t4", 4, "Tesla T4"), agentWith("a100", 4, "A100", "A100")}, res: []protocol.Resources{acc(true, protocol.AcceleratorOption{Name: "A100", Count: 2}, protocol.AcceleratorOption{Name: "T4", Count: 1})}, want: []string{"a100"}, gpuPerRepl: 2},
		{name: "count larger than agent has", agents: seedFleet, res: []protocol.Resources{acc(false, protocol.AcceleratorOption{Name: "A100", Count: 2})}, want: []string{""}, reasonHas: "A100-SXM4-40GB:1 free"},
		{name: "no agents", agents: nil, res: []protocol.Resources{cpus(1, true)}, want: []string{""}, reasonHas: "no agents are alive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := NewState()
			for _, a := range tt.agents {
				st.Agents[a.ID] = a
			}
			p := newPlacer(st)
			for i, res := range tt.res {
				c, reason, ok := p.place(res, 0, nil)
				got := ""
				if ok {
					got = c.agent.ID
					if len(c.alloc.GPUUUIDs) != tt.gpuPerRepl {
						t.Errorf("replica %d: %d GPUs, want %d", i, len(c.alloc.GPUUUIDs), tt.gpuPerRepl)
					}
				} else if !strings.Contains(reason, tt.reasonHas) {
					t.Errorf("replica %d: reason %q does not mention %q", i, reason, tt.reasonHas)
				}
				if got != tt.want[i] {
					t.Errorf("replica %d: placed on %q, want %q (reason %q)", i, got, tt.want[i], reason)
				}
			}
		})
	}
}

func TestPlacementCountsExistingReplicas(t *testing.T) {
	st := NewState()
	st.Agents["a"] = agentWith("a", 4)
	st.Replicas["s/1"] = &protocol.Replica{Service: "s", ID: 1, AgentID: "a", Status: protocol.ReplicaShuttingDown, Resources: protocol.Allocation{CPUs: 4}}
	st.Replicas["s/2"] = &protocol.Replica{Service: "s", ID: 2, AgentID: "a", Status: protocol.ReplicaFailed, Resources: protocol.Allocation{CPUs: 4}}
	p := newPlacer(st)
	if _, _, ok := p.place(protocol.Resources{CPUs: protocol.Quantity{Value: 1, AtLeast: true}}, 0, nil); ok {
		t.Fatal("a shutting-down replica's CPUs must stay reserved until it is gone")
	}
	delete(st.Replicas, "s/1")
	if _, _, ok := newPlacer(st).place(protocol.Resources{CPUs: protocol.Quantity{Value: 4, AtLeast: true}}, 0, nil); !ok {
		t.Fatal("a failed replica must not hold resources")
	}
}

func TestPlacementAvoidsAgentsWhereTheVersionFailed(t *testing.T) {
	st := NewState()
	st.Agents["a"] = agentWith("a", 2)
	st.Agents["b"] = agentWith("b", 4)
	res := protocol.Resources{CPUs: protocol.Quantity{Value: 2, AtLeast: true}}
	if c, _, _ := newPlacer(st).place(res, 0, nil); c.agent.ID != "a" {
		t.Fatalf("without failures the smallest agent a should win, got %s", c.agent.ID)
	}
	if c, _, _ := newPlacer(st).place(res, 0, map[string]bool{"a": true}); c.agent.ID != "b" {
		t.Fatalf("after a failure on a, b should be preferred, got %s", c.agent.ID)
	}
	if c, _, ok := newPlacer(st).place(res, 0, map[string]bool{"a": true, "b": true}); !ok {
		t.Fatal("when every fitting agent saw a failure, placement must still succeed")
	} else if c.agent.ID != "a" {
		t.Fatalf("fallback should use the normal order, got %s", c.agent.ID)
	}
}

// TestPlacementSpreadsFixedPorts: replicas of a task that names its port
// (SkyServe tasks often hard-code it in `run`) go to hosts where that port
// is free, even when a smaller agent would fit; when no host has it free
// they still run, and the agent hands out another $PORT.
func TestPlacementSpreadsFixedPorts(t *testing.T) {
	st := NewState()
	for i, id := range []string{"a", "b", "c"} {
		a := agentWith(id, 8)
		a.Host = fmt.Sprintf("10.0.0.%d", i+1)
		st.Agents[id] = a
	}
	// c shares its host with a (two agents on one machine).
	st.Agents["c"].Host = "10.0.0.1"
	st.Services["web"] = &protocol.Service{Name: "web"}
	st.Versions["web"] = map[int]*protocol.Version{1: {Service: "web", Number: 1, Spec: protocol.TaskSpec{Service: protocol.ServiceSpec{Port: 8080}}}}
	// Replica 1 listens on 8080 on a's host.
	st.Replicas["web/1"] = &protocol.Replica{Service: "web", ID: 1, Version: 1, AgentID: "a", Status: protocol.ReplicaReady,
		Endpoint: "10.0.0.1:8080", Resources: protocol.Allocation{CPUs: 1}}
	res := protocol.Resources{CPUs: protocol.Quantity{Value: 1}}
	p := newPlacer(st)
	c, _, ok := p.place(res, 8080, nil)
	if !ok || c.agent.ID != "b" {
		t.Fatalf("second replica on %v (ok %v), want b: the only host with 8080 free", c.agent, ok)
	}
	// Every host now has 8080 taken: placement falls back to the smallest fit.
	if c, _, ok := p.place(res, 8080, nil); !ok || c.agent.ID != "a" {
		t.Fatalf("third replica on %v (ok %v), want a (no host has 8080 free; smallest fit)", c.agent, ok)
	}
	// A replica that names no port ignores ports.
	if c, _, ok := newPlacer(st).place(res, 0, nil); !ok || c.agent.ID != "a" {
		t.Fatalf("portless replica on %v, want a", c.agent)
	}
	// A replica listening on another port than its task's holds that
	// port, not the task's.
	st.Replicas["web/1"].Endpoint = "10.0.0.1:12345"
	if c, _, ok := newPlacer(st).place(res, 12345, nil); !ok || c.agent.ID != "b" {
		t.Fatalf("replica on %v, want b: 12345 is taken on a's host", c.agent)
	}
}

// TestPlacementChoosesPorts: placement decides every replica's port, so
// that agents sharing one machine (baton dev: four agents on one host) can
// never hand out the same port. The task's port goes to the first replica
// in each port space; the others get distinct ports from the agent's
// range.
func TestPlacementChoosesPorts(t *testing.T) {
	st := NewState()
	for _, id := range []string{"agent-1", "agent-2", "agent-3", "agent-4"} {
		a := agentWith(id, 2)
		a.Host, a.NetNS = "127.0.0.1", "boot-1:4026531840"
		a.PortRange = protocol.PortRange{Min: 20000, Max: 20009}
		st.Agents[id] = a
	}
	res := protocol.Resources{CPUs: protocol.Quantity{Value: 2, AtLeast: true}}
	p := newPlacer(st)
	seen := map[int]bool{}
	for i := range 4 {
		c, reason, ok := p.place(res, 8081, nil)
		if !ok {
			t.Fatalf("replica %d: %s", i+1, reason)
		}
		port := c.alloc.Port
		if i == 0 && port != 8081 {
			t.Errorf("first replica got port %d, want the task's 8081", port)
		}
		if i > 0 && (port < 20000 || port > 20009) {
			t.Errorf("replica %d got port %d, want one of the agent's range 20000-20009", i+1, port)
		}
		if seen[port] {
			t.Errorf("port %d handed out twice in one port space", port)
		}
		seen[port] = true
		if want := "127.0.0.1:" + fmt.Sprint(port); c.endpoint() != want {
			t.Errorf("endpoint %s, want %s", c.endpoint(), want)
		}
	}

	// Agents on different machines each give the task's port.
	st2 := NewState()
	for i, id := range []string{"m1", "m2"} {
		a := agentWith(id, 2)
		a.Host, a.NetNS = fmt.Sprintf("10.0.0.%d", i+1), fmt.Sprintf("boot-%d:1", i)
		st2.Agents[id] = a
	}
	p2 := newPlacer(st2)
	for i := range 2 {
		if c, _, _ := p2.place(res, 8081, nil); c.alloc.Port != 8081 {
			t.Errorf("replica %d on its own machine got %d, want 8081", i+1, c.alloc.Port)
		}
	}

	// A full range leaves the agent out, with a reason.
	st3 := NewState()
	a := agentWith("tiny", 8)
	a.PortRange = protocol.PortRange{Min: 20000, Max: 20000}
	st3.Agents["tiny"] = a
	p3 := newPlacer(st3)
	if _, _, ok := p3.place(protocol.Resources{}, 0, nil); !ok {
		t.Fatal("first replica must get the range's only port")
	}
	if _, _, ok := p3.place(protocol.Resources{}, 0, nil); ok {
		t.Fatal("second replica placed with no free port left")
	}
}

// TestPortBusyMovesReplica: a placed replica whose agent reports its port
// held by a foreign process keeps its id and gets another port, and
// placement avoids the busy port for a while.
func TestPortBusyMovesReplica(t *testing.T) {
	st := NewState()
	a := agentWith("agent-1", 4)
	a.Host, a.NetNS = "127.0.0.1", "boot:1"
	st.Agents["agent-1"] = a
	st.Services["web"] = &protocol.Service{Name: "web"}
	st.Versions["web"] = map[int]*protocol.Version{1: {Service: "web", Number: 1,
		Spec: protocol.TaskSpec{Service: protocol.ServiceSpec{Port: 8081}}}}
	st.Replicas["web/1"] = &protocol.Replica{Service: "web", ID: 1, Version: 1, AgentID: "agent-1",
		Status: protocol.ReplicaProvisioning, Endpoint: "127.0.0.1:8081", Resources: protocol.Allocation{Port: 8081}}
	c := newController(controllerDeps{log: slog.Default()})
	now := time.Now()
	ups := c.moveOffBusyPorts(st, []busyReport{{replica: st.Replicas["web/1"], port: 8081}}, now)
	if len(ups) != 1 || ups[0].Port == 0 || ups[0].Port == 8081 || ups[0].ID != 1 ||
		ups[0].Status != protocol.ReplicaProvisioning || !strings.Contains(ups[0].Reason, "port 8081 is held") {
		t.Fatalf("updates = %+v, want replica 1 moved off 8081, still PROVISIONING", ups)
	}
	if ups[0].Endpoint != "127.0.0.1:"+fmt.Sprint(ups[0].Port) {
		t.Errorf("endpoint %s does not match port %d", ups[0].Endpoint, ups[0].Port)
	}
	// A new replica of the service is not given 8081 while it is known busy...
	delete(st.Replicas, "web/1")
	if cand, _, _ := c.newPlacer(st, now.Add(time.Minute)).place(protocol.Resources{}, 8081, nil); cand.alloc.Port == 8081 {
		t.Error("placement handed out a port an agent reported busy a minute ago")
	}
	// ...and is again once the memory expires.
	if cand, _, _ := c.newPlacer(st, now.Add(busyPortMemory+time.Second)).place(protocol.Resources{}, 8081, nil); cand.alloc.Port != 8081 {
		t.Errorf("after %s the task's port should be tried again, got %d", busyPortMemory, cand.alloc.Port)
	}
}

// TestNoFitReasonIsBounded: on a fleet of 2,000 agents a no-fit reason
// names the closest three and the count, not every agent, and a reason
// that only changes its wording is not worth a Raft write.
func TestNoFitReasonIsBounded(t *testing.T) {
	st := NewState()
	for i := range 2000 {
		a := agentWith(fmt.Sprintf("agent-%04d", i), 16)
		st.Agents[a.ID] = a
	}
	st.Agents["agent-0007"] = agentWith("agent-0007", 16, "A100")
	res := protocol.Resources{CPUs: protocol.Quantity{Value: 8, AtLeast: true},
		Accelerators: protocol.AcceleratorRequest{Options: []protocol.AcceleratorOption{{Name: "A100", Count: 2}}}}
	_, reason, ok := newPlacer(st).place(res, 0, nil)
	if ok {
		t.Fatal("placed an A100:2 replica on a fleet with one A100")
	}
	want := "no agent fits cpus 8+, accelerators A100:2 among 2000 alive agents (closest 3 of 2000: agent-0007 16/16 cpus free, A100:1 free; agent-0000 16/16 cpus free; agent-0001 16/16 cpus free)"
	if reason != want {
		t.Errorf("reason\n %q\nwant\n %q", reason, want)
	}
	if len(reason) > 300 {
		t.Errorf("reason is %d bytes", len(reason))
	}
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"closest agents changed", want, strings.Replace(want, "16/16", "8/16", 1), true},
		{"fleet grew", want, strings.Replace(want, "2000 alive", "2001 alive", 1), false},
		{"other request", want, strings.Replace(want, "cpus 8+", "cpus 9+", 1), false},
		{"other kind of reason", want, "port 8081 is held", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sameReasonGist(tt.a, tt.b); got != tt.same {
				t.Errorf("sameReasonGist = %v, want %v", got, tt.same)
			}
		})
	}
}
