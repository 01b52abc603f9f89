package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// A replica's log stays on the agent that ran it; the coordinator fetches
// it from that agent's GET /v1/replicas/{service}/{id}/logs and streams it
// on. With Config.TLS agents serve that over HTTPS to coordinators only,
// and the coordinator dials them over mutual TLS: it trusts the CA,
// presents its own certificate, verifies the agent's under the name every
// agent certificate holds (agentServerName) and then checks that it is
// the certificate of the very agent the replica is on (role agent, node
// its id). Host names and addresses are not identities: agents' addresses
// are reused (an agent moves, another takes its port), and every agent's
// certificate holds agent.baton and 127.0.0.1.

// agentServerName is the DNS name in every agent's certificate.
const agentServerName = "agent.baton"

// Timeouts of a logs fetch. A followed log streams for as long as the
// client reads, so the request itself has no deadline.
const (
	agentDialTimeout      = 5 * time.Second
	agentHandshakeTimeout = 5 * time.Second
	agentHeaderTimeout    = 10 * time.Second
)

// agentIDKey carries the id of the agent a logs request is meant for to
// the dial that verifies its certificate.
type agentIDKey struct{}

// agentLogs serves GET /v1/services/{name}/replicas/{id}/logs.
type agentLogs struct {
	s *Server
	// client reaches agents, with scheme "http", or "https" with
	// Config.TLS; one for the server's life.
	client *http.Client
	scheme string
	// err is why the TLS client could not be made; every request is
	// answered with it. New has loaded the same files for newPeerClient
	// already, so only files removed since get here.
	err error
}

// newAgentLogs returns the logs handler with its client.
//
// With TLS the client dials each connection itself (DialTLSContext) to
// verify it for the agent its request names, and keeps no connection
// alive: a pooled connection, verified for one agent, would otherwise be
// handed to a request for another agent that is now at the same address.
// A handshake per logs request costs a millisecond or two; logs are
// fetched when people ask for them.
func (s *Server) newAgentLogs() *agentLogs {
	dialer := &net.Dialer{Timeout: agentDialTimeout}
	tr := &http.Transport{
		DialContext:           dialer.DialContext,
		DisableKeepAlives:     true,
		ResponseHeaderTimeout: agentHeaderTimeout,
	}
	l := &agentLogs{s: s, client: &http.Client{Transport: tr}, scheme: "http"}
	if !s.cfg.TLS.Enabled() {
		return l
	}
	l.scheme = "https"
	base, err := tlsutil.ClientConfig(s.cfg.TLS, agentServerName)
	if err != nil {
		l.err = fmt.Errorf("coordinator TLS client for agents: %w", err)
		return l
	}
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		want, _ := ctx.Value(agentIDKey{}).(string)
		raw, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cfg := base.Clone()
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyAgent(&cs, want) }
		conn := tls.Client(raw, cfg)
		hctx, cancel := context.WithTimeout(ctx, agentHandshakeTimeout)
		defer cancel()
		if err := conn.HandshakeContext(hctx); err != nil {
			raw.Close()
			return nil, err
		}
		return conn, nil
	}
	return l
}

// agentIdentityError says that the server at an agent's address holds a
// certificate of this cluster's CA that is not that agent's.
type agentIdentityError struct {
	want       string // the agent expected
	role, node string // what the certificate says
	hasRole    bool
}

func (e *agentIdentityError) Error() string {
	switch {
	case !e.hasRole:
		return "the server there holds a certificate without a baton role, not an agent's"
	case e.role != tlsutil.RoleAgent:
		return fmt.Sprintf("the server there holds a certificate of role %s (node %q), not an agent's", e.role, e.node)
	}
	return fmt.Sprintf("the server there holds the certificate of agent %q, not of agent %q", e.node, e.want)
}

// verifyAgent checks that a verified connection's peer is agent want.
func verifyAgent(cs *tls.ConnectionState, want string) error {
	role, node, ok := tlsutil.PeerRole(cs)
	if ok && role == tlsutil.RoleAgent && node == want && want != "" {
		return nil
	}
	return &agentIdentityError{want: want, role: role, node: node, hasRole: ok}
}

// handle streams a replica's log from the agent it was placed on.
func (l *agentLogs) handle(w http.ResponseWriter, r *http.Request) {
	s := l.s
	if !s.awaitCaughtUp(w, r) {
		return
	}
	name := r.PathValue("name")
	if !mayTouch(w, r, name) {
		return
	}
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, "replica id must be a number, like 3")
		return
	}
	var agentAddr, agentID string
	var found, svcFound bool
	s.fsm.Read(func(st *State) {
		_, svcFound = st.Services[name]
		if rep, ok := st.Replicas[protocol.ReplicaKey(name, id)]; ok {
			found = true
			agentID = rep.AgentID
			if a := st.Agents[rep.AgentID]; a != nil {
				agentAddr = a.Address
			}
		}
	})
	switch {
	case !svcFound:
		writeError(w, http.StatusNotFound, protocol.CodeNotFound, fmt.Sprintf("service %q not found", name))
		return
	case !found:
		writeError(w, http.StatusNotFound, protocol.CodeNotFound,
			fmt.Sprintf("replica %d of service %q not found; `baton serve status %s` lists its replicas", id, name, name))
		return
	case agentAddr == "":
		writeError(w, http.StatusConflict, protocol.CodeUnavailable,
			fmt.Sprintf("replica %d has not been placed on an agent yet, so it has no logs", id))
		return
	case l.err != nil:
		writeError(w, http.StatusInternalServerError, protocol.CodeInternal, l.err.Error())
		return
	}
	u := url.URL{Scheme: l.scheme, Host: agentAddr,
		Path:     fmt.Sprintf("/v1/replicas/%s/%d/logs", url.PathEscape(name), id),
		RawQuery: r.URL.RawQuery}
	ctx := context.WithValue(r.Context(), agentIDKey{}, agentID)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		writeError(w, http.StatusInternalServerError, protocol.CodeInternal, err.Error())
		return
	}
	resp, err := l.client.Do(req)
	if err != nil {
		writeError(w, http.StatusBadGateway, protocol.CodeUnavailable, agentError(agentID, agentAddr, err))
		return
	}
	defer resp.Body.Close()
	if l.scheme == "https" {
		// The dial verified this connection for agentID; checked again
		// here so that no change to how connections are pooled can
		// stream another agent's answer.
		if err := verifyAgent(resp.TLS, agentID); err != nil {
			writeError(w, http.StatusBadGateway, protocol.CodeUnavailable, agentError(agentID, agentAddr, err))
			return
		}
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// agentError is the message of a logs fetch that failed before the agent
// answered: what happened, and what to check.
func agentError(agentID, addr string, err error) string {
	var ident *agentIdentityError
	switch {
	case errors.As(err, &ident):
		return fmt.Sprintf("refused to fetch logs from agent %s at %s: %v; the agent may have moved and another taken its address, or it runs with another agent's certificate (give each agent the one made with `baton tls cert create --agent --node <its id>`)",
			agentID, addr, ident)
	case tlsutil.IsHandshakeError(err):
		return fmt.Sprintf("cannot fetch logs from agent %s at %s: the TLS handshake failed: %v; check that the agent runs with --tls-ca, --tls-cert and --tls-key of this cluster's CA", agentID, addr, err)
	}
	return fmt.Sprintf("cannot reach agent %s at %s for logs: %v", agentID, addr, err)
}
