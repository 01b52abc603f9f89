package coordinator

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// planPolicy is the part of the configuration the service planner uses.
type planPolicy struct {
	// FailedReplicaTTL: how long a FAILED replica stays listed.
	FailedReplicaTTL time.Duration
	// MaxConsecutiveFailures per min_replica fails a rolling-out version.
	MaxConsecutiveFailures int
	// RestartBackoff doubling up to MaxRestartBackoff: the wait before
	// replacing a replica after failures in a row.
	RestartBackoff, MaxRestartBackoff time.Duration
	// MaxAdds bounds the replicas one plan adds.
	MaxAdds int
}

func (c Config) planPolicy() planPolicy {
	return planPolicy{
		FailedReplicaTTL:       c.FailedReplicaTTL,
		MaxConsecutiveFailures: c.MaxConsecutiveFailures,
		RestartBackoff:         c.RestartBackoff,
		MaxRestartBackoff:      c.MaxRestartBackoff,
		MaxAdds:                maxAddsPerPass,
	}
}

// servicePlan is what one service needs now: the commands that close the
// gap between its replicas and its versions' targets. Every update
// carries the status it expects (From), so a plan made from a state that
// has moved on since is dropped by the FSM.
type servicePlan struct {
	// Remove forgets a deleted service that has no replicas left.
	Remove bool
	// Adds are new replicas, placed (PROVISIONING) or PENDING.
	Adds []protocol.Replica
	// Placements place PENDING replicas, give a port to a placed replica
	// without one, or refresh a PENDING replica's reason.
	Placements []ReplicaUpdate
	// Retires shut replicas down (surplus, unwanted versions, room for a
	// rolling update).
	Retires []ReplicaUpdate
	// Deletes forget FAILED replicas past their TTL (or of a deleted service).
	Deletes []string
	// Flip ends a blue_green rollout whose new version is ready.
	Flip *FlipCmd
	// Fail ends a rollout that keeps failing or made no progress in time.
	Fail *FailVersionCmd
	// WakeAt, when set, is when the plan may change with nothing else
	// happening (a backoff ending, a deadline).
	WakeAt time.Time
	// MoreAdds says the plan stopped at MaxAdds: plan again at once.
	MoreAdds bool
}

func (p *servicePlan) wake(t time.Time) {
	if p.WakeAt.IsZero() || t.Before(p.WakeAt) {
		p.WakeAt = t
	}
}

