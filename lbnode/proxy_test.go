package lbnode

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// proxyFixture is a running node with a NATS connection to feed it tables.
type proxyFixture struct {
	n    *Node
	push func(protocol.RouteTable)
}

func newProxyFixture(t *testing.T) proxyFixture {
	t.Helper()
	return newProxyFixtureWith(t, nil)
}

// newProxyFixtureWith is newProxyFixture with the test config changed by
// edit first (when not nil).
func newProxyFixtureWith(t *testing.T, edit func(*Config)) proxyFixture {
	t.Helper()
	url := testutil.NATS(t)
	cfg := testConfig(t, url)
	if edit != nil {
		edit(&cfg)
	}
	n := startNode(t, cfg)
	nc := connectNATS(t, url)
	return proxyFixture{n: n, push: func(tbl protocol.RouteTable) { t.Helper(); pushTable(t, n, nc, tbl) }}
}

func TestNoReadyReplica503(t *testing.T) {
	f := newProxyFixture(t)
	tbl := table("empty", 1, testutil.FreePort(t, "127.0.0.1"), "")
	tbl.ActiveVersions = []int{2}
	f.push(tbl)
	resp, err := newClient().Get(waitListening(t, f.n, "empty") + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
	if want := `no ready replica for service "empty" (active versions [2]); try again shortly`; !strings.Contains(string(body), want) {
		t.Fatalf("body %q lacks %q", body, want)
	}
	if resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After = %q", resp.Header.Get("Retry-After"))
	}
}

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	f := newProxyFixture(t)
	var eps []protocol.Endpoint
	for i := 1; i <= 3; i++ {
		eps = append(eps, ep(i, 1, hostPort(replicaServer(t, i))))
	}
	f.push(table("rr", 1, testutil.FreePort(t, "127.0.0.1"), protocol.PolicyRoundRobin, eps...))
	base := waitListening(t, f.n, "rr")
	c := newClient()
	counts := map[string]int{}
	for range 300 {
		code, _, replica := get(t, c, base)
		if code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		counts[replica]++
	}
	for _, id := range []string{"1", "2", "3"} {
		if counts[id] != 100 {
			t.Fatalf("round robin counts %v, want 100 each", counts)
		}
	}
}

func TestLeastLoadPrefersIdle(t *testing.T) {
	f := newProxyFixture(t)
	release := make(chan struct{})
	var slowEntered atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowEntered.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		fmt.Fprint(w, "slow")
	}))
	t.Cleanup(slow.Close)
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock) // runs before slow.Close
	fast := replicaServer(t, 2)

	f.push(table("ll", 1, testutil.FreePort(t, "127.0.0.1"), protocol.PolicyLeastLoad,
		ep(1, 1, hostPort(slow)), ep(2, 1, hostPort(fast))))
	base := waitListening(t, f.n, "ll")
	c := newClient()

	// Park one request on the slow replica; requests landing on the fast one
	// meanwhile finish at once.
	var wg sync.WaitGroup
	t.Cleanup(func() { unblock(); wg.Wait() })
	testutil.WaitFor(t, 5*time.Second, func() error {
		if slowEntered.Load() == 0 {
			wg.Go(func() {
				if resp, err := c.Get(base); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
			return fmt.Errorf("no request on the slow replica yet")
		}
		return nil
	})

	fastClient := &http.Client{Timeout: 2 * time.Second}
	for i := range 40 {
		code, _, replica := get(t, fastClient, base)
		if code != http.StatusOK || replica != "2" {
			t.Fatalf("request %d: status %d from replica %q, want 200 from the idle replica 2", i, code, replica)
		}
	}
	unblock()
	wg.Wait()
}

func TestDialErrorRetried(t *testing.T) {
	f := newProxyFixture(t)
	live := replicaServer(t, 2)
	dead := closedAddr(t)
	// Several dead replicas before the live one: round robin starts each
	// request on a different one, so most requests need retries.
	port := testutil.FreePort(t, "127.0.0.1")
	f.push(table("retry", 1, port, protocol.PolicyRoundRobin,
		ep(1, 1, dead), ep(3, 1, closedAddr(t)), ep(2, 1, hostPort(live))))
	base := waitListening(t, f.n, "retry")
	c := newClient()

	payload := bytes.Repeat([]byte("x"), 64<<10)
	for i := range 30 {
		var req *http.Request
		if i%2 == 0 {
			req, _ = http.NewRequest(http.MethodGet, base, nil)
		} else {
			// POST is not idempotent, but a dial error means it never left.
			req, _ = http.NewRequest(http.MethodPost, base, bytes.NewReader(payload))
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("request %d (%s): read response: %v (%d bytes)", i, req.Method, err, len(body))
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get(protocol.HeaderReplica) != "2" {
			t.Fatalf("request %d (%s): status %d from replica %q: %s", i, req.Method, resp.StatusCode, resp.Header.Get(protocol.HeaderReplica), body)
		}
		if req.Method == http.MethodPost && !bytes.Equal(body, payload) {
			t.Fatalf("request %d: POST body not passed intact after retry (%d bytes back)", i, len(body))
		}
	}

	// Every replica unreachable: 502 naming what was tried.
	f.push(table("retry", 2, port, protocol.PolicyRoundRobin, ep(1, 1, dead)))
	code, body, _ := get(t, c, base)
	if code != http.StatusBadGateway || !strings.Contains(body, `service "retry": no replica answered (tried replica 1 (v1) at `+dead) {
		t.Fatalf("all dead: %d %q", code, body)
	}
}

func TestRetryIdempotentAfterConnectionDrop(t *testing.T) {
	// A replica that accepts and drops the connection may have seen the
	// request: GET moves on, POST does not.
	dropper := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(dropper.Close)
	live := replicaServer(t, 2)
	f := newProxyFixture(t)

	tests := []struct {
		name     string
		method   string
		body     io.Reader
		wantCode int
	}{
		{"GET retried", http.MethodGet, nil, http.StatusOK},
		{"POST not retried", http.MethodPost, strings.NewReader("once"), http.StatusBadGateway},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := "drop" + strconv.Itoa(i)
			// A fresh service's round-robin counter starts at 0, so the
			// first request goes to the dropper, listed first.
			f.push(table(svc, 1, testutil.FreePort(t, "127.0.0.1"), protocol.PolicyRoundRobin,
				ep(1, 1, hostPort(dropper)), ep(2, 1, hostPort(live))))
			req, _ := http.NewRequest(tc.method, waitListening(t, f.n, svc), tc.body)
			resp, err := newClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
		})
	}
}

