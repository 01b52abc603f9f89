package lbnode

// Passive health through a running node: replicas that hang, refuse, reset
// or all fail, and the response timeout.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// hungReplica is a replica whose process is stopped (SIGSTOP): the kernel
// accepts its connections, nothing ever answers. It returns the address and
// the number of connections accepted so far.
func hungReplica(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		accepted atomic.Int64
		mu       sync.Mutex
		conns    []net.Conn
		wg       sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), &accepted
}

// resetReplica is a replica that reads the start of each request and then
// resets the connection (SO_LINGER 0), as a crashing process does. Reading
// first makes the reset come after the request was sent, never during the
// connect (which would make it a dial error).
func resetReplica(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Read(make([]byte, 4096))
				_ = c.(*net.TCPConn).SetLinger(0)
				c.Close()
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// backendOf returns the node's backend for addr in service.
func backendOf(t *testing.T, n *Node, service, addr string) *backend {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.services[service]
	if s == nil || s.backends[addr] == nil {
		t.Fatalf("no backend %s in service %q", addr, service)
	}
	return s.backends[addr]
}

// timedGet is get that also returns how long the request took.
func timedGet(t *testing.T, c *http.Client, url string) (code int, body, replica string, took time.Duration) {
	t.Helper()
	start := time.Now()
	code, body, replica = get(t, c, url)
	return code, body, replica, time.Since(start)
}

// TestHungReplicaTimedOutAndEjected: beside a healthy replica, one that
// accepts connections and never answers costs each request one response
// timeout (1s; the GET is retried on the healthy one) until it has timed out
// 3 times; then it is ejected and requests go straight to the healthy one.
// When the ejection ends it is tried again, and ejected again for longer.
func TestHungReplicaTimedOutAndEjected(t *testing.T) {
	const base = 2 * time.Second
	f := newProxyFixtureWith(t, func(c *Config) { c.EjectBase = base; c.EjectMax = 30 * time.Second })
	hung, accepted := hungReplica(t)
	live := replicaServer(t, 2)
	tbl := table("hung", 1, testutil.FreePort(t, "127.0.0.1"), protocol.PolicyRoundRobin,
		ep(1, 1, hung), ep(2, 1, hostPort(live)))
	tbl.ResponseTimeoutSeconds = 1
	f.push(tbl)
	url := waitListening(t, f.n, "hung")
	c := newClient()
	timeouts := func(want float64) {
		t.Helper()
		wantMetric(t, f.n, want, "baton_lb_upstream_failures_total", "service", "hung", "kind", "timeout")
	}

	// A fresh round robin starts on the hung replica, listed first, and the
	// retry moves it on by one: every request starts there.
	for i := 1; i <= 3; i++ {
		code, body, replica, took := timedGet(t, c, url)
		if code != http.StatusOK || replica != "2" {
			t.Fatalf("request %d: %d from replica %q: %s", i, code, replica, body)
		}
		if took < 950*time.Millisecond || took > 3*time.Second {
			t.Fatalf("request %d took %s, want about 1s (one response timeout, then the retry)", i, took)
		}
		timeouts(float64(i))
		wantEjected := 0.0
		if i == 3 {
			wantEjected = 1
		}
		wantMetric(t, f.n, wantEjected, "baton_lb_ejected_replicas", "service", "hung")
	}
	wantMetric(t, f.n, 1, "baton_lb_ejections_total", "service", "hung")
	wantMetric(t, f.n, 3, "baton_lb_retries_total", "service", "hung")
	tries := accepted.Load()
	if tries != 3 {
		t.Fatalf("hung replica accepted %d connections, want 3", tries)
	}

	// Ejected: no request waits for it.
	for i := range 20 {
		code, body, replica, took := timedGet(t, c, url)
		if code != http.StatusOK || replica != "2" {
			t.Fatalf("request %d after the ejection: %d from replica %q: %s", i, code, replica, body)
		}
		if took >= 300*time.Millisecond {
			t.Fatalf("request %d after the ejection took %s, want well under the 1s timeout", i, took)
		}
	}
	if got := accepted.Load(); got != tries {
		t.Fatalf("hung replica got %d more connections while ejected", got-tries)
	}
	timeouts(3)

	// Back after the ejection time: tried again, and ejected again for
	// twice as long after 3 more timeouts.
	testutil.WaitFor(t, base+3*time.Second, func() error {
		return metricIs(f.n, 0, "baton_lb_ejected_replicas", "service", "hung")
	})
	for i := 0; ; i++ {
		if metricIs(f.n, 2, "baton_lb_ejections_total", "service", "hung") == nil {
			break
		}
		if i == 8 {
			t.Fatalf("not ejected again after %d requests", i)
		}
		if code, body, replica := get(t, c, url); code != http.StatusOK || replica != "2" {
			t.Fatalf("request %d after the return: %d from replica %q: %s", i, code, replica, body)
		}
	}
	if got := accepted.Load(); got != tries+3 {
		t.Fatalf("hung replica accepted %d connections after its return, want 3", got-tries)
	}
	timeouts(6)
	wantMetric(t, f.n, 1, "baton_lb_ejected_replicas", "service", "hung")
	if got := time.Duration(backendOf(t, f.n, "hung", hung).health.ejectedFor.Load()); got != 2*base {
		t.Fatalf("second ejection lasts %s, want %s", got, 2*base)
	}
}

// TestRefusingReplicaEjected: a replica whose port refuses connections is
// ejected after 3 connect errors; every request succeeds on the other.
func TestRefusingReplicaEjected(t *testing.T) {
	f := newProxyFixtureWith(t, func(c *Config) { c.EjectBase = time.Minute; c.EjectMax = time.Minute })
	dead := closedAddr(t)
	f.push(table("refused", 1, testutil.FreePort(t, "127.0.0.1"), protocol.PolicyRoundRobin,
		ep(1, 1, dead), ep(2, 1, hostPort(replicaServer(t, 2)))))
	url := waitListening(t, f.n, "refused")
	c := newClient()
	for i := range 13 {
		if code, body, replica := get(t, c, url); code != http.StatusOK || replica != "2" {
			t.Fatalf("request %d: %d from replica %q: %s", i, code, replica, body)
		}
		// Every request starts on the dead replica until it is ejected.
		wantMetric(t, f.n, float64(min(i+1, 3)), "baton_lb_upstream_failures_total", "service", "refused", "kind", "connect")
	}
	wantMetric(t, f.n, 1, "baton_lb_ejected_replicas", "service", "refused")
	wantMetric(t, f.n, 1, "baton_lb_ejections_total", "service", "refused")
	if got := f.n.dump().Ejected["refused"]; !slices.Equal(got, []string{dead}) {
		t.Fatalf("/v1/routes lists %v as ejected, want [%s]", got, dead)
	}
	for _, kind := range []string{"reset", "timeout"} {
		wantMetric(t, f.n, 0, "baton_lb_upstream_failures_total", "service", "refused", "kind", kind)
	}
}

// TestResettingReplica: a connection reset before the response is a
// failure of kind reset; the existing retry rule still decides: a GET moves
// to another replica, a POST with a body (which the replica may have acted
// on) does not and gets 502.
func TestResettingReplica(t *testing.T) {
	f := newProxyFixture(t)
	reset := resetReplica(t)
	live := replicaServer(t, 2)
	tests := []struct {
		name     string
		method   string
		body     string
		wantCode int
	}{
		{"GET retried", http.MethodGet, "", http.StatusOK},
		{"POST with a body not retried", http.MethodPost, strings.Repeat("prompt ", 1000), http.StatusBadGateway},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := "reset" + strconv.Itoa(i)
			// A fresh round robin starts on the first endpoint: the resetter.
			f.push(table(svc, 1, testutil.FreePort(t, "127.0.0.1"), protocol.PolicyRoundRobin,
				ep(1, 1, reset), ep(2, 1, hostPort(live))))
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, _ := http.NewRequest(tc.method, waitListening(t, f.n, svc), body)
			resp, err := newClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantCode, got)
			}
			if tc.wantCode == http.StatusBadGateway && !strings.Contains(string(got), "tried replica 1 (v1) at "+reset) {
				t.Fatalf("502 body does not name the replica tried: %s", got)
			}
			wantMetric(t, f.n, 1, "baton_lb_upstream_failures_total", "service", svc, "kind", "reset")
			wantMetric(t, f.n, 0, "baton_lb_upstream_failures_total", "service", svc, "kind", "connect")
		})
	}
}

