package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/baton-dev/baton/protocol"
)

// applyCmd feeds one command through the FSM as Raft would.
func applyCmd(t *testing.T, f *FSM, index uint64, typ CommandType, cmd any) any {
	t.Helper()
	buf, err := encodeCommand(typ, cmd)
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: buf})
}

func testSpec(replicas int) protocol.TaskSpec {
	return protocol.TaskSpec{
		Run: "true",
		Service: protocol.ServiceSpec{
			ReadinessProbe: protocol.ReadinessProbe{Path: "/", InitialDelaySeconds: 10, TimeoutSeconds: 1},
			ReplicaPolicy:  protocol.ReplicaPolicy{MinReplicas: replicas, MaxReplicas: replicas},
		},
		Resources: protocol.Resources{CPUs: protocol.Quantity{Value: 2, AtLeast: true}},
	}
}

func TestFSMServiceLifecycle(t *testing.T) {
	f := NewFSM()
	t0 := time.Unix(1000, 0).UTC()
	idx := uint64(0)
	next := func() uint64 { idx++; return idx }

	res := applyCmd(t, f, next(), CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(2), FirstPort: 30001, At: t0})
	svc, ok := res.(protocol.Service)
	if !ok || svc.Port != 30001 || svc.LatestVersion != 1 || len(svc.ActiveVersions) != 1 {
		t.Fatalf("create: got %#v", res)
	}
	if err, _ := applyCmd(t, f, next(), CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(1), FirstPort: 30001, At: t0}).(error); !errors.Is(err, ErrServiceExists) {
		t.Fatalf("duplicate create: want ErrServiceExists, got %v", err)
	}
	res = applyCmd(t, f, next(), CmdCreateService, CreateServiceCmd{Name: "api", Spec: testSpec(1), FirstPort: 30001, At: t0})
	if p := res.(protocol.Service).Port; p != 30002 {
		t.Fatalf("second service port = %d, want 30002", p)
	}

	added := applyCmd(t, f, next(), CmdAddReplicas, AddReplicasCmd{At: t0, Replicas: []protocol.Replica{
		{Service: "web", Version: 1, Status: protocol.ReplicaProvisioning, AgentID: "a1"},
		{Service: "web", Version: 1, Status: protocol.ReplicaProvisioning, AgentID: "a2"},
	}}).([]int)
	if len(added) != 2 || added[0] != 1 || added[1] != 2 {
		t.Fatalf("replica ids = %v, want [1 2]", added)
	}
	applyCmd(t, f, next(), CmdUpdateReplicas, UpdateReplicasCmd{At: t0, Updates: []ReplicaUpdate{
		{Service: "web", ID: 1, From: protocol.ReplicaProvisioning, Status: protocol.ReplicaReady, Endpoint: "127.0.0.1:9001"},
		{Service: "web", ID: 2, From: protocol.ReplicaProvisioning, Status: protocol.ReplicaReady, Endpoint: "127.0.0.1:9002"},
	}})

	t1 := t0.Add(time.Minute)
	res = applyCmd(t, f, next(), CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(2), Mode: protocol.UpdateBlueGreen, ProgressSeconds: 60, At: t1})
	if v := res.(protocol.Service); v.LatestVersion != 2 || v.Rollout == nil || v.Rollout.To != 2 || !v.Rollout.Deadline.Equal(t1.Add(time.Minute)) {
		t.Fatalf("add version: %#v", v)
	}
	added = applyCmd(t, f, next(), CmdAddReplicas, AddReplicasCmd{At: t1, Replicas: []protocol.Replica{
		{Service: "web", Version: 2, Status: protocol.ReplicaProvisioning, AgentID: "a3"},
		{Service: "web", Version: 2, Status: protocol.ReplicaProvisioning, AgentID: "a4"},
	}}).([]int)
	if added[0] != 3 || added[1] != 4 {
		t.Fatalf("v2 replica ids = %v, want [3 4]", added)
	}
	// A READY new replica pushes the deadline out.
	t2 := t1.Add(30 * time.Second)
	applyCmd(t, f, next(), CmdUpdateReplicas, UpdateReplicasCmd{At: t2, Updates: []ReplicaUpdate{{Service: "web", ID: 3, From: protocol.ReplicaProvisioning, Status: protocol.ReplicaReady, Endpoint: "127.0.0.1:9003"}}})
	if d := f.State().Services["web"].Rollout.Deadline; !d.Equal(t2.Add(time.Minute)) {
		t.Fatalf("deadline = %v, want %v", d, t2.Add(time.Minute))
	}
	// A flip to a version that is not the rollout target is rejected.
	if err, _ := applyCmd(t, f, next(), CmdFlip, FlipCmd{Service: "web", To: 1, At: t2}).(error); !errors.Is(err, ErrRolloutChanged) {
		t.Fatalf("bad flip: want ErrRolloutChanged, got %v", err)
	}
	applyCmd(t, f, next(), CmdFlip, FlipCmd{Service: "web", To: 2, At: t2})
	st := f.State()
	if got := st.Services["web"].ActiveVersions; len(got) != 1 || got[0] != 2 || st.Services["web"].Rollout != nil {
		t.Fatalf("after flip: active %v rollout %v", got, st.Services["web"].Rollout)
	}
	if st.Version("web", 1).State != protocol.VersionRetired || st.Version("web", 2).State != protocol.VersionActive {
		t.Fatalf("version states: v1 %s v2 %s", st.Version("web", 1).State, st.Version("web", 2).State)
	}
	for id, want := range map[int]protocol.ReplicaStatus{1: protocol.ReplicaShuttingDown, 2: protocol.ReplicaShuttingDown, 3: protocol.ReplicaReady, 4: protocol.ReplicaProvisioning} {
		if got := st.Replicas[protocol.ReplicaKey("web", id)].Status; got != want {
			t.Errorf("replica %d: %s, want %s", id, got, want)
		}
	}
	applyCmd(t, f, next(), CmdDeleteReplicas, DeleteReplicasCmd{Keys: []string{"web/1", "web/2"}})
	applyCmd(t, f, next(), CmdDeleteService, DeleteServiceCmd{Service: "web", At: t2})
	if s := f.State().Services["web"]; !s.Deleting || len(s.ActiveVersions) != 0 {
		t.Fatalf("delete: %#v", s)
	}
	if err, _ := applyCmd(t, f, next(), CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(1), At: t2}).(error); !errors.Is(err, ErrServiceDeleting) {
		t.Fatalf("update while deleting: want ErrServiceDeleting, got %v", err)
	}
	applyCmd(t, f, next(), CmdRemoveService, RemoveServiceCmd{Service: "web"})
	st = f.State()
	if _, ok := st.Services["web"]; ok || len(st.ServiceReplicas("web")) != 0 {
		t.Fatal("service still present after remove")
	}
	if st.Index != idx {
		t.Fatalf("index = %d, want %d", st.Index, idx)
	}
}

