package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/procscan"
	"github.com/baton-dev/baton/internal/testutil"
)

// The fault harness: a coordinator cluster, agents and LBs, each its own
// process on its own loopback address, with the faults a real fleet sees:
// kill -9, a frozen process (SIGSTOP), a restart on the same data dir,
// and network cuts between two nodes.
//
// Addresses: coordinators 127.0.0.111 and up, agents 127.0.0.131 and up,
// LBs 127.0.0.151 and up (the other e2e tests use 127.0.0.1, .11 and up,
// .21 and .31). Every node uses the same fixed ports on its own address,
// as it would on its own machine: see the fault*Port constants.
//
// Cuts: `iptables -I OUTPUT -s IPa -d IPb -j DROP` alone does not cut two
// loopback nodes, because a socket that dials without binding a source
// address (Raft's, NATS routes', memberlist's TCP) sends from 127.0.0.1,
// whoever dials. So every node runs in a cgroup (v2) of its own, and a
// cut drops what a's processes send to b's address and what b's send to
// a's: `iptables -I OUTPUT -m cgroup --path <a's cgroup> -d IPb -j DROP`
// and the reverse. A socket keeps the cgroup it was made in, so each
// process is moved into its cgroup as soon as it is started (before it
// can have opened one: a Go binary takes milliseconds to get that far).
// Each cut is checked by dialling across it from each side's cgroup.

// The ports every node of a fault cluster uses on its own address.
const (
	faultAPIPort         = 7400  // coordinator HTTP API
	faultRaftPort        = 7401  // coordinator Raft
	faultGossipPort      = 7402  // every node: memberlist, TCP and UDP
	faultAdminPort       = 7403  // agent HTTP, LB admin
	faultNATSPort        = 14222 // coordinator's embedded NATS (not 4222: a local NATS may hold it on every address)
	faultNATSClusterPort = 16222 // coordinator's NATS cluster routes
)

// Roles of fault cluster nodes.
const (
	roleCoordinator = "coordinator"
	roleAgent       = "agent"
	roleLB          = "lb"
)

// faultOpts says what a fault cluster runs.
type faultOpts struct {
	coordinators int // 3 or 5
	agents       int
	lbs          int
	// agentCPUs is each agent's --cpus (default 4).
	agentCPUs float64
	// slow leaves out --dev (production timings; the coordinators get
	// --insecure instead, as they run without TLS and ACLs).
	slow bool
}

// faultNode is one daemon of a fault cluster.
type faultNode struct {
	name   string // c1, gpu-1, lb-1: also its --node-id/--id
	role   string
	ip     string
	args   []string
	cgroup string // its cgroup, relative to the cgroup2 root; "" if none
}

// faultCluster runs and breaks a baton cluster. Its methods must be
// called from the test's goroutine (they may call t.Fatal).
type faultCluster struct {
	t    *testing.T
	base *cluster // starts, kills and logs the processes (cluster_test.go)

	nodes  map[string]*faultNode
	coords []string // coordinator names, in order
	agents []string
	lbs    []string

	cgroupRoot string // the cgroup2 mount
	cgroupDir  string // this cluster's cgroup, relative to cgroupRoot
	cgroupErr  error  // why nodes have no cgroups (cut then fails)

	mu      sync.Mutex          // guards stopped and rules
	stopped map[string]bool     // nodes under SIGSTOP
	rules   map[string][]string // iptables rules in place, by key
}

// faultSeq numbers fault clusters of this test binary (their cgroups).
var faultSeq atomic.Int64

