package lbnode

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/natsembed"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

func TestTableAppliedFromPush(t *testing.T) {
	url := testutil.NATS(t)
	n := startNode(t, testConfig(t, url))
	nc := connectNATS(t, url)
	r1 := replicaServer(t, 1)
	port := testutil.FreePort(t, "127.0.0.1")

	pushTable(t, n, nc, table("web", 7, port, protocol.PolicyRoundRobin, ep(4, 2, hostPort(r1))))
	base := waitListening(t, n, "web")
	if want := "127.0.0.1:" + strconv.Itoa(port); n.ServiceAddr("web") != want {
		t.Fatalf("service address = %q, want %q", n.ServiceAddr("web"), want)
	}

	resp, err := newClient().Get(base + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "replica 1" {
		t.Fatalf("GET = %d %q, want 200 \"replica 1\"", resp.StatusCode, body)
	}
	if v, r := resp.Header.Get(protocol.HeaderVersion), resp.Header.Get(protocol.HeaderReplica); v != "2" || r != "4" {
		t.Fatalf("version/replica headers = %q/%q, want 2/4", v, r)
	}
	if xff := resp.Header.Get("X-Test-Forwarded-For"); xff != "127.0.0.1" {
		t.Fatalf("backend saw X-Forwarded-For %q, want 127.0.0.1", xff)
	}

	// The admin endpoints show the same.
	admin := "http://" + n.AdminAddr()
	code, _, _ := get(t, newClient(), admin+"/healthz")
	if code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	_, routes, _ := get(t, newClient(), admin+"/v1/routes")
	var dump RoutesDump
	if err := json.Unmarshal([]byte(routes), &dump); err != nil {
		t.Fatalf("decode /v1/routes: %v\n%s", err, routes)
	}
	if dump.LBID != "lb-test" || len(dump.Tables) != 1 || dump.Tables[0].Epoch != 7 || dump.Listening["web"] == "" {
		t.Fatalf("/v1/routes = %+v", dump)
	}
	// The proxy records a request once its handler returns, which can be
	// just after the client has read the whole body.
	testutil.WaitFor(t, 5*time.Second, func() error {
		_, metricsText, _ := get(t, newClient(), admin+"/metrics")
		for _, want := range []string{
			`baton_lb_requests_total{code="200",service="web",version="2"} 1`,
			`baton_lb_route_epoch{service="web"} 7`,
			`baton_lb_request_duration_seconds_count{service="web"} 1`,
			`baton_lb_in_flight_requests{service="web"} 0`,
			`baton_lb_route_updates_total 1`,
		} {
			if !strings.Contains(metricsText, want) {
				return fmt.Errorf("/metrics lacks %q", want)
			}
		}
		return nil
	})
}

// syncResponder answers route sync requests with whatever tables it holds.
type syncResponder struct {
	mu       sync.Mutex
	tables   []protocol.RouteTable
	requests int
}

func (r *syncResponder) set(tables ...protocol.RouteTable) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tables = tables
}

