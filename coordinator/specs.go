package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/protocol"
)

// specServer answers agents' SpecRequests from this node's replicated
// state. Every coordinator answers (in one queue group, so a request gets
// one reply), leader or not: a spec never changes once committed, so any
// node that has applied the version has the right one.
type specServer struct {
	s *Server
	// mu guards encoded: specs already encoded, by digest (bounded).
	mu      sync.Mutex
	encoded map[string][]byte
	// waiting bounds the requests waiting for a placement to be applied.
	waiting chan struct{}
}

// maxEncodedSpecs bounds the encoded specs a coordinator keeps for
// replies; past it the cache starts over.
const maxEncodedSpecs = 256

func (ss *specServer) onRequest(m *nats.Msg) {
	var req protocol.SpecRequest
	if !ss.s.decodeMessage(m, 4<<10, &req, req.Validate) {
		ss.s.metrics.specRequests.WithLabelValues("invalid").Inc()
		return
	}
	if !ss.s.replyable(m) {
		ss.s.metrics.specRequests.WithLabelValues("invalid").Inc()
		return
	}
	agentID := protocol.SenderOf(m.Subject, specSubjectPrefix)
	if ss.assigned(agentID, req) {
		ss.respond(m, ss.lookup(req))
		return
	}
	// The leader published the set naming this version just after it
	// committed the placement: a follower may not have applied it yet.
	// Wait for it a little, off the subscription's goroutine.
	select {
	case ss.waiting <- struct{}{}:
	default:
		ss.respond(m, ss.notAssigned(agentID, req))
		return
	}
	go func() {
		defer func() { <-ss.waiting }()
		deadline := time.Now().Add(assignmentWait)
		for time.Now().Before(deadline) {
			time.Sleep(25 * time.Millisecond)
			if ss.assigned(agentID, req) {
				ss.respond(m, ss.lookup(req))
				return
			}
		}
		ss.respond(m, ss.notAssigned(agentID, req))
	}()
}

// specSubjectPrefix starts protocol.SpecGetSubject, before the agent id.
const specSubjectPrefix = "baton.specs.get."

// assignmentWait bounds how long a coordinator waits to apply the
// placement an agent asks a spec for.
const assignmentWait = time.Second

// assigned reports whether this node's state places a replica of the
// requested version on the agent: a spec (its secrets included) goes only
// to an agent that runs it.
func (ss *specServer) assigned(agentID string, req protocol.SpecRequest) bool {
	if agentID == "" {
		return false
	}
	found := false
	ss.s.fsm.Read(func(st *State) {
		for _, r := range st.AgentReplicas(agentID) {
			if r.Service == req.Service && r.Version == req.Version {
				found = true
				return
			}
		}
	})
	return found
}

func (ss *specServer) notAssigned(agentID string, req protocol.SpecRequest) protocol.SpecReply {
	ss.s.metrics.specRequests.WithLabelValues("not_assigned").Inc()
	return protocol.SpecReply{Error: fmt.Sprintf("%s version %d has no replica on agent %q: a spec goes only to the agents that run it", req.Service, req.Version, agentID)}
}

func (ss *specServer) respond(m *nats.Msg, reply protocol.SpecReply) {
	buf, err := json.Marshal(reply)
	if err != nil {
		ss.s.log.Error("encode spec reply", "error", err)
		return
	}
	if err := m.Respond(buf); err != nil {
		ss.s.log.Debug("spec reply failed", "error", err)
	}
}

func (ss *specServer) lookup(req protocol.SpecRequest) protocol.SpecReply {
	ss.mu.Lock()
	raw, ok := ss.encoded[req.Digest]
	ss.mu.Unlock()
	if ok {
		ss.s.metrics.specRequests.WithLabelValues("ok").Inc()
		return protocol.SpecReply{Digest: req.Digest, Spec: raw}
	}
	var v protocol.Version
	var found bool
	ss.s.fsm.Read(func(st *State) {
		if p := st.Version(req.Service, req.Version); p != nil {
			v, found = *p, true
		}
	})
	if !found || v.SpecDigest != req.Digest {
		ss.s.metrics.specRequests.WithLabelValues("not_found").Inc()
		what := "is not stored"
		if found {
			what = "has spec " + v.SpecDigest
		}
		return protocol.SpecReply{Error: fmt.Sprintf("%s version %d %s (asked for %s)", req.Service, req.Version, what, req.Digest)}
	}
	raw, digest, err := protocol.EncodeSpec(&v.Spec)
	if err != nil || digest != req.Digest {
		ss.s.metrics.specRequests.WithLabelValues("not_found").Inc()
		return protocol.SpecReply{Error: fmt.Sprintf("%s version %d: spec encodes to %s on this coordinator, not %s", req.Service, req.Version, digest, req.Digest)}
	}
	ss.mu.Lock()
	if len(ss.encoded) >= maxEncodedSpecs {
		clear(ss.encoded)
	}
	ss.encoded[digest] = raw
	ss.mu.Unlock()
	ss.s.metrics.specRequests.WithLabelValues("ok").Inc()
	return protocol.SpecReply{Digest: digest, Spec: raw}
}

// serveSpecs answers SpecRequests until ctx ends.
func (s *Server) serveSpecs(ctx context.Context) {
	ss := &specServer{s: s, encoded: map[string][]byte{}, waiting: make(chan struct{}, 16)}
	sub, err := s.nc.QueueSubscribe(protocol.SubjectSpecGetAll, protocol.QueueCoordinators, ss.onRequest)
	if err != nil {
		s.log.Error("subscribe failed", "subject", protocol.SubjectSpecGetAll, "error", err)
		return
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
}

// compactLog takes a Raft snapshot whenever the commands applied since the
// last one exceed SnapshotBytes: hashicorp/raft counts entries only, and
// a few hundred large entries (a fleet's replicas placed, say) must not
// leave a log that takes seconds to replay.
func (s *Server) compactLog(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n := s.fsm.BytesSinceSnapshot(); n < s.cfg.SnapshotBytes {
			continue
		}
		if err := s.raft.raft.Snapshot().Error(); err != nil {
			s.metrics.snapshots.WithLabelValues("error").Inc()
			s.log.Warn("snapshot failed", "error", err)
			continue
		}
		s.metrics.snapshots.WithLabelValues("ok").Inc()
	}
}
