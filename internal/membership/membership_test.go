package membership

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/baton-dev/baton/internal/testutil"
)

// testConfig is a Config on host (a loopback IP) with a port from the OS
// and a fast join retry.
func testConfig(t *testing.T, role Role, id, host string, join ...string) Config {
	t.Helper()
	return Config{
		Meta:              Meta{Role: role, ID: id, API: host + ":8080"},
		BindAddr:          net.JoinHostPort(host, "0"),
		Join:              join,
		Logger:            slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
		RetryJoinInterval: 100 * time.Millisecond,
	}
}

func startPool(t *testing.T, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s/%s): %v", cfg.Meta.Role, cfg.Meta.ID, err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	return p
}

// statusOf is the status p sees of role/id ("" when unknown).
func statusOf(p *Pool, role Role, id string) Status {
	m, ok := p.Member(role, id)
	if !ok {
		return ""
	}
	return m.Status
}

func waitStatus(t *testing.T, timeout time.Duration, p *Pool, role Role, id string, want Status) {
	t.Helper()
	testutil.WaitFor(t, timeout, func() error {
		if got := statusOf(p, role, id); got != want {
			return fmt.Errorf("%s sees %s/%s as %q, want %q", p.name, role, id, got, want)
		}
		return nil
	})
}

// threePools starts a coordinator on 127.0.0.11 and an agent and an LB
// that join it, and waits until each sees all three alive.
func threePools(t *testing.T) (c, a, l *Pool) {
	t.Helper()
	c = startPool(t, testConfig(t, RoleCoordinator, "c1", "127.0.0.11"))
	seed := c.Local().Addr
	a = startPool(t, testConfig(t, RoleAgent, "gpu-1", "127.0.0.12", seed))
	l = startPool(t, testConfig(t, RoleLB, "lb-1", "127.0.0.13", seed))
	for _, p := range []*Pool{c, a, l} {
		testutil.WaitFor(t, 5*time.Second, func() error {
			if n := len(aliveAll(p)); n != 3 {
				return fmt.Errorf("%s sees %d alive members, want 3: %+v", p.name, n, p.Members())
			}
			return nil
		})
	}
	return c, a, l
}

func aliveAll(p *Pool) []Member {
	var out []Member
	for _, m := range p.Members() {
		if m.alive() {
			out = append(out, m)
		}
	}
	return out
}

func TestJoinSeesMembersWithMeta(t *testing.T) {
	c, a, l := threePools(t)
	for _, p := range []*Pool{c, a, l} {
		if !p.Joined() {
			t.Errorf("%s: Joined() = false", p.name)
		}
		if n := p.NumMembers(); n != 3 {
			t.Errorf("%s: NumMembers() = %d, want 3", p.name, n)
		}
		ms := p.Members()
		var names []string
		for _, m := range ms {
			names = append(names, m.Name)
		}
		if got, want := strings.Join(names, ","), "agent/gpu-1,coordinator/c1,lb/lb-1"; got != want {
			t.Errorf("%s: Members() names %s, want %s (sorted by role, id)", p.name, got, want)
		}
		coords := p.Alive(RoleCoordinator)
		if len(coords) != 1 {
			t.Fatalf("%s: Alive(coordinator) = %+v", p.name, coords)
		}
		want := Meta{Role: RoleCoordinator, ID: "c1", API: "127.0.0.11:8080"}
		if got := coords[0]; got.Meta != want || got.Addr != c.Local().Addr || got.Status != StatusAlive || got.Since.IsZero() {
			t.Errorf("%s: coordinator member %+v, want meta %+v at %s, alive, with Since", p.name, got, want, c.Local().Addr)
		}
		if m, ok := p.Member(RoleAgent, "gpu-1"); !ok || m.Meta.API != "127.0.0.12:8080" || !strings.HasPrefix(m.Addr, "127.0.0.12:") {
			t.Errorf("%s: Member(agent, gpu-1) = %+v, %v", p.name, m, ok)
		}
		if _, ok := p.Member(RoleAgent, "nope"); ok {
			t.Errorf("%s: Member(agent, nope) found", p.name)
		}
	}
	if got := a.Local(); got.Name != "agent/gpu-1" || got.Meta.ID != "gpu-1" || !strings.HasPrefix(got.Addr, "127.0.0.12:") {
		t.Errorf("Local() = %+v", got)
	}
}

