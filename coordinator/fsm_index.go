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
	f.pending.service(r.Service)[ref] = r
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
	ref := replicaRef{old.Service, old.ID}
	f.pending.service(old.Service)[ref] = nil
	if old.AgentID != "" {
		f.pending.agent(old.AgentID)[ref] = nil
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
	services map[string]map[replicaRef]*protocol.Replica
	agents   map[string]map[replicaRef]*protocol.Replica
}

func (c *indexChanges) service(name string) map[replicaRef]*protocol.Replica {
	return changesOf(&c.services, name)
}

func (c *indexChanges) agent(id string) map[replicaRef]*protocol.Replica {
	return changesOf(&c.agents, id)
}

// changesOf returns (*m)[key], making the maps as needed.
func changesOf(m *map[string]map[replicaRef]*protocol.Replica, key string) map[replicaRef]*protocol.Replica {
	if *m == nil {
		*m = map[string]map[replicaRef]*protocol.Replica{}
	}
	c := (*m)[key]
	if c == nil {
		c = map[replicaRef]*protocol.Replica{}
		(*m)[key] = c
	}
	return c
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
		setList(idx.byService, name, merged(idx.byService[name], changes, byID))
	}
	for id, changes := range f.pending.agents {
		setList(idx.byAgent, id, merged(idx.byAgent[id], changes, byServiceID))
	}
	f.pending = indexChanges{}
}

// merged returns a new list: list with each changed replica replaced by
// its new version (or left out when it is gone), sorted by cmp. list
// itself is never changed.
func merged(list []*protocol.Replica, changes map[replicaRef]*protocol.Replica, cmp func(a, b *protocol.Replica) int) []*protocol.Replica {
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
	slices.SortFunc(out, cmp)
	return out
}

// setList sets one list of an index; an empty list is removed.
func setList(m map[string][]*protocol.Replica, key string, list []*protocol.Replica) {
	if len(list) == 0 {
		delete(m, key)
		return
	}
	m[key] = list
}

// liveIndex is the FSM's own index of its replicas, built when missing.
// It has no lists of service and agent names: copies sort them.
func (f *FSM) liveIndex() *stateIndex {
	if f.state.idx == nil {
		f.state.idx = buildIndex(f.state)
	}
	return f.state.idx
}