// newFaultCluster starts the coordinators, then the agents and LBs, and
// waits until the coordinators agree on a leader.
func newFaultCluster(t *testing.T, opts faultOpts) *faultCluster {
	t.Helper()
	if opts.coordinators == 0 {
		opts.coordinators = 3
	}
	if opts.agentCPUs == 0 {
		opts.agentCPUs = 4
	}
	fc := &faultCluster{
		t:       t,
		base:    &cluster{t: t, dir: testutil.OpenTempDir(t), procs: map[string]*proc{}},
		nodes:   map[string]*faultNode{},
		stopped: map[string]bool{},
		rules:   map[string][]string{},
	}
	// Cleanups run last first: thaw and heal, then stop every process
	// (printing the logs on failure), then check that none is left and
	// remove the cgroups.
	t.Cleanup(fc.afterStop)
	t.Cleanup(fc.base.stopAll)
	t.Cleanup(fc.beforeStop)
	fc.setupCgroups()

	var gossip []string
	for i := range opts.coordinators {
		ip := fmt.Sprintf("127.0.0.%d", 111+i)
		fc.coords = append(fc.coords, fmt.Sprintf("c%d", i+1))
		gossip = append(gossip, net.JoinHostPort(ip, strconv.Itoa(faultGossipPort)))
	}
	lbHost := ""
	if opts.lbs > 0 {
		lbHost = "127.0.0.151"
	}
	for i, name := range fc.coords {
		ip := fmt.Sprintf("127.0.0.%d", 111+i)
		var join []string
		for j, g := range gossip {
			if j != i {
				join = append(join, g)
			}
		}
		args := []string{"coordinator", "--node-id", name,
			"--data-dir", filepath.Join(fc.base.dir, name),
			"--http-addr", hostPort(ip, faultAPIPort), "--raft-addr", hostPort(ip, faultRaftPort),
			"--gossip-addr", hostPort(ip, faultGossipPort),
			"--nats-host", ip, "--nats-port", strconv.Itoa(faultNATSPort),
			"--nats-cluster-port", strconv.Itoa(faultNATSClusterPort),
			"--bootstrap-expect", strconv.Itoa(opts.coordinators), "--join", strings.Join(join, ",")}
		if lbHost != "" {
			args = append(args, "--lb-host", lbHost)
		}
		if opts.slow {
			// Production timings: without --dev a coordinator refuses
			// to run without TLS and ACLs unless told --insecure.
			args = append(args, "--insecure")
		} else {
			args = append(args, "--dev")
		}
		fc.add(&faultNode{name: name, role: roleCoordinator, ip: ip, args: args})
	}
	for i := range opts.agents {
		name, ip := fmt.Sprintf("gpu-%d", i+1), fmt.Sprintf("127.0.0.%d", 131+i)
		args := []string{"agent", "--id", name, "--host", ip,
			"--gossip-addr", hostPort(ip, faultGossipPort), "--join", strings.Join(gossip, ","),
			"--http-addr", hostPort(ip, faultAdminPort), "--data-dir", filepath.Join(fc.base.dir, name),
			"--cpus", strconv.FormatFloat(opts.agentCPUs, 'f', -1, 64), "--memory", "8", "--region", "local",
			"--probe-interval", "250ms", "--stop-grace", "3s",
			// Replicas get nothing of the agent's environment but what it
			// passes on: the marker tells this cluster's processes apart.
			"--replica-env", fc.base.marker()}
		if !opts.slow {
			args = append(args, "--dev")
		}
		fc.agents = append(fc.agents, name)
		fc.add(&faultNode{name: name, role: roleAgent, ip: ip, args: args})
	}
	for i := range opts.lbs {
		name, ip := fmt.Sprintf("lb-%d", i+1), fmt.Sprintf("127.0.0.%d", 151+i)
		args := []string{"lb", "--id", name, "--bind-host", ip,
			"--gossip-addr", hostPort(ip, faultGossipPort), "--join", strings.Join(gossip, ","),
			"--admin-addr", hostPort(ip, faultAdminPort)}
		if !opts.slow {
			args = append(args, "--dev")
		}
		fc.lbs = append(fc.lbs, name)
		fc.add(&faultNode{name: name, role: roleLB, ip: ip, args: args})
	}

	// The coordinators wait for each other (--bootstrap-expect): start
	// them all, then wait.
	for _, name := range fc.coords {
		fc.startNode(name)
	}
	for _, name := range fc.coords {
		fc.waitHealthy(name, 30*time.Second)
	}
	fc.waitLeader(15 * time.Second)
	for _, name := range append(append([]string{}, fc.agents...), fc.lbs...) {
		fc.startNode(name)
	}
	return fc
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// add adds a node, with a cgroup of its own when the cluster has one.
func (fc *faultCluster) add(n *faultNode) {
	fc.t.Helper()
	if fc.cgroupErr == nil {
		n.cgroup = fc.cgroupDir + "/" + n.name
		if err := os.Mkdir(filepath.Join(fc.cgroupRoot, n.cgroup), 0o755); err != nil {
			fc.t.Fatalf("make %s's cgroup: %v", n.name, err)
		}
	}
	fc.nodes[n.name] = n
}

// node returns a node by name, failing the test for an unknown one.
func (fc *faultCluster) node(name string) *faultNode {
	fc.t.Helper()
	n := fc.nodes[name]
	if n == nil {
		fc.t.Fatalf("fault cluster: no node %q", name)
	}
	return n
}

// proc returns the node's latest process, or nil if it was never started.
func (fc *faultCluster) proc(name string) *proc {
	fc.base.mu.Lock()
	defer fc.base.mu.Unlock()
	return fc.base.procs[name]
}

// running reports whether the node's process is alive (maybe stopped).
func (fc *faultCluster) running(name string) bool {
	p := fc.proc(name)
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// apiURL is a coordinator's API base URL.
func (fc *faultCluster) apiURL(name string) string {
	return "http://" + hostPort(fc.node(name).ip, faultAPIPort)
}

// apiURLs lists every coordinator's API, as BATON_ADDR takes them.
func (fc *faultCluster) apiURLs() []string {
	var urls []string
	for _, c := range fc.coords {
		urls = append(urls, fc.apiURL(c))
	}
	return urls
}

// faultPorts lists what a node of role listens on: TCP ports, and UDP ports.
func faultPorts(role string) (tcp, udp []int) {
	switch role {
	case roleCoordinator:
		return []int{faultAPIPort, faultRaftPort, faultGossipPort, faultNATSPort, faultNATSClusterPort}, []int{faultGossipPort}
	default:
		return []int{faultGossipPort, faultAdminPort}, []int{faultGossipPort}
	}
}

// checkPortsFree fails the test if something holds one of a node's ports
// on its address: a node must get the ports its peers were told.
func (fc *faultCluster) checkPortsFree(n *faultNode) {
	fc.t.Helper()
	tcp, udp := faultPorts(n.role)
	for _, port := range tcp {
		l, err := net.Listen("tcp", hostPort(n.ip, port))
		if err != nil {
			fc.t.Fatalf("%s needs TCP %s, which is taken: %v (see `ss -ltnp | grep %d`; stop what holds it, maybe a baton left from another run)",
				n.name, hostPort(n.ip, port), err, port)
		}
		l.Close()
	}
	for _, port := range udp {
		l, err := net.ListenPacket("udp", hostPort(n.ip, port))
		if err != nil {
			fc.t.Fatalf("%s needs UDP %s, which is taken: %v (see `ss -lunp | grep %d`)", n.name, hostPort(n.ip, port), err, port)
		}
		l.Close()
	}
}

// startNode starts a node that is not running, with its data dir as it
// was left, and moves it into its cgroup.
func (fc *faultCluster) startNode(name string) {
	fc.t.Helper()
	n := fc.node(name)
	if fc.running(name) {
		fc.t.Fatalf("start %s: it is running", name)
	}
	fc.checkPortsFree(n)
	p := fc.base.start(name, n.args...)
	if n.cgroup != "" {
		procs := filepath.Join(fc.cgroupRoot, n.cgroup, "cgroup.procs")
		if err := os.WriteFile(procs, []byte(strconv.Itoa(p.cmd.Process.Pid)), 0o644); err != nil {
			fc.t.Fatalf("move %s into its cgroup: %v", name, err)
		}
	}
	fc.mu.Lock()
	delete(fc.stopped, name)
	fc.mu.Unlock()
}

// kill9 kills a node's process group with SIGKILL and waits until it is
// gone (frozen or not).
func (fc *faultCluster) kill9(name string) {
	fc.t.Helper()
	if !fc.running(name) {
		fc.t.Fatalf("kill -9 %s: it is not running", name)
	}
	fc.base.kill9(name)
	fc.mu.Lock()
	delete(fc.stopped, name)
	fc.mu.Unlock()
}

// restart stops a node (SIGTERM, SIGKILL after 15 s) if it runs, and
// starts it again on the same data dir.
func (fc *faultCluster) restart(name string) {
	fc.t.Helper()
	if p := fc.proc(name); p != nil && fc.running(name) {
		fc.cont(name)
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			fc.t.Logf("%s did not stop within 15s of SIGTERM; killing it", name)
			fc.base.kill9(name)
		}
	}
	fc.startNode(name)
}

// stop freezes a node's process group (SIGSTOP): it holds its sockets and
// answers nothing, as a machine that hangs. It returns once every thread
// of the node's process is stopped: a thread in an uninterruptible wait
// (an fsync) takes the signal only when the wait ends, and the process
// may answer meanwhile.
func (fc *faultCluster) stop(name string) {
	fc.t.Helper()
	fc.signalGroup(name, syscall.SIGSTOP)
	fc.mu.Lock()
	fc.stopped[name] = true
	fc.mu.Unlock()
	pid := fc.proc(name).cmd.Process.Pid
	testutil.WaitFor(fc.t, 10*time.Second, func() error {
		return allThreadsStopped(pid)
	})
}

// allThreadsStopped returns nil when every thread of process pid is in
// state T (stopped), from /proc.
func allThreadsStopped(pid int) error {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(filepath.Join(dir, task.Name(), "stat"))
		if err != nil {
			continue // the thread exited
		}
		// "tid (comm) S ...": the state follows the last ')'.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 || i+2 >= len(stat) {
			return fmt.Errorf("thread %s: unparsable stat %q", task.Name(), stat)
		}
		if state := stat[i+2]; state != 'T' {
			return fmt.Errorf("thread %s of %d is in state %c, not stopped yet", task.Name(), pid, state)
		}
	}
	return nil
}

