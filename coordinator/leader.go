package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/baton-dev/baton/internal/membership"
)

// monitorLeadership starts the controller when this node becomes leader
// and stops it when leadership is lost. NotifyCh is buffered, so a quick
// lose-and-regain still arrives as two signals.
func (s *Server) monitorLeadership(ctx context.Context) {
	var (
		stop func()
		wg   sync.WaitGroup
	)
	stopController := func() {
		if stop != nil {
			stop()
			wg.Wait()
			stop = nil
			s.metrics.isLeader.Set(0)
			s.log.Info("leadership lost; controller stopped")
		}
	}
	defer stopController()
	stateTicker := time.NewTicker(time.Second)
	defer stateTicker.Stop()
	s.recordRaftState()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stateTicker.C:
			s.recordRaftState()
			if err := s.raft.adjustTimeouts(); err != nil {
				s.log.Warn("raft timeouts", "error", err)
			}
		case isLeader := <-s.leaderC:
			s.recordRaftState()
			if !isLeader {
				stopController()
				continue
			}
			if stop != nil {
				continue // already leading
			}
			lctx, cancel := context.WithCancel(ctx)
			stop = cancel
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.lead(lctx)
			}()
		}
	}
}

func (s *Server) recordRaftState() {
	state := s.raft.raft.State()
	for _, st := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if st == state {
			v = 1
		}
		s.metrics.raftState.WithLabelValues(st.String()).Set(v)
	}
}

// lead runs leader-only work until ctx ends. A Barrier first makes sure the
// FSM holds every entry committed by earlier leaders.
func (s *Server) lead(ctx context.Context) {
	for {
		err := s.raft.raft.Barrier(10 * time.Second).Error()
		if err == nil {
			break
		}
		s.log.Warn("barrier failed; retrying", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	s.metrics.isLeader.Set(1)
	s.log.Info("leadership gained; controller starting")
	c := newController(s.controllerDeps())
	s.ctrlMu.Lock()
	s.ctrl = c
	s.ctrlMu.Unlock()
	defer func() {
		s.ctrlMu.Lock()
		s.ctrl = nil
		s.ctrlMu.Unlock()
	}()
	c.run(ctx)
}

// controllerDeps are the parts of this coordinator its controller uses.
func (s *Server) controllerDeps() controllerDeps {
	var gossip func(membership.Role, string) (membership.Member, bool)
	if s.pool != nil {
		gossip = s.pool.Member
	}
	return controllerDeps{
		gossip:     gossip,
		cfg:        s.cfg,
		log:        s.log.With("component", "controller"),
		state:      s.fsm.State,
		apply:      s.raftApply,
		bus:        s.nc,
		decode:     s.decodeMessage,
		sameSender: s.sameSender,
		replyable:  s.replyable,
		metrics:    s.metrics,
		kick:       s.kick,
		kickFn:     s.Kick,
		limiter:    s.badMessages,
	}
}
