package agent

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// specServer plays the coordinators' side of specs by reference: it
// answers SpecRequests on protocol.SubjectSpecGetAll from the specs added to
// it, honestly unless told otherwise.
type specServer struct {
	requests atomic.Int64

	mu    sync.Mutex
	specs map[string]json.RawMessage // by digest
	last  protocol.SpecRequest
	// answer, when set, replaces the honest reply.
	answer func(req protocol.SpecRequest, raw json.RawMessage) protocol.SpecReply
}

// serveSpecs starts a specServer on the harness's NATS server.
func serveSpecs(t *testing.T, h *harness) *specServer {
	t.Helper()
	s := &specServer{specs: map[string]json.RawMessage{}}
	sub, err := h.nc.Subscribe(protocol.SubjectSpecGetAll, func(m *nats.Msg) {
		s.requests.Add(1)
		var req protocol.SpecRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			t.Errorf("bad spec request %q: %v", m.Data, err)
			return
		}
		s.mu.Lock()
		s.last = req
		raw, ok := s.specs[req.Digest]
		rep := protocol.SpecReply{Digest: req.Digest, Spec: raw}
		if !ok {
			rep = protocol.SpecReply{Error: "no spec with digest " + req.Digest}
		}
		if s.answer != nil {
			rep = s.answer(req, raw)
		}
		s.mu.Unlock()
		data, err := json.Marshal(rep)
		if err != nil {
			t.Error(err)
			return
		}
		if err := m.Respond(data); err != nil {
			t.Errorf("respond: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

// add makes the specs of asgs available.
func (s *specServer) add(t *testing.T, asgs ...protocol.ReplicaAssignment) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range asgs {
		ref, raw := byRef(t, a)
		s.specs[ref.SpecDigest] = raw
	}
}

// setAnswer replaces the honest reply with fn's; nil restores it.
func (s *specServer) setAnswer(fn func(req protocol.SpecRequest, raw json.RawMessage) protocol.SpecReply) {
	s.mu.Lock()
	s.answer = fn
	s.mu.Unlock()
}

func (s *specServer) lastRequest() protocol.SpecRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// waitCounter waits until the agent's counter name is at least want.
func waitCounter(t *testing.T, h *harness, name string, want float64) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if got := promValue(t, h.agent, name); got < want {
			return fmt.Errorf("%s is %g, want at least %g", name, got, want)
		}
		return nil
	})
}

// neverShuttingDown fails if the replica was ever reported stopping.
func neverShuttingDown(t *testing.T, h *harness, svc string, id int) {
	t.Helper()
	for _, s := range h.history(svc, id) {
		if s != protocol.ReplicaReady && s != protocol.ReplicaStarting && s != protocol.ReplicaProvisioning {
			t.Fatalf("replica %s/%d went through %v; it must have kept running", svc, id, h.history(svc, id))
		}
	}
}

func TestSpecCacheLRU(t *testing.T) {
	spec := func(run string) protocol.TaskSpec { return protocol.TaskSpec{Run: run} }
	c := newSpecCache(2)
	c.put("a", spec("a"))
	c.put("b", spec("b"))
	if _, ok := c.get("a"); !ok { // a is now the most recently used
		t.Fatal("a missing")
	}
	c.put("c", spec("c")) // evicts b
	tests := []struct {
		name   string
		digest string
		want   bool
	}{
		{name: "recently used kept", digest: "a", want: true},
		{name: "least recently used evicted", digest: "b", want: false},
		{name: "newest kept", digest: "c", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := c.get(tt.digest)
			if ok != tt.want {
				t.Fatalf("get(%q) found=%v, want %v", tt.digest, ok, tt.want)
			}
			if ok && got.Run != tt.digest {
				t.Fatalf("get(%q) = spec %q", tt.digest, got.Run)
			}
		})
	}
	c.put("a", spec("a2")) // replacing does not grow the cache
	if n := c.len(); n != 2 {
		t.Fatalf("len = %d, want 2", n)
	}
}

// A set naming its spec by digest: the agent fetches the spec once, runs
// the replica with it, and serves later sets with that digest from its
// cache.
func TestSpecFetchedOnceAndCached(t *testing.T) {
	h := startAgent(t, nil)
	srv := serveSpecs(t, h)
	one := serverAssignment(t, "web", 1)
	two := serverAssignment(t, "web", 2) // same version and spec: same digest
	srv.add(t, one)

	h.desireRefs(1, one)
	r1 := h.waitStatus("web", 1, protocol.ReplicaReady, readyTimeout)
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("%d spec requests, want 1", n)
	}
	ref, _ := byRef(t, one)
	if got, want := srv.lastRequest(), (protocol.SpecRequest{Service: "web", Version: 1, Digest: ref.SpecDigest}); got != want {
		t.Fatalf("spec request %+v, want %+v", got, want)
	}

	h.desireRefs(2, one, two)
	h.waitStatus("web", 2, protocol.ReplicaReady, readyTimeout)
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("%d spec requests after a second set with the same digest, want 1 (cached)", n)
	}
	if r, _ := h.report("web", 1); r.PID != r1.PID {
		t.Fatalf("replica web/1 pid %d, was %d: it was restarted", r.PID, r1.PID)
	}
	if got := promValue(t, h.agent, "baton_agent_spec_fetches_total"); got != 1 {
		t.Fatalf("baton_agent_spec_fetches_total = %g, want 1", got)
	}
	if got := promValue(t, h.agent, "baton_agent_spec_fetch_failures_total"); got != 0 {
		t.Fatalf("baton_agent_spec_fetch_failures_total = %g, want 0", got)
	}
}