// TestAllEjectedPanicMode: when every replica of a service is ejected the
// LB still sends requests to them rather than answering 503 on its own
// guess.
func TestAllEjectedPanicMode(t *testing.T) {
	f := newProxyFixtureWith(t, func(c *Config) { c.EjectBase = time.Minute; c.EjectMax = time.Minute })
	var broken atomic.Bool
	broken.Store(true)
	flaky := func(id int) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if broken.Load() {
				if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
					conn.Close() // EOF before any response
				}
				return
			}
			fmt.Fprintf(w, "replica %d", id)
		}))
		t.Cleanup(s.Close)
		return hostPort(s)
	}
	eps := []protocol.Endpoint{ep(1, 1, flaky(1)), ep(2, 1, flaky(2))}
	for i, policy := range []string{protocol.PolicyRoundRobin, protocol.PolicyLeastLoad} {
		t.Run(policy, func(t *testing.T) {
			broken.Store(true)
			svc := "panic" + strconv.Itoa(i)
			f.push(table(svc, 1, testutil.FreePort(t, "127.0.0.1"), policy, eps...))
			url := waitListening(t, f.n, svc)
			c := newClient()
			// Each GET fails on both replicas: after 3, both are ejected.
			for j := range 3 {
				if code, body, _ := get(t, c, url); code != http.StatusBadGateway {
					t.Fatalf("request %d to broken replicas: %d %s", j, code, body)
				}
			}
			wantMetric(t, f.n, 2, "baton_lb_ejected_replicas", "service", svc)
			wantMetric(t, f.n, 6, "baton_lb_upstream_failures_total", "service", svc, "kind", "reset")

			broken.Store(false)
			seen := map[string]int{}
			for j := range 10 {
				code, body, replica := get(t, c, url)
				if code != http.StatusOK {
					t.Fatalf("request %d with every replica ejected: %d %s, want 200 (panic mode)", j, code, body)
				}
				seen[replica]++
			}
			if seen["1"] == 0 || seen["2"] == 0 {
				t.Fatalf("panic mode served by %v, want both replicas", seen)
			}
			// Still ejected: they are used because there is nothing else.
			wantMetric(t, f.n, 2, "baton_lb_ejected_replicas", "service", svc)
		})
	}
}

