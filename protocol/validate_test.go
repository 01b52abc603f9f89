package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestAgentIDs(t *testing.T) {
	for _, tc := range []struct {
		host, id string
	}{
		{"gpu-node-1", "gpu-node-1"},
		{"GPU-Node.Example.COM", "gpu-node-example-com"},
		{"web01.prod.internal", "web01-prod-internal"},
		{"_under_score_", "under-score"},
		{"a..b", "a-b"},
		{"---", "agent"},
		{"", "agent"},
		{strings.Repeat("x", 70) + ".y", strings.Repeat("x", 63)},
		{strings.Repeat("x", 62) + ".y", strings.Repeat("x", 62)},
	} {
		got := AgentIDFromHostname(tc.host)
		if got != tc.id {
			t.Errorf("AgentIDFromHostname(%q) = %q, want %q", tc.host, got, tc.id)
		}
		if err := ValidateAgentID(got); err != nil {
			t.Errorf("derived id %q is not valid: %v", got, err)
		}
	}
	for _, bad := range []string{"", "Agent-1", "a.b", "a b", "-a", strings.Repeat("a", 64), "a*", "a>"} {
		if err := ValidateAgentID(bad); err == nil {
			t.Errorf("ValidateAgentID(%q) accepted it", bad)
		}
	}
	if err := ValidateAgentID(strings.Repeat("a", 5000)); err == nil || len(err.Error()) > 300 {
		t.Errorf("a 5000-character id: %v (the message must stay short)", err)
	}
	for _, good := range []string{"lb-1", "host-example-com-4242", "LB_2:a"} {
		if err := ValidateLBID(good); err != nil {
			t.Errorf("ValidateLBID(%q): %v", good, err)
		}
	}
	for _, bad := range []string{"", "a b", ".a", "host.example.com-4242", "a*", "a>", strings.Repeat("a", 129)} {
		if err := ValidateLBID(bad); err == nil {
			t.Errorf("ValidateLBID(%q) accepted it", bad)
		}
	}
}

func TestValidateEndpoint(t *testing.T) {
	for _, good := range []string{"10.0.0.1:8080", "[::1]:1", "host-1.example.com:65535", "localhost:80"} {
		if err := ValidateEndpoint(good); err != nil {
			t.Errorf("ValidateEndpoint(%q): %v", good, err)
		}
	}
	for _, bad := range []string{"", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", ":80", "a b:80", "host:port", "-x:1"} {
		if err := ValidateEndpoint(bad); err == nil {
			t.Errorf("ValidateEndpoint(%q) accepted it", bad)
		}
	}
}

func validStatus() AgentStatus {
	return AgentStatus{Agent: Agent{ID: "a1", Host: "10.0.0.1", Address: "10.0.0.1:7403",
		Capacity: Capacity{CPUs: 8, MemoryGB: 16, GPUs: []GPU{{UUID: "GPU-1", Name: "A100", Healthy: true}}}},
		Replicas: []ReplicaReport{{Service: "web", ReplicaID: 1, Version: 1, Status: ReplicaReady, Endpoint: "10.0.0.1:8081"}}}
}