func TestFSMSupersededRolloutAndAgentLoss(t *testing.T) {
	f := NewFSM()
	t0 := time.Unix(1000, 0).UTC()
	applyCmd(t, f, 1, CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(1), FirstPort: 30001, At: t0})
	applyCmd(t, f, 2, CmdUpsertAgent, UpsertAgentCmd{Agent: protocol.Agent{ID: "a1"}, At: t0})
	applyCmd(t, f, 3, CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(1), ProgressSeconds: 60, At: t0})
	applyCmd(t, f, 4, CmdAddReplicas, AddReplicasCmd{At: t0, Replicas: []protocol.Replica{
		{Service: "web", Version: 1, Status: protocol.ReplicaReady, AgentID: "a1"},
		{Service: "web", Version: 2, Status: protocol.ReplicaStarting, AgentID: "a1"},
	}})
	applyCmd(t, f, 5, CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(1), ProgressSeconds: 60, At: t0})
	st := f.State()
	if v := st.Version("web", 2); v.State != protocol.VersionFailed {
		t.Fatalf("superseded version state = %s", v.State)
	}
	if r := st.Replicas["web/2"]; r.Status != protocol.ReplicaShuttingDown {
		t.Fatalf("superseded replica = %s", r.Status)
	}
	if ro := st.Services["web"].Rollout; ro == nil || ro.To != 3 || len(ro.From) != 1 || ro.From[0] != 1 {
		t.Fatalf("rollout = %#v", ro)
	}
	applyCmd(t, f, 6, CmdSetAgentAlive, SetAgentAliveCmd{ID: "a1", Alive: false, Reason: "agent a1 lost", At: t0})
	st = f.State()
	if r := st.Replicas["web/1"]; r.Status != protocol.ReplicaFailed || r.Reason != "agent a1 lost" {
		t.Fatalf("replica on lost agent: %s %q", r.Status, r.Reason)
	}
	if _, ok := st.Replicas["web/2"]; ok {
		t.Fatal("shutting-down replica on a lost agent should be forgotten")
	}
}

