package coordinator

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// manyCommands is how many commands TestRestartAfterManyCommands applies:
// BATON_DURABILITY_COMMANDS (make bench sets 100000), default 10000.
func manyCommands(t *testing.T) int {
	if v := os.Getenv("BATON_DURABILITY_COMMANDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("BATON_DURABILITY_COMMANDS=%q: want a positive number", v)
		}
		return n
	}
	return 10000
}

// A three-node cluster that applied many commands, stopped at once and
// started again, leads and answers with every acknowledged command within
// seconds: snapshots and log compaction bound the replay.
func TestRestartAfterManyCommands(t *testing.T) {
	n := manyCommands(t)
	cfgs := threeNodeConfigs(t)
	nodes := startNodes(t, cfgs)
	leader := waitLeader(t, nodes)

	start := time.Now()
	var acked atomic.Int64
	var wg sync.WaitGroup
	const workers = 64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				a := protocol.Agent{ID: fmt.Sprintf("agent-%d", i%500), Address: "127.0.0.1:1", Alive: true,
					Capacity: protocol.Capacity{CPUs: float64(1 + i%64)}}
				if _, _, err := leader.raftApply(CmdUpsertAgents, UpsertAgentsCmd{Agents: []protocol.Agent{a}, At: time.Now()}); err != nil {
					t.Errorf("command %d: %v", i, err)
					return
				}
				acked.Add(1)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	applyTook := time.Since(start)
	want := leader.fsm.Index()
	wantState := leader.fsm.State()
	stopNodes(nodes)

	restart := time.Now()
	nodes = startNodes(t, cfgs)
	leader = waitLeader(t, nodes)
	testutil.WaitFor(t, 60*time.Second, func() error {
		for _, s := range nodes {
			if ok, applied, of := s.raft.caughtUp(); !ok {
				return fmt.Errorf("%s caught up %d of %d", s.cfg.NodeID, applied, of)
			}
		}
		return nil
	})
	took := time.Since(restart)
	for _, s := range nodes {
		if got := s.fsm.Index(); got < want {
			t.Fatalf("%s restarted at index %d, before the last acknowledged command %d", s.cfg.NodeID, got, want)
		}
		st := s.fsm.State()
		for id, a := range wantState.Agents {
			if b := st.Agents[id]; b == nil || b.Capacity.CPUs != a.Capacity.CPUs {
				t.Fatalf("%s lost agent %s's last capacity after the restart", s.cfg.NodeID, id)
			}
		}
	}
	t.Logf("%d commands acknowledged in %s (%.0f/s); three nodes stopped and started: leader and every node caught up in %s",
		acked.Load(), applyTook.Round(time.Millisecond), float64(acked.Load())/applyTook.Seconds(), took.Round(time.Millisecond))
	if took > 30*time.Second {
		t.Fatalf("restart took %s", took)
	}
}

// threeNodeConfigs are three coordinators on 127.0.0.1 with free ports
// that bootstrap together over gossip.
func threeNodeConfigs(t *testing.T) []Config {
	var gossip []string
	for range 3 {
		gossip = append(gossip, fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1")))
	}
	var cfgs []Config
	for i := range 3 {
		cfg := DevConfig()
		cfg.NodeID = fmt.Sprintf("c%d", i+1)
		cfg.DataDir = t.TempDir()
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
		cfg.GossipAddr = gossip[i]
		cfg.Join = gossip
		cfg.BootstrapExpect = 3
		cfg.NATSPort = -1
		cfg.NATSClusterPort = -1
		cfg.RaftTimeout = 200 * time.Millisecond
		// Snapshots by bytes, as in production, at a size this test reaches.
		cfg.SnapshotBytes = 4 << 20
		cfgs = append(cfgs, cfg)
	}
	return cfgs
}

type runningNode struct {
	*Server
	cancel context.CancelFunc
	done   chan struct{}
}

func startNodes(t *testing.T, cfgs []Config) []*runningNode {
	t.Helper()
	var out []*runningNode
	for _, cfg := range cfgs {
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		n := &runningNode{Server: s, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(n.done)
			_ = s.Run(ctx)
		}()
		out = append(out, n)
	}
	t.Cleanup(func() { stopNodes(out) })
	return out
}

func stopNodes(nodes []*runningNode) {
	for _, n := range nodes {
		n.cancel()
	}
	for _, n := range nodes {
		<-n.done
	}
}

func waitLeader(t *testing.T, nodes []*runningNode) *runningNode {
	t.Helper()
	var leader *runningNode
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, n := range nodes {
			if n.IsLeader() {
				leader = n
				return nil
			}
		}
		return fmt.Errorf("no leader")
	})
	return leader
}
