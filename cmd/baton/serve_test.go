package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/protocol"
)

const validTask = `name: web
service:
  readiness_probe: /health
  replicas: 2
resources:
  cpus: 2+
run: python3 server.py --port $PORT
`

const namelessTask = `service:
  readiness_probe: /health
  replicas: 2
run: python3 server.py --port $PORT
`

const badNameTask = `name: My_Service
service:
  readiness_probe: /health
run: python3 server.py --port $PORT
`

const requiredEnvTask = `name: web
envs:
  HF_TOKEN:
  MODEL: small
service:
  readiness_probe: /health
run: python3 server.py --port $PORT
`

const invalidTask = `service:
  readiness_probe: /health
resources:
  cpus: BAD
run: python3 server.py --port $PORT
`

// fakeCoordinator records the requests it gets and answers like the
// coordinator's HTTP API would.
type fakeCoordinator struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	requests []string // "METHOD /path?query"
	bodies   [][]byte
	services []protocol.ServiceStatusView
	// statusPolls counts GET /v1/status; goneAfter > 0 drops every service
	// once that many polls were answered.
	statusPolls int
	goneAfter   int
	downErr     map[string]protocol.APIError
	// index and stale go into status answers, headers onto every answer.
	index   uint64
	stale   bool
	headers map[string]string
}