// TestFSMStaleUpdateDoesNotReviveReplica: the leader computes updates from
// a copy of the state; one that lands after `serve down` (or a flip) moved
// the replica to SHUTTING_DOWN must not bring it back.
func TestFSMStaleUpdateDoesNotReviveReplica(t *testing.T) {
	f := NewFSM()
	t0 := time.Unix(1000, 0).UTC()
	applyCmd(t, f, 1, CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(1), FirstPort: 30001, At: t0})
	applyCmd(t, f, 2, CmdAddReplicas, AddReplicasCmd{At: t0, Replicas: []protocol.Replica{
		{Service: "web", Version: 1, Status: protocol.ReplicaStarting, AgentID: "a1"},
		{Service: "web", Version: 1, Status: protocol.ReplicaPending},
	}})
	applyCmd(t, f, 3, CmdDeleteService, DeleteServiceCmd{Service: "web", At: t0})
	applyCmd(t, f, 4, CmdUpdateReplicas, UpdateReplicasCmd{At: t0, Updates: []ReplicaUpdate{
		{Service: "web", ID: 1, From: protocol.ReplicaStarting, Status: protocol.ReplicaReady, Endpoint: "127.0.0.1:9001"},
		{Service: "web", ID: 2, From: protocol.ReplicaPending, Status: protocol.ReplicaProvisioning, AgentID: "a1"},
	}})
	st := f.State()
	for _, id := range []int{1, 2} {
		if r := st.Replicas[protocol.ReplicaKey("web", id)]; r.Status != protocol.ReplicaShuttingDown {
			t.Errorf("replica %d is %s after a stale update, want SHUTTING_DOWN", id, r.Status)
		}
	}
	if err, _ := applyCmd(t, f, 5, CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(1), FirstPort: 30001, At: t0}).(error); !errors.Is(err, ErrServiceDeleting) {
		t.Fatalf("up while shutting down: want ErrServiceDeleting, got %v", err)
	}
}

// TestFSMFailureStreak: failures before READY count per version; a READY
// replica resets the count; a replica that failed after being READY does
// not count.
func TestFSMFailureStreak(t *testing.T) {
	f := NewFSM()
	t0 := time.Unix(1000, 0).UTC()
	applyCmd(t, f, 1, CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(3), FirstPort: 30001, At: t0})
	applyCmd(t, f, 2, CmdAddReplicas, AddReplicasCmd{At: t0, Replicas: []protocol.Replica{
		{Service: "web", Version: 1, Status: protocol.ReplicaStarting, AgentID: "a"},
		{Service: "web", Version: 1, Status: protocol.ReplicaStarting, AgentID: "a"},
		{Service: "web", Version: 1, Status: protocol.ReplicaStarting, AgentID: "a"},
	}})
	upd := func(idx uint64, at time.Time, id int, from, to protocol.ReplicaStatus) {
		applyCmd(t, f, idx, CmdUpdateReplicas, UpdateReplicasCmd{At: at, Updates: []ReplicaUpdate{{Service: "web", ID: id, From: from, Status: to}}})
	}
	t1 := t0.Add(time.Second)
	upd(3, t0, 1, protocol.ReplicaStarting, protocol.ReplicaFailed)
	upd(4, t1, 2, protocol.ReplicaStarting, protocol.ReplicaFailedInitialDelay)
	if v := f.State().Version("web", 1); v.Failures != 2 || !v.LastFailureAt.Equal(t1) {
		t.Fatalf("failures %d at %v, want 2 at %v", v.Failures, v.LastFailureAt, t1)
	}
	upd(5, t1, 3, protocol.ReplicaStarting, protocol.ReplicaReady)
	if v := f.State().Version("web", 1); v.Failures != 0 {
		t.Fatalf("a READY replica must reset the streak, got %d", v.Failures)
	}
	upd(6, t1, 3, protocol.ReplicaReady, protocol.ReplicaFailed)
	if v := f.State().Version("web", 1); v.Failures != 0 {
		t.Fatalf("a replica that failed after READY must not count, got %d", v.Failures)
	}
}

