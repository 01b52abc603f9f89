package coordinator

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// State is everything the Raft FSM holds. It is plain data: the FSM guards
// it with a mutex and hands out copies (Clone) to readers.
type State struct {
	Services map[string]*protocol.Service `json:"services"`
	// Versions is keyed by service name, then version number.
	Versions map[string]map[int]*protocol.Version `json:"versions"`
	// Replicas is keyed by protocol.ReplicaKey.
	Replicas map[string]*protocol.Replica `json:"replicas"`
	Agents   map[string]*protocol.Agent   `json:"agents"`
	// Index is the Raft index of the last applied command.
	Index uint64 `json:"index"`
	// ACL holds the API's tokens.
	ACL ACLState `json:"acl"`
	// Bundles are the committed bundles, by digest (sha256:<hex>). A
	// snapshot written before bundles existed has none.
	Bundles map[string]BundleRecord `json:"bundles,omitempty"`

	// idx, when set, indexes this state's replicas, services and agents.
	// Clone and Indexed set it; the FSM's own state has none (it changes
	// under every Apply), so lookups there scan.
	idx *stateIndex
}

// BundleRecord is a bundle the cluster committed: a majority of the
// coordinators held its file when it was added.
type BundleRecord struct {
	// Size is the archive's size in bytes.
	Size int64 `json:"size"`
	// UploadedAt is when it was first committed (the stamping
	// coordinator's clock).
	UploadedAt time.Time `json:"uploaded_at"`
}

// ACLState is whether ACLs were bootstrapped and the tokens, by accessor
// id. The FSM replaces a token whole, never edits one.
type ACLState struct {
	Bootstrapped bool                          `json:"bootstrapped,omitempty"`
	Tokens       map[string]*protocol.ACLToken `json:"tokens,omitempty"`
}

// TokenBySecretHash finds a token by its secret's hash.
func (a *ACLState) TokenBySecretHash(hash string) *protocol.ACLToken {
	for _, t := range a.Tokens {
		if t.SecretHash == hash {
			return t
		}
	}
	return nil
}