// cont thaws a node stopped with stop.
func (fc *faultCluster) cont(name string) {
	fc.t.Helper()
	fc.signalGroup(name, syscall.SIGCONT)
	fc.mu.Lock()
	delete(fc.stopped, name)
	fc.mu.Unlock()
}

func (fc *faultCluster) isStopped(name string) bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.stopped[name]
}

func (fc *faultCluster) signalGroup(name string, sig syscall.Signal) {
	fc.t.Helper()
	p := fc.proc(name)
	if p == nil || !fc.running(name) {
		fc.t.Fatalf("signal %s to %s: it is not running", sig, name)
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		fc.t.Fatalf("signal %s to %s: %v", sig, name, err)
	}
}

// waitHealthy waits until a coordinator's /healthz answers 200 (it knows
// a leader and has replayed its log), failing with its log if it exits.
func (fc *faultCluster) waitHealthy(name string, timeout time.Duration) {
	fc.t.Helper()
	p := fc.proc(name)
	url := fc.apiURL(name) + "/healthz"
	testutil.WaitFor(fc.t, timeout, func() error {
		select {
		case <-p.done:
			fc.t.Fatalf("%s exited while starting (%s):\n%s", name, p.cmd.ProcessState, logTail(p.logPath, 40))
		default:
		}
		code, body, err := faultGet(url, time.Second)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("%s /healthz %d: %s", name, code, body)
		}
		return nil
	})
}

