package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// TestInvalidSpecsChangeNothing: `serve up` with malformed or invalid YAML
// prints file:line: field: message, exits non-zero and leaves the cluster
// as it was — both through the CLI and straight at the API.
func TestInvalidSpecsChangeNothing(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 2})
	c.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "keep", "-y")
	c.waitReady("keep", 1, 1, 60*time.Second)
	before := c.status()

	dir := testutil.OpenTempDir(t)
	const probe = "service:\n  readiness_probe: /health\n  replicas: 1\n"
	cases := []struct {
		name, yaml string
		want       string // file:line: field: prefix after the path
	}{
		{"unclosed-bracket", "run: [echo\n" + probe, ":2: invalid YAML"},
		{"run-missing", probe + "resources:\n  cpus: 1\n", ":1: run:"},
		{"cpus-word", "run: x\n" + probe + "resources:\n  cpus: four\n", ":6: resources.cpus:"},
		{"unknown-key", "run: x\n" + probe + "replicaz: 2\n", ":5: replicaz:"},
		{"negative-replicas", "run: x\nservice:\n  readiness_probe: /health\n  replicas: -1\n", ":4: service.replicas:"},
		{"max-below-min", "run: x\nservice:\n  readiness_probe: /health\n  replica_policy:\n    min_replicas: 3\n    max_replicas: 1\n", ":6: service.replica_policy.max_replicas:"},
		{"bad-accelerator-count", "run: x\n" + probe + "resources:\n  accelerators: A100:x\n", ":6: resources.accelerators:"},
		{"bad-lb-policy", "run: x\nservice:\n  readiness_probe: /health\n  load_balancing_policy: random\n", ":4: service.load_balancing_policy:"},
		{"probe-path-relative", "run: x\nservice:\n  readiness_probe: health\n", ":3: service.readiness_probe:"},
		{"port-out-of-range", "run: x\nservice:\n  readiness_probe: /health\n  ports: 70000\n", ":4: service.ports:"},
		{"run-is-a-list", "run:\n  - a\n  - b\n" + probe, ":2: run:"},
		{"timeout-zero", "run: x\nservice:\n  readiness_probe:\n    path: /health\n    timeout_seconds: 0\n", ":5: service.readiness_probe.timeout_seconds:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, tc.name+".yaml")
			if err := os.WriteFile(file, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, err := c.cli("serve", "up", file, "-n", "bad", "-y")
			if err == nil {
				t.Fatalf("serve up succeeded; stdout %q", stdout)
			}
			if !strings.Contains(stderr, file+tc.want) {
				t.Errorf("CLI error %q does not contain %q", stderr, file+tc.want)
			}
			// The coordinator validates too: send the YAML straight to the API.
			body, _ := json.Marshal(protocol.UpRequest{Name: "bad", YAML: tc.yaml, Filename: tc.name + ".yaml"})
			resp, err := http.Post("http://"+c.apiAddr+"/v1/services", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			var apiErr protocol.APIError
			_ = json.NewDecoder(resp.Body).Decode(&apiErr)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || apiErr.Code != protocol.CodeInvalidSpec ||
				!strings.Contains(apiErr.Message, tc.name+".yaml"+tc.want) {
				t.Errorf("API answered %d %+v, want 400 invalid_spec with %q", resp.StatusCode, apiErr, tc.name+".yaml"+tc.want)
			}
		})
	}
	// A bad name and an update with a bad spec are rejected the same way.
	if _, stderr, err := c.cli("serve", "up", "examples/http_server/task.yaml", "-n", "Bad_Name", "-y"); err == nil || !strings.Contains(stderr, "Bad_Name") {
		t.Errorf("bad service name: err %v stderr %q", err, stderr)
	}
	badUpdate := filepath.Join(dir, "update.yaml")
	_ = os.WriteFile(badUpdate, []byte("run: x\n"+"service:\n  readiness_probe: /health\n  replicas: 0\n"), 0o644)
	if _, stderr, err := c.cli("serve", "update", "keep", badUpdate, "-y"); err == nil || !strings.Contains(stderr, badUpdate+":4: service.replicas:") {
		t.Errorf("bad update: err %v stderr %q", err, stderr)
	}

	after := c.status()
	if !sameCluster(before, after) {
		t.Fatalf("rejected requests changed the cluster:\nbefore %+v\nafter  %+v", before, after)
	}
}

// sameCluster compares two status snapshots, ignoring uptime.
func sameCluster(a, b protocol.StatusResponse) bool {
	norm := func(s protocol.StatusResponse) string {
		for i := range s.Services {
			s.Services[i].UptimeSeconds = 0
		}
		buf, _ := json.Marshal(s)
		return string(buf)
	}
	return reflect.DeepEqual(norm(a), norm(b)) || fmt.Sprint(norm(a)) == norm(b)
}
