package coordinator

import (
	"encoding/json"
	"reflect"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// routeTable computes what LBs should serve for svc: the READY replicas of
// its active versions on alive agents. Epoch is the state's Raft index.
func routeTable(st *State, svc *protocol.Service) protocol.RouteTable {
	t := protocol.RouteTable{
		Service:        svc.Name,
		Epoch:          st.Index,
		Port:           svc.Port,
		ActiveVersions: sortedInts(svc.ActiveVersions),
		Endpoints:      []protocol.Endpoint{},
		Deleted:        svc.Deleting,
	}
	if t.Deleted {
		return t
	}
	latest := 0
	for _, v := range svc.ActiveVersions {
		if v > latest {
			latest = v
		}
	}
	if v := st.Version(svc.Name, latest); v != nil {
		t.Policy = v.Spec.Service.LoadBalancingPolicy
		t.ResponseTimeoutSeconds = v.Spec.Service.ResponseTimeoutSeconds
	}
	for _, r := range st.ServiceReplicas(svc.Name) {
		if r.Status != protocol.ReplicaReady || r.Endpoint == "" || !svc.IsActive(r.Version) {
			continue
		}
		if a := st.Agents[r.AgentID]; a == nil || !a.Alive {
			continue
		}
		t.Endpoints = append(t.Endpoints, protocol.Endpoint{ReplicaID: r.ID, Version: r.Version, Address: r.Endpoint})
	}
	return t
}

// sameRoutes compares two tables ignoring their epochs.
func sameRoutes(a, b protocol.RouteTable) bool {
	a.Epoch, b.Epoch = 0, 0
	return reflect.DeepEqual(a, b)
}

// publishRoutes sends every table whose content changed (all of them when
// repair is set), a Deleted table for services that are gone, and records
// the epoch from which each shutting-down replica is out of the tables.
func (c *controller) publishRoutes(st *State, now time.Time, repair bool) {
	for _, name := range st.ServiceNames() {
		t := routeTable(st, st.Services[name])
		prev, ok := c.published[name]
		if ok && sameRoutes(prev, t) && !repair {
			continue
		}
		if ok && sameRoutes(prev, t) {
			t.Epoch = prev.Epoch // repair re-sends; an unchanged table keeps its epoch
		}
		if c.send(protocol.RoutesSubject(name), t) {
			c.pubMu.Lock()
			c.published[name] = t
			c.pubMu.Unlock()
			if !ok || !sameRoutes(prev, t) {
				c.log.Info("route table published", "service", name, "epoch", t.Epoch,
					"active_versions", t.ActiveVersions, "endpoints", len(t.Endpoints), "deleted", t.Deleted)
			}
		}
	}
	for name, prev := range c.published {
		if _, ok := st.Services[name]; ok {
			continue
		}
		t := protocol.RouteTable{Service: name, Epoch: st.Index, Port: prev.Port, Deleted: true, Endpoints: []protocol.Endpoint{}}
		if c.send(protocol.RoutesSubject(name), t) {
			c.pubMu.Lock()
			delete(c.published, name)
			c.pubMu.Unlock()
		}
	}
	for key, r := range st.Replicas {
		if r.Status != protocol.ReplicaShuttingDown {
			continue
		}
		if _, ok := c.drains[key]; ok {
			continue
		}
		// The drain starts from the first published table without it.
		if t, ok := c.published[r.Service]; ok && !listsReplica(t, r.ID) {
			c.drains[key] = &drain{epoch: t.Epoch, started: now}
		}
	}
	for key := range c.drains {
		if _, ok := st.Replicas[key]; !ok {
			delete(c.drains, key)
		}
	}
}

func listsReplica(t protocol.RouteTable, id int) bool {
	for _, e := range t.Endpoints {
		if e.ReplicaID == id {
			return true
		}
	}
	return false
}

func (c *controller) send(subject string, v any) bool {
	buf, err := json.Marshal(v)
	if err != nil {
		c.log.Error("encode message", "subject", subject, "error", err)
		return false
	}
	if err := c.s.nc.Publish(subject, buf); err != nil {
		c.log.Warn("publish failed", "subject", subject, "error", err)
		return false
	}
	return true
}

// liveLBs returns what each LB heard from recently last acknowledged.
func (c *controller) liveLBs(now time.Time) []lbInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []lbInfo
	for id, lb := range c.lbs {
		if now.Sub(lb.seen) > c.cfg.LBLiveness {
			delete(c.lbs, id)
			continue
		}
		out = append(out, lb)
	}
	return out
}