func TestSSEStreamsBeforeBackendFinishes(t *testing.T) {
	release := make(chan struct{})
	sse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		fmt.Fprint(w, "data: last\n\n")
	}))
	t.Cleanup(sse.Close)
	t.Cleanup(func() { close(release) })
	f := newProxyFixture(t)
	f.push(table("sse", 1, testutil.FreePort(t, "127.0.0.1"), "", ep(1, 1, hostPort(sse))))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, waitListening(t, f.n, "sse"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		t.Fatalf("first event not received while the backend is still writing: %v", err)
	}
	if line != "data: first\n" {
		t.Fatalf("first line %q", line)
	}
}

func TestBodiesPassedThrough(t *testing.T) {
	f := newProxyFixture(t)
	f.push(table("echo", 1, testutil.FreePort(t, "127.0.0.1"), "", ep(1, 1, hostPort(replicaServer(t, 1)))))
	base := waitListening(t, f.n, "echo")
	big := make([]byte, 3<<20)
	_, _ = rand.Read(big)

	tests := []struct {
		name    string
		method  string
		body    []byte
		chunked bool
	}{
		{"small POST", http.MethodPost, []byte(`{"prompt":"hi"}`), false},
		{"3 MiB POST", http.MethodPost, big, false},
		{"chunked POST", http.MethodPost, big[:100<<10], true},
		{"PUT", http.MethodPut, []byte("put body"), false},
		{"PATCH", http.MethodPatch, []byte("patch body"), false},
		{"DELETE with body", http.MethodDelete, []byte("delete body"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // hides the length: sent chunked
			}
			req, _ := http.NewRequest(tc.method, base+"/v1/completions", body)
			resp, err := newClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Test-Method") != tc.method {
				t.Fatalf("status %d, backend saw method %q", resp.StatusCode, resp.Header.Get("X-Test-Method"))
			}
			if !bytes.Equal(got, tc.body) {
				t.Fatalf("echoed %d bytes, sent %d (or content differs)", len(got), len(tc.body))
			}
		})
	}
}

