package coordinator

import (
	"time"

	"github.com/baton-dev/baton/protocol"
)

// reconcileServices plans every service (planService) and applies the
// plans, batched: one command each for deletes, placements, retirements
// and additions across all services, then each flip and failure on its
// own (each is a decision about one rollout). It reports whether it
// changed anything.
func (c *controller) reconcileServices(st *State, now time.Time) bool {
	p := c.newPlacer(st, now)
	pol := c.cfg.planPolicy()
	var adds []protocol.Replica
	var placements, retires []ReplicaUpdate
	var deletes []string
	var flips []*FlipCmd
	var fails []*FailVersionCmd
	var removes []string
	for _, name := range st.ServiceNames() {
		svc := st.Services[name]
		plan := planService(st, svc, now, pol, p, pol.MaxAdds-len(adds))
		if plan.Remove {
			removes = append(removes, name)
		}
		adds = append(adds, plan.Adds...)
		placements = append(placements, plan.Placements...)
		retires = append(retires, plan.Retires...)
		deletes = append(deletes, plan.Deletes...)
		if plan.Flip != nil {
			flips = append(flips, plan.Flip)
		}
		if plan.Fail != nil {
			fails = append(fails, plan.Fail)
		}
		if !plan.WakeAt.IsZero() {
			c.wakeAt(plan.WakeAt)
		}
		if plan.MoreAdds {
			c.wakeAt(now) // the rest on the next pass
		}
	}
	changed := false
	for _, name := range removes {
		if c.applyCmd(CmdRemoveService, RemoveServiceCmd{Service: name}) {
			changed = true
			c.log.Info("service removed", "service", name)
		}
	}
	if len(deletes) > 0 && c.applyCmd(CmdDeleteReplicas, DeleteReplicasCmd{Keys: deletes}) {
		changed = true
	}
	if len(placements) > 0 && c.applyCmd(CmdUpdateReplicas, UpdateReplicasCmd{Updates: placements, At: now}) {
		changed = true
	}
	if len(retires) > 0 && c.applyCmd(CmdUpdateReplicas, UpdateReplicasCmd{Updates: retires, At: now}) {
		changed = true
		for i, u := range retires {
			if i == 20 {
				c.log.Info("replicas retired", "more", len(retires)-i)
				break
			}
			c.log.Info("replica retired", "service", u.Service, "replica_id", u.ID, "reason", u.Reason)
		}
	}
	if len(adds) > 0 && c.applyCmd(CmdAddReplicas, AddReplicasCmd{Replicas: adds, At: now}) {
		changed = true
		c.logAdds(adds)
	}
	for _, f := range flips {
		if c.applyCmd(CmdFlip, *f) {
			changed = true
			ro := st.Services[f.Service].Rollout
			c.metrics.flips.Inc()
			c.metrics.flipSeconds.Observe(now.Sub(ro.StartedAt).Seconds())
			c.log.Info("flipped traffic", "service", f.Service, "from", ro.From, "to", ro.To,
				"after", now.Sub(ro.StartedAt).String())
		}
	}
	for _, f := range fails {
		if c.applyCmd(CmdFailVersion, *f) {
			changed = true
			c.log.Warn("version failed; old version keeps serving", "service", f.Service, "version", f.Version, "reason", f.Reason)
		}
	}
	return changed
}

// logAdds logs added replicas: one line each for a few, a summary per
// service and status beyond that.
func (c *controller) logAdds(adds []protocol.Replica) {
	if len(adds) <= 10 {
		for _, r := range adds {
			c.log.Info("replica added", "service", r.Service, "version", r.Version,
				"agent_id", r.AgentID, "status", string(r.Status), "reason", r.Reason)
		}
		return
	}
	type key struct {
		service string
		version int
		status  protocol.ReplicaStatus
	}
	counts := map[key]int{}
	var order []key
	for _, r := range adds {
		k := key{r.Service, r.Version, r.Status}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	for _, k := range order {
		c.log.Info("replicas added", "service", k.service, "version", k.version, "status", string(k.status), "count", counts[k])
	}
}
