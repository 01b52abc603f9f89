package agent

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/agent/replicalog"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// tlsClient dials as f (its CA trusted, its certificate presented when it
// has one) and verifies the server as an agent, as the coordinator does.
func tlsClient(t *testing.T, f tlsutil.Files) *http.Client {
	t.Helper()
	tc, err := tlsutil.ClientConfig(f, "agent.baton")
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
}

// startTLSAgent makes agent a1 with TLS files f and serves its HTTP server
// (newHTTPServer, as Run does) over TLS on a loopback port; replica web/1
// has logLine in its log. It returns the server's address.
func startTLSAgent(t *testing.T, f tlsutil.Files, logLine string) string {
	t.Helper()
	a, err := New(Config{
		ID:           "a1",
		DataDir:      t.TempDir(),
		CPUs:         1,
		MemoryGB:     1,
		Accelerators: "A100:1",
		ReplicaUser:  currentUser(t),
		TLS:          f,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := a.replicaDir("web", 1)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := replicalog.Open(dir, 1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, logLine+"\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()

	srv, err := a.newHTTPServer()
	if err != nil {
		t.Fatal(err)
	}
	if srv.TLSConfig == nil {
		t.Fatal("newHTTPServer: no TLSConfig with Config.TLS set")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	return ln.Addr().String()
}

// With TLS, the agent serves HTTPS only; logs and status go to clients
// with a coordinator's certificate alone, while /healthz and /metrics are
// open to any client over TLS.
func TestAgentHTTPSCoordinatorsOnly(t *testing.T) {
	t.Parallel()
	pki := testutil.NewPKI(t)
	const secret = "secret-log-line-7f3a"
	addr := startTLSAgent(t, pki.Cert(tlsutil.RoleAgent, "a1"), secret)
	base := "https://" + addr
	other := testutil.NewPKI(t)
	foreign := other.Cert(tlsutil.RoleCoordinator, "c1")
	foreign.CA = pki.CACert // trusts this cluster, holds another CA's certificate

	clients := map[string]*http.Client{
		"none":        tlsClient(t, tlsutil.Files{CA: pki.CACert}),
		"coordinator": tlsClient(t, pki.Cert(tlsutil.RoleCoordinator, "c1")),
		"lb":          tlsClient(t, pki.Cert(tlsutil.RoleLB, "lb-1")),
		"cli":         tlsClient(t, pki.Cert(tlsutil.RoleCLI, "")),
		"agent":       tlsClient(t, pki.Cert(tlsutil.RoleAgent, "a2")),
		"foreign":     tlsClient(t, foreign),
	}
	const logs, status = "/v1/replicas/web/1/logs", "/v1/status"
	tests := []struct {
		name     string
		client   string
		path     string
		wantCode int
		wantErr  string // the APIError code, or "" for a 200
		wantMsg  string // in the body, or in the error's message
		wantTLS  bool   // the handshake fails instead
	}{
		{name: "coordinator reads logs", client: "coordinator", path: logs, wantCode: 200, wantMsg: secret},
		{name: "coordinator reads status", client: "coordinator", path: status, wantCode: 200, wantMsg: `"id":"a1"`},
		{name: "no certificate: logs", client: "none", path: logs, wantCode: 401, wantErr: protocol.CodeUnauthenticated, wantMsg: "no client certificate: agent a1 serves this to coordinators only"},
		{name: "no certificate: status", client: "none", path: status, wantCode: 401, wantErr: protocol.CodeUnauthenticated, wantMsg: "GET /v1/status: no client certificate"},
		{name: "lb certificate", client: "lb", path: logs, wantCode: 403, wantErr: protocol.CodePermissionDenied, wantMsg: "a certificate of role lb (node lb-1) may not read this"},
		{name: "cli certificate", client: "cli", path: logs, wantCode: 403, wantErr: protocol.CodePermissionDenied, wantMsg: "a certificate of role cli may not read this"},
		{name: "another agent's certificate", client: "agent", path: status, wantCode: 403, wantErr: protocol.CodePermissionDenied, wantMsg: "role agent (node a2)"},
		{name: "certificate of another CA", client: "foreign", path: logs, wantTLS: true},
		{name: "healthz without certificate", client: "none", path: "/healthz", wantCode: 200, wantMsg: "ok\n"},
		{name: "metrics without certificate", client: "none", path: "/metrics", wantCode: 200, wantMsg: "baton_agent_"},
		{name: "healthz with an lb certificate", client: "lb", path: "/healthz", wantCode: 200, wantMsg: "ok\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := clients[tt.client].Get(base + tt.path)
			if tt.wantTLS {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("GET %s answered %d; want a refused handshake", tt.path, resp.StatusCode)
				}
				if !tlsutil.IsHandshakeError(err) {
					t.Fatalf("GET %s: %v; want a handshake error", tt.path, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("GET %s: %v", tt.path, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("GET %s: %d %q; want %d", tt.path, resp.StatusCode, body, tt.wantCode)
			}
			if tt.wantErr == "" {
				if !strings.Contains(string(body), tt.wantMsg) {
					t.Fatalf("GET %s: %q; want it to contain %q", tt.path, body, tt.wantMsg)
				}
				return
			}
			var apiErr protocol.APIError
			if err := json.Unmarshal(body, &apiErr); err != nil || apiErr.Code != tt.wantErr || !strings.Contains(apiErr.Message, tt.wantMsg) {
				t.Fatalf("GET %s: error %q (%v); want code %q and a message containing %q", tt.path, body, err, tt.wantErr, tt.wantMsg)
			}
			if strings.Contains(string(body), secret) {
				t.Fatalf("a refused request got the log: %q", body)
			}
		})
	}

	t.Run("plain http refused", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + logs)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "Client sent an HTTP request to an HTTPS server") || strings.Contains(string(body), secret) {
			t.Fatalf("plain http: %d %q; want 400 naming https, without the log", resp.StatusCode, body)
		}
	})
}

// New refuses TLS files that are not this agent's, naming what is wrong.
func TestNewChecksTLSCertificate(t *testing.T) {
	t.Parallel()
	pki := testutil.NewPKI(t)
	own := pki.Cert(tlsutil.RoleAgent, "a1")
	otherCA := testutil.NewPKI(t).Cert(tlsutil.RoleAgent, "a1")
	otherCA.CA = pki.CACert
	tests := []struct {
		name    string
		files   tlsutil.Files
		wantErr []string // all in the error; none for no error
	}{
		{name: "its own", files: own},
		{name: "no TLS", files: tlsutil.Files{}},
		{name: "another agent's", files: pki.Cert(tlsutil.RoleAgent, "a2"),
			wantErr: []string{`is for agent "a2", but this agent's id is "a1"`, "baton tls cert create --agent --node a1", "--id a2"}},
		{name: "a coordinator's", files: pki.Cert(tlsutil.RoleCoordinator, "a1"),
			wantErr: []string{"is a coordinator's, not an agent's"}},
		{name: "another CA's", files: otherCA,
			wantErr: []string{"does not verify against the CA " + pki.CACert}},
		{name: "certificate without CA", files: tlsutil.Files{Cert: own.Cert, Key: own.Key},
			wantErr: []string{"a TLS certificate without a CA"}},
		{name: "CA without certificate", files: tlsutil.Files{CA: own.CA},
			wantErr: []string{"--tls-ca needs this agent's certificate and key too"}},
		{name: "missing key file", files: tlsutil.Files{CA: own.CA, Cert: own.Cert, Key: own.Key + ".gone"},
			wantErr: []string{".gone"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{
				ID:           "a1",
				DataDir:      t.TempDir(),
				CPUs:         1,
				MemoryGB:     1,
				Accelerators: "A100:1",
				ReplicaUser:  currentUser(t),
				TLS:          tt.files,
				Logger:       slog.New(slog.DiscardHandler),
			})
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New accepted %+v; want an error containing %q", tt.files, tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("New: %v; want it to contain %q", err, want)
				}
			}
		})
	}
}
