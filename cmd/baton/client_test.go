package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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
					_, err := c.Status(ctx, []string{"web"})
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
	_, err := newAPIClient(addr).Status(context.Background(), nil)
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

	c := newAPIClient(resolveAddr(srv.URL + "/"))
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
	st, err := c.Status(ctx, []string{"web", "a b"})
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

func TestResolveAddr(t *testing.T) {
	tests := []struct {
		name, flag, env, want string
	}{
		{"default", "", "", defaultAddr},
		{"env", "", "http://10.0.0.1:7400", "http://10.0.0.1:7400"},
		{"flag beats env", "http://10.0.0.2:7400/", "http://10.0.0.1:7400", "http://10.0.0.2:7400"},
		{"bare host port", "10.0.0.3:7400", "", "http://10.0.0.3:7400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("BATON_ADDR", tt.env)
			if got := resolveAddr(tt.flag); got != tt.want {
				t.Errorf("resolveAddr(%q) with BATON_ADDR=%q = %q, want %q", tt.flag, tt.env, got, tt.want)
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
