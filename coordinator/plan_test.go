package coordinator

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/logutil"
	"github.com/baton-dev/baton/protocol"
)

// fleet builds states for planner tests: one service "web" with versions
// and replicas, on agents of a few CPUs each.
type fleet struct {
	st  *State
	svc *protocol.Service
	now time.Time
}

var planNow = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func newFleet(agentCPUs ...float64) *fleet {
	f := &fleet{st: NewState(), now: planNow}
	for i, cpus := range agentCPUs {
		a := agentWith(fmt.Sprintf("a%d", i+1), cpus)
		a.Host = fmt.Sprintf("10.0.0.%d", i+1)
		f.st.Agents[a.ID] = a
	}
	f.svc = &protocol.Service{Name: "web", LatestVersion: 1, ActiveVersions: []int{1}, NextReplicaID: 1}
	f.st.Services["web"] = f.svc
	f.st.Versions["web"] = map[int]*protocol.Version{}
	return f
}

// version adds version n asking for min replicas of cpus (at least).
func (f *fleet) version(n, min int, cpus float64, state protocol.VersionState) *protocol.Version {
	v := &protocol.Version{Service: "web", Number: n, State: state, Spec: protocol.TaskSpec{Run: "serve",
		Resources: protocol.Resources{CPUs: protocol.Quantity{Value: cpus, AtLeast: true}},
		Service:   protocol.ServiceSpec{ReplicaPolicy: protocol.ReplicaPolicy{MinReplicas: min, MaxReplicas: min}}}}
	f.st.Versions["web"][n] = v
	f.svc.LatestVersion = max(f.svc.LatestVersion, n)
	return v
}

// rollout starts a rollout from the active versions to version to.
func (f *fleet) rollout(mode string, to int, deadline time.Duration) {
	f.svc.Rollout = &protocol.Rollout{Mode: mode, From: append([]int(nil), f.svc.ActiveVersions...), To: to,
		StartedAt: f.now.Add(-time.Minute), Deadline: f.now.Add(deadline), ProgressSeconds: 600}
	if mode == protocol.UpdateRolling {
		f.svc.ActiveVersions = append(f.svc.ActiveVersions, to)
	}
}

// replica adds a replica of version on agent ("" = unplaced) with status.
func (f *fleet) replica(version int, agent string, status protocol.ReplicaStatus, cpus float64) *protocol.Replica {
	r := &protocol.Replica{Service: "web", ID: f.svc.NextReplicaID, Version: version, AgentID: agent, Status: status,
		LaunchedAt: f.now.Add(-time.Minute), StatusAt: f.now.Add(-time.Minute)}
	f.svc.NextReplicaID++
	if agent != "" {
		port := 20000 + r.ID
		r.Resources = protocol.Allocation{CPUs: cpus, Port: port}
		r.Endpoint = fmt.Sprintf("%s:%d", f.st.Agents[agent].Host, port)
	}
	f.st.Replicas[r.Key()] = r
	return r
}

func (f *fleet) plan() servicePlan {
	st := f.st.Clone()
	pol := DevConfig().planPolicy()
	return planService(st, st.Services["web"], f.now, pol, newPlacer(st), pol.MaxAdds)
}

// summary renders a plan compactly for comparison: adds as
// "+v<version>@<agent|PENDING>", updates as "<id>:<from>-><to>[@agent]",
// deletes as "-<key>", then flip, fail, remove and wake.
func summary(p servicePlan) string {
	var parts []string
	for _, r := range p.Adds {
		where := r.AgentID
		if where == "" {
			where = "PENDING"
		}
		parts = append(parts, fmt.Sprintf("+v%d@%s", r.Version, where))
	}
	for _, u := range append(append([]ReplicaUpdate(nil), p.Placements...), p.Retires...) {
		s := fmt.Sprintf("%d:%s->%s", u.ID, u.From, u.Status)
		if u.AgentID != "" {
			s += "@" + u.AgentID
		}
		if u.IfRolloutTo != 0 {
			s += fmt.Sprintf("(if rollout to %d)", u.IfRolloutTo)
		}
		parts = append(parts, s)
	}
	for _, k := range p.Deletes {
		parts = append(parts, "-"+k)
	}
	if p.Flip != nil {
		parts = append(parts, fmt.Sprintf("flip to %d", p.Flip.To))
	}
	if p.Fail != nil {
		parts = append(parts, fmt.Sprintf("fail %d", p.Fail.Version))
	}
	if p.Remove {
		parts = append(parts, "remove")
	}
	if !p.WakeAt.IsZero() {
		parts = append(parts, "wake +"+p.WakeAt.Sub(planNow).String())
	}
	return strings.Join(parts, " ")
}