func (r *syncResponder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

func (r *syncResponder) serve(t *testing.T, nc *nats.Conn) *nats.Subscription {
	t.Helper()
	sub, err := nc.Subscribe(protocol.SubjectRoutesSync, func(m *nats.Msg) {
		r.mu.Lock()
		r.requests++
		data, _ := json.Marshal(protocol.RouteSync{Tables: r.tables})
		r.mu.Unlock()
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

func TestSyncAtStartAndRepair(t *testing.T) {
	url := testutil.NATS(t)
	nc := connectNATS(t, url)
	r1, r2 := replicaServer(t, 1), replicaServer(t, 2)
	portA, portB := testutil.FreePort(t, "127.0.0.1"), testutil.FreePort(t, "127.0.0.1")

	resp := &syncResponder{}
	resp.set(
		table("a", 10, portA, "", ep(1, 1, hostPort(r1))),
		table("b", 12, portB, protocol.PolicyRoundRobin, ep(2, 1, hostPort(r2))),
	)
	sub := resp.serve(t, nc)

	cfg := testConfig(t, url)
	cfg.SyncInterval = time.Hour // only the sync at start may deliver the tables
	// That single sync is never retried, so give its reply ample time on a
	// loaded machine; the wait below outlasts the timeout.
	cfg.SyncTimeout = 5 * time.Second
	n := startNode(t, cfg)
	testutil.WaitFor(t, 10*time.Second, func() error {
		return errors.Join(tableEpochIs(n, "a", 10), tableEpochIs(n, "b", 12))
	})
	_, body, _ := get(t, newClient(), waitListening(t, n, "b"))
	if body != "replica 2" {
		t.Fatalf("service b answered %q", body)
	}

	// No responder: the node keeps its tables and keeps serving.
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	cfg2 := testConfig(t, url)
	cfg2.SyncInterval = 100 * time.Millisecond
	cfg2.ID = "lb-repair"
	cfg2.BindHost = "127.0.0.2" // same ports, another loopback address
	n2 := startNode(t, cfg2)
	pushTable(t, n2, nc, table("a", 10, portA, "", ep(1, 1, hostPort(r1))))

	// A responder appears later with newer tables: the periodic sync repairs
	// the missed updates without any push, and a service absent from the
	// reply with an older epoch is removed.
	resp.set(table("b", 13, portB, "", ep(2, 1, hostPort(r2))))
	resp.serve(t, nc)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n2.Table("a") != nil {
			return fmt.Errorf("service a still served after a sync without it")
		}
		return tableEpochIs(n2, "b", 13)
	})
	if resp.count() < 1 {
		t.Fatalf("no sync request seen")
	}
	_, body, _ = get(t, newClient(), waitListening(t, n2, "b"))
	if body != "replica 2" {
		t.Fatalf("service b on second node answered %q", body)
	}
}

func TestEpochOrdering(t *testing.T) {
	url := testutil.NATS(t)
	n := startNode(t, testConfig(t, url))
	nc := connectNATS(t, url)
	r1, r2 := replicaServer(t, 1), replicaServer(t, 2)
	port := testutil.FreePort(t, "127.0.0.1")
	markerPort := testutil.FreePort(t, "127.0.0.1")
	pushTable(t, n, nc, table("svc", 5, port, "", ep(1, 1, hostPort(r1))))
	base := waitListening(t, n, "svc")

	marker := uint64(100)
	// publishThenBarrier publishes tbl, then a table for another service;
	// NATS keeps one publisher's order, so once the marker is applied tbl
	// has been handled.
	publishThenBarrier := func(tbl protocol.RouteTable) {
		t.Helper()
		publishTable(t, nc, tbl)
		marker++
		pushTable(t, n, nc, table("marker", marker, markerPort, "", ep(9, 1, hostPort(r1))))
	}

	tests := []struct {
		name      string
		tbl       protocol.RouteTable
		wantEpoch uint64
		wantBody  string
	}{
		{"older epoch ignored", table("svc", 3, port, "", ep(2, 2, hostPort(r2))), 5, "replica 1"},
		{"same epoch ignored", table("svc", 5, port, "", ep(2, 2, hostPort(r2))), 5, "replica 1"},
		{"newer epoch applied", table("svc", 6, port, "", ep(2, 2, hostPort(r2))), 6, "replica 2"},
		{"zero epoch ignored", table("svc", 0, port, "", ep(1, 1, hostPort(r1))), 6, "replica 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			publishThenBarrier(tc.tbl)
			if err := tableEpochIs(n, "svc", tc.wantEpoch); err != nil {
				t.Fatal(err)
			}
			if _, body, _ := get(t, newClient(), base); body != tc.wantBody {
				t.Fatalf("served by %q, want %q", body, tc.wantBody)
			}
		})
	}
}

func TestDeletedTableFreesPort(t *testing.T) {
	url := testutil.NATS(t)
	n := startNode(t, testConfig(t, url))
	nc := connectNATS(t, url)
	r1 := replicaServer(t, 1)
	port := testutil.FreePort(t, "127.0.0.1")
	markerPort := testutil.FreePort(t, "127.0.0.1")

	pushTable(t, n, nc, table("gone", 3, port, "", ep(1, 1, hostPort(r1))))
	base := waitListening(t, n, "gone")
	if code, _, _ := get(t, newClient(), base); code != http.StatusOK {
		t.Fatalf("before delete: %d", code)
	}

	publishTable(t, nc, protocol.RouteTable{Service: "gone", Epoch: 4, Port: port, Deleted: true})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n.Table("gone") != nil {
			return fmt.Errorf("table still served")
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("port not free yet: %w", err)
		}
		return ln.Close()
	})

	// A delayed table older than the deletion must not bring it back.
	publishTable(t, nc, table("gone", 3, port, "", ep(1, 1, hostPort(r1))))
	pushTable(t, n, nc, table("marker", 1, markerPort, "", ep(1, 1, hostPort(r1))))
	if n.Table("gone") != nil || n.ServiceAddr("gone") != "" {
		t.Fatalf("older table resurrected a deleted service")
	}
	// A newer one (the service created again) does.
	pushTable(t, n, nc, table("gone", 9, port, "", ep(1, 1, hostPort(r1))))
	if code, _, _ := get(t, newClient(), waitListening(t, n, "gone")); code != http.StatusOK {
		t.Fatalf("after re-create: %d", code)
	}
}

