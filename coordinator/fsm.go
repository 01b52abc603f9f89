package coordinator

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/baton-dev/baton/protocol"
)

// maxLBPort bounds LB port allocation.
const maxLBPort = 65535

// FSM is baton's Raft state machine. Apply is deterministic: every time it
// needs comes from the command (stamped by the leader), never the clock.
//
// mu guards state; readers take State() copies and never hold the lock.
type FSM struct {
	mu    sync.RWMutex
	state *State
	// onApply, if set, is called after each applied command, outside the
	// lock, with whether the command was rejected (the FSM's error), so
	// the leader can react to changes promptly.
	onApply func(index uint64, t CommandType, rejected bool)
	// pending are the current command's changes to the index (see
	// flushIndex); guarded by mu.
	pending indexChanges
	// gen counts the changes of state (guarded by mu); copy is the copy
	// State last made, at copyGen (guarded by copyMu).
	gen     uint64
	copyMu  sync.Mutex
	copy    *State
	copyGen uint64
	// sinceSnapshot counts the command bytes applied since the last
	// snapshot, so that a log of few but large entries is compacted too.
	sinceSnapshot atomic.Int64
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM with empty state.
func NewFSM() *FSM { return &FSM{state: NewState()} }

// Index is the Raft index of the last command applied.
func (f *FSM) Index() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Index
}

// BytesSinceSnapshot is how many command bytes were applied since the last
// snapshot (or start).
func (f *FSM) BytesSinceSnapshot() int64 { return f.sinceSnapshot.Load() }

// State returns a copy of the current state, indexed (see State.Clone).
// The copy is shared by every caller until the next command: it must not
// be modified.
func (f *FSM) State() *State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.copyMu.Lock()
	defer f.copyMu.Unlock()
	if f.copy == nil || f.copyGen != f.gen {
		f.copy, f.copyGen = f.state.Clone(), f.gen
	}
	return f.copy
}

// Read calls fn with the live state under the read lock. fn must not keep
// references or modify anything.
func (f *FSM) Read(fn func(*State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// Apply applies one committed log entry. It returns nil, a result value, or
// an error for a rejected command. An undecodable entry panics: a corrupt
// log must not diverge silently.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		return nil
	}
	t := CommandType(l.Data[0])
	buf := l.Data[1:]
	f.sinceSnapshot.Add(int64(len(l.Data)))
	apply := f.prepare(t, buf, l.Index)
	f.mu.Lock()
	res := apply()
	f.flushIndex()
	f.state.Index = l.Index
	f.gen++
	f.mu.Unlock()
	if f.onApply != nil {
		_, rejected := res.(error)
		f.onApply(l.Index, t, rejected)
	}
	return res
}

