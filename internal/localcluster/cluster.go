package localcluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// Coordinator is one coordinator of a local cluster: where it listens
// and the `baton coordinator` flags that start it.
type Coordinator struct {
	ID, Host string
	// API, Raft and Gossip are host:port (Gossip "" for a lone node).
	API, Raft, Gossip string
	// NATS is its embedded NATS server's client URL.
	NATS    string
	DataDir string
	Args    []string
}

// The usual ports, taken on each host where free.
const (
	APIPort         = 7400
	RaftPort        = 7401
	GossipPort      = 7402
	NATSPort        = 4222
	NATSClusterPort = 6222
)

// Coordinators lays out one coordinator per host (c1, c2, ...), each
// with the usual ports on its host where they are free (TCP and UDP),
// others otherwise, and its data dir under dir, with the flags users give:
//
//	coordinator --node-id c1 --data-dir D --http-addr H:7400 --raft-addr H:7401
//	  --nats-host H --nats-port 4222 --insecure
//	  --gossip-addr H:7402 --nats-cluster-port 6222
//	  --bootstrap-expect 3 --join H1:7402,H2:7402,H3:7402 extra...
//
// Several hosts bootstrap together over gossip; one host is a lone node
// (--bootstrap, the default: no gossip, no NATS cluster port). A local
// cluster runs without TLS and ACLs, on the loopback addresses its callers
// give, so every coordinator gets --insecure (a coordinator refuses to
// start open without it, or --dev). extra is added to every coordinator's
// flags (e.g. --raft-timeout 300ms).
func Coordinators(hosts []string, dir string, extra ...string) ([]Coordinator, error) {
	type ports struct{ api, raft, gossip, nats, cluster int }
	all := make([]ports, len(hosts))
	var gossip []string
	for i, h := range hosts {
		for _, p := range []struct {
			dst  *int
			want int
		}{{&all[i].api, APIPort}, {&all[i].raft, RaftPort}, {&all[i].gossip, GossipPort}, {&all[i].nats, NATSPort}, {&all[i].cluster, NATSClusterPort}} {
			port, err := PortOn(h, p.want)
			if err != nil {
				return nil, err
			}
			*p.dst = port
		}
		gossip = append(gossip, net.JoinHostPort(h, strconv.Itoa(all[i].gossip)))
	}
	cs := make([]Coordinator, len(hosts))
	for i, h := range hosts {
		c := Coordinator{
			ID:      fmt.Sprintf("c%d", i+1),
			Host:    h,
			API:     net.JoinHostPort(h, strconv.Itoa(all[i].api)),
			Raft:    net.JoinHostPort(h, strconv.Itoa(all[i].raft)),
			NATS:    "nats://" + net.JoinHostPort(h, strconv.Itoa(all[i].nats)),
			DataDir: filepath.Join(dir, fmt.Sprintf("c%d", i+1)),
		}
		c.Args = []string{"coordinator", "--node-id", c.ID, "--data-dir", c.DataDir,
			"--http-addr", c.API, "--raft-addr", c.Raft,
			"--nats-host", h, "--nats-port", strconv.Itoa(all[i].nats), "--insecure"}
		if len(hosts) > 1 {
			c.Gossip = gossip[i]
			c.Args = append(c.Args, "--gossip-addr", c.Gossip,
				"--nats-cluster-port", strconv.Itoa(all[i].cluster),
				"--bootstrap-expect", strconv.Itoa(len(hosts)), "--join", strings.Join(gossip, ","))
		}
		c.Args = append(c.Args, extra...)
		cs[i] = c
	}
	return cs, nil
}

// Cluster is a set of coordinators run as separate processes.
type Cluster struct {
	*Procs
	Coords []Coordinator
	// Client bounds every call: a coordinator that was killed must not
	// hold a poll up. Default a 3 s timeout.
	Client *http.Client
}

// NewCluster returns a cluster of coords started by procs.
func NewCluster(procs *Procs, coords []Coordinator) *Cluster {
	return &Cluster{Procs: procs, Coords: coords, Client: &http.Client{Timeout: 3 * time.Second}}
}

// Coord returns the coordinator with that id.
func (c *Cluster) Coord(id string) (Coordinator, bool) {
	for _, co := range c.Coords {
		if co.ID == id {
			return co, true
		}
	}
	return Coordinator{}, false
}

// StartCoordinator starts (or restarts, with its data dir) coordinator id.
func (c *Cluster) StartCoordinator(id string) error {
	co, ok := c.Coord(id)
	if !ok {
		return fmt.Errorf("no coordinator %q", id)
	}
	_, err := c.Start(id, co.Args...)
	return err
}

