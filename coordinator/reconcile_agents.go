package coordinator

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// reconcileAgents registers agents that report and marks silent ones lost.
func (c *controller) reconcileAgents(st *State, now time.Time) {
	c.mu.Lock()
	reports := make(map[string]protocol.Agent, len(c.reports))
	leaving := map[string]bool{}
	for id, r := range c.reports {
		reports[id] = r.Agent
		leaving[id] = r.Leaving
	}
	seen := make(map[string]time.Time, len(c.reportAt))
	for id, t := range c.reportAt {
		seen[id] = t
	}
	c.mu.Unlock()

	ids := make([]string, 0, len(reports))
	for id := range reports {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		rep := reports[id]
		cur := st.Agents[id]
		if now.Sub(seen[id]) > c.cfg.AgentTimeout {
			continue // stale report; the agent is (being) marked lost
		}
		if leaving[id] {
			// Shutting down: out of service now. Its replicas are marked
			// FAILED (out of the routes, replaced elsewhere) while it stops
			// them; it registers again when it starts.
			if cur != nil && cur.Alive {
				reason := fmt.Sprintf("agent %s is shutting down", id)
				if c.apply(CmdSetAgentAlive, SetAgentAliveCmd{ID: id, Alive: false, Reason: reason, At: now}) {
					c.log.Info("agent leaving", "agent_id", id)
				}
			}
			continue
		}
		if cur == nil || !cur.Alive || agentChanged(cur, &rep) {
			if c.apply(CmdUpsertAgent, UpsertAgentCmd{Agent: rep, At: now}) {
				c.log.Info("agent registered", "agent_id", id, "address", rep.Address,
					"cpus", rep.Capacity.CPUs, "memory_gb", rep.Capacity.MemoryGB, "gpus", len(rep.Capacity.GPUs))
			}
		}
	}
	for _, id := range st.AgentIDs() {
		a := st.Agents[id]
		if !a.Alive {
			if now.Sub(a.LastSeen) > c.cfg.AgentGCAfter && !holdsReplicas(st, id) {
				if c.apply(CmdRemoveAgent, RemoveAgentCmd{ID: id}) {
					c.forgetAgent(id)
					c.log.Info("lost agent forgotten", "agent_id", id, "lost_for", now.Sub(a.LastSeen).String())
				}
			}
			continue
		}
		last, ok := seen[id]
		if !ok || last.Before(c.leaderSince) {
			last = c.leaderSince // a new leader gives every agent a full timeout
		}
		if silent := now.Sub(last); silent > c.cfg.AgentTimeout {
			reason := fmt.Sprintf("agent %s lost: no heartbeat for %s", id, silent.Round(time.Second))
			if c.apply(CmdSetAgentAlive, SetAgentAliveCmd{ID: id, Alive: false, Reason: reason, At: now}) {
				c.log.Warn("agent lost", "agent_id", id, "silent_for", silent.String())
			}
		}
	}
}

// holdsReplicas reports whether any replica that is not FAILED is on the
// agent.
func holdsReplicas(st *State, agentID string) bool {
	for _, r := range st.Replicas {
		if r.AgentID == agentID && !r.Status.IsFailed() {
			return true
		}
	}
	return false
}

// forgetAgent drops what the leader remembers of a removed agent.
func (c *controller) forgetAgent(id string) {
	c.mu.Lock()
	delete(c.reports, id)
	delete(c.reportAt, id)
	c.mu.Unlock()
	delete(c.sentDesired, id)
}

// agentChanged reports whether a report changes what the FSM records of
// an agent (liveness aside).
func agentChanged(cur, rep *protocol.Agent) bool {
	recorded := func(a *protocol.Agent) string {
		b, _ := json.Marshal([]any{a.Address, a.Host, a.Region, a.Labels, a.Capacity})
		return string(b)
	}
	return recorded(cur) != recorded(rep)
}

