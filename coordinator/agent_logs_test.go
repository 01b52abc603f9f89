package coordinator_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/agent"
	"github.com/baton-dev/baton/coordinator"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// logsCluster is a coordinator and agents in this process (real Raft,
// NATS, agents' HTTP servers and replica processes), all holding
// certificates of one CA when pki is set.
type logsCluster struct {
	t     *testing.T
	pki   *testutil.PKI // nil: plain HTTP everywhere
	coord *coordinator.Server
	api   string       // the coordinator's base URL
	cli   *http.Client // the CLI's: trusts the CA, holds no certificate
	ctx   context.Context

	mu     sync.Mutex
	agents map[string]*runningAgent
	wg     sync.WaitGroup
}

type runningAgent struct {
	stop func()
	done chan struct{}
	err  error // Run's, once done is closed
}

func newLogsCluster(t *testing.T, pki *testutil.PKI) *logsCluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &logsCluster{t: t, pki: pki, ctx: ctx, agents: map[string]*runningAgent{}}
	cfg := coordinator.DevConfig()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	cfg.NATSPort = -1
	cfg.FirstLBPort = testutil.FreePort(t, "127.0.0.1")
	cfg.RaftTimeout = 50 * time.Millisecond
	cfg.ReconcileInterval = 50 * time.Millisecond
	cfg.AgentTimeout = 2 * time.Second
	c.cli, c.api = http.DefaultClient, "http://"
	if pki != nil {
		cfg.TLS = pki.Cert(tlsutil.RoleCoordinator, "c1")
		c.cli, c.api = httpsClient(t, tlsutil.Files{CA: pki.CACert}), "https://"
	}
	coord, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.coord = coord
	c.api += coord.HTTPAddr()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := coord.Run(ctx); err != nil {
			t.Errorf("coordinator: %v", err)
		}
	}()
	t.Cleanup(func() {
		c.mu.Lock()
		ids := make([]string, 0, len(c.agents))
		for id := range c.agents {
			ids = append(ids, id)
		}
		c.mu.Unlock()
		for _, id := range ids {
			c.stopAgent(id)
		}
		cancel()
		c.wg.Wait()
	})
	return c
}

// startAgent runs agent id, its HTTP server on httpAddr, with its own
// certificate when the cluster has a CA.
func (c *logsCluster) startAgent(id, httpAddr string) {
	c.t.Helper()
	cfg := agent.DevConfig()
	cfg.ID = id
	cfg.NATSURL = c.coord.NATSURL()
	cfg.HTTPAddr = httpAddr
	cfg.DataDir = c.t.TempDir()
	cfg.CPUs, cfg.MemoryGB = 4, 4
	cfg.HeartbeatInterval = 200 * time.Millisecond
	cfg.ProbeInterval = 100 * time.Millisecond
	cfg.StopGrace = time.Second
	if c.pki != nil {
		cfg.TLS = c.pki.Cert(tlsutil.RoleAgent, id)
	}
	a, err := agent.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	ra := &runningAgent{stop: cancel, done: make(chan struct{})}
	c.mu.Lock()
	c.agents[id] = ra
	c.mu.Unlock()
	go func() {
		defer close(ra.done)
		ra.err = a.Run(ctx)
	}()
}

// stopAgent stops agent id and waits until its Run has returned (its HTTP
// server is closed then).
func (c *logsCluster) stopAgent(id string) {
	c.t.Helper()
	c.mu.Lock()
	ra := c.agents[id]
	delete(c.agents, id)
	c.mu.Unlock()
	if ra == nil {
		return
	}
	ra.stop()
	select {
	case <-ra.done:
		if ra.err != nil {
			c.t.Errorf("agent %s: %v", id, ra.err)
		}
	case <-time.After(20 * time.Second):
		c.t.Errorf("agent %s did not stop within 20s", id)
	}
}

