package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/bus"
	"github.com/baton-dev/baton/protocol"
)

// controller is the leader's reconcile loop. All of the state it acts on
// lives in the FSM, so a new leader resumes where the old one stopped; what
// it keeps in memory (reports, acks, drain progress) is rebuilt from
// messages within a few seconds.
type controller struct {
	s   *Server
	cfg Config
	log *slog.Logger

	// mu guards reports, reportAt and lbs, written by NATS handlers.
	mu       sync.Mutex
	reports  map[string]*protocol.AgentStatus
	reportAt map[string]time.Time
	lbs      map[string]lbInfo

	// pubMu guards published, also read by route sync replies.
	pubMu     sync.Mutex
	published map[string]protocol.RouteTable // last table sent per service

	// Owned by the run goroutine.
	leaderSince time.Time
	wake        time.Time         // reconcile again by then (zero: at the next tick)
	sentDesired map[string]string // agent id -> last desired set (JSON, without epoch)
	// replicaSeries are the replica gauge series set by the last recordMetrics.
	replicaSeries map[replicaSeriesKey]int
	lastRepair    time.Time
	drains        map[string]*drain // replica key -> drain progress
	// busyPorts are ports agents found held by processes baton does not
	// run, per port space, with when that was last reported; placement
	// avoids them for busyPortMemory.
	busyPorts map[string]map[int]time.Time
}

// busyPortMemory is how long a port reported busy is avoided.
const busyPortMemory = 5 * time.Minute

type lbInfo struct {
	epochs   map[string]uint64
	draining map[string]int64 // replica address -> requests in flight
	seen     time.Time
}

// drain tracks one SHUTTING_DOWN replica from "LBs told to stop routing to
// it" to "stopped on its agent".
type drain struct {
	epoch     uint64    // first published table epoch without the replica
	started   time.Time // when the leader first saw it shutting down
	ackedAt   time.Time // every live LB acknowledged epoch (or AckTimeout passed)
	idleAt    time.Time // no live LB has requests in flight to it (or DrainTimeout passed)
	removedAt time.Time // taken out of its agent's desired set
}

func newController(s *Server) *controller {
	return &controller{
		s:           s,
		cfg:         s.cfg,
		log:         s.log.With("component", "controller"),
		reports:     map[string]*protocol.AgentStatus{},
		reportAt:    map[string]time.Time{},
		lbs:         map[string]lbInfo{},
		published:   map[string]protocol.RouteTable{},
		sentDesired: map[string]string{},
		drains:      map[string]*drain{},
		busyPorts:   map[string]map[int]time.Time{},
	}
}

func (c *controller) run(ctx context.Context) {
	c.leaderSince = time.Now()
	// Replica counts are the leader's to export; series from an earlier
	// term of this node would otherwise never be deleted.
	c.s.metrics.replicas.Reset()
	defer c.s.metrics.replicas.Reset()
	nc := c.s.nc
	var subs []*bus.Subscription
	sub := func(subject string, h nats.MsgHandler) {
		sb, err := nc.Subscribe(subject, h)
		if err != nil {
			c.log.Error("subscribe failed", "subject", subject, "error", err)
			return
		}
		subs = append(subs, sb)
	}
	sub(protocol.SubjectAgentStatus, c.onAgentStatus)
	sub(protocol.SubjectLBAck, c.onLBAck)
	sub(protocol.SubjectRoutesSync, c.onRouteSync)
	defer func() {
		for _, sb := range subs {
			_ = sb.Unsubscribe()
		}
	}()
	_ = nc.Flush(time.Second)

	ticker := time.NewTicker(c.cfg.ReconcileInterval)
	defer ticker.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	for {
		c.wake = time.Time{}
		c.reconcileSafely()
		if !c.wake.IsZero() {
			wake.Reset(time.Until(c.wake))
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-wake.C:
		case <-c.s.kick:
		}
	}
}

