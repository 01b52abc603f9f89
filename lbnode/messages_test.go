package lbnode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestInvalidTablesIgnored: pushed tables that fail validation are dropped
// and counted, whatever their epoch, and the next valid table still
// applies.
func TestInvalidTablesIgnored(t *testing.T) {
	url := testutil.NATS(t)
	n := startNode(t, testConfig(t, url))
	nc := connectNATS(t, url)
	r1 := replicaServer(t, 1)
	port := testutil.FreePort(t, "127.0.0.1")
	good := func(epoch uint64) protocol.RouteTable {
		return table("victim", epoch, port, "", ep(1, 1, hostPort(r1)))
	}
	with := func(edit func(*protocol.RouteTable)) []byte {
		tbl := good(9) // newer than the valid one that follows
		edit(&tbl)
		return mustJSON(t, tbl)
	}
	subject := protocol.RoutesSubject("victim")
	pushTable(t, n, nc, good(1)) // subscribed from here on
	tests := []struct {
		name    string
		subject string
		data    []byte
	}{
		{"port out of range", subject, with(func(t *protocol.RouteTable) { t.Port = 70000 })},
		{"negative port", subject, with(func(t *protocol.RouteTable) { t.Port = -1 })},
		{"no port", subject, with(func(t *protocol.RouteTable) { t.Port = 0 })},
		{"empty address", subject, with(func(t *protocol.RouteTable) { t.Endpoints = append(t.Endpoints, ep(2, 1, "")) })},
		{"address without port", subject, with(func(t *protocol.RouteTable) { t.Endpoints[0].Address = "127.0.0.1" })},
		{"endpoint port 0", subject, with(func(t *protocol.RouteTable) { t.Endpoints[0].Address = "127.0.0.1:0" })},
		{"negative replica id", subject, with(func(t *protocol.RouteTable) { t.Endpoints[0].ReplicaID = -5 })},
		{"unknown policy", subject, with(func(t *protocol.RouteTable) { t.Policy = "fastest" })},
		{"negative response timeout", subject, with(func(t *protocol.RouteTable) { t.ResponseTimeoutSeconds = -1 })},
		{"service differs from the subject", subject, with(func(t *protocol.RouteTable) { t.Service = "other" })},
		{"invalid service name on its own subject", protocol.RoutesSubject("Bad_Name"), with(func(t *protocol.RouteTable) { t.Service = "" })},
		{"epoch beyond uint64", subject, []byte(`{"service":"victim","epoch":1e30,"port":1}`)},
		{"port beyond int", subject, []byte(`{"service":"victim","epoch":9,"port":99999999999999999999999}`)},
		{"not JSON", subject, []byte(`{"service":`)},
		{"JSON of the wrong shape", subject, []byte(`[1,2,3]`)},
	}
	for _, tc := range tests {
		if err := nc.Publish(tc.subject, tc.data); err != nil {
			t.Fatalf("%s: publish: %v", tc.name, err)
		}
	}
	// One publisher's messages arrive in order: once the valid table is
	// applied, every invalid one before it has been handled.
	pushTable(t, n, nc, good(2))
	wantMetric(t, n, float64(len(tests)), "baton_lb_invalid_messages_total", "subject", "routes")
	if n.Table("other") != nil {
		t.Fatal("table for another service applied")
	}
	if _, body, _ := get(t, newClient(), waitListening(t, n, "victim")); body != "replica 1" {
		t.Fatalf("victim answered %q", body)
	}

	// Too large to be decoded at all. (The test NATS server refuses payloads
	// that large, as baton's does; an external one might not.)
	big := append(mustJSON(t, good(10)), bytes.Repeat([]byte(" "), protocol.MaxMessageBytes)...)
	if n.receiveTable(subject, big) {
		t.Fatal("oversize table applied")
	}
	wantMetric(t, n, float64(len(tests)+1), "baton_lb_invalid_messages_total", "subject", "routes")
	if err := tableEpochIs(n, "victim", 2); err != nil {
		t.Fatal(err)
	}
	// And a valid table after all of that still applies.
	pushTable(t, n, nc, good(3))
}

// TestDuplicateEndpointsCollapsed: a table listing one address twice routes
// to it once, so a retry never goes back to the replica that just failed.
func TestDuplicateEndpointsCollapsed(t *testing.T) {
	f := newProxyFixture(t)
	r1 := replicaServer(t, 1)
	f.push(table("dup", 1, testutil.FreePort(t, "127.0.0.1"), protocol.PolicyRoundRobin,
		ep(1, 1, hostPort(r1)), ep(2, 1, hostPort(r1)), ep(3, 1, hostPort(r1))))
	f.n.mu.Lock()
	got := len(f.n.services["dup"].route.Load().endpoints)
	f.n.mu.Unlock()
	if got != 1 {
		t.Fatalf("route has %d endpoints for one address, want 1", got)
	}
	for range 3 {
		if _, _, replica := get(t, newClient(), waitListening(t, f.n, "dup")); replica != "1" {
			t.Fatalf("served as replica %q, want the first entry's id 1", replica)
		}
	}
}

