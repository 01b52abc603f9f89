package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/bus"
	"github.com/baton-dev/baton/internal/logutil"
	"github.com/baton-dev/baton/protocol"
)

// fleetState is a state of agents x perAgent replicas, services of 100.
func fleetState(agents, perAgent int) *State {
	st := NewState()
	for i := range agents {
		a := &protocol.Agent{ID: fmt.Sprintf("agent-%04d", i), Host: fmt.Sprintf("10.0.%d.%d", i/250, i%250), Alive: true,
			Capacity: protocol.Capacity{CPUs: 16, MemoryGB: 64}}
		st.Agents[a.ID] = a
	}
	n := agents * perAgent
	for s := 0; s < n/100; s++ {
		name := fmt.Sprintf("svc-%03d", s)
		st.Services[name] = &protocol.Service{Name: name, LatestVersion: 1, ActiveVersions: []int{1}, NextReplicaID: 101}
		st.Versions[name] = map[int]*protocol.Version{1: {Service: name, Number: 1, State: protocol.VersionActive,
			Spec: protocol.TaskSpec{Run: "x", Service: protocol.ServiceSpec{ReplicaPolicy: protocol.ReplicaPolicy{MinReplicas: 100}}}}}
		for id := 1; id <= 100; id++ {
			i := s*100 + id - 1
			r := &protocol.Replica{Service: name, ID: id, Version: 1, AgentID: fmt.Sprintf("agent-%04d", i%agents),
				Status: protocol.ReplicaReady, Endpoint: "10.0.0.1:20000", LaunchedAt: time.Now(), Resources: protocol.Allocation{CPUs: 1, Port: 20000 + id}}
			st.Replicas[r.Key()] = r
		}
	}
	return st
}

// BenchmarkClone: the copy a reconcile pass reads, at 1,000 agents and
// 10,000 replicas.
func BenchmarkClone(b *testing.B) {
	st := fleetState(1000, 10)
	f := NewFSM()
	f.state = st
	f.liveIndex() // as the FSM keeps it
	b.ResetTimer()
	for b.Loop() {
		st.Clone()
	}
}

// BenchmarkPlanQuiet: planning every service of a fleet where nothing is
// missing (a pass at rest).
func BenchmarkPlanQuiet(b *testing.B) {
	st := fleetState(1000, 10).Clone()
	pol := DevConfig().planPolicy()
	now := time.Now()
	b.ResetTimer()
	for b.Loop() {
		p := newLazyPlacer(st)
		for _, name := range st.ServiceNames() {
			planService(st, st.Services[name], now, pol, p, pol.MaxAdds)
		}
	}
}

// discardBus is a messageBus that drops what it is given.
type discardBus struct{}

func (discardBus) Publish(string, []byte) error { return nil }
func (discardBus) Subscribe(string, nats.MsgHandler) (*bus.Subscription, error) {
	return nil, errors.New("no subscriptions")
}
func (discardBus) Flush(time.Duration) error { return nil }
func (discardBus) MaxPayload() int64         { return protocol.MaxMessageBytes }

// BenchmarkPassQuiet runs whole reconcile passes over a fleet at rest
// (every replica READY and reported so): what a coordinator pays every
// second at 2,000 agents and 20,000 replicas, messages aside.
func BenchmarkPassQuiet(b *testing.B) {
	st := fleetState(2000, 10)
	fsm := NewFSM()
	fsm.state = st
	cfg := DefaultConfig().withDefaults()
	c := newController(controllerDeps{
		cfg: cfg, log: slog.New(slog.DiscardHandler), state: fsm.State,
		apply: func(CommandType, any) (any, uint64, error) { return nil, 0, errors.New("read only") },
		bus:   discardBus{}, metrics: newMetrics(prometheus.NewRegistry()),
		kick: make(chan struct{}, 1), kickFn: func() {}, limiter: logutil.NewLimiter(time.Minute),
	})
	now := time.Now()
	c.leaderSince = now.Add(-time.Hour)
	for id, a := range st.Agents {
		ar := &agentReport{status: &protocol.AgentStatus{Agent: *a}, replicas: map[string]protocol.ReplicaReport{}, at: now}
		c.agents[id] = ar
	}
	for _, r := range st.Replicas {
		c.agents[r.AgentID].replicas[r.Key()] = protocol.ReplicaReport{Service: r.Service, ReplicaID: r.ID, Version: r.Version,
			Status: r.Status, Endpoint: r.Endpoint}
	}
	c.reconcile() // the first pass sends everything
	b.ResetTimer()
	for b.Loop() {
		for _, ar := range c.agents {
			ar.at = time.Now()
		}
		c.reconcile()
	}
}

// BenchmarkApplyAddReplicas: encoding and applying one pass's worth of
// new replicas (1,000 of one service) on a fleet of 20,000.
func BenchmarkApplyAddReplicas(b *testing.B) {
	base := fleetState(2000, 10)
	var adds []protocol.Replica
	for i := range maxAddsPerPass {
		adds = append(adds, protocol.Replica{Service: "new", Version: 1, AgentID: fmt.Sprintf("agent-%04d", i%2000),
			Status: protocol.ReplicaProvisioning, Endpoint: "10.0.0.1:20000", Resources: protocol.Allocation{CPUs: 1, Port: 20000}})
	}
	spec := protocol.TaskSpec{Run: "x", Service: protocol.ServiceSpec{ReplicaPolicy: protocol.ReplicaPolicy{MinReplicas: 1000}}}
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		f := NewFSM()
		f.state = base.Clone()
		f.state.idx = nil
		f.liveIndex()
		create, _ := encodeCommand(CmdCreateService, CreateServiceCmd{Name: "new", Spec: spec, FirstPort: 40000})
		f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: create})
		b.StartTimer()
		buf, err := encodeCommand(CmdAddReplicas, AddReplicasCmd{Replicas: adds})
		if err != nil {
			b.Fatal(err)
		}
		f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: buf})
	}
}

// BenchmarkApplyUpdateReplicas: one pass's worth of reports (1,024
// replicas turning READY) on a fleet of 20,000.
func BenchmarkApplyUpdateReplicas(b *testing.B) {
	base := fleetState(2000, 10)
	var ups []ReplicaUpdate
	for _, r := range base.Replicas {
		if len(ups) == maxUpdatesPerPass {
			break
		}
		ups = append(ups, ReplicaUpdate{Service: r.Service, ID: r.ID, From: r.Status, Status: protocol.ReplicaNotReady, Endpoint: r.Endpoint})
	}
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		f := NewFSM()
		f.state = base.Clone()
		f.state.idx = nil
		f.liveIndex()
		b.StartTimer()
		buf, err := encodeCommand(CmdUpdateReplicas, UpdateReplicasCmd{Updates: ups})
		if err != nil {
			b.Fatal(err)
		}
		f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: buf})
	}
}
