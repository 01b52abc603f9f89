package coordinator

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/protocol"
)

// handleRaftPeers lists the Raft configuration as this node knows it
// (GET /v1/operator/raft/peers).
func (s *Server) handleRaftPeers(w http.ResponseWriter, r *http.Request) {
	f := s.raft.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		writeError(w, http.StatusInternalServerError, protocol.CodeInternal, "read the raft configuration: "+err.Error())
		return
	}
	_, leader := s.raft.raft.LeaderWithID()
	resp := protocol.RaftPeersResponse{Peers: []protocol.RaftPeer{}}
	for _, srv := range f.Configuration().Servers {
		p := protocol.RaftPeer{ID: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter}
		switch {
		case string(srv.ID) == s.cfg.NodeID:
			p.State = strings.ToLower(s.raft.raft.State().String())
		case s.pool != nil && !s.memberAlive(membership.RoleCoordinator, string(srv.ID)):
			p.State = "unreachable"
		case srv.ID == leader:
			p.State = "leader"
		default:
			p.State = "follower"
		}
		resp.Peers = append(resp.Peers, p)
	}
	writeJSON(w, http.StatusOK, resp)
}

// handleRemovePeer removes a server from the Raft configuration
// (DELETE /v1/operator/raft/peers/{id}); it runs on the leader.
func (s *Server) handleRemovePeer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f := s.raft.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		writeError(w, http.StatusInternalServerError, protocol.CodeInternal, "read the raft configuration: "+err.Error())
		return
	}
	var ids []string
	found, voters := false, 0
	for _, srv := range f.Configuration().Servers {
		ids = append(ids, string(srv.ID))
		found = found || string(srv.ID) == id
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	if !found {
		writeError(w, http.StatusNotFound, protocol.CodeNotFound, fmt.Sprintf(
			"%q is not a raft peer (peers: %s); `baton operator raft list-peers` lists them", id, strings.Join(ids, ", ")))
		return
	}
	if voters == 1 && id == s.cfg.NodeID {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, fmt.Sprintf(
			"%q is the only voter; removing it would leave no cluster", id))
		return
	}
	if s.pool != nil && id != s.cfg.NodeID && s.memberAlive(membership.RoleCoordinator, id) {
		// The leader adds every alive coordinator back as a voter.
		writeError(w, http.StatusConflict, protocol.CodeBadRequest, fmt.Sprintf(
			"%q is alive in gossip and would be added back at once; stop it first, then remove it (remove-peer is for coordinators that are gone)", id))
		return
	}
	if reachable, _, _ := s.quorum(); s.pool != nil && reachable <= (voters-1)/2 {
		writeError(w, http.StatusConflict, protocol.CodeBadRequest, fmt.Sprintf(
			"removing %q would leave %d voters of which only %d are reachable, no majority; bring coordinators back first", id, voters-1, reachable-1))
		return
	}
	if err := s.raft.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			s.applyError(w, r, fmt.Errorf("%w: %v", ErrNotLeader, err))
			return
		}
		writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "remove raft peer "+id+": "+err.Error())
		return
	}
	s.log.Info("raft peer removed", "node_id", id)
	writeJSON(w, http.StatusOK, map[string]string{"removed": id})
}

// handleMembers lists the gossip pool (GET /v1/operator/members). A
// coordinator without gossip lists itself.
func (s *Server) handleMembers(w http.ResponseWriter, r *http.Request) {
	resp := protocol.MembersResponse{Members: []protocol.Member{}}
	if s.pool == nil {
		resp.Members = append(resp.Members, protocol.Member{
			Name: string(membership.RoleCoordinator) + "/" + s.cfg.NodeID, Role: string(membership.RoleCoordinator),
			ID: s.cfg.NodeID, Status: string(membership.StatusAlive), API: s.HTTPAddr(), NATS: s.NATSURL(), Raft: s.cfg.RaftAddr,
		})
		writeJSON(w, http.StatusOK, resp)
		return
	}
	for _, m := range s.pool.Members() {
		resp.Members = append(resp.Members, protocol.Member{
			Name: m.Name, Role: string(m.Meta.Role), ID: m.Meta.ID, Address: m.Addr, Status: string(m.Status),
			API: m.Meta.API, NATS: m.Meta.NATS, Raft: m.Meta.Raft,
		})
	}
	writeJSON(w, http.StatusOK, resp)
}

// memberAlive says whether gossip shows the member alive (or suspect).
func (s *Server) memberAlive(role membership.Role, id string) bool { return s.pool.IsAlive(role, id) }
