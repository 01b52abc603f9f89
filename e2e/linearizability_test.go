package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/baton-dev/baton/internal/linearize"
	"github.com/baton-dev/baton/protocol"
)

// TestLinearizableAPIUnderLeaderKills runs clients against three
// coordinators while the leader is killed with SIGKILL and restarted, and
// checks with porcupine that what the clients saw is linearizable: that
// every up, update, down and consistent status can be placed at one
// instant between its call and its answer, in one order that a single
// coordinator would have answered that way (see internal/linearize).
//
// No agents: replicas stay PENDING, and a down of a service with only
// PENDING replicas removes it (the controller deletes replicas that were
// never placed, then the service).
func TestLinearizableAPIUnderLeaderKills(t *testing.T) {
	const (
		clients   = 5
		kills     = 3
		minOps    = 200
		maxOps    = 6000             // the history's bound (the checker's time grows with it)
		runFor    = 40 * time.Second // the clients' bound
		checkFor  = 30 * time.Second // porcupine's bound
		opTimeout = 8 * time.Second  // a request's bound; after it, the outcome is unknown
	)
	names := []string{"lin-a", "lin-b", "lin-c"}
	taskYAML := readFile(t, filepath.Join(workRoot, "examples", "http_server", "task.yaml"))

	fc := newFaultCluster(t, faultOpts{coordinators: 3})
	fc.waitLeader(10 * time.Second)

	h := linearize.NewHistory()
	var skipped atomic.Int64 // refused with nothing done, or reads with no answer
	var violationsMu sync.Mutex
	var violations []string // answers outside the API's contract
	violation := func(format string, args ...any) {
		violationsMu.Lock()
		defer violationsMu.Unlock()
		if len(violations) < 20 {
			violations = append(violations, fmt.Sprintf(format, args...))
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), runFor)
	defer cancel()
	var wg sync.WaitGroup
	for id := range clients {
		c := &linClient{
			id:      id,
			urls:    fc.apiURLs(),
			yaml:    taskYAML,
			timeout: opTimeout,
			http:    &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
			rng:     rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano()))),
		}
		wg.Go(func() {
			for ctx.Err() == nil && h.Len() < maxOps {
				in := linearize.Input{Name: names[c.rng.IntN(len(names))], Consistent: true}
				switch r := c.rng.IntN(100); {
				case r < 25:
					in.Kind = linearize.Up
				case r < 45:
					in.Kind = linearize.Update
				case r < 65:
					in.Kind = linearize.Down
				default:
					in.Kind = linearize.Status
				}
				call := h.Now()
				out, record, problem := c.do(in)
				ret := h.Now()
				if problem != "" {
					violation("client %d %s(%s): %s", id, in.Kind, in.Name, problem)
				}
				if !record {
					skipped.Add(1)
				} else {
					h.Add(id, in, call, out, ret)
				}
				// A short pause, so that calls of different clients
				// interleave in many ways rather than march in step.
				time.Sleep(time.Duration(10+c.rng.IntN(30)) * time.Millisecond)
			}
		})
	}
	clientsDone := make(chan struct{})
	go func() { wg.Wait(); close(clientsDone) }()

	// The nemesis, on the test's goroutine: kill -9 the leader, restart it
	// on its data dir a second or two later, wait until it is back and a
	// leader is agreed, let the clients run a while, again.
	killed := 0
	for killed < kills && ctx.Err() == nil {
		time.Sleep(time.Duration(1500+rand.IntN(1500)) * time.Millisecond)
		leader := fc.waitLeader(15 * time.Second)
		t.Logf("%.1fs: kill -9 %s (history: %d calls)", float64(h.Now())/1e9, leader, h.Len())
		fc.kill9(leader)
		killed++
		time.Sleep(time.Duration(1000+rand.IntN(1000)) * time.Millisecond)
		fc.startNode(leader)
		fc.waitHealthy(leader, 20*time.Second)
		fc.waitLeader(15 * time.Second)
	}
	// Some calls after the last restart, then stop the clients.
	select {
	case <-clientsDone:
	case <-time.After(2 * time.Second):
	}
	cancel()
	<-clientsDone

	ops := h.Operations()
	counts := h.Counts()
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var summary []string
	for _, k := range keys {
		summary = append(summary, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	t.Logf("history: %d calls (%d left out: refused with nothing done, or reads unanswered); %s",
		len(ops), skipped.Load(), strings.Join(summary, " "))
	for _, v := range violations {
		t.Errorf("outside the API contract: %s", v)
	}
	if killed < kills {
		t.Errorf("the leader was killed %d times, want %d (the run's bound, %s, came first)", killed, kills, runFor)
	}
	if len(ops) < minOps {
		t.Fatalf("the history has %d calls, want at least %d", len(ops), minOps)
	}
	// The test must be able to fail: the clients must have changed things.
	for _, k := range []string{"up ok", "update ok", "down ok", "status ok"} {
		if counts[k] == 0 {
			t.Errorf("no %q in the history: the clients did not exercise the API", k)
		}
	}

	start := time.Now()
	res, info := linearize.Check(ops, checkFor)
	t.Logf("porcupine: %s in %s", res, time.Since(start).Round(time.Millisecond))
	if res != porcupine.Ok {
		path := filepath.Join(fc.base.dir, "linearizability.html")
		if err := linearize.Visualize(info, path); err != nil {
			t.Logf("write the visualization: %v", err)
		}
		switch res {
		case porcupine.Illegal:
			t.Errorf("the history is not linearizable; see %s", path)
		default:
			t.Errorf("porcupine could not decide within %s (%s); see %s", checkFor, res, path)
		}
		keepFile(t, path)
	}
}

// keepFile copies a file that a failed test wrote in its temporary
// directory (removed after the test) to the system's temporary directory,
// and logs where.
func keepFile(t *testing.T, path string) {
	t.Helper()
	buf, err := os.ReadFile(path)
	if err != nil {
		return
	}
	ext := filepath.Ext(path)
	f, err := os.CreateTemp("", "baton-"+strings.TrimSuffix(filepath.Base(path), ext)+"-*"+ext)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Write(buf); err == nil {
		t.Logf("%s kept at %s", filepath.Base(path), f.Name())
	}
}

// linClient is one client of the linearizability test.
type linClient struct {
	id      int
	urls    []string // coordinators' APIs; each call picks one
	yaml    string   // the task of every up and update
	timeout time.Duration
	http    *http.Client // no keep-alives: a refused dial is always a fresh one
	rng     *rand.Rand
}

// do makes one call against a random coordinator. record is false when
// the call surely did nothing (refused before anything was done) or is a
// read with no answer. problem is non-empty for an answer outside the
// API's contract.
func (c *linClient) do(in linearize.Input) (out linearize.Output, record bool, problem string) {
	base := c.urls[c.rng.IntN(len(c.urls))]
	var method, path string
	var body any
	switch in.Kind {
	case linearize.Up:
		method, path = http.MethodPost, "/v1/services"
		body = protocol.UpRequest{Name: in.Name, YAML: c.yaml, Filename: "task.yaml", BaseDir: workRoot}
	case linearize.Update:
		method, path = http.MethodPost, "/v1/services/"+in.Name+"/update"
		body = protocol.UpdateRequest{YAML: c.yaml, Filename: "task.yaml", BaseDir: workRoot}
	case linearize.Down:
		method, path = http.MethodDelete, "/v1/services/"+in.Name
	case linearize.Status:
		method, path = http.MethodGet, "/v1/status?service="+url.QueryEscape(in.Name)
		if in.Consistent {
			path += "&consistent"
		}
	}
	var rd io.Reader
	if body != nil {
		buf, err := json.Marshal(body)
		if err != nil {
			panic(err)
		}
		rd = bytes.NewReader(buf)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		panic(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	write := in.Kind != linearize.Status
	unknown := linearize.Output{Result: linearize.Unknown}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return out, false, "" // never sent
		}
		return unknown, write, "" // sent; maybe done
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return unknown, write, ""
	}
	if resp.StatusCode/100 == 2 {
		return c.answer(in, raw)
	}
	var apiErr protocol.APIError
	if err := json.Unmarshal(raw, &apiErr); err != nil {
		return unknown, write, fmt.Sprintf("HTTP %d with a body that is no API error: %.200s", resp.StatusCode, raw)
	}
	switch apiErr.Code {
	case protocol.CodeNoQuorum, protocol.CodeNoLeader, protocol.CodeNotLeader, protocol.CodeCatchingUp:
		return out, false, "" // refused; nothing done
	case protocol.CodeUnavailable:
		return unknown, write, ""
	case protocol.CodeNotFound:
		return linearize.Output{Result: linearize.NotFound}, true, ""
	case protocol.CodeAlreadyExists:
		if in.Kind == linearize.Up {
			return linearize.Output{Result: linearize.AlreadyExists}, true, ""
		}
	case protocol.CodeBadRequest:
		if resp.StatusCode == http.StatusConflict && strings.Contains(apiErr.Message, "is shutting down") &&
			(in.Kind == linearize.Up || in.Kind == linearize.Update) {
			return linearize.Output{Result: linearize.Deleting}, true, ""
		}
	}
	return unknown, write, fmt.Sprintf("HTTP %d %s: %s", resp.StatusCode, apiErr.Code, apiErr.Message)
}

// answer reads a 2xx answer.
func (c *linClient) answer(in linearize.Input, raw []byte) (linearize.Output, bool, string) {
	if in.Kind != linearize.Status {
		var sr protocol.ServiceResponse
		if err := json.Unmarshal(raw, &sr); err != nil || sr.Name != in.Name || sr.Version < 1 {
			return linearize.Output{Result: linearize.Unknown}, true, fmt.Sprintf("a success that is no service response for %s: %.200s", in.Name, raw)
		}
		return linearize.Output{Result: linearize.OK, Version: sr.Version}, true, ""
	}
	var st protocol.StatusResponse
	if err := json.Unmarshal(raw, &st); err != nil {
		return linearize.Output{}, false, fmt.Sprintf("a status that is no StatusResponse: %.200s", raw)
	}
	var problem string
	if in.Consistent && st.Stale {
		problem = "a ?consistent status answered stale: true"
	}
	i := slices.IndexFunc(st.Services, func(s protocol.ServiceStatusView) bool { return s.Name == in.Name })
	if i < 0 {
		return linearize.Output{Result: linearize.NotFound}, true, problem
	}
	s := st.Services[i]
	return linearize.Output{Result: linearize.OK, Version: s.Version, ShuttingDown: s.Status == protocol.ServiceShuttingDown}, true, problem
}
