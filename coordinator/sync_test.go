package coordinator

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/bus"
	"github.com/baton-dev/baton/internal/logutil"
	"github.com/baton-dev/baton/internal/natsembed"
	"github.com/baton-dev/baton/protocol"
)

// TestRouteSyncRepliesWithPublishedTables: a route sync between a state
// change and the controller's next publish gets the published table. A
// table from the live state would carry an epoch the leader never
// published: if the change is undone before that publish (a replica turns
// READY and is retired in one pass), the leader's tables stay older than
// what the LB holds, the LB ignores them and keeps routing to a replica
// the leader then drains and stops.
func TestRouteSyncRepliesWithPublishedTables(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Config{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s := bareServer(t, ns.ClientURL())
	c := newController(s.controllerDeps())
	if _, err := nc.Subscribe(protocol.SubjectRoutesSync, c.onRouteSync); err != nil {
		t.Fatal(err)
	}
	ap := &fsmApplier{t: t, f: s.fsm}
	apply := ap.apply
	sync := func() protocol.RouteTable {
		t.Helper()
		msg, err := nc.Request(protocol.SubjectRoutesSync, nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var rs protocol.RouteSync
		if err := json.Unmarshal(msg.Data, &rs); err != nil || len(rs.Tables) != 1 {
			t.Fatalf("sync reply %s: %v", msg.Data, err)
		}
		return rs.Tables[0]
	}
	now := time.Now()
	spec := protocol.TaskSpec{Run: "x", Service: protocol.ServiceSpec{ReplicaPolicy: protocol.ReplicaPolicy{MinReplicas: 2, MaxReplicas: 2}}}
	apply(CmdCreateService, CreateServiceCmd{Name: "web", Spec: spec, FirstPort: 30001, At: now})
	apply(CmdUpsertAgent, UpsertAgentCmd{Agent: protocol.Agent{ID: "a1", Host: "h", Capacity: protocol.Capacity{CPUs: 8}}, At: now})
	apply(CmdAddReplicas, AddReplicasCmd{At: now, Replicas: []protocol.Replica{
		{Service: "web", Version: 1, AgentID: "a1", Status: protocol.ReplicaStarting},
		{Service: "web", Version: 1, AgentID: "a1", Status: protocol.ReplicaStarting}}})

	// Never published: the sync gets the live table.
	if got := sync(); len(got.Endpoints) != 0 || got.Epoch != ap.index {
		t.Fatalf("unpublished service: sync gave %+v, want the live table at epoch %d", got, ap.index)
	}
	apply(CmdUpdateReplicas, UpdateReplicasCmd{At: now, Updates: []ReplicaUpdate{{Service: "web", ID: 1, Status: protocol.ReplicaReady, Endpoint: "h:1"}}})
	c.publishRoutes(s.fsm.State(), now)
	published := c.published["web"].table

	// Replica 2 turns READY; an LB syncs before the next publish.
	apply(CmdUpdateReplicas, UpdateReplicasCmd{At: now, Updates: []ReplicaUpdate{{Service: "web", ID: 2, Status: protocol.ReplicaReady, Endpoint: "h:2"}}})
	if got := sync(); got.Epoch != published.Epoch || fmt.Sprint(got.Endpoints) != fmt.Sprint(published.Endpoints) {
		t.Fatalf("sync gave epoch %d %v, want the published table: epoch %d %v", got.Epoch, got.Endpoints, published.Epoch, published.Endpoints)
	}
	// The next publish carries replica 2 at a newer epoch, and syncs follow.
	c.publishRoutes(s.fsm.State(), now)
	if got := sync(); got.Epoch <= published.Epoch || len(got.Endpoints) != 2 {
		t.Fatalf("after the publish sync gave %+v, want both replicas at an epoch after %d", got, published.Epoch)
	}
}

// bareServer is a coordinator without Raft or a controller of its own,
// connected to the NATS server at url: a test applies commands to its FSM
// (fsmApplier) and runs its controller's phases itself.
func bareServer(t *testing.T, url string) *Server {
	t.Helper()
	bc, err := bus.Connect(bus.Config{URL: url, Logger: slog.Default()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bc.Close)
	return &Server{cfg: DevConfig().withDefaults(), log: slog.Default(), fsm: NewFSM(), nc: bc,
		metrics: newMetrics(prometheus.NewRegistry()), kick: make(chan struct{}, 1), badMessages: logutil.NewLimiter(time.Second)}
}

// fsmApplier applies commands to an FSM as Raft would, numbering them;
// index is the last one's.
type fsmApplier struct {
	t     *testing.T
	f     *FSM
	index uint64
}

func (a *fsmApplier) apply(ct CommandType, cmd any) {
	a.t.Helper()
	a.index++
	buf, err := encodeCommand(ct, cmd)
	if err != nil {
		a.t.Fatal(err)
	}
	if err, ok := a.f.Apply(&raft.Log{Type: raft.LogCommand, Index: a.index, Data: buf}).(error); ok {
		a.t.Fatal(err)
	}
}
