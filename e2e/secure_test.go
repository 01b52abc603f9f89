package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// netnsEnv is set in the copy of the test binary that runs inside a
// network namespace of its own.
const netnsEnv = "BATON_E2E_IN_NETNS"

// readmeSecret is the secret the README's walk-through passes with
// --secret; it must reach the replicas and appear nowhere else.
const readmeSecret = "sk-live-0123456789abcdef"

// TestSecureClusterFromREADME runs the README's "Running a secure
// cluster" section exactly as written (its shell blocks, in order, with
// only waits between them where the README says to wait), in a network
// namespace of its own so that the default ports it uses are free. It then
// tries, as a user without the right token and as an attacker on the same
// network with some of the cluster's credentials, what must be refused,
// checking each time that the service's status did not change; and looks
// for the secret in every CLI output, API answer, log and the LB's view.
func TestSecureClusterFromREADME(t *testing.T) {
	if os.Getenv(netnsEnv) == "" {
		runInNetns(t)
		return
	}
	blocks := readmeBlocks(t, "## Running a secure cluster")
	if len(blocks) != 7 {
		t.Fatalf("the README's secure section has %d sh blocks; this test runs 7 (certificates, daemons, tokens, up, update, check, down)", len(blocks))
	}
	dir := filepath.Join(workRoot, "secure")
	if err := os.CopyFS(filepath.Join(dir, "examples"), os.DirFS(filepath.Join(workRoot, "examples"))); err != nil {
		t.Fatal(err)
	}
	if err := openTree(dir); err != nil {
		t.Fatal(err)
	}
	sc := &secureCluster{t: t, dir: dir}
	t.Cleanup(sc.stop)

	sc.runBlock(blocks[0], "certificates")
	sc.runBlock(blocks[1], "daemons")
	sc.ca = filepath.Join(dir, "tls", tlsutil.CAFile)
	sc.api = sc.httpsClient(tlsutil.Files{CA: sc.ca})
	sc.waitFor("a Raft leader", 60*time.Second, func() error {
		body, code, err := sc.get("https://127.0.0.11:7400/v1/operator/raft/peers", "")
		var peers protocol.RaftPeersResponse
		if err != nil || code != 200 || json.Unmarshal([]byte(body), &peers) != nil {
			return fmt.Errorf("raft peers: %d %v %.200s", code, err, body)
		}
		for _, p := range peers.Peers {
			if p.State == "leader" {
				return nil
			}
		}
		return fmt.Errorf("no leader among %+v", peers.Peers)
	})
	sc.runBlock(blocks[2], "tokens")
	sc.management = sc.exported("BATON_TOKEN")
	sc.deployer = sc.file("alice.token")
	sc.reader = sc.file("read.token")
	sc.waitFor("both agents alive", 30*time.Second, func() error {
		var agents []protocol.Agent
		if err := sc.getJSON("/v1/agents", sc.reader, &agents); err != nil {
			return err
		}
		alive := 0
		for _, a := range agents {
			if a.Alive {
				alive++
			}
		}
		if alive != 2 {
			return fmt.Errorf("%d of %d agents alive", alive, len(agents))
		}
		return nil
	})

	sc.runBlock(blocks[3], "serve up")
	sc.waitService(120*time.Second, func(v protocol.ServiceStatusView) bool {
		return v.Version == 1 && v.ReadyReplicas == 2
	})
	out := sc.runBlock(blocks[4], "curl, serve update")
	if !strings.Contains(out, "hello from version 1") {
		t.Fatalf("the LB did not answer version 1 before the update:\n%s", out)
	}
	sc.waitService(180*time.Second, func(v protocol.ServiceStatusView) bool {
		return slices.Equal(v.ActiveVersions, []int{2}) && v.ReadyReplicas >= 2
	})
	// Version 1's replicas drain and go: the status compared below is
	// then steady.
	sc.waitFor("version 1's replicas gone", 60*time.Second, func() error {
		var st protocol.StatusResponse
		if err := sc.getJSON("/v1/status", sc.reader, &st); err != nil {
			return err
		}
		for _, r := range st.Replicas {
			if r.Version != 2 || r.Status != protocol.ReplicaReady {
				return fmt.Errorf("replica %d v%d %s", r.ID, r.Version, r.Status)
			}
		}
		return nil
	})
	out = sc.runBlock(blocks[5], "curl, logs")
	if !strings.Contains(out, "hello from version 2") {
		t.Fatalf("the LB did not answer version 2 after the update:\n%s", out)
	}
	sc.checkReplicaGotSecret()

	sc.refusals()
	sc.attacks()
	sc.checkSecretNowhere()

	sc.runBlock(blocks[6], "serve down")
	sc.waitFor("the service gone", 60*time.Second, func() error {
		var st protocol.StatusResponse
		if err := sc.getJSON("/v1/status", sc.reader, &st); err != nil {
			return err
		}
		if len(st.Services) != 0 {
			return fmt.Errorf("services: %v", st.Services)
		}
		return nil
	})
}

