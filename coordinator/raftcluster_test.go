package coordinator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton/coordinator"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// raftCluster is N coordinators in this process, on 127.0.0.1 with ports
// from the OS, that bootstrap together over gossip.
type raftCluster struct {
	t      *testing.T
	cfgs   []coordinator.Config
	nodes  []*coordinator.Server
	cancel []context.CancelFunc
	done   []chan struct{}
}

func newRaftCluster(t *testing.T, n int) *raftCluster {
	t.Helper()
	return newRaftClusterWith(t, n, nil)
}

// newRaftClusterWith is newRaftCluster with edit (when not nil) changing
// each node's config before it starts.
func newRaftClusterWith(t *testing.T, n int, edit func(i int, cfg *coordinator.Config)) *raftCluster {
	t.Helper()
	c := &raftCluster{t: t}
	var gossip []string
	for range n {
		gossip = append(gossip, fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1")))
	}
	for i := range n {
		cfg := coordinator.DevConfig()
		cfg.NodeID = fmt.Sprintf("c%d", i+1)
		cfg.DataDir = t.TempDir()
		cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
		cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
		cfg.GossipAddr = gossip[i]
		cfg.Join = gossip
		cfg.BootstrapExpect = n
		cfg.NATSPort = -1
		cfg.NATSClusterPort = -1
		cfg.FirstLBPort = testutil.FreePort(t, "127.0.0.1")
		cfg.RaftTimeout = 100 * time.Millisecond
		cfg.Logger = slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelInfo}))
		if edit != nil {
			edit(i, &cfg)
		}
		c.cfgs = append(c.cfgs, cfg)
		c.nodes = append(c.nodes, nil)
		c.cancel = append(c.cancel, nil)
		c.done = append(c.done, nil)
	}
	for i := range n {
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	return c
}

func (c *raftCluster) start(i int) {
	c.t.Helper()
	s, err := coordinator.New(c.cfgs[i])
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	c.nodes[i], c.cancel[i], c.done[i] = s, cancel, done
}

func (c *raftCluster) stop(i int) {
	if c.cancel[i] == nil {
		return
	}
	c.cancel[i]()
	<-c.done[i]
	c.cancel[i] = nil
}

// leader waits for one node to lead and returns its index.
func (c *raftCluster) leader() int {
	c.t.Helper()
	idx := -1
	testutil.WaitFor(c.t, 15*time.Second, func() error {
		for i, s := range c.nodes {
			if c.cancel[i] != nil && s.IsLeader() {
				idx = i
				return nil
			}
		}
		return fmt.Errorf("no leader")
	})
	return idx
}

type answer struct {
	code   int
	header http.Header
	body   []byte
}