// TestMessageValidation: each message's Validate names the field at fault
// and matches ErrInvalidMessage.
func TestMessageValidation(t *testing.T) {
	status := func(mutate func(*AgentStatus)) *AgentStatus {
		s := validStatus()
		mutate(&s)
		return &s
	}
	table := func(mutate func(*RouteTable)) *RouteTable {
		rt := RouteTable{Service: "web", Epoch: 1, Port: 30001, Policy: PolicyLeastLoad, ActiveVersions: []int{1},
			Endpoints: []Endpoint{{ReplicaID: 1, Version: 1, Address: "10.0.0.1:8081"}}}
		mutate(&rt)
		return &rt
	}
	for _, tc := range []struct {
		name string
		msg  interface{ Validate() error }
		want string // "" for valid
	}{
		{"valid status", status(func(*AgentStatus) {}), ""},
		{"long agent id", status(func(s *AgentStatus) { s.Agent.ID = strings.Repeat("x", 5000) }), "agent.id: agent id"},
		{"negative cpus", status(func(s *AgentStatus) { s.Agent.Capacity.CPUs = -1 }), "capacity.cpus"},
		{"bad host", status(func(s *AgentStatus) { s.Agent.Host = "a b" }), "agent.host"},
		{"comma in a GPU UUID", status(func(s *AgentStatus) { s.Agent.Capacity.GPUs[0].UUID = "GPU-1,GPU-2" }), "capacity.gpus[0].uuid"},
		{"unknown replica status", status(func(s *AgentStatus) { s.Replicas[0].Status = "BOGUS" }), "replicas[0].status"},
		{"replica reported twice", status(func(s *AgentStatus) { s.Replicas = append(s.Replicas, s.Replicas[0]) }), "reported twice"},
		{"long reason", status(func(s *AgentStatus) { s.Replicas[0].Reason = strings.Repeat("r", MaxReasonLen+1) }), "replicas[0].reason"},
		{"control characters in a label", status(func(s *AgentStatus) { s.Agent.Labels = map[string]string{"k": "a\nb"} }), "labels.k"},
		{"valid table", table(func(*RouteTable) {}), ""},
		{"port 0", table(func(rt *RouteTable) { rt.Port = 0 }), "port: 0"},
		{"deleted table without a port", table(func(rt *RouteTable) { rt.Port, rt.Deleted = 0, true }), ""},
		{"bad endpoint", table(func(rt *RouteTable) { rt.Endpoints[0].Address = "nowhere" }), "endpoints[0].address"},
		{"bad policy", table(func(rt *RouteTable) { rt.Policy = "random" }), "policy"},
		{"valid ack", &LBAck{LBID: "lb-1", Epochs: map[string]uint64{"web": 1}}, ""},
		{"ack for a bad service", &LBAck{LBID: "lb-1", Epochs: map[string]uint64{"Web!": 1}}, "epochs"},
		{"negative draining", &LBAck{LBID: "lb-1", Draining: map[string]int64{"10.0.0.1:1": -1}}, "is negative"},
		{"desired set without port", &DesiredReplicas{AgentID: "a1", Replicas: []ReplicaAssignment{{Service: "web", ReplicaID: 1, Version: 1}}}, "replicas[0].port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.msg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("Validate = %v, want an ErrInvalidMessage naming %q", err, tc.want)
			}
			if len(err.Error()) > 400 {
				t.Errorf("message is %d bytes long: hostile input must not make huge log lines", len(err.Error()))
			}
		})
	}
}

func TestResolveSpecs(t *testing.T) {
	d := DesiredReplicas{AgentID: "a1", Replicas: []ReplicaAssignment{{Service: "web", ReplicaID: 1, Version: 2, Port: 1}}}
	if err := d.ResolveSpecs(); err == nil || !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("a set without its version's spec: %v", err)
	}
	d.Specs = map[string]TaskSpec{SpecKey("web", 2): {Run: "x"}}
	if err := d.ResolveSpecs(); err != nil || d.Replicas[0].Spec.Run != "x" {
		t.Fatalf("ResolveSpecs: %v, spec %+v", err, d.Replicas[0].Spec)
	}
}

func TestTruncateReason(t *testing.T) {
	long := strings.Repeat("é", MaxReasonLen) // 2 bytes each
	got := TruncateReason(long)
	if len(got) > MaxReasonLen || !strings.HasSuffix(got, "...") || !strings.HasPrefix(got, "éé") {
		t.Errorf("TruncateReason: %d bytes, suffix %q", len(got), got[len(got)-4:])
	}
	if err := checkText(got, MaxReasonLen); err != nil {
		t.Errorf("truncated reason is not valid text: %v", err)
	}
	if TruncateReason("short") != "short" {
		t.Error("a short reason changed")
	}
}