func TestFSMSnapshotRestore(t *testing.T) {
	f := NewFSM()
	t0 := time.Unix(1000, 0).UTC()
	applyCmd(t, f, 1, CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(2), YAML: "run: true\n", FirstPort: 30001, At: t0})
	applyCmd(t, f, 2, CmdAddReplicas, AddReplicasCmd{At: t0, Replicas: []protocol.Replica{{Service: "web", Version: 1, Status: protocol.ReplicaPending, Reason: "no agent"}}})
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	a, b := f.State(), g.State()
	if a.Index != b.Index || b.Services["web"].Port != 30001 || b.Replicas["web/1"].Reason != "no agent" || b.Version("web", 1).YAML != "run: true\n" {
		t.Fatalf("restored state differs: %#v", b)
	}
}

func TestFSMPanicsOnUnknownCommand(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("unknown command type did not panic")
		}
	}()
	NewFSM().Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{250, '{', '}'}})
}

type memSink struct{ bytes.Buffer }

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }

func TestFSMPrunesOldVersions(t *testing.T) {
	f := NewFSM()
	t0 := time.Unix(1000, 0).UTC()
	applyCmd(t, f, 1, CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(1), FirstPort: 30001, At: t0})
	// Version 2 keeps a replica, so it must survive pruning.
	applyCmd(t, f, 2, CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(1), ProgressSeconds: 60, At: t0})
	applyCmd(t, f, 3, CmdAddReplicas, AddReplicasCmd{At: t0, Replicas: []protocol.Replica{{Service: "web", Version: 2, Status: protocol.ReplicaStarting, AgentID: "a"}}})
	for i := uint64(0); i < 20; i++ {
		applyCmd(t, f, 4+i, CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(1), ProgressSeconds: 60, At: t0})
	}
	vs := f.State().Versions["web"]
	// active v1, pending v22, v2 (in use), and the newest 10 failed (v12..v21).
	if len(vs) != 13 || vs[1] == nil || vs[2] == nil || vs[22] == nil || vs[12] == nil || vs[11] != nil {
		keys := []int{}
		for k := range vs {
			keys = append(keys, k)
		}
		t.Fatalf("versions kept: %v", sortedInts(keys))
	}
}

// TestFSMIgnoresPlansForVersionsNoLongerWanted: replicas planned for a
// version that failed meanwhile are not added, and a retirement planned for
// a rollout that has ended is dropped.
func TestFSMIgnoresPlansForVersionsNoLongerWanted(t *testing.T) {
	f := NewFSM()
	t0 := time.Unix(1000, 0).UTC()
	applyCmd(t, f, 1, CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(1), FirstPort: 30001, At: t0})
	applyCmd(t, f, 2, CmdAddReplicas, AddReplicasCmd{At: t0, Replicas: []protocol.Replica{{Service: "web", Version: 1, Status: protocol.ReplicaReady, AgentID: "a"}}})
	applyCmd(t, f, 3, CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(1), Mode: protocol.UpdateRolling, ProgressSeconds: 60, At: t0})
	applyCmd(t, f, 4, CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(1), Mode: protocol.UpdateBlueGreen, ProgressSeconds: 60, At: t0})
	if added := applyCmd(t, f, 5, CmdAddReplicas, AddReplicasCmd{At: t0, Replicas: []protocol.Replica{{Service: "web", Version: 2, Status: protocol.ReplicaPending}}}).([]int); len(added) != 0 {
		t.Fatalf("a replica of the superseded version 2 was added: %v", added)
	}
	applyCmd(t, f, 6, CmdUpdateReplicas, UpdateReplicasCmd{At: t0, Updates: []ReplicaUpdate{
		{Service: "web", ID: 1, From: protocol.ReplicaReady, Status: protocol.ReplicaShuttingDown, IfRolloutTo: 2},
	}})
	if r := f.State().Replicas["web/1"]; r.Status != protocol.ReplicaReady {
		t.Fatalf("retirement for the ended rollout to v2 was applied: %s", r.Status)
	}
	if got := f.State().Services["web"].ActiveVersions; fmt.Sprint(got) != "[1]" {
		t.Fatalf("active versions %v, want [1] (failed v2 had no live replica)", got)
	}
}

