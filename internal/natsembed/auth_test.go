package natsembed

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// pki is a CA and one certificate per party, made by tlsutil as `baton
// tls` makes them.
type pki struct {
	dir, ca, caKey string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	ca, key, err := tlsutil.CreateCA(dir, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	return &pki{dir: dir, ca: ca, caKey: key}
}

func (p *pki) files(t *testing.T, role, node string) tlsutil.Files {
	t.Helper()
	cert, key, err := tlsutil.CreateCert(p.dir, p.ca, p.caKey, role, node, 1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tlsutil.Files{CA: p.ca, Cert: cert, Key: key}
}

func (p *pki) clientTLS(t *testing.T, role, node string) *tls.Config {
	t.Helper()
	f := tlsutil.Files{CA: p.ca}
	if role != "" {
		f = p.files(t, role, node)
	}
	cfg, err := tlsutil.ClientConfig(f, tlsutil.CoordinatorServerName)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// secured starts a server secured with a coordinator's certificate and
// returns it with an in-process connection that may do anything.
func secured(t *testing.T, p *pki, clusterPort int) (*Server, *nats.Conn, *refusals) {
	t.Helper()
	ref := &refusals{}
	s, err := Start(Config{Port: -1, ClusterPort: clusterPort, Security: &Security{
		TLS:            p.files(t, tlsutil.RoleCoordinator, "c1"),
		InProcessToken: "in-process-secret",
		OnRefuse:       ref.add,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	coord, err := nats.Connect(s.ClientURL(), nats.InProcessServer(s), nats.Token("in-process-secret"))
	if err != nil {
		t.Fatalf("the coordinator's in-process connection: %v", err)
	}
	t.Cleanup(coord.Close)
	return s, coord, ref
}

type refusals struct {
	mu      sync.Mutex
	reasons []string
}

func (r *refusals) add(remote, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
}

func (r *refusals) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reasons) == 0 {
		return ""
	}
	return r.reasons[len(r.reasons)-1]
}

// Connections without a certificate of the cluster's CA with an agent,
// LB or coordinator role are refused: plain text, TLS without a client
// certificate, a CLI certificate, another CA's certificate, a wrong
// in-process token.
func TestSecuredServerRefusesAnonymous(t *testing.T) {
	p := newPKI(t)
	s, _, ref := secured(t, p, 0)
	noRetry := []nats.Option{nats.Timeout(3 * time.Second), nats.NoReconnect()}

	if nc, err := nats.Connect(s.ClientURL(), noRetry...); err == nil {
		nc.Close()
		t.Fatal("a plain-text anonymous connection was accepted")
	}
	if nc, err := nats.Connect(s.ClientURL(), append(noRetry, nats.Secure(p.clientTLS(t, "", "")))...); err == nil {
		nc.Close()
		t.Fatal("a TLS connection without a client certificate was accepted")
	}
	if nc, err := nats.Connect(s.ClientURL(), append(noRetry, nats.Secure(p.clientTLS(t, tlsutil.RoleCLI, "")))...); err == nil {
		nc.Close()
		t.Fatal("a CLI certificate was accepted")
	}
	if r := ref.last(); !strings.Contains(r, "Cli certificate may not connect") {
		t.Errorf("refusal of the CLI certificate said %q", r)
	}
	other := newPKI(t)
	if nc, err := nats.Connect(s.ClientURL(), append(noRetry, nats.Secure(other.clientTLS(t, tlsutil.RoleAgent, "a1")))...); err == nil {
		nc.Close()
		t.Fatal("an agent certificate of another CA was accepted")
	}
	if nc, err := nats.Connect(s.ClientURL(), append(noRetry, nats.InProcessServer(s), nats.Token("guess"))...); err == nil {
		nc.Close()
		t.Fatal("an in-process connection with a wrong token was accepted")
	}
	// An agent's certificate whose node is not an agent id is refused.
	if nc, err := nats.Connect(s.ClientURL(), append(noRetry, nats.Secure(p.clientTLS(t, tlsutil.RoleAgent, "a.b")))...); err == nil {
		nc.Close()
		t.Fatal("an agent certificate for node a.b was accepted")
	}
}

// connectAs connects with the certificate of role and node and collects
// the server's asynchronous errors (permission violations).
func connectAs(t *testing.T, p *pki, s *Server, role, node string) (*nats.Conn, chan error) {
	t.Helper()
	errs := make(chan error, 32)
	nc, err := nats.Connect(s.ClientURL(), nats.Secure(p.clientTLS(t, role, node)),
		nats.CustomInboxPrefix(protocol.InboxPrefix(role, node)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatalf("%s %s: %v", role, node, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// expectViolation waits for a permission violation naming subject.
func expectViolation(t *testing.T, errs chan error, what, subject string) {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return
			}
		case <-deadline:
			t.Fatalf("%s: no permission violation for %s", what, subject)
		}
	}
}

// expectNothing checks that sub receives nothing for a while.
func expectNothing(t *testing.T, sub *nats.Subscription, what string) {
	t.Helper()
	if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("%s: a message got through on %s: %q", what, m.Subject, m.Data)
	}
}

// Each role may publish and subscribe only to its own subjects: agent a1
// cannot report as a2, read a2's desired set or anyone's replies, or
// publish a desired set or a route table; an LB cannot publish a route
// table or a desired set, nor ack as another LB. Their own subjects work,
// requests included.
func TestSecuredServerPermissionsPerRole(t *testing.T) {
	p := newPKI(t)
	s, coord, _ := secured(t, p, 0)
	watch := func(subject string) *nats.Subscription {
		t.Helper()
		sub, err := coord.SubscribeSync(subject)
		if err != nil {
			t.Fatal(err)
		}
		if err := coord.Flush(); err != nil {
			t.Fatal(err)
		}
		return sub
	}
	// The coordinator answers cluster index and spec requests.
	if _, err := coord.Subscribe(protocol.SubjectClusterIndex, func(m *nats.Msg) { _ = m.Respond([]byte(`{"index":7}`)) }); err != nil {
		t.Fatal(err)
	}
	if _, err := coord.Subscribe(protocol.SubjectSpecGetAll, func(m *nats.Msg) { _ = m.Respond([]byte(`{}`)) }); err != nil {
		t.Fatal(err)
	}
	statuses := watch(protocol.SubjectAgentStatusAll)
	desired := watch("baton.agent.*.desired")
	routes := watch(protocol.SubjectRoutesAll)
	acks := watch(protocol.SubjectLBAckAll)

	a1, a1errs := connectAs(t, p, s, tlsutil.RoleAgent, "a1")
	if err := a1.Publish(protocol.AgentStatusSubject("a1"), []byte("own")); err != nil {
		t.Fatal(err)
	}
	if m, err := statuses.NextMsg(3 * time.Second); err != nil || m.Subject != protocol.AgentStatusSubject("a1") {
		t.Fatalf("a1's own status: %v", err)
	}
	if _, err := a1.Request(protocol.SubjectClusterIndex, nil, 3*time.Second); err != nil {
		t.Fatalf("a1 asking the cluster index: %v", err)
	}
	if _, err := a1.Request(protocol.SpecGetSubject("a1"), []byte(`{}`), 3*time.Second); err != nil {
		t.Fatalf("a1 asking for a spec: %v", err)
	}
	for _, forged := range []struct{ what, subject string }{
		{"a1 reporting as a2", protocol.AgentStatusSubject("a2")},
		{"a1 asking a spec as a2", protocol.SpecGetSubject("a2")},
		{"a1 asking a bundle as a2", protocol.BundleGetSubject("a2")},
		{"a1 publishing a desired set", protocol.AgentDesiredSubject("a2")},
		{"a1 publishing a route table", protocol.RoutesSubject("web")},
		{"a1 acking as an LB", protocol.LBAckSubject("lb-1")},
	} {
		if err := a1.Publish(forged.subject, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		expectViolation(t, a1errs, forged.what, forged.subject)
	}
	for _, subject := range []string{protocol.AgentDesiredSubject("a2"), protocol.SubjectRoutesAll, protocol.InboxPrefix("agent", "a2") + ".>", "_INBOX.>", ">"} {
		if _, err := a1.Subscribe(subject, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		expectViolation(t, a1errs, "a1 subscribing to "+subject, subject)
	}

	lb, lberrs := connectAs(t, p, s, tlsutil.RoleLB, "lb-1")
	if err := lb.Publish(protocol.LBAckSubject("lb-1"), []byte("own")); err != nil {
		t.Fatal(err)
	}
	if _, err := acks.NextMsg(3 * time.Second); err != nil {
		t.Fatalf("lb-1's own ack: %v", err)
	}
	got := make(chan *nats.Msg, 4)
	if _, err := lb.Subscribe(protocol.SubjectRoutesAll, func(m *nats.Msg) { got <- m }); err != nil {
		t.Fatal(err)
	}
	if err := lb.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := coord.Publish(protocol.RoutesSubject("web"), []byte("table")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(3 * time.Second):
		t.Fatal("the LB did not get the coordinator's route table")
	}
	if _, err := routes.NextMsg(time.Second); err != nil {
		t.Fatal(err)
	}
	for _, forged := range []struct{ what, subject string }{
		{"LB publishing a route table", protocol.RoutesSubject("web")},
		{"LB publishing a desired set", protocol.AgentDesiredSubject("a1")},
		{"LB acking as another LB", protocol.LBAckSubject("lb-2")},
		{"LB reporting as an agent", protocol.AgentStatusSubject("a1")},
	} {
		if err := lb.Publish(forged.subject, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		expectViolation(t, lberrs, forged.what, forged.subject)
	}
	// Nothing forged reached the coordinator's subscriptions.
	expectNothing(t, statuses, "forged status")
	expectNothing(t, desired, "forged desired set")
	expectNothing(t, routes, "forged route table")
	expectNothing(t, acks, "forged ack")
}

// Two secured servers route to each other over mutual TLS with
// coordinator certificates: a message published on one reaches a
// subscriber on the other.
func TestSecuredServersRoute(t *testing.T) {
	p := newPKI(t)
	var servers []*Server
	var conns []*nats.Conn
	for range 2 {
		s, nc, _ := secured(t, p, -1)
		servers = append(servers, s)
		conns = append(conns, nc)
	}
	urls := []string{servers[0].ClusterURL(), servers[1].ClusterURL()}
	for _, s := range servers {
		if err := s.SetRoutes(urls); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, func() error {
		for i, s := range servers {
			if s.NumRoutes() < 1 {
				return fmt.Errorf("server %d has no route", i)
			}
		}
		return nil
	})
	sub, err := conns[1].SubscribeSync("hello")
	if err != nil {
		t.Fatal(err)
	}
	_ = conns[1].Flush()
	waitFor(t, 10*time.Second, func() error {
		_ = conns[0].Publish("hello", []byte("world"))
		if _, err := sub.NextMsg(100 * time.Millisecond); err != nil {
			return fmt.Errorf("not routed: %v", err)
		}
		return nil
	})
}