// prepare decodes a command (and does whatever else needs no state) and
// returns the function that applies it. Apply calls it before taking the
// lock, so readers wait only for the change itself, not for decoding.
func (f *FSM) prepare(t CommandType, buf []byte, index uint64) func() any {
	switch t {
	case CmdCreateService:
		var cmd CreateServiceCmd
		decode(buf, &cmd)
		cmd.specDigest = specDigest(&cmd.Spec)
		return func() any { return f.applyCreateService(&cmd) }
	case CmdAddVersion:
		var cmd AddVersionCmd
		decode(buf, &cmd)
		cmd.specDigest = specDigest(&cmd.Spec)
		return func() any { return f.applyAddVersion(&cmd) }
	case CmdDeleteService:
		var cmd DeleteServiceCmd
		decode(buf, &cmd)
		return func() any { return f.applyDeleteService(&cmd) }
	case CmdRemoveService:
		var cmd RemoveServiceCmd
		decode(buf, &cmd)
		return func() any { return f.applyRemoveService(&cmd) }
	case CmdAddReplicas:
		var cmd AddReplicasCmd
		decode(buf, &cmd)
		return func() any { return f.applyAddReplicas(&cmd) }
	case CmdUpdateReplicas:
		var cmd UpdateReplicasCmd
		decode(buf, &cmd)
		return func() any { return f.applyUpdateReplicas(&cmd) }
	case CmdDeleteReplicas:
		var cmd DeleteReplicasCmd
		decode(buf, &cmd)
		return func() any { return f.applyDeleteReplicas(&cmd) }
	case CmdFlip:
		var cmd FlipCmd
		decode(buf, &cmd)
		return func() any { return f.applyFlip(&cmd) }
	case CmdFailVersion:
		var cmd FailVersionCmd
		decode(buf, &cmd)
		return func() any { return f.applyFailVersion(&cmd) }
	case CmdUpsertAgent:
		var cmd UpsertAgentCmd
		decode(buf, &cmd)
		return func() any { return f.applyUpsertAgent(&cmd) }
	case CmdUpsertAgents:
		var cmd UpsertAgentsCmd
		decode(buf, &cmd)
		return func() any { return f.applyUpsertAgents(&cmd) }
	case CmdSetAgentAlive:
		var cmd SetAgentAliveCmd
		decode(buf, &cmd)
		return func() any { return f.applySetAgentAlive(&cmd) }
	case CmdSetAgentsAlive:
		var cmd SetAgentsAliveCmd
		decode(buf, &cmd)
		return func() any { return f.applySetAgentsAlive(&cmd) }
	case CmdRemoveAgent:
		var cmd RemoveAgentCmd
		decode(buf, &cmd)
		return func() any { return f.applyRemoveAgent(&cmd) }
	case CmdACLBootstrap:
		var cmd ACLBootstrapCmd
		decode(buf, &cmd)
		return func() any { return f.applyACLBootstrap(&cmd) }
	case CmdACLTokenCreate:
		var cmd ACLTokenCreateCmd
		decode(buf, &cmd)
		return func() any { return f.applyACLTokenCreate(&cmd) }
	case CmdACLTokenRevoke:
		var cmd ACLTokenRevokeCmd
		decode(buf, &cmd)
		return func() any { return f.applyACLTokenRevoke(&cmd) }
	case CmdBundleAdd:
		var cmd BundleAddCmd
		decode(buf, &cmd)
		return func() any { return f.applyBundleAdd(&cmd) }
	case CmdBundleDelete:
		var cmd BundleDeleteCmd
		decode(buf, &cmd)
		return func() any { return f.applyBundleDelete(&cmd) }
	}
	panic(fmt.Sprintf("fsm: unknown command type %d at index %d", byte(t), index))
}

func decode(buf []byte, v any) {
	if err := json.Unmarshal(buf, v); err != nil {
		panic(fmt.Sprintf("fsm: undecodable %T: %v", v, err))
	}
}

func (f *FSM) applyCreateService(cmd *CreateServiceCmd) any {
	s := f.state
	if svc, ok := s.Services[cmd.Name]; ok {
		if svc.Deleting {
			return fmt.Errorf("%w: %q", ErrServiceDeleting, cmd.Name)
		}
		return fmt.Errorf("%w: %q", ErrServiceExists, cmd.Name)
	}
	if err := f.checkBundle(&cmd.Spec); err != nil {
		return err
	}
	used := map[int]bool{}
	for _, svc := range s.Services {
		used[svc.Port] = true
	}
	port := cmd.FirstPort
	for used[port] {
		port++
	}
	if port > maxLBPort {
		return ErrNoPortsLeft
	}
	svc := &protocol.Service{
		Name:           cmd.Name,
		Port:           port,
		LatestVersion:  1,
		ActiveVersions: []int{1},
		CreatedAt:      cmd.At,
		NextReplicaID:  1,
	}
	s.Services[cmd.Name] = svc
	s.Versions[cmd.Name] = map[int]*protocol.Version{1: {
		Service:    cmd.Name,
		Number:     1,
		Spec:       cmd.Spec,
		SpecDigest: cmd.specDigest,
		YAML:       cmd.YAML,
		State:      protocol.VersionActive,
		CreatedAt:  cmd.At,
	}}
	return cloneService(svc)
}