func newFakeCoordinator(t *testing.T) *fakeCoordinator {
	t.Helper()
	f := &fakeCoordinator{t: t, downErr: map[string]protocol.APIError{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCoordinator) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	req := r.Method + " " + r.URL.Path
	if r.URL.RawQuery != "" {
		req += "?" + r.URL.RawQuery
	}
	f.requests = append(f.requests, req)
	f.bodies = append(f.bodies, body)
	writeJSON := func(status int, v any) {
		for k, v := range f.headers {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/services":
		var up protocol.UpRequest
		json.Unmarshal(body, &up)
		writeJSON(http.StatusOK, protocol.ServiceResponse{Name: up.Name, Version: 1, Endpoint: "127.0.0.1:30001",
			Warnings: []string{"server-side note"}})
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/update"):
		name := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/services/"), "/update")
		writeJSON(http.StatusOK, protocol.ServiceResponse{Name: name, Version: 2, Endpoint: "127.0.0.1:30001"})
	case r.Method == http.MethodDelete:
		name := strings.TrimPrefix(r.URL.Path, "/v1/services/")
		if e, ok := f.downErr[name]; ok {
			writeJSON(http.StatusNotFound, e)
			return
		}
		writeJSON(http.StatusOK, protocol.ServiceResponse{Name: name})
	case r.Method == http.MethodGet && r.URL.Path == "/v1/status":
		f.statusPolls++
		st := protocol.StatusResponse{Services: f.services, Index: f.index, Stale: f.stale}
		if f.goneAfter > 0 && f.statusPolls > f.goneAfter {
			st.Services = nil
		}
		writeJSON(http.StatusOK, st)
	case strings.HasSuffix(r.URL.Path, "/logs"):
		fmt.Fprintf(w, "log for %s\n", r.URL.Path)
	default:
		writeJSON(http.StatusNotFound, protocol.APIError{Code: protocol.CodeNotFound, Message: "no route " + req})
	}
}

func (f *fakeCoordinator) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func (f *fakeCoordinator) body(i int) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[i]
}

// runServe runs `baton serve args...` against f and returns stdout, stderr
// and the error RunE returned. terminal and stdin drive the confirmation.
func runServe(t *testing.T, f *fakeCoordinator, terminal bool, stdin string, args ...string) (string, string, error) {
	t.Helper()
	c := &serveCLI{
		stdin:      strings.NewReader(stdin),
		isTerminal: func() bool { return terminal },
		now:        time.Now,
	}
	cmd := c.command()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(append([]string{"--addr", f.srv.URL}, args...))
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

func writeTask(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "task.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServeUp(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		task      string
		args      []string
		terminal  bool
		stdin     string
		wantName  string // "" means no request reaches the coordinator
		unnamed   bool   // the request goes without a name (the coordinator picks one)
		wantEnvs  map[string]string
		wantOut   string
		wantErr   string
		wantInErr string
	}{
		{name: "name from task", task: validTask, wantName: "web",
			wantOut: "Service \"web\" is up: version 1, endpoint 127.0.0.1:30001\nTo see its status: baton serve status web\n"},
		{name: "name from flag", task: namelessTask, args: []string{"-n", "other"}, wantName: "other",
			wantOut: "Service \"other\" is up: version 1, endpoint 127.0.0.1:30001\nTo see its status: baton serve status other\n"},
		{name: "no name", task: namelessTask, unnamed: true, wantOut: "is up"},
		{name: "bad name", task: validTask, args: []string{"-n", "Web_1"}, wantErr: "-n: invalid service name"},
		{name: "bad name in task", task: badNameTask, wantErr: `task.yaml:1: name: invalid service name "My_Service"`},
		{name: "bad name in task, -n given", task: badNameTask, args: []string{"-n", "my-service"}, wantName: "my-service", wantOut: "is up"},
		{name: "required env missing", task: requiredEnvTask, wantErr: "task.yaml:3: envs.HF_TOKEN: has no value; pass it with --env HF_TOKEN=VALUE"},
		{name: "required env given", task: requiredEnvTask, args: []string{"--env", "HF_TOKEN=secret", "--env", "MODEL=large"}, wantName: "web",
			wantEnvs: map[string]string{"HF_TOKEN": "secret", "MODEL": "large"}, wantOut: "is up"},
		{name: "env from the shell", task: requiredEnvTask, args: []string{"--env", "BATON_TEST_TOKEN_FROM_SHELL", "--env", "HF_TOKEN=x"}, wantName: "web",
			wantEnvs: map[string]string{"HF_TOKEN": "x", "BATON_TEST_TOKEN_FROM_SHELL": "from-shell"}, wantOut: "is up"},
		{name: "env not in the shell", task: validTask, args: []string{"--env", "BATON_TEST_UNSET_VARIABLE"}, wantErr: "--env BATON_TEST_UNSET_VARIABLE: BATON_TEST_UNSET_VARIABLE is not set in this shell"},
		{name: "bad env name", task: validTask, args: []string{"--env", "1BAD=x"}, wantErr: "--env 1BAD=x:"},
		{name: "invalid task fails before contacting the cluster", task: invalidTask, wantErr: "task.yaml:"},
		{name: "confirmed", task: validTask, terminal: true, stdin: "y\n", wantName: "web", wantOut: "is up",
			wantInErr: "Launching service \"web\": 2 replicas, cpus 2+, readiness GET /health.\nProceed? [Y/n] "},
		{name: "confirmed by default", task: validTask, terminal: true, stdin: "\n", wantName: "web", wantOut: "is up"},
		{name: "declined", task: validTask, terminal: true, stdin: "n\n", wantInErr: "Aborted."},
		{name: "eof declines", task: validTask, terminal: true, stdin: "", wantInErr: "Aborted."},
		{name: "yes skips prompt", task: validTask, args: []string{"-y"}, terminal: true, stdin: "n\n", wantName: "web", wantOut: "is up"},
	}
	t.Setenv("BATON_TEST_TOKEN_FROM_SHELL", "from-shell")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCoordinator(t)
			path := writeTask(t, tt.task)
			out, errOut, err := runServe(t, f, tt.terminal, tt.stdin, append([]string{"up", path}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("stdout %q, want %q in it", out, tt.wantOut)
			}
			if !strings.Contains(errOut, tt.wantInErr) {
				t.Errorf("stderr %q, want %q in it", errOut, tt.wantInErr)
			}
			reqs := f.seen()
			if tt.wantName == "" && !tt.unnamed {
				if len(reqs) != 0 {
					t.Fatalf("coordinator was contacted: %v", reqs)
				}
				return
			}
			if len(reqs) != 1 || reqs[0] != "POST /v1/services" {
				t.Fatalf("requests %v, want one POST /v1/services", reqs)
			}
			var up protocol.UpRequest
			if err := json.Unmarshal(f.body(0), &up); err != nil {
				t.Fatal(err)
			}
			want := protocol.UpRequest{Name: tt.wantName, YAML: tt.task, Filename: path, BaseDir: cwd, Envs: tt.wantEnvs}
			if !reflect.DeepEqual(up, want) {
				t.Errorf("UpRequest %+v, want %+v", up, want)
			}
			if !strings.Contains(errOut, "warning: server-side note") {
				t.Errorf("stderr %q lacks the server's warning", errOut)
			}
		})
	}
}