// planService plans one service. It is a pure function of the state, the
// time and the policy: the placer (built from the same state) is the only
// thing it changes, reserving what it places so that the next service
// planned in the same pass sees it taken. maxAdds is how many replicas it
// may still add this pass.
func planService(st *State, svc *protocol.Service, now time.Time, pol planPolicy, p *placer, maxAdds int) servicePlan {
	var plan servicePlan
	name := svc.Name
	reps := st.ServiceReplicas(name)
	if svc.Deleting {
		if len(reps) == 0 {
			plan.Remove = true
			return plan
		}
		for _, r := range reps {
			if r.Status.IsFailed() {
				plan.Deletes = append(plan.Deletes, r.Key())
			}
		}
		return plan
	}
	plan.Deletes = expiredFailures(reps, now, pol.FailedReplicaTTL)
	plan.Placements = planPlacements(st, svc, reps, p)

	targets := replicaTargets(st, svc, reps)
	// Live replicas of a version nobody wants any more (planned just
	// before it failed or was replaced) are retired.
	for _, r := range reps {
		if _, ok := targets[r.Version]; !ok && !r.Status.IsTerminal() {
			plan.Retires = append(plan.Retires, ReplicaUpdate{Service: name, ID: r.ID, From: r.Status,
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
			plan.Retires = append(plan.Retires, surplus(reps, vn, live-want, svc.Rollout)...)
			continue
		}
		if v.State == protocol.VersionFailed {
			continue // a failed version only shrinks
		}
		ro := svc.Rollout
		if ro != nil && ro.Mode == protocol.UpdateRolling && vn != ro.To {
			continue // the old version only shrinks while new replicas replace it
		}
		streak, lastFail := v.Failures, v.LastFailureAt
		rollingOut := ro != nil && ro.To == vn
		if rollingOut && streak >= maxFailures(pol, minReplicas(v)) {
			plan.Fail = &FailVersionCmd{Service: name, Version: vn, At: now,
				Reason: fmt.Sprintf("failed: %d replicas in a row failed before becoming ready", streak)}
			continue
		}
		if rollingOut && ro.Mode == protocol.UpdateRolling {
			// One new replica at a time: the next starts once this one is READY.
			if starting > 0 {
				if u, ok := makeRoom(st, svc, reps, vn, p); ok {
					plan.Retires = append(plan.Retires, u)
				}
				continue
			}
			want = min(want, live+1)
		}
		if live >= want {
			continue
		}
		if retryAt := lastFail.Add(backoff(pol, streak)); streak > 0 && now.Before(retryAt) {
			plan.wake(retryAt)
			continue
		}
		avoid := failedOn(reps, vn)
		for i := live; i < want; i++ {
			if len(plan.Adds) >= maxAdds {
				plan.MoreAdds = true
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
			plan.Adds = append(plan.Adds, r)
		}
	}
	if plan.Fail == nil {
		planRollout(st, svc, reps, now, &plan)
	}
	return plan
}

// planPlacements places replicas still waiting for an agent, and gives a
// port to any placed before placement chose ports. A PENDING replica's
// reason is rewritten only when its gist changes.
func planPlacements(st *State, svc *protocol.Service, reps []*protocol.Replica, p *placer) []ReplicaUpdate {
	var out []ReplicaUpdate
	name := svc.Name
	for _, r := range reps {
		if r.AgentID != "" && !r.Status.IsTerminal() && replicaPort(r) == 0 {
			if a, v := st.Agents[r.AgentID], st.Version(name, r.Version); a != nil && v != nil {
				if port := p.repick(a, v.Spec.Service.Port, 0); port > 0 {
					out = append(out, ReplicaUpdate{Service: name, ID: r.ID, From: r.Status, Status: r.Status,
						Port: port, Endpoint: net.JoinHostPort(a.Host, strconv.Itoa(port)), Reason: r.Reason})
				}
			}
			continue
		}
		if r.Status != protocol.ReplicaPending {
			continue
		}
		v := st.Version(name, r.Version)
		if v == nil {
			continue
		}
		cand, reason, ok := p.place(v.Spec.Resources, v.Spec.Service.Port, failedOn(reps, r.Version))
		switch {
		case ok:
			out = append(out, ReplicaUpdate{Service: name, ID: r.ID, From: protocol.ReplicaPending,
				Status: protocol.ReplicaProvisioning, AgentID: cand.agent.ID, Resources: cand.alloc, Endpoint: cand.endpoint()})
		case !sameReasonGist(reason, r.Reason):
			out = append(out, ReplicaUpdate{Service: name, ID: r.ID, From: protocol.ReplicaPending,
				Status: protocol.ReplicaPending, Reason: reason})
		}
	}
	return out
}

// planRollout flips a blue_green rollout once the new version has
// min_replicas READY, and fails one that made no progress before its
// deadline (the old version keeps serving).
func planRollout(st *State, svc *protocol.Service, reps []*protocol.Replica, now time.Time, plan *servicePlan) {
	ro := svc.Rollout
	if ro == nil || svc.Deleting {
		return
	}
	v := st.Version(svc.Name, ro.To)
	if v == nil {
		return
	}
	ready := 0
	for _, r := range reps {
		if r.Version == ro.To && r.Status == protocol.ReplicaReady {
			ready++
		}
	}
	need := minReplicas(v)
	if ready >= need {
		plan.Flip = &FlipCmd{Service: svc.Name, To: ro.To, At: now}
		return
	}
	if now.After(ro.Deadline) {
		plan.Fail = &FailVersionCmd{Service: svc.Name, Version: ro.To, At: now,
			Reason: fmt.Sprintf("failed: only %d/%d replicas READY after %ds without progress", ready, need, ro.ProgressSeconds)}
		return
	}
	plan.wake(ro.Deadline)
}

// maxAddsPerPass bounds the replicas one reconcile pass adds, so that the
// work, memory and Raft entry of a pass stay bounded whatever a stored
// spec asks for; the rest come on the next passes (the controller plans
// again at once). A full service of the largest size fits in one pass.
const maxAddsPerPass = protocol.MaxReplicas

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
	readyBy := map[int]int{}
	for _, r := range reps {
		if r.Status == protocol.ReplicaReady {
			readyBy[r.Version]++
		}
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
					targets[vn] = max(0, minOf(vn)-readyBy[ro.To])
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
		have += readyBy[vn]
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
func makeRoom(st *State, svc *protocol.Service, reps []*protocol.Replica, to int, p *placer) (ReplicaUpdate, bool) {
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
		if !p.fitsOnFreeing(r.AgentID, res, r.Resources) {
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

// maxFailures is how many failures in a row fail a rolling-out version.
func maxFailures(pol planPolicy, minReplicas int) int {
	return max(pol.MaxConsecutiveFailures*minReplicas, pol.MaxConsecutiveFailures)
}

// backoff is the wait before replacing a replica after streak failures in
// a row: RestartBackoff doubling up to MaxRestartBackoff.
func backoff(pol planPolicy, streak int) time.Duration {
	d := pol.RestartBackoff
	for i := 1; i < streak && d < pol.MaxRestartBackoff; i++ {
		d *= 2
	}
	return min(d, pol.MaxRestartBackoff)
}

// failedOn lists the agents where replicas of version failed: a
// replacement goes elsewhere when it can (the fault may be the machine's).
func failedOn(reps []*protocol.Replica, version int) map[string]bool {
	var out map[string]bool
	for _, r := range reps {
		if r.Version == version && r.Status.IsFailed() && r.AgentID != "" {
			if out == nil {
				out = map[string]bool{}
			}
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