func (f *FSM) applyAddVersion(cmd *AddVersionCmd) any {
	s := f.state
	svc, ok := s.Services[cmd.Service]
	if !ok {
		return fmt.Errorf("%w: %q", ErrServiceNotFound, cmd.Service)
	}
	if svc.Deleting {
		return fmt.Errorf("%w: %q", ErrServiceDeleting, cmd.Service)
	}
	if err := f.checkBundle(&cmd.Spec); err != nil {
		return err
	}
	next := svc.LatestVersion + 1
	if svc.Rollout != nil {
		f.failVersion(svc, svc.Rollout.To, fmt.Sprintf("superseded by version %d", next), cmd.At)
	}
	svc.LatestVersion = next
	f.pruneVersions(cmd.Service)
	s.Versions[cmd.Service][next] = &protocol.Version{
		Service:    cmd.Service,
		Number:     next,
		Spec:       cmd.Spec,
		SpecDigest: cmd.specDigest,
		YAML:       cmd.YAML,
		State:      protocol.VersionPending,
		CreatedAt:  cmd.At,
	}
	window := time.Duration(cmd.ProgressSeconds) * time.Second
	from := append([]int(nil), svc.ActiveVersions...)
	if cmd.Mode == protocol.UpdateRolling {
		// Rolling: the new version's READY replicas are routed to beside
		// the old ones from the start.
		svc.ActiveVersions = append(svc.ActiveVersions, next)
	}
	svc.Rollout = &protocol.Rollout{
		Mode:            cmd.Mode,
		From:            from,
		To:              next,
		StartedAt:       cmd.At,
		Deadline:        cmd.At.Add(window),
		ProgressSeconds: cmd.ProgressSeconds,
	}
	return cloneService(svc)
}

// failVersion marks a version failed and shuts its live replicas down. It
// ends the rollout if the version was its target.
func (f *FSM) failVersion(svc *protocol.Service, version int, reason string, at time.Time) {
	v := f.state.Version(svc.Name, version)
	if v == nil {
		return
	}
	v.State = protocol.VersionFailed
	v.Reason = reason
	// A rolling update's READY new replicas may be carrying traffic for the
	// old replicas they retired: they keep serving (the version stays
	// active, failed) and retire one by one as the old version's replicas
	// come back. Everything else of the version stops now.
	keepReady := svc.Rollout != nil && svc.Rollout.To == version && svc.Rollout.Mode == protocol.UpdateRolling
	for k, r := range f.state.Replicas {
		if r.Service == svc.Name && r.Version == version && !(keepReady && r.Status == protocol.ReplicaReady) {
			f.shutDown(k, "version "+fmt.Sprint(version)+" "+reason, at)
		}
	}
	if svc.Rollout != nil && svc.Rollout.To == version {
		svc.Rollout = nil
	}
	f.dropIdleFailedVersions(svc)
}

// dropIdleFailedVersionsOf runs dropIdleFailedVersions for each named
// service, in name order (Apply must not depend on map order).
func (f *FSM) dropIdleFailedVersionsOf(services map[string]bool) {
	for _, name := range sortedKeysOf(services) {
		if svc := f.state.Services[name]; svc != nil {
			f.dropIdleFailedVersions(svc)
		}
	}
}

// dropIdleFailedVersions takes failed versions with no live replica out of
// the active set.
func (f *FSM) dropIdleFailedVersions(svc *protocol.Service) {
	anyFailed := false
	for _, vn := range svc.ActiveVersions {
		if v := f.state.Version(svc.Name, vn); v != nil && v.State == protocol.VersionFailed {
			anyFailed = true
		}
	}
	if !anyFailed {
		return // nothing to drop: spare the scan of every replica
	}
	live := map[int]bool{}
	for _, r := range f.state.Replicas {
		if r.Service == svc.Name && !r.Status.IsTerminal() {
			live[r.Version] = true
		}
	}
	kept := svc.ActiveVersions[:0]
	for _, vn := range svc.ActiveVersions {
		if v := f.state.Version(svc.Name, vn); v != nil && v.State == protocol.VersionFailed && !live[vn] {
			continue
		}
		kept = append(kept, vn)
	}
	svc.ActiveVersions = kept
}

