// Package fleetsim plays a fleet of agents and LB nodes over the real NATS
// protocol, with fake replicas, against one real coordinator process, and
// measures the coordinator: CPU at rest, reconcile pass times, time to
// READY, blue_green flip delay, RSS, restart and failure detection. It is
// how baton reproduces its scale figures (`baton sim`, e2e/fleetsim_test.go).
package fleetsim

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/protocol"
)

// AgentConfig configures the sim agents of a fleet.
type AgentConfig struct {
	// NATSURL is the coordinator's NATS server. Required.
	NATSURL string
	// Heartbeat is the AgentStatus interval. Default 1s.
	Heartbeat time.Duration
	// ReadyDelay is how long a new replica takes to become READY (plus up
	// to 20% jitter). Default 1s.
	ReadyDelay time.Duration
	// ReconnectWait is the pause between NATS reconnection attempts.
	// Default 200ms.
	ReconnectWait time.Duration
}

func (c *AgentConfig) defaults() {
	if c.Heartbeat <= 0 {
		c.Heartbeat = time.Second
	}
	if c.ReadyDelay <= 0 {
		c.ReadyDelay = time.Second
	}
	if c.ReconnectWait <= 0 {
		c.ReconnectWait = 200 * time.Millisecond
	}
}

const (
	// publishCoalesce is how long a state change waits for others before
	// the agent reports them in one AgentStatus.
	publishCoalesce = 20 * time.Millisecond
	// shutdownLinger is how long a removed replica is reported
	// SHUTTING_DOWN before it is forgotten.
	shutdownLinger = 100 * time.Millisecond
	// requestTimeout bounds a spec fetch or a route sync.
	requestTimeout = 2 * time.Second
)

// SpecCache is the digest -> spec cache the agents of a fleet share. A
// digest is fetched once; a failed fetch is forgotten so that the next
// desired set naming it tries again.
type SpecCache struct {
	// mu guards entries.
	mu      sync.Mutex
	entries map[string]*specEntry

	Fetches  atomic.Int64 // requests sent on protocol.SubjectSpecGet
	Failures atomic.Int64 // requests that failed or returned a bad spec
}

type specEntry struct {
	done chan struct{} // closed when spec/err are set
	spec protocol.TaskSpec
	err  error
}

// NewSpecCache returns an empty cache.
func NewSpecCache() *SpecCache { return &SpecCache{entries: map[string]*specEntry{}} }

// get returns the spec for req.Digest, fetching it over nc unless another
// caller has or is fetching it.
func (c *SpecCache) get(ctx context.Context, nc *nats.Conn, agentID string, req protocol.SpecRequest) (protocol.TaskSpec, error) {
	c.mu.Lock()
	e, ok := c.entries[req.Digest]
	if !ok {
		e = &specEntry{done: make(chan struct{})}
		c.entries[req.Digest] = e
	}
	c.mu.Unlock()
	if ok {
		select {
		case <-e.done:
			return e.spec, e.err
		case <-ctx.Done():
			return protocol.TaskSpec{}, ctx.Err()
		}
	}
	c.Fetches.Add(1)
	e.spec, e.err = fetchSpec(ctx, nc, agentID, req)
	if e.err != nil {
		c.Failures.Add(1)
		c.mu.Lock()
		delete(c.entries, req.Digest)
		c.mu.Unlock()
	}
	close(e.done)
	return e.spec, e.err
}

func fetchSpec(ctx context.Context, nc *nats.Conn, agentID string, req protocol.SpecRequest) (protocol.TaskSpec, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return protocol.TaskSpec{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, protocol.SpecGetSubject(agentID), body)
	if err != nil {
		return protocol.TaskSpec{}, fmt.Errorf("fetch spec %s: %w", req.Digest, err)
	}
	return protocol.DecodeSpecReply(msg.Data, req)
}

// simReplica is one fake replica. Its status follows from the clock:
// PROVISIONING until startingAt, STARTING until readyAt, then READY; once
// removed, SHUTTING_DOWN until goneAt.
type simReplica struct {
	asg        protocol.ReplicaAssignment
	startingAt time.Time
	readyAt    time.Time
	removed    bool
	goneAt     time.Time
	reported   protocol.ReplicaStatus // last status computed
}

func (r *simReplica) statusAt(now time.Time) protocol.ReplicaStatus {
	switch {
	case r.removed:
		return protocol.ReplicaShuttingDown
	case now.Before(r.startingAt):
		return protocol.ReplicaProvisioning
	case now.Before(r.readyAt):
		return protocol.ReplicaStarting
	}
	return protocol.ReplicaReady
}

