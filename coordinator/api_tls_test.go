package coordinator_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/coordinator"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// httpsClient trusts f.CA (and presents f's certificate when it has one).
func httpsClient(t *testing.T, f tlsutil.Files) *http.Client {
	t.Helper()
	tc, err := tlsutil.ClientConfig(f, "")
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
}

// call sends one request with cl and returns the status and body.
func call(t *testing.T, cl *http.Client, method, url string, body any) (int, []byte, error) {
	t.Helper()
	a, err := callAnswer(t, cl, method, url, body)
	return a.code, a.body, err
}

// callAnswer is call with the answer's headers.
func callAnswer(t *testing.T, cl *http.Client, method, url string, body any) (answer, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	resp, err := cl.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}, nil
}

// With --tls-* the API is HTTPS: a client trusting the cluster's CA is
// answered; a plain HTTP request is refused with 400 and changes
// nothing; a client trusting another CA cannot connect.
func TestAPIHTTPS(t *testing.T) {
	pki := testutil.NewPKI(t)
	cfg := coordinator.DevConfig()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	cfg.GossipAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	cfg.NATSPort = -1
	cfg.TLS = pki.Cert(tlsutil.RoleCoordinator, "c1")
	s, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "https://" + s.HTTPAddr()

	// The CLI has the CA and no certificate of its own.
	cli := httpsClient(t, tlsutil.Files{CA: pki.CACert})
	testutil.WaitFor(t, 10*time.Second, func() error {
		code, body, err := call(t, cli, "GET", base+"/v1/status", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("GET /v1/status over https: %d %s %v", code, body, err)
		}
		return nil
	})
	// A client certificate signed by the CA is accepted too.
	withCert := httpsClient(t, pki.Cert(tlsutil.RoleCLI, ""))
	if code, body, err := call(t, withCert, "GET", base+"/v1/status", nil); err != nil || code != 200 {
		t.Fatalf("https with a client certificate: %d %s %v", code, body, err)
	}

	// Plain HTTP to the HTTPS port: refused, nothing done.
	up := protocol.UpRequest{Name: "web", YAML: clusterTask}
	code, body, err := call(t, http.DefaultClient, "POST", "http://"+s.HTTPAddr()+"/v1/services", up)
	if err != nil || code != http.StatusBadRequest || !strings.Contains(string(body), "Client sent an HTTP request to an HTTPS server") {
		t.Fatalf("plain http to the https API: %d %q %v; want 400 naming https", code, body, err)
	}

	// A client that trusts another CA does not get through, and neither
	// does one presenting a certificate of another CA.
	other := testutil.NewPKI(t)
	if _, _, err := call(t, httpsClient(t, tlsutil.Files{CA: other.CACert}), "POST", base+"/v1/services", up); err == nil || !tlsutil.IsHandshakeError(err) {
		t.Fatalf("client trusting another CA: err %v, want a certificate verification error", err)
	}
	foreign := other.Cert(tlsutil.RoleCLI, "")
	foreign.CA = pki.CACert
	if code, body, err := call(t, httpsClient(t, foreign), "POST", base+"/v1/services", up); err == nil || !tlsutil.IsHandshakeError(err) {
		t.Fatalf("client certificate of another CA: %d %s %v, want a refused handshake", code, body, err)
	}

	// None of those made a service.
	code, body, err = call(t, cli, "GET", base+"/v1/status?consistent", nil)
	var st protocol.StatusResponse
	if err != nil || code != 200 || json.Unmarshal(body, &st) != nil || len(st.Services) != 0 {
		t.Fatalf("status after refused requests: %d %s %v; want no services", code, body, err)
	}
	// The same request over https is served.
	if code, body, err := call(t, cli, "POST", base+"/v1/services", up); err != nil || code != http.StatusCreated {
		t.Fatalf("up over https: %d %s %v", code, body, err)
	}
}

// A raw TLS dial with the wrong server name fails: coordinators dial each
// other as server.baton, which a CLI's certificate does not hold.
func TestCoordinatorCertNames(t *testing.T) {
	pki := testutil.NewPKI(t)
	srv, err := tlsutil.ServerConfig(pki.Cert(tlsutil.RoleAgent, "a1"), false)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	cl, err := tlsutil.ClientConfig(pki.Cert(tlsutil.RoleCoordinator, "c1"), "server.baton")
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), cl)
	if err == nil {
		c.Close()
		t.Fatal("an agent's certificate passed as a coordinator's (server.baton)")
	}
	if !tlsutil.IsHandshakeError(err) {
		t.Fatalf("err %v: want a handshake error", err)
	}
}

// Three coordinators with TLS: a write sent to a follower is forwarded to
// the leader over HTTPS and answered; the bootstrap check between them
// (GET raft/peers) goes over HTTPS too, or they would never form a
// cluster.
func TestCoordinatorClusterTLS(t *testing.T) {
	pki := testutil.NewPKI(t)
	// Registered first, so its cleanup runs last, after the nodes stop.
	logs := newLateSafeWriter(t)
	c := newRaftClusterWith(t, 3, func(i int, cfg *coordinator.Config) {
		cfg.TLS = pki.Cert(tlsutil.RoleCoordinator, cfg.NodeID)
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	l := c.leader()
	f := (l + 1) % 3
	cli := httpsClient(t, tlsutil.Files{CA: pki.CACert})
	follower := "https://" + c.nodes[f].HTTPAddr()

	up := protocol.UpRequest{Name: "svc", YAML: clusterTask}
	var a answer
	testutil.WaitFor(t, 15*time.Second, func() error {
		var err error
		a, err = callAnswer(t, cli, "POST", follower+"/v1/services", up)
		if err != nil {
			return err
		}
		if a.code == http.StatusServiceUnavailable {
			return fmt.Errorf("up via follower: %d %s", a.code, a.body)
		}
		return nil
	})
	if a.code != http.StatusCreated || a.header.Get(protocol.HeaderServedBy) != c.cfgs[l].NodeID {
		t.Fatalf("up via follower over https: %d served by %q: %s", a.code, a.header.Get(protocol.HeaderServedBy), a.body)
	}
	var resp protocol.ServiceResponse
	if err := json.Unmarshal(a.body, &resp); err != nil || resp.Name != "svc" {
		t.Fatalf("up via follower: %s (%v)", a.body, err)
	}
	code, body, err := call(t, cli, "GET", follower+"/v1/status?consistent", nil)
	var st protocol.StatusResponse
	if err != nil || code != 200 || json.Unmarshal(body, &st) != nil || len(st.Services) != 1 {
		t.Fatalf("consistent read via follower over https: %d %s %v", code, body, err)
	}
	// The follower's API refuses plain HTTP as the leader's does.
	if code, _, err := call(t, http.DefaultClient, "GET", "http://"+c.nodes[f].HTTPAddr()+"/v1/status", nil); err != nil || code != http.StatusBadRequest {
		t.Fatalf("plain http to a follower: %d %v", code, err)
	}
}

// lateSafeWriter sends log lines to t.Log until the test's cleanups are
// done, then drops them: memberlist's suspicion timers may still log
// about a peer after its pool shut down, and t.Log panics after a test
// completed.
type lateSafeWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func newLateSafeWriter(t *testing.T) *lateSafeWriter {
	w := &lateSafeWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return w
}

func (w *lateSafeWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}