func TestPlanService(t *testing.T) {
	ready, starting, pending := protocol.ReplicaReady, protocol.ReplicaStarting, protocol.ReplicaPending
	tests := []struct {
		name  string
		setup func(f *fleet)
		want  string
		check func(t *testing.T, p servicePlan)
	}{
		// Placement.
		{name: "new service: smallest agents that fit first", setup: func(f *fleet) {
			f.version(1, 3, 2, protocol.VersionActive)
		}, want: "+v1@a1 +v1@a2 +v1@a2"},
		{name: "nothing fits: PENDING with a short reason", setup: func(f *fleet) {
			f.version(1, 1, 64, protocol.VersionActive)
		}, want: "+v1@PENDING", check: func(t *testing.T, p servicePlan) {
			if r := p.Adds[0].Reason; !strings.HasPrefix(r, "no agent fits cpus 64+ among 2 alive agents (closest: a2 4/4 cpus free") {
				t.Errorf("reason %q", r)
			}
		}},
		{name: "a PENDING replica is placed once room appears", setup: func(f *fleet) {
			f.version(1, 1, 2, protocol.VersionActive)
			f.replica(1, "", pending, 0).Reason = "no agent fits cpus 2+ among 0 alive agents"
		}, want: "1:PENDING->PROVISIONING@a1"},
		{name: "a PENDING reason reworded only is not rewritten", setup: func(f *fleet) {
			f.version(1, 1, 64, protocol.VersionActive)
			f.replica(1, "", pending, 0).Reason = "no agent fits cpus 64+ among 2 alive agents (closest: a2 1/4 cpus free)"
		}, want: ""},
		{name: "a PENDING reason whose gist changed is rewritten", setup: func(f *fleet) {
			f.version(1, 1, 64, protocol.VersionActive)
			f.replica(1, "", pending, 0).Reason = "no agent fits cpus 64+ among 5 alive agents (closest: a2 1/4 cpus free)"
		}, want: "1:PENDING->PENDING"},
		{name: "placed replicas count against their agents", setup: func(f *fleet) {
			f.version(1, 2, 2, protocol.VersionActive)
			f.replica(1, "a1", ready, 2)
		}, want: "+v1@a2"},
		{name: "surplus: the replica not READY goes first", setup: func(f *fleet) {
			f.version(1, 2, 1, protocol.VersionActive)
			f.replica(1, "a1", ready, 1)
			f.replica(1, "a2", ready, 1)
			f.replica(1, "a2", starting, 1)
		}, want: "3:STARTING->SHUTTING_DOWN"},

		// blue_green.
		{name: "blue_green: new version's replicas start beside the old", setup: func(f *fleet) {
			f.version(1, 2, 1, protocol.VersionActive)
			f.version(2, 2, 1, protocol.VersionPending)
			f.replica(1, "a1", ready, 1)
			f.replica(1, "a1", ready, 1)
			f.rollout(protocol.UpdateBlueGreen, 2, 10*time.Minute)
		}, want: "+v2@a2 +v2@a2 wake +10m0s"},
		{name: "blue_green: no flip before min_replicas are READY", setup: func(f *fleet) {
			f.version(1, 2, 1, protocol.VersionActive)
			f.version(2, 2, 1, protocol.VersionPending)
			f.replica(1, "a1", ready, 1)
			f.replica(1, "a1", ready, 1)
			f.replica(2, "a2", ready, 1)
			f.replica(2, "a2", starting, 1)
			f.rollout(protocol.UpdateBlueGreen, 2, 10*time.Minute)
		}, want: "wake +10m0s"},
		{name: "blue_green: flip once min_replicas are READY", setup: func(f *fleet) {
			f.version(1, 2, 1, protocol.VersionActive)
			f.version(2, 2, 1, protocol.VersionPending)
			f.replica(1, "a1", ready, 1)
			f.replica(1, "a1", ready, 1)
			f.replica(2, "a2", ready, 1)
			f.replica(2, "a2", ready, 1)
			f.rollout(protocol.UpdateBlueGreen, 2, 10*time.Minute)
		}, want: "flip to 2"},
		{name: "blue_green: the old version is kept at min_replicas meanwhile", setup: func(f *fleet) {
			f.version(1, 2, 1, protocol.VersionActive)
			f.version(2, 2, 1, protocol.VersionPending)
			f.replica(1, "a1", ready, 1)
			f.replica(2, "a2", starting, 1)
			f.replica(2, "a2", starting, 1)
			f.rollout(protocol.UpdateBlueGreen, 2, 10*time.Minute)
		}, want: "+v1@a1 wake +10m0s"},

		// rolling.
		{name: "rolling: one new replica at a time", setup: func(f *fleet) {
			f.version(1, 2, 1, protocol.VersionActive)
			f.version(2, 2, 1, protocol.VersionPending)
			f.replica(1, "a1", ready, 1)
			f.replica(1, "a1", ready, 1)
			f.rollout(protocol.UpdateRolling, 2, 10*time.Minute)
		}, want: "+v2@a2 wake +10m0s"},
		{name: "rolling: a new READY replica retires an old one, the next starts", setup: func(f *fleet) {
			f.version(1, 2, 1, protocol.VersionActive)
			f.version(2, 2, 1, protocol.VersionPending)
			f.replica(1, "a1", ready, 1)
			f.replica(1, "a1", ready, 1)
			f.replica(2, "a2", ready, 1)
			f.rollout(protocol.UpdateRolling, 2, 10*time.Minute)
		}, want: "+v2@a2 2:READY->SHUTTING_DOWN(if rollout to 2) wake +10m0s"},
		{name: "rolling: full cluster retires an old replica to make room", setup: func(f *fleet) {
			f.st.Agents["a2"].Alive = false
			f.version(1, 2, 1, protocol.VersionActive)
			f.version(2, 2, 1, protocol.VersionPending)
			f.replica(1, "a1", ready, 1)
			f.replica(1, "a1", ready, 1)
			f.replica(2, "", pending, 0).Reason = "no agent fits cpus 1+ among 1 alive agent"
			f.rollout(protocol.UpdateRolling, 2, 10*time.Minute)
		}, want: "2:READY->SHUTTING_DOWN(if rollout to 2) wake +10m0s", check: func(t *testing.T, p servicePlan) {
			if !strings.Contains(p.Retires[0].Reason, "making room for version 2") {
				t.Errorf("reason %q", p.Retires[0].Reason)
			}
		}},

		// Failure streaks and rollback.
		{name: "failure streak: backoff before the next replacement", setup: func(f *fleet) {
			f.version(1, 1, 1, protocol.VersionActive)
			v := f.version(2, 1, 1, protocol.VersionPending)
			v.Failures, v.LastFailureAt = 2, planNow.Add(-200*time.Millisecond)
			f.replica(1, "a1", ready, 1)
			f.replica(2, "a2", protocol.ReplicaFailed, 1).StatusAt = planNow
			f.rollout(protocol.UpdateBlueGreen, 2, 10*time.Minute)
		}, want: "wake +800ms"},
		{name: "failure streak: after the backoff, replaced away from the agent where it failed", setup: func(f *fleet) {
			f.version(1, 1, 1, protocol.VersionActive)
			v := f.version(2, 1, 1, protocol.VersionPending)
			v.Failures, v.LastFailureAt = 1, planNow.Add(-2*time.Second)
			f.replica(1, "a2", ready, 1)
			f.replica(2, "a1", protocol.ReplicaFailed, 1).StatusAt = planNow
			f.rollout(protocol.UpdateBlueGreen, 2, 10*time.Minute)
		}, want: "+v2@a2 wake +10m0s"},
		{name: "failure streak: too many failures in a row roll back", setup: func(f *fleet) {
			f.version(1, 1, 1, protocol.VersionActive)
			v := f.version(2, 1, 1, protocol.VersionPending)
			v.Failures, v.LastFailureAt = 3, planNow
			f.replica(1, "a1", ready, 1)
			f.rollout(protocol.UpdateBlueGreen, 2, 10*time.Minute)
		}, want: "fail 2", check: func(t *testing.T, p servicePlan) {
			if !strings.Contains(p.Fail.Reason, "3 replicas in a row failed") {
				t.Errorf("reason %q", p.Fail.Reason)
			}
		}},
		{name: "rollback: no progress before the deadline", setup: func(f *fleet) {
			f.version(1, 2, 1, protocol.VersionActive)
			f.version(2, 2, 1, protocol.VersionPending)
			f.replica(1, "a1", ready, 1)
			f.replica(1, "a1", ready, 1)
			f.replica(2, "a2", ready, 1)
			f.replica(2, "a2", starting, 1)
			f.rollout(protocol.UpdateBlueGreen, 2, -time.Second)
		}, want: "fail 2", check: func(t *testing.T, p servicePlan) {
			if !strings.Contains(p.Fail.Reason, "only 1/2 replicas READY") {
				t.Errorf("reason %q", p.Fail.Reason)
			}
		}},
		{name: "a failed version only shrinks", setup: func(f *fleet) {
			f.version(1, 2, 1, protocol.VersionActive)
			f.version(2, 2, 1, protocol.VersionFailed)
			f.replica(1, "a1", ready, 1)
			f.replica(1, "a1", ready, 1)
			f.replica(2, "a2", starting, 1)
		}, want: "3:STARTING->SHUTTING_DOWN"},

		// Housekeeping.
		{name: "FAILED replicas past their TTL are forgotten", setup: func(f *fleet) {
			f.version(1, 1, 1, protocol.VersionActive)
			f.replica(1, "a1", protocol.ReplicaFailed, 1).StatusAt = planNow.Add(-time.Hour)
			f.replica(1, "a1", ready, 1)
		}, want: "-web/1"},
		{name: "a deleted service: failed replicas go, then the service", setup: func(f *fleet) {
			f.version(1, 1, 1, protocol.VersionActive)
			f.svc.Deleting = true
			f.replica(1, "a1", protocol.ReplicaFailed, 1)
			f.replica(1, "a1", protocol.ReplicaShuttingDown, 1)
		}, want: "-web/1"},
		{name: "a deleted service with no replicas is removed", setup: func(f *fleet) {
			f.version(1, 1, 1, protocol.VersionActive)
			f.svc.Deleting = true
		}, want: "remove"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFleet(2, 4)
			tt.setup(f)
			p := f.plan()
			if got := summary(p); got != tt.want {
				t.Errorf("plan:\n got  %q\n want %q", got, tt.want)
			}
			if tt.check != nil && !t.Failed() {
				tt.check(t, p)
			}
			// Planning is pure: the same state and time plan the same.
			if again := summary(f.plan()); again != summary(p) {
				t.Errorf("planning again gave %q", again)
			}
		})
	}
}

