package main

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/localcluster"
	"github.com/baton-dev/baton/protocol"
)

// detectionResult is how long the coordinators take to see a killed
// agent as not alive, for one way of watching agents.
type detectionResult struct {
	// Kind is "gossip" (--join: gossip and heartbeats) or "heartbeat"
	// (--nats-url, no gossip: heartbeats only, --agent-timeout 5s).
	Kind     string `json:"kind"`
	Settings string `json:"settings"`
	Kills    int    `json:"kills"`
	// Detected is kill -9 of an agent -> GET /v1/agents on the leader
	// shows it alive: false.
	Detected stats `json:"detected"`
}

// agentProc is one agent of the detection cluster.
type agentProc struct {
	id, kind string
	args     []string
}

// detection runs 3 coordinators (the default timings: --agent-timeout
// 5s) with 3 agents that gossip (--join) and 3 that only send heartbeats
// (--nats-url), kills agents of each kind o.agentKills times and
// measures how long until the leader lists them as not alive.
func (b *bench) detection(res *results) (err error) {
	cl, err := b.startCluster("detection", detectHosts)
	defer finish(procsOf(cl), &err)
	if err != nil {
		return err
	}
	join := strings.Join(cl.GossipAddrs(), ",")
	var agents []agentProc
	for i, h := range gossipAgents {
		gp, err := localcluster.PortOn(h, localcluster.GossipPort)
		if err != nil {
			return err
		}
		id := fmt.Sprintf("a%d", i+1)
		agents = append(agents, agentProc{id: id, kind: "gossip", args: []string{"agent", "--id", id, "--host", h,
			"--http-addr", h + ":0", "--gossip-addr", net.JoinHostPort(h, strconv.Itoa(gp)), "--join", join,
			"--dev", "--cpus", "2", "--memory", "2", "--data-dir", filepath.Join(cl.Dir, id)}})
	}
	for i, h := range heartbeatHosts {
		id := fmt.Sprintf("h%d", i+1)
		agents = append(agents, agentProc{id: id, kind: "heartbeat", args: []string{"agent", "--id", id, "--host", h,
			"--http-addr", h + ":0", "--nats-url", cl.NATSURLs(),
			"--dev", "--cpus", "2", "--memory", "2", "--data-dir", filepath.Join(cl.Dir, id)}})
	}
	progress("detection: starting agents: baton %s", strings.Join(agents[0].args, " "))
	progress("detection: and: baton %s", strings.Join(agents[len(agents)-1].args, " "))
	for _, a := range agents {
		if _, err := cl.Start(a.id, a.args...); err != nil {
			return err
		}
	}
	for _, a := range agents {
		if err := b.waitAgentUp(cl, a, 30*time.Second); err != nil {
			return err
		}
	}
	for _, kind := range []struct{ name, settings string }{
		{"gossip", "--join (gossip probes every 500ms, and heartbeats)"},
		{"heartbeat", "--nats-url, no gossip: heartbeats only, --agent-timeout 5s"},
	} {
		var of []agentProc
		for _, a := range agents {
			if a.kind == kind.name {
				of = append(of, a)
			}
		}
		r := detectionResult{Kind: kind.name, Settings: kind.settings}
		var took []time.Duration
		stop := time.Now().Add(60 * time.Second)
		for k := range b.o.agentKills {
			if err := b.outOfTime(); err != nil {
				return err
			}
			if time.Now().After(stop) {
				progress("detection %s: stopping after %d kills (60s spent)", kind.name, k)
				break
			}
			a := of[k%len(of)]
			d, err := b.killAgent(cl, a)
			if err != nil {
				return err
			}
			took = append(took, d)
			progress("detection %s: kill %d of %s: not alive after %s", kind.name, k+1, a.id, Duration(d))
			if _, err := cl.Restart(a.id); err != nil {
				return err
			}
			if err := b.waitAgentUp(cl, a, 30*time.Second); err != nil {
				return err
			}
		}
		r.Kills, r.Detected = len(took), summarize(took, true)
		res.Detection = append(res.Detection, r)
	}
	return nil
}

// leaderAPI is the API address of the cluster's leader.
func leaderAPI(cl *localcluster.Cluster) (string, error) {
	c, ok := cl.Coord(cl.LeaderID())
	if !ok {
		return "", errors.New("no leader")
	}
	return c.API, nil
}

// agentAlive says whether the leader lists agent id as alive (and, for
// an agent that gossips, whether its gossip member is alive).
func (b *bench) agentAlive(api string, a agentProc) (bool, error) {
	var agents []protocol.Agent
	if err := getJSON(b.ctx, api, "/v1/agents", 2*time.Second, &agents); err != nil {
		return false, err
	}
	alive := false
	for _, ag := range agents {
		if ag.ID == a.id {
			alive = ag.Alive
		}
	}
	if !alive || a.kind != "gossip" {
		return alive, nil
	}
	var m protocol.MembersResponse
	if err := getJSON(b.ctx, api, "/v1/operator/members", 2*time.Second, &m); err != nil {
		return false, err
	}
	for _, mem := range m.Members {
		if mem.Role == "agent" && mem.ID == a.id {
			return mem.Status == "alive", nil
		}
	}
	return false, nil
}

// waitAgentUp waits until the leader lists the agent alive.
func (b *bench) waitAgentUp(cl *localcluster.Cluster, a agentProc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	err := errors.New("listed not alive")
	for time.Now().Before(deadline) && b.ctx.Err() == nil {
		api, lerr := leaderAPI(cl)
		if lerr != nil {
			err = lerr
		} else if alive, aerr := b.agentAlive(api, a); aerr != nil {
			err = aerr
		} else if alive {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("agent %s not listed alive within %s (%v)", a.id, timeout, err)
}

// killAgent kill -9s an agent and returns how long until the leader's
// GET /v1/agents shows it not alive (at most 30 s).
func (b *bench) killAgent(cl *localcluster.Cluster, a agentProc) (time.Duration, error) {
	api, err := leaderAPI(cl)
	if err != nil {
		return 0, err
	}
	p := cl.Proc(a.id)
	start := time.Now()
	p.Kill9()
	for time.Since(start) < 30*time.Second && b.ctx.Err() == nil {
		var agents []protocol.Agent
		if err := getJSON(b.ctx, api, "/v1/agents", 2*time.Second, &agents); err == nil {
			for _, ag := range agents {
				if ag.ID == a.id && !ag.Alive {
					return time.Since(start), nil
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := b.outOfTime(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("agent %s killed: still listed alive after 30s", a.id)
}