// TestResponseTimeout: the table's ResponseTimeoutSeconds bounds the wait
// for response headers only; without it a slow replica is waited for.
func TestResponseTimeout(t *testing.T) {
	const slow = 1500 * time.Millisecond
	wait := func(r *http.Request) {
		select {
		case <-time.After(slow):
		case <-r.Context().Done():
		}
	}
	slowHeaders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wait(r)
		fmt.Fprint(w, "late but whole")
	}))
	t.Cleanup(slowHeaders.Close)
	slowBody := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "first token;")
		w.(http.Flusher).Flush()
		wait(r)
		fmt.Fprint(w, "last token")
	}))
	t.Cleanup(slowBody.Close)
	f := newProxyFixture(t)

	tests := []struct {
		name         string
		timeout      int
		replica      *httptest.Server
		wantCode     int
		wantBody     string
		wantMin      time.Duration
		wantMax      time.Duration
		wantTimeouts float64
	}{
		{"no timeout: slow headers are waited for", 0, slowHeaders, http.StatusOK, "late but whole", slow, 5 * time.Second, 0},
		{"1s timeout: slow headers time out", 1, slowHeaders, http.StatusBadGateway, "no response headers within the response timeout of 1s", 950 * time.Millisecond, slow, 1},
		{"1s timeout: a body streaming longer is not cut", 1, slowBody, http.StatusOK, "first token;last token", slow, 5 * time.Second, 0},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			svc := "slow" + strconv.Itoa(i)
			tbl := table(svc, 1, testutil.FreePort(t, "127.0.0.1"), "", ep(1, 1, hostPort(tc.replica)))
			tbl.ResponseTimeoutSeconds = tc.timeout
			f.push(tbl)
			code, body, _, took := timedGet(t, newClient(), waitListening(t, f.n, svc))
			if code != tc.wantCode || !strings.Contains(body, tc.wantBody) {
				t.Fatalf("got %d %q, want %d with %q", code, body, tc.wantCode, tc.wantBody)
			}
			if took < tc.wantMin || took >= tc.wantMax {
				t.Fatalf("took %s, want from %s to %s", took, tc.wantMin, tc.wantMax)
			}
			wantMetric(t, f.n, tc.wantTimeouts, "baton_lb_upstream_failures_total", "service", svc, "kind", "timeout")
		})
	}
}

// TestResponseTimeoutPOSTNotRetried: a timed-out POST may have reached the
// replica, so it is not retried (502), while a GET is.
func TestResponseTimeoutPOSTNotRetried(t *testing.T) {
	f := newProxyFixture(t)
	hung, _ := hungReplica(t)
	live := replicaServer(t, 2)
	tests := []struct {
		name     string
		method   string
		body     []byte
		wantCode int
	}{
		{"GET retried", http.MethodGet, nil, http.StatusOK},
		{"POST not retried", http.MethodPost, []byte(`{"prompt":"hi"}`), http.StatusBadGateway},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			svc := "tpost" + strconv.Itoa(i)
			tbl := table(svc, 1, testutil.FreePort(t, "127.0.0.1"), protocol.PolicyRoundRobin, ep(1, 1, hung), ep(2, 1, hostPort(live)))
			tbl.ResponseTimeoutSeconds = 1
			f.push(tbl)
			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
			}
			req, _ := http.NewRequest(tc.method, waitListening(t, f.n, svc), body)
			resp, err := newClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
			wantMetric(t, f.n, 1, "baton_lb_upstream_failures_total", "service", svc, "kind", "timeout")
		})
	}
}