func TestDrainStep(t *testing.T) {
	pol := drainPolicy{AckTimeout: 3 * time.Second, DrainTimeout: 30 * time.Second, DrainDelay: 500 * time.Millisecond}
	r := &protocol.Replica{Service: "web", ID: 1, Endpoint: "10.0.0.1:20001"}
	leader := planNow.Add(-time.Hour)
	lb := func(epoch uint64, inFlight int64) lbInfo {
		return lbInfo{epochs: map[string]uint64{"web": epoch}, draining: map[string]int64{"10.0.0.1:20001": inFlight}}
	}
	tests := []struct {
		name        string
		d           *drain
		lbs         []lbInfo
		leaderSince time.Time
		wantDone    bool
		wantWake    time.Duration // from planNow; 0 = none
		wantWarn    string
	}{
		{name: "not yet out of a published table", d: nil, lbs: []lbInfo{lb(5, 0)}},
		{name: "a new leader waits for the LBs' acks first", d: &drain{epoch: 5, started: planNow},
			lbs: []lbInfo{lb(5, 0)}, leaderSince: planNow.Add(-time.Second), wantWake: 2 * time.Second},
		{name: "an LB has not acknowledged the table without it", d: &drain{epoch: 5, started: planNow.Add(-time.Second)},
			lbs: []lbInfo{lb(5, 0), lb(4, 0)}, wantWake: 2 * time.Second},
		{name: "acknowledged by every LB, then the drain delay", d: &drain{epoch: 5, started: planNow.Add(-time.Second)},
			lbs: []lbInfo{lb(5, 0), lb(6, 0)}, wantWake: 500 * time.Millisecond},
		{name: "requests in flight: wait for them", d: &drain{epoch: 5, started: planNow.Add(-time.Second)},
			lbs: []lbInfo{lb(5, 2)}, wantWake: 30 * time.Second},
		{name: "an LB that never acks is waited for AckTimeout only", d: &drain{epoch: 5, started: planNow.Add(-4 * time.Second)},
			lbs: []lbInfo{lb(4, 0)}, wantWake: 500 * time.Millisecond, wantWarn: "not every LB acknowledged"},
		{name: "requests in flight past the drain timeout: stopped anyway",
			d:   &drain{epoch: 5, started: planNow.Add(-time.Minute), ackedAt: planNow.Add(-31 * time.Second)},
			lbs: []lbInfo{lb(5, 1)}, wantWake: 500 * time.Millisecond, wantWarn: "still in flight"},
		{name: "idle and the delay passed: stop it", d: &drain{epoch: 5, started: planNow.Add(-time.Minute),
			ackedAt: planNow.Add(-time.Second), idleAt: planNow.Add(-time.Second)}, lbs: []lbInfo{lb(5, 0)}, wantDone: true},
		{name: "no live LB at all: nothing to wait for but the delay", d: &drain{epoch: 5, started: planNow},
			wantWake: 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			since := tt.leaderSince
			if since.IsZero() {
				since = leader
			}
			v := drainStep(tt.d, r, tt.lbs, planNow, since, pol)
			var wake time.Duration
			if !v.WakeAt.IsZero() {
				wake = v.WakeAt.Sub(planNow)
			}
			if v.Done != tt.wantDone || wake != tt.wantWake || !strings.Contains(v.Warning, tt.wantWarn) || (tt.wantWarn == "" && v.Warning != "") {
				t.Errorf("got done=%v wake=%s warning=%q; want done=%v wake=%s warning containing %q",
					v.Done, wake, v.Warning, tt.wantDone, tt.wantWake, tt.wantWarn)
			}
		})
	}
}

