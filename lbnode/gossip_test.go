package lbnode

import (
	"context"
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

func healthz(t *testing.T, n *Node) string {
	t.Helper()
	resp, err := http.Get("http://" + n.AdminAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// TestNodeWaitsForCoordinatorOverGossip: an LB given only a gossip
// address to join waits until a coordinator gossips its NATS URL, then
// connects there and asks for the route tables; when it stops, it leaves
// the pool.
func TestNodeWaitsForCoordinatorOverGossip(t *testing.T) {
	url := testutil.NATS(t)
	coord, err := membership.New(membership.Config{
		Meta:     membership.Meta{Role: membership.RoleCoordinator, ID: "c1"},
		BindAddr: "127.0.0.1:0",
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = coord.Shutdown() })

	nc := connectNATS(t, url)
	syncs := make(chan string, 16)
	if _, err := nc.Subscribe(protocol.SubjectRoutesSync, func(m *nats.Msg) {
		select {
		case syncs <- m.Subject:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t, "")
	cfg.ID = "lb-1"
	cfg.Join = []string{coord.Local().Addr}
	cfg.GossipAddr = "127.0.0.1:0"
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	testutil.WaitFor(t, 5*time.Second, func() error {
		if h := healthz(t, n); !strings.Contains(h, "waiting for a coordinator over gossip") || !strings.Contains(h, "gossip: 2 members, 1 alive coordinators") {
			return fmt.Errorf("/healthz:\n%s", h)
		}
		return nil
	})
	if m, ok := coord.Member(membership.RoleLB, "lb-1"); !ok || m.Meta.API != n.AdminAddr() {
		t.Errorf("the coordinator sees the LB as %+v, %v", m, ok)
	}
	select {
	case <-syncs:
		t.Fatal("sync request before any coordinator gossiped a NATS URL")
	default:
	}

	if err := coord.UpdateMeta(membership.Meta{Role: membership.RoleCoordinator, ID: "c1", NATS: url}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-syncs:
	case <-time.After(5 * time.Second):
		t.Fatal("no sync request on the coordinator's NATS within 5s")
	}
	if h := healthz(t, n); !strings.Contains(h, "nats: connected to "+url) {
		t.Errorf("/healthz:\n%s", h)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	done <- nil // for the cleanup
	testutil.WaitFor(t, 3*time.Second, func() error {
		if m, _ := coord.Member(membership.RoleLB, "lb-1"); m.Status != membership.StatusLeft {
			return fmt.Errorf("after a clean stop the coordinator sees the LB as %q, want left", m.Status)
		}
		return nil
	})
}

// TestNodeStopsWhileWaitingForCoordinator: Run returns cleanly when
// stopped before any coordinator is known.
func TestNodeStopsWhileWaitingForCoordinator(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Join = []string{fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))}
	cfg.GossipAddr = "127.0.0.1:0"
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if h := healthz(t, n); !strings.Contains(h, "not joined yet") {
			return fmt.Errorf("/healthz:\n%s", h)
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of cancel")
	}
}