// TestSwapUnderLoad flips a service between two replica sets while 8
// clients send requests: no request may fail, and once the node serves a
// table, every request started afterwards must go to that table's set.
func TestSwapUnderLoad(t *testing.T) {
	f := newProxyFixture(t)
	sets := [2][]protocol.Endpoint{}
	for i := range 4 {
		id := i + 1
		version := 1 + i/2 // replicas 1,2 are v1 (set 0); 3,4 are v2 (set 1)
		sets[i/2] = append(sets[i/2], ep(id, version, hostPort(replicaServer(t, id))))
	}
	inSet := func(set int, replica string) bool {
		for _, e := range sets[set] {
			if strconv.Itoa(e.ReplicaID) == replica {
				return true
			}
		}
		return false
	}
	port := testutil.FreePort(t, "127.0.0.1")
	epoch := uint64(1)
	f.push(table("flip", epoch, port, "", sets[0]...))
	base := waitListening(t, f.n, "flip")

	// state is gen*4 + 1+set once the node serves that set's table, and
	// gen*4 + 0 while a swap is under way; gen grows with every change. A
	// request that saw the same confirmed state before and after it ran
	// started after that table was applied, so it must have gone there.
	var state atomic.Int64
	setState := func(set int) { state.Store((state.Load()/4+1)*4 + int64(set+1)) }
	setState(0)
	var (
		stop     atomic.Bool
		requests atomic.Int64
		checked  atomic.Int64
		errs     = make(chan error, 100)
		wg       sync.WaitGroup
	)
	c := newClient()
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				before := state.Load()
				resp, err := c.Get(base)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				requests.Add(1)
				replica := resp.Header.Get(protocol.HeaderReplica)
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
					return
				}
				if set := before % 4; set != 0 && state.Load() == before {
					checked.Add(1)
					if !inSet(int(set-1), replica) {
						errs <- fmt.Errorf("request started after set %d was applied went to replica %s", set-1, replica)
						return
					}
				}
			}
		})
	}
	for i := range 10 {
		set := (i + 1) % 2
		setState(-1)
		epoch++
		f.push(table("flip", epoch, port, "", sets[set]...))
		setState(set)
		// Let some requests run on this table before the next flip.
		floor := requests.Load() + 50
		testutil.WaitFor(t, 5*time.Second, func() error {
			if requests.Load() < floor {
				return fmt.Errorf("only %d requests so far", requests.Load())
			}
			return nil
		})
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if requests.Load() < 500 || checked.Load() < 250 {
		t.Fatalf("only %d requests made, %d checked", requests.Load(), checked.Load())
	}
}

// TestInFlightSurvivesSwap checks that the per-replica counters least_load
// reads belong to the address, not to one table.
func TestInFlightSurvivesSwap(t *testing.T) {
	f := newProxyFixture(t)
	release := make(chan struct{})
	var entered atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock)
	fast := replicaServer(t, 2)
	port := testutil.FreePort(t, "127.0.0.1")
	f.push(table("keep", 1, port, protocol.PolicyLeastLoad, ep(1, 1, hostPort(slow))))
	base := waitListening(t, f.n, "keep")

	var wg sync.WaitGroup
	wg.Go(func() {
		if resp, err := newClient().Get(base); err == nil {
			resp.Body.Close()
		}
	})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if entered.Load() == 0 {
			return fmt.Errorf("slow request not started")
		}
		return nil
	})
	// New table: same slow address plus an idle one. The slow one still
	// carries its request, so everything new goes to the idle one.
	f.push(table("keep", 2, port, protocol.PolicyLeastLoad, ep(1, 1, hostPort(slow)), ep(2, 1, hostPort(fast))))
	for i := range 10 {
		if _, _, replica := get(t, &http.Client{Timeout: 2 * time.Second}, base); replica != "2" {
			t.Fatalf("request %d went to replica %q, want the idle 2", i, replica)
		}
	}
	unblock()
	wg.Wait()
}

// TestUpgradePassedThrough checks that a protocol upgrade (as WebSocket
// uses) reaches the replica and the connection then carries raw bytes both
// ways.
func TestUpgradePassedThrough(t *testing.T) {
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(conn, brw)
	}))
	t.Cleanup(echo.Close)
	f := newProxyFixture(t)
	f.push(table("up", 1, testutil.FreePort(t, "127.0.0.1"), "", ep(1, 1, hostPort(echo))))
	addr := strings.TrimPrefix(waitListening(t, f.n, "up"), "http://")

	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get(protocol.HeaderReplica) != "1" {
		t.Fatalf("status %d, replica %q", resp.StatusCode, resp.Header.Get(protocol.HeaderReplica))
	}
	if _, err := io.WriteString(conn, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("echo = %q, %v", line, err)
	}
}
