package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/protocol"
)

// The coordinator cluster: coordinators find each other over gossip
// (internal/membership), bootstrap Raft together once --bootstrap-expect
// of them are there, route their embedded NATS servers to each other, and
// the leader adds a coordinator that joins later as a voter.

// startGossip joins the gossip pool, when this coordinator is clustered
// or has a gossip address of its own.
func (s *Server) startGossip() error {
	if !s.cfg.Clustered() && s.cfg.GossipAddr == "" {
		return nil
	}
	addr := s.cfg.GossipAddr
	if addr == "" {
		// In a cluster: the host others reach Raft at, the usual port.
		host, _, _ := net.SplitHostPort(s.cfg.RaftAddr)
		addr = net.JoinHostPort(host, "7402")
	}
	raftHost, _, _ := net.SplitHostPort(s.cfg.RaftAddr)
	meta := membership.Meta{
		Role:   membership.RoleCoordinator,
		ID:     s.cfg.NodeID,
		API:    advertised(s.HTTPAddr(), raftHost),
		Raft:   s.cfg.RaftAddr,
		NATS:   advertisedURL(s.NATSURL(), raftHost),
		Expect: s.cfg.BootstrapExpect,
	}
	if s.natsSrv != nil {
		meta.NATSCluster = advertisedURL(s.natsSrv.ClusterURL(), raftHost)
	}
	pool, err := membership.New(membership.Config{
		Meta: meta, BindAddr: addr, Join: s.cfg.Join,
		Logger:    s.log.With("component", "gossip"),
		SecretKey: s.cfg.GossipKey,
	})
	if err != nil {
		return fmt.Errorf("gossip on %s: %w", addr, err)
	}
	s.pool = pool
	return nil
}

// advertised is a bound address as others reach it: an unspecified host
// (0.0.0.0, ::) is replaced by host (the --raft-addr host, which Raft
// already requires others to reach).
func advertised(bound, host string) string {
	h, port, err := net.SplitHostPort(bound)
	if err != nil || host == "" {
		return bound
	}
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort(host, port)
	}
	return bound
}

// advertisedURL is advertised for a scheme://host:port URL.
func advertisedURL(u, host string) string {
	scheme, addr, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	return scheme + "://" + advertised(addr, host)
}

// watchCluster follows the gossip pool: it keeps the NATS routes pointed
// at every coordinator, bootstraps Raft once enough coordinators are
// there, and, on the leader, adds new coordinators as voters and wakes
// the controller when an agent or LB fails. It runs until ctx ends.
func (s *Server) watchCluster(ctx context.Context) {
	if s.pool == nil {
		return
	}
	changes, cancel := s.pool.Subscribe()
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		s.syncRoutes()
		if s.awaitingBootstrap() {
			s.tryBootstrap(ctx)
		}
		if s.IsLeader() {
			s.addVoters()
			s.Kick() // an agent or LB may have failed or come back
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-tick.C:
		}
	}
}

// syncRoutes points the embedded NATS server at every coordinator's
// server that gossip knows of (alive or not: a route to a failed one is
// retried until it is back).
func (s *Server) syncRoutes() {
	if s.natsSrv == nil || s.natsSrv.ClusterURL() == "" {
		return
	}
	var urls []string
	for _, m := range s.pool.Members() {
		if m.Meta.Role == membership.RoleCoordinator && m.Meta.NATSCluster != "" && m.Status != membership.StatusLeft {
			urls = append(urls, m.Meta.NATSCluster)
		}
	}
	if err := s.natsSrv.SetRoutes(urls); err != nil {
		s.log.Warn("nats routes", "error", err)
	}
}

// awaitingBootstrap says whether this node waits for --bootstrap-expect
// coordinators: it was given the flag and has no Raft state yet.
func (s *Server) awaitingBootstrap() bool {
	return s.cfg.BootstrapExpect > 0 && !s.bootstrapped.Load()
}