// runInNetns runs this test again in a new network namespace whose
// loopback is up: the README uses the default ports (7400-7404, 4222,
// 6222, 30001), which something else on this machine may hold.
func runInNetns(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal("this test needs unshare (util-linux) to run in a network namespace of its own: " + err.Error())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("this test needs ip (iproute2) to bring up loopback in its network namespace: " + err.Error())
	}
	args := []string{"--net"}
	if os.Geteuid() != 0 {
		args = append(args, "--map-root-user")
	}
	args = append(args, "--", "sh", "-c", `ip link set lo up && exec "$@"`, "sh",
		os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.timeout", "12m")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, testWriter{t}), io.MultiWriter(&out, testWriter{t})
	err := cmd.Run()
	if err != nil || !strings.Contains(out.String(), "--- PASS: "+t.Name()) {
		t.Fatalf("in its network namespace: %v (output above)", err)
	}
}

// testWriter sends a child's output to the test log, line by line.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log(line)
	}
	return len(p), nil
}

// readmeBlocks returns the ```sh blocks of the README section that starts
// with heading, in order.
func readmeBlocks(t *testing.T, heading string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "\n"+heading+"\n")
	if start < 0 {
		t.Fatalf("README.md has no %q section", heading)
	}
	section := text[start+1:]
	if end := strings.Index(section[len(heading):], "\n## "); end >= 0 {
		section = section[:len(heading)+end]
	}
	re := regexp.MustCompile("(?s)```sh\n(.*?)```")
	var blocks []string
	for _, m := range re.FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// secureCluster is the README's cluster, as the test sees it.
type secureCluster struct {
	t   *testing.T
	dir string
	// pgids are the process groups of the blocks run (daemons started
	// with & stay in theirs).
	pgids []int
	// outputs is everything the CLI printed, and every API answer read.
	outputs []string

	ca                           string
	api                          *http.Client
	management, deployer, reader string
	statusBefore                 string
}

// runBlock runs one README block with bash, in the cluster's directory,
// with the variables the blocks before it exported, and returns its
// output. A failing block fails the test.
func (sc *secureCluster) runBlock(block, what string) string {
	t := sc.t
	t.Helper()
	script := "set -euo pipefail\n[ -f .exported ] && source .exported\n" + block + "\nexport -p > .exported\n"
	outPath := filepath.Join(sc.dir, fmt.Sprintf("block-%d.out", len(sc.pgids)))
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = sc.dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(batonBin)+":"+os.Getenv("PATH"))
	// Files, not pipes: daemons started with & keep them open, and Wait
	// would wait for them.
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc.pgids = append(sc.pgids, cmd.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = errors.New("timed out after 2m")
	}
	text, _ := os.ReadFile(outPath)
	sc.outputs = append(sc.outputs, string(text))
	t.Logf("README block %q:\n%s", what, text)
	if err != nil {
		sc.dumpLogs()
		t.Fatalf("README block %q failed: %v", what, err)
	}
	return string(text)
}