// keepOldVersions is how many retired or failed versions a service keeps
// (for status and history); older ones with no replicas left are dropped.
const keepOldVersions = 10

// pruneVersions drops the oldest retired or failed versions beyond
// keepOldVersions that no replica refers to any more.
func (f *FSM) pruneVersions(service string) {
	versions := f.state.Versions[service]
	inUse := map[int]bool{}
	for _, r := range f.state.Replicas {
		if r.Service == service {
			inUse[r.Version] = true
		}
	}
	var old []int
	for n, v := range versions {
		if v.State == protocol.VersionRetired || v.State == protocol.VersionFailed {
			old = append(old, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(old)))
	for i, n := range old {
		if i >= keepOldVersions && !inUse[n] {
			delete(versions, n)
		}
	}
}

// editReplica returns the replica stored under key for editing: a copy
// that replaces the stored one. Copies of the state handed out before
// share replica structs with it (State.Clone), so a stored replica is
// never changed in place. The key must exist, and the edit must not
// change what the index sorts by (service, id, agent): for that, edit a
// copy and putReplica it.
func (f *FSM) editReplica(key string) *protocol.Replica {
	c := *f.state.Replicas[key]
	f.putReplica(key, &c)
	return &c
}

// shutDown moves a live replica to SHUTTING_DOWN. Failed replicas keep
// their state: they are already stopped.
func (f *FSM) shutDown(key string, reason string, at time.Time) {
	if f.state.Replicas[key].Status.IsTerminal() {
		return
	}
	r := f.editReplica(key)
	r.Status = protocol.ReplicaShuttingDown
	r.Reason = reason
	r.StatusAt = at
}

func (f *FSM) applyDeleteService(cmd *DeleteServiceCmd) any {
	svc, ok := f.state.Services[cmd.Service]
	if !ok {
		return fmt.Errorf("%w: %q", ErrServiceNotFound, cmd.Service)
	}
	svc.Deleting = true
	svc.Rollout = nil
	svc.ActiveVersions = nil
	for k, r := range f.state.Replicas {
		if r.Service == cmd.Service {
			f.shutDown(k, "service is shutting down", cmd.At)
		}
	}
	return cloneService(svc)
}

func (f *FSM) applyRemoveService(cmd *RemoveServiceCmd) any {
	s := f.state
	if _, ok := s.Services[cmd.Service]; !ok {
		return fmt.Errorf("%w: %q", ErrServiceNotFound, cmd.Service)
	}
	delete(s.Services, cmd.Service)
	delete(s.Versions, cmd.Service)
	for k, r := range s.Replicas {
		if r.Service == cmd.Service {
			f.deleteReplica(k)
		}
	}
	return nil
}

func (f *FSM) applyAddReplicas(cmd *AddReplicasCmd) any {
	var added []int
	for _, r := range cmd.Replicas {
		svc, ok := f.state.Services[r.Service]
		if !ok || svc.Deleting {
			continue
		}
		// Only versions still wanted get replicas: the leader may have
		// planned this one before the version failed or was replaced.
		v := f.state.Version(r.Service, r.Version)
		wanted := v != nil && v.State != protocol.VersionFailed && v.State != protocol.VersionRetired &&
			(svc.IsActive(r.Version) || (svc.Rollout != nil && svc.Rollout.To == r.Version))
		if !wanted {
			continue
		}
		r.ID = svc.NextReplicaID
		svc.NextReplicaID++
		r.LaunchedAt = cmd.At
		r.StatusAt = cmd.At
		rc := r
		f.putReplica(rc.Key(), &rc)
		added = append(added, rc.ID)
	}
	return added
}

func (f *FSM) applyUpdateReplicas(cmd *UpdateReplicasCmd) any {
	touched := map[string]bool{}
	for _, u := range cmd.Updates {
		key := protocol.ReplicaKey(u.Service, u.ID)
		r, ok := f.state.Replicas[key]
		if !ok || (u.From != "" && r.Status != u.From) {
			continue // deleted or changed meanwhile; the leader will look again
		}
		if svc := f.state.Services[r.Service]; u.IfRolloutTo != 0 && (svc == nil || svc.Rollout == nil || svc.Rollout.To != u.IfRolloutTo) {
			continue // planned for a rollout that has ended
		}
		// An edited copy, stored (and indexed) once its agent is known.
		edited := *r
		r = &edited
		if u.AgentID != "" {
			r.AgentID = u.AgentID
			r.Resources = u.Resources
			r.LaunchedAt = cmd.At
		}
		if u.Port > 0 {
			r.Resources.Port = u.Port
		}
		if u.Endpoint != "" {
			r.Endpoint = u.Endpoint
		}
		if r.Status != u.Status {
			r.StatusAt = cmd.At
		}
		r.Reason = u.Reason
		v := f.state.Version(r.Service, r.Version)
		if u.Status == protocol.ReplicaReady && r.Status != protocol.ReplicaReady {
			svc := f.state.Services[r.Service]
			if svc != nil && svc.Rollout != nil && svc.Rollout.To == r.Version {
				svc.Rollout.Deadline = cmd.At.Add(time.Duration(svc.Rollout.ProgressSeconds) * time.Second)
			}
			r.EverReady = true
			if v != nil {
				v.Failures = 0
			}
		}
		if u.Status.IsFailed() && !r.Status.IsFailed() && !r.EverReady && v != nil {
			v.Failures++
			v.LastFailureAt = cmd.At
		}
		r.Status = u.Status
		f.putReplica(key, r)
		touched[r.Service] = true
	}
	f.dropIdleFailedVersionsOf(touched)
	return nil
}

func (f *FSM) applyDeleteReplicas(cmd *DeleteReplicasCmd) any {
	for _, k := range cmd.Keys {
		f.deleteReplica(k)
	}
	return nil
}

// rollingOutTo returns the service if it is rolling out to version; a flip
// or failure planned for a rollout that has since ended is rejected.
func (f *FSM) rollingOutTo(service string, version int) (*protocol.Service, error) {
	svc, ok := f.state.Services[service]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrServiceNotFound, service)
	}
	if svc.Rollout == nil || svc.Rollout.To != version {
		return nil, fmt.Errorf("%w: %q is not rolling out to version %d", ErrRolloutChanged, service, version)
	}
	return svc, nil
}