// Agent is one sim agent: its own NATS connection, heartbeats, and fake
// replicas that follow its desired set.
type Agent struct {
	id    string
	cfg   AgentConfig
	fleet *Fleet
	info  protocol.Agent
	nc    *nats.Conn

	poke   chan struct{}
	killed chan struct{}
	kill   sync.Once

	// lastBody is the last status encoded without SentAt and lastSent what
	// was sent for it; only run's goroutine uses them.
	lastBody, lastSent []byte

	// mu guards everything below.
	mu        sync.Mutex
	epoch     uint64
	haveEpoch bool
	replicas  map[string]*simReplica
	dirty     bool // a status changed since the last publish
}

func newAgent(f *Fleet, n int) *Agent {
	id := fmt.Sprintf("sim-%04d", n)
	host := fmt.Sprintf("127.1.%d.%d", n/250, n%250+1)
	gpus := make([]protocol.GPU, 8)
	for i := range gpus {
		gpus[i] = protocol.GPU{Index: i, Name: "NVIDIA H100 80GB HBM3", UUID: fmt.Sprintf("GPU-%s-%d", id, i), MemoryMB: 81559, Healthy: true}
	}
	return &Agent{
		id:    id,
		cfg:   f.cfg,
		fleet: f,
		info: protocol.Agent{
			ID: id, Address: host + ":9100", Host: host, Region: "sim",
			Capacity:  protocol.Capacity{CPUs: 16, MemoryGB: 64, GPUs: gpus},
			NetNS:     "sim:" + id,
			PortRange: protocol.PortRange{Min: 10000, Max: 29999},
		},
		poke:     make(chan struct{}, 1),
		killed:   make(chan struct{}),
		replicas: map[string]*simReplica{},
	}
}

// ID is the agent's id (sim-0001 ...).
func (a *Agent) ID() string { return a.id }

// connect opens the agent's NATS connection and subscribes to its desired
// set; it does not wait for the server.
func (a *Agent) connect(ctx context.Context) error {
	nc, err := nats.Connect(a.cfg.NATSURL,
		nats.Name(a.id),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(a.cfg.ReconnectWait),
		nats.ReconnectJitter(100*time.Millisecond, 0),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(-1),
		nats.NoCallbacksAfterClientClose(),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
	)
	if err != nil {
		return fmt.Errorf("%s: connect: %w", a.id, err)
	}
	a.nc = nc
	_, err = nc.Subscribe(protocol.AgentDesiredSubject(a.id), func(m *nats.Msg) { a.onDesired(ctx, m) })
	if err != nil {
		nc.Close()
		return fmt.Errorf("%s: subscribe: %w", a.id, err)
	}
	return nil
}

// Kill stops the agent's heartbeats and replies and closes its connection,
// as a machine that died would.
func (a *Agent) Kill() {
	a.kill.Do(func() {
		close(a.killed)
		if a.nc != nil {
			a.nc.Close()
		}
	})
}

// Alive reports whether Kill has not been called.
func (a *Agent) Alive() bool {
	select {
	case <-a.killed:
		return false
	default:
		return true
	}
}

func (a *Agent) onDesired(ctx context.Context, m *nats.Msg) {
	if !a.Alive() {
		return
	}
	var d protocol.DesiredReplicas
	err := protocol.DecodeMessage(m.Data, protocol.MaxMessageBytes, &d)
	if err == nil {
		err = d.ResolveSpecs()
	}
	if err == nil {
		err = d.Validate()
	}
	if err == nil && d.AgentID != a.id {
		err = fmt.Errorf("desired set for %q", d.AgentID)
	}
	if err != nil {
		a.fleet.InvalidDesired.Add(1)
		return
	}
	a.fleet.DesiredSets.Add(1)
	// Fetch the specs this set names by digest and the cache lacks.
	if missing := d.Unresolved(); len(missing) > 0 {
		want := map[string]bool{}
		for _, dg := range missing {
			want[dg] = true
		}
		for i := range d.Replicas {
			asg := &d.Replicas[i]
			if asg.SpecResolved() || !want[asg.SpecDigest] {
				continue
			}
			delete(want, asg.SpecDigest)
			spec, err := a.fleet.Specs.get(ctx, a.nc, a.id, protocol.SpecRequest{Service: asg.Service, Version: asg.Version, Digest: asg.SpecDigest})
			if err != nil {
				continue
			}
			for j := range d.Replicas {
				if d.Replicas[j].SpecDigest == asg.SpecDigest {
					d.Replicas[j].SetSpec(spec)
				}
			}
		}
	}
	if a.apply(&d) {
		a.wake()
	}
}