// recordingBus records what is published.
type recordingBus struct {
	discardBus
	subjects []string
}

func (b *recordingBus) Publish(subject string, _ []byte) error {
	b.subjects = append(b.subjects, subject)
	return nil
}

// TestDesiredSetResentToAnAgentThatLostIt: a desired set is sent once and
// then only on change or repair, but an agent that reports none of the
// replicas placed on it a while ago (it restarted, or missed the message)
// gets its set again at once, at most every couple of seconds.
func TestDesiredSetResentToAnAgentThatLostIt(t *testing.T) {
	f := newFleet(4)
	f.version(1, 1, 1, protocol.VersionActive)
	r := f.replica(1, "a1", protocol.ReplicaReady, 1)
	f.svc.ActiveVersions = []int{1}
	fsm := NewFSM()
	fsm.state = f.st
	b := &recordingBus{}
	c := newController(controllerDeps{cfg: DevConfig().withDefaults(), log: slog.New(slog.DiscardHandler), state: fsm.State,
		apply: func(CommandType, any) (any, uint64, error) { return nil, 0, nil }, bus: b,
		metrics: newMetrics(prometheus.NewRegistry()), kickFn: func() {}, limiter: logutil.NewLimiter(time.Minute)})
	now := time.Now()
	c.leaderSince = now.Add(-time.Hour)
	r.LaunchedAt = now.Add(-10 * time.Second)
	report := func(with bool, at time.Time) {
		ar := &agentReport{status: &protocol.AgentStatus{Agent: *f.st.Agents["a1"]}, replicas: map[string]protocol.ReplicaReport{}, at: at}
		if with {
			ar.replicas[r.Key()] = protocol.ReplicaReport{Service: "web", ReplicaID: r.ID, Version: 1, Status: protocol.ReplicaReady, Endpoint: r.Endpoint}
		}
		c.agents["a1"] = ar
	}
	sets := func() int {
		n := 0
		for _, s := range b.subjects {
			if s == protocol.AgentDesiredSubject("a1") {
				n++
			}
		}
		return n
	}
	pass := func(at time.Time) {
		st := fsm.State()
		c.reconcileReports(st, c.reports(), at)
		c.publishDesired(st, at)
	}
	report(true, now)
	pass(now)
	pass(now.Add(time.Second))
	if n := sets(); n != 1 {
		t.Fatalf("%d desired sets sent to an agent that runs its replica, want 1", n)
	}
	// The agent comes back without its replica: the set goes again...
	report(false, now.Add(3*time.Second))
	pass(now.Add(3 * time.Second))
	if n := sets(); n != 2 {
		t.Fatalf("%d desired sets after the agent reported none of its replicas, want 2", n)
	}
	// ...but not on every pass.
	pass(now.Add(3*time.Second + 500*time.Millisecond))
	if n := sets(); n != 2 {
		t.Fatalf("%d desired sets half a second later, want still 2", n)
	}
	pass(now.Add(6 * time.Second))
	if n := sets(); n != 3 {
		t.Fatalf("%d desired sets once %s passed, want 3", n, missingResend)
	}
}