// healthzRaft matches /healthz's Raft line: "raft: Follower, leader c1 at
// 127.0.0.111:7401" or "raft: Candidate, no leader known".
var healthzRaft = regexp.MustCompile(`(?m)^raft: (\w+), (?:leader (\S+) at|no leader known)`)

// leader asks every running, unfrozen coordinator's /healthz who leads.
// It returns the node that says it leads and that a majority of all
// coordinators (itself among them) name as leader, or an error with what
// each said.
func (fc *faultCluster) leader() (string, error) {
	type view struct{ state, leader string }
	views := map[string]view{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range fc.coords {
		if !fc.running(c) || fc.isStopped(c) {
			continue
		}
		url := fc.apiURL(c) + "/healthz"
		wg.Go(func() {
			_, body, err := faultGet(url, time.Second)
			v := view{state: "unreachable"}
			if err == nil {
				if m := healthzRaft.FindStringSubmatch(body); m != nil {
					v = view{state: m[1], leader: m[2]}
				} else {
					v.state = "unparsed: " + body
				}
			}
			mu.Lock()
			views[c] = v
			mu.Unlock()
		})
	}
	wg.Wait()
	votes := map[string]int{}
	for _, v := range views {
		if v.leader != "" {
			votes[v.leader]++
		}
	}
	for _, c := range fc.coords {
		if views[c].state == "Leader" && views[c].leader == c && votes[c] > len(fc.coords)/2 {
			return c, nil
		}
	}
	var parts []string
	for _, c := range fc.coords {
		v, ok := views[c]
		switch {
		case !ok && fc.isStopped(c):
			parts = append(parts, c+": stopped")
		case !ok:
			parts = append(parts, c+": not running")
		default:
			parts = append(parts, fmt.Sprintf("%s: %s, leader %q", c, v.state, v.leader))
		}
	}
	return "", fmt.Errorf("no leader agreed by a majority: %s", strings.Join(parts, "; "))
}

// waitLeader waits until a majority agrees on a leader that is none of
// not, and returns it.
func (fc *faultCluster) waitLeader(timeout time.Duration, not ...string) string {
	fc.t.Helper()
	var leader string
	testutil.WaitFor(fc.t, timeout, func() error {
		l, err := fc.leader()
		if err != nil {
			return err
		}
		for _, n := range not {
			if l == n {
				return fmt.Errorf("%s still leads", l)
			}
		}
		leader = l
		return nil
	})
	return leader
}

// faultGet fetches url with a timeout and returns the status and body.
func faultGet(url string, timeout time.Duration) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(body), err
}