func TestShutdownIsDetectedAsFailed(t *testing.T) {
	c, a, l := threePools(t)
	sub, cancel := c.Subscribe()
	defer cancel()
	start := time.Now()
	if err := l.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := l.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	var detected sync.Map
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, p := range []*Pool{c, a} {
			if _, done := detected.Load(p.name); done {
				continue
			}
			if statusOf(p, RoleLB, "lb-1") == StatusFailed {
				detected.Store(p.name, time.Since(start))
			}
		}
		n := 0
		detected.Range(func(any, any) bool { n++; return true })
		if n < 2 {
			return errors.New("lb-1 not yet failed on every member")
		}
		return nil
	})
	detected.Range(func(k, v any) bool {
		t.Logf("%s declared lb/lb-1 failed after %s", k, v.(time.Duration).Round(10*time.Millisecond))
		return true
	})
	select {
	case <-sub:
	default:
		t.Error("no change notified for the failure")
	}
	if got := c.Alive(RoleLB); len(got) != 0 {
		t.Errorf("Alive(lb) = %+v after its failure", got)
	}
	if m, _ := c.Member(RoleLB, "lb-1"); m.Meta.ID != "lb-1" {
		t.Errorf("a failed member keeps its meta: %+v", m)
	}
}

func TestLeaveIsSeenAsLeft(t *testing.T) {
	c, a, l := threePools(t)
	start := time.Now()
	if err := a.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := a.Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Errorf("Leave after Shutdown: %v, want ErrShutdown", err)
	}
	waitStatus(t, 2*time.Second, c, RoleAgent, "gpu-1", StatusLeft)
	waitStatus(t, 2*time.Second, l, RoleAgent, "gpu-1", StatusLeft)
	t.Logf("left seen after %s", time.Since(start).Round(10*time.Millisecond))
}

func TestRestartWithSameNameReplacesEntry(t *testing.T) {
	c := startPool(t, testConfig(t, RoleCoordinator, "c1", "127.0.0.11"))
	seed := c.Local().Addr

	// Same address, after the old one was declared failed.
	cfg := testConfig(t, RoleAgent, "gpu-1", "127.0.0.12", seed)
	a := startPool(t, cfg)
	waitStatus(t, 5*time.Second, c, RoleAgent, "gpu-1", StatusAlive)
	addr := a.Local().Addr
	_ = a.Shutdown()
	waitStatus(t, 10*time.Second, c, RoleAgent, "gpu-1", StatusFailed)
	cfg.BindAddr = addr
	cfg.Meta.API = "127.0.0.12:9090"
	a = startPool(t, cfg)
	testutil.WaitFor(t, 5*time.Second, func() error {
		m, _ := c.Member(RoleAgent, "gpu-1")
		if m.Status != StatusAlive || m.Meta.API != "127.0.0.12:9090" || m.Addr != addr {
			return fmt.Errorf("restarted agent seen as %+v", m)
		}
		return nil
	})

	// Another address, at once: before the old one is declared failed.
	_ = a.Shutdown()
	cfg.BindAddr = "127.0.0.13:0"
	start := time.Now()
	a = startPool(t, cfg)
	newAddr := a.Local().Addr
	testutil.WaitFor(t, 15*time.Second, func() error {
		m, _ := c.Member(RoleAgent, "gpu-1")
		if m.Status != StatusAlive || m.Addr != newAddr {
			return fmt.Errorf("agent restarted at %s seen as %+v", newAddr, m)
		}
		return nil
	})
	t.Logf("restart at a new address accepted after %s", time.Since(start).Round(10*time.Millisecond))
	n := 0
	for _, m := range c.Members() {
		if m.Name == "agent/gpu-1" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d entries for agent/gpu-1: %+v", n, c.Members())
	}
}

func TestUpdateMetaPropagates(t *testing.T) {
	c, a, l := threePools(t)
	sub, cancel := a.Subscribe()
	defer cancel()
	m := c.Local().Meta
	m.NATS = "nats://127.0.0.11:4222"
	m.Raft = "127.0.0.11:7401"
	m.Expect = 3
	if err := c.UpdateMeta(m); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Pool{a, l} {
		testutil.WaitFor(t, 5*time.Second, func() error {
			got, _ := p.Member(RoleCoordinator, "c1")
			if got.Meta != m {
				return fmt.Errorf("%s sees meta %+v, want %+v", p.name, got.Meta, m)
			}
			return nil
		})
	}
	select {
	case <-sub:
	default:
		t.Error("no change notified for the meta update")
	}
	if c.Local().Meta != m {
		t.Errorf("Local().Meta = %+v", c.Local().Meta)
	}
	bad := m
	bad.ID = "c2"
	if err := c.UpdateMeta(bad); err == nil {
		t.Error("UpdateMeta accepted another id")
	}
	big := m
	big.API = strings.Repeat("x", 600)
	if err := c.UpdateMeta(big); err == nil {
		t.Error("UpdateMeta accepted a meta over 512 bytes")
	}
}

