package coordinator

import (
	"fmt"
	"strings"
	"testing"

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
		{name: "exact 4 reserves 4 on the smallest agent with 4 free", agents: []*protocol.Agent{agentWith("big", 8), agentWith("four", 4)}, res: []protocol.Resources{cpus(4, false), cpus(4, false), cpus(4, false), cpus(4, false)}, want: []string{"four", "big", "big", ""}, reasonHas: "no agent fits cpus 4 ("},
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
	// A replica that got another port than its task's: something else
	// holds 8080 on that host, so it stays avoided.
	st.Replicas["web/1"].Endpoint = "10.0.0.1:12345"
	if c, _, ok := newPlacer(st).place(res, 8080, nil); !ok || c.agent.ID != "b" {
		t.Fatalf("replica on %v, want b: 8080 is taken on a's host by something else", c.agent)
	}
	// Its own port is taken too.
	if c, _, ok := newPlacer(st).place(res, 12345, nil); !ok || c.agent.ID != "b" {
		t.Fatalf("replica on %v, want b: 12345 is taken on a's host", c.agent)
	}
}