// stop stops every daemon the blocks started: SIGTERM, then SIGKILL.
func (sc *secureCluster) stop() {
	for _, pgid := range sc.pgids {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pgid := range sc.pgids {
		for time.Now().Before(deadline) && syscall.Kill(-pgid, 0) == nil {
			time.Sleep(100 * time.Millisecond)
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

func (sc *secureCluster) dumpLogs() {
	logs, _ := filepath.Glob(filepath.Join(sc.dir, "*.log"))
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		if len(data) > 6000 {
			data = data[len(data)-6000:]
		}
		sc.t.Logf("--- %s (tail):\n%s", filepath.Base(l), data)
	}
}

// exported reads a variable the blocks exported.
func (sc *secureCluster) exported(name string) string {
	data, err := os.ReadFile(filepath.Join(sc.dir, ".exported"))
	if err != nil {
		sc.t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^declare -x ` + name + `="([^"]*)"$`).FindSubmatch(data)
	if m == nil {
		sc.t.Fatalf("no %s exported", name)
	}
	return string(m[1])
}

func (sc *secureCluster) file(name string) string {
	data, err := os.ReadFile(filepath.Join(sc.dir, name))
	if err != nil {
		sc.t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func (sc *secureCluster) waitFor(what string, d time.Duration, fn func() error) {
	sc.t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			sc.dumpLogs()
			sc.t.Fatalf("waiting %s for %s: %v", d, what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// httpsClient trusts the cluster's CA and presents f's certificate, if
// any.
func (sc *secureCluster) httpsClient(f tlsutil.Files) *http.Client {
	cfg, err := tlsutil.ClientConfig(f, tlsutil.CoordinatorServerName)
	if err != nil {
		sc.t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// request sends one API request to c1 with token (none when "") and
// returns the body and status code.
func (sc *secureCluster) request(method, url, token string, body []byte) (string, int, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return "", 0, err
	}
	if token != "" {
		req.Header.Set("X-Baton-Token", token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := sc.api.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sc.outputs = append(sc.outputs, string(b))
	return string(b), resp.StatusCode, nil
}

func (sc *secureCluster) get(url, token string) (string, int, error) {
	return sc.request(http.MethodGet, url, token, nil)
}

func (sc *secureCluster) getJSON(path, token string, v any) error {
	body, code, err := sc.get("https://127.0.0.11:7400"+path, token)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("GET %s: %d %s", path, code, body)
	}
	return json.Unmarshal([]byte(body), v)
}

// status is the service's state as a string to compare: versions,
// active versions and every replica's id, version, agent and status.
func (sc *secureCluster) status() string {
	sc.t.Helper()
	var st protocol.StatusResponse
	if err := sc.getJSON("/v1/status?consistent", sc.reader, &st); err != nil {
		sc.t.Fatal(err)
	}
	var b strings.Builder
	for _, s := range st.Services {
		fmt.Fprintf(&b, "%s v%d active %v %s; ", s.Name, s.Version, s.ActiveVersions, s.Status)
	}
	for _, r := range st.Replicas {
		fmt.Fprintf(&b, "%s/%d v%d %s %s; ", r.ServiceName, r.ID, r.Version, r.Agent, r.Status)
	}
	return b.String()
}

func (sc *secureCluster) waitService(d time.Duration, ok func(protocol.ServiceStatusView) bool) {
	sc.t.Helper()
	sc.waitFor("service web", d, func() error {
		var st protocol.StatusResponse
		if err := sc.getJSON("/v1/status", sc.reader, &st); err != nil {
			return err
		}
		for _, v := range st.Services {
			if v.Name == "web" && ok(v) {
				return nil
			}
		}
		return fmt.Errorf("services %+v", st.Services)
	})
}

// unchanged checks, after a refused attempt, that the service is as it
// was before it (and stays so for a moment: a refused message acted on
// asynchronously would show by then).
func (sc *secureCluster) unchanged(attempt string) {
	sc.t.Helper()
	time.Sleep(300 * time.Millisecond)
	if now := sc.status(); now != sc.statusBefore {
		sc.t.Errorf("after %s the status changed:\nbefore %s\nafter  %s", attempt, sc.statusBefore, now)
	}
}

// cli runs baton with the README's environment (address list and CA)
// and the given token, and returns its combined output.
func (sc *secureCluster) cli(token string, args ...string) (string, error) {
	cmd := exec.Command(batonBin, args...)
	cmd.Dir = sc.dir
	cmd.Env = append(os.Environ(),
		"BATON_ADDR=https://127.0.0.11:7400,https://127.0.0.12:7400,https://127.0.0.13:7400",
		"BATON_CACERT="+sc.ca, "BATON_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	sc.outputs = append(sc.outputs, string(out))
	return string(out), err
}

// cliAddr is cli with another address list.
func (sc *secureCluster) cliAddr(addr, token string, args ...string) (string, error) {
	cmd := exec.Command(batonBin, append([]string{"--addr", addr}, args...)...)
	cmd.Dir = sc.dir
	cmd.Env = append(os.Environ(), "BATON_CACERT="+sc.ca, "BATON_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	sc.outputs = append(sc.outputs, string(out))
	return string(out), err
}

// refusals: API requests without the right token, and plain HTTP.
func (sc *secureCluster) refusals() {
	t := sc.t
	sc.statusBefore = sc.status()
	t.Logf("status before the refusals: %s", sc.statusBefore)
	update := []string{"serve", "update", "web", "examples/http_server/task.yaml", "-y"}

	updateBody, _ := json.Marshal(protocol.UpdateRequest{YAML: "name: web\nrun: touch /tmp/pwned\nresources:\n  cpus: 1\n", Filename: "evil.yaml"})
	// apiUpdate sends an update of web with token straight to the API
	// and checks the code.
	apiUpdate := func(what, token string, want int) {
		t.Helper()
		body, code, err := sc.request(http.MethodPost, "https://127.0.0.12:7400/v1/services/web/update", token, updateBody)
		if err != nil || code != want {
			t.Errorf("%s: %d %v %s, want %d", what, code, err, body, want)
		}
		body, code, err = sc.request(http.MethodDelete, "https://127.0.0.13:7400/v1/services/web", token, nil)
		if err != nil || code != want {
			t.Errorf("%s (down): %d %v %s, want %d", what, code, err, body, want)
		}
	}
	// cliRefused runs a CLI command that must fail saying why.
	cliRefused := func(what, token, wantMsg string, args ...string) {
		t.Helper()
		out, err := sc.cli(token, args...)
		if err == nil || !strings.Contains(out, wantMsg) {
			t.Errorf("%s: %v, want a refusal saying %q:\n%s", what, err, wantMsg, out)
		}
	}

	// No token: 401, for reads and writes.
	if body, code, err := sc.get("https://127.0.0.11:7400/v1/status", ""); err != nil || code != 401 {
		t.Errorf("status without a token: %d %v %s, want 401", code, err, body)
	}
	apiUpdate("update without a token", "", 401)
	cliRefused("update without a token", "", "token", update...)
	sc.unchanged("an update and a down without a token")

	// A revoked deploy token: 401.
	out, err := sc.cli(sc.management, "acl", "token", "create", "--policy", "deploy", "--service", "web", "--json")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	var revoked protocol.ACLTokenResponse
	if err := json.Unmarshal([]byte(out), &revoked); err != nil {
		t.Fatalf("token create --json: %v\n%s", err, out)
	}
	if out, err := sc.cli(sc.management, "acl", "token", "revoke", revoked.AccessorID); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	apiUpdate("update with a revoked token", revoked.SecretID, 401)
	cliRefused("update with a revoked token", revoked.SecretID, "revoked", update...)
	sc.unchanged("an update and a down with a revoked token")

	// A read token deploying: 403.
	apiUpdate("update with a read token", sc.reader, 403)
	cliRefused("update with a read token", sc.reader, "needs a deploy token", update...)
	cliRefused("down with a read token", sc.reader, "needs a deploy token", "serve", "down", "web", "-y")
	sc.unchanged("an update and a down with a read token")

	// A deploy token for another service: 403 on web.
	out, err = sc.cli(sc.management, "acl", "token", "create", "--policy", "deploy", "--service", "other", "-q")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	other := strings.TrimSpace(out)
	apiUpdate("update of web with a deploy token for other", other, 403)
	cliRefused("update of web with a deploy token for other", other, `may only act on services other, not "web"`, update...)
	// The deployer's own token cannot make tokens.
	cliRefused("a deploy token making a management token", sc.deployer, "needs a management token", "acl", "token", "create", "--policy", "management")
	sc.unchanged("an update and a down of web with a deploy token for another service")

	// Plain HTTP to the HTTPS API: refused (Go's TLS server answers 400
	// to what looks like HTTP/1 GET, HEAD, POST or PUT and closes any
	// other), whatever the token.
	plain := &http.Client{Timeout: 5 * time.Second}
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		req, _ := http.NewRequest(method, "http://127.0.0.11:7400/v1/services/web", bytes.NewReader(updateBody))
		req.Header.Set("X-Baton-Token", sc.management)
		resp, err := plain.Do(req)
		if err != nil {
			continue // connection closed: refused
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("plain HTTP %s: %d %s, want 400 or a closed connection", method, resp.StatusCode, b)
		}
	}
	if out, err := sc.cliAddr("http://127.0.0.11:7400", sc.management, "serve", "down", "web", "-y"); err == nil {
		t.Errorf("the CLI downed web over plain HTTP:\n%s", out)
	}
	sc.unchanged("a plain-HTTP down")
}

// attacks: NATS without credentials, with an LB's and an agent's
// credentials outside their permissions, and a far-ahead route table.
func (sc *secureCluster) attacks() {
	t := sc.t
	tlsDir := filepath.Join(sc.dir, "tls")
	natsURL := "nats://127.0.0.11:4222"
	quick := []nats.Option{nats.Timeout(3 * time.Second), nats.NoReconnect()}

	// Anonymous: plain text, then TLS without a certificate.
	if nc, err := nats.Connect(natsURL, quick...); err == nil {
		nc.Close()
		t.Error("an anonymous plain-text NATS connection was accepted")
	}
	caOnly := sc.natsTLS(tlsutil.Files{CA: sc.ca})
	if nc, err := nats.Connect(natsURL, append(quick, nats.Secure(caOnly))...); err == nil {
		nc.Close()
		t.Error("a NATS connection without a client certificate was accepted")
	}
	// The CLI's certificate is no NATS credential either.
	cli := sc.makeCert("--client")
	if nc, err := nats.Connect(natsURL, append(quick, nats.Secure(sc.natsTLS(cli)))...); err == nil {
		nc.Close()
		t.Error("a NATS connection with a CLI certificate was accepted")
	}

	// The LB's credentials publishing a route table and a desired set.
	lbFiles := tlsutil.Files{CA: sc.ca, Cert: filepath.Join(tlsDir, "baton-lb-0.pem"), Key: filepath.Join(tlsDir, "baton-lb-0-key.pem")}
	lb, lbErrs := sc.natsAs(lbFiles, "lb", "lb-1")
	evilTable, _ := json.Marshal(protocol.RouteTable{Service: "web", Epoch: 1 << 40, Port: 30001, Policy: "round_robin",
		ActiveVersions: []int{9}, Endpoints: []protocol.Endpoint{{ReplicaID: 99, Version: 9, Address: "127.0.0.99:1"}}})
	evilSet, _ := json.Marshal(protocol.DesiredReplicas{AgentID: "agent-1", Epoch: 1 << 40,
		Replicas: []protocol.ReplicaAssignment{{Service: "evil", ReplicaID: 1, Version: 1, Port: 9999}},
		Specs:    map[string]protocol.TaskSpec{"evil/1": {Run: "touch /tmp/pwned"}}})
	for _, m := range []struct{ subject string }{{protocol.RoutesSubject("web")}, {protocol.AgentDesiredSubject("agent-1")}} {
		body := evilTable
		if strings.HasPrefix(m.subject, "baton.agent.") {
			body = evilSet
		}
		if err := lb.Publish(m.subject, body); err != nil {
			t.Fatal(err)
		}
		sc.expectViolation(lbErrs, "the LB's credentials publishing on "+m.subject)
	}
	sc.unchanged("the LB's credentials publishing a route table and a desired set")
	sc.lbServesVersion(2)

	// Agent 1's credentials publishing agent 2's status (all its replicas
	// failed), and agent 2's status on agent 1's own subject.
	a1Files := tlsutil.Files{CA: sc.ca, Cert: filepath.Join(tlsDir, "baton-agent-0.pem"), Key: filepath.Join(tlsDir, "baton-agent-0-key.pem")}
	a1, a1Errs := sc.natsAs(a1Files, "agent", "agent-1")
	forged, _ := json.Marshal(protocol.AgentStatus{Agent: protocol.Agent{ID: "agent-2", Host: "127.0.0.22", Address: "127.0.0.22:7403",
		Capacity: protocol.Capacity{CPUs: 8, MemoryGB: 16}}, Replicas: []protocol.ReplicaReport{}, SentAt: time.Now()})
	if err := a1.Publish(protocol.AgentStatusSubject("agent-2"), forged); err != nil {
		t.Fatal(err)
	}
	sc.expectViolation(a1Errs, "agent-1's credentials publishing agent-2's status")
	mismatchBefore := sc.coordinatorMetric("baton_coordinator_identity_mismatch_total")
	for range 3 {
		if err := a1.Publish(protocol.AgentStatusSubject("agent-1"), forged); err != nil {
			t.Fatal(err)
		}
	}
	_ = a1.Flush()
	sc.waitFor("the identity mismatch counted", 10*time.Second, func() error {
		if n := sc.coordinatorMetric("baton_coordinator_identity_mismatch_total"); n < mismatchBefore+3 {
			return fmt.Errorf("identity mismatches %v (before %v)", n, mismatchBefore)
		}
		return nil
	})
	sc.unchanged("agent-1's credentials reporting agent-2's replicas gone")
	// Longer than a report grace: a forged empty report would have failed
	// agent-2's replicas by now.
	time.Sleep(2 * time.Second)
	sc.unchanged("agent-1's credentials reporting agent-2's replicas gone, 2 s later")

	// A route table far ahead of the cluster's index, as only a
	// coordinator's credentials could publish it (a rogue or broken
	// coordinator): the LB rejects it and keeps serving.
	rogue := sc.makeCert("--server", "--node", "rogue")
	co, _ := sc.natsAs(rogue, "", "")
	rejectedBefore := sc.lbMetric("baton_lb_invalid_messages_total")
	if err := co.Publish(protocol.RoutesSubject("web"), evilTable); err != nil {
		t.Fatal(err)
	}
	_ = co.Flush()
	sc.waitFor("the far-ahead table rejected", 10*time.Second, func() error {
		if n := sc.lbMetric("baton_lb_invalid_messages_total"); n <= rejectedBefore {
			return fmt.Errorf("LB invalid messages %v (before %v)", n, rejectedBefore)
		}
		return nil
	})
	if routes := sc.lbRoutes(); strings.Contains(routes, "127.0.0.99") || strings.Contains(routes, `"epoch":1099511627776`) {
		t.Errorf("the LB applied the far-ahead table: %s", routes)
	}
	sc.lbServesVersion(2)
	sc.unchanged("a far-ahead route table")
	if _, err := os.Stat("/tmp/pwned"); err == nil {
		t.Error("/tmp/pwned exists: a forged desired set ran its command")
	}
}

func (sc *secureCluster) natsTLS(f tlsutil.Files) *tls.Config {
	cfg, err := tlsutil.ClientConfig(f, tlsutil.CoordinatorServerName)
	if err != nil {
		sc.t.Fatal(err)
	}
	return cfg
}

// natsAs connects to c1's NATS with f's certificate and collects the
// server's asynchronous errors.
func (sc *secureCluster) natsAs(f tlsutil.Files, role, id string) (*nats.Conn, chan error) {
	errs := make(chan error, 32)
	opts := []nats.Option{nats.Secure(sc.natsTLS(f)), nats.Timeout(5 * time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })}
	if role != "" {
		opts = append(opts, nats.CustomInboxPrefix(protocol.InboxPrefix(role, id)))
	}
	nc, err := nats.Connect("nats://127.0.0.11:4222", opts...)
	if err != nil {
		sc.t.Fatalf("NATS as %s %s: %v", role, id, err)
	}
	sc.t.Cleanup(nc.Close)
	return nc, errs
}

func (sc *secureCluster) expectViolation(errs chan error, what string) {
	sc.t.Helper()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			sc.t.Errorf("%s: %v, want a permissions violation", what, err)
		}
	case <-time.After(5 * time.Second):
		sc.t.Errorf("%s: no permissions violation", what)
	}
}

// makeCert makes one more certificate with the README's CA.
func (sc *secureCluster) makeCert(args ...string) tlsutil.Files {
	dir := filepath.Join(sc.dir, "extra-certs")
	out, err := exec.Command(batonBin, append([]string{"tls", "cert", "create", "--dir", dir,
		"--ca", sc.ca, "--key", filepath.Join(sc.dir, "tls", tlsutil.CAKeyFile)}, args...)...).CombinedOutput()
	if err != nil {
		sc.t.Fatalf("tls cert create %v: %v\n%s", args, err, out)
	}
	m := regexp.MustCompile(`certificate saved to: (\S+)`).FindSubmatch(out)
	k := regexp.MustCompile(`certificate key saved to: (\S+)`).FindSubmatch(out)
	if m == nil || k == nil {
		sc.t.Fatalf("tls cert create printed no paths:\n%s", out)
	}
	return tlsutil.Files{CA: sc.ca, Cert: string(m[1]), Key: string(k[1])}
}

func (sc *secureCluster) coordinatorMetric(name string) float64 {
	total := 0.0
	for _, ip := range []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"} {
		body, code, err := sc.get("https://"+ip+":7400/metrics", "")
		if err != nil || code != 200 {
			sc.t.Fatalf("coordinator %s metrics: %d %v", ip, code, err)
		}
		total += sumMetric(body, name)
	}
	return total
}

func (sc *secureCluster) lbGet(path string) string {
	resp, err := http.Get("http://127.0.0.31:7404" + path)
	if err != nil {
		sc.t.Fatalf("LB %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sc.outputs = append(sc.outputs, string(b))
	return string(b)
}

func (sc *secureCluster) lbMetric(name string) float64 { return sumMetric(sc.lbGet("/metrics"), name) }
func (sc *secureCluster) lbRoutes() string             { return sc.lbGet("/v1/routes") }

// lbServesVersion checks that the LB's answers come from version v.
func (sc *secureCluster) lbServesVersion(v int) {
	sc.t.Helper()
	for range 5 {
		resp, err := http.Get("http://127.0.0.31:30001/")
		if err != nil {
			sc.t.Fatalf("LB: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("hello from version %d", v); resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			sc.t.Fatalf("LB answered %d %q, want %q", resp.StatusCode, b, want)
		}
	}
}

// checkReplicaGotSecret finds a replica of web among this machine's
// processes and checks the secret is in its environment.
func (sc *secureCluster) checkReplicaGotSecret() {
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	found := 0
	for _, p := range procs {
		env, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		vars := strings.Split(string(env), "\x00")
		// A replica's TMPDIR is in its agent's data dir: this cluster's
		// replicas, not another test's.
		ours := slices.ContainsFunc(vars, func(v string) bool { return strings.HasPrefix(v, "TMPDIR="+sc.dir+"/") })
		if ours && slices.Contains(vars, "BATON_SERVICE=web") {
			found++
			if !slices.Contains(vars, "API_KEY="+readmeSecret) {
				cmdline, _ := os.ReadFile(strings.TrimSuffix(p, "environ") + "cmdline")
				sc.t.Errorf("replica process %s (%s) has no API_KEY=<the secret> in its environment", p, strings.ReplaceAll(string(cmdline), "\x00", " "))
			}
		}
	}
	if found == 0 {
		sc.t.Error("no replica process of web found in /proc")
	}
}

// checkSecretNowhere looks for the secret in every CLI output and API
// answer gathered, the daemons' logs, the replicas' logs as the API
// serves them, status in JSON and the LB's view.
func (sc *secureCluster) checkSecretNowhere() {
	t := sc.t
	for _, args := range [][]string{{"serve", "status", "web"}, {"serve", "status", "web", "--json"}, {"serve", "status", "--json"},
		{"serve", "logs", "web", "3", "--no-follow"}, {"serve", "logs", "web", "4", "--no-follow"}} {
		if out, err := sc.cli(sc.reader, args...); err != nil {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
	for _, path := range []string{"/v1/status", "/v1/agents"} {
		if _, code, err := sc.get("https://127.0.0.12:7400"+path, sc.management); err != nil || code != 200 {
			t.Errorf("GET %s: %d %v", path, code, err)
		}
	}
	sc.lbRoutes()
	sc.lbGet("/metrics")
	var haystacks []string
	haystacks = append(haystacks, sc.outputs...)
	logs, _ := filepath.Glob(filepath.Join(sc.dir, "*.log"))
	if len(logs) != 6 {
		t.Errorf("%d daemon logs (%v), want 6", len(logs), logs)
	}
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		haystacks = append(haystacks, string(data))
	}
	for i, h := range haystacks {
		if strings.Contains(h, readmeSecret) {
			line := h[max(0, strings.Index(h, readmeSecret)-200):]
			t.Errorf("the secret appears in output %d: ...%.300s", i, line)
		}
	}
	t.Logf("secret absent from %d CLI outputs/API answers and %d daemon logs", len(sc.outputs), len(logs))
}