func (f *FSM) applyFlip(cmd *FlipCmd) any {
	svc, err := f.rollingOutTo(cmd.Service, cmd.To)
	if err != nil {
		return err
	}
	for _, old := range svc.ActiveVersions {
		// A failed version still active (a failed rolling update's READY
		// replicas) keeps saying it failed.
		if v := f.state.Version(cmd.Service, old); v != nil && old != cmd.To && v.State != protocol.VersionFailed {
			v.State = protocol.VersionRetired
		}
	}
	f.state.Version(cmd.Service, cmd.To).State = protocol.VersionActive
	svc.ActiveVersions = []int{cmd.To}
	svc.Rollout = nil
	for k, r := range f.state.Replicas {
		if r.Service == cmd.Service && r.Version != cmd.To {
			f.shutDown(k, fmt.Sprintf("replaced by version %d", cmd.To), cmd.At)
		}
	}
	return cloneService(svc)
}

func (f *FSM) applyFailVersion(cmd *FailVersionCmd) any {
	svc, err := f.rollingOutTo(cmd.Service, cmd.Version)
	if err != nil {
		return err
	}
	f.failVersion(svc, cmd.Version, cmd.Reason, cmd.At)
	return nil
}

func (f *FSM) applyUpsertAgent(cmd *UpsertAgentCmd) any {
	f.upsertAgent(cmd.Agent, cmd.At)
	return nil
}