// logTail returns the last n lines of a file.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// cli runs `baton args...` from workRoot with BATON_ADDR listing every
// coordinator, as a user of the cluster would.
func (fc *faultCluster) cli(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, batonBin, args...)
	cmd.Dir = workRoot
	cmd.Env = append(os.Environ(), "BATON_ADDR="+strings.Join(fc.apiURLs(), ","))
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// ---- network cuts ----

// setupCgroups makes this cluster's cgroup under the cgroup2 mount; the
// nodes get theirs in it. Without cgroup2 the nodes run anyway, and cut
// fails saying why.
func (fc *faultCluster) setupCgroups() {
	root, err := cgroup2Mount()
	if err != nil {
		fc.cgroupErr = err
		return
	}
	dir := fmt.Sprintf("baton-e2e-%d-%d", os.Getpid(), faultSeq.Add(1))
	if err := os.Mkdir(filepath.Join(root, dir), 0o755); err != nil {
		fc.cgroupErr = fmt.Errorf("make a cgroup under %s: %w (the e2e tests run as root)", root, err)
		return
	}
	fc.cgroupRoot, fc.cgroupDir = root, dir
}

// cgroup2Mount finds where the unified (v2) cgroup hierarchy is mounted:
// /sys/fs/cgroup on most systems, /sys/fs/cgroup/unified on hybrid ones.
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1], nil
		}
	}
	return "", errors.New("no cgroup2 file system is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)")
}

// iptables runs iptables with args, failing the test with how to get it
// working if it is missing or refused.
func (fc *faultCluster) iptables(args ...string) {
	fc.t.Helper()
	if err := runIptables(args...); err != nil {
		fc.t.Fatal(err)
	}
}