func TestJoinRetriesUntilSeedStarts(t *testing.T) {
	port := testutil.FreePort(t, "127.0.0.21")
	seedAddr := net.JoinHostPort("127.0.0.21", strconv.Itoa(port))
	a := startPool(t, testConfig(t, RoleAgent, "gpu-1", "127.0.0.22", seedAddr))
	if a.Joined() {
		t.Fatal("Joined() before the seed started")
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := a.joinAttempts.Load(); n < 3 {
			return fmt.Errorf("%d join attempts, want 3 or more", n)
		}
		return nil
	})
	if a.Joined() {
		t.Fatal("Joined() with the seed down")
	}
	cfg := testConfig(t, RoleCoordinator, "c1", "127.0.0.21")
	cfg.BindAddr = seedAddr
	c := startPool(t, cfg)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if !a.Joined() || len(c.Alive(RoleAgent)) != 1 || len(a.Alive(RoleCoordinator)) != 1 {
			return fmt.Errorf("joined %v, coordinator sees agents %+v", a.Joined(), c.Alive(RoleAgent))
		}
		return nil
	})
}

func TestJoinOwnAddressOnlyIsJoined(t *testing.T) {
	port := testutil.FreePort(t, "127.0.0.23")
	addr := net.JoinHostPort("127.0.0.23", strconv.Itoa(port))
	cfg := testConfig(t, RoleCoordinator, "c1", "127.0.0.23", addr)
	cfg.BindAddr = addr
	p := startPool(t, cfg)
	if !p.Joined() {
		t.Error("a pool whose join list is only itself is not Joined")
	}
}

// rawDelegate is a memberlist delegate with fixed meta, standing for a
// node that gossips something baton cannot read.
type rawDelegate struct{ meta []byte }

