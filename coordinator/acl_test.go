package coordinator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/coordinator"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// aclCall sends one API request with a token and returns the status code
// and body.
func aclCall(t *testing.T, api, token, method, path string, body any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+api+path, rd)
	if token != "" {
		req.Header.Set(protocol.HeaderToken, token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// With --acl every request needs a token whose policy allows it; a
// refused request changes nothing; secrets are shown once and never
// listed.
func TestACLTokens(t *testing.T) {
	cfg := coordinator.DevConfig()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	cfg.NATSPort = -1
	cfg.ACLs = true
	s, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	api := s.HTTPAddr()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if code, body := aclCall(t, api, "", "GET", "/healthz", nil); code != 200 {
			return fmt.Errorf("healthz %d %s", code, body)
		}
		return nil
	})
	up := func(name string) protocol.UpRequest {
		return protocol.UpRequest{Name: name, YAML: "service:\n  readiness_probe: /\n  replicas: 1\nrun: sleep 1000\n"}
	}

	code, body := aclCall(t, api, "", "GET", "/v1/status", nil)
	if code != 401 || !strings.Contains(body, "baton acl bootstrap") {
		t.Fatalf("before bootstrap: %d %s", code, body)
	}
	if code, _ := aclCall(t, api, "", "GET", "/healthz", nil); code != 200 {
		t.Fatalf("/healthz needs no token: %d", code)
	}
	code, body = aclCall(t, api, "", "POST", "/v1/acl/bootstrap", struct{}{})
	var root protocol.ACLTokenResponse
	if code != 200 || json.Unmarshal([]byte(body), &root) != nil || root.SecretID == "" || root.Policy != protocol.PolicyManagement {
		t.Fatalf("bootstrap: %d %s", code, body)
	}
	if code, body := aclCall(t, api, "", "POST", "/v1/acl/bootstrap", struct{}{}); code != 409 {
		t.Fatalf("second bootstrap: %d %s", code, body)
	}
	mint := func(policy string, services ...string) protocol.ACLTokenResponse {
		code, body := aclCall(t, api, root.SecretID, "POST", "/v1/acl/tokens", protocol.ACLTokenRequest{Policy: policy, Services: services})
		var tok protocol.ACLTokenResponse
		if code != 200 || json.Unmarshal([]byte(body), &tok) != nil || tok.SecretID == "" {
			t.Fatalf("create %s token: %d %s", policy, code, body)
		}
		return tok
	}
	reader, deployA, deployAll := mint(protocol.PolicyRead), mint(protocol.PolicyDeploy, "svc-a"), mint(protocol.PolicyDeploy)
	if code, body := aclCall(t, api, deployAll.SecretID, "POST", "/v1/services", up("svc-b")); code != 201 {
		t.Fatalf("deploy token up: %d %s", code, body)
	}
	revoked := mint(protocol.PolicyDeploy)
	if code, body := aclCall(t, api, root.SecretID, "DELETE", "/v1/acl/tokens/"+revoked.AccessorID, nil); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	_, before := aclCall(t, api, root.SecretID, "GET", "/v1/status", nil)
	for _, tc := range []struct {
		name, token, method, path string
		body                      any
		code                      int
		want                      string
	}{
		{"no token", "", "POST", "/v1/services", up("x"), 401, "no ACL token"},
		{"unknown token", "not-a-token", "DELETE", "/v1/services/svc-b", nil, 401, "not found"},
		{"revoked token", revoked.SecretID, "POST", "/v1/services", up("x"), 401, "revoked"},
		{"read token deploys", reader.SecretID, "POST", "/v1/services/svc-b/update", up("svc-b"), 403, "needs a deploy token"},
		{"read token downs", reader.SecretID, "DELETE", "/v1/services/svc-b", nil, 403, "needs a deploy token"},
		{"deploy token for another service", deployA.SecretID, "DELETE", "/v1/services/svc-b", nil, 403, "may only act on services svc-a"},
		{"deploy token ups another service", deployA.SecretID, "POST", "/v1/services", up("svc-c"), 403, "svc-a"},
		{"deploy token makes tokens", deployAll.SecretID, "POST", "/v1/acl/tokens", protocol.ACLTokenRequest{Policy: "management"}, 403, "needs a management token"},
		{"deploy token runs operator commands", deployAll.SecretID, "GET", "/v1/operator/members", nil, 403, "needs a operator token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := aclCall(t, api, tc.token, tc.method, tc.path, tc.body)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("%s %s: got %d %s; want %d with %q", tc.method, tc.path, code, body, tc.code, tc.want)
			}
		})
	}
	_, after := aclCall(t, api, root.SecretID, "GET", "/v1/status", nil)
	if stripVolatile(before) != stripVolatile(after) {
		t.Fatalf("a refused request changed the state:\nbefore %s\nafter %s", before, after)
	}

	// A deploy token limited to svc-a deploys svc-a and sees only it.
	if code, body := aclCall(t, api, deployA.SecretID, "POST", "/v1/services", up("svc-a")); code != 201 {
		t.Fatalf("limited deploy token up: %d %s", code, body)
	}
	_, body = aclCall(t, api, deployA.SecretID, "GET", "/v1/status", nil)
	var st protocol.StatusResponse
	_ = json.Unmarshal([]byte(body), &st)
	if len(st.Services) != 1 || st.Services[0].Name != "svc-a" {
		t.Fatalf("limited token's status: %s", body)
	}
	if code, _ := aclCall(t, api, reader.SecretID, "GET", "/v1/status", nil); code != 200 {
		t.Fatalf("read token status: %d", code)
	}
	_, body = aclCall(t, api, root.SecretID, "GET", "/v1/acl/tokens", nil)
	for _, tok := range []protocol.ACLTokenResponse{root, reader, deployA, deployAll} {
		if strings.Contains(body, tok.SecretID) {
			t.Fatalf("token list shows a secret: %s", body)
		}
	}
	if strings.Contains(body, revoked.AccessorID) || strings.Contains(body, "secret_hash") {
		t.Fatalf("token list: %s", body)
	}
}

// stripVolatile drops what changes with time alone (uptime) from a status.
func stripVolatile(s string) string {
	var st protocol.StatusResponse
	if json.Unmarshal([]byte(s), &st) != nil {
		return s
	}
	for i := range st.Services {
		st.Services[i].UptimeSeconds = 0
	}
	st.Index = 0 // the controller's own commands (a PENDING reason) move it
	return fmt.Sprintf("%+v", st)
}
