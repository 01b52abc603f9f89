package coordinator

import (
	"slices"

	"github.com/baton-dev/baton/protocol"
)

// putReplica stores r under key and notes the change for the index
// (flushIndex brings it up to date at the end of the command).
func (f *FSM) putReplica(key string, r *protocol.Replica) {
	f.liveIndex()
	old := f.state.Replicas[key]
	f.state.Replicas[key] = r
	ref := replicaRef{r.Service, r.ID}
	f.pending.service(r.Service)[r.ID] = r
	if old != nil && old.AgentID != "" && old.AgentID != r.AgentID {
		f.pending.agent(old.AgentID)[ref] = nil
	}
	if r.AgentID != "" {
		f.pending.agent(r.AgentID)[ref] = r
	}
}

// deleteReplica forgets the replica under key, noting it for the index.
func (f *FSM) deleteReplica(key string) {
	f.liveIndex()
	old, ok := f.state.Replicas[key]
	if !ok {
		return
	}
	delete(f.state.Replicas, key)
	f.pending.service(old.Service)[old.ID] = nil
	if old.AgentID != "" {
		f.pending.agent(old.AgentID)[replicaRef{old.Service, old.ID}] = nil
	}
}

// replicaRef names a replica without building its key string.
type replicaRef struct {
	service string
	id      int
}

// indexChanges are the replicas a command changed (nil: gone), by
// service and by agent, until flushIndex applies them to the index.
type indexChanges struct {
	services map[string]map[int]*protocol.Replica
	agents   map[string]map[replicaRef]*protocol.Replica
}

func (c *indexChanges) service(name string) map[int]*protocol.Replica {
	if c.services == nil {
		c.services = map[string]map[int]*protocol.Replica{}
	}
	m := c.services[name]
	if m == nil {
		m = map[int]*protocol.Replica{}
		c.services[name] = m
	}
	return m
}

func (c *indexChanges) agent(id string) map[replicaRef]*protocol.Replica {
	if c.agents == nil {
		c.agents = map[string]map[replicaRef]*protocol.Replica{}
	}
	m := c.agents[id]
	if m == nil {
		m = map[replicaRef]*protocol.Replica{}
		c.agents[id] = m
	}
	return m
}

// flushIndex brings the index up to date with the command's changes:
// each list a change touched is replaced by a new one (copies of the
// state share the old), once per command however many replicas it
// changed, so a copy's index costs a copy of two small maps.
func (f *FSM) flushIndex() {
	if f.pending.services == nil && f.pending.agents == nil {
		return
	}
	idx := f.liveIndex()
	for name, changes := range f.pending.services {
		list := idx.byService[name]
		out := make([]*protocol.Replica, 0, len(list)+len(changes))
		for _, r := range list {
			if _, changed := changes[r.ID]; !changed {
				out = append(out, r)
			}
		}
		for _, r := range changes {
			if r != nil {
				out = append(out, r)
			}
		}
		if len(out) == 0 {
			delete(idx.byService, name)
			continue
		}
		slices.SortFunc(out, byID)
		idx.byService[name] = out
	}
	for id, changes := range f.pending.agents {
		list := idx.byAgent[id]
		out := make([]*protocol.Replica, 0, len(list)+len(changes))
		for _, r := range list {
			if _, changed := changes[replicaRef{r.Service, r.ID}]; !changed {
				out = append(out, r)
			}
		}
		for _, r := range changes {
			if r != nil {
				out = append(out, r)
			}
		}
		slices.SortFunc(out, byServiceID)
		idx.setAgent(id, out)
	}
	f.pending = indexChanges{}
}

// liveIndex is the FSM's own index of its replicas, built when missing.
// Its lists of service and agent names are left empty: copies sort them.
func (f *FSM) liveIndex() *stateIndex {
	if f.state.idx == nil {
		f.state.idx = buildIndex(f.state)
		f.state.idx.services, f.state.idx.agents = nil, nil
	}
	return f.state.idx
}