func (c *raftCluster) do(i int, method, path string, body any) answer {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+c.nodes[i].HTTPAddr()+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

const clusterTask = "service:\n  readiness_probe: /\n  replicas: 1\nrun: sleep 1000\n"

// Three coordinators find each other over gossip and bootstrap one Raft
// cluster; a write sent to a follower is forwarded to the leader; reads
// answer locally with their freshness, ?consistent through the leader; a
// killed leader is replaced; with one node of three left, writes are
// refused naming what is missing and reads answer marked stale.
func TestCoordinatorCluster(t *testing.T) {
	c := newRaftCluster(t, 3)
	l := c.leader()
	f := (l + 1) % 3
	leaderID := c.cfgs[l].NodeID

	var peers protocol.RaftPeersResponse
	testutil.WaitFor(t, 10*time.Second, func() error {
		a := c.do(f, "GET", "/v1/operator/raft/peers", nil)
		if err := json.Unmarshal(a.body, &peers); err != nil {
			return err
		}
		leaders := 0
		for _, p := range peers.Peers {
			if p.State == "leader" {
				leaders++
			}
		}
		if len(peers.Peers) != 3 || leaders != 1 {
			return fmt.Errorf("peers %+v", peers.Peers)
		}
		return nil
	})

	a := c.do(f, "POST", "/v1/services", protocol.UpRequest{Name: "svc", YAML: clusterTask})
	if a.code != http.StatusCreated || a.header.Get(protocol.HeaderServedBy) != leaderID {
		t.Fatalf("up via follower: %d served by %q: %s", a.code, a.header.Get(protocol.HeaderServedBy), a.body)
	}
	a = c.do(f, "GET", "/v1/status?consistent", nil)
	var st protocol.StatusResponse
	_ = json.Unmarshal(a.body, &st)
	if a.code != 200 || st.Stale || len(st.Services) != 1 || a.header.Get(protocol.HeaderServedBy) != leaderID {
		t.Fatalf("consistent read via follower: %d %s", a.code, a.body)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		a := c.do(f, "GET", "/v1/status", nil)
		var st protocol.StatusResponse
		_ = json.Unmarshal(a.body, &st)
		if len(st.Services) != 1 || st.Stale || a.header.Get(protocol.HeaderIndex) == "" || a.header.Get(protocol.HeaderServedBy) != c.cfgs[f].NodeID {
			return fmt.Errorf("local read on follower: %s %v", a.body, a.header)
		}
		return nil
	})

	// The leader dies: another takes over and writes go on.
	c.stop(l)
	l2 := c.leader()
	if l2 == l {
		t.Fatal("the stopped node still leads")
	}
	other := 3 - l - l2
	a = c.do(other, "POST", "/v1/services/svc/update", protocol.UpdateRequest{YAML: clusterTask})
	if a.code != http.StatusOK {
		t.Fatalf("update after failover: %d %s", a.code, a.body)
	}

	// One of three left: writes refused with the reason, reads stale.
	c.stop(l2)
	testutil.WaitFor(t, 15*time.Second, func() error {
		a := c.do(other, "DELETE", "/v1/services/svc", nil)
		var e protocol.APIError
		_ = json.Unmarshal(a.body, &e)
		if a.code != http.StatusServiceUnavailable || e.Code != protocol.CodeNoQuorum ||
			!strings.Contains(e.Message, "no quorum: 1 of 3 coordinators reachable") {
			return fmt.Errorf("write with one node of three: %d %s", a.code, a.body)
		}
		return nil
	})
	a = c.do(other, "GET", "/v1/status", nil)
	_ = json.Unmarshal(a.body, &st)
	if a.code != 200 || !st.Stale || a.header.Get(protocol.HeaderStale) != "true" || len(st.Services) != 1 || st.Services[0].Version != 2 {
		t.Fatalf("read with one node of three: %d %v %s", a.code, a.header, a.body)
	}

	// Both come back with their data dirs: the cluster serves writes again.
	c.start(l)
	c.start(l2)
	c.leader()
	testutil.WaitFor(t, 15*time.Second, func() error {
		a := c.do(other, "DELETE", "/v1/services/svc", nil)
		if a.code != http.StatusOK {
			return fmt.Errorf("down after recovery: %d %s", a.code, a.body)
		}
		return nil
	})
}

// testWriter sends log lines to t.Log until the test ends (memberlist's
// timers may still log then, and t.Log after the end panics).
type testWriter struct {
	t    *testing.T
	done *atomic.Bool
}

func newTestWriter(t *testing.T) testWriter {
	w := testWriter{t: t, done: &atomic.Bool{}}
	t.Cleanup(func() { w.done.Store(true) })
	return w
}

func (w testWriter) Write(b []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

// A coordinator started later with only --join (no --bootstrap-expect) is
// added as a voter by the leader, and takes part in the next election.
func TestJoiningCoordinatorBecomesVoter(t *testing.T) {
	c := newRaftCluster(t, 3)
	c.leader()
	cfg := c.cfgs[0]
	cfg.NodeID = "c4"
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	cfg.GossipAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	cfg.Join = []string{c.cfgs[1].GossipAddr}
	cfg.BootstrapExpect = 0
	c.cfgs = append(c.cfgs, cfg)
	c.nodes = append(c.nodes, nil)
	c.cancel = append(c.cancel, nil)
	c.done = append(c.done, nil)
	c.start(3)
	testutil.WaitFor(t, 15*time.Second, func() error {
		var peers protocol.RaftPeersResponse
		a := c.do(3, "GET", "/v1/operator/raft/peers", nil)
		if err := json.Unmarshal(a.body, &peers); err != nil {
			return err
		}
		for _, p := range peers.Peers {
			if p.ID == "c4" && p.Voter && p.State == "follower" {
				return nil
			}
		}
		return fmt.Errorf("c4 not a voter yet: %s", a.body)
	})
	// The joined node forwards writes like any other.
	a := c.do(3, "POST", "/v1/services", protocol.UpRequest{Name: "via-c4", YAML: clusterTask})
	if a.code != http.StatusCreated {
		t.Fatalf("up via the joined node: %d %s", a.code, a.body)
	}
	var members protocol.MembersResponse
	a = c.do(3, "GET", "/v1/operator/members", nil)
	if err := json.Unmarshal(a.body, &members); err != nil || len(members.Members) != 4 {
		t.Fatalf("members: %s", a.body)
	}
}
