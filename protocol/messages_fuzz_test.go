package protocol

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecodeMessages feeds every NATS message type's decoder and checks
// (DecodeMessage, then ResolveSpecs and Validate as the receivers do):
// nothing panics, every rejection matches ErrInvalidMessage, and an
// accepted message encodes and decodes back to itself.
func FuzzDecodeMessages(f *testing.F) {
	seeds := []any{
		AgentStatus{Agent: Agent{ID: "gpu-1", Host: "10.0.0.5", Address: "10.0.0.5:7403", NetNS: "boot:1",
			PortRange: PortRange{Min: 10000, Max: 29999}, Capacity: Capacity{CPUs: 8, MemoryGB: 32,
				GPUs: []GPU{{Index: 0, Name: "NVIDIA A100", UUID: "GPU-1", Healthy: true}}}},
			Replicas: []ReplicaReport{{Service: "web", ReplicaID: 1, Version: 1, Status: ReplicaReady, Endpoint: "10.0.0.5:8081"}}},
		DesiredReplicas{AgentID: "gpu-1", Epoch: 9, Replicas: []ReplicaAssignment{{Service: "web", ReplicaID: 1, Version: 1, Port: 8081}},
			Specs: map[string]TaskSpec{"web/1": {Run: "python3 -m http.server $PORT", Service: ServiceSpec{
				ReadinessProbe: ReadinessProbe{Path: "/"}, ReplicaPolicy: ReplicaPolicy{MinReplicas: 1, MaxReplicas: 1}}}}},
		RouteTable{Service: "web", Epoch: 3, Port: 30001, Policy: PolicyRoundRobin, ActiveVersions: []int{1},
			Endpoints: []Endpoint{{ReplicaID: 1, Version: 1, Address: "10.0.0.5:8081"}}},
		LBAck{LBID: "lb-1", Epochs: map[string]uint64{"web": 3}, Draining: map[string]int64{"10.0.0.5:8081": 2}},
		RouteSync{Tables: []RouteTable{{Service: "web", Epoch: 3, Port: 30001}}},
	}
	for kind, s := range seeds {
		b, err := json.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(kind), b)
	}
	f.Add(byte(0), []byte(`{"agent":{"id":"`+string(make([]byte, 300))+`"}}`))
	f.Add(byte(1), []byte(`{"agent_id":"a","replicas":[{"service":"web","replica_id":1,"version":1,"port":1}]}`))
	f.Add(byte(2), []byte(`{"service":"web","port":1}{}`))
	f.Fuzz(func(t *testing.T, kind byte, data []byte) {
		var msg interface{ Validate() error }
		switch kind % 5 {
		case 0:
			msg = &AgentStatus{}
		case 1:
			msg = &DesiredReplicas{}
		case 2:
			msg = &RouteTable{}
		case 3:
			msg = &LBAck{}
		case 4:
			var rs RouteSync
			if err := DecodeMessage(data, MaxMessageBytes, &rs); err != nil {
				return
			}
			for i := range rs.Tables {
				_ = rs.Tables[i].Validate()
			}
			return
		}
		err := DecodeMessage(data, MaxMessageBytes, msg)
		if d, ok := msg.(*DesiredReplicas); ok && err == nil {
			err = d.ResolveSpecs()
		}
		if err == nil {
			err = msg.Validate()
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("rejection %v does not match ErrInvalidMessage", err)
			}
			return
		}
		again := reflect.New(reflect.TypeOf(msg).Elem()).Interface().(interface{ Validate() error })
		b, err := json.Marshal(msg)
		if err != nil {
			t.Fatalf("accepted message does not encode: %v", err)
		}
		if err := DecodeMessage(b, MaxMessageBytes*2, again); err != nil {
			t.Fatalf("accepted message does not decode again: %v", err)
		}
		if d, ok := again.(*DesiredReplicas); ok {
			if err := d.ResolveSpecs(); err != nil {
				t.Fatalf("re-encoded desired set: %v", err)
			}
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("accepted message fails validation once re-encoded: %v", err)
		}
	})
}
