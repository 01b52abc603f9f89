package coordinator

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/baton-dev/baton/protocol"
)

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
