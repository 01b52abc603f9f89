package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// apiErrorServer answers every request with status and body.
func apiErrorServer(t *testing.T, status int, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		wantMsg  string
		wantCode string
	}{
		{
			name:     "api error message surfaces alone",
			status:   http.StatusNotFound,
			body:     `{"code":"not_found","message":"service \"web\" does not exist"}`,
			wantMsg:  `service "web" does not exist`,
			wantCode: protocol.CodeNotFound,
		},
		{
			name:     "invalid spec keeps file and line",
			status:   http.StatusBadRequest,
			body:     `{"code":"invalid_spec","message":"task.yaml:7: resources.cpus: \"four\" is not a number (use 4 or 4+)"}`,
			wantMsg:  `task.yaml:7: resources.cpus: "four" is not a number (use 4 or 4+)`,
			wantCode: protocol.CodeInvalidSpec,
		},
		{
			name:     "code without message",
			status:   http.StatusConflict,
			body:     `{"code":"already_exists"}`,
			wantMsg:  "already_exists",
			wantCode: protocol.CodeAlreadyExists,
		},
		{
			name:     "plain text body",
			status:   http.StatusBadGateway,
			body:     "upstream went away\nmore detail",
			wantMsg:  "the coordinator answered 502: upstream went away",
			wantCode: protocol.CodeInternal,
		},
		{
			name:     "empty body",
			status:   http.StatusServiceUnavailable,
			body:     "",
			wantMsg:  "the coordinator answered 503: Service Unavailable",
			wantCode: protocol.CodeUnavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := apiErrorServer(t, tt.status, tt.body)
			c := newAPIClient(srv.URL)
			ctx := context.Background()
			calls := map[string]func() error{
				"up": func() error {
					_, err := c.Up(ctx, protocol.UpRequest{Name: "web"})
					return err
				},
				"update": func() error {
					_, err := c.Update(ctx, "web", protocol.UpdateRequest{})
					return err
				},
				"down": func() error {
					_, err := c.Down(ctx, "web")
					return err
				},
				"status": func() error {
					_, _, err := c.Status(ctx, []string{"web"}, false)
					return err
				},
				"logs": func() error {
					var b strings.Builder
					return c.Logs(ctx, "web", 1, logsOptions{}, &b)
				},
			}
			for call, f := range calls {
				err := f()
				if err == nil {
					t.Fatalf("%s: no error", call)
				}
				if err.Error() != tt.wantMsg {
					t.Errorf("%s: error %q, want %q", call, err.Error(), tt.wantMsg)
				}
				var apiErr *protocol.APIError
				if !errors.As(err, &apiErr) {
					t.Fatalf("%s: error %T is not a *protocol.APIError", call, err)
				}
				if apiErr.Code != tt.wantCode {
					t.Errorf("%s: code %q, want %q", call, apiErr.Code, tt.wantCode)
				}
			}
		})
	}
}

func TestClientUnreachable(t *testing.T) {
	// Port 1 (tcpmux) is privileged and unused: nothing can start listening
	// there during the test, unlike on a freed ephemeral port.
	addr := "http://127.0.0.1:1"
	_, _, err := newAPIClient(addr).Status(context.Background(), nil, false)
	want := fmt.Sprintf("cannot reach the baton coordinator at %s (is it running? set $BATON_ADDR or --addr)", addr)
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
}

