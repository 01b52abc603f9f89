package coordinator

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/protocol"
)

// Route tables and desired sets are compared by a hash of their content
// before anything is encoded: a pass over a quiet fleet computes them,
// finds every hash unchanged, and sends nothing. Each is sent again after
// RepairInterval (spread with jitter, so a fleet's repairs do not all fall
// in one pass) in case a message was lost.

// contentSeed hashes route tables and desired sets; hashes are only ever
// compared within one process.
var contentSeed = maphash.MakeSeed()

// hasher accumulates a content hash.
type hasher struct{ h maphash.Hash }

func newHasher() *hasher {
	h := &hasher{}
	h.h.SetSeed(contentSeed)
	return h
}

func (h *hasher) str(s string) {
	h.int(len(s))
	h.h.WriteString(s)
}

func (h *hasher) int(n int) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(n))
	h.h.Write(b[:])
}

func (h *hasher) bool(v bool) {
	if v {
		h.int(1)
	} else {
		h.int(0)
	}
}

func (h *hasher) sum() uint64 { return h.h.Sum64() }

// publishedTable is the last table sent for a service, with its content
// hash (epoch aside) and when it is due for repair.
type publishedTable struct {
	table    protocol.RouteTable
	hash     uint64
	repairAt time.Time
}

// sentDesired is what was last sent to an agent, and the replicas it was
// computed from (draining: some were shutting down, so the set may change
// with the clock alone).
type sentDesired struct {
	hash     uint64
	sentAt   time.Time
	repairAt time.Time
	reps     []*protocol.Replica
	draining bool
}

// repairAfter is when a message sent at now is re-sent unchanged:
// RepairInterval, give or take a quarter.
func (c *controller) repairAfter(now time.Time) time.Time {
	d := c.cfg.RepairInterval
	jitter := time.Duration(rand.Int64N(int64(d)/2+1)) - d/4
	return now.Add(d + jitter)
}

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
		latest = max(latest, v)
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

// routeShape is what of a service, besides its replicas, shapes its
// route table: the port, the active versions and their policy, deletion.
func routeShape(st *State, svc *protocol.Service) string {
	latest := 0
	for _, v := range svc.ActiveVersions {
		latest = max(latest, v)
	}
	policy, timeout := "", 0
	if v := st.Version(svc.Name, latest); v != nil {
		policy, timeout = v.Spec.Service.LoadBalancingPolicy, v.Spec.Service.ResponseTimeoutSeconds
	}
	return fmt.Sprint(svc.Port, svc.ActiveVersions, svc.Deleting, policy, timeout)
}

// routeHash hashes a table's content, its epoch aside.
func routeHash(t *protocol.RouteTable) uint64 {
	h := newHasher()
	h.str(t.Service)
	h.int(t.Port)
	h.str(t.Policy)
	h.bool(t.Deleted)
	h.int(t.ResponseTimeoutSeconds)
	h.int(len(t.ActiveVersions))
	for _, v := range t.ActiveVersions {
		h.int(v)
	}
	h.int(len(t.Endpoints))
	for _, e := range t.Endpoints {
		h.int(e.ReplicaID)
		h.int(e.Version)
		h.str(e.Address)
	}
	return h.sum()
}

// publishRoutes sends every table whose content changed, and those due
// for repair; a Deleted table for services that are gone; and records the
// epoch from which each shutting-down replica is out of the tables.
func (c *controller) publishRoutes(st *State, now time.Time) {
	// Endpoints on agents that are not alive are left out of every table:
	// when that set changes, every table is computed again.
	var dead []string
	for _, id := range st.AgentIDs() {
		if !st.Agents[id].Alive {
			dead = append(dead, id)
		}
	}
	if d := strings.Join(dead, ","); d != c.deadAgents {
		c.deadAgents = d
		clear(c.routeSeen)
	}
	for _, name := range st.ServiceNames() {
		svc := st.Services[name]
		prev, ok := c.published[name]
		seen := routeSeen{service: routeShape(st, svc), reps: st.ServiceReplicas(name)}
		if last, computed := c.routeSeen[name]; ok && computed && now.Before(prev.repairAt) &&
			last.service == seen.service && slices.Equal(last.reps, seen.reps) {
			continue // computed from the same replicas: the same table
		}
		t := routeTable(st, svc)
		h := routeHash(&t)
		same := ok && prev.hash == h
		if same && now.Before(prev.repairAt) {
			c.routeSeen[name] = seen
			continue
		}
		if same {
			t.Epoch = prev.table.Epoch // a repair re-sends; an unchanged table keeps its epoch
		}
		if c.send(protocol.RoutesSubject(name), t) {
			c.routeSeen[name] = seen
			c.setPublished(name, &publishedTable{table: t, hash: h, repairAt: c.repairAfter(now)})
			if !same {
				c.log.Info("route table published", "service", name, "epoch", t.Epoch,
					"active_versions", t.ActiveVersions, "endpoints", len(t.Endpoints), "deleted", t.Deleted)
			}
		}
	}
	for name, prev := range c.published {
		if _, ok := st.Services[name]; ok {
			continue
		}
		t := protocol.RouteTable{Service: name, Epoch: st.Index, Port: prev.table.Port, Deleted: true, Endpoints: []protocol.Endpoint{}}
		if c.send(protocol.RoutesSubject(name), t) {
			c.setPublished(name, nil)
			delete(c.routeSeen, name)
		}
	}
	st.EachReplica(func(r *protocol.Replica) {
		if r.Status != protocol.ReplicaShuttingDown {
			return
		}
		key := r.Key()
		if _, ok := c.drains[key]; ok {
			return
		}
		// The drain starts from the first published table without it.
		if t, ok := c.published[r.Service]; ok && !listsReplica(t.table, r.ID) {
			c.drains[key] = &drain{epoch: t.table.Epoch, started: now}
		}
	})
	for key := range c.drains {
		if _, ok := st.Replicas[key]; !ok {
			delete(c.drains, key)
		}
	}
}