// TestFleetEventsAreFewCommands: a fleet that registers at once, and a
// fleet lost at once, are one Raft command each, not one per agent.
func TestFleetEventsAreFewCommands(t *testing.T) {
	fsm := NewFSM()
	counts := map[CommandType]int{}
	index := uint64(0)
	apply := func(ct CommandType, cmd any) (any, uint64, error) {
		counts[ct]++
		index++
		buf, err := encodeCommand(ct, cmd)
		if err != nil {
			return nil, 0, err
		}
		res := fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: index, Data: buf})
		if err, ok := res.(error); ok {
			return nil, 0, err
		}
		return res, index, nil
	}
	cfg := DevConfig().withDefaults()
	c := newController(controllerDeps{cfg: cfg, log: slog.New(slog.DiscardHandler), state: fsm.State, apply: apply,
		bus: discardBus{}, metrics: newMetrics(prometheus.NewRegistry()), kickFn: func() {}, limiter: logutil.NewLimiter(time.Minute)})
	now := time.Now()
	c.leaderSince = now.Add(-time.Hour)
	const fleet = 500
	for i := range fleet {
		a := protocol.Agent{ID: fmt.Sprintf("agent-%03d", i), Host: "10.0.0.1", Capacity: protocol.Capacity{CPUs: 16}}
		c.agents[a.ID] = &agentReport{status: &protocol.AgentStatus{Agent: a}, replicas: map[string]protocol.ReplicaReport{}, at: now}
	}
	c.reconcileAgents(fsm.State(), c.reports(), now)
	if counts[CmdUpsertAgents] != 1 || counts[CmdUpsertAgent] != 0 || len(fsm.State().Agents) != fleet {
		t.Fatalf("registering %d agents: %v commands, %d agents stored", fleet, counts, len(fsm.State().Agents))
	}
	c.reconcileAgents(fsm.State(), c.reports(), now.Add(time.Second))
	if counts[CmdUpsertAgents] != 1 {
		t.Fatalf("agents registered again though nothing changed: %v", counts)
	}
	later := now.Add(cfg.AgentTimeout + time.Second)
	c.reconcileAgents(fsm.State(), c.reports(), later)
	alive := 0
	for _, a := range fsm.State().Agents {
		if a.Alive {
			alive++
		}
	}
	if counts[CmdSetAgentsAlive] != 1 || counts[CmdSetAgentAlive] != 0 || alive != 0 {
		t.Fatalf("losing %d agents: %v commands, %d still alive", fleet, counts, alive)
	}
}
