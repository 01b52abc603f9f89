package lbnode

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// testConfig is a config for a node on 127.0.0.1 with fast syncs.
func testConfig(t testing.TB, natsURL string) Config {
	t.Helper()
	cfg := DevConfig()
	cfg.ID = "lb-test"
	cfg.NATSURL = natsURL
	cfg.BindHost = "127.0.0.1"
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.SyncInterval = 200 * time.Millisecond
	cfg.SyncTimeout = 500 * time.Millisecond
	cfg.DialTimeout = 500 * time.Millisecond
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.Registry = prometheus.NewRegistry()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	return cfg
}

// startNode runs a node until the test ends and checks that Run returns
// cleanly.
func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("new node: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("run did not return within 10s of cancel")
		}
	})
	return n
}

func connectNATS(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func publishTable(t testing.TB, nc *nats.Conn, table protocol.RouteTable) {
	t.Helper()
	data, err := json.Marshal(table)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(protocol.RoutesSubject(table.Service), data); err != nil {
		t.Fatalf("publish table: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// pushTable publishes table until the node serves its epoch (a push sent
// before the node subscribed is lost, as in production, where the sync
// repairs it).
func pushTable(t testing.TB, n *Node, nc *nats.Conn, table protocol.RouteTable) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, func() error {
		publishTable(t, nc, table)
		return tableEpochIs(n, table.Service, table.Epoch)
	})
}

func tableEpochIs(n *Node, service string, epoch uint64) error {
	got := n.Table(service)
	if got == nil {
		return fmt.Errorf("no table for %q yet (want epoch %d)", service, epoch)
	}
	if got.Epoch != epoch {
		return fmt.Errorf("table for %q has epoch %d, want %d", service, got.Epoch, epoch)
	}
	return nil
}

// waitListening waits for the service's port and returns its base URL.
func waitListening(t testing.TB, n *Node, service string) string {
	t.Helper()
	var addr string
	testutil.WaitFor(t, 5*time.Second, func() error {
		addr = n.ServiceAddr(service)
		if addr == "" {
			return fmt.Errorf("service %q not listening", service)
		}
		return nil
	})
	return "http://" + addr
}

// replicaServer is a backend that answers "replica <id>" and echoes the
// request body, method and X-Forwarded-For in headers.
func replicaServer(t testing.TB, id int) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Test-Method", r.Method)
		w.Header().Set("X-Test-Forwarded-For", r.Header.Get("X-Forwarded-For"))
		w.Header().Set("X-Test-Backend", strconv.Itoa(id))
		if len(body) > 0 {
			_, _ = w.Write(body)
			return
		}
		fmt.Fprintf(w, "replica %d", id)
	}))
	t.Cleanup(s.Close)
	return s
}

func hostPort(s *httptest.Server) string { return s.Listener.Addr().String() }

// closedAddrs counts the addresses closedAddr has handed out.
var closedAddrs atomic.Int32

// closedAddr is a loopback address nothing listens on: port 1 (tcpmux,
// privileged and unused) on a different 127/8 address each call. A freed
// ephemeral port could be taken by another test meanwhile.
func closedAddr(t testing.TB) string {
	t.Helper()
	n := closedAddrs.Add(1)
	return fmt.Sprintf("127.0.%d.%d:1", 100+n/250, 1+n%250)
}

func table(service string, epoch uint64, port int, policy string, eps ...protocol.Endpoint) protocol.RouteTable {
	versions := map[int]bool{}
	var active []int
	for _, e := range eps {
		if !versions[e.Version] {
			versions[e.Version] = true
			active = append(active, e.Version)
		}
	}
	return protocol.RouteTable{Service: service, Epoch: epoch, Port: port, Policy: policy, ActiveVersions: active, Endpoints: eps}
}

func ep(replicaID, version int, addr string) protocol.Endpoint {
	return protocol.Endpoint{ReplicaID: replicaID, Version: version, Address: addr}
}

func newClient() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
	}
}

// get does a GET and returns the status, the body and the serving replica.
func get(t testing.TB, c *http.Client, url string) (int, string, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(body), resp.Header.Get(protocol.HeaderReplica)
}

// metricValue is the value of the node's counter or gauge name whose
// labels are exactly labels (name, value, name, value, ...); an error when
// the node exports no such series.
func metricValue(n *Node, name string, labels ...string) (float64, error) {
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	mfs, err := n.gatherer.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(want) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), nil
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), nil
			}
		}
	}
	return 0, fmt.Errorf("no series %s%v", name, want)
}

// metricIs checks that a counter or gauge (see metricValue) has the value want.
func metricIs(n *Node, want float64, name string, labels ...string) error {
	got, err := metricValue(n, name, labels...)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
	return nil
}

// wantMetric fails the test unless the series has the value want.
func wantMetric(t testing.TB, n *Node, want float64, name string, labels ...string) {
	t.Helper()
	if err := metricIs(n, want, name, labels...); err != nil {
		t.Fatal(err)
	}
}