// TestSyncReplyInvalidTable: an invalid table in a sync reply is dropped
// and counted while the reply's valid tables apply; the service it names
// is not pruned as absent. An unusable reply is counted and changes
// nothing.
func TestSyncReplyInvalidTable(t *testing.T) {
	url := testutil.NATS(t)
	nc := connectNATS(t, url)
	r1 := replicaServer(t, 1)
	keepPort, goodPort := testutil.FreePort(t, "127.0.0.1"), testutil.FreePort(t, "127.0.0.1")
	var reply atomic.Pointer[[]byte]
	set := func(data []byte) { reply.Store(&data) }
	set(mustJSON(t, protocol.RouteSync{Tables: []protocol.RouteTable{table("keep", 3, keepPort, "", ep(1, 1, hostPort(r1)))}}))
	var answered atomic.Int64
	if _, err := nc.Subscribe(protocol.SubjectRoutesSync, func(m *nats.Msg) {
		_ = m.Respond(*reply.Load())
		answered.Add(1)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, url)
	cfg.SyncInterval = 50 * time.Millisecond
	n := startNode(t, cfg)
	testutil.WaitFor(t, 5*time.Second, func() error { return tableEpochIs(n, "keep", 3) })

	invalidKeep := table("keep", 9, keepPort, "fastest", ep(1, 1, hostPort(r1)))
	set(mustJSON(t, protocol.RouteSync{Tables: []protocol.RouteTable{
		invalidKeep,
		table("good", 10, goodPort, "", ep(1, 1, hostPort(r1))),
	}}))
	testutil.WaitFor(t, 5*time.Second, func() error { return tableEpochIs(n, "good", 10) })
	// keep's epoch (3) is older than the reply's newest (10), yet the reply
	// lists it: it is kept, at its old table.
	if err := tableEpochIs(n, "keep", 3); err != nil {
		t.Fatal(err)
	}
	if v, _ := metricValue(n, "baton_lb_invalid_messages_total", "subject", "routes.sync"); v < 1 {
		t.Fatalf("invalid table in sync reply not counted (%v)", v)
	}

	// Unusable replies: each counted, nothing changes.
	for _, data := range [][]byte{[]byte("not json"), []byte(`{"tables":"x"}`)} {
		set(data)
		before, _ := metricValue(n, "baton_lb_invalid_messages_total", "subject", "routes.sync")
		seen := answered.Load()
		// Replies are answered and handled one at a time: the second one
		// answered after seen certainly carries data, and the node has
		// handled it once it asks again.
		testutil.WaitFor(t, 5*time.Second, func() error {
			v, _ := metricValue(n, "baton_lb_invalid_messages_total", "subject", "routes.sync")
			if answered.Load() < seen+3 || v < before+1 {
				return fmt.Errorf("%q: %v invalid sync messages counted, want more than %v", data, v, before)
			}
			return nil
		})
		if err := errors.Join(tableEpochIs(n, "keep", 3), tableEpochIs(n, "good", 10)); err != nil {
			t.Fatalf("after reply %q: %v", data, err)
		}
	}
}

func TestDecodeSync(t *testing.T) {
	valid := func(name string, epoch uint64) protocol.RouteTable {
		return table(name, epoch, 30001, "", ep(1, 1, "10.0.0.1:8080"))
	}
	badPort := valid("bad", 50)
	badPort.Port = -1
	tests := []struct {
		name        string
		data        []byte
		wantErr     string
		wantTables  []string
		wantInvalid int
		wantPresent []string
		wantMax     uint64
	}{
		{"all valid", mustJSON(t, protocol.RouteSync{Tables: []protocol.RouteTable{valid("a", 3), valid("b", 7)}}), "", []string{"a", "b"}, 0, []string{"a", "b"}, 7},
		{"one invalid among valid", mustJSON(t, protocol.RouteSync{Tables: []protocol.RouteTable{valid("a", 3), badPort, valid("c", 8)}}), "", []string{"a", "c"}, 1, []string{"a", "bad", "c"}, 8},
		{"empty", []byte(`{"tables":[]}`), "", nil, 0, nil, 0},
		{"undecodable", []byte(`{"tables":[{"epoch":-1}]}`), "not a route sync reply", nil, 0, nil, 0},
		{"oversize", append([]byte(`{"tables":[]}`), bytes.Repeat([]byte(" "), protocol.MaxMessageBytes)...), "bytes; at most", nil, 0, nil, 0},
		{"too many tables", []byte(`{"tables":[` + strings.Repeat(`{},`, protocol.MaxServices) + `{}]}`), "at most 10000", nil, 0, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decodeSync(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, protocol.ErrInvalidMessage) {
					t.Fatalf("error %v, want an invalid message error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tbl := range r.tables {
				names = append(names, tbl.Service)
			}
			if strings.Join(names, ",") != strings.Join(tc.wantTables, ",") || len(r.invalid) != tc.wantInvalid || r.maxEpoch != tc.wantMax {
				t.Fatalf("tables %v, %d invalid, max epoch %d; want %v, %d, %d", names, len(r.invalid), r.maxEpoch, tc.wantTables, tc.wantInvalid, tc.wantMax)
			}
			if len(r.present) != len(tc.wantPresent) {
				t.Fatalf("present %v, want %v", r.present, tc.wantPresent)
			}
			for _, p := range tc.wantPresent {
				if !r.present[p] {
					t.Fatalf("present %v, want %v", r.present, tc.wantPresent)
				}
			}
		})
	}
}

// FuzzDecodeTable: no input makes decoding panic, and what it accepts
// passes validation and names the subject's service.
func FuzzDecodeTable(f *testing.F) {
	f.Add("victim", mustJSON(f, table("victim", 1, 30001, "", ep(1, 1, "10.0.0.1:8080"))))
	f.Add("victim", []byte(`{"service":"victim","epoch":18446744073709551615,"port":65535,"endpoints":[{"replica_id":9223372036854775807,"version":1,"address":"[::1]:1"}]}`))
	f.Add("victim", []byte(`{"epoch":2,"port":1,"deleted":true}`))
	f.Add("x", []byte(`{"service":"y"}`))
	f.Add("victim", []byte(`null`))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		subject := protocol.RoutesSubject(name)
		tbl, err := decodeTable(subject, data)
		if err != nil {
			if !errors.Is(err, protocol.ErrInvalidMessage) {
				t.Fatalf("error %v does not match ErrInvalidMessage", err)
			}
			return
		}
		if verr := tbl.Validate(); verr != nil || tbl.Service != name {
			t.Fatalf("accepted table for %q on %s (validate: %v)", tbl.Service, subject, verr)
		}
	})
}

