package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/bus"
	"github.com/baton-dev/baton/internal/logutil"
	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/protocol"
)

// messageBus is the part of the NATS connection the controller uses
// (*bus.Conn).
type messageBus interface {
	Publish(subject string, data []byte) error
	Subscribe(subject string, h nats.MsgHandler) (*bus.Subscription, error)
	Flush(timeout time.Duration) error
	MaxPayload() int64
}

var _ messageBus = (*bus.Conn)(nil)

// controllerDeps are the parts of a coordinator its controller uses, and
// nothing else of it: a controller can be built and driven in a test from
// a plain FSM, an apply function and a NATS connection.
type controllerDeps struct {
	cfg Config
	log *slog.Logger
	// state returns a consistent, indexed copy of the FSM's state.
	state func() *State
	// apply proposes one command through Raft (Server.raftApply).
	apply func(t CommandType, cmd any) (any, uint64, error)
	bus   messageBus
	// decode decodes and validates a received message, counting and
	// logging one that is invalid (Server.decodeMessage).
	decode func(m *nats.Msg, max int, v any, validate func() error) bool
	// sameSender checks that a per-sender subject names the sender the
	// content names, counting and logging a mismatch (Server.sameSender).
	sameSender func(m *nats.Msg, prefix, contentID string) bool
	// replyable checks that a request's reply subject is an inbox
	// (Server.replyable).
	replyable func(m *nats.Msg) bool
	metrics   *metrics
	// kick wakes the loop early (buffered 1); kickFn sends on it.
	kick   <-chan struct{}
	kickFn func()
	// limiter rate-limits repeated warnings.
	limiter *logutil.Limiter
	// gossip, when set, says what the gossip pool knows of a member:
	// the leader learns of failed agents and LBs from it besides their
	// messages. Nil without gossip.
	gossip func(role membership.Role, id string) (membership.Member, bool)
}

// controller is the leader's reconcile loop. All of the state it acts on
// lives in the FSM, so a new leader resumes where the old one stopped; what
// it keeps in memory (reports, acks, drain progress, what it sent) is
// rebuilt from messages within a few seconds.
type controller struct {
	controllerDeps

	// mu guards the fields below it, written by NATS handlers.
	mu sync.Mutex
	// agents is what each agent last reported, and when.
	agents map[string]*agentReport
	// rawStatus maps the hash of an agent's last status message, byte for
	// byte, to the agent: a heartbeat that repeats it is only a sign of
	// life and is not decoded again.
	rawStatus map[uint64]*agentReport
	// agentRaw maps the hash of the agent part of an agent's last status
	// to it, so that an unchanged registration is not decoded again.
	agentRaw map[uint64]*agentReport
	lbs      map[string]lbInfo

	// pubMu guards published and syncReply, also read by route sync
	// replies.
	pubMu     sync.Mutex
	published map[string]publishedTable // last table sent per service
	syncReply []byte                    // encoded reply to a route sync; nil when stale

	// Owned by the run goroutine.
	leaderSince time.Time
	wake        time.Time // reconcile again by then (zero: at the next tick)
	// desired is what was last sent to each agent.
	desired map[string]sentDesired
	// replicaSeries are the replica gauge series set by the last recordMetrics.
	replicaSeries map[replicaSeriesKey]int
	drains        map[string]*drain // replica key -> drain progress
	// busyPorts are ports agents found held by processes baton does not
	// run, per port space, with when that was last reported; placement
	// avoids them for busyPortMemory.
	busyPorts map[string]map[int]time.Time
	// registered is, per agent, the report last found to match what the
	// FSM records of it (alive).
	registered map[string]*agentReport
	// reportSeen is what reconcileReports last looked at for each agent.
	reportSeen map[string]reportSeen
	// routeSeen is what publishRoutes last computed each table from, and
	// deadAgents the agents then not alive.
	routeSeen  map[string]routeSeen
	deadAgents string
	// passPhases are the current pass's phase times (for the slow pass log).
	passPhases []phaseTime
	// metricsOf is the state recordMetrics last counted.
	metricsOf *State
	// bundleUnused is when this leader first saw each committed bundle
	// that no version names (since then); nextBundleGC is when
	// collectBundles looks next.
	bundleUnused map[string]time.Time
	nextBundleGC time.Time
}

// reportSeen is an agent's report and replicas as reconcileReports last
// saw them; recheck says something there waited on the clock.
type reportSeen struct {
	report  *agentReport
	reps    []*protocol.Replica
	recheck bool
}

// routeSeen is what a route table was last computed from.
type routeSeen struct {
	service string // the service's fields that shape its table
	reps    []*protocol.Replica
}

// agentReport is an agent's last status, with its replica reports by key.
type agentReport struct {
	status   *protocol.AgentStatus
	replicas map[string]protocol.ReplicaReport
	at       time.Time // when it was last heard from
	// raw is the whole message and agentRaw its agent part, with their
	// hashes (see onAgentStatus).
	rawHash, agentHash uint64
	raw, agentRaw      []byte
}

// phaseTime is how long one phase of a pass took.
type phaseTime struct {
	Phase string
	Took  time.Duration
}

// slowPass is the pass duration over which a pass's phases are logged
// (at debug level).
const slowPass = 100 * time.Millisecond

// busyPortMemory is how long a port reported busy is avoided.
const busyPortMemory = 5 * time.Minute

type lbInfo struct {
	epochs   map[string]uint64
	draining map[string]int64 // replica address -> requests in flight
	seen     time.Time
}

