package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"maps"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/protocol"
)

// statusSeed hashes raw status messages (see controller.rawStatus).
var statusSeed = maphash.MakeSeed()

// onAgentStatus records an agent's report. A message identical, byte for
// byte, to the one the agent sent before is a heartbeat: it only renews
// the agent's last-seen time and is not decoded again, so a quiet fleet
// costs a hash per heartbeat. A report whose replicas or registration
// changed wakes the controller.
func (c *controller) onAgentStatus(m *nats.Msg) {
	now := time.Now()
	h := maphash.Bytes(statusSeed, m.Data)
	c.mu.Lock()
	// A status byte for byte the same as one heard before refreshes it,
	// but only from the subject of the agent it names: another agent
	// replaying it must not keep this one alive.
	if ar := c.rawStatus[h]; ar != nil && bytes.Equal(ar.raw, m.Data) && protocol.SenderOf(m.Subject, agentSubjectPrefix) == ar.status.Agent.ID {
		ar.at = now
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()

	// The agent's registration (capacity, GPUs: half of a message) is
	// mostly what it sent before, byte for byte: it is decoded only when
	// it differs, and the replicas are always decoded.
	var wire statusWire
	var st protocol.AgentStatus
	var agentHash uint64
	validate := func() error {
		agentHash = maphash.Bytes(statusSeed, wire.Agent)
		c.mu.Lock()
		known := c.agentRaw[agentHash]
		c.mu.Unlock()
		if known != nil && bytes.Equal(known.agentRaw, wire.Agent) {
			st.Agent = known.status.Agent
		} else if err := protocol.DecodeMessage(wire.Agent, protocol.MaxStatusBytes, &st.Agent); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		st.Replicas, st.Leaving, st.SentAt = wire.Replicas, wire.Leaving, wire.SentAt
		return st.Validate()
	}
	if !c.decode(m, protocol.MaxStatusBytes, &wire, validate) {
		return
	}
	if !c.sameSender(m, agentSubjectPrefix, st.Agent.ID) {
		return
	}
	reps := make(map[string]protocol.ReplicaReport, len(st.Replicas))
	for _, rr := range st.Replicas {
		reps[rr.Key()] = rr
	}
	ar := &agentReport{status: &st, replicas: reps, at: now, rawHash: h, raw: bytes.Clone(m.Data),
		agentHash: agentHash, agentRaw: bytes.Clone(wire.Agent)}
	c.mu.Lock()
	prev := c.agents[st.Agent.ID]
	if prev != nil && c.rawStatus[prev.rawHash] == prev {
		delete(c.rawStatus, prev.rawHash)
	}
	if prev != nil && c.agentRaw[prev.agentHash] == prev {
		delete(c.agentRaw, prev.agentHash)
	}
	c.agents[st.Agent.ID] = ar
	c.rawStatus[h] = ar
	c.agentRaw[agentHash] = ar
	c.mu.Unlock()
	// Reports are compared as sets: an agent may list its replicas in any
	// order.
	if prev == nil || prev.status.Leaving != st.Leaving || !maps.Equal(prev.replicas, reps) ||
		agentChanged(&prev.status.Agent, &st.Agent) {
		c.kickFn()
	}
}

// agentSubjectPrefix starts protocol.AgentStatusSubject, before the id.
const agentSubjectPrefix = "baton.agent."

// statusWire is protocol.AgentStatus with its agent left encoded.
type statusWire struct {
	Agent    json.RawMessage          `json:"agent"`
	Replicas []protocol.ReplicaReport `json:"replicas"`
	Leaving  bool                     `json:"leaving,omitempty"`
	SentAt   time.Time                `json:"sent_at"`
}

// heardFrom is one agent's last report as a pass sees it.
type heardFrom struct {
	report *agentReport
	at     time.Time
}

// reports copies what the agents last reported (pointers to immutable
// reports, and the times).
func (c *controller) reports() map[string]heardFrom {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]heardFrom, len(c.agents))
	for id, ar := range c.agents {
		out[id] = heardFrom{report: ar, at: ar.at}
	}
	return out
}