// A reply that does not match the digest asked for brings no spec: the
// replica is not started, the failure is counted, the replica of another
// key keeps running; once the replies are right, the agent's retry starts
// the replica without a new desired set.
func TestSpecFetchFailureRetried(t *testing.T) {
	other := protocol.TaskSpec{Run: "exec sleep 1000"}
	otherRaw, otherDigest, err := protocol.EncodeSpec(&other)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		answer func(req protocol.SpecRequest, raw json.RawMessage) protocol.SpecReply
	}{
		{name: "wrong digest", answer: func(protocol.SpecRequest, json.RawMessage) protocol.SpecReply {
			return protocol.SpecReply{Digest: otherDigest, Spec: otherRaw}
		}},
		{name: "bytes not matching the digest", answer: func(req protocol.SpecRequest, _ json.RawMessage) protocol.SpecReply {
			return protocol.SpecReply{Digest: req.Digest, Spec: otherRaw}
		}},
		{name: "error reply", answer: func(protocol.SpecRequest, json.RawMessage) protocol.SpecReply {
			return protocol.SpecReply{Error: "version 1 of web is gone"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startAgent(t, func(c *Config) {
				c.SpecRetryMin = 100 * time.Millisecond
				c.SpecRetryMax = 400 * time.Millisecond
			})
			srv := serveSpecs(t, h)
			api := serverAssignment(t, "api", 1)
			web := serverAssignment(t, "web", 1)
			web.Spec.Envs = map[string]string{"SERVICE_NAME": "web"} // a spec, and digest, of its own
			srv.add(t, api, web)

			h.desireRefs(1, api)
			apiReady := h.waitStatus("api", 1, protocol.ReplicaReady, readyTimeout)

			srv.setAnswer(tt.answer)
			h.desireRefs(2, api, web)
			// The set's own fetch and at least one retry fail.
			waitCounter(t, h, "baton_agent_spec_fetch_failures_total", 2)
			if r, ok := h.report("web", 1); ok {
				t.Fatalf("web/1 reported as %s; it must not start without its spec", r.Status)
			}
			if r, _ := h.report("api", 1); r.Status != protocol.ReplicaReady || r.PID != apiReady.PID {
				t.Fatalf("api/1 is %s pid %d, want READY pid %d", r.Status, r.PID, apiReady.PID)
			}

			srv.setAnswer(nil)
			h.waitStatus("web", 1, protocol.ReplicaReady, readyTimeout)
			if r, _ := h.report("api", 1); r.PID != apiReady.PID {
				t.Fatalf("api/1 pid %d, was %d: it was restarted", r.PID, apiReady.PID)
			}
			neverShuttingDown(t, h, "api", 1)
		})
	}
}

// With no coordinator answering, a set that lacks a spec starts nothing
// new, keeps the replica already running under a key it names, and does
// not hold up the sets that follow.
func TestSpecUnavailable(t *testing.T) {
	tests := []struct {
		name   string
		silent bool // someone subscribes but never answers (timeout), else no one (no responders)
	}{
		{name: "no responder"},
		{name: "silent responder", silent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startAgent(t, func(c *Config) {
				c.SpecFetchTimeout = 300 * time.Millisecond
				c.SpecRetryMin = 100 * time.Millisecond
				c.SpecRetryMax = 200 * time.Millisecond
			})
			if tt.silent {
				sub, err := h.nc.Subscribe(protocol.SubjectSpecGetAll, func(*nats.Msg) {})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = sub.Unsubscribe() })
				if err := h.nc.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			one := serverAssignment(t, "web", 1)
			two := serverAssignment(t, "web", 2)
			h.desire(1, one) // inline, as older leaders send
			r1 := h.waitStatus("web", 1, protocol.ReplicaReady, readyTimeout)

			h.desireRefs(2, one, two)
			waitCounter(t, h, "baton_agent_spec_fetch_failures_total", 2)
			if r, ok := h.report("web", 2); ok {
				t.Fatalf("web/2 reported as %s; it must not start without its spec", r.Status)
			}
			if r, _ := h.report("web", 1); r.Status != protocol.ReplicaReady || r.PID != r1.PID {
				t.Fatalf("web/1 is %s pid %d, want READY pid %d: a missing spec must not stop it", r.Status, r.PID, r1.PID)
			}
			neverShuttingDown(t, h, "web", 1)

			// The handler is not stuck in a fetch: the next set applies.
			h.desireRefs(3)
			h.waitGone("web", 1, 10*time.Second)
			if r, ok := h.report("web", 2); ok {
				t.Fatalf("web/2 reported as %s after it left the set", r.Status)
			}
		})
	}
}