// reconcileSafely runs one pass. A panic in it (a bug meeting state it
// did not expect) is logged and counted, and the next pass runs as usual:
// the controller only proposes commands, so a failed pass changes nothing,
// and the state that provoked it must not take the coordinator down on
// every restart.
func (c *controller) reconcileSafely() {
	defer func() {
		if r := recover(); r != nil {
			c.s.metrics.reconcilePanics.Inc()
			c.log.Error("reconcile pass failed", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	c.reconcile()
}

func (c *controller) onAgentStatus(m *nats.Msg) {
	var st protocol.AgentStatus
	if !c.s.decodeMessage(m, protocol.MaxStatusBytes, &st, st.Validate) {
		return
	}
	c.mu.Lock()
	prev := c.reports[st.Agent.ID]
	c.reports[st.Agent.ID] = &st
	c.reportAt[st.Agent.ID] = time.Now()
	c.mu.Unlock()
	if prev == nil || !sameReplicaReports(prev.Replicas, st.Replicas) {
		c.s.Kick()
	}
}

func sameReplicaReports(a, b []protocol.ReplicaReport) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (c *controller) onLBAck(m *nats.Msg) {
	var ack protocol.LBAck
	if !c.s.decodeMessage(m, protocol.MaxStatusBytes, &ack, ack.Validate) {
		return
	}
	c.mu.Lock()
	c.lbs[ack.LBID] = lbInfo{epochs: ack.Epochs, draining: ack.Draining, seen: time.Now()}
	c.mu.Unlock()
	c.s.Kick()
}

func (c *controller) onRouteSync(m *nats.Msg) {
	// A service's reply is the table last published for it, not the live
	// state: a newer table would carry an epoch the leader never published,
	// and its drain decisions, which count from published epochs, would
	// then misread the LB's acks. Only services not yet published get the
	// live table (an LB then ignores a first publish from an older state;
	// the next change is published at a newer index). pubMu is held from
	// before the state is read, so every published table comes from that
	// state or an older one.
	var sync protocol.RouteSync
	c.pubMu.Lock()
	c.s.fsm.Read(func(st *State) {
		for _, name := range st.ServiceNames() {
			t, ok := c.published[name]
			if !ok {
				t = routeTable(st, st.Services[name])
			}
			sync.Tables = append(sync.Tables, t)
		}
	})
	c.pubMu.Unlock()
	buf, err := json.Marshal(sync)
	if err != nil {
		c.log.Error("encode route sync", "error", err)
		return
	}
	if err := m.Respond(buf); err != nil {
		c.log.Warn("route sync reply failed", "error", err)
	}
}

// apply proposes one command and logs a failure. Rejections that mean
// "the world moved on" (ErrRolloutChanged) are expected and quiet.
func (c *controller) apply(t CommandType, cmd any) bool {
	if _, _, err := c.s.raftApply(t, cmd); err != nil {
		if errors.Is(err, ErrRolloutChanged) {
			c.log.Debug("command rejected", "type", t.String(), "error", err)
		} else {
			c.log.Warn("command failed", "type", t.String(), "error", err)
		}
		return false
	}
	return true
}

// reconcile compares what the FSM wants with what agents and LBs report and
// proposes the commands that close the gap. Each phase reads fresh state.
func (c *controller) reconcile() {
	c.s.metrics.reconciles.Inc()
	now := time.Now()
	c.reconcileAgents(c.s.fsm.State(), now)
	c.reconcileReports(c.s.fsm.State(), now)
	c.reconcileServices(c.s.fsm.State(), now)
	st := c.s.fsm.State()
	repair := now.Sub(c.lastRepair) >= c.cfg.PublishInterval
	if repair {
		c.lastRepair = now
	}
	c.publishRoutes(st, now, repair)
	c.publishDesired(st, now, repair)
	c.recordMetrics(st)
}

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

// reconcileServices keeps each version at its replica target, places
// PENDING replicas, flips finished rollouts and fails stuck ones.
func (c *controller) reconcileServices(st *State, now time.Time) {
	p := c.newPlacer(st, now)
	var adds []protocol.Replica
	var placements, retires []ReplicaUpdate
	var deletes []string
	for _, name := range st.ServiceNames() {
		svc := st.Services[name]
		reps := st.ServiceReplicas(name)
		if svc.Deleting {
			if len(reps) == 0 {
				if c.apply(CmdRemoveService, RemoveServiceCmd{Service: name}) {
					c.log.Info("service removed", "service", name)
				}
				continue
			}
			for _, r := range reps {
				if r.Status.IsFailed() {
					deletes = append(deletes, r.Key())
				}
			}
			continue
		}
		deletes = append(deletes, expiredFailures(reps, now, c.cfg.FailedReplicaTTL)...)

		// Place replicas still waiting for an agent, and give a port to
		// any placed before placement chose ports.
		for _, r := range reps {
			if r.AgentID != "" && !r.Status.IsTerminal() && replicaPort(r) == 0 {
				if a, v := st.Agents[r.AgentID], st.Version(name, r.Version); a != nil && v != nil {
					if port := p.repick(a, v.Spec.Service.Port, 0); port > 0 {
						placements = append(placements, ReplicaUpdate{Service: name, ID: r.ID, From: r.Status, Status: r.Status,
							Port: port, Endpoint: net.JoinHostPort(a.Host, strconv.Itoa(port)), Reason: r.Reason})
					}
				}
				continue
			}
			if r.Status != protocol.ReplicaPending {
				continue
			}
			v := st.Version(name, r.Version)
			cand, reason, ok := p.place(v.Spec.Resources, v.Spec.Service.Port, failedOn(reps, r.Version))
			switch {
			case ok:
				placements = append(placements, ReplicaUpdate{Service: name, ID: r.ID, From: protocol.ReplicaPending,
					Status: protocol.ReplicaProvisioning, AgentID: cand.agent.ID, Resources: cand.alloc, Endpoint: cand.endpoint()})
			case reason != r.Reason:
				placements = append(placements, ReplicaUpdate{Service: name, ID: r.ID, From: protocol.ReplicaPending,
					Status: protocol.ReplicaPending, Reason: reason})
			}
		}

		targets := replicaTargets(st, svc, reps)
		// Live replicas of a version nobody wants any more (planned just
		// before it failed or was replaced) are retired.
		for _, r := range reps {
			if _, ok := targets[r.Version]; !ok && !r.Status.IsTerminal() {
				retires = append(retires, ReplicaUpdate{Service: name, ID: r.ID, From: r.Status,
					Status: protocol.ReplicaShuttingDown, Reason: fmt.Sprintf("version %d is not active", r.Version)})
			}
		}
		for _, vn := range sortedKeys(targets) {
			v := st.Version(name, vn)
			if v == nil {
				continue
			}
			want := targets[vn]
			live, starting := 0, 0
			for _, r := range reps {
				if r.Version == vn && !r.Status.IsTerminal() {
					live++
					if r.Status != protocol.ReplicaReady {
						starting++
					}
				}
			}
			if live > want {
				retires = append(retires, surplus(reps, vn, live-want, svc.Rollout)...)
				continue
			}
			if v.State == protocol.VersionFailed {
				continue // a failed version only shrinks
			}
			if ro := svc.Rollout; ro != nil && ro.Mode == protocol.UpdateRolling && vn != ro.To {
				continue // the old version only shrinks while new replicas replace it
			}
			streak, lastFail := v.Failures, v.LastFailureAt
			rollingOut := svc.Rollout != nil && svc.Rollout.To == vn
			if rollingOut && streak >= c.maxFailures(minReplicas(v)) {
				reason := fmt.Sprintf("failed: %d replicas in a row failed before becoming ready", streak)
				if c.apply(CmdFailVersion, FailVersionCmd{Service: name, Version: vn, Reason: reason, At: now}) {
					c.log.Warn("version failed; old version keeps serving", "service", name, "version", vn, "reason", reason)
				}
				continue
			}
			if rollingOut && svc.Rollout.Mode == protocol.UpdateRolling {
				// One new replica at a time: the next starts once this one is READY.
				if starting > 0 {
					if u, ok := c.makeRoom(st, svc, reps, vn); ok {
						retires = append(retires, u)
					}
					continue
				}
				want = min(want, live+1)
			}
			if live >= want {
				continue
			}
			if retryAt := lastFail.Add(c.backoff(streak)); streak > 0 && now.Before(retryAt) {
				c.wakeAt(retryAt)
				continue
			}
			avoid := failedOn(reps, vn)
			for i := live; i < want; i++ {
				if len(adds) >= maxAddsPerPass {
					c.wakeAt(now) // the rest on the next pass
					break
				}
				r := protocol.Replica{Service: name, Version: vn, Status: protocol.ReplicaPending}
				if cand, reason, ok := p.place(v.Spec.Resources, v.Spec.Service.Port, avoid); ok {
					r.Status = protocol.ReplicaProvisioning
					r.AgentID = cand.agent.ID
					r.Resources = cand.alloc
					r.Endpoint = cand.endpoint()
				} else {
					r.Reason = reason
				}
				adds = append(adds, r)
			}
		}
	}
	if len(deletes) > 0 {
		c.apply(CmdDeleteReplicas, DeleteReplicasCmd{Keys: deletes})
	}
	if len(placements) > 0 {
		c.apply(CmdUpdateReplicas, UpdateReplicasCmd{Updates: placements, At: now})
	}
	if len(retires) > 0 {
		if c.apply(CmdUpdateReplicas, UpdateReplicasCmd{Updates: retires, At: now}) {
			for _, u := range retires {
				c.log.Info("replica retired", "service", u.Service, "replica_id", u.ID, "reason", u.Reason)
			}
		}
	}
	if len(adds) > 0 {
		if c.apply(CmdAddReplicas, AddReplicasCmd{Replicas: adds, At: now}) {
			for _, r := range adds {
				c.log.Info("replica added", "service", r.Service, "version", r.Version,
					"agent_id", r.AgentID, "status", string(r.Status), "reason", r.Reason)
			}
		}
	}
	c.reconcileRollouts(c.s.fsm.State(), now)
}

// reconcileRollouts flips a blue_green rollout once the new version has
// min_replicas READY, and fails one that made no progress before its
// deadline (the old version keeps serving).
func (c *controller) reconcileRollouts(st *State, now time.Time) {
	for _, name := range st.ServiceNames() {
		svc := st.Services[name]
		ro := svc.Rollout
		if ro == nil || svc.Deleting {
			continue
		}
		v := st.Version(name, ro.To)
		ready := 0
		for _, r := range st.ServiceReplicas(name) {
			if r.Version == ro.To && r.Status == protocol.ReplicaReady {
				ready++
			}
		}
		min := minReplicas(v)
		if ready >= min {
			if c.apply(CmdFlip, FlipCmd{Service: name, To: ro.To, At: now}) {
				c.s.metrics.flips.Inc()
				c.s.metrics.flipSeconds.Observe(now.Sub(ro.StartedAt).Seconds())
				c.log.Info("flipped traffic", "service", name, "from", ro.From, "to", ro.To,
					"ready", ready, "after", now.Sub(ro.StartedAt).String())
			}
			continue
		}
		if now.After(ro.Deadline) {
			reason := fmt.Sprintf("failed: only %d/%d replicas READY after %ds without progress", ready, min, ro.ProgressSeconds)
			if c.apply(CmdFailVersion, FailVersionCmd{Service: name, Version: ro.To, Reason: reason, At: now}) {
				c.log.Warn("version failed; old version keeps serving", "service", name, "version", ro.To, "reason", reason)
			}
		}
	}
}

// maxAddsPerPass bounds the replicas one reconcile pass adds, so that the
// work and memory of a pass stay bounded whatever a spec asks for; the
// rest come on the next passes (the controller wakes again at once).
const maxAddsPerPass = 64

// minReplicas is a version's min_replicas, never more than
// protocol.MaxReplicas: the parser enforces that bound, and a spec stored
// before it existed must not make the controller build millions of
// replicas and crash on every restart.
func minReplicas(v *protocol.Version) int {
	return min(v.Spec.Service.ReplicaPolicy.MinReplicas, protocol.MaxReplicas)
}

// replicaTargets is how many live replicas each version of svc should
// have: min_replicas for the active versions and a rollout's target. In a
// rolling update each READY new replica retires one old one.
func replicaTargets(st *State, svc *protocol.Service, reps []*protocol.Replica) map[int]int {
	targets := map[int]int{}
	minOf := func(vn int) int {
		if v := st.Version(svc.Name, vn); v != nil {
			return minReplicas(v)
		}
		return 0
	}
	failed := func(vn int) bool {
		v := st.Version(svc.Name, vn)
		return v == nil || v.State == protocol.VersionFailed
	}
	ready := func(vn int) int {
		n := 0
		for _, r := range reps {
			if r.Version == vn && r.Status == protocol.ReplicaReady {
				n++
			}
		}
		return n
	}
	for _, vn := range svc.ActiveVersions {
		if !failed(vn) {
			targets[vn] = minOf(vn)
		}
	}
	if ro := svc.Rollout; ro != nil {
		targets[ro.To] = minOf(ro.To)
		if ro.Mode == protocol.UpdateRolling {
			for _, vn := range ro.From {
				if !failed(vn) {
					targets[vn] = max(0, minOf(vn)-ready(ro.To))
				}
			}
		}
	}
	// A failed version still routed to (a rolling update that failed)
	// keeps as many READY replicas as the healthy versions still lack.
	want, have := 0, 0
	for vn, t := range targets {
		if t > 0 {
			want = max(want, minOf(vn))
		}
		have += ready(vn)
	}
	for _, vn := range svc.ActiveVersions {
		if failed(vn) {
			targets[vn] = max(0, want-have)
		}
	}
	return targets
}

// makeRoom lets a rolling update go on in a full cluster: when the new
// version's replica is PENDING for lack of room, it retires one old READY
// replica whose agent would then fit it, as long as another replica stays
// READY and no other retirement is under way (at most one unavailable).
func (c *controller) makeRoom(st *State, svc *protocol.Service, reps []*protocol.Replica, to int) (ReplicaUpdate, bool) {
	ready := 0
	var old []*protocol.Replica
	for _, r := range reps {
		switch {
		case r.Status == protocol.ReplicaShuttingDown:
			return ReplicaUpdate{}, false // room is being made already
		case r.Version == to && !r.Status.IsTerminal() && r.Status != protocol.ReplicaReady && r.Status != protocol.ReplicaPending:
			return ReplicaUpdate{}, false // the new replica is starting: it found room
		case r.Status == protocol.ReplicaReady:
			ready++
			if r.Version != to {
				old = append(old, r)
			}
		}
	}
	if ready < 2 || len(old) == 0 {
		return ReplicaUpdate{}, false
	}
	res := st.Version(svc.Name, to).Spec.Resources
	sort.Slice(old, func(i, j int) bool { return old[i].ID > old[j].ID })
	for _, r := range old {
		without := st.Clone()
		delete(without.Replicas, r.Key())
		if !newPlacer(without).fitsOn(r.AgentID, res) {
			continue
		}
		return ReplicaUpdate{Service: svc.Name, ID: r.ID, From: protocol.ReplicaReady, Status: protocol.ReplicaShuttingDown,
			Reason: fmt.Sprintf("making room for version %d (rolling update)", to), IfRolloutTo: to}, true
	}
	return ReplicaUpdate{}, false
}

// surplus picks n live replicas of version to retire: those not READY
// first, then the newest.
func surplus(reps []*protocol.Replica, version, n int, ro *protocol.Rollout) []ReplicaUpdate {
	var live []*protocol.Replica
	for _, r := range reps {
		if r.Version == version && !r.Status.IsTerminal() {
			live = append(live, r)
		}
	}
	sort.Slice(live, func(i, j int) bool {
		ri, rj := live[i].Status == protocol.ReplicaReady, live[j].Status == protocol.ReplicaReady
		if ri != rj {
			return !ri
		}
		return live[i].ID > live[j].ID
	})
	reason, ifRollout := "no longer needed", 0
	if ro != nil && ro.Mode == protocol.UpdateRolling && version != ro.To {
		reason, ifRollout = fmt.Sprintf("replaced by version %d (rolling update)", ro.To), ro.To
	}
	var out []ReplicaUpdate
	for _, r := range live[:min(n, len(live))] {
		out = append(out, ReplicaUpdate{Service: r.Service, ID: r.ID, From: r.Status,
			Status: protocol.ReplicaShuttingDown, Reason: reason, IfRolloutTo: ifRollout})
	}
	return out
}

func (c *controller) maxFailures(minReplicas int) int {
	n := c.cfg.MaxConsecutiveFailures * minReplicas
	if n < c.cfg.MaxConsecutiveFailures {
		n = c.cfg.MaxConsecutiveFailures
	}
	return n
}

// backoff is the wait before replacing a replica after streak failures in
// a row: RestartBackoff doubling up to MaxRestartBackoff.
func (c *controller) backoff(streak int) time.Duration {
	d := c.cfg.RestartBackoff
	for i := 1; i < streak && d < c.cfg.MaxRestartBackoff; i++ {
		d *= 2
	}
	if d > c.cfg.MaxRestartBackoff {
		d = c.cfg.MaxRestartBackoff
	}
	return d
}

// wakeAt asks for a reconcile at t at the latest (a backoff or a drain
// ending between ticks). Only the run goroutine calls it.
func (c *controller) wakeAt(t time.Time) {
	if c.wake.IsZero() || t.Before(c.wake) {
		c.wake = t
	}
}

// failedOn lists the agents where replicas of version failed: a
// replacement goes elsewhere when it can (the fault may be the machine's).
func failedOn(reps []*protocol.Replica, version int) map[string]bool {
	out := map[string]bool{}
	for _, r := range reps {
		if r.Version == version && r.Status.IsFailed() && r.AgentID != "" {
			out[r.AgentID] = true
		}
	}
	return out
}

// maxFailedKept bounds how many FAILED replicas a service keeps for
// display; older ones are forgotten first.
const maxFailedKept = 10

// expiredFailures returns the FAILED replicas to forget: those older than
// ttl, and all but the newest maxFailedKept.
func expiredFailures(reps []*protocol.Replica, now time.Time, ttl time.Duration) []string {
	var failed []*protocol.Replica
	for _, r := range reps {
		if r.Status.IsFailed() {
			failed = append(failed, r)
		}
	}
	sort.Slice(failed, func(i, j int) bool { return failed[i].ID > failed[j].ID })
	var out []string
	for i, r := range failed {
		if i >= maxFailedKept || now.Sub(r.StatusAt) > ttl {
			out = append(out, r.Key())
		}
	}
	return out
}

func sortedKeys(m map[int]int) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}