// get sends GET path to the coordinator and returns the answer.
func (c *logsCluster) get(path string) (int, string, error) {
	resp, err := c.cli.Get(c.api + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// agentAddr waits until agent id is alive and returns its HTTP address.
func (c *logsCluster) agentAddr(id string) string {
	c.t.Helper()
	var addr string
	testutil.WaitFor(c.t, 15*time.Second, func() error {
		code, body, err := c.get("/v1/agents")
		if err != nil || code != 200 {
			return fmt.Errorf("GET /v1/agents: %d %s %v", code, body, err)
		}
		var agents []protocol.Agent
		if err := json.Unmarshal([]byte(body), &agents); err != nil {
			return err
		}
		for _, a := range agents {
			if a.ID == id && a.Alive {
				addr = a.Address
				return nil
			}
		}
		return fmt.Errorf("agent %s not alive: %+v", id, agents)
	})
	return addr
}

// waitLog waits until replica id's log, fetched through the coordinator,
// holds want.
func (c *logsCluster) waitLog(id int, want string) {
	c.t.Helper()
	path := fmt.Sprintf("/v1/services/web/replicas/%d/logs?follow=0", id)
	testutil.WaitFor(c.t, 30*time.Second, func() error {
		code, body, err := c.get(path)
		if err != nil || code != 200 || !strings.Contains(body, want) {
			return fmt.Errorf("GET %s: %d %q %v; want 200 with %q", path, code, body, err, want)
		}
		return nil
	})
}

// markerTask runs the example server after printing
// "log-of-replica-<id>".
func markerTask(t *testing.T) string {
	return task(t, 1, 1, "1", "echo log-of-replica-$BATON_REPLICA_ID && exec python3 "+exampleServer(t)+" --port $PORT")
}

// `baton serve logs` reads a replica's log through the coordinator, which
// fetches it from the agent: over plain HTTP in dev, and over mutual TLS
// when the cluster has a CA (the agent then serves logs to coordinators
// only). A followed log streams through too.
func TestLogsThroughCoordinator(t *testing.T) {
	tests := []struct {
		name string
		tls  bool
	}{
		{name: "plain http", tls: false},
		{name: "mutual tls", tls: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pki *testutil.PKI
			if tt.tls {
				pki = testutil.NewPKI(t)
			}
			c := newLogsCluster(t, pki)
			c.startAgent("agent-1", "127.0.0.1:0")
			addr := c.agentAddr("agent-1")
			up := protocol.UpRequest{Name: "web", YAML: markerTask(t), Filename: "web.yaml"}
			if code, body, err := call(t, c.cli, "POST", c.api+"/v1/services", up); err != nil || code != http.StatusCreated {
				t.Fatalf("up: %d %s %v", code, body, err)
			}
			c.waitLog(1, "log-of-replica-1\n")

			// The agent is reached the way the cluster is configured: with
			// TLS it no longer answers plain HTTP, and answers a client
			// without a coordinator's certificate 401.
			if tt.tls {
				resp, err := http.Get("http://" + addr + "/v1/replicas/web/1/logs")
				if err == nil {
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("plain http to the agent: %v %v; want 400", resp, err)
				}
				code, body, err := call(t, httpsClient(t, tlsutil.Files{CA: pki.CACert}), "GET", "https://"+addr+"/v1/replicas/web/1/logs", nil)
				if err != nil || code != http.StatusUnauthorized || strings.Contains(string(body), "log-of-replica") {
					t.Fatalf("https to the agent without a certificate: %d %s %v; want 401 without the log", code, body, err)
				}
			}

			// Followed: the first lines arrive while the stream stays open.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", c.api+"/v1/services/web/replicas/1/logs?follow=1&tail=5", nil)
			resp, err := c.cli.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("follow: %d %s", resp.StatusCode, b)
			}
			sc := bufio.NewScanner(resp.Body)
			found := false
			for !found && sc.Scan() {
				found = sc.Text() == "log-of-replica-1"
			}
			if !found {
				t.Fatalf("followed log ended without the marker: %v", sc.Err())
			}
		})
	}
}

// An agent's address is not its identity. When another agent takes the
// address of the one a replica was on, the coordinator refuses its
// answer: the certificate names another node, so it fails with a clear
// 502 rather than stream the wrong agent's data. The new agent's own
// replica's log is fetched from it, at the same address.
func TestLogsRefuseAnotherAgentsCertificate(t *testing.T) {
	c := newLogsCluster(t, testutil.NewPKI(t))
	c.startAgent("agent-1", "127.0.0.1:0")
	addr := c.agentAddr("agent-1")
	up := protocol.UpRequest{Name: "web", YAML: markerTask(t), Filename: "web.yaml"}
	if code, body, err := call(t, c.cli, "POST", c.api+"/v1/services", up); err != nil || code != http.StatusCreated {
		t.Fatalf("up: %d %s %v", code, body, err)
	}
	c.waitLog(1, "log-of-replica-1\n")

	// agent-1 stops (its replica 1 fails and stays listed, still on
	// agent-1 at addr); agent-2 starts on the same address.
	c.stopAgent("agent-1")
	c.startAgent("agent-2", addr)
	if got := c.agentAddr("agent-2"); got != addr {
		t.Fatalf("agent-2 at %s, want agent-1's address %s", got, addr)
	}
	code, body, err := c.get("/v1/services/web/replicas/1/logs?follow=0")
	var apiErr protocol.APIError
	if err != nil || code != http.StatusBadGateway || json.Unmarshal([]byte(body), &apiErr) != nil {
		t.Fatalf("logs of replica 1, on agent-1, with agent-2 at its address: %d %s %v; want 502", code, body, err)
	}
	for _, want := range []string{
		"refused to fetch logs from agent agent-1 at " + addr,
		`the server there holds the certificate of agent "agent-2", not of agent "agent-1"`,
	} {
		if !strings.Contains(apiErr.Message, want) {
			t.Errorf("message %q; want it to contain %q", apiErr.Message, want)
		}
	}
	if apiErr.Code != protocol.CodeUnavailable {
		t.Errorf("code %q, want %q", apiErr.Code, protocol.CodeUnavailable)
	}

	// Replica 1's replacement runs on agent-2: its log comes from there.
	c.waitLog(2, "log-of-replica-2\n")
}