// apply reconciles the fake replicas to d; it reports whether anything
// changed. A set older than the last applied one is ignored. A new
// assignment whose spec could not be fetched is not started (the next set
// tries again).
func (a *Agent) apply(d *protocol.DesiredReplicas) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.haveEpoch && d.Epoch < a.epoch {
		a.fleet.StaleDesired.Add(1)
		return false
	}
	a.epoch, a.haveEpoch = d.Epoch, true
	now := time.Now()
	changed := false
	want := make(map[string]bool, len(d.Replicas))
	for i := range d.Replicas {
		asg := d.Replicas[i]
		key := asg.Key()
		want[key] = true
		if _, ok := a.replicas[key]; ok || asg.Draining || !asg.SpecResolved() {
			continue
		}
		ready := a.cfg.ReadyDelay + time.Duration(rand.Int64N(int64(a.cfg.ReadyDelay)/5+1))
		a.replicas[key] = &simReplica{
			asg:        asg,
			startingAt: now.Add(ready / 5),
			readyAt:    now.Add(ready),
			reported:   protocol.ReplicaProvisioning,
		}
		changed = true
	}
	for key, r := range a.replicas {
		if want[key] || r.removed {
			continue
		}
		r.removed, r.goneAt, r.reported = true, now.Add(shutdownLinger), protocol.ReplicaShuttingDown
		changed = true
	}
	if changed {
		a.dirty = true
	}
	return changed
}

func (a *Agent) wake() {
	select {
	case a.poke <- struct{}{}:
	default:
	}
}

// advance moves every replica to its status at now, forgets the ones gone
// and returns the next time a status changes (zero if none will).
func (a *Agent) advance(now time.Time) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	var next time.Time
	soonest := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for key, r := range a.replicas {
		if r.removed && !now.Before(r.goneAt) {
			delete(a.replicas, key)
			a.dirty = true
			continue
		}
		st := r.statusAt(now)
		if st != r.reported {
			if st == protocol.ReplicaReady {
				a.fleet.recordReady(r.asg.Service, r.asg.Version, now)
			}
			r.reported = st
			a.dirty = true
		}
		soonest(r.startingAt)
		soonest(r.readyAt)
		if r.removed {
			soonest(r.goneAt)
		}
	}
	return next
}

// status builds the AgentStatus to publish, replicas in order, without
// SentAt.
func (a *Agent) status() protocol.AgentStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dirty = false
	st := protocol.AgentStatus{Agent: a.info, Replicas: make([]protocol.ReplicaReport, 0, len(a.replicas))}
	for _, r := range a.replicas {
		st.Replicas = append(st.Replicas, protocol.ReplicaReport{
			Service: r.asg.Service, ReplicaID: r.asg.ReplicaID, Version: r.asg.Version,
			Status: r.reported, Endpoint: fmt.Sprintf("%s:%d", a.info.Host, r.asg.Port),
		})
	}
	slices.SortFunc(st.Replicas, func(x, y protocol.ReplicaReport) int {
		return cmp.Or(cmp.Compare(x.Service, y.Service), cmp.Compare(x.ReplicaID, y.ReplicaID))
	})
	return st
}

// publish sends the agent's status. As the real agent does, a heartbeat
// that repeats the last report is the same bytes (SentAt is when the
// content was first sent), which the leader recognises without decoding.
func (a *Agent) publish(now time.Time) {
	st := a.status()
	body, err := json.Marshal(st)
	if err != nil {
		return
	}
	if !bytes.Equal(body, a.lastBody) {
		st.SentAt = now
		data, err := json.Marshal(st)
		if err != nil {
			return
		}
		a.lastBody, a.lastSent = body, data
	}
	if a.nc.Publish(protocol.AgentStatusSubject(a.id), a.lastSent) != nil {
		a.fleet.PublishErrors.Add(1)
		return
	}
	a.fleet.Heartbeats.Add(1)
}

// run publishes heartbeats (the first at a random point of the first
// interval) and coalesced reports of status changes until ctx ends or the
// agent is killed.
func (a *Agent) run(ctx context.Context) {
	stopped := func(t *time.Timer) {
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
	}
	hb := time.NewTimer(time.Duration(rand.Int64N(int64(a.cfg.Heartbeat))))
	trans := time.NewTimer(time.Hour)
	pub := time.NewTimer(time.Hour)
	defer hb.Stop()
	defer trans.Stop()
	defer pub.Stop()
	pubPending := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.killed:
			return
		case <-hb.C:
			a.advance(time.Now())
			a.publish(time.Now())
			hb.Reset(a.cfg.Heartbeat)
			continue
		case <-pub.C:
			pubPending = false
			a.publish(time.Now())
			continue
		case <-a.poke:
		case <-trans.C:
		}
		now := time.Now()
		next := a.advance(now)
		stopped(trans)
		if !next.IsZero() {
			trans.Reset(next.Sub(now))
		}
		a.mu.Lock()
		dirty := a.dirty
		a.mu.Unlock()
		if dirty && !pubPending {
			pubPending = true
			pub.Reset(publishCoalesce)
		}
	}
}

// Replicas returns the keys (service/id) of the replicas the agent runs
// and does not stop, and whether each is READY.
func (a *Agent) Replicas() map[string]protocol.ReplicaStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]protocol.ReplicaStatus, len(a.replicas))
	for key, r := range a.replicas {
		if !r.removed {
			out[key] = r.reported
		}
	}
	return out
}
