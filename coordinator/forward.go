package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// Any coordinator answers. A write that reaches a follower is forwarded
// to the leader and the leader's answer returned unchanged; a read is
// answered from the local state with headers saying how fresh it is, or,
// with ?consistent, by the leader after it made sure it still leads.

// hopsHeader counts how many coordinators forwarded a request; a request
// is forwarded at most maxForwardHops times (two coordinators that each
// think the other leads, during an election, must not bounce it forever).
const (
	hopsHeader     = "X-Baton-Forward-Hops"
	maxForwardHops = 2
)

// forwardKey marks a write request whose body was read into memory, so
// that it can still be forwarded when the local apply finds this node no
// longer leads.
type forwardKey struct{}

// consistentKey marks a read that the leader verified (never stale).
type consistentKey struct{}

// holdTimeout is how long a request waits for a leader (during an
// election) before it is refused: five Raft timeouts, from 1 to 5 s.
func (s *Server) holdTimeout() time.Duration {
	return min(max(5*s.cfg.RaftTimeout, time.Second), 5*time.Second)
}

// newPeerClient returns the client that carries this coordinator's
// requests to another coordinator's API (forwarded requests, the bootstrap
// check), and the scheme to use: plain "http", or with cfg.TLS "https",
// verifying the other's certificate as a coordinator's (server.baton,
// whatever address is dialed) and presenting this one's own.
//
// A forwarded write is one Raft apply (10 s at most). Each request takes a
// fresh connection: on a kept-alive one whose leader was just killed, the
// write fails after it was sent and would have to be reported as an
// unknown outcome, though no process received it; on a fresh one that
// leader's death is a refused dial, and the write goes to the next leader.
// A connection costs a fraction of a millisecond on a LAN (a TLS handshake
// a millisecond or two).
func newPeerClient(cfg Config) (*http.Client, string, error) {
	tr := &http.Transport{
		DialContext:       (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		DisableKeepAlives: true,
	}
	scheme := "http"
	if cfg.TLS.Enabled() {
		tc, err := tlsutil.ClientConfig(cfg.TLS, tlsutil.CoordinatorServerName)
		if err != nil {
			return nil, "", fmt.Errorf("coordinator: %w", err)
		}
		tr.TLSClientConfig = tc
		tr.TLSHandshakeTimeout = 5 * time.Second
		scheme = "https"
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}, scheme, nil
}

// write wraps a handler that changes state. On a node that does not lead
// the request goes to the leader; on the leader it is handled here, and
// forwarded after all if the apply finds leadership gone (see
// applyError). Writes are refused at once when gossip shows a majority
// of the coordinators down.
func (s *Server) write(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
		if err != nil {
			writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, r.Method+" "+r.URL.Path+": request body: "+err.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if msg := s.noQuorum(); msg != "" {
			writeError(w, http.StatusServiceUnavailable, protocol.CodeNoQuorum, msg)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), forwardKey{}, body))
		if s.raft.raft.State() != raft.Leader {
			s.forward(w, r, body, h)
			return
		}
		h(w, r)
	}
}

// read wraps a handler that reads state: it sets the freshness headers,
// and serves ?consistent through the leader.
func (s *Server) read(h http.HandlerFunc) http.HandlerFunc {
	// consistent serves a ?consistent read on this node, which must lead;
	// forward calls it too when this node comes to lead while it waits.
	var consistent http.HandlerFunc
	consistent = func(w http.ResponseWriter, r *http.Request) {
		// A barrier commits in this term and returns once the FSM has
		// applied everything before it: the state read after it holds
		// every write acknowledged before the read began.
		if err := s.raft.raft.Barrier(s.holdTimeout()).Error(); err != nil {
			if (errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost)) && r.Context().Value(forwardKey{}) == nil {
				s.forward(w, r.WithContext(context.WithValue(r.Context(), forwardKey{}, []byte(nil))), nil, consistent)
				return
			}
			writeError(w, http.StatusServiceUnavailable, protocol.CodeNoLeader,
				"cannot confirm leadership for a consistent read: "+err.Error()+"; retry shortly")
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), consistentKey{}, true))
		s.setFreshness(w, r)
		h(w, r)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("consistent") {
			if s.raft.raft.State() != raft.Leader {
				s.forward(w, r, nil, consistent)
				return
			}
			consistent(w, r)
			return
		}
		s.setFreshness(w, r)
		h(w, r)
	}
}

// freshness says how fresh a read answered here is: the FSM's index and
// whether it may miss recent writes.
func (s *Server) freshness(r *http.Request) (index uint64, stale bool, knownLeader bool, lastContact time.Duration) {
	index = s.fsm.Index()
	if v, _ := r.Context().Value(consistentKey{}).(bool); v {
		return index, false, true, 0
	}
	if s.raft.raft.State() == raft.Leader {
		// A leader cut off from a majority leads until its lease runs out.
		return index, s.noQuorum() != "", true, 0
	}
	_, id := s.raft.raft.LeaderWithID()
	knownLeader = id != ""
	if lc := s.raft.raft.LastContact(); !lc.IsZero() {
		lastContact = time.Since(lc)
	} else {
		lastContact = -1
	}
	stale = !knownLeader || lastContact < 0 || lastContact > s.staleAfter() ||
		(s.pool != nil && !s.memberAlive(membership.RoleCoordinator, string(id))) || s.noQuorum() != ""
	return index, stale, knownLeader, lastContact
}

// staleAfter is how long a follower may go without hearing from the
// leader before its reads are marked stale: a Raft timeout, at least
// 500 ms.
func (s *Server) staleAfter() time.Duration { return max(s.cfg.RaftTimeout, 500*time.Millisecond) }

