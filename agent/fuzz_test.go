package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/protocol"
)

// FuzzDesiredSet hands arbitrary desired sets to the agent's NATS handler
// (the agent is stopping, so nothing it accepts starts a process): no
// input panics, and every set the agent accepts resolves its specs and
// passes validation for this agent.
func FuzzDesiredSet(f *testing.F) {
	good := protocol.DesiredReplicas{AgentID: "fz", Epoch: 3,
		Replicas: []protocol.ReplicaAssignment{{Service: "web", ReplicaID: 1, Version: 1, Port: 8081, GPUUUIDs: []string{"GPU-fake-fz-0"}}},
		Specs: map[string]protocol.TaskSpec{"web/1": {Run: "python3 -m http.server $PORT", Service: protocol.ServiceSpec{
			ReadinessProbe: protocol.ReadinessProbe{Path: "/"}, ReplicaPolicy: protocol.ReplicaPolicy{MinReplicas: 1, MaxReplicas: 1}}}}}
	b, _ := json.Marshal(good)
	f.Add(b)
	f.Add([]byte(`{"agent_id":"fz","replicas":[{"service":"web","replica_id":1,"version":1,"port":0}]}`))
	f.Add([]byte(`{"agent_id":"other","epoch":1}`))
	// Specs by reference: valid without an inline spec; nothing is fetched
	// (the agent is stopping and has no NATS connection).
	f.Add([]byte(`{"agent_id":"fz","epoch":4,"replicas":[{"service":"web","replica_id":1,"version":2,"port":8081,"spec_digest":"sha256:` + strings.Repeat("ab", 32) + `"}]}`))
	f.Add([]byte(`{"agent_id":"fz","epoch":4,"replicas":[{"service":"web","replica_id":1,"version":2,"port":8081,"spec_digest":"md5:00"}]}`))
	f.Add(append(b, []byte(`{}`)...))
	a, err := New(Config{ID: "fz", DataDir: f.TempDir(), Accelerators: "T4", ReplicaUser: currentUser(f),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	a.closing = true
	f.Fuzz(func(t *testing.T, data []byte) {
		before := promValue(t, a, "baton_agent_invalid_messages_total")
		a.onDesired(context.Background(), &nats.Msg{Subject: protocol.AgentDesiredSubject("fz"), Data: data})
		rejected := promValue(t, a, "baton_agent_invalid_messages_total") > before
		var d protocol.DesiredReplicas
		err := protocol.DecodeMessage(data, protocol.MaxMessageBytes, &d)
		if err == nil {
			err = d.ResolveSpecs()
		}
		if err == nil {
			err = d.Validate()
		}
		if valid := err == nil && d.AgentID == "fz"; valid == rejected {
			t.Fatalf("agent rejected=%v a set whose validity is %v (%v)", rejected, valid, err)
		}
	})
}

// promValue reads one of the agent's counters.
func promValue(t *testing.T, a *Agent, name string) float64 {
	families, err := a.gather.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() == name {
			sum := 0.0
			for _, m := range fam.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

// FuzzShimEvents: whatever a shim (or anything holding its pipe) writes,
// reading the events never panics and yields only whole events.
func FuzzShimEvents(f *testing.F) {
	f.Add([]byte("{\"pid\":12}\n{\"exit\":\"exited with code 3\",\"code\":3}\n{\"gone\":true}\n"))
	f.Add([]byte("{\"start_error\":\"no bash\"}\n\x00\x01garbage\n{\"pid\":"))
	f.Fuzz(func(t *testing.T, data []byte) {
		events := 0
		readShimEvents(bytes.NewReader(data), func(shimEvent) { events++ })
		if lines := bytes.Count(data, []byte("\n")) + 1; events > lines {
			t.Fatalf("%d events from %d lines", events, lines)
		}
	})
}
