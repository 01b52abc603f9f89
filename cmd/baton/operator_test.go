package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/baton-dev/baton/protocol"
)

// peersJSON and membersJSON are answers as a coordinator sends them
// (compact, with a field this CLI does not know).
const (
	peersJSON = `{"peers":[{"id":"c1","address":"127.0.0.1:7401","state":"leader","voter":true},` +
		`{"id":"c2","address":"127.0.0.2:7401","state":"follower","voter":true},` +
		`{"id":"c3","address":"127.0.0.3:7401","state":"unreachable","voter":false}],"future_field":1}`
	membersJSON = `{"members":[` +
		`{"name":"coordinator/c1","role":"coordinator","id":"c1","address":"127.0.0.1:7402","status":"alive","api":"127.0.0.1:7400","nats":"nats://127.0.0.1:4222","raft":"127.0.0.1:7401"},` +
		`{"name":"agent/agent-1","role":"agent","id":"agent-1","address":"127.0.0.11:7402","status":"failed","api":"127.0.0.11:7405"},` +
		`{"name":"lb/lb-1","role":"lb","id":"lb-1","address":"127.0.0.21:7402","status":"left"}]}`
)

// operatorServer stands in for a coordinator's operator endpoints and
// records the requests.
type operatorServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string
}

func newOperatorServer(t *testing.T) *operatorServer {
	t.Helper()
	o := &operatorServer{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.seen = append(o.seen, r.Method+" "+r.URL.EscapedPath())
		o.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/operator/raft/peers":
			fmt.Fprint(w, peersJSON)
		case r.Method == http.MethodGet && r.URL.Path == "/v1/operator/members":
			fmt.Fprint(w, membersJSON)
		case r.Method == http.MethodDelete && r.URL.Path == "/v1/operator/raft/peers/c3":
			fmt.Fprint(w, `{"removed":"c3"}`)
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(protocol.APIError{Code: protocol.CodeNotFound,
				Message: fmt.Sprintf("%s is not a Raft peer (peers: c1, c2, c3)", strings.TrimPrefix(r.URL.Path, "/v1/operator/raft/peers/"))})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *operatorServer) requests() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.seen...)
}

// runOperator runs `baton operator --addr addr args...`.
func runOperator(t *testing.T, addr string, args ...string) (string, string, error) {
	t.Helper()
	cmd := newOperatorCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"--addr", addr}, args...))
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestOperatorCommands(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantOut string
		wantReq string // "" means no request
		wantErr string
	}{
		{name: "list-peers table", args: []string{"raft", "list-peers"},
			wantOut: "ID  ADDRESS         STATE        VOTER\n" +
				"c1  127.0.0.1:7401  leader       true\n" +
				"c2  127.0.0.2:7401  follower     true\n" +
				"c3  127.0.0.3:7401  unreachable  false\n",
			wantReq: "GET /v1/operator/raft/peers"},
		{name: "list-peers json", args: []string{"raft", "list-peers", "--json"},
			wantOut: indented(peersJSON), wantReq: "GET /v1/operator/raft/peers"},
		{name: "list-peers takes no arguments", args: []string{"raft", "list-peers", "c1"},
			wantErr: `list-peers takes no arguments, got "c1"`},
		{name: "remove-peer", args: []string{"raft", "remove-peer", "c3"},
			wantOut: "removed peer c3\n", wantReq: "DELETE /v1/operator/raft/peers/c3"},
		{name: "remove-peer not a peer", args: []string{"raft", "remove-peer", "c9"},
			wantErr: "c9 is not a Raft peer (peers: c1, c2, c3)", wantReq: "DELETE /v1/operator/raft/peers/c9"},
		{name: "remove-peer needs an id", args: []string{"raft", "remove-peer"},
			wantErr: "remove-peer takes exactly one peer ID, got 0 arguments"},
		{name: "remove-peer takes one id", args: []string{"raft", "remove-peer", "c2", "c3"},
			wantErr: "remove-peer takes exactly one peer ID, got 2 arguments"},
		{name: "remove-peer empty id", args: []string{"raft", "remove-peer", " "},
			wantErr: "remove-peer takes exactly one peer ID"},
		{name: "members table", args: []string{"members"},
			wantOut: "NAME            ROLE         ID       ADDRESS          STATUS  API\n" +
				"coordinator/c1  coordinator  c1       127.0.0.1:7402   alive   127.0.0.1:7400\n" +
				"agent/agent-1   agent        agent-1  127.0.0.11:7402  failed  127.0.0.11:7405\n" +
				"lb/lb-1         lb           lb-1     127.0.0.21:7402  left    -\n",
			wantReq: "GET /v1/operator/members"},
		{name: "members json", args: []string{"members", "--json"},
			wantOut: indented(membersJSON), wantReq: "GET /v1/operator/members"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newOperatorServer(t)
			out, _, err := runOperator(t, o.srv.URL, tt.args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q in it", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if out != tt.wantOut {
				t.Errorf("stdout\n%s\nwant\n%s", out, tt.wantOut)
			}
			got := o.requests()
			if tt.wantReq == "" && len(got) != 0 || tt.wantReq != "" && (len(got) != 1 || got[0] != tt.wantReq) {
				t.Errorf("requests %v, want [%s]", got, tt.wantReq)
			}
		})
	}
}

// TestOperatorJSONIsTheServers checks that --json prints the server's
// answer field for field, fields unknown to this CLI included.
func TestOperatorJSONIsTheServers(t *testing.T) {
	o := newOperatorServer(t)
	out, _, err := runOperator(t, o.srv.URL, "raft", "list-peers", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	json.Unmarshal([]byte(peersJSON), &want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("--json printed %v, want %v", got, want)
	}
}

// TestOperatorFailsOver checks that operator commands take an address list
// and move past a dead coordinator.
func TestOperatorFailsOver(t *testing.T) {
	o := newOperatorServer(t)
	out, _, err := runOperator(t, refusedAddr(t)+","+o.srv.URL, "raft", "list-peers")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "c1  127.0.0.1:7401  leader") {
		t.Errorf("stdout %q", out)
	}
}

// indented is s as writeRawJSON prints it.
func indented(s string) string {
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(s), "", "  "); err != nil {
		panic(err)
	}
	return b.String() + "\n"
}