func newController(d controllerDeps) *controller {
	return &controller{
		controllerDeps: d,
		agents:         map[string]*agentReport{},
		rawStatus:      map[uint64]*agentReport{},
		agentRaw:       map[uint64]*agentReport{},
		lbs:            map[string]lbInfo{},
		published:      map[string]publishedTable{},
		desired:        map[string]sentDesired{},
		drains:         map[string]*drain{},
		busyPorts:      map[string]map[int]time.Time{},
		reportSeen:     map[string]reportSeen{},
		registered:     map[string]*agentReport{},
		routeSeen:      map[string]routeSeen{},
		bundleUnused:   map[string]time.Time{},
	}
}

// Subscriptions the leader's controller holds while it runs.
func (c *controller) subscribe() []*bus.Subscription {
	var subs []*bus.Subscription
	sub := func(subject string, h nats.MsgHandler) {
		sb, err := c.bus.Subscribe(subject, h)
		if err != nil {
			c.log.Error("subscribe failed", "subject", subject, "error", err)
			return
		}
		subs = append(subs, sb)
	}
	sub(protocol.SubjectAgentStatusAll, c.onAgentStatus)
	sub(protocol.SubjectLBAckAll, c.onLBAck)
	sub(protocol.SubjectRoutesSync, c.onRouteSync)
	sub(protocol.SubjectClusterIndex, c.onClusterIndex)
	_ = c.bus.Flush(time.Second)
	return subs
}

func (c *controller) run(ctx context.Context) {
	c.leaderSince = time.Now()
	// Replica counts are the leader's to export; series from an earlier
	// term of this node would otherwise never be deleted.
	c.metrics.replicas.Reset()
	defer c.metrics.replicas.Reset()
	subs := c.subscribe()
	defer func() {
		for _, sb := range subs {
			_ = sb.Unsubscribe()
		}
	}()

	ticker := time.NewTicker(c.cfg.ReconcileInterval)
	defer ticker.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	for {
		c.wake = time.Time{}
		c.reconcileSafely()
		if !c.wake.IsZero() {
			wake.Reset(max(time.Until(c.wake), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-wake.C:
		case <-c.kick:
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
			c.metrics.reconcilePanics.Inc()
			c.log.Error("reconcile pass failed", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	c.reconcile()
}

// reconcile is one pass. Its phases, in order:
//
//  1. read: one consistent copy of the FSM's state, and of what the
//     agents last reported;
//  2. agents: register agents that report, mark silent or leaving ones
//     lost (one command each for the whole fleet);
//  3. reports: fold the agents' replica reports into the FSM (one
//     command), moving replicas off ports found busy;
//  4. plan: plan every service from a fresh copy if phases 2-3 changed
//     anything (planService: placement, targets, rollouts, failures) and
//     apply the plans, batched into a few commands;
//  5. bundles: delete the bundles no version has named for a while
//     (about once a second);
//  6. publish: route tables and desired sets that changed, from the same
//     copy as phase 4 (what phase 4 applied goes out at the start of the
//     next pass, which comes at once), plus a slow repair;
//  7. metrics.
//
// A phase that applied a command kicks another pass at once (the FSM's
// onApply), so a change flows through every phase within two passes.
// Phases 3 and 6 skip the agents and services whose replicas (compared
// by pointer: the FSM stores a new struct for every change) and reports
// are the ones they looked at last, unless something there waits on the
// clock; so a quiet fleet costs little more than a copy of the state.
func (c *controller) reconcile() {
	start := time.Now()
	c.metrics.reconciles.Inc()
	now := start
	phase := c.phaseTimer()

	st := c.state()
	heard := c.reports()
	phase("read")
	changed := c.reconcileAgents(st, heard, now)
	phase("agents")
	changed = c.reconcileReports(st, heard, now) || changed
	phase("reports")
	if changed {
		st = c.state()
		phase("read")
	}
	c.reconcileServices(st, now)
	phase("plan")
	c.collectBundles(st, now)
	phase("bundles")
	c.publishRoutes(st, now)
	phase("routes")
	c.publishDesired(st, now)
	phase("desired")
	c.recordMetrics(st)
	phase("metrics")
	c.metrics.reconcileSeconds.Observe(time.Since(start).Seconds())
	if d := time.Since(start); d > slowPass {
		c.log.Debug("slow reconcile pass", "took", d.String(), "phases", c.passPhases)
	}
}

// phaseTimer returns a function that records the time since its last
// call under a phase name.
func (c *controller) phaseTimer() func(string) {
	last := time.Now()
	c.passPhases = c.passPhases[:0]
	return func(name string) {
		now := time.Now()
		c.metrics.phaseSeconds.WithLabelValues(name).Observe(now.Sub(last).Seconds())
		c.passPhases = append(c.passPhases, phaseTime{name, now.Sub(last)})
		last = now
	}
}

// applyCmd proposes one command and logs a failure. Rejections that mean
// "the world moved on" (ErrRolloutChanged) are expected and quiet.
func (c *controller) applyCmd(t CommandType, cmd any) bool {
	if _, _, err := c.apply(t, cmd); err != nil {
		if errors.Is(err, ErrRolloutChanged) {
			c.log.Debug("command rejected", "type", t.String(), "error", err)
		} else {
			c.log.Warn("command failed", "type", t.String(), "error", err)
		}
		return false
	}
	return true
}

// wakeAt asks for a reconcile at t at the latest (a backoff or a drain
// ending between ticks). Only the run goroutine calls it.
func (c *controller) wakeAt(t time.Time) {
	if c.wake.IsZero() || t.Before(c.wake) {
		c.wake = t
	}
}