// tryBootstrap bootstraps Raft with every coordinator gossip shows once
// there are BootstrapExpect of them, all expecting the same number, and
// none of them is already part of a cluster (a node that joins an
// existing cluster is added by its leader instead).
func (s *Server) tryBootstrap(ctx context.Context) {
	if f := s.raft.raft.GetConfiguration(); f.Error() == nil && len(f.Configuration().Servers) > 0 {
		s.bootstrapped.Store(true) // a leader added this node
		return
	}
	if s.cfg.BootstrapExpect > 1 && !s.pool.Joined() {
		s.logLimited("bootstrap-wait", "waiting to join the gossip pool before bootstrapping", "expect", s.cfg.BootstrapExpect)
		return
	}
	// Only coordinators that expect the same number bootstrap together; one
	// started with --join alone waits to be added by the leader.
	var peers []membership.Member
	for _, m := range s.pool.Alive(membership.RoleCoordinator) {
		switch {
		case m.Meta.Expect == 0:
			continue
		case m.Meta.Expect != s.cfg.BootstrapExpect:
			s.logLimited("bootstrap-expect-mismatch", "coordinators disagree on --bootstrap-expect; not bootstrapping",
				"node_id", m.Meta.ID, "theirs", m.Meta.Expect, "ours", s.cfg.BootstrapExpect)
			return
		case m.Meta.Raft == "":
			return
		}
		peers = append(peers, m)
	}
	if len(peers) < s.cfg.BootstrapExpect {
		s.logLimited("bootstrap-wait", "waiting for coordinators to bootstrap the cluster",
			"found", len(peers), "expect", s.cfg.BootstrapExpect)
		return
	}
	if len(peers) > s.cfg.BootstrapExpect {
		// Which N would be a guess, and two guesses make two clusters.
		s.logLimited("bootstrap-too-many", "more coordinators expect to bootstrap than --bootstrap-expect says; not bootstrapping (start them with the same, right number)",
			"found", len(peers), "expect", s.cfg.BootstrapExpect)
		return
	}
	// A cluster that already runs (this node was wiped, or came late) must
	// not get a second configuration: ask every peer for its own.
	for _, m := range peers {
		if m.Meta.ID == s.cfg.NodeID {
			continue
		}
		n, err := s.peerCount(ctx, m.Meta.API)
		if err != nil {
			s.logLimited("bootstrap-ask", "cannot ask a coordinator for its raft peers; waiting", "node_id", m.Meta.ID, "error", err)
			return
		}
		if n > 0 {
			s.log.Info("a raft cluster already exists; waiting to be added by its leader", "node_id", m.Meta.ID)
			s.bootstrapped.Store(true)
			return
		}
	}
	conf := raft.Configuration{}
	for _, m := range peers {
		conf.Servers = append(conf.Servers, raft.Server{
			Suffrage: raft.Voter, ID: raft.ServerID(m.Meta.ID), Address: raft.ServerAddress(m.Meta.Raft),
		})
	}
	slices.SortFunc(conf.Servers, func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) })
	if err := s.raft.raft.BootstrapCluster(conf).Error(); err != nil {
		if err == raft.ErrCantBootstrap {
			s.bootstrapped.Store(true) // it has state after all
			return
		}
		s.log.Error("bootstrap raft", "error", err)
		return
	}
	ids := make([]string, len(conf.Servers))
	for i, srv := range conf.Servers {
		ids[i] = string(srv.ID)
	}
	s.log.Info("raft cluster bootstrapped", "voters", strings.Join(ids, ","))
	s.bootstrapped.Store(true)
}

// peerCount asks the coordinator whose API is at addr how many servers its
// Raft configuration has (0: not bootstrapped).
func (s *Server) peerCount(ctx context.Context, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.peerScheme+"://"+addr+"/v1/operator/raft/peers", nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.peers.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s answered %s", addr, resp.Status)
	}
	var peers protocol.RaftPeersResponse
	if err := json.NewDecoder(resp.Body).Decode(&peers); err != nil {
		return 0, err
	}
	return len(peers.Peers), nil
}

// addVoters, on the leader, adds every alive coordinator that gossip shows
// and the Raft configuration lacks (or knows at another address) as a
// voter. Coordinators are never removed automatically: `baton operator
// raft remove-peer` does that.
func (s *Server) addVoters() {
	f := s.raft.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	known := map[raft.ServerID]raft.ServerAddress{}
	for _, srv := range f.Configuration().Servers {
		known[srv.ID] = srv.Address
	}
	for _, m := range s.pool.Alive(membership.RoleCoordinator) {
		id, addr := raft.ServerID(m.Meta.ID), raft.ServerAddress(m.Meta.Raft)
		if addr == "" || known[id] == addr {
			continue
		}
		// A voter that cannot be reached would count toward the quorum
		// without voting: a wrong --raft-addr or a firewall could cost
		// the cluster its majority. Add only a node whose Raft port
		// answers.
		conn, err := net.DialTimeout("tcp", string(addr), time.Second)
		if err != nil {
			s.logLimited("voter-unreachable:"+string(id), "not adding a coordinator whose raft address does not answer",
				"node_id", id, "raft", addr, "error", err)
			continue
		}
		conn.Close()
		if err := s.raft.raft.AddVoter(id, addr, 0, 10*time.Second).Error(); err != nil {
			s.log.Warn("add coordinator as a voter", "node_id", id, "raft", addr, "error", err)
			continue
		}
		s.log.Info("coordinator added as a voter", "node_id", id, "raft", addr)
	}
}

// logLimited logs at info at most once per key every 10 seconds.
func (s *Server) logLimited(key, msg string, args ...any) {
	if ok, _ := s.badMessages.Allow(key); ok {
		s.log.Info(msg, args...)
	}
}

// quorum says how many of the latest configuration's voters this node
// can reach (itself, and the others that gossip shows alive), how many
// voters there are, and which it cannot reach. Without gossip every voter
// counts as reachable.
func (s *Server) quorum() (reachable, voters int, missing []string) {
	f := s.raft.raft.GetConfiguration()
	if f.Error() != nil {
		return 0, 0, nil
	}
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		voters++
		id := string(srv.ID)
		if s.pool == nil || id == s.cfg.NodeID {
			reachable++
			continue
		}
		if s.memberAlive(membership.RoleCoordinator, id) {
			reachable++
			continue
		}
		missing = append(missing, id)
	}
	return reachable, voters, missing
}

// noQuorum returns the message for writes refused because a majority of
// the voters is unreachable, or "" when a majority is reachable.
func (s *Server) noQuorum() string {
	if s.raft.raft.State() == raft.Follower {
		// A follower in touch with its leader is part of a majority,
		// whatever gossip says (a node that joined through a member that
		// is gone may see few others).
		if _, id := s.raft.raft.LeaderWithID(); id != "" && time.Since(s.raft.raft.LastContact()) < s.staleAfter() {
			return ""
		}
	}
	reachable, voters, missing := s.quorum()
	if voters == 0 || reachable > voters/2 {
		return ""
	}
	return fmt.Sprintf("no quorum: %d of %d coordinators reachable (%s not reachable); writes need %d; reads still answer, marked stale",
		reachable, voters, strings.Join(missing, ", "), voters/2+1)
}
