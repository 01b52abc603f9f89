package coordinator

import (
	"fmt"
	"testing"
	"time"

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