func TestAckAndStatsPublished(t *testing.T) {
	url := testutil.NATS(t)
	nc := connectNATS(t, url)
	acks := make(chan protocol.LBAck, 100)
	stats := make(chan Stats, 100)
	if _, err := nc.Subscribe(protocol.SubjectLBAckAll, func(m *nats.Msg) {
		var a protocol.LBAck
		if err := json.Unmarshal(m.Data, &a); err == nil {
			select {
			case acks <- a:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(protocol.SubjectLBStatsAll, func(m *nats.Msg) {
		var s Stats
		if err := json.Unmarshal(m.Data, &s); err == nil {
			select {
			case stats <- s:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t, url)
	cfg.ID = "lb-ack"
	n := startNode(t, cfg)
	r1 := replicaServer(t, 1)
	pushTable(t, n, nc, table("acked", 42, testutil.FreePort(t, "127.0.0.1"), "", ep(1, 1, hostPort(r1))))
	for range 3 {
		get(t, newClient(), waitListening(t, n, "acked"))
	}

	deadline := time.After(5 * time.Second)
	for gotAck := false; !gotAck; {
		select {
		case a := <-acks:
			gotAck = a.LBID == "lb-ack" && a.Epochs["acked"] == 42
		case <-deadline:
			t.Fatal("no ack with epoch 42 for service acked")
		}
	}
	for gotStats := false; !gotStats; {
		select {
		case s := <-stats:
			st := s.Services["acked"]
			gotStats = s.LBID == "lb-ack" && st.RequestsTotal == 3 && st.Epoch == 42 && st.InFlight == 0
		case <-deadline:
			t.Fatal("no stats with 3 requests for service acked")
		}
	}
}

func TestKeepsServingWithControlPlaneDown(t *testing.T) {
	srv, err := natsembed.Start(natsembed.Config{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.ClientURL()
	n := startNode(t, testConfig(t, url))
	nc, err := nats.Connect(url, nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r1 := replicaServer(t, 1)
	pushTable(t, n, nc, table("steady", 1, testutil.FreePort(t, "127.0.0.1"), "", ep(1, 1, hostPort(r1))))
	base := waitListening(t, n, "steady")

	srv.Shutdown()
	c := newClient()
	// Across several failed sync rounds the table stays and requests succeed.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if code, body, _ := get(t, c, base); code != http.StatusOK || body != "replica 1" {
			t.Fatalf("with NATS down: %d %q", code, body)
		}
	}
	if err := tableEpochIs(n, "steady", 1); err != nil {
		t.Fatal(err)
	}
}

func TestPortBindRetried(t *testing.T) {
	url := testutil.NATS(t)
	n := startNode(t, testConfig(t, url))
	nc := connectNATS(t, url)
	r1 := replicaServer(t, 1)

	blocker, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := blocker.Addr().(*net.TCPAddr).Port
	pushTable(t, n, nc, table("busy", 1, port, "", ep(1, 1, hostPort(r1))))
	if addr := n.ServiceAddr("busy"); addr != "" {
		t.Fatalf("listening on %s although the port is taken", addr)
	}
	if err := blocker.Close(); err != nil {
		t.Fatal(err)
	}
	// No new table: the periodic sync retries the bind.
	base := waitListening(t, n, "busy")
	if _, body, _ := get(t, newClient(), base); body != "replica 1" {
		t.Fatalf("answered %q", body)
	}
}

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"zero value gets defaults", Config{}, ""},
		{"negative sync interval", Config{SyncInterval: -time.Second}, "sync interval"},
		{"negative dial timeout", Config{DialTimeout: -time.Second}, "dial timeout"},
		{"negative eject after failures", Config{EjectAfterFailures: -1}, "eject after failures -1 is negative"},
		{"negative eject base", Config{EjectBase: -time.Second}, "eject base -1s is negative"},
		{"negative eject max", Config{EjectMax: -time.Second}, "eject max -1s is negative"},
		{"eject max shorter than base", Config{EjectBase: time.Minute, EjectMax: time.Second}, "eject max 1s is shorter than eject base 1m0s"},
		{"eject max shorter than the default base", Config{EjectMax: time.Millisecond}, "shorter than eject base 1s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.withDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.NATSURL != "nats://127.0.0.1:4222" || got.BindHost != "0.0.0.0" || got.AdminAddr != "127.0.0.1:7404" ||
				got.SyncInterval != 5*time.Second || got.DialTimeout != 2*time.Second || got.ID == "" ||
				got.Logger == nil || got.Registry == nil ||
				got.EjectAfterFailures != 3 || got.EjectBase != time.Second || got.EjectMax != 30*time.Second {
				t.Fatalf("defaults not filled: %+v", got)
			}
		})
	}
	if DevConfig().BindHost != "127.0.0.1" {
		t.Fatalf("dev config binds %q", DevConfig().BindHost)
	}
	for name, cfg := range map[string]Config{"default": DefaultConfig(), "dev": DevConfig()} {
		if cfg.EjectAfterFailures != 3 || cfg.EjectBase != time.Second || cfg.EjectMax != 30*time.Second {
			t.Fatalf("%s config ejection: after %d failures, %s to %s", name, cfg.EjectAfterFailures, cfg.EjectBase, cfg.EjectMax)
		}
	}
}