func runIptables(args ...string) error {
	path, err := exec.LookPath("iptables")
	if err != nil {
		return errors.New("network cuts need iptables: install it (apt-get install iptables) and run the e2e tests as root")
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s (network cuts need root, or CAP_NET_ADMIN, and the xt_cgroup match)",
			strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// cutRule is the OUTPUT rule dropping what from's processes send to to's
// address.
func (fc *faultCluster) cutRule(from, to *faultNode) []string {
	return []string{"OUTPUT", "-m", "cgroup", "--path", from.cgroup, "-d", to.ip,
		"-m", "comment", "--comment", "baton-e2e " + fc.cgroupDir, "-j", "DROP"}
}

// cut drops every packet between nodes a and b, both ways, until heal (or
// the test's end), and checks that neither can reach the other.
func (fc *faultCluster) cut(a, b string) {
	fc.t.Helper()
	na, nb := fc.node(a), fc.node(b)
	if fc.cgroupErr != nil {
		fc.t.Fatalf("cut %s from %s: the nodes have no cgroups of their own: %v", a, b, fc.cgroupErr)
	}
	for _, dir := range [][2]*faultNode{{na, nb}, {nb, na}} {
		rule := fc.cutRule(dir[0], dir[1])
		key := strings.Join(rule, " ")
		fc.mu.Lock()
		_, done := fc.rules[key]
		fc.mu.Unlock()
		if done {
			continue
		}
		fc.iptables(append([]string{"-I"}, rule...)...)
		fc.mu.Lock()
		fc.rules[key] = rule
		fc.mu.Unlock()
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, dir := range [][2]*faultNode{{na, nb}, {nb, na}} {
		wg.Go(func() { errs[i] = fc.checkCut(dir[0], dir[1]) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			fc.t.Fatalf("cut %s from %s: %v", a, b, err)
		}
	}
}

// heal removes the cut between a and b.
func (fc *faultCluster) heal(a, b string) {
	fc.t.Helper()
	na, nb := fc.node(a), fc.node(b)
	for _, dir := range [][2]*faultNode{{na, nb}, {nb, na}} {
		rule := fc.cutRule(dir[0], dir[1])
		key := strings.Join(rule, " ")
		fc.mu.Lock()
		_, ok := fc.rules[key]
		fc.mu.Unlock()
		if !ok {
			continue
		}
		fc.iptables(append([]string{"-D"}, rule...)...)
		fc.mu.Lock()
		delete(fc.rules, key)
		fc.mu.Unlock()
	}
}

// checkCut dials to's gossip port from a process in from's cgroup: a cut
// drops the SYN, so the dial must time out. (A frozen or dead node would
// still accept, or refuse, without the cut.)
func (fc *faultCluster) checkCut(from, to *faultNode) error {
	procs := filepath.Join(fc.cgroupRoot, from.cgroup, "cgroup.procs")
	script := `echo $$ > "$1" && exec timeout 0.5 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$2" "$3"`
	cmd := exec.Command("bash", "-c", script, "cut-check", procs, to.ip, strconv.Itoa(faultGossipPort))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 124 {
		return nil // timed out: dropped
	}
	return fmt.Errorf("a process in %s's cgroup still reaches %s (bash: %v %s): the iptables cgroup match does not take here",
		from.name, hostPort(to.ip, faultGossipPort), err, strings.TrimSpace(string(out)))
}

// ---- cleanup ----

// beforeStop thaws frozen nodes (a stopped process ignores SIGTERM) and
// removes the cuts.
func (fc *faultCluster) beforeStop() {
	fc.mu.Lock()
	var frozen []string
	for name := range fc.stopped {
		frozen = append(frozen, name)
	}
	rules := fc.rules
	fc.rules = map[string][]string{}
	fc.stopped = map[string]bool{}
	fc.mu.Unlock()
	for _, name := range frozen {
		if p := fc.proc(name); p != nil {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGCONT)
		}
	}
	for _, rule := range rules {
		if err := runIptables(append([]string{"-D"}, rule...)...); err != nil {
			fc.t.Errorf("remove a cut: %v", err)
		}
	}
}

// afterStop checks that no process of the cluster outlived it (replicas
// included: they carry the marker), killing any that did, and removes the
// cgroups.
func (fc *faultCluster) afterStop() {
	marker := fc.base.marker()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := procscan.WithEnv(marker)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			fc.t.Errorf("processes of the cluster outlived it: %v (killed now)", left)
			for _, pid := range left {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fc.cgroupDir == "" {
		return
	}
	for _, n := range fc.nodes {
		if n.cgroup != "" {
			removeCgroup(filepath.Join(fc.cgroupRoot, n.cgroup))
		}
	}
	removeCgroup(filepath.Join(fc.cgroupRoot, fc.cgroupDir))
}

// removeCgroup removes an empty cgroup, waiting a little for the kernel to
// let go of processes just reaped.
func removeCgroup(dir string) {
	for range 50 {
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- the harness's own test ----

// TestFaultHarness checks the harness on three coordinators: a leader is
// elected; kill -9 of it elects another; a frozen follower comes back; a
// leader cut from both followers is replaced, and after the heal the
// three agree again.
func TestFaultHarness(t *testing.T) {
	fc := newFaultCluster(t, faultOpts{coordinators: 3})
	first := fc.waitLeader(10 * time.Second)
	t.Logf("leader: %s", first)

	fc.kill9(first)
	second := fc.waitLeader(15*time.Second, first)
	t.Logf("after kill -9 of %s: %s leads", first, second)
	fc.startNode(first)
	fc.waitHealthy(first, 30*time.Second)

	follower := fc.follower(second)
	fc.stop(follower)
	if _, _, err := faultGet(fc.apiURL(follower)+"/healthz", 500*time.Millisecond); err == nil {
		t.Fatalf("%s answered /healthz while stopped (SIGSTOP)", follower)
	}
	if l := fc.waitLeader(10 * time.Second); l != second {
		t.Logf("leadership moved from %s to %s while %s was frozen", second, l, follower)
	}
	fc.cont(follower)
	fc.waitHealthy(follower, 15*time.Second)

	leader := fc.waitLeader(10 * time.Second)
	var others []string
	for _, c := range fc.coords {
		if c != leader {
			others = append(others, c)
			fc.cut(leader, c)
		}
	}
	next := fc.waitLeader(20*time.Second, leader)
	t.Logf("%s cut from %v: %s leads", leader, others, next)
	for _, c := range others {
		fc.heal(leader, c)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		l, err := fc.leader()
		if err != nil {
			return err
		}
		// Every coordinator names the same leader again.
		for _, c := range fc.coords {
			_, body, err := faultGet(fc.apiURL(c)+"/healthz", time.Second)
			if err != nil {
				return err
			}
			if m := healthzRaft.FindStringSubmatch(body); m == nil || m[2] != l {
				return fmt.Errorf("%s does not name %s as leader yet: %s", c, l, body)
			}
		}
		return nil
	})

	fc.restart(leader)
	fc.waitHealthy(leader, 30*time.Second)
	out, errOut, err := fc.cli("operator", "raft", "list-peers", "--json")
	if err != nil {
		t.Fatalf("baton operator raft list-peers --json: %v\n%s%s", err, out, errOut)
	}
	for _, c := range fc.coords {
		if !strings.Contains(out, `"`+c+`"`) {
			t.Errorf("list-peers lacks %s:\n%s", c, out)
		}
	}
}

// follower returns a running coordinator other than leader.
func (fc *faultCluster) follower(leader string) string {
	fc.t.Helper()
	for _, c := range fc.coords {
		if c != leader && fc.running(c) && !fc.isStopped(c) {
			return c
		}
	}
	fc.t.Fatalf("no running follower of %s", leader)
	return ""
}
