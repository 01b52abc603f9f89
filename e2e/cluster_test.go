// Package e2e runs baton as users do: separate coordinator, agent and LB
// processes built from cmd/baton, driven with the `baton serve` CLI, with
// real replica processes and real load through the LB.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/loadgen"
	"github.com/baton-dev/baton/internal/procscan"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// batonBin is the binary under test, built once in TestMain.
var batonBin string

// repoRoot is the repository root (where baton is built from).
var repoRoot string

// workRoot is where the CLI runs: a copy of the repository's examples/ in
// a directory every user may read, so example task files resolve their
// relative workdir as users' do, and agents running as root run replicas
// as "nobody" (their default), who must be able to read the workdir. A
// clone of the repository may sit under a directory only root can enter.
var workRoot string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baton-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Dir(filepath.Dir(file))
	batonBin = filepath.Join(dir, "baton")
	workRoot = filepath.Join(dir, "work")
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.CopyFS(filepath.Join(workRoot, "examples"), os.DirFS(filepath.Join(repoRoot, "examples"))); err != nil {
		fmt.Fprintln(os.Stderr, "copy examples:", err)
		os.Exit(1)
	}
	if err := openTree(workRoot); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", batonBin, "./cmd/baton")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build baton:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one baton daemon started by a test.
type proc struct {
	name    string
	args    []string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// cluster is a coordinator, agents and an LB, each its own process.
type cluster struct {
	t        *testing.T
	dir      string
	apiAddr  string
	raftAddr string
	natsURL  string
	natsPort int
	lbHost   string
	lbPort   int // first LB port
	mu       sync.Mutex
	procs    map[string]*proc
}

// agentOpts describes one agent of a test cluster.
type agentOpts struct {
	cpus         float64
	accelerators string
}

// newCluster starts a coordinator, the given agents (each on its own
// loopback address, 127.0.0.11 and up) and one LB on lbHost.
func newCluster(t *testing.T, agents ...agentOpts) *cluster {
	t.Helper()
	c := &cluster{
		t:      t,
		dir:    testutil.OpenTempDir(t),
		lbHost: "127.0.0.21",
		procs:  map[string]*proc{},
	}
	t.Cleanup(c.stopAll)
	// The ports are free when picked but bound only by the coordinator
	// process; another socket may take one meanwhile, so try fresh ones.
	for attempt := 1; ; attempt++ {
		c.apiAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
		c.raftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
		c.natsPort = testutil.FreePort(t, "127.0.0.1")
		c.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", c.natsPort)
		// A port free on the LB's address now; the demo uses 30001 and up.
		c.lbPort = testutil.FreePort(t, c.lbHost)
		err := c.tryStartCoordinator()
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("coordinator start attempt %d: port taken, trying others", attempt)
		if err := os.RemoveAll(filepath.Join(c.dir, "coordinator")); err != nil {
			t.Fatal(err)
		}
	}
	for i, a := range agents {
		c.startAgent(fmt.Sprintf("agent-%d", i+1), fmt.Sprintf("127.0.0.%d", 11+i), a)
	}
	// A picked admin port, not :0: the kernel may give :0 the service port
	// picked above, which the LB binds only later.
	c.start("lb", "lb", "--dev", "--nats-url", c.natsURL, "--bind-host", c.lbHost,
		"--admin-addr", fmt.Sprintf("%s:%d", c.lbHost, testutil.FreePort(t, c.lbHost)), "--id", "lb-1")
	c.waitAgents(len(agents))
	return c
}

// startCoordinator starts the coordinator and waits until it is healthy.
func (c *cluster) startCoordinator() {
	c.t.Helper()
	if err := c.tryStartCoordinator(); err != nil {
		c.t.Fatal(err)
	}
}

// tryStartCoordinator starts the coordinator and waits until it is
// healthy; it returns an error with the log if the process exited first.
func (c *cluster) tryStartCoordinator() error {
	p := c.start("coordinator", "coordinator", "--dev", "--data-dir", filepath.Join(c.dir, "coordinator"),
		"--http-addr", c.apiAddr, "--raft-addr", c.raftAddr, "--nats-port", strconv.Itoa(c.natsPort),
		"--lb-host", c.lbHost, "--first-lb-port", strconv.Itoa(c.lbPort))
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			log, _ := os.ReadFile(p.logPath)
			return fmt.Errorf("coordinator exited while starting:\n%s", log)
		default:
		}
		resp, err := http.Get("http://" + c.apiAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("healthz %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("coordinator not healthy after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *cluster) startAgent(id, host string, a agentOpts) {
	args := []string{"agent", "--dev", "--id", id, "--nats-url", c.natsURL, "--host", host,
		"--http-addr", host + ":0", "--data-dir", filepath.Join(c.dir, id),
		"--cpus", strconv.FormatFloat(a.cpus, 'f', -1, 64), "--memory", "8", "--region", "local",
		"--probe-interval", "250ms", "--stop-grace", "3s",
		// Replicas get nothing of the agent's environment but what it
		// passes on: the marker tells this cluster's processes apart.
		"--replica-env", c.marker()}
	if a.accelerators != "" {
		args = append(args, "--accelerators", a.accelerators)
	}
	c.start(id, args...)
}

// start runs `baton args...` in its own process group, logging to a file.
func (c *cluster) start(name string, args ...string) *proc {
	c.t.Helper()
	p := &proc{name: name, args: args, logPath: filepath.Join(c.dir, name+".log"), done: make(chan struct{})}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	p.cmd = exec.Command(batonBin, args...)
	// Replicas inherit the agent's environment: the marker tells this
	// cluster's processes from any other's on the machine.
	p.cmd.Env = append(os.Environ(), c.marker())
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	return p
}

// kill9 kills a daemon's whole process group with SIGKILL.
func (c *cluster) kill9(name string) {
	c.mu.Lock()
	p := c.procs[name]
	c.mu.Unlock()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// stopAll stops every daemon (SIGTERM, then SIGKILL) and, if the test
// failed, prints their logs.
func (c *cluster) stopAll() {
	c.mu.Lock()
	procs := make([]*proc, 0, len(c.procs))
	for _, p := range c.procs {
		procs = append(procs, p)
	}
	c.mu.Unlock()
	// All at once: each agent stops its replicas itself, NATS or not.
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	if c.t.Failed() {
		for _, p := range procs {
			buf, _ := os.ReadFile(p.logPath)
			lines := strings.Split(string(buf), "\n")
			if len(lines) > 80 {
				lines = lines[len(lines)-80:]
			}
			c.t.Logf("---- %s log (last lines) ----\n%s", p.name, strings.Join(lines, "\n"))
		}
	}
}

// cli runs `baton args...` against the cluster from workRoot (a copy of
// the repository's examples).
func (c *cluster) cli(args ...string) (stdout, stderr string, err error) {
	return c.cliIn(workRoot, args...)
}

// writableTempDir is testutil.OpenTempDir that every user may also write to: the
// tasks whose setup or run write into their workdir run as the agents'
// replica user ("nobody"), as they would on a shared path of a fleet.
func writableTempDir(t *testing.T) string {
	t.Helper()
	dir := testutil.OpenTempDir(t)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// openTree makes every directory under root readable and searchable by
// every user, and every file readable.
func openTree(root string) error {
	return filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		} else if info, err := d.Info(); err == nil && info.Mode()&0o100 != 0 {
			mode = 0o755
		}
		return os.Chmod(path, mode)
	})
}

// cliIn runs the CLI in dir, as a user working there would.
func (c *cluster) cliIn(dir string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, batonBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BATON_ADDR=http://"+c.apiAddr)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// mustCLI runs the CLI and fails the test on a non-zero exit.
func (c *cluster) mustCLI(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.cli(args...)
	if err != nil {
		c.t.Fatalf("baton %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// status runs `baton serve status --json`.
func (c *cluster) status(names ...string) protocol.StatusResponse {
	c.t.Helper()
	out := c.mustCLI(append([]string{"serve", "status", "--json"}, names...)...)
	var st protocol.StatusResponse
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		c.t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	return st
}

// statusAPI reads status straight from the API (faster than the CLI, for
// tight polling loops).
func (c *cluster) statusAPI() (protocol.StatusResponse, error) {
	var st protocol.StatusResponse
	resp, err := http.Get("http://" + c.apiAddr + "/v1/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return st, fmt.Errorf("status %d", resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (c *cluster) waitAgents(n int) {
	c.t.Helper()
	testutil.WaitFor(c.t, 20*time.Second, func() error {
		resp, err := http.Get("http://" + c.apiAddr + "/v1/agents")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var agents []protocol.Agent
		if err := json.NewDecoder(resp.Body).Decode(&agents); err != nil {
			return err
		}
		alive := 0
		for _, a := range agents {
			if a.Alive {
				alive++
			}
		}
		if alive != n {
			return fmt.Errorf("%d of %d agents registered", alive, n)
		}
		return nil
	})
}

// service returns one service's row, or nil.
func service(st protocol.StatusResponse, name string) *protocol.ServiceStatusView {
	for i := range st.Services {
		if st.Services[i].Name == name {
			return &st.Services[i]
		}
	}
	return nil
}

// replicas returns a service's replicas keyed by id.
func replicas(st protocol.StatusResponse, name string) map[int]protocol.ReplicaStatusView {
	out := map[int]protocol.ReplicaStatusView{}
	for _, r := range st.Replicas {
		if r.ServiceName == name {
			out[r.ID] = r
		}
	}
	return out
}

// waitReady waits until the service has want READY replicas of version
// and returns the status then.
func (c *cluster) waitReady(name string, version, want int, timeout time.Duration) protocol.StatusResponse {
	c.t.Helper()
	var st protocol.StatusResponse
	testutil.WaitFor(c.t, timeout, func() error {
		var err error
		if st, err = c.statusAPI(); err != nil {
			return err
		}
		n := 0
		for _, r := range replicas(st, name) {
			if r.Version == version && r.Status == protocol.ReplicaReady {
				n++
			}
		}
		if n < want {
			return fmt.Errorf("%d/%d replicas of version %d READY: %+v", n, want, version, st.Replicas)
		}
		return nil
	})
	c.waitRouted(name, version, want)
	return st
}

// waitRouted waits until the LB routes to want replicas of version and
// listens on the service's port: READY in the coordinator's state comes a
// Raft apply and a NATS message before that.
func (c *cluster) waitRouted(name string, version, want int) {
	c.t.Helper()
	admin := c.lbAdminAddr(c.t)
	testutil.WaitFor(c.t, 15*time.Second, func() error {
		resp, err := http.Get("http://" + admin + "/v1/routes")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var dump struct {
			Tables    []protocol.RouteTable `json:"tables"`
			Listening map[string]string     `json:"listening"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
			return err
		}
		if dump.Listening[name] == "" {
			return fmt.Errorf("LB not listening for %s: %+v", name, dump)
		}
		for _, table := range dump.Tables {
			if table.Service != name {
				continue
			}
			n := 0
			for _, e := range table.Endpoints {
				if e.Version == version {
					n++
				}
			}
			if n < want {
				return fmt.Errorf("LB routes %d/%d replicas of %s version %d: %+v", n, want, name, version, table)
			}
			return nil
		}
		return fmt.Errorf("LB has no table for %s", name)
	})
}

// marker is the environment entry every process of this cluster carries.
func (c *cluster) marker() string { return "BATON_E2E_CLUSTER=" + c.dir }

// replicaProcesses lists this cluster's processes of a service, from /proc.
func (c *cluster) replicaProcesses(service string) []int {
	return procscan.WithEnv(c.marker(), "BATON_SERVICE="+service)
}

// replicaPIDs lists this cluster's processes of one replica, from /proc.
func (c *cluster) replicaPIDs(service string, id int) []int {
	return procscan.WithEnv(c.marker(), "BATON_SERVICE="+service, "BATON_REPLICA_ID="+strconv.Itoa(id))
}

// startLoad runs a load on url until the returned stop is called; stop
// returns every result. served counts successes as they happen.
func startLoad(url string, workers int) (stop func() []loadgen.Result, served *atomic.Int64) {
	served = new(atomic.Int64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []loadgen.Result, 1)
	go func() {
		done <- loadgen.Run(ctx, loadgen.Config{URL: url, Workers: workers, MaxDuration: 3 * time.Minute, Served: served})
	}()
	return func() []loadgen.Result { cancel(); return <-done }, served
}

// portClosed reports whether nothing accepts connections on addr.
func portClosed(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return true
	}
	conn.Close()
	return false
}