// FuzzSyncReply decodes arbitrary route sync replies and applies what is
// valid to a node (its service ports on an address it cannot bind, so no
// port is opened): nothing panics, and every service the node then serves
// has a valid table.
func FuzzSyncReply(f *testing.F) {
	f.Add(mustJSON(f, protocol.RouteSync{Tables: []protocol.RouteTable{
		table("web", 5, 30001, protocol.PolicyRoundRobin, ep(1, 1, "10.0.0.1:8080"), ep(2, 1, "10.0.0.2:8080")),
		{Service: "gone", Epoch: 6, Port: 30002, Deleted: true}}}))
	f.Add([]byte(`{"tables":[{"service":"web","epoch":1,"port":0},{"service":"ok","epoch":2,"port":30003}]}`))
	f.Add([]byte(`{"tables":null}`))
	cfg := testConfig(f, "nats://127.0.0.1:1")
	cfg.BindHost = "192.0.2.1" // TEST-NET-1: listening fails, nothing is opened
	n, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.adminLn.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeSync(data)
		if err != nil {
			if !errors.Is(err, protocol.ErrInvalidMessage) {
				t.Fatalf("error %v does not match ErrInvalidMessage", err)
			}
			return
		}
		n.applySync(r)
		for _, tb := range n.dump().Tables {
			if err := tb.Validate(); err != nil {
				t.Fatalf("node serves an invalid table: %v", err)
			}
		}
	})
}

// TestFarAheadEpochRejected: a valid table whose epoch is more than
// MaxEpochAhead past the index the leader confirms is dropped and counted
// (it would shadow every real table), the LB asks the leader once per
// flood, and a real table still applies; an epoch the leader's index
// covers applies after one question.
func TestFarAheadEpochRejected(t *testing.T) {
	url := testutil.NATS(t)
	n := startNode(t, testConfig(t, url))
	nc := connectNATS(t, url)
	var index, asks atomic.Uint64
	index.Store(50)
	if _, err := nc.Subscribe(protocol.SubjectClusterIndex, func(m *nats.Msg) {
		asks.Add(1)
		_ = m.Respond(mustJSON(t, protocol.ClusterIndex{Index: index.Load()}))
	}); err != nil {
		t.Fatal(err)
	}
	r1 := replicaServer(t, 1)
	port := testutil.FreePort(t, "127.0.0.1")
	good := func(epoch uint64) protocol.RouteTable {
		return table("victim", epoch, port, "", ep(1, 1, hostPort(r1)))
	}
	pushTable(t, n, nc, good(10)) // within MaxEpochAhead of 0: no question
	if asks.Load() != 0 {
		t.Fatalf("%d questions for a plausible epoch", asks.Load())
	}
	for range 20 {
		publishTable(t, nc, good(1<<40))
	}
	pushTable(t, n, nc, good(11))
	wantMetric(t, n, 20, "baton_lb_invalid_messages_total", "subject", "routes")
	if a := asks.Load(); a != 1 {
		t.Fatalf("%d questions to the leader for a flood of 20 forged tables, want 1", a)
	}
	// The cluster really is far ahead (an LB that slept through many
	// changes): after one more question, the table applies.
	index.Store(1 << 40)
	time.Sleep(1100 * time.Millisecond) // past the guard's MinInterval
	pushTable(t, n, nc, good(1<<40))
}
