package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/baton-dev/baton/protocol"
)

// seededFSM is an FSM with a service (two versions, a rollout, replicas
// in several states) and two agents, for commands to act on.
func seededFSM(t testing.TB) *FSM {
	f := NewFSM()
	at := time.Unix(1000, 0).UTC()
	cmds := []struct {
		typ CommandType
		cmd any
	}{
		{CmdUpsertAgent, UpsertAgentCmd{Agent: protocol.Agent{ID: "a1", Host: "10.0.0.1", Capacity: protocol.Capacity{CPUs: 8}}, At: at}},
		{CmdUpsertAgent, UpsertAgentCmd{Agent: protocol.Agent{ID: "a2", Host: "10.0.0.2", Capacity: protocol.Capacity{CPUs: 8}}, At: at}},
		{CmdCreateService, CreateServiceCmd{Name: "web", Spec: testSpec(2), FirstPort: 30001, At: at}},
		{CmdAddReplicas, AddReplicasCmd{Replicas: []protocol.Replica{
			{Service: "web", Version: 1, Status: protocol.ReplicaReady, AgentID: "a1", Endpoint: "10.0.0.1:8081", Resources: protocol.Allocation{CPUs: 2, Port: 8081}},
			{Service: "web", Version: 1, Status: protocol.ReplicaProvisioning, AgentID: "a2", Endpoint: "10.0.0.2:8081", Resources: protocol.Allocation{CPUs: 2, Port: 8081}},
		}, At: at}},
		{CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(2), Mode: protocol.UpdateRolling, ProgressSeconds: 60, At: at}},
		{CmdAddReplicas, AddReplicasCmd{Replicas: []protocol.Replica{{Service: "web", Version: 2, Status: protocol.ReplicaPending}}, At: at}},
	}
	for i, c := range cmds {
		buf, err := encodeCommand(c.typ, c.cmd)
		if err != nil {
			t.Fatal(err)
		}
		if res := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: buf}); res != nil {
			if err, ok := res.(error); ok {
				t.Fatalf("seed command %s: %v", c.typ, err)
			}
		}
	}
	return f
}

// FuzzFSMApply applies arbitrary commands of every type to a populated
// FSM. A command that decodes must never panic: it is applied or
// rejected with an error value; only bytes that are not a command of the
// type (which Raft's checksums make a corrupt log) may panic, by design.
// The state afterwards must snapshot and restore.
func FuzzFSMApply(f *testing.F) {
	at := time.Unix(2000, 0).UTC()
	seeds := []struct {
		typ CommandType
		cmd any
	}{
		{CmdCreateService, CreateServiceCmd{Name: "api", Spec: testSpec(1), FirstPort: 65535, At: at}},
		{CmdAddVersion, AddVersionCmd{Service: "web", Spec: testSpec(3), Mode: protocol.UpdateBlueGreen, At: at}},
		{CmdDeleteService, DeleteServiceCmd{Service: "web", At: at}},
		{CmdRemoveService, RemoveServiceCmd{Service: "web"}},
		{CmdAddReplicas, AddReplicasCmd{Replicas: []protocol.Replica{{Service: "web", Version: 2}}, At: at}},
		{CmdUpdateReplicas, UpdateReplicasCmd{Updates: []ReplicaUpdate{{Service: "web", ID: 1, From: protocol.ReplicaReady,
			Status: protocol.ReplicaFailed, Port: 9000, Endpoint: "10.0.0.1:9000"}}, At: at}},
		{CmdDeleteReplicas, DeleteReplicasCmd{Keys: []string{"web/1", "nope/9"}}},
		{CmdFlip, FlipCmd{Service: "web", To: 2, At: at}},
		{CmdFailVersion, FailVersionCmd{Service: "web", Version: 2, Reason: "x", At: at}},
		{CmdUpsertAgent, UpsertAgentCmd{Agent: protocol.Agent{ID: "a3"}, At: at}},
		{CmdSetAgentAlive, SetAgentAliveCmd{ID: "a1", Alive: false, Reason: "lost", At: at}},
		{CmdRemoveAgent, RemoveAgentCmd{ID: "a2"}},
		{CmdBundleAdd, BundleAddCmd{Digest: "sha256:" + strings.Repeat("ab", 32), Size: 10, At: at}},
		{CmdBundleDelete, BundleDeleteCmd{Digest: "sha256:" + strings.Repeat("ab", 32)}},
	}
	for _, s := range seeds {
		buf, err := encodeCommand(s.typ, s.cmd)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf)
	}
	f.Add([]byte{byte(CmdAddReplicas), '{', '"', 'r', 'e', 'p', 'l', 'i', 'c', 'a', 's', '"', ':', 'n', 'u', 'l', 'l', '}'})
	f.Add([]byte{byte(CmdFlip), '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := seededFSM(t)
		corrupt := false
		func() {
			defer func() {
				if r := recover(); r != nil {
					msg := fmt.Sprint(r)
					if !strings.HasPrefix(msg, "fsm: undecodable") && !strings.HasPrefix(msg, "fsm: unknown command type") {
						t.Fatalf("Apply panicked on a decodable command: %v", r)
					}
					corrupt = true
				}
			}()
			fsm.Apply(&raft.Log{Index: 100, Type: raft.LogCommand, Data: data})
		}()
		if corrupt {
			return // the process would have stopped here
		}
		fsm.Read(func(st *State) { checkIndex(t, st) })
		snap, err := fsm.Snapshot()
		if err != nil {
			t.Fatalf("snapshot after the command: %v", err)
		}
		var sink memSink
		if err := snap.Persist(&sink); err != nil {
			t.Fatal(err)
		}
		if err := NewFSM().Restore(io.NopCloser(&sink.Buffer)); err != nil {
			t.Fatalf("restore: %v", err)
		}
		// What the leader does with the state must not panic either.
		fsm.Read(func(st *State) {
			_ = statusView(st, nil, "127.0.0.1", 3, time.Unix(3000, 0))
			for _, name := range st.ServiceNames() {
				_ = routeTable(st, st.Services[name])
			}
			p := newPlacer(st)
			_, _, _ = p.place(protocol.Resources{CPUs: protocol.Quantity{Value: 1}}, 8081, nil)
		})
	})
}

