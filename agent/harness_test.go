package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// readyTimeout bounds the wait for a python test server to become READY;
// generous because CI machines may be heavily loaded.
const readyTimeout = 30 * time.Second

// harness runs one Agent against a real embedded NATS server and records
// every status it publishes.
type harness struct {
	t      *testing.T
	agent  *Agent
	cfg    Config
	nc     *nats.Conn
	cancel context.CancelFunc
	runErr chan error

	stopOnce sync.Once

	mu       sync.Mutex
	statuses []protocol.AgentStatus
}

// startAgent starts an agent "a1" with test-speed intervals; mutate may
// change the config first.
func startAgent(t *testing.T, mutate func(*Config)) *harness {
	t.Helper()
	url := testutil.NATS(t)
	cfg := Config{
		ID:                "a1",
		NATSURL:           url,
		HTTPAddr:          "127.0.0.1:0",
		Host:              "127.0.0.1",
		DataDir:           t.TempDir(),
		CPUs:              4,
		MemoryGB:          8,
		Accelerators:      "A100:2",
		HeartbeatInterval: 200 * time.Millisecond,
		ProbeInterval:     100 * time.Millisecond,
		StopGrace:         time.Second,
		// Replicas run as the test's own user: the repository (testdata)
		// may sit where other users cannot read. TestReplicaUser covers
		// the unprivileged default.
		ReplicaUser: currentUser(t),
		Logger:      slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h := &harness{t: t, agent: a, cfg: cfg, runErr: make(chan error, 1)}
	nc, err := nats.Connect(cfg.NATSURL, nats.Timeout(10*time.Second))
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	h.nc = nc
	if _, err := nc.Subscribe(protocol.SubjectAgentStatusAll, func(m *nats.Msg) {
		var st protocol.AgentStatus
		if err := json.Unmarshal(m.Data, &st); err != nil {
			t.Errorf("bad status message: %v", err)
			return
		}
		h.mu.Lock()
		h.statuses = append(h.statuses, st)
		h.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.runErr <- a.Run(ctx) }()
	t.Cleanup(func() { h.stop() })
	testutil.WaitFor(t, 5*time.Second, func() error {
		if len(h.all()) == 0 {
			return fmt.Errorf("no status published yet")
		}
		return nil
	})
	return h
}

// currentUser is the name of the user running the tests.
func currentUser(t testing.TB) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// stop cancels Run and waits for it; it may be called more than once.
func (h *harness) stop() {
	h.t.Helper()
	h.stopOnce.Do(func() {
		h.cancel()
		select {
		case err := <-h.runErr:
			if err != nil {
				h.t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			h.t.Errorf("Run did not return within 20s of cancel")
		}
	})
}

// desire publishes a desired set carrying its specs inline.
func (h *harness) desire(epoch uint64, asgs ...protocol.ReplicaAssignment) {
	h.t.Helper()
	specs := map[string]protocol.TaskSpec{}
	for _, a := range asgs {
		spec := fullSpec(a.Spec)
		key := protocol.SpecKey(a.Service, a.Version)
		if prev, ok := specs[key]; ok && !reflect.DeepEqual(prev, spec) {
			h.t.Fatalf("desire: replicas of %s have different specs; give each spec its own version (a spec is a version's)", key)
		}
		specs[key] = spec
	}
	h.publishDesired(protocol.DesiredReplicas{AgentID: h.cfg.ID, Epoch: epoch, Replicas: asgs, Specs: specs})
}

// desireRefs publishes a desired set naming each spec by digest only, as
// the leader does; the agent must fetch what it has not cached (see
// specServer).
func (h *harness) desireRefs(epoch uint64, asgs ...protocol.ReplicaAssignment) {
	h.t.Helper()
	refs := make([]protocol.ReplicaAssignment, len(asgs))
	for i, a := range asgs {
		refs[i], _ = byRef(h.t, a)
	}
	h.publishDesired(protocol.DesiredReplicas{AgentID: h.cfg.ID, Epoch: epoch, Replicas: refs})
}

// publishDesired publishes d to the agent.
func (h *harness) publishDesired(d protocol.DesiredReplicas) {
	h.t.Helper()
	data, err := json.Marshal(d)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.nc.Publish(protocol.AgentDesiredSubject(h.cfg.ID), data); err != nil {
		h.t.Fatal(err)
	}
	if err := h.nc.Flush(); err != nil {
		h.t.Fatal(err)
	}
}

// fullSpec fills in what the parser always sets and tests leave out.
func fullSpec(spec protocol.TaskSpec) protocol.TaskSpec {
	if spec.Service.ReplicaPolicy.MinReplicas == 0 {
		spec.Service.ReplicaPolicy = protocol.ReplicaPolicy{MinReplicas: 1, MaxReplicas: 1}
	}
	if spec.Service.ReadinessProbe.Path == "" {
		spec.Service.ReadinessProbe.Path = "/"
	}
	return spec
}

// byRef returns asg naming its (full) spec by digest instead of carrying
// it, and the spec's JSON encoding, which a coordinator answers with.
func byRef(t testing.TB, asg protocol.ReplicaAssignment) (protocol.ReplicaAssignment, json.RawMessage) {
	t.Helper()
	spec := fullSpec(asg.Spec)
	raw, digest, err := protocol.EncodeSpec(&spec)
	if err != nil {
		t.Fatal(err)
	}
	asg.Spec = protocol.TaskSpec{}
	asg.SpecDigest = digest
	return asg, raw
}

func (h *harness) all() []protocol.AgentStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]protocol.AgentStatus(nil), h.statuses...)
}