// TestFSMFailedRollingVersionKeepsReadyReplicas: a rolling version that
// fails keeps its READY replicas routed until they are retired, then
// leaves the active set.
func TestFSMFailedRollingVersionKeepsReadyReplicas(t *testing.T) {
	f := NewFSM()
	t0 := time.Unix(1000, 0).UTC()
	applyCmd(t, f, 1, CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(2), FirstPort: 30001, At: t0})
	applyCmd(t, f, 2, CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(2), Mode: protocol.UpdateRolling, ProgressSeconds: 60, At: t0})
	applyCmd(t, f, 3, CmdAddReplicas, AddReplicasCmd{At: t0, Replicas: []protocol.Replica{
		{Service: "web", Version: 2, Status: protocol.ReplicaReady, AgentID: "a"},
		{Service: "web", Version: 2, Status: protocol.ReplicaStarting, AgentID: "a"},
	}})
	applyCmd(t, f, 4, CmdFailVersion, FailVersionCmd{Service: "web", Version: 2, Reason: "failed", At: t0})
	st := f.State()
	if st.Replicas["web/1"].Status != protocol.ReplicaReady || st.Replicas["web/2"].Status != protocol.ReplicaShuttingDown {
		t.Fatalf("after failing: replica 1 %s, 2 %s; want READY and SHUTTING_DOWN", st.Replicas["web/1"].Status, st.Replicas["web/2"].Status)
	}
	if got := st.Services["web"].ActiveVersions; fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("active %v, want [1 2] while the READY v2 replica serves", got)
	}
	applyCmd(t, f, 5, CmdUpdateReplicas, UpdateReplicasCmd{At: t0, Updates: []ReplicaUpdate{
		{Service: "web", ID: 1, From: protocol.ReplicaReady, Status: protocol.ReplicaShuttingDown},
	}})
	if got := f.State().Services["web"].ActiveVersions; fmt.Sprint(got) != "[1]" {
		t.Fatalf("active %v, want [1] once the failed version has no live replica", got)
	}
}

// TestFSMCopiesNeverChange: a copy of the state taken before commands
// (what a reconcile pass, a status read or a snapshot holds) shows the
// state as it was, though copies share replica structs with the FSM:
// every command that changes a replica, service, version or agent stores
// new values instead of editing shared ones.
func TestFSMCopiesNeverChange(t *testing.T) {
	f := NewFSM()
	t0 := time.Unix(1000, 0).UTC()
	idx := uint64(0)
	next := func() uint64 { idx++; return idx }
	applyCmd(t, f, next(), CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(2), FirstPort: 30001, At: t0})
	applyCmd(t, f, next(), CmdUpsertAgents, UpsertAgentsCmd{At: t0, Agents: []protocol.Agent{
		{ID: "a1", Capacity: protocol.Capacity{CPUs: 8}}, {ID: "a2", Capacity: protocol.Capacity{CPUs: 8}}}})
	applyCmd(t, f, next(), CmdAddReplicas, AddReplicasCmd{At: t0, Replicas: []protocol.Replica{
		{Service: "web", Version: 1, Status: protocol.ReplicaProvisioning, AgentID: "a1"},
		{Service: "web", Version: 1, Status: protocol.ReplicaProvisioning, AgentID: "a2"},
	}})
	before := f.State()
	frozen, err := json.Marshal(before)
	if err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(time.Minute)
	applyCmd(t, f, next(), CmdUpdateReplicas, UpdateReplicasCmd{At: t1, Updates: []ReplicaUpdate{
		{Service: "web", ID: 1, From: protocol.ReplicaProvisioning, Status: protocol.ReplicaReady, Endpoint: "h:1"}}})
	applyCmd(t, f, next(), CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(2), Mode: protocol.UpdateBlueGreen, ProgressSeconds: 60, At: t1})
	applyCmd(t, f, next(), CmdFlip, FlipCmd{Service: "web", To: 2, At: t1})
	applyCmd(t, f, next(), CmdSetAgentsAlive, SetAgentsAliveCmd{At: t1, Changes: []AgentAliveChange{{ID: "a2", Reason: "lost"}}})
	applyCmd(t, f, next(), CmdDeleteService, DeleteServiceCmd{Service: "web", At: t1})
	after, _ := json.Marshal(before)
	if !bytes.Equal(frozen, after) {
		t.Fatalf("a copy changed under later commands:\nbefore %s\nafter  %s", frozen, after)
	}
	if now := f.State(); now.Replicas["web/1"].Status != protocol.ReplicaShuttingDown || now.Agents["a2"].Alive {
		t.Fatalf("the FSM did not change: %+v %+v", now.Replicas["web/1"], now.Agents["a2"])
	}
}

