package coordinator

import (
	"encoding/json"
	"sort"

	"github.com/baton-dev/baton/protocol"
)

// State is everything the Raft FSM holds. It is plain data: the FSM guards
// it with a mutex and hands out deep copies (Clone) to readers.
type State struct {
	Services map[string]*protocol.Service `json:"services"`
	// Versions is keyed by service name, then version number.
	Versions map[string]map[int]*protocol.Version `json:"versions"`
	// Replicas is keyed by protocol.ReplicaKey.
	Replicas map[string]*protocol.Replica `json:"replicas"`
	Agents   map[string]*protocol.Agent   `json:"agents"`
	// Index is the Raft index of the last applied command.
	Index uint64 `json:"index"`
}

// NewState returns an empty state.
func NewState() *State {
	return &State{
		Services: map[string]*protocol.Service{},
		Versions: map[string]map[int]*protocol.Version{},
		Replicas: map[string]*protocol.Replica{},
		Agents:   map[string]*protocol.Agent{},
	}
}

// Clone returns a deep copy. It round-trips through JSON: the state is small
// (hundreds of objects) and this keeps the copy correct as types grow.
func (s *State) Clone() *State {
	buf, err := json.Marshal(s)
	if err != nil {
		panic("state: marshal: " + err.Error())
	}
	c := NewState()
	if err := json.Unmarshal(buf, c); err != nil {
		panic("state: unmarshal: " + err.Error())
	}
	return c
}

// Version returns a service's version, or nil.
func (s *State) Version(service string, number int) *protocol.Version {
	return s.Versions[service][number]
}

// ServiceReplicas returns a service's replicas sorted by id.
func (s *State) ServiceReplicas(service string) []*protocol.Replica {
	var out []*protocol.Replica
	for _, r := range s.Replicas {
		if r.Service == service {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ServiceNames returns the service names in sorted order.
func (s *State) ServiceNames() []string {
	names := make([]string, 0, len(s.Services))
	for n := range s.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// AgentIDs returns the agent ids in sorted order.
func (s *State) AgentIDs() []string {
	ids := make([]string, 0, len(s.Agents))
	for id := range s.Agents {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// ReplicaKeys returns replica keys sorted by service then id.
func (s *State) ReplicaKeys() []string {
	rs := make([]*protocol.Replica, 0, len(s.Replicas))
	for _, r := range s.Replicas {
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Service != rs[j].Service {
			return rs[i].Service < rs[j].Service
		}
		return rs[i].ID < rs[j].ID
	})
	keys := make([]string, len(rs))
	for i, r := range rs {
		keys[i] = r.Key()
	}
	return keys
}