// StartAll starts every coordinator.
func (c *Cluster) StartAll() error {
	for _, co := range c.Coords {
		if err := c.StartCoordinator(co.ID); err != nil {
			return err
		}
	}
	return nil
}

// Running returns the coordinators whose process runs.
func (c *Cluster) Running() []Coordinator {
	var out []Coordinator
	for _, co := range c.Coords {
		if c.Procs.Running(co.ID) {
			out = append(out, co)
		}
	}
	return out
}

// APIs returns every coordinator's API URL, http://host:port.
func (c *Cluster) APIs() []string {
	out := make([]string, len(c.Coords))
	for i, co := range c.Coords {
		out[i] = "http://" + co.API
	}
	return out
}

// GossipAddrs returns the coordinators' gossip addresses (for --join).
func (c *Cluster) GossipAddrs() []string {
	var out []string
	for _, co := range c.Coords {
		if co.Gossip != "" {
			out = append(out, co.Gossip)
		}
	}
	return out
}

// NATSURLs returns the coordinators' NATS URLs, comma-separated (for
// --nats-url).
func (c *Cluster) NATSURLs() string {
	urls := make([]string, len(c.Coords))
	for i, co := range c.Coords {
		urls[i] = co.NATS
	}
	return strings.Join(urls, ",")
}

// GetFrom decodes GET path from one coordinator's API.
func (c *Cluster) GetFrom(co Coordinator, path string, v any) error {
	resp, err := c.Client.Get("http://" + co.API + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s from %s: %s", path, co.ID, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Get decodes GET path from the first running coordinator that answers.
func (c *Cluster) Get(path string, v any) error {
	err := errors.New("no coordinator is running")
	for _, co := range c.Running() {
		if err = c.GetFrom(co, path, v); err == nil {
			return nil
		}
	}
	return err
}

// Peers asks the running coordinators in turn for the Raft peers.
func (c *Cluster) Peers() (protocol.RaftPeersResponse, error) {
	var resp protocol.RaftPeersResponse
	err := c.Get("/v1/operator/raft/peers", &resp)
	return resp, err
}

// LeaderOf returns the leader a peers answer names ("" if none).
func LeaderOf(p protocol.RaftPeersResponse) string {
	for _, peer := range p.Peers {
		if peer.State == "leader" {
			return peer.ID
		}
	}
	return ""
}

// LeaderID is the leader a running coordinator names ("" if none).
func (c *Cluster) LeaderID() string {
	p, err := c.Peers()
	if err != nil {
		return ""
	}
	return LeaderOf(p)
}

// WaitPeers waits until the cluster has n peers, one leader and the
// others followers (as the first running coordinator that answers sees
// them).
func (c *Cluster) WaitPeers(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		p, err := c.Peers()
		leaders, reachable := 0, 0
		for _, peer := range p.Peers {
			if peer.State == "leader" {
				leaders++
			}
			if peer.State == "leader" || peer.State == "follower" {
				reachable++
			}
		}
		if err == nil && len(p.Peers) == n && leaders == 1 && reachable == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the coordinators did not form a cluster of %d with a leader within %s (peers %+v, %v)", n, timeout, p.Peers, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitHealthy waits until every coordinator answers /healthz 200 (a
// leader known, its log replayed, NATS connected), and each names the
// same leader among len(Coords) peers, each of them a leader or a
// follower in its own eyes.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var why string
	for {
		if why = c.unhealthy(); why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the %d coordinators were not all healthy within %s: %s", len(c.Coords), timeout, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unhealthy says why the cluster is not healthy, or "".
func (c *Cluster) unhealthy() string {
	leader := ""
	for _, co := range c.Coords {
		resp, err := c.Client.Get("http://" + co.API + "/healthz")
		if err != nil {
			return fmt.Sprintf("%s: %v", co.ID, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Sprintf("%s: /healthz %s", co.ID, resp.Status)
		}
		var p protocol.RaftPeersResponse
		if err := c.GetFrom(co, "/v1/operator/raft/peers", &p); err != nil {
			return err.Error()
		}
		if len(p.Peers) != len(c.Coords) {
			return fmt.Sprintf("%s sees %d raft peers", co.ID, len(p.Peers))
		}
		l := LeaderOf(p)
		if l == "" || (leader != "" && l != leader) {
			return fmt.Sprintf("%s names leader %q, another %q", co.ID, l, leader)
		}
		leader = l
		for _, peer := range p.Peers {
			if peer.ID == co.ID && peer.State != "leader" && peer.State != "follower" {
				return fmt.Sprintf("%s is %s", co.ID, peer.State)
			}
		}
	}
	return ""
}