// latest returns the last status received.
func (h *harness) latest() protocol.AgentStatus {
	all := h.all()
	if len(all) == 0 {
		return protocol.AgentStatus{}
	}
	return all[len(all)-1]
}

// report finds a replica in the last status.
func (h *harness) report(service string, id int) (protocol.ReplicaReport, bool) {
	for _, r := range h.latest().Replicas {
		if r.Service == service && r.ReplicaID == id {
			return r, true
		}
	}
	return protocol.ReplicaReport{}, false
}

// history lists the states a replica was reported in, in order, without
// repeats.
func (h *harness) history(service string, id int) []protocol.ReplicaStatus {
	var out []protocol.ReplicaStatus
	for _, st := range h.all() {
		for _, r := range st.Replicas {
			if r.Service == service && r.ReplicaID == id && (len(out) == 0 || out[len(out)-1] != r.Status) {
				out = append(out, r.Status)
			}
		}
	}
	return out
}

// waitStatus waits until the replica is last reported in status.
func (h *harness) waitStatus(service string, id int, status protocol.ReplicaStatus, timeout time.Duration) protocol.ReplicaReport {
	h.t.Helper()
	var got protocol.ReplicaReport
	testutil.WaitFor(h.t, timeout, func() error {
		r, ok := h.report(service, id)
		if !ok {
			return fmt.Errorf("replica %s/%d not reported", service, id)
		}
		if r.Status != status {
			err := fmt.Errorf("replica %s/%d is %s (%s), want %s", service, id, r.Status, r.Reason, status)
			if r.Status.IsFailed() {
				log, _ := os.ReadFile(filepath.Join(h.replicaDir(service, id), logFileName))
				err = fmt.Errorf("%w; its log:\n%s", err, log)
			}
			return err
		}
		got = r
		return nil
	})
	return got
}

// waitGone waits until the replica is no longer reported.
func (h *harness) waitGone(service string, id int, timeout time.Duration) {
	h.t.Helper()
	testutil.WaitFor(h.t, timeout, func() error {
		if r, ok := h.report(service, id); ok {
			return fmt.Errorf("replica %s/%d still reported as %s", service, id, r.Status)
		}
		return nil
	})
}

// replicaDir is where the agent keeps the replica's files.
func (h *harness) replicaDir(service string, id int) string {
	return filepath.Join(h.cfg.DataDir, "replicas", fmt.Sprintf("%s-%d", service, id))
}

// serverScript is the path of testdata/server.py.
func serverScript(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "server.py"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// serverAssignment is replica id of service svc running testdata/server.py
// with a GET /health probe.
func serverAssignment(t *testing.T, svc string, id int) protocol.ReplicaAssignment {
	t.Helper()
	return protocol.ReplicaAssignment{
		Service:   svc,
		ReplicaID: id,
		Version:   1,
		Port:      specPort(t),
		Spec: protocol.TaskSpec{
			Run: "exec python3 " + serverScript(t),
			Service: protocol.ServiceSpec{
				ReadinessProbe: protocol.ReadinessProbe{Path: "/health", InitialDelaySeconds: 20, TimeoutSeconds: 2},
			},
		},
	}
}

// specPorts are the ports specPort handed out in this test binary.
var specPorts struct {
	sync.Mutex
	used map[int]bool
}

// specPort returns a port for a replica's spec that is free now. It is in
// the agent's own pick range and outside the kernel's ephemeral range, so
// no outgoing connection (a probe, a NATS client, another test's
// listener on port 0) can take it before the replica binds it; and it is
// never handed to two tests of this binary.
func specPort(t *testing.T) int {
	t.Helper()
	lo, hi := ephemeralPorts()
	specPorts.Lock()
	defer specPorts.Unlock()
	if specPorts.used == nil {
		specPorts.used = map[int]bool{}
	}
	r := DefaultConfig().PortRange
	for range 1000 {
		port := r.Min + rand.IntN(r.Max-r.Min+1)
		if (port >= lo && port <= hi) || specPorts.used[port] || portHeld(false, "127.0.0.1", port) != nil {
			continue
		}
		specPorts.used[port] = true
		return port
	}
	t.Fatalf("no free port in %d-%d outside the ephemeral range %d-%d", r.Min, r.Max, lo, hi)
	return 0
}

// ephemeralPorts is the kernel's range for outgoing connections' local
// ports (Linux's default when it cannot be read).
func ephemeralPorts() (lo, hi int) {
	lo, hi = 32768, 60999
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	if f := strings.Fields(string(data)); len(f) == 2 {
		l, err1 := strconv.Atoi(f[0])
		h, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil && l <= h {
			return l, h
		}
	}
	return lo, hi
}

// groupGone reports whether no live process is left in group pgid.
func groupGone(pgid int) error {
	if pgid <= 0 {
		return fmt.Errorf("no pgid")
	}
	if groupAlive(pgid) {
		return fmt.Errorf("process group %d still has live processes", pgid)
	}
	return nil
}

// pidAlive reports whether a process exists (zombies included).
func pidAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// testWriter sends log lines to t.Log until the test ends.
type testWriter struct {
	t      *testing.T
	mu     sync.Mutex
	closed bool
}

func newTestWriter(t *testing.T) *testWriter {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
	})
	return w
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}
