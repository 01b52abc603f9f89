package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/protocol"
)

// Agents fetch bundles in chunks over NATS (protocol.BundleChunkRequest on
// protocol.BundleGetSubject), from whichever coordinator the queue group
// picks: leader or not, as for specs (specs.go). A bundle goes only to an
// agent that has a replica of a version naming it. A coordinator that
// lacks the bundle fetches it from another coordinator first, so an
// agent is served as long as one coordinator holds it.

// bundleSubjectPrefix starts protocol.BundleGetSubject, before the agent
// id.
const bundleSubjectPrefix = "baton.bundles.get."

// bundleFetchWait bounds how long a chunk request waits for this
// coordinator to fetch the bundle from another; past it the agent is
// told to retry (the fetch goes on).
const bundleFetchWait = 10 * time.Second

// onChunkRequest answers one chunk request. The common case (the agent
// is known to run the version, the file is here) is read and answered by
// one of maxChunkReads workers; a request that must wait for its
// placement to be applied here, or for the bundle to be fetched, waits in
// a goroutine of its own (at most maxChunkWaiting of them).
func (b *bundleService) onChunkRequest(m *nats.Msg) {
	var req protocol.BundleChunkRequest
	if !b.s.decodeMessage(m, 4<<10, &req, req.Validate) || !b.s.replyable(m) {
		b.s.metrics.bundleChunkRequests.WithLabelValues("invalid").Inc()
		return
	}
	agentID := protocol.SenderOf(m.Subject, bundleSubjectPrefix)
	if b.assigned(agentID, req.Digest) {
		if _, ok := b.store.stat(req.Digest); ok {
			// Waiting here for a worker holds the next requests in NATS:
			// disk reads set the pace.
			b.chunkSlots <- struct{}{}
			started := b.goBackground(func(context.Context) {
				defer func() { <-b.chunkSlots }()
				b.respondChunk(m, req)
			})
			if !started {
				<-b.chunkSlots
			}
			return
		}
	}
	select {
	case b.waiting <- struct{}{}:
	default:
		b.refuse(m, "busy", "coordinator %s has %d bundle requests waiting; retry shortly", b.s.cfg.NodeID, maxChunkWaiting)
		return
	}
	started := b.goBackground(func(ctx context.Context) {
		defer func() { <-b.waiting }()
		b.respondSlowly(ctx, m, agentID, req)
	})
	if !started {
		<-b.waiting
	}
}

// respondSlowly answers a request that may have to wait: for this node
// to apply the placement the agent asks for (the leader sent the agent
// its desired set just after committing it), then for the bundle to be
// fetched from another coordinator.
func (b *bundleService) respondSlowly(ctx context.Context, m *nats.Msg, agentID string, req protocol.BundleChunkRequest) {
	deadline := time.Now().Add(assignmentWait)
	for !b.assigned(agentID, req.Digest) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			b.refuse(m, "not_assigned", "agent %q runs no replica of a version naming bundle %s: a bundle goes only to the agents that run it", agentID, req.Digest)
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	fctx, cancel := context.WithTimeout(ctx, bundleFetchWait)
	defer cancel()
	if err := b.ensure(fctx, req.Digest); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			b.refuse(m, "busy", "coordinator %s is still fetching bundle %s from another coordinator; retry shortly", b.s.cfg.NodeID, req.Digest)
			return
		}
		b.refuse(m, "not_found", "coordinator %s lacks bundle %s and could not fetch it: %v", b.s.cfg.NodeID, req.Digest, err)
		return
	}
	b.chunkSlots <- struct{}{}
	defer func() { <-b.chunkSlots }()
	b.respondChunk(m, req)
}

// assigned reports whether the agent has a replica (in this node's
// state) of a version that names the bundle.
func (b *bundleService) assigned(agentID, digest string) bool {
	if agentID == "" {
		return false
	}
	// An indexed copy, made once per change of the state: an agent asks
	// for a large bundle in hundreds of chunks.
	st := b.s.fsm.State()
	for _, r := range st.AgentReplicas(agentID) {
		if v := st.Version(r.Service, r.Version); v != nil && v.Spec.Bundle == digest {
			return true
		}
	}
	return false
}

// respondChunk reads the chunk asked for and sends it, with the bundle's
// size in HeaderBundleSize. A request from the end of the bundle gets no
// bytes.
func (b *bundleService) respondChunk(m *nats.Msg, req protocol.BundleChunkRequest) {
	f, fi, err := b.store.open(req.Digest)
	if err != nil {
		b.refuse(m, "not_found", "coordinator %s lost its copy of bundle %s; retry", b.s.cfg.NodeID, req.Digest)
		return
	}
	defer f.Close()
	size := fi.Size()
	if req.Offset > size {
		b.refuse(m, "invalid", "offset %d is past the end of bundle %s (%d bytes)", req.Offset, req.Digest, size)
		return
	}
	bufp := b.bufs.Get().(*[]byte)
	defer b.bufs.Put(bufp)
	buf := (*bufp)[:min(int64(req.Length), size-req.Offset)]
	if n, err := f.ReadAt(buf, req.Offset); n < len(buf) {
		b.log.Warn("bundle chunk not read", "digest", req.Digest, "offset", req.Offset, "error", err)
		b.refuse(m, "not_found", "coordinator %s could not read bundle %s: %v", b.s.cfg.NodeID, req.Digest, err)
		return
	}
	reply := &nats.Msg{Header: nats.Header{}, Data: buf}
	reply.Header.Set(protocol.HeaderBundleSize, strconv.FormatInt(size, 10))
	// The connection copies the data before RespondMsg returns: the buffer
	// may go back to the pool.
	if err := m.RespondMsg(reply); err != nil {
		b.log.Debug("bundle chunk reply failed", "error", err)
		return
	}
	b.s.metrics.bundleChunkRequests.WithLabelValues("ok").Inc()
	b.s.metrics.bundleChunkBytes.Add(float64(len(buf)))
}

// refuse answers a chunk request with HeaderBundleError and no bytes.
func (b *bundleService) refuse(m *nats.Msg, result, format string, args ...any) {
	b.s.metrics.bundleChunkRequests.WithLabelValues(result).Inc()
	reply := &nats.Msg{Header: nats.Header{}}
	reply.Header.Set(protocol.HeaderBundleError, fmt.Sprintf(format, args...))
	if err := m.RespondMsg(reply); err != nil {
		b.log.Debug("bundle refusal not sent", "error", err)
	}
}