// reconcileAgents registers agents that report, and marks silent or
// leaving ones lost, each kind of change in one command for the whole
// fleet. It reports whether it changed anything.
func (c *controller) reconcileAgents(st *State, heard map[string]heardFrom, now time.Time) bool {
	var upserts []protocol.Agent
	var changes []AgentAliveChange
	for _, id := range slices.Sorted(maps.Keys(heard)) {
		h := heard[id]
		rep := h.report.status.Agent
		cur := st.Agents[id]
		if now.Sub(h.at) > c.cfg.AgentTimeout {
			continue // stale report; the agent is (being) marked lost
		}
		if c.registered[id] == h.report && cur != nil && cur.Alive {
			continue // this very report was found registered before
		}
		if h.report.status.Leaving {
			// Shutting down: out of service now. Its replicas are marked
			// FAILED (out of the routes, replaced elsewhere) while it stops
			// them; it registers again when it starts.
			if cur != nil && cur.Alive {
				changes = append(changes, AgentAliveChange{ID: id, Reason: fmt.Sprintf("agent %s is shutting down", id)})
				c.log.Info("agent leaving", "agent_id", id)
			}
			continue
		}
		if cur == nil || !cur.Alive || agentChanged(cur, &rep) {
			upserts = append(upserts, rep)
			continue
		}
		c.registered[id] = h.report
	}
	for _, id := range st.AgentIDs() {
		a := st.Agents[id]
		if !a.Alive {
			if now.Sub(a.LastSeen) > c.cfg.AgentGCAfter && !holdsReplicas(st, id) {
				if c.applyCmd(CmdRemoveAgent, RemoveAgentCmd{ID: id}) {
					c.forgetAgent(id)
					c.log.Info("lost agent forgotten", "agent_id", id, "lost_for", now.Sub(a.LastSeen).String())
				}
			}
			continue
		}
		// A new leader believes only gossip verdicts given since it leads:
		// it gives every agent a full timeout, as below.
		if why := c.gossipDown(membership.RoleAgent, id, later(heard[id].at, c.leaderSince)); why != "" {
			changes = append(changes, AgentAliveChange{ID: id, Reason: fmt.Sprintf("agent %s lost: %s", id, why)})
			c.log.Warn("agent lost", "agent_id", id, "gossip", why)
			continue
		}
		last := heard[id].at
		if last.Before(c.leaderSince) {
			last = c.leaderSince // a new leader gives every agent a full timeout
		}
		deadline := last.Add(c.cfg.AgentTimeout)
		if !now.After(deadline) {
			c.wakeAt(deadline.Add(time.Millisecond))
			continue
		}
		if h, ok := heard[id]; ok && h.report.status.Leaving {
			continue // marked above
		}
		silent := now.Sub(last)
		changes = append(changes, AgentAliveChange{ID: id,
			Reason: fmt.Sprintf("agent %s lost: no heartbeat for %s", id, silent.Round(100*time.Millisecond))})
		c.log.Warn("agent lost", "agent_id", id, "silent_for", silent.String())
	}
	changed := false
	if len(upserts) > 0 && c.applyCmd(CmdUpsertAgents, UpsertAgentsCmd{Agents: upserts, At: now}) {
		changed = true
		for _, a := range upserts {
			c.log.Info("agent registered", "agent_id", a.ID, "address", a.Address,
				"cpus", a.Capacity.CPUs, "memory_gb", a.Capacity.MemoryGB, "gpus", len(a.Capacity.GPUs))
		}
	}
	if len(changes) > 0 && c.applyCmd(CmdSetAgentsAlive, SetAgentsAliveCmd{Changes: changes, At: now}) {
		changed = true
	}
	return changed
}

// later returns the later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// gossipDown says why gossip shows a member failed or gone since lastHeard
// (its last message), or "" when it does not (or there is no gossip). A
// failure older than the last message is not believed: the member spoke
// since.
func (c *controller) gossipDown(role membership.Role, id string, lastHeard time.Time) string {
	if c.gossip == nil {
		return ""
	}
	m, ok := c.gossip(role, id)
	if !ok || !m.Since.After(lastHeard) {
		return ""
	}
	switch m.Status {
	case membership.StatusFailed:
		return "gossip: failed (no answer to direct or indirect probes)"
	case membership.StatusLeft:
		return "gossip: left the cluster"
	}
	return ""
}

// holdsReplicas reports whether any replica that is not FAILED is on the
// agent.
func holdsReplicas(st *State, agentID string) bool {
	for _, r := range st.AgentReplicas(agentID) {
		if !r.Status.IsFailed() {
			return true
		}
	}
	return false
}

// forgetAgent drops what the leader remembers of a removed agent.
func (c *controller) forgetAgent(id string) {
	c.mu.Lock()
	if ar := c.agents[id]; ar != nil && c.rawStatus[ar.rawHash] == ar {
		delete(c.rawStatus, ar.rawHash)
	}
	if ar := c.agents[id]; ar != nil && c.agentRaw[ar.agentHash] == ar {
		delete(c.agentRaw, ar.agentHash)
	}
	delete(c.agents, id)
	c.mu.Unlock()
	delete(c.desired, id)
	delete(c.reportSeen, id)
	delete(c.registered, id)
}

// agentChanged reports whether a report changes what the FSM records of
// an agent (liveness aside).
func agentChanged(cur, rep *protocol.Agent) bool {
	return cur.Address != rep.Address || cur.Host != rep.Host || cur.Region != rep.Region ||
		cur.NetNS != rep.NetNS || cur.PortRange != rep.PortRange || !maps.Equal(cur.Labels, rep.Labels) ||
		cur.Capacity.CPUs != rep.Capacity.CPUs || cur.Capacity.MemoryGB != rep.Capacity.MemoryGB ||
		!slices.Equal(cur.Capacity.GPUs, rep.Capacity.GPUs)
}

