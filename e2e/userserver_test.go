package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/loadgen"
)

// userApp is a server a user might bring: it is not part of baton, needs a
// setup step, reads envs, and is only ready for a POST probe with a header.
const userApp = `import http.server, json, os, sys
port = int(os.environ["PORT"])
greeting = open("greeting.txt").read().strip()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (greeting + " " + os.environ.get("WHO", "?") + "\n").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0)); data = json.loads(self.rfile.read(n) or b"{}")
        ok = self.path == "/ready" and self.headers.get("X-Check") == "yes" and data.get("ping") == 1
        self.send_response(200 if ok else 418); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
`

// TestUserServerOutsideRepo drives a service whose files live outside the
// repository, with a relative workdir resolved against the CLI's directory.
func TestUserServerOutsideRepo(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 2}, agentOpts{cpus: 2})
	home := writableTempDir(t)
	writeTask(t, home, "app.py", userApp)
	writeTask(t, home, "v1.yaml", `name: greeter
workdir: .
setup: echo hello > greeting.txt
run: exec python3 app.py
envs:
  WHO: world
service:
  readiness_probe:
    path: /ready
    post_data: {ping: 1}
    headers: {X-Check: "yes"}
    initial_delay_seconds: 30
    timeout_seconds: 2
  replicas: 2
  load_balancing_policy: round_robin
resources:
  cpus: 1
`)
	writeTask(t, home, "v2.yaml", strings.Replace(strings.Replace(readFile(t, home+"/v1.yaml"), "echo hello", "echo bonjour", 1), "cpus: 1", "cpus: 1+", 1))

	run := func(args ...string) string {
		t.Helper()
		out, errOut, err := c.cliIn(home, args...)
		if err != nil {
			t.Fatalf("baton %v: %v\n%s%s", args, err, out, errOut)
		}
		return out
	}
	run("serve", "up", "v1.yaml", "-y")
	st := c.waitReady("greeter", 1, 2, 60*time.Second)
	endpoint := service(st, "greeter").Endpoint
	if got := get(t, "http://"+endpoint+"/"); got != "hello world\n" {
		t.Fatalf("v1 answered %q", got)
	}
	run("serve", "update", "greeter", "v2.yaml", "-y")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c.waitReady("greeter", 2, 2, 60*time.Second)
	res := loadgen.Run(ctx, loadgen.Config{URL: "http://" + endpoint + "/", Workers: 2, MaxRequests: 50})
	for _, r := range res {
		if r.Failed() {
			t.Fatalf("request failed: %s", r.Err)
		}
	}
	if got := get(t, "http://"+endpoint+"/"); got != "bonjour world\n" {
		t.Fatalf("v2 answered %q", got)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSkyServeStyleTask runs a task written as for SkyServe: no name: (the
// service gets a generated one), no readiness_probe (probes /), memory
// with a unit, a required env given with --env, and SkyPilot's variables.
func TestSkyServeStyleTask(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 2})
	home := writableTempDir(t)
	writeTask(t, home, "task.yaml", `workdir: .
envs:
  TOKEN:
run: |
  mkdir -p www && echo "$TOKEN $SKYPILOT_SERVE_REPLICA_ID $SKYPILOT_NUM_NODES" > www/index.html
  exec python3 -m http.server --directory www $PORT
service:
  replicas: 1
resources:
  cpus: 1
  memory: 1GB
`)
	cli := func(args ...string) (string, string, error) { return c.cliIn(home, args...) }
	// Without the required env nothing is created.
	if _, stderr, err := cli("serve", "up", "task.yaml", "-y"); err == nil || !strings.Contains(stderr, "task.yaml:3: envs.TOKEN: has no value; pass it with --env TOKEN=VALUE") {
		t.Fatalf("up without --env: err %v, stderr %q", err, stderr)
	}
	if st := c.status(); len(st.Services) != 0 {
		t.Fatalf("a rejected up created %+v", st.Services)
	}
	out, stderr, err := cli("serve", "up", "task.yaml", "-y", "--env", "TOKEN=sesame")
	if err != nil {
		t.Fatalf("up: %v\n%s%s", err, out, stderr)
	}
	m := regexp.MustCompile(`Service "(service-[0-9a-f]{4})" is up`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("up printed %q, want a generated service-xxxx name", out)
	}
	name := m[1]
	st := c.waitReady(name, 1, 1, 60*time.Second)
	if got := get(t, "http://"+service(st, name).Endpoint+"/"); got != "sesame 1 1\n" {
		t.Fatalf("replica answered %q, want the --env value and SkyPilot's variables", got)
	}
	if r := replicas(st, name)[1]; !strings.Contains(r.Resources, "mem=1GB") {
		t.Errorf("replica resources %q, want mem=1GB reserved", r.Resources)
	}
}
