package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// coordinatorPool is a gossip member standing for a coordinator whose
// embedded NATS server is natsURL.
func coordinatorPool(t *testing.T, id, natsURL string, join ...string) *membership.Pool {
	t.Helper()
	p, err := membership.New(membership.Config{
		Meta:              membership.Meta{Role: membership.RoleCoordinator, ID: id, NATS: natsURL},
		BindAddr:          "127.0.0.1:0",
		Join:              join,
		Logger:            slog.New(slog.DiscardHandler),
		RetryJoinInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	return p
}

// TestAgentFindsNATSOverGossip: an agent given only a gossip address to
// join learns the coordinators' NATS URLs, one of them dead, connects to
// the live one and reports there; when it stops, it leaves the pool.
func TestAgentFindsNATSOverGossip(t *testing.T) {
	live := testutil.NATS(t)
	dead := fmt.Sprintf("nats://127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	c1 := coordinatorPool(t, "c1", dead)
	c2 := coordinatorPool(t, "c2", live, c1.Local().Addr)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := len(c1.Alive(membership.RoleCoordinator)); n != 2 {
			return fmt.Errorf("c1 sees %d coordinators", n)
		}
		return nil
	})

	nc, err := nats.Connect(live)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	statuses := make(chan protocol.AgentStatus, 16)
	if _, err := nc.Subscribe(protocol.SubjectAgentStatusAll, func(m *nats.Msg) {
		var st protocol.AgentStatus
		if json.Unmarshal(m.Data, &st) == nil {
			select {
			case statuses <- st:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	a, err := New(Config{
		ID:          "gpu-1",
		Join:        []string{c1.Local().Addr},
		GossipAddr:  "127.0.0.1:0",
		HTTPAddr:    "127.0.0.1:0",
		Host:        "127.0.0.1",
		DataDir:     t.TempDir(),
		CPUs:        2,
		MemoryGB:    4,
		ReplicaUser: currentUser(t),
		Logger:      slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	select {
	case st := <-statuses:
		if st.Agent.ID != "gpu-1" {
			t.Errorf("status from %q", st.Agent.ID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no status from the agent on the coordinators' NATS within 5s")
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		m, ok := c2.Member(membership.RoleAgent, "gpu-1")
		if !ok || m.Status != membership.StatusAlive || m.Meta.API != a.HTTPAddr() {
			return fmt.Errorf("c2 sees the agent as %+v (http %s)", m, a.HTTPAddr())
		}
		return nil
	})
	resp, err := http.Get("http://" + a.HTTPAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "gossip: 3 members, 2 alive coordinators") || !strings.Contains(string(body), "nats: connected to "+live) {
		t.Errorf("/healthz:\n%s", body)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	done <- nil // for the cleanup
	testutil.WaitFor(t, 3*time.Second, func() error {
		if m, _ := c1.Member(membership.RoleAgent, "gpu-1"); m.Status != membership.StatusLeft {
			return fmt.Errorf("after a clean stop c1 sees the agent as %q, want left", m.Status)
		}
		return nil
	})
}