// drained reports whether a shutting-down replica may be stopped: every
// live LB has acknowledged a table without it (bounded by AckTimeout), no
// LB has requests in flight to it any more (bounded by DrainTimeout), and
// DrainDelay has passed since.
func (c *controller) drained(key string, r *protocol.Replica, lbs []lbInfo, now time.Time) bool {
	d := c.drains[key]
	if d == nil {
		return false // not yet out of a published table
	}
	// A new leader first hears from the LBs (they ack the tables it sends
	// on taking over): until then an empty or partial set of acks says
	// nothing about what is in flight.
	if grace := c.leaderSince.Add(c.cfg.AckTimeout); now.Before(grace) {
		c.wakeAt(grace)
		return false
	}
	if d.ackedAt.IsZero() {
		acked := true
		for _, lb := range lbs {
			if lb.epochs[r.Service] < d.epoch {
				acked = false
				break
			}
		}
		if !acked && now.Sub(d.started) <= c.cfg.AckTimeout {
			c.wakeAt(d.started.Add(c.cfg.AckTimeout))
			return false
		}
		if !acked {
			c.log.Warn("drain: not every LB acknowledged the new table in time; going on", "replica", key)
		}
		d.ackedAt = now
	}
	if d.idleAt.IsZero() {
		var inFlight int64
		for _, lb := range lbs {
			inFlight += lb.draining[r.Endpoint]
		}
		if inFlight > 0 && now.Sub(d.ackedAt) <= c.cfg.DrainTimeout {
			c.wakeAt(d.ackedAt.Add(c.cfg.DrainTimeout))
			return false
		}
		if inFlight > 0 {
			c.log.Warn("drain: requests still in flight after the drain timeout; stopping the replica",
				"replica", key, "in_flight", inFlight, "drain_timeout", c.cfg.DrainTimeout.String())
		}
		d.idleAt = now
	}
	if ready := d.idleAt.Add(c.cfg.DrainDelay); now.Before(ready) {
		c.wakeAt(ready)
		return false
	}
	return true
}

// publishDesired sends each alive agent the replicas it should run, when
// the set changed or on repair. A set too large for one NATS message is
// not sent (the agent keeps its last one) and says so, loudly.
func (c *controller) publishDesired(st *State, now time.Time, repair bool) {
	lbs := c.liveLBs(now)
	c.s.metrics.lbsLive.Set(float64(len(lbs)))
	sets := map[string]*protocol.DesiredReplicas{}
	for _, id := range st.AgentIDs() {
		if st.Agents[id].Alive {
			sets[id] = &protocol.DesiredReplicas{AgentID: id, Replicas: []protocol.ReplicaAssignment{}, Specs: map[string]protocol.TaskSpec{}}
		}
	}
	for _, key := range st.ReplicaKeys() {
		r := st.Replicas[key]
		set, ok := sets[r.AgentID]
		if !ok {
			continue
		}
		switch r.Status {
		case protocol.ReplicaProvisioning, protocol.ReplicaStarting, protocol.ReplicaReady, protocol.ReplicaNotReady:
		case protocol.ReplicaShuttingDown:
			if c.drained(key, r, lbs, now) {
				if d := c.drains[key]; d.removedAt.IsZero() {
					d.removedAt = now
				}
				continue
			}
		default:
			continue
		}
		v := st.Version(r.Service, r.Version)
		port := replicaPort(r)
		if v == nil || port == 0 {
			continue // a replica without a port is given one by the next reconcile
		}
		set.Specs[protocol.SpecKey(r.Service, r.Version)] = v.Spec
		set.Replicas = append(set.Replicas, protocol.ReplicaAssignment{
			Service:   r.Service,
			ReplicaID: r.ID,
			Version:   r.Version,
			Port:      port,
			GPUUUIDs:  r.Resources.GPUUUIDs,
			Draining:  r.Status == protocol.ReplicaShuttingDown,
		})
	}
	limit := c.s.nc.MaxPayload()
	if limit <= 0 || limit > protocol.MaxMessageBytes {
		limit = protocol.MaxMessageBytes
	}
	for id, set := range sets {
		body, err := json.Marshal(set)
		if err != nil {
			c.log.Error("encode desired set", "agent_id", id, "error", err)
			continue
		}
		if string(body) == c.sentDesired[id] && !repair {
			continue
		}
		set.Epoch = st.Index
		msg, _ := json.Marshal(set)
		if int64(len(msg)) > limit {
			c.s.metrics.desiredTooLarge.Inc()
			if ok, _ := c.s.badMessages.Allow("desired-too-large/" + id); ok {
				c.log.Error("desired set too large to send; the agent keeps its last one",
					"agent_id", id, "bytes", len(msg), "limit", limit, "replicas", len(set.Replicas), "versions", len(set.Specs))
			}
			continue
		}
		if err := c.s.nc.Publish(protocol.AgentDesiredSubject(id), msg); err != nil {
			c.log.Warn("publish failed", "subject", protocol.AgentDesiredSubject(id), "error", err)
			continue
		}
		c.sentDesired[id] = string(body)
	}
}

// replicaPort is the port a placed replica listens on: the one placement
// gave it, or (for a replica placed before ports were chosen there) its
// endpoint's.
func replicaPort(r *protocol.Replica) int {
	if r.Resources.Port > 0 {
		return r.Resources.Port
	}
	return endpointPort(r.Endpoint)
}

// replicaSeriesKey names one series of the replicas-by-status gauge.
type replicaSeriesKey struct{ service, status string }

// recordMetrics refreshes the replica and agent gauges.
func (c *controller) recordMetrics(st *State) {
	// Set every series before deleting stale ones so that a scrape never
	// sees a half-filled vector, as it could between Reset and Inc.
	counts := map[replicaSeriesKey]int{}
	for _, r := range st.Replicas {
		counts[replicaSeriesKey{r.Service, string(r.Status)}]++
	}
	for k, n := range counts {
		c.s.metrics.replicas.WithLabelValues(k.service, k.status).Set(float64(n))
	}
	for k := range c.replicaSeries {
		if _, ok := counts[k]; !ok {
			c.s.metrics.replicas.DeleteLabelValues(k.service, k.status)
		}
	}
	c.replicaSeries = counts
	alive := 0
	for _, a := range st.Agents {
		if a.Alive {
			alive++
		}
	}
	c.s.metrics.agentsAlive.Set(float64(alive))
}