func TestServeUpdate(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantMode string
		wantOut  string
		wantErr  string
	}{
		{name: "blue green by default", wantMode: "blue_green",
			wantOut: "Service \"web\" updating to version 2 (blue_green); traffic flips when 2 new replicas are READY\n"},
		{name: "rolling", args: []string{"--mode", "rolling"}, wantMode: "rolling",
			wantOut: "Service \"web\" updating to version 2 (rolling); old replicas are replaced one at a time"},
		{name: "bad mode", args: []string{"--mode", "canary"}, wantErr: `--mode "canary": use blue_green or rolling`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCoordinator(t)
			path := writeTask(t, validTask)
			out, _, err := runServe(t, f, false, "", append([]string{"update", "web", path}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				if reqs := f.seen(); len(reqs) != 0 {
					t.Fatalf("coordinator was contacted: %v", reqs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("stdout %q, want %q in it", out, tt.wantOut)
			}
			reqs := f.seen()
			if len(reqs) != 1 || reqs[0] != "POST /v1/services/web/update" {
				t.Fatalf("requests %v", reqs)
			}
			var u protocol.UpdateRequest
			if err := json.Unmarshal(f.body(0), &u); err != nil {
				t.Fatal(err)
			}
			if u.Mode != tt.wantMode || u.YAML != validTask || u.Filename != path {
				t.Errorf("UpdateRequest %+v", u)
			}
		})
	}
}

func TestServeUpdateInvalidTask(t *testing.T) {
	f := newFakeCoordinator(t)
	path := writeTask(t, invalidTask)
	_, _, err := runServe(t, f, false, "", "update", "web", path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":") {
		t.Fatalf("error %v, want one starting with %q", err, path+":")
	}
	if reqs := f.seen(); len(reqs) != 0 {
		t.Fatalf("coordinator was contacted: %v", reqs)
	}
}

func TestServeStatus(t *testing.T) {
	f := newFakeCoordinator(t)
	f.services = []protocol.ServiceStatusView{{Name: "web", Version: 1, Status: protocol.ServiceReady,
		ReadyReplicas: 2, TotalReplicas: 2, Endpoint: "127.0.0.1:30001", UptimeSeconds: 41}}

	out, errOut, err := runServe(t, f, false, "", "status", "web", "api", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if errOut != "warning: service \"api\" not found\n" {
		t.Errorf("stderr %q, want a warning about api", errOut)
	}
	var st protocol.StatusResponse
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("--json output %q: %v", out, err)
	}
	if dec.More() {
		t.Errorf("--json printed more than one object: %q", out)
	}
	if len(st.Services) != 1 || st.Services[0].Name != "web" || st.Replicas == nil {
		t.Errorf("--json status %+v", st)
	}
	if !strings.Contains(out, `"replicas": []`) {
		t.Errorf("--json should print an empty replicas list, not null: %q", out)
	}

	out, _, err = runServe(t, f, false, "", "status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "Services\nNAME  VERSION  UPTIME  STATUS  REPLICAS  ENDPOINT\nweb   1        41s     READY   2/2       127.0.0.1:30001\n") {
		t.Errorf("status table:\n%s", out)
	}
	want := []string{"GET /v1/status?service=web&service=api", "GET /v1/status"}
	if got := f.seen(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("requests %v, want %v", got, want)
	}
}

func TestServeDown(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		services  []string
		missing   string
		goneAfter int
		wantReqs  []string
		wantOut   string
		wantErr   string
	}{
		{name: "one", args: []string{"web"},
			wantReqs: []string{"DELETE /v1/services/web"},
			wantOut:  "Service \"web\" is shutting down.\n"},
		{name: "all", args: []string{"--all"}, services: []string{"a", "b"},
			wantReqs: []string{"GET /v1/status", "DELETE /v1/services/a", "DELETE /v1/services/b"},
			wantOut:  "Service \"a\" is shutting down.\nService \"b\" is shutting down.\n"},
		{name: "all with none", args: []string{"-a"},
			wantReqs: []string{"GET /v1/status"}, wantOut: "No existing services.\n"},
		{name: "not found", args: []string{"ghost"}, missing: "ghost",
			wantReqs: []string{"DELETE /v1/services/ghost"}, wantErr: `service "ghost" does not exist`},
		{name: "one of two not found", args: []string{"ghost", "web"}, missing: "ghost",
			wantReqs: []string{"DELETE /v1/services/ghost", "DELETE /v1/services/web"},
			wantOut:  "Service \"web\" is shutting down.\n",
			wantErr:  `ghost: service "ghost" does not exist`},
		{name: "wait", args: []string{"web", "--wait"}, services: []string{"web"}, goneAfter: 2,
			wantReqs: []string{"DELETE /v1/services/web", "GET /v1/status", "GET /v1/status", "GET /v1/status"},
			wantOut:  "Service \"web\" is shutting down.\nService \"web\" is down.\n"},
		{name: "names and all", args: []string{"web", "--all"}, wantErr: "name services or pass --all, not both"},
		{name: "nothing named", wantErr: "name the services to shut down, or pass --all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCoordinator(t)
			for _, s := range tt.services {
				f.services = append(f.services, protocol.ServiceStatusView{Name: s})
			}
			f.goneAfter = tt.goneAfter
			if tt.missing != "" {
				f.downErr[tt.missing] = protocol.APIError{Code: protocol.CodeNotFound,
					Message: fmt.Sprintf("service %q does not exist", tt.missing)}
			}
			out, _, err := runServe(t, f, false, "", append([]string{"down"}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if out != tt.wantOut {
				t.Errorf("stdout %q, want %q", out, tt.wantOut)
			}
			if got := f.seen(); strings.Join(got, ",") != strings.Join(tt.wantReqs, ",") {
				t.Errorf("requests %v, want %v", got, tt.wantReqs)
			}
		})
	}
}

func TestServeLogs(t *testing.T) {
	const badTail = `for "--tail" flag: want a number of lines from 1 to 100000, like --tail 100`
	tests := []struct {
		name    string
		args    []string
		wantReq string
		wantErr string
	}{
		{name: "follows by default", args: []string{"web", "3"}, wantReq: "GET /v1/services/web/replicas/3/logs?follow=1"},
		{name: "-f", args: []string{"web", "3", "-f"}, wantReq: "GET /v1/services/web/replicas/3/logs?follow=1"},
		{name: "no follow", args: []string{"web", "3", "--no-follow"}, wantReq: "GET /v1/services/web/replicas/3/logs?follow=0"},
		{name: "tail then follow", args: []string{"web", "3", "--tail", "20"}, wantReq: "GET /v1/services/web/replicas/3/logs?follow=1&tail=20"},
		{name: "tail no follow", args: []string{"web", "3", "--tail=5", "--no-follow"}, wantReq: "GET /v1/services/web/replicas/3/logs?follow=0&tail=5"},
		{name: "tail at the limit", args: []string{"--tail", "100000", "web", "3"}, wantReq: "GET /v1/services/web/replicas/3/logs?follow=1&tail=100000"},
		{name: "bad id", args: []string{"web", "x"}, wantErr: `replica id "x": want a positive number`},
		{name: "tail zero", args: []string{"web", "3", "--tail", "0"}, wantErr: `invalid argument "0" ` + badTail},
		{name: "tail negative", args: []string{"web", "3", "--tail=-2"}, wantErr: `invalid argument "-2" ` + badTail},
		{name: "tail too large", args: []string{"web", "3", "--tail", "100001"}, wantErr: `invalid argument "100001" ` + badTail},
		{name: "tail not a number", args: []string{"web", "3", "--tail", "all"}, wantErr: `invalid argument "all" ` + badTail},
		{name: "tail without a value", args: []string{"web", "3", "--tail"}, wantErr: `flag needs an argument: --tail`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCoordinator(t)
			out, _, err := runServe(t, f, false, "", append([]string{"logs"}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q in it", err, tt.wantErr)
				}
				if got := f.seen(); len(got) != 0 {
					t.Errorf("requests %v, want none", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out != "log for /v1/services/web/replicas/3/logs\n" {
				t.Errorf("stdout %q", out)
			}
			if got := f.seen(); len(got) != 1 || got[0] != tt.wantReq {
				t.Errorf("requests %v, want [%s]", got, tt.wantReq)
			}
		})
	}
}

// TestServeLogsHelp checks that the help shows --tail and its examples.
func TestServeLogsHelp(t *testing.T) {
	f := newFakeCoordinator(t)
	out, _, err := runServe(t, f, false, "", "logs", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--tail N", "start at the last N lines, 1 to 100000", "baton serve logs http-server 1 --tail 20 --no-follow"} {
		if !strings.Contains(out, want) {
			t.Errorf("help has no %q:\n%s", want, out)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServeUpMissingWorkdir(t *testing.T) {
	f := newFakeCoordinator(t)
	path := writeTask(t, "workdir: "+filepath.Join(t.TempDir(), "absent")+"\n"+validTask)
	_, _, err := runServe(t, f, false, "", "up", path, "-y")
	if err == nil || !strings.Contains(err.Error(), path+":1: workdir:") || !strings.Contains(err.Error(), "is not a directory") {
		t.Fatalf("error %v, want %q naming the missing workdir", err, path+":1: workdir:")
	}
	if reqs := f.seen(); len(reqs) != 0 {
		t.Fatalf("coordinator was contacted: %v", reqs)
	}
}

// TestServeStatusStale checks the warning on a status answer that may miss
// recent writes, and that --json passes index and stale on.
func TestServeStatusStale(t *testing.T) {
	tests := []struct {
		name    string
		stale   bool
		headers map[string]string
		want    string // the warning on stderr; "" for none
	}{
		{name: "fresh", headers: map[string]string{protocol.HeaderServedBy: "c1", protocol.HeaderKnownLeader: "true"}},
		{name: "no leader", stale: true,
			headers: map[string]string{protocol.HeaderServedBy: "c3", protocol.HeaderKnownLeader: "false", protocol.HeaderStale: "true"},
			want:    "warning: this answer may be stale: coordinator c3 knows no leader (index 1234)\n"},
		{name: "leader silent", stale: true,
			headers: map[string]string{protocol.HeaderServedBy: "c2", protocol.HeaderKnownLeader: "true", protocol.HeaderLastContact: "12345"},
			want:    "warning: this answer may be stale: coordinator c2 last heard from the leader 12.3s ago (index 1234); --consistent asks the leader\n"},
		{name: "stale header alone, no node id", headers: map[string]string{protocol.HeaderStale: "true"},
			want: "warning: this answer may be stale: the coordinator at URL has not heard from the leader lately (index 1234); --consistent asks the leader\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCoordinator(t)
			f.index, f.stale, f.headers = 1234, tt.stale, tt.headers
			f.services = []protocol.ServiceStatusView{{Name: "web", Version: 1, Status: protocol.ServiceReady}}
			out, errOut, err := runServe(t, f, false, "", "status")
			if err != nil {
				t.Fatal(err)
			}
			want := strings.ReplaceAll(tt.want, "URL", f.srv.URL)
			if errOut != want {
				t.Errorf("stderr %q, want %q", errOut, want)
			}
			if !strings.HasPrefix(out, "Services\n") {
				t.Errorf("stdout %q, want the table", out)
			}

			out, errOut, err = runServe(t, f, false, "", "status", "--json")
			if err != nil {
				t.Fatal(err)
			}
			if errOut != "" {
				t.Errorf("--json stderr %q, want none", errOut)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("--json output %q: %v", out, err)
			}
			if got["index"] != float64(1234) {
				t.Errorf("--json index %v, want 1234", got["index"])
			}
			if stale, ok := got["stale"]; tt.stale != (ok && stale == true) {
				t.Errorf("--json stale %v (present %t), want %t", stale, ok, tt.stale)
			}
		})
	}
}

// TestServeStatusConsistent checks that --consistent asks for a consistent
// read.
func TestServeStatusConsistent(t *testing.T) {
	f := newFakeCoordinator(t)
	if _, _, err := runServe(t, f, false, "", "status", "--consistent", "web"); err != nil {
		t.Fatal(err)
	}
	want := "GET /v1/status?consistent=true&service=web"
	if got := f.seen(); len(got) != 1 || got[0] != want {
		t.Errorf("requests %v, want [%s]", got, want)
	}
}

// TestServeAddrList checks that serve takes a list of addresses from
// $BATON_ADDR and --addr, and moves past one that is down.
func TestServeAddrList(t *testing.T) {
	f := newFakeCoordinator(t)
	f.services = []protocol.ServiceStatusView{{Name: "web", Version: 1, Status: protocol.ServiceReady}}
	dead := refusedAddr(t)
	t.Setenv("BATON_ADDR", dead+","+f.srv.URL)
	for _, args := range [][]string{
		{"status"},
		{"--addr", strings.TrimPrefix(dead, "http://") + "," + strings.TrimPrefix(f.srv.URL, "http://"), "status"},
	} {
		c := &serveCLI{stdin: strings.NewReader(""), isTerminal: func() bool { return false }, now: time.Now}
		cmd := c.command()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.Contains(out.String(), "web") {
			t.Errorf("%v: stdout %q, want the status table", args, out.String())
		}
	}
	if got := len(f.seen()); got != 2 {
		t.Errorf("live coordinator saw %d requests, want 2", got)
	}
}