// reconcileReports folds the agents' replica reports into the FSM.
func (c *controller) reconcileReports(st *State, now time.Time) {
	c.mu.Lock()
	reports := make(map[string]map[string]protocol.ReplicaReport, len(c.reports))
	reportAt := make(map[string]time.Time, len(c.reportAt))
	for id, r := range c.reports {
		m := make(map[string]protocol.ReplicaReport, len(r.Replicas))
		for _, rr := range r.Replicas {
			m[rr.Key()] = rr
		}
		reports[id] = m
		reportAt[id] = c.reportAt[id]
	}
	c.mu.Unlock()

	var updates []ReplicaUpdate
	var deletes []string
	var busy []busyReport
	for _, key := range st.ReplicaKeys() {
		r := st.Replicas[key]
		if r.Status == protocol.ReplicaShuttingDown && r.AgentID == "" {
			deletes = append(deletes, key) // never placed: nothing to stop
			continue
		}
		if r.AgentID == "" || r.Status.IsFailed() {
			continue
		}
		a := st.Agents[r.AgentID]
		reps, ok := reports[r.AgentID]
		if a == nil || !a.Alive || !ok {
			continue
		}
		rr, found := reps[key]
		at := reportAt[r.AgentID]
		if r.Status == protocol.ReplicaShuttingDown {
			d := c.drains[key]
			if !found && d != nil && !d.removedAt.IsZero() && at.After(d.removedAt) {
				deletes = append(deletes, key)
			}
			continue
		}
		if !found {
			if now.Sub(r.LaunchedAt) > c.cfg.ReportGrace && at.After(r.LaunchedAt.Add(c.cfg.ReportGrace)) {
				updates = append(updates, ReplicaUpdate{Service: r.Service, ID: r.ID, From: r.Status,
					Status: protocol.ReplicaFailed, Reason: fmt.Sprintf("agent %s no longer runs this replica", r.AgentID)})
			}
			continue
		}
		if rr.Status == protocol.ReplicaShuttingDown || rr.Status == protocol.ReplicaPending || rr.Version != r.Version {
			continue
		}
		if rr.PortBusy {
			if port := endpointPort(rr.Endpoint); port > 0 && port == replicaPort(r) && r.Status == protocol.ReplicaProvisioning {
				busy = append(busy, busyReport{replica: r, port: port})
			}
			continue
		}
		if rr.Status != r.Status || (rr.Endpoint != "" && rr.Endpoint != r.Endpoint) || rr.Reason != r.Reason {
			updates = append(updates, ReplicaUpdate{Service: r.Service, ID: r.ID, From: r.Status,
				Status: rr.Status, Endpoint: rr.Endpoint, Reason: rr.Reason})
			if rr.Status != r.Status {
				c.log.Info("replica status", "service", r.Service, "replica_id", r.ID, "version", r.Version,
					"from", string(r.Status), "to", string(rr.Status), "reason", rr.Reason)
			}
		}
	}
	updates = append(updates, c.moveOffBusyPorts(st, busy, now)...)
	if len(updates) > 0 {
		c.apply(CmdUpdateReplicas, UpdateReplicasCmd{Updates: updates, At: now})
	}
	if len(deletes) > 0 {
		if c.apply(CmdDeleteReplicas, DeleteReplicasCmd{Keys: deletes}) {
			for _, k := range deletes {
				delete(c.drains, k)
			}
			c.log.Info("replicas gone", "replicas", deletes)
		}
	}
}

// busyReport is a placed replica whose agent found its port held by a
// process baton does not run.
type busyReport struct {
	replica *protocol.Replica
	port    int
}

// moveOffBusyPorts gives each replica whose port is busy on its host
// another port, keeping its id (it has not started), and remembers the
// busy ports so that placement avoids them for a while.
func (c *controller) moveOffBusyPorts(st *State, busy []busyReport, now time.Time) []ReplicaUpdate {
	if len(busy) == 0 {
		return nil
	}
	p := c.newPlacer(st, now)
	var out []ReplicaUpdate
	for _, b := range busy {
		r := b.replica
		a := st.Agents[r.AgentID]
		v := st.Version(r.Service, r.Version)
		if a == nil || v == nil {
			continue
		}
		space := portSpace(a)
		if c.busyPorts[space] == nil {
			c.busyPorts[space] = map[int]time.Time{}
		}
		c.busyPorts[space][b.port] = now
		port := p.repick(a, v.Spec.Service.Port, b.port)
		if port == 0 {
			out = append(out, ReplicaUpdate{Service: r.Service, ID: r.ID, From: r.Status, Status: protocol.ReplicaFailed,
				Reason: fmt.Sprintf("port %d is held on %s's host by another process and no other port is free there", b.port, a.ID)})
			continue
		}
		reason := fmt.Sprintf("port %d is held on %s's host by a process baton does not run; given port %d instead", b.port, a.ID, port)
		c.log.Warn("replica port busy; moving it", "service", r.Service, "replica_id", r.ID, "agent_id", a.ID, "busy_port", b.port, "port", port)
		out = append(out, ReplicaUpdate{Service: r.Service, ID: r.ID, From: r.Status, Status: r.Status,
			Port: port, Endpoint: net.JoinHostPort(a.Host, strconv.Itoa(port)), Reason: reason})
	}
	return out
}

// newPlacer is newPlacer(st) that also avoids the ports agents recently
// found busy.
func (c *controller) newPlacer(st *State, now time.Time) *placer {
	p := newPlacer(st)
	for space, ports := range c.busyPorts {
		for port, at := range ports {
			if now.Sub(at) > busyPortMemory {
				delete(ports, port)
				continue
			}
			p.takePort(space, port)
		}
		if len(ports) == 0 {
			delete(c.busyPorts, space)
		}
	}
	return p
}