func (d rawDelegate) NodeMeta(int) []byte           { return d.meta }
func (rawDelegate) NotifyMsg([]byte)                {}
func (rawDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (rawDelegate) LocalState(bool) []byte          { return nil }
func (rawDelegate) MergeRemoteState([]byte, bool)   {}

func TestBadMetaIsListedWithoutRole(t *testing.T) {
	c := startPool(t, testConfig(t, RoleCoordinator, "c1", "127.0.0.11"))
	for i, meta := range []string{"not json", `{"role":"wizard","id":"w1"}`} {
		mc := memberlist.DefaultLANConfig()
		mc.Name = fmt.Sprintf("odd-%d", i)
		mc.BindAddr = "127.0.0.31"
		mc.BindPort = 0
		mc.Delegate = rawDelegate{meta: []byte(meta)}
		mc.LogOutput = &bytes.Buffer{}
		ml, err := memberlist.Create(mc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ml.Shutdown() })
		if _, err := ml.Join([]string{c.Local().Addr}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := len(aliveAll(c)); n != 3 {
			return fmt.Errorf("%d alive members, want 3: %+v", n, c.Members())
		}
		return nil
	})
	for _, m := range c.Members() {
		if strings.HasPrefix(m.Name, "odd-") && m.Meta.Role != "" {
			t.Errorf("member %s with bad meta has role %q", m.Name, m.Meta.Role)
		}
	}
	if got := c.Alive(RoleCoordinator); len(got) != 1 {
		t.Errorf("Alive(coordinator) = %+v", got)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no role", Config{Meta: Meta{ID: "x"}, BindAddr: "127.0.0.1:0"}, "role"},
		{"unknown role", Config{Meta: Meta{Role: "wizard", ID: "x"}, BindAddr: "127.0.0.1:0"}, "role"},
		{"no id", Config{Meta: Meta{Role: RoleAgent}, BindAddr: "127.0.0.1:0"}, "id"},
		{"meta too big", Config{Meta: Meta{Role: RoleAgent, ID: "x", API: strings.Repeat("a", 500)}, BindAddr: "127.0.0.1:0"}, "512"},
		{"bad address", Config{Meta: Meta{Role: RoleAgent, ID: "x"}, BindAddr: "127.0.0.1"}, "host:port"},
		{"bad key", Config{Meta: Meta{Role: RoleAgent, ID: "x"}, BindAddr: "127.0.0.1:0", SecretKey: []byte("short")}, "key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.cfg)
			if err == nil {
				_ = p.Shutdown()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the pools' concurrent logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestGossipKey(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	other := []byte("fedcba9876543210")
	var logs syncBuffer
	keyed := func(role Role, id, host string, join ...string) *Pool {
		cfg := testConfig(t, role, id, host, join...)
		cfg.SecretKey = key
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		return startPool(t, cfg)
	}
	c := keyed(RoleCoordinator, "c1", "127.0.0.11")
	seed := c.Local().Addr
	members := []*Pool{c, keyed(RoleAgent, "gpu-1", "127.0.0.12", seed), keyed(RoleLB, "lb-1", "127.0.0.13", seed)}

	// Two outsiders join the same seed: one with another key, one with none.
	cfg := testConfig(t, RoleAgent, "wrong-key", "127.0.0.14", seed)
	cfg.SecretKey = other
	wrong := startPool(t, cfg)
	plain := startPool(t, testConfig(t, RoleAgent, "no-key", "127.0.0.15", seed))
	outsiders := []*Pool{wrong, plain}

	for _, p := range members {
		testutil.WaitFor(t, 5*time.Second, func() error {
			if n := len(aliveAll(p)); n != 3 {
				return fmt.Errorf("%s sees %d alive members, want 3: %+v", p.name, n, p.Members())
			}
			return nil
		})
	}
	// Let the outsiders retry their join (every 100ms) for a while; at no
	// point may anyone see them, nor they anyone.
	check := func() {
		t.Helper()
		for _, p := range members {
			for _, m := range p.Members() {
				if m.Meta.ID == "wrong-key" || m.Meta.ID == "no-key" {
					t.Fatalf("%s lists outsider %s (%s)", p.name, m.Name, m.Status)
				}
			}
		}
		for _, o := range outsiders {
			if o.Joined() {
				t.Fatalf("%s joined the encrypted pool", o.name)
			}
			if ms := o.Members(); len(ms) != 1 {
				t.Fatalf("%s lists %+v, want only itself", o.name, ms)
			}
		}
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		check()
		time.Sleep(50 * time.Millisecond)
	}
	check()
	for _, o := range outsiders {
		if n := o.joinAttempts.Load(); n < 5 {
			t.Errorf("%s made %d join attempts in 2s, want several (the test did not test)", o.name, n)
		}
	}

	// The members complained about the outsiders' messages, rate-limited:
	// each kind of complaint at most once at Warn or Error in these 2s.
	seen := map[string]int{}
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
			continue
		}
		_, msg, _ := strings.Cut(line, "msg=")
		seen[logKind(strings.TrimPrefix(msg, `"`))]++
	}
	if len(seen) == 0 {
		t.Errorf("no warning about the outsiders' messages; logs:\n%s", logs.String())
	}
	for kind, n := range seen {
		if n > 1 {
			t.Errorf("%d warnings of kind %q in 2s, want at most 1 (rate-limited); logs:\n%s", n, kind, logs.String())
		}
	}
}

func TestGossipKeySize(t *testing.T) {
	for _, n := range []int{1, 15, 17, 31, 33, 64} {
		cfg := testConfig(t, RoleAgent, "x", "127.0.0.1")
		cfg.SecretKey = make([]byte, n)
		p, err := New(cfg)
		if err == nil {
			_ = p.Shutdown()
			t.Fatalf("New with a %d-byte key succeeded", n)
		}
		if want := fmt.Sprintf("gossip key is %d bytes: use 16, 24 or 32", n); !strings.Contains(err.Error(), want) {
			t.Errorf("%d-byte key: error %q does not say %q", n, err, want)
		}
	}
	for _, n := range []int{16, 24, 32} {
		cfg := testConfig(t, RoleAgent, "x", "127.0.0.1")
		cfg.SecretKey = make([]byte, n)
		startPool(t, cfg).Shutdown()
	}
}

func TestLogWriterLevels(t *testing.T) {
	var buf bytes.Buffer
	w := newLogWriter(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	lines := []string{
		"[ERR] memberlist: Failed push/pull merge: boom from=1.2.3.4:5",
		"[ERR] memberlist: Failed push/pull merge: boom from=1.2.3.4:6",
		"[WARN] memberlist: Refuting a suspect message (from: x)",
		"[ERR] memberlist: Failed to send gossip to 1.2.3.4:5: refused",
		"[WARN] memberlist: Was able to connect to x over TCP but UDP probes failed",
		"[INFO] memberlist: Marking x as failed",
		"[DEBUG] memberlist: Stream connection from=1.2.3.4:5",
		"[ERR] memberlist: failed to receive: No installed keys could decrypt the message from=1.2.3.4:5",
		"[ERR] memberlist: Decrypt packet failed: No installed keys could decrypt the message from=1.2.3.4:5",
	}
	for _, l := range lines {
		if _, err := w.Write([]byte(l + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		`level=ERROR msg="memberlist: Failed push/pull merge: boom from=1.2.3.4:5"`,
		`level=DEBUG msg="memberlist: Failed push/pull merge: boom from=1.2.3.4:6"`,
		`level=WARN msg="memberlist: Refuting a suspect message (from: x)"`,
		`level=DEBUG msg="memberlist: Failed to send gossip`,
		`level=DEBUG msg="memberlist: Was able to connect`,
		`level=DEBUG msg="memberlist: Marking x as failed"`,
		`level=DEBUG msg="memberlist: Stream connection`,
		`level=WARN msg="memberlist: failed to receive: No installed keys could decrypt the message from=1.2.3.4:5" hint=`,
		`level=DEBUG msg="memberlist: Decrypt packet failed`,
	}
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("record %d = %s\nwant it to contain %s", i, got[i], want[i])
		}
	}
}
