package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
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