func (s *Server) setFreshness(w http.ResponseWriter, r *http.Request) {
	index, stale, known, lc := s.freshness(r)
	h := w.Header()
	h.Set(protocol.HeaderIndex, strconv.FormatUint(index, 10))
	h.Set(protocol.HeaderKnownLeader, strconv.FormatBool(known))
	ms := lc.Milliseconds()
	if lc < 0 {
		ms = -1
	}
	h.Set(protocol.HeaderLastContact, strconv.FormatInt(ms, 10))
	h.Set(protocol.HeaderStale, strconv.FormatBool(stale))
}

// leaderAPI returns the leader's id and API address ("" when unknown, or
// when this node leads).
func (s *Server) leaderAPI() (id, api string) {
	_, lid := s.raft.raft.LeaderWithID()
	id = string(lid)
	if id == "" || id == s.cfg.NodeID || s.pool == nil {
		return id, ""
	}
	if m, ok := s.pool.Member(membership.RoleCoordinator, id); ok {
		return id, m.Meta.API
	}
	return id, ""
}

// forward sends r (with body, already read) to the leader and copies its
// answer. While no leader is known it waits up to holdTimeout; if this
// node becomes the leader meanwhile, h handles the request here (h nil:
// answer not_leader).
func (s *Server) forward(w http.ResponseWriter, r *http.Request, body []byte, h http.HandlerFunc) {
	hops := 0
	if v := r.Header.Get(hopsHeader); v != "" {
		var err error
		if hops, err = strconv.Atoi(v); err != nil || hops < 0 {
			hops = maxForwardHops
		}
	}
	if hops >= maxForwardHops {
		writeError(w, http.StatusServiceUnavailable, protocol.CodeNotLeader, fmt.Sprintf(
			"forwarded %d times without reaching the leader (an election is under way); retry shortly", hops))
		return
	}
	deadline := time.Now().Add(s.holdTimeout())
	var lastErr error
	for {
		if s.raft.raft.State() == raft.Leader {
			if h == nil {
				writeError(w, http.StatusServiceUnavailable, protocol.CodeNotLeader,
					"leadership changed while applying; nothing was done; retry")
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			h(w, r)
			return
		}
		id, api := s.leaderAPI()
		if api != "" {
			sent, err := s.proxyTo(w, r, body, api, hops+1)
			if err == nil {
				return
			}
			if sent && body == nil && r.Method == http.MethodGet {
				// A read changes nothing: try again, maybe elsewhere.
				lastErr = fmt.Errorf("leader %s at %s: %w", id, api, err)
			} else if sent {
				writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, fmt.Sprintf(
					"forwarded to the leader %s at %s, which did not answer (%v); the change may or may not have been made: check `baton serve status` before retrying", id, api, err))
				return
			} else {
				lastErr = fmt.Errorf("leader %s at %s: %w", id, api, err)
			}
		}
		if msg := s.noQuorum(); msg != "" {
			writeError(w, http.StatusServiceUnavailable, protocol.CodeNoQuorum, msg)
			return
		}
		if time.Now().After(deadline) || r.Context().Err() != nil {
			writeError(w, http.StatusServiceUnavailable, protocol.CodeNoLeader, s.noLeaderMessage(lastErr))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// noLeaderMessage explains why no leader could be reached.
func (s *Server) noLeaderMessage(lastErr error) string {
	_, voters, _ := s.quorum()
	switch {
	case voters == 0 && s.cfg.BootstrapExpect > 0:
		return fmt.Sprintf("coordinator %s is not in a Raft cluster yet: it waits for %d coordinators to find each other over gossip; retry shortly",
			s.cfg.NodeID, s.cfg.BootstrapExpect)
	case voters == 0:
		return fmt.Sprintf("coordinator %s is not in a Raft cluster yet: it waits for the leader to add it; retry shortly", s.cfg.NodeID)
	case lastErr != nil:
		return fmt.Sprintf("no leader reachable within %s (%v); retry shortly", s.holdTimeout(), lastErr)
	}
	return fmt.Sprintf("no leader elected within %s (an election is under way among %d coordinators); retry shortly", s.holdTimeout(), voters)
}

// proxyTo sends the request to the coordinator API at addr and copies
// the answer to w. sent is false when the request surely never reached
// it (the connection could not be made), so it may go elsewhere.
func (s *Server) proxyTo(w http.ResponseWriter, r *http.Request, body []byte, addr string, hops int) (sent bool, err error) {
	u := *r.URL
	u.Scheme, u.Host = s.peerScheme, addr
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), rd)
	if err != nil {
		return false, err
	}
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	req.Header.Set(hopsHeader, strconv.Itoa(hops))
	req.Header.Set("X-Forwarded-For", r.RemoteAddr)
	resp, err := s.peers.Do(req)
	if err != nil {
		var op *net.OpError
		if (errors.As(err, &op) && op.Op == "dial") || tlsutil.IsHandshakeError(err) {
			// No connection, or the TLS handshake failed: the
			// request was never sent.
			return false, err
		}
		return true, err
	}
	defer resp.Body.Close()
	s.metrics.forwarded.WithLabelValues(r.Method).Inc()
	for k, vs := range resp.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Connection", "Keep-Alive", "Transfer-Encoding", "Te", "Trailer", "Upgrade", "Proxy-Connection":
			continue // hop-by-hop: about the connection to the leader
		}
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	return true, nil
}

// applyError writes a write handler's error; a command refused because
// this node no longer leads is forwarded to the new leader.
func (s *Server) applyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrNotLeader) {
		if body, ok := r.Context().Value(forwardKey{}).([]byte); ok {
			s.forward(w, r, body, nil)
			return
		}
	}
	writeApplyError(w, err)
}