// setPublished records (or, with nil, forgets) the table last sent for a
// service, and drops the cached route sync reply.
func (c *controller) setPublished(name string, p *publishedTable) {
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	if p == nil {
		delete(c.published, name)
	} else {
		c.published[name] = *p
	}
	c.syncReply = nil
}

func listsReplica(t protocol.RouteTable, id int) bool {
	for _, e := range t.Endpoints {
		if e.ReplicaID == id {
			return true
		}
	}
	return false
}

// onRouteSync answers an LB's request for every table.
func (c *controller) onRouteSync(m *nats.Msg) {
	// A service's reply is the table last published for it, not the live
	// state: a newer table would carry an epoch the leader never published,
	// and its drain decisions, which count from published epochs, would
	// then misread the LB's acks. Only services not yet published get the
	// live table (an LB then ignores a first publish from an older state;
	// the next change is published at a newer index). pubMu is held from
	// before the state is read, so every published table comes from that
	// state or an older one. The encoded reply is kept until a table is
	// published: a fleet of LBs syncing costs one encoding per change.
	c.pubMu.Lock()
	buf := c.syncReply
	if buf == nil {
		var sync protocol.RouteSync
		cacheable := true
		st := c.state()
		for _, name := range st.ServiceNames() {
			p, ok := c.published[name]
			if !ok {
				cacheable = false
				sync.Tables = append(sync.Tables, routeTable(st, st.Services[name]))
				continue
			}
			sync.Tables = append(sync.Tables, p.table)
		}
		var err error
		if buf, err = json.Marshal(sync); err != nil {
			c.pubMu.Unlock()
			c.log.Error("encode route sync", "error", err)
			return
		}
		if cacheable {
			c.syncReply = buf
		}
	}
	c.pubMu.Unlock()
	if !c.replyable(m) {
		return
	}
	if err := m.Respond(buf); err != nil {
		c.log.Warn("route sync reply failed", "error", err)
	}
}

// onClusterIndex answers an agent's or LB's question of how far the
// cluster's Raft log goes (protocol.MaxEpochAhead).
func (c *controller) onClusterIndex(m *nats.Msg) {
	if !c.replyable(m) {
		return
	}
	buf, err := json.Marshal(protocol.ClusterIndex{Index: c.state().Index})
	if err != nil {
		return
	}
	if err := m.Respond(buf); err != nil {
		c.log.Debug("cluster index reply failed", "error", err)
	}
}

func (c *controller) send(subject string, v any) bool {
	buf, err := json.Marshal(v)
	if err != nil {
		c.log.Error("encode message", "subject", subject, "error", err)
		return false
	}
	if err := c.bus.Publish(subject, buf); err != nil {
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
		if c.gossipDown(membership.RoleLB, id, lb.seen) != "" {
			continue // gone: its acks are not waited for
		}
		out = append(out, lb)
	}
	return out
}

func (c *controller) onLBAck(m *nats.Msg) {
	var ack protocol.LBAck
	if !c.decode(m, protocol.MaxStatusBytes, &ack, ack.Validate) {
		return
	}
	if !c.sameSender(m, "baton.lb.", ack.LBID) {
		return
	}
	c.mu.Lock()
	c.lbs[ack.LBID] = lbInfo{epochs: ack.Epochs, draining: ack.Draining, seen: time.Now()}
	c.mu.Unlock()
	c.kickFn()
}