func (f *FSM) applyUpsertAgents(cmd *UpsertAgentsCmd) any {
	for _, a := range cmd.Agents {
		f.upsertAgent(a, cmd.At)
	}
	return nil
}

// upsertAgent stores an agent whole: the state's agents are replaced,
// never edited in place, except for their liveness (see State.Clone).
func (f *FSM) upsertAgent(a protocol.Agent, at time.Time) {
	a.Alive = true
	a.LastSeen = at
	f.state.Agents[a.ID] = &a
}

func (f *FSM) applySetAgentAlive(cmd *SetAgentAliveCmd) any {
	if _, ok := f.state.Agents[cmd.ID]; !ok {
		return fmt.Errorf("agent %q not found", cmd.ID)
	}
	f.setAgentsAlive([]AgentAliveChange{{ID: cmd.ID, Alive: cmd.Alive, Reason: cmd.Reason}}, cmd.At)
	return nil
}

func (f *FSM) applySetAgentsAlive(cmd *SetAgentsAliveCmd) any {
	f.setAgentsAlive(cmd.Changes, cmd.At)
	return nil
}

// setAgentsAlive marks agents alive or lost; unknown ids are skipped. A
// lost agent's replicas become FAILED (SHUTTING_DOWN ones are gone with
// it), in one scan of the replicas however many agents were lost.
func (f *FSM) setAgentsAlive(changes []AgentAliveChange, at time.Time) {
	lost := map[string]string{} // agent id -> reason
	for _, ch := range changes {
		a, ok := f.state.Agents[ch.ID]
		if !ok {
			continue
		}
		a.Alive = ch.Alive
		a.LastSeen = at
		if !ch.Alive {
			lost[ch.ID] = ch.Reason
		}
	}
	if len(lost) == 0 {
		return
	}
	touched := map[string]bool{}
	for k, r := range f.state.Replicas {
		reason, ok := lost[r.AgentID]
		if !ok {
			continue
		}
		touched[r.Service] = true
		switch {
		case r.Status == protocol.ReplicaShuttingDown:
			f.deleteReplica(k) // its process went with the agent
		case !r.Status.IsFailed():
			r = f.editReplica(k)
			r.Status = protocol.ReplicaFailed
			r.Reason = reason
			r.StatusAt = at
		}
	}
	f.dropIdleFailedVersionsOf(touched)
}

func (f *FSM) applyRemoveAgent(cmd *RemoveAgentCmd) any {
	a, ok := f.state.Agents[cmd.ID]
	if !ok {
		return fmt.Errorf("agent %q not found", cmd.ID)
	}
	if a.Alive {
		return fmt.Errorf("agent %q is alive", cmd.ID)
	}
	for _, r := range f.state.Replicas {
		if r.AgentID == cmd.ID && !r.Status.IsFailed() {
			return fmt.Errorf("agent %q still holds replica %s", cmd.ID, r.Key())
		}
	}
	delete(f.state.Agents, cmd.ID)
	return nil
}

// specDigest is a spec's digest as desired sets name it.
func specDigest(spec *protocol.TaskSpec) string {
	_, d, err := protocol.EncodeSpec(spec)
	if err != nil {
		panic("fsm: encode spec: " + err.Error()) // a decoded spec always encodes
	}
	return d
}

// cloneService copies a service so a command's result shares nothing with
// the state the FSM keeps changing.
func cloneService(svc *protocol.Service) protocol.Service {
	c := *svc
	c.ActiveVersions = append([]int(nil), svc.ActiveVersions...)
	if svc.Rollout != nil {
		ro := *svc.Rollout
		ro.From = append([]int(nil), svc.Rollout.From...)
		c.Rollout = &ro
	}
	return c
}

// sortedKeysOf returns a set's keys in order, so Apply's effects never
// depend on map iteration order.
func sortedKeysOf(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sortedInts returns a sorted copy.
func sortedInts(in []int) []int {
	out := append([]int(nil), in...)
	sort.Ints(out)
	return out
}
