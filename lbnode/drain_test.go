package lbnode

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// TestAckReportsDrainingReplica: after a swap, a replica that is no longer
// routed to but still serves a request is reported as draining, and the
// moment its last request ends the LB acks again without it — the leader
// stops the replica only then.
func TestAckReportsDrainingReplica(t *testing.T) {
	url := testutil.NATS(t)
	nc := connectNATS(t, url)
	acks := make(chan protocol.LBAck, 100)
	if _, err := nc.Subscribe(protocol.SubjectLBAckAll, func(m *nats.Msg) {
		var a protocol.LBAck
		if json.Unmarshal(m.Data, &a) == nil {
			acks <- a
		}
	}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()

	cfg := testConfig(t, url)
	cfg.SyncInterval = time.Minute // only event-driven acks in this test
	n := startNode(t, cfg)
	started, release := make(chan struct{}), make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	}))
	defer slow.Close()
	fast := replicaServer(t, 2)
	port := testutil.FreePort(t, "127.0.0.1")
	pushTable(t, n, nc, table("svc", 1, port, "", ep(1, 1, hostPort(slow))))
	addr := waitListening(t, n, "svc")

	done := make(chan int, 1)
	go func() {
		code, _, _ := get(t, newClient(), addr)
		done <- code
	}()
	<-started
	pushTable(t, n, nc, table("svc", 2, port, "", ep(2, 2, hostPort(fast))))

	waitAck := func(what string, ok func(protocol.LBAck) bool) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case a := <-acks:
				if ok(a) {
					return
				}
			case <-deadline:
				t.Fatalf("no ack %s within 5s", what)
			}
		}
	}
	waitAck("with the old replica draining", func(a protocol.LBAck) bool {
		return a.Epochs["svc"] == 2 && a.Draining[hostPort(slow)] == 1
	})
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("request in flight during the swap got %d", code)
	}
	waitAck("without draining replicas after the last request", func(a protocol.LBAck) bool {
		return a.Epochs["svc"] == 2 && len(a.Draining) == 0
	})
}

// TestRequestRoutedAfterSwapAvoidsRetiredReplica: a request that loaded
// its route just before a swap, and picks a replica the new table dropped,
// moves to the new route instead of sending to a replica the leader may
// already be stopping.
func TestRequestRoutedAfterSwapAvoidsRetiredReplica(t *testing.T) {
	url := testutil.NATS(t)
	nc := connectNATS(t, url)
	n := startNode(t, testConfig(t, url))
	oldR, newR := replicaServer(t, 1), replicaServer(t, 2)
	port := testutil.FreePort(t, "127.0.0.1")
	pushTable(t, n, nc, table("svc", 1, port, "", ep(1, 1, hostPort(oldR))))
	n.mu.Lock()
	s := n.services["svc"]
	n.mu.Unlock()
	stale := s.route.Load() // what a request in flight loaded
	pushTable(t, n, nc, table("svc", 2, port, "", ep(2, 2, hostPort(newR))))

	req := httptest.NewRequest(http.MethodGet, "http://svc/", nil)
	st := &proxyState{route: stale}
	req = req.WithContext(context.WithValue(req.Context(), ctxKey{}, st))
	req.URL.Scheme, req.RequestURI = "http", ""
	resp, err := s.roundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get(protocol.HeaderReplica); got != "2" {
		t.Fatalf("request went to replica %s, want 2 (the old one was retired)", got)
	}
	st.ep.backend.done()
	n.mu.Lock()
	ack := n.ackLocked()
	n.mu.Unlock()
	if len(ack.Draining) != 0 {
		t.Fatalf("nothing should be draining: %v", ack.Draining)
	}
}