// fuzzController starts a coordinator (real Raft, real NATS) for a fuzz
// target's process and returns it with a controller of the target's own.
func fuzzController(f *testing.F) (*Server, *controller) {
	cfg := DevConfig()
	cfg.DataDir = f.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	cfg.RaftAddr = l.Addr().String()
	l.Close()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.NATSPort = -1
	cfg.RaftTimeout = 50 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	f.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !s.IsLeader() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return s, newController(s.controllerDeps())
}

// FuzzControllerMessages hands arbitrary agent statuses and LB acks to the
// leader's NATS handlers and runs a reconcile pass on what they accepted,
// with real Raft and NATS: nothing panics, the coordinator stays healthy
// and its NATS connection is never closed by the server (it publishes
// only on valid subjects).
func FuzzControllerMessages(f *testing.F) {
	status, _ := json.Marshal(protocol.AgentStatus{Agent: protocol.Agent{ID: "agent-1", Host: "127.0.0.1",
		Address: "127.0.0.1:7403", Capacity: protocol.Capacity{CPUs: 4, MemoryGB: 8}},
		Replicas: []protocol.ReplicaReport{{Service: "web", ReplicaID: 1, Version: 1, Status: protocol.ReplicaReady, Endpoint: "127.0.0.1:8081"}}})
	ack, _ := json.Marshal(protocol.LBAck{LBID: "lb-1", Epochs: map[string]uint64{"web": 1}, Draining: map[string]int64{"127.0.0.1:8081": 1}})
	f.Add(byte(0), status)
	f.Add(byte(1), ack)
	f.Add(byte(0), []byte(`{"agent":{"id":"`+strings.Repeat("x", 5000)+`","host":"h"}}`))
	f.Add(byte(0), []byte(`{"agent":{"id":"a-2","host":"127.0.0.1"},"leaving":true}`))
	s, c := fuzzController(f)
	f.Fuzz(func(t *testing.T, kind byte, data []byte) {
		m := &nats.Msg{Data: data}
		if kind%2 == 0 {
			m.Subject = protocol.AgentStatusSubject("agent-1")
			c.onAgentStatus(m)
		} else {
			m.Subject = protocol.LBAckSubject("lb-1")
			c.onLBAck(m)
		}
		c.reconcileSafely()
		if promtest.ToFloat64(s.metrics.reconcilePanics) > 0 {
			t.Fatal("a reconcile pass panicked on state built from accepted messages")
		}
		if n := s.nc.Replacements(); n != 0 {
			t.Fatalf("the coordinator's NATS connection was closed by the server %d times", n)
		}
	})
}

// FuzzAPIBodies sends arbitrary bodies to the up and update handlers' body
// decoding and spec checks: every rejection is a 400 with an APIError, and
// every accepted spec passes TaskSpec.Validate and the size bound.
func FuzzAPIBodies(f *testing.F) {
	up, _ := json.Marshal(protocol.UpRequest{Name: "web", Filename: "t.yaml", BaseDir: "/srv",
		YAML: "run: python3 -m http.server $PORT\nservice:\n  replicas: 2\nresources:\n  cpus: 2+\n", Envs: map[string]string{"A": "b"}})
	upd, _ := json.Marshal(protocol.UpdateRequest{Filename: "t.yaml", Mode: "rolling",
		YAML: "run: x\nworkdir: app\nservice: {readiness_probe: /health, replicas: 1}\n"})
	f.Add(byte(0), up)
	f.Add(byte(1), upd)
	f.Add(byte(0), append(up, []byte(" {}")...))
	f.Add(byte(1), []byte(`{"yaml":"run: x\nservice: {replicas: 1}\n","envs":{"A\u0000":"x"}}`))
	f.Fuzz(func(t *testing.T, kind byte, body []byte) {
		path := "/v1/services"
		var filename, text, baseDir string
		var envs map[string]string
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		ok := false
		if kind%2 == 0 {
			var req protocol.UpRequest
			if ok = decodeBody(w, r, &req); ok {
				filename, text, baseDir, envs = req.Filename, req.YAML, req.BaseDir, req.Envs
			}
		} else {
			var req protocol.UpdateRequest
			if ok = decodeBody(w, r, &req); ok {
				filename, text, baseDir, envs = req.Filename, req.YAML, req.BaseDir, req.Envs
			}
		}
		var spec *protocol.TaskSpec
		if ok {
			spec, ok = parseSpec(w, r, filename, text, baseDir, envs, nil)
		}
		if !ok {
			var e protocol.APIError
			if w.Code != http.StatusBadRequest || json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Message == "" {
				t.Fatalf("rejection %d %q is not a 400 with an APIError", w.Code, w.Body.String())
			}
			return
		}
		if err := spec.Validate(); err != nil {
			t.Fatalf("accepted spec fails Validate: %v", err)
		}
		if b, _ := json.Marshal(spec); len(b) > protocol.MaxSpecBytes {
			t.Fatalf("accepted spec is %d bytes", len(b))
		}
	})
}