func TestClientRequests(t *testing.T) {
	type seen struct {
		method, path, query, body string
	}
	var mu sync.Mutex
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, string(body)})
		mu.Unlock()
		switch {
		case r.URL.Path == "/v1/status":
			json.NewEncoder(w).Encode(protocol.StatusResponse{
				Services: []protocol.ServiceStatusView{{Name: "web", Version: 2}},
			})
		case strings.HasSuffix(r.URL.Path, "/logs"):
			fmt.Fprint(w, "line 1\nline 2\n")
		default:
			json.NewEncoder(w).Encode(protocol.ServiceResponse{Name: "web", Version: 3, Endpoint: "127.0.0.1:30001"})
		}
	}))
	t.Cleanup(srv.Close)

	addrs, err := resolveAddrs(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	c := newAPIClient(addrs...)
	ctx := context.Background()
	up, err := c.Up(ctx, protocol.UpRequest{Name: "web", YAML: "run: x\n", Filename: "t.yaml", BaseDir: "/src"})
	if err != nil {
		t.Fatal(err)
	}
	if up.Version != 3 || up.Endpoint != "127.0.0.1:30001" {
		t.Errorf("up answer %+v", up)
	}
	if _, err := c.Update(ctx, "web", protocol.UpdateRequest{YAML: "run: y\n", Mode: protocol.UpdateRolling}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Down(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	st, _, err := c.Status(ctx, []string{"web", "a b"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Services) != 1 || st.Services[0].Version != 2 {
		t.Errorf("status answer %+v", st)
	}
	var logs strings.Builder
	if err := c.Logs(ctx, "web", 4, logsOptions{Follow: true}, &logs); err != nil {
		t.Fatal(err)
	}
	if logs.String() != "line 1\nline 2\n" {
		t.Errorf("logs %q", logs.String())
	}
	if err := c.Logs(ctx, "web", 4, logsOptions{Tail: 50}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := c.Logs(ctx, "web", 4, logsOptions{Follow: true, Tail: 1}, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, tail := range []int{-1, 100_001} {
		if err := c.Logs(ctx, "web", 4, logsOptions{Tail: tail}, io.Discard); err == nil || !strings.Contains(err.Error(), "number of lines") {
			t.Errorf("Logs with tail %d: error %v, want one about the number of lines", tail, err)
		}
	}

	want := []seen{
		{"POST", "/v1/services", "", `{"name":"web","yaml":"run: x\n","filename":"t.yaml","base_dir":"/src"}`},
		{"POST", "/v1/services/web/update", "", `{"yaml":"run: y\n","filename":"","mode":"rolling"}`},
		{"DELETE", "/v1/services/web", "", ""},
		{"GET", "/v1/status", "service=web&service=a+b", ""},
		{"GET", "/v1/services/web/replicas/4/logs", "follow=1", ""},
		{"GET", "/v1/services/web/replicas/4/logs", "follow=0&tail=50", ""},
		{"GET", "/v1/services/web/replicas/4/logs", "follow=1&tail=1", ""},
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("server saw %d requests, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestClientLogsFollowCancel checks that cancelling a followed stream (as
// Ctrl-C does) ends Logs cleanly with what was already printed.
func TestClientLogsFollowCancel(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("follow") != "1" {
			http.Error(w, "want follow=1", http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, "first line\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- newAPIClient(srv.URL).Logs(ctx, "web", 1, logsOptions{Follow: true}, out) }()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if !strings.Contains(out.String(), "first line") {
			return fmt.Errorf("no log line yet, have %q", out.String())
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Logs after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Logs did not return after cancel")
	}
}

func TestResolveAddrs(t *testing.T) {
	tests := []struct {
		name, flag, env string
		want            []string
		wantErr         string
	}{
		{name: "default", want: []string{defaultAddr}},
		{name: "env", env: "http://10.0.0.1:7400", want: []string{"http://10.0.0.1:7400"}},
		{name: "flag beats env", flag: "http://10.0.0.2:7400/", env: "http://10.0.0.1:7400", want: []string{"http://10.0.0.2:7400"}},
		{name: "bare host port", flag: "10.0.0.3:7400", want: []string{"http://10.0.0.3:7400"}},
		{name: "list in env", env: "http://h1:7400,http://h2:7400, h3:7400 ,",
			want: []string{"http://h1:7400", "http://h2:7400", "http://h3:7400"}},
		{name: "list in flag, duplicates dropped", flag: "h1:7400,https://h2:7400/,h1:7400",
			want: []string{"http://h1:7400", "https://h2:7400"}},
		{name: "bad scheme", flag: "ftp://h1:7400", wantErr: `--addr: "ftp://h1:7400" is not a coordinator address; use http://host:port or host:port`},
		{name: "bad entry in env", env: "h1:7400,http://", wantErr: `$BATON_ADDR: "http:" is not a coordinator address`},
		{name: "only commas", env: ",,", wantErr: `$BATON_ADDR ",," names no coordinator`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("BATON_ADDR", tt.env)
			got, err := resolveAddrs(tt.flag)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("resolveAddrs(%q) with BATON_ADDR=%q: error %v, want %q in it", tt.flag, tt.env, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("resolveAddrs(%q) with BATON_ADDR=%q = %q, %v; want %q", tt.flag, tt.env, got, err, tt.want)
			}
		})
	}
}

// TestClientRetriesNotLeader checks that a not_leader answer (an election in
// progress) is retried until a leader answers.
func TestClientRetriesNotLeader(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(protocol.APIError{Code: protocol.CodeNotLeader, Message: "no leader yet"})
			return
		}
		json.NewEncoder(w).Encode(protocol.ServiceResponse{Name: "web", Version: 1})
	}))
	t.Cleanup(srv.Close)
	resp, err := newAPIClient(srv.URL).Up(context.Background(), protocol.UpRequest{Name: "web"})
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if resp.Version != 1 || calls != 3 {
		t.Errorf("answer %+v after %d calls, want version 1 after 3", resp, calls)
	}
}

// refusedAddr returns the address of a listener that was closed: dialling
// it is refused, as a coordinator that is down.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	return addr
}

// countingServer is a coordinator stand-in that counts its requests.
type countingServer struct {
	URL   string
	mu    sync.Mutex
	calls int
}

func newCountingServer(t *testing.T, h func(w http.ResponseWriter, r *http.Request, call int)) *countingServer {
	t.Helper()
	s := &countingServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls++
		n := s.calls
		s.mu.Unlock()
		h(w, r, n)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *countingServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// answerOK answers like a coordinator that took an up.
func answerOK(w http.ResponseWriter, _ *http.Request, _ int) {
	json.NewEncoder(w).Encode(protocol.ServiceResponse{Name: "web", Version: 1})
}

// answerAPIError returns a handler that answers status with an APIError.
func answerAPIError(status int, code, msg string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(protocol.APIError{Code: code, Message: msg})
	}
}

// answerReset reads the request and then drops the connection without an
// answer: the request reached the coordinator, its outcome is unknown.
func answerReset(w http.ResponseWriter, r *http.Request, _ int) {
	io.ReadAll(r.Body)
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

// noSleepClient returns a client for addrs whose wait between rounds would
// outlast the test: a test that passes never slept.
func noSleepClient(addrs ...string) *apiClient {
	c := newAPIClient(addrs...)
	c.backoff = time.Hour
	return c
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestClientFailsOverFromDeadAddress checks that a request moves on from
// an address that refuses connections, and that the address that answered
// is tried first next time.
func TestClientFailsOverFromDeadAddress(t *testing.T) {
	dead := refusedAddr(t)
	live := newCountingServer(t, answerOK)
	c := noSleepClient(dead, live.URL)
	ctx := testContext(t)
	for i := range 2 {
		resp, err := c.Up(ctx, protocol.UpRequest{Name: "web"})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if resp.Version != 1 {
			t.Errorf("call %d: answer %+v", i, resp)
		}
	}
	if live.count() != 2 {
		t.Errorf("live coordinator saw %d requests, want 2", live.count())
	}
	if got := c.order(); c.addrs[got[0]] != live.URL {
		t.Errorf("next request goes first to %s, want the one that answered, %s", c.addrs[got[0]], live.URL)
	}
}

// TestClientMovesOnWhenNothingWasDone checks the answers after which a
// write goes to the next address at once (no sleep): the coordinator did
// nothing with it.
func TestClientMovesOnWhenNothingWasDone(t *testing.T) {
	tests := []struct {
		name  string
		first func(http.ResponseWriter, *http.Request, int)
	}{
		{"not leader", answerAPIError(http.StatusServiceUnavailable, protocol.CodeNotLeader, "not the leader")},
		{"no leader", answerAPIError(http.StatusServiceUnavailable, protocol.CodeNoLeader, "no leader elected within 5s")},
		{"catching up", answerAPIError(http.StatusServiceUnavailable, protocol.CodeCatchingUp, "replaying the log")},
		{"no quorum", answerAPIError(http.StatusServiceUnavailable, protocol.CodeNoQuorum, "no quorum: 1 of 3 coordinators reachable")},
		{"not a member: plain 404", func(w http.ResponseWriter, _ *http.Request, _ int) {
			http.Error(w, "404 page not found", http.StatusNotFound)
		}},
		{"not a member: plain 502", func(w http.ResponseWriter, _ *http.Request, _ int) {
			http.Error(w, "bad gateway", http.StatusBadGateway)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := newCountingServer(t, tt.first)
			second := newCountingServer(t, answerOK)
			resp, err := noSleepClient(first.URL, second.URL).Up(testContext(t), protocol.UpRequest{Name: "web"})
			if err != nil {
				t.Fatalf("Up: %v", err)
			}
			if resp.Version != 1 || first.count() != 1 || second.count() != 1 {
				t.Errorf("answer %+v; requests %d then %d, want 1 and 1", resp, first.count(), second.count())
			}
		})
	}
}

// TestClientNoRetryWhenOutcomeUnknown checks that a write that may have
// reached a coordinator is not sent to another (it could be applied
// twice), while a read is.
func TestClientNoRetryWhenOutcomeUnknown(t *testing.T) {
	tests := []struct {
		name      string
		first     func(http.ResponseWriter, *http.Request, int)
		read      bool
		wantRetry bool
		wantErr   string
	}{
		{name: "503 unavailable",
			first:   answerAPIError(http.StatusServiceUnavailable, protocol.CodeUnavailable, "the command may or may not have been applied"),
			wantErr: "the command may or may not have been applied"},
		{name: "500 internal",
			first:   answerAPIError(http.StatusInternalServerError, protocol.CodeInternal, "raft: boom"),
			wantErr: "raft: boom"},
		{name: "non-JSON 503",
			first: func(w http.ResponseWriter, _ *http.Request, _ int) {
				http.Error(w, "overloaded", http.StatusServiceUnavailable)
			},
			wantErr: "the coordinator answered 503: overloaded"},
		{name: "connection dropped after the request", first: answerReset, wantErr: "request to the baton coordinator at "},
		{name: "read: connection dropped", first: answerReset, read: true, wantRetry: true},
		{name: "read: 503 unavailable is an answer",
			first: answerAPIError(http.StatusServiceUnavailable, protocol.CodeUnavailable, "try later"),
			read:  true, wantErr: "try later"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := newCountingServer(t, tt.first)
			second := newCountingServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if r.Method == http.MethodGet {
					json.NewEncoder(w).Encode(protocol.StatusResponse{})
					return
				}
				answerOK(w, r, n)
			})
			c := noSleepClient(first.URL, second.URL)
			var err error
			if tt.read {
				_, _, err = c.Status(testContext(t), nil, false)
			} else {
				_, err = c.Up(testContext(t), protocol.UpRequest{Name: "web"})
			}
			if tt.wantRetry {
				if err != nil || second.count() != 1 {
					t.Fatalf("error %v, second coordinator saw %d requests; want the read answered by it", err, second.count())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q in it", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "[tried") {
				t.Errorf("error %q lists addresses, but only one was tried", err)
			}
			if first.count() != 1 || second.count() != 0 {
				t.Errorf("requests %d then %d, want 1 then 0", first.count(), second.count())
			}
		})
	}
}

// TestClientAllAddressesFail checks the error when no address could take
// the request: the most informative answer, then every address tried.
func TestClientAllAddressesFail(t *testing.T) {
	const noQuorum = "no quorum: 1 of 3 coordinators reachable (c2, c3 not reachable); start them or remove them with baton operator raft remove-peer"
	t.Run("no quorum beats refused", func(t *testing.T) {
		dead := refusedAddr(t)
		nq := newCountingServer(t, answerAPIError(http.StatusServiceUnavailable, protocol.CodeNoQuorum, noQuorum))
		foreign := newCountingServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
			http.Error(w, "404 page not found", http.StatusNotFound)
		})
		_, err := noSleepClient(dead, nq.URL, foreign.URL).Up(testContext(t), protocol.UpRequest{Name: "web"})
		want := noQuorum + " [tried " + dead + ": connection refused; " + nq.URL + ": no_quorum; " +
			foreign.URL + ": answered 404, not baton's API]"
		if err == nil || err.Error() != want {
			t.Fatalf("error\n  %v\nwant\n  %s", err, want)
		}
		var apiErr *protocol.APIError
		if !errors.As(err, &apiErr) || apiErr.Code != protocol.CodeNoQuorum {
			t.Errorf("error %v does not unwrap to the no_quorum APIError", err)
		}
		if nq.count() != 1 {
			t.Errorf("no_quorum coordinator saw %d requests, want 1 (it already waited for a leader)", nq.count())
		}
	})
	t.Run("all down", func(t *testing.T) {
		a, b := refusedAddr(t), refusedAddr(t)
		_, _, err := noSleepClient(a, b).Status(testContext(t), nil, false)
		want := "cannot reach any baton coordinator (are they running? set $BATON_ADDR or --addr) [tried " +
			a + ": connection refused; " + b + ": connection refused]"
		if err == nil || err.Error() != want {
			t.Fatalf("error\n  %v\nwant\n  %s", err, want)
		}
	})
	t.Run("logs", func(t *testing.T) {
		a, b := refusedAddr(t), refusedAddr(t)
		err := noSleepClient(a, b).Logs(testContext(t), "web", 1, logsOptions{}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "[tried "+a+": connection refused; "+b+": connection refused]") {
			t.Fatalf("error %v, want both addresses listed", err)
		}
	})
}

// TestClientRoundsWhileElecting checks that, while every coordinator says
// not_leader, the client tries all of them again after a pause, and that
// the pause comes only after a full round.
func TestClientRoundsWhileElecting(t *testing.T) {
	electing := answerAPIError(http.StatusServiceUnavailable, protocol.CodeNotLeader, "election in progress")
	first := newCountingServer(t, electing)
	second := newCountingServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n <= 2 {
			electing(w, r, n)
			return
		}
		answerOK(w, r, n)
	})
	c := newAPIClient(refusedAddr(t), first.URL, second.URL)
	c.backoff = time.Millisecond
	if _, err := c.Up(testContext(t), protocol.UpRequest{Name: "web"}); err != nil {
		t.Fatalf("Up: %v", err)
	}
	// Rounds 1 and 2 see not_leader from both; round 3 ends at the second.
	if first.count() != 3 || second.count() != 3 {
		t.Errorf("requests %d and %d, want 3 and 3", first.count(), second.count())
	}
}

// TestClientLogsFromFirstThatAnswers checks that a log stream comes from
// the first address that answers.
func TestClientLogsFromFirstThatAnswers(t *testing.T) {
	live := newCountingServer(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		fmt.Fprint(w, "line 1\n")
	})
	var out strings.Builder
	if err := noSleepClient(refusedAddr(t), live.URL).Logs(testContext(t), "web", 1, logsOptions{}, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "line 1\n" {
		t.Errorf("logs %q", out.String())
	}
}