// publishDesired sends each alive agent the replicas it should run when
// the set changed (by hash) or is due for repair. Specs travel by digest:
// a set's size grows with its replicas, not with their specs. A set too
// large for one NATS message is not sent (the agent keeps its last one)
// and says so, loudly.
func (c *controller) publishDesired(st *State, now time.Time) {
	lbs := c.liveLBs(now)
	c.metrics.lbsLive.Set(float64(len(lbs)))
	limit := c.bus.MaxPayload()
	if limit <= 0 || limit > protocol.MaxMessageBytes {
		limit = protocol.MaxMessageBytes
	}
	var asgs []protocol.ReplicaAssignment
	for _, id := range st.AgentIDs() {
		if !st.Agents[id].Alive {
			continue
		}
		reps := st.AgentReplicas(id)
		prev, sent := c.desired[id]
		if sent && now.Before(prev.repairAt) && !prev.draining && slices.Equal(prev.reps, reps) {
			continue // the same replicas as the set last sent
		}
		asgs = asgs[:0]
		draining := false
		h := newHasher()
		for _, r := range reps {
			switch r.Status {
			case protocol.ReplicaProvisioning, protocol.ReplicaStarting, protocol.ReplicaReady, protocol.ReplicaNotReady:
			case protocol.ReplicaShuttingDown:
				draining = true // its drain moves on with the clock and the LBs' acks
				if c.drained(r, lbs, now) {
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
			a := protocol.ReplicaAssignment{
				Service:    r.Service,
				ReplicaID:  r.ID,
				Version:    r.Version,
				Port:       port,
				GPUUUIDs:   r.Resources.GPUUUIDs,
				Draining:   r.Status == protocol.ReplicaShuttingDown,
				SpecDigest: v.SpecDigest,
			}
			h.str(a.Service)
			h.int(a.ReplicaID)
			h.int(a.Version)
			h.int(a.Port)
			h.bool(a.Draining)
			h.str(a.SpecDigest)
			h.int(len(a.GPUUUIDs))
			for _, g := range a.GPUUUIDs {
				h.str(g)
			}
			asgs = append(asgs, a)
		}
		sum := h.sum()
		if sent && prev.hash == sum && now.Before(prev.repairAt) {
			c.desired[id] = sentDesired{hash: sum, sentAt: prev.sentAt, repairAt: prev.repairAt, reps: reps, draining: draining}
			continue
		}
		set := protocol.DesiredReplicas{AgentID: id, Epoch: st.Index, Replicas: asgs}
		if set.Replicas == nil {
			set.Replicas = []protocol.ReplicaAssignment{}
		}
		msg, err := json.Marshal(set)
		if err != nil {
			c.log.Error("encode desired set", "agent_id", id, "error", err)
			continue
		}
		if int64(len(msg)) > limit {
			c.metrics.desiredTooLarge.Inc()
			if ok, _ := c.limiter.Allow("desired-too-large/" + id); ok {
				c.log.Error("desired set too large to send; the agent keeps its last one",
					"agent_id", id, "bytes", len(msg), "limit", limit, "replicas", len(set.Replicas))
			}
			continue
		}
		if err := c.bus.Publish(protocol.AgentDesiredSubject(id), msg); err != nil {
			c.log.Warn("publish failed", "subject", protocol.AgentDesiredSubject(id), "error", err)
			continue
		}
		c.metrics.desiredSent.Inc()
		c.desired[id] = sentDesired{hash: sum, sentAt: now, repairAt: c.repairAfter(now), reps: reps, draining: draining}
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

// recordMetrics refreshes the replica and agent gauges, setting only the
// series whose value changed.
func (c *controller) recordMetrics(st *State) {
	if st == c.metricsOf {
		return // the same copy: nothing changed since
	}
	c.metricsOf = st
	// Set every series before deleting stale ones so that a scrape never
	// sees a half-filled vector, as it could between Reset and Inc.
	counts := make(map[replicaSeriesKey]int, len(c.replicaSeries))
	byStatus := map[protocol.ReplicaStatus]int{}
	for _, name := range st.ServiceNames() {
		clear(byStatus)
		for _, r := range st.ServiceReplicas(name) {
			byStatus[r.Status]++
		}
		for status, n := range byStatus {
			counts[replicaSeriesKey{name, string(status)}] = n
		}
	}
	for k, n := range counts {
		if c.replicaSeries[k] != n {
			c.metrics.replicas.WithLabelValues(k.service, k.status).Set(float64(n))
		}
	}
	for k := range c.replicaSeries {
		if _, ok := counts[k]; !ok {
			c.metrics.replicas.DeleteLabelValues(k.service, k.status)
		}
	}
	c.replicaSeries = counts
	alive := 0
	for _, a := range st.Agents {
		if a.Alive {
			alive++
		}
	}
	c.metrics.agentsAlive.Set(float64(alive))
}