// checkIndex fails unless the FSM's own index of st lists exactly its
// replicas by service (by id) and by agent (by service, id).
func checkIndex(t *testing.T, st *State) {
	t.Helper()
	if st.idx == nil {
		return // built on the first change
	}
	scan := buildIndex(&State{Replicas: st.Replicas, Services: st.Services, Agents: st.Agents})
	same := func(what string, got, want map[string][]*protocol.Replica) {
		if len(got) != len(want) {
			t.Fatalf("index by %s has %d lists, want %d", what, len(got), len(want))
		}
		for k, w := range want {
			if g := got[k]; !slices.Equal(g, w) {
				t.Fatalf("index by %s, %q: %d replicas %v, want %d", what, k, len(g), g, len(w))
			}
		}
	}
	same("service", st.idx.byService, scan.byService)
	same("agent", st.idx.byAgent, scan.byAgent)
}

// TestFSMIndexFollowsEveryChange: the FSM keeps its replicas indexed by
// service and agent through adds, placements, moves, shutdowns, agent
// losses, deletes, removals and a restore, and copies see their own.
func TestFSMIndexFollowsEveryChange(t *testing.T) {
	f := NewFSM()
	t0 := time.Unix(1000, 0).UTC()
	idx := uint64(0)
	step := func(typ CommandType, cmd any) {
		t.Helper()
		idx++
		applyCmd(t, f, idx, typ, cmd)
		checkIndex(t, f.state)
	}
	step(CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(3), FirstPort: 30001, At: t0})
	step(CmdCreateService, CreateServiceCmd{Name: "api", Spec: testSpec(1), FirstPort: 30001, At: t0})
	step(CmdUpsertAgents, UpsertAgentsCmd{At: t0, Agents: []protocol.Agent{{ID: "a1"}, {ID: "a2"}}})
	step(CmdAddReplicas, AddReplicasCmd{At: t0, Replicas: []protocol.Replica{
		{Service: "web", Version: 1, Status: protocol.ReplicaPending},
		{Service: "web", Version: 1, Status: protocol.ReplicaProvisioning, AgentID: "a1"},
		{Service: "web", Version: 1, Status: protocol.ReplicaProvisioning, AgentID: "a2"},
		{Service: "api", Version: 1, Status: protocol.ReplicaProvisioning, AgentID: "a1"},
	}})
	before := f.State()
	step(CmdUpdateReplicas, UpdateReplicasCmd{At: t0, Updates: []ReplicaUpdate{
		{Service: "web", ID: 1, From: protocol.ReplicaPending, Status: protocol.ReplicaProvisioning, AgentID: "a2"},
		{Service: "web", ID: 2, From: protocol.ReplicaProvisioning, Status: protocol.ReplicaReady, Endpoint: "h:1"},
	}})
	if got := before.AgentReplicas("a2"); len(got) != 1 || got[0].ID != 3 {
		t.Fatalf("a copy's index changed: a2 runs %v", got)
	}
	if got := f.State().AgentReplicas("a2"); len(got) != 2 || got[0].ID != 1 || got[1].ID != 3 {
		t.Fatalf("a2 runs %v, want web/1 and web/3", got)
	}
	step(CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(3), Mode: protocol.UpdateBlueGreen, ProgressSeconds: 60, At: t0})
	step(CmdFlip, FlipCmd{Service: "web", To: 2, At: t0})
	step(CmdSetAgentsAlive, SetAgentsAliveCmd{At: t0, Changes: []AgentAliveChange{{ID: "a1", Reason: "lost"}}})
	step(CmdDeleteReplicas, DeleteReplicasCmd{Keys: []string{"web/3", "api/1"}})
	step(CmdDeleteService, DeleteServiceCmd{Service: "web", At: t0})
	step(CmdDeleteReplicas, DeleteReplicasCmd{Keys: []string{"web/1", "web/2"}})
	step(CmdRemoveService, RemoveServiceCmd{Service: "web"})
	if n := len(f.State().ServiceReplicas("web")); n != 0 {
		t.Fatalf("a removed service still lists %d replicas", n)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, g.state)
}
