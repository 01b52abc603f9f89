package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// testCA makes a CA and returns its certificate and key paths.
func testCA(t *testing.T) (caCert, caKey string) {
	t.Helper()
	caCert, caKey, err := tlsutil.CreateCA(t.TempDir(), 30, "")
	if err != nil {
		t.Fatal(err)
	}
	return caCert, caKey
}

// testCert makes a certificate of role signed by the CA.
func testCert(t *testing.T, caCert, caKey, role string) tlsutil.Files {
	t.Helper()
	cert, key, err := tlsutil.CreateCert(t.TempDir(), caCert, caKey, role, "", 30, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tlsutil.Files{CA: caCert, Cert: cert, Key: key}
}

// coordinatorTLSServer is an HTTPS server with a coordinator's certificate
// of the CA that answers /v1/status and counts the requests its handler
// saw.
func coordinatorTLSServer(t *testing.T, caCert, caKey string, requireClientCert bool) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	cfg, err := tlsutil.ServerConfig(testCert(t, caCert, caKey, tlsutil.RoleCoordinator), requireClientCert)
	if err != nil {
		t.Fatal(err)
	}
	var seen atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(protocol.ServiceResponse{Name: "web"})
			return
		}
		_ = json.NewEncoder(w).Encode(protocol.StatusResponse{})
	}))
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &seen
}

// clearTLSEnv unsets the variables the CLI reads, for the test.
func clearTLSEnv(t *testing.T) {
	t.Helper()
	for _, v := range []string{"BATON_ADDR", "BATON_CACERT", "BATON_CLIENT_CERT", "BATON_CLIENT_KEY", "BATON_TOKEN"} {
		t.Setenv(v, "")
	}
}

func TestClientTLS(t *testing.T) {
	caCert, caKey := testCA(t)
	otherCA, otherKey := testCA(t)
	srv, _ := coordinatorTLSServer(t, caCert, caKey, false)
	mtls, _ := coordinatorTLSServer(t, caCert, caKey, true)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(protocol.StatusResponse{})
	}))
	t.Cleanup(plain.Close)
	hostPort := strings.TrimPrefix(srv.URL, "https://")
	cli := testCert(t, caCert, caKey, tlsutil.RoleCLI)
	foreignCLI := testCert(t, otherCA, otherKey, tlsutil.RoleCLI)

	tests := []struct {
		name    string
		env     map[string]string
		flags   addrFlag
		wantErr string // "" for success
	}{
		{
			name: "BATON_CACERT trusts, host:port means https",
			env:  map[string]string{"BATON_ADDR": hostPort, "BATON_CACERT": caCert},
		},
		{
			name:  "--ca-cert trusts",
			flags: addrFlag{value: srv.URL, tls: tlsFlags{caCert: caCert}},
		},
		{
			name:  "--ca-cert wins over BATON_CACERT",
			env:   map[string]string{"BATON_CACERT": otherCA},
			flags: addrFlag{value: srv.URL, tls: tlsFlags{caCert: caCert}},
		},
		{
			name:    "no CA",
			env:     map[string]string{"BATON_ADDR": srv.URL},
			wantErr: "the coordinator's certificate is not signed by a CA you trust: set $BATON_CACERT (or --ca-cert) to the cluster's baton-ca.pem",
		},
		{
			name:    "another CA",
			env:     map[string]string{"BATON_ADDR": srv.URL, "BATON_CACERT": otherCA},
			wantErr: "not signed by a CA you trust: set $BATON_CACERT",
		},
		{
			name:    "plain http to https",
			env:     map[string]string{"BATON_ADDR": "http://" + hostPort, "BATON_CACERT": caCert},
			wantErr: "it serves HTTPS and was sent plain HTTP: use https://host:port",
		},
		{
			name:    "https to plain http",
			env:     map[string]string{"BATON_ADDR": strings.Replace(plain.URL, "http://", "https://", 1), "BATON_CACERT": caCert},
			wantErr: "it does not speak TLS",
		},
		{
			name: "client certificate where one is required",
			env: map[string]string{"BATON_ADDR": mtls.URL, "BATON_CACERT": caCert,
				"BATON_CLIENT_CERT": cli.Cert, "BATON_CLIENT_KEY": cli.Key},
		},
		{
			name:  "client certificate flags",
			flags: addrFlag{value: mtls.URL, tls: tlsFlags{caCert: caCert, clientCert: cli.Cert, clientKey: cli.Key}},
		},
		{
			name:    "no client certificate where one is required",
			env:     map[string]string{"BATON_ADDR": mtls.URL, "BATON_CACERT": caCert},
			wantErr: "set $BATON_CLIENT_CERT and $BATON_CLIENT_KEY",
		},
		{
			name: "client certificate of another CA",
			env: map[string]string{"BATON_ADDR": srv.URL, "BATON_CACERT": caCert,
				"BATON_CLIENT_CERT": foreignCLI.Cert, "BATON_CLIENT_KEY": foreignCLI.Key},
			wantErr: "refused the connection (tls: unknown certificate authority)",
		},
		{
			name:    "client certificate without its key",
			env:     map[string]string{"BATON_ADDR": srv.URL, "BATON_CACERT": caCert, "BATON_CLIENT_CERT": cli.Cert},
			wantErr: "a certificate and its key go together",
		},
		{
			name:    "client certificate without a CA",
			env:     map[string]string{"BATON_ADDR": srv.URL, "BATON_CLIENT_CERT": cli.Cert, "BATON_CLIENT_KEY": cli.Key},
			wantErr: "a client certificate needs the CA it trusts: set $BATON_CACERT",
		},
		{
			name:    "CA file missing",
			env:     map[string]string{"BATON_ADDR": srv.URL, "BATON_CACERT": caCert + ".missing"},
			wantErr: "reading CA certificate",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearTLSEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			a := tt.flags
			c, err := a.client()
			if err == nil {
				_, _, err = c.Status(context.Background(), nil, false)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want %q in it", err, tt.wantErr)
			}
		})
	}
}

// A write that meets a TLS failure (a coordinator with another CA's
// certificate) moves on to the next address: nothing was done there.
func TestClientTLSFailureMovesOn(t *testing.T) {
	clearTLSEnv(t)
	caCert, caKey := testCA(t)
	otherCA, otherKey := testCA(t)
	bad, badSeen := coordinatorTLSServer(t, otherCA, otherKey, false)
	good, goodSeen := coordinatorTLSServer(t, caCert, caKey, false)
	a := addrFlag{value: bad.URL + "," + good.URL, tls: tlsFlags{caCert: caCert}}
	c, err := a.client()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Up(context.Background(), protocol.UpRequest{Name: "web"})
	if err != nil || resp.Name != "web" {
		t.Fatalf("up: %+v, %v", resp, err)
	}
	if badSeen.Load() != 0 || goodSeen.Load() != 1 {
		t.Fatalf("requests seen: bad %d, good %d; want 0 and 1", badSeen.Load(), goodSeen.Load())
	}

	// Both failing: the answer names the TLS problem, not "unreachable".
	a = addrFlag{value: bad.URL + "," + strings.Replace(bad.URL, "127.0.0.1", "localhost", 1), tls: tlsFlags{caCert: caCert}}
	c, err = a.client()
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Up(context.Background(), protocol.UpRequest{Name: "web"})
	if err == nil || !strings.Contains(err.Error(), "not signed by a CA you trust") || !strings.Contains(err.Error(), "unknown CA") {
		t.Fatalf("up with every address failing TLS: %v", err)
	}
}