// stateIndex is built once per copy of the state, so that a reconcile
// pass or a status read never scans every replica once per service.
type stateIndex struct {
	byService map[string][]*protocol.Replica // each sorted by id
	byAgent   map[string][]*protocol.Replica // each sorted by service, id
	services  []string                       // sorted
	agents    []string                       // sorted
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

// Clone returns a copy that shares nothing the FSM changes in place, with
// its indexes built. Replica structs are shared: the FSM never edits a
// stored replica, it stores an edited copy (FSM.editReplica), so a clone
// of a fleet's state copies a map of pointers, not tens of thousands of
// structs. Services, versions and agents (few, and edited in place) are
// copied, with the slices and pointers the FSM edits in place (active
// versions, the rollout); values the FSM only ever replaces whole (a
// version's spec, an agent's capacity and labels) are shared.
func (s *State) Clone() *State {
	c := &State{
		Services: make(map[string]*protocol.Service, len(s.Services)),
		Versions: make(map[string]map[int]*protocol.Version, len(s.Versions)),
		Replicas: maps.Clone(s.Replicas),
		Agents:   make(map[string]*protocol.Agent, len(s.Agents)),
		Index:    s.Index,
		ACL:      ACLState{Bootstrapped: s.ACL.Bootstrapped, Tokens: maps.Clone(s.ACL.Tokens)},
		Bundles:  maps.Clone(s.Bundles),
	}
	if c.Replicas == nil {
		c.Replicas = map[string]*protocol.Replica{}
	}
	for name, svc := range s.Services {
		cs := cloneService(svc)
		c.Services[name] = &cs
	}
	for name, vs := range s.Versions {
		m := make(map[int]*protocol.Version, len(vs))
		for n, v := range vs {
			cv := *v
			m[n] = &cv
		}
		c.Versions[name] = m
	}
	agents := make([]protocol.Agent, len(s.Agents))
	i := 0
	for id, a := range s.Agents {
		agents[i] = *a
		c.Agents[id] = &agents[i]
		i++
	}
	if s.idx != nil {
		// The lists are shared: the FSM replaces a list, never edits one.
		c.idx = &stateIndex{byService: maps.Clone(s.idx.byService), byAgent: maps.Clone(s.idx.byAgent)}
	} else {
		c.idx = buildIndex(c)
	}
	c.idx.services, c.idx.agents = c.ServiceNames(), c.AgentIDs()
	return c
}

// byID orders a service's replicas; byServiceID an agent's.
func byID(a, b *protocol.Replica) int { return a.ID - b.ID }

func byServiceID(a, b *protocol.Replica) int {
	if c := strings.Compare(a.Service, b.Service); c != 0 {
		return c
	}
	return a.ID - b.ID
}

// Indexed returns a shallow copy of s (the same maps and structs) with its
// indexes built, for a reader that holds the FSM's read lock and looks
// replicas up by service or agent many times.
func (s *State) Indexed() *State {
	if s.idx != nil && s.idx.services != nil {
		return s
	}
	c := *s
	if s.idx != nil {
		c.idx = &stateIndex{byService: s.idx.byService, byAgent: s.idx.byAgent}
	} else {
		c.idx = buildIndex(&c)
	}
	c.idx.services, c.idx.agents = c.ServiceNames(), c.AgentIDs()
	return &c
}

func buildIndex(s *State) *stateIndex {
	idx := &stateIndex{
		byService: make(map[string][]*protocol.Replica, len(s.Services)),
		byAgent:   make(map[string][]*protocol.Replica, len(s.Agents)),
	}
	// Count first, then carve every list out of one array per index: a
	// fleet's index is two allocations, not one per agent and service.
	perService := make(map[string]int, len(s.Services))
	perAgent := make(map[string]int, len(s.Agents))
	placed := 0
	for _, r := range s.Replicas {
		perService[r.Service]++
		if r.AgentID != "" {
			perAgent[r.AgentID]++
			placed++
		}
	}
	svcArr := make([]*protocol.Replica, 0, len(s.Replicas))
	for name, n := range perService {
		idx.byService[name] = svcArr[len(svcArr) : len(svcArr) : len(svcArr)+n]
		svcArr = svcArr[:len(svcArr)+n]
	}
	agentArr := make([]*protocol.Replica, 0, placed)
	for id, n := range perAgent {
		idx.byAgent[id] = agentArr[len(agentArr) : len(agentArr) : len(agentArr)+n]
		agentArr = agentArr[:len(agentArr)+n]
	}
	for _, r := range s.Replicas {
		idx.byService[r.Service] = append(idx.byService[r.Service], r)
		if r.AgentID != "" {
			idx.byAgent[r.AgentID] = append(idx.byAgent[r.AgentID], r)
		}
	}
	for _, reps := range idx.byService {
		slices.SortFunc(reps, func(a, b *protocol.Replica) int { return a.ID - b.ID })
	}
	for _, reps := range idx.byAgent {
		sortReplicas(reps)
	}
	return idx
}

// sortReplicas orders replicas by service, then id.
func sortReplicas(rs []*protocol.Replica) {
	slices.SortFunc(rs, func(a, b *protocol.Replica) int {
		if c := strings.Compare(a.Service, b.Service); c != 0 {
			return c
		}
		return a.ID - b.ID
	})
}

// Version returns a service's version, or nil.
func (s *State) Version(service string, number int) *protocol.Version {
	return s.Versions[service][number]
}

// ServiceReplicas returns a service's replicas sorted by id. On an indexed
// state the slice is shared: callers must not change it.
func (s *State) ServiceReplicas(service string) []*protocol.Replica {
	if s.idx != nil {
		return s.idx.byService[service]
	}
	var out []*protocol.Replica
	for _, r := range s.Replicas {
		if r.Service == service {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// AgentReplicas returns the replicas placed on an agent, sorted by service
// then id. On an indexed state the slice is shared: callers must not
// change it.
func (s *State) AgentReplicas(agentID string) []*protocol.Replica {
	if s.idx != nil {
		return s.idx.byAgent[agentID]
	}
	var out []*protocol.Replica
	for _, r := range s.Replicas {
		if r.AgentID == agentID {
			out = append(out, r)
		}
	}
	sortReplicas(out)
	return out
}

// ServiceNames returns the service names in sorted order.
func (s *State) ServiceNames() []string {
	if s.idx != nil && s.idx.services != nil {
		return s.idx.services
	}
	return slices.Sorted(maps.Keys(s.Services))
}

// AgentIDs returns the agent ids in sorted order.
func (s *State) AgentIDs() []string {
	if s.idx != nil && s.idx.agents != nil {
		return s.idx.agents
	}
	return slices.Sorted(maps.Keys(s.Agents))
}

// ReplicaKeys returns replica keys sorted by service then id.
func (s *State) ReplicaKeys() []string {
	rs := make([]*protocol.Replica, 0, len(s.Replicas))
	for _, r := range s.Replicas {
		rs = append(rs, r)
	}
	sortReplicas(rs)
	keys := make([]string, len(rs))
	for i, r := range rs {
		keys[i] = r.Key()
	}
	return keys
}

// EachReplica calls fn for every replica, by service then id.
func (s *State) EachReplica(fn func(*protocol.Replica)) {
	if s.idx == nil || s.idx.services == nil {
		for _, k := range s.ReplicaKeys() {
			fn(s.Replicas[k])
		}
		return
	}
	for _, name := range s.idx.services {
		for _, r := range s.idx.byService[name] {
			fn(r)
		}
	}
}

// BundleVersions maps each bundle that a stored version names to those
// versions, "service/version", sorted.
func (s *State) BundleVersions() map[string][]string {
	out := map[string][]string{}
	for _, name := range s.ServiceNames() {
		vs := s.Versions[name]
		for _, n := range slices.Sorted(maps.Keys(vs)) {
			if d := vs[n].Spec.Bundle; d != "" {
				out[d] = append(out[d], fmt.Sprintf("%s/%d", name, n))
			}
		}
	}
	return out
}

// versionNaming returns a stored version that names bundle digest
// ("service/version"), or "".
func (s *State) versionNaming(digest string) string {
	for name, vs := range s.Versions {
		for n, v := range vs {
			if v.Spec.Bundle == digest {
				return fmt.Sprintf("%s/%d", name, n)
			}
		}
	}
	return ""
}
