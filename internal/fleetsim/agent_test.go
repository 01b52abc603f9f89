package fleetsim

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// TestAgentsFollowDesiredSets plays the coordinator's side by hand: two sim
// agents get desired sets naming a spec by digest; the spec is fetched
// once for both, the replicas go READY with their endpoints, and a replica
// left out of the next set is reported SHUTTING_DOWN, then no more.
func TestAgentsFollowDesiredSets(t *testing.T) {
	url := testutil.NATS(t)
	ctx := t.Context()
	spec, err := protocol.ParseTask("t.yaml", []byte(ServiceYAML("svc", 2, 1)))
	if err != nil {
		t.Fatal(err)
	}
	specJSON, digest, err := protocol.EncodeSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe(protocol.SubjectSpecGetAll, func(m *nats.Msg) {
		body, _ := json.Marshal(protocol.SpecReply{Digest: digest, Spec: specJSON})
		_ = m.Respond(body)
	}); err != nil {
		t.Fatal(err)
	}
	// reports holds each agent's last status.
	var mu sync.Mutex
	reports := map[string]protocol.AgentStatus{}
	if _, err := nc.Subscribe(protocol.SubjectAgentStatusAll, func(m *nats.Msg) {
		var st protocol.AgentStatus
		if protocol.DecodeMessage(m.Data, protocol.MaxMessageBytes, &st) != nil || st.Validate() != nil {
			t.Errorf("invalid agent status: %s", m.Data)
			return
		}
		mu.Lock()
		reports[st.Agent.ID] = st
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	f, err := StartFleet(ctx, AgentConfig{NATSURL: url, Heartbeat: 100 * time.Millisecond, ReadyDelay: 100 * time.Millisecond}, 2, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	send := func(agent string, epoch uint64, ids ...int) {
		t.Helper()
		d := protocol.DesiredReplicas{AgentID: agent, Epoch: epoch, Replicas: []protocol.ReplicaAssignment{}}
		for _, id := range ids {
			d.Replicas = append(d.Replicas, protocol.ReplicaAssignment{Service: "svc", ReplicaID: id, Version: 1, Port: 10000 + id, SpecDigest: digest})
		}
		body, _ := json.Marshal(d)
		if err := nc.Publish(protocol.AgentDesiredSubject(agent), body); err != nil {
			t.Fatal(err)
		}
	}
	// state describes what agent last reported: id:status@endpoint.
	state := func(agent string) string {
		mu.Lock()
		defer mu.Unlock()
		st := reports[agent]
		out := map[int]string{}
		for _, r := range st.Replicas {
			out[r.ReplicaID] = fmt.Sprintf("%s@%s", r.Status, r.Endpoint)
		}
		return fmt.Sprint(out)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	a1, a2 := f.Agents[0], f.Agents[1]
	// A heartbeat from an agent follows its subscription on its connection.
	testutil.WaitFor(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(reports) != 2 {
			return fmt.Errorf("%d agents heard from, want 2", len(reports))
		}
		return nil
	})
	send(a1.ID(), 5, 1)
	send(a2.ID(), 5, 2)
	want1 := fmt.Sprintf("map[1:READY@%s:10001]", a1.info.Host)
	want2 := fmt.Sprintf("map[2:READY@%s:10002]", a2.info.Host)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if s1, s2 := state(a1.ID()), state(a2.ID()); s1 != want1 || s2 != want2 {
			return fmt.Errorf("reported %s and %s, want %s and %s (%d spec fetches failed)", s1, s2, want1, want2, f.Specs.Failures.Load())
		}
		return nil
	})
	if n := f.Specs.Fetches.Load(); n != 1 {
		t.Errorf("%d spec fetches, want 1", n)
	}
	if n := len(f.ReadyTimes("svc", 1)); n != 2 {
		t.Errorf("%d READY times recorded, want 2", n)
	}
	// A stale set is ignored; a newer one without the replica stops it.
	send(a1.ID(), 4)
	send(a1.ID(), 6)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if s := state(a1.ID()); s != "map[]" {
			return fmt.Errorf("reported %s, want nothing", s)
		}
		return nil
	})
	if n := f.StaleDesired.Load(); n != 1 {
		t.Errorf("%d stale sets counted, want 1", n)
	}
	// A killed agent goes quiet.
	a2.Kill()
	mu.Lock()
	delete(reports, a2.ID())
	mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	if s := state(a2.ID()); s != "map[]" {
		t.Errorf("killed agent still reports %s", s)
	}
}
