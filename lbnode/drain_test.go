package lbnode

import (
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
	if _, err := nc.Subscribe(protocol.SubjectLBAck, func(m *nats.Msg) {
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