// reconcileReports folds the agents' replica reports into the FSM, in one
// command. It reports whether it changed anything.
func (c *controller) reconcileReports(st *State, heard map[string]heardFrom, now time.Time) bool {
	var updates []ReplicaUpdate
	var deletes []string
	var busy []busyReport
	st.EachReplica(func(r *protocol.Replica) {
		if r.Status == protocol.ReplicaShuttingDown && r.AgentID == "" {
			deletes = append(deletes, r.Key()) // never placed: nothing to stop
		}
	})
	for _, id := range st.AgentIDs() {
		a := st.Agents[id]
		h, ok := heard[id]
		if !a.Alive || !ok {
			continue
		}
		reps := st.AgentReplicas(id)
		if seen, ok := c.reportSeen[id]; ok && seen.report == h.report && !seen.recheck && slices.Equal(seen.reps, reps) {
			continue // the same report of the same replicas: nothing new
		}
		recheck := false
		for _, r := range reps {
			if r.Status.IsFailed() {
				continue
			}
			key := r.Key()
			rr, found := h.report.replicas[key]
			if r.Status == protocol.ReplicaShuttingDown {
				recheck = true // waits for its drain and the agent's next report
				d := c.drains[key]
				if !found && d != nil && !d.removedAt.IsZero() && h.at.After(d.removedAt) {
					deletes = append(deletes, key)
				}
				continue
			}
			if !found {
				recheck = true // waits out ReportGrace
				if h.at.After(r.LaunchedAt.Add(missingResend)) {
					// The agent should run it by now: it may have lost its
					// set (a restart, a lost message). Send it again now
					// rather than at the next repair.
					c.resendDesired(id, now)
				}
				if now.Sub(r.LaunchedAt) > c.cfg.ReportGrace && h.at.After(r.LaunchedAt.Add(c.cfg.ReportGrace)) {
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
					c.log.Debug("replica status", "service", r.Service, "replica_id", r.ID, "version", r.Version,
						"from", string(r.Status), "to", string(rr.Status), "reason", rr.Reason)
					if rr.Status.IsFailed() || rr.Status == protocol.ReplicaNotReady {
						c.log.Info("replica status", "service", r.Service, "replica_id", r.ID, "version", r.Version,
							"from", string(r.Status), "to", string(rr.Status), "reason", rr.Reason)
					}
				}
			}
		}
		c.reportSeen[id] = reportSeen{report: h.report, reps: reps, recheck: recheck}
	}
	updates = append(updates, c.moveOffBusyPorts(st, busy, now)...)
	if len(updates) > maxUpdatesPerPass {
		// A fleet coming up reports tens of thousands of changes at once:
		// they go in bounded commands, one per pass (the next pass comes
		// at once), so that no pass holds up flips and publishing behind
		// a huge command.
		updates = updates[:maxUpdatesPerPass]
		c.wakeAt(now)
	}
	changed, failed := false, false
	if len(updates) > 0 {
		if c.applyCmd(CmdUpdateReplicas, UpdateReplicasCmd{Updates: updates, At: now}) {
			changed = true
		} else {
			failed = true
		}
	}
	if len(deletes) > 0 {
		if c.applyCmd(CmdDeleteReplicas, DeleteReplicasCmd{Keys: deletes}) {
			changed = true
			for _, k := range deletes {
				delete(c.drains, k)
			}
			c.log.Info("replicas gone", "count", len(deletes), "replicas", abbreviateList(deletes, 20))
		} else {
			failed = true
		}
	}
	if failed || len(updates) == maxUpdatesPerPass {
		clear(c.reportSeen) // look at every agent again: what was seen is not in the FSM yet
	}
	return changed
}

// missingResend is how long after its placement a replica its agent does
// not report makes the leader send the agent its desired set again (at
// most that often).
const missingResend = 2 * time.Second

// resendDesired makes the next publish send the agent its desired set,
// unless it was sent within missingResend.
func (c *controller) resendDesired(id string, now time.Time) {
	if d, ok := c.desired[id]; ok && now.Sub(d.sentAt) >= missingResend {
		d.repairAt = now
		c.desired[id] = d
	}
}

// maxUpdatesPerPass bounds the replica reports one pass folds into the FSM.
const maxUpdatesPerPass = 1024

// abbreviateList keeps the first n items of a list for a log line.
func abbreviateList(items []string, n int) []string {
	if len(items) <= n {
		return items
	}
	return append(slices.Clip(items[:n]), fmt.Sprintf("... %d more", len(items)-n))
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

// newPlacer is a lazy placer for st (newLazyPlacer) that also avoids the
// ports agents recently found busy.
func (c *controller) newPlacer(st *State, now time.Time) *placer {
	p := newLazyPlacer(st)
	for space, ports := range c.busyPorts {
		for port, at := range ports {
			if now.Sub(at) > busyPortMemory {
				delete(ports, port)
				continue
			}
			p.avoidPort(space, port)
		}
		if len(ports) == 0 {
			delete(c.busyPorts, space)
		}
	}
	return p
}
