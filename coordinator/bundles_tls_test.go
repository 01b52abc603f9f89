package coordinator_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/coordinator"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// tlsCall sends one request with cl, a token (if any) and a body, and
// returns the answer.
func tlsCall(t *testing.T, cl *http.Client, method, url, token string, body []byte) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set(protocol.HeaderToken, token)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

// With TLS and ACLs: an upload (with a deploy token) reaches the other
// coordinators over mutual TLS and is committed; the internal endpoints
// answer only a coordinator's certificate; the archive goes to a
// coordinator's certificate or a deploy token.
func TestBundlesTLS(t *testing.T) {
	pki := testutil.NewPKI(t)
	logs := newLateSafeWriter(t)
	c := bundleCluster(t, func(i int, cfg *coordinator.Config) {
		cfg.TLS = pki.Cert(tlsutil.RoleCoordinator, cfg.NodeID)
		cfg.ACLs = true
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	l := c.leader()
	f := (l + 1) % 3
	cli := httpsClient(t, tlsutil.Files{CA: pki.CACert})
	url := func(i int, path string) string { return "https://" + c.nodes[i].HTTPAddr() + path }

	var root protocol.ACLTokenResponse
	testutil.WaitFor(t, 15*time.Second, func() error {
		a := tlsCall(t, cli, "POST", url(f, "/v1/acl/bootstrap"), "", []byte("{}"))
		if a.code != http.StatusOK || json.Unmarshal(a.body, &root) != nil || root.SecretID == "" {
			return fmt.Errorf("bootstrap: %d %s", a.code, a.body)
		}
		return nil
	})
	data, digest := testBundle(3<<20, 8)
	if a := tlsCall(t, cli, "PUT", url(f, "/v1/bundles/"+digest), "", data); a.code != http.StatusUnauthorized {
		t.Fatalf("upload without a token: %d %s", a.code, a.body)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		a := tlsCall(t, cli, "PUT", url(f, "/v1/bundles/"+digest), root.SecretID, data)
		if a.code != http.StatusCreated {
			return fmt.Errorf("upload: %d %s", a.code, a.body)
		}
		return nil
	})
	testutil.WaitFor(t, 10*time.Second, func() error {
		for i := range 3 {
			if !c.holds(i, digest, data) {
				return fmt.Errorf("c%d lacks the bundle", i+1)
			}
		}
		return nil
	})

	internal := url(l, "/v1/internal/bundles/"+digest)
	other := testutil.NewPKI(t)
	foreignCoordinator := other.Cert(tlsutil.RoleCoordinator, "c9")
	foreignCoordinator.CA = pki.CACert
	for _, tc := range []struct {
		name   string
		client *http.Client
		token  string
	}{
		{"no certificate", cli, root.SecretID},
		{"cli certificate", httpsClient(t, pki.Cert(tlsutil.RoleCLI, "")), root.SecretID},
		{"agent certificate", httpsClient(t, pki.Cert(tlsutil.RoleAgent, "a1")), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, m := range []string{"GET", "PUT"} {
				a := tlsCall(t, tc.client, m, internal, tc.token, data)
				if e := apiMessage(a.body); a.code != http.StatusForbidden || !strings.Contains(e.Message, "only a coordinator may call this") {
					t.Fatalf("%s %s: %d %s", m, internal, a.code, a.body)
				}
			}
			a := tlsCall(t, tc.client, "POST", internal+"/commit", tc.token, []byte(`{"size": 1}`))
			if a.code != http.StatusForbidden {
				t.Fatalf("commit: %d %s", a.code, a.body)
			}
		})
	}
	// A coordinator's certificate of another CA does not even connect.
	if _, err := httpsClient(t, foreignCoordinator).Get(internal); err == nil || !tlsutil.IsHandshakeError(err) {
		t.Fatalf("a coordinator certificate of another CA: %v", err)
	}
	coord := httpsClient(t, pki.Cert(tlsutil.RoleCoordinator, "c9"))
	if a := tlsCall(t, coord, "GET", internal, "", nil); a.code != http.StatusOK || !bytes.Equal(a.body, data) {
		t.Fatalf("internal GET as a coordinator: %d, %d bytes", a.code, len(a.body))
	}
	// A push of a bundle the node holds is answered without its bytes.
	if a := tlsCall(t, coord, "PUT", internal, "", data); a.code != http.StatusOK {
		t.Fatalf("internal PUT of a held bundle: %d %s", a.code, a.body)
	}
	public := url(f, "/v1/bundles/"+digest)
	if a := tlsCall(t, coord, "GET", public, "", nil); a.code != http.StatusOK || !bytes.Equal(a.body, data) {
		t.Fatalf("GET as a coordinator: %d", a.code)
	}
	if a := tlsCall(t, cli, "GET", public, "", nil); a.code != http.StatusUnauthorized {
		t.Fatalf("GET without a token: %d %s", a.code, a.body)
	}
	if a := tlsCall(t, cli, "GET", public, root.SecretID, nil); a.code != http.StatusOK || !bytes.Equal(a.body, data) {
		t.Fatalf("GET with a token: %d", a.code)
	}
	if a := tlsCall(t, cli, "HEAD", public, root.SecretID, nil); a.code != http.StatusOK {
		t.Fatalf("HEAD with a token: %d", a.code)
	}
	// A token for other services does not read this code.
	req, _ := json.Marshal(protocol.ACLTokenRequest{Policy: protocol.PolicyDeploy, Services: []string{"other"}})
	var limited protocol.ACLTokenResponse
	if a := tlsCall(t, cli, "POST", url(l, "/v1/acl/tokens"), root.SecretID, req); a.code != http.StatusOK || json.Unmarshal(a.body, &limited) != nil {
		t.Fatalf("token create: %d %s", a.code, a.body)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		a := tlsCall(t, cli, "GET", public, limited.SecretID, nil)
		if e := apiMessage(a.body); a.code != http.StatusForbidden || !strings.Contains(e.Message, "no version of them names this bundle") {
			return fmt.Errorf("GET with a token for other services: %d %s", a.code, a.body)
		}
		return nil
	})
}
