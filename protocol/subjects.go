package protocol

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// NATS subjects. See DESIGN.md, "Messages".
//
// Every subject an agent or LB publishes on names the sender (its id is a
// subject token), so that NATS permissions can let each publish only as
// itself (see internal/natsembed), and a receiver drops a message whose
// subject and content name different senders.
const (
	// SubjectRoutesPrefix + service carries a RouteTable, leader -> LBs.
	SubjectRoutesPrefix = "baton.routes."
	// SubjectRoutesSync is a request from an LB; the leader replies with a
	// RouteSync holding every table.
	SubjectRoutesSync = "baton.routes.sync"
	// SubjectRoutesAll subscribes to every service's table. It also matches
	// SubjectRoutesSync, which LBs must skip.
	SubjectRoutesAll = "baton.routes.*"
	// SubjectLBAckAll subscribes to every LB's acks (LBAckSubject).
	SubjectLBAckAll = "baton.lb.*.ack"
	// SubjectLBStatsAll subscribes to every LB's statistics.
	SubjectLBStatsAll = "baton.lb.*.stats"
	// SubjectAgentStatusAll subscribes to every agent's status
	// (AgentStatusSubject).
	SubjectAgentStatusAll = "baton.agent.*.status"
	// SubjectSpecGetAll subscribes to every agent's SpecRequests
	// (SpecGetSubject); one coordinator (a queue group of all of them)
	// replies with a SpecReply.
	SubjectSpecGetAll = "baton.specs.get.*"
	// SubjectClusterIndex is a request from an agent or LB; the leader
	// replies with a ClusterIndex, so a receiver can tell an epoch that
	// jumps implausibly far ahead of the cluster's.
	SubjectClusterIndex = "baton.cluster.index"
	// QueueCoordinators is the queue group coordinators answer requests
	// in, so that each request gets one reply.
	QueueCoordinators = "baton-coordinators"
	// InboxRoot starts every reply subject. Coordinators reply only to
	// subjects under it, so a request cannot make them publish a reply
	// on a subject of the control plane.
	InboxRoot = "_INBOX."
)

// RoutesSubject is the subject a service's route table is published on.
func RoutesSubject(service string) string { return SubjectRoutesPrefix + service }

// AgentDesiredSubject is the subject an agent's desired replica set is
// published on.
func AgentDesiredSubject(agentID string) string { return "baton.agent." + agentID + ".desired" }

// AgentStatusSubject is the subject an agent publishes its AgentStatus on.
func AgentStatusSubject(agentID string) string { return "baton.agent." + agentID + ".status" }

// SpecGetSubject is the subject an agent sends its SpecRequests on.
func SpecGetSubject(agentID string) string { return "baton.specs.get." + agentID }

// LBAckSubject is the subject an LB publishes its LBAck on.
func LBAckSubject(lbID string) string { return "baton.lb." + lbID + ".ack" }

// LBStatsSubject is the subject an LB publishes its statistics on.
func LBStatsSubject(lbID string) string { return "baton.lb." + lbID + ".stats" }

// InboxPrefix is the prefix of the reply subjects of one agent or LB
// (role "agent" or "lb"): NATS permissions let it subscribe to its own
// replies only.
func InboxPrefix(role, id string) string { return InboxRoot + role + "." + id }

// SenderOf returns the sender id a per-sender subject names: the token
// after prefix ("baton.agent.", "baton.lb.", "baton.specs.get."), or ""
// when subject does not start with prefix.
func SenderOf(subject, prefix string) string {
	rest, ok := strings.CutPrefix(subject, prefix)
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, ".")
	return id
}

// ClusterIndex is the reply on SubjectClusterIndex: the leader's last
// applied Raft index.
type ClusterIndex struct {
	Index uint64 `json:"index"`
}

// MaxEpochAhead is how far ahead of the cluster's Raft index (as the
// leader last reported it) a route table's or desired set's epoch may be
// before an LB or agent rejects it: far more than the entries a cluster
// commits between two messages, far less than the epoch of a forged
// message that would shadow every real one.
const MaxEpochAhead = 100_000

// AskClusterIndex sends a request on SubjectClusterIndex with request (a
// bus.Conn's Request) and returns the index the leader answers.
func AskClusterIndex(ctx context.Context, request func(context.Context, string, []byte) (*nats.Msg, error)) (uint64, error) {
	msg, err := request(ctx, SubjectClusterIndex, nil)
	if err != nil {
		return 0, fmt.Errorf("ask %s: %w", SubjectClusterIndex, err)
	}
	var ci ClusterIndex
	if err := DecodeMessage(msg.Data, 1<<10, &ci); err != nil {
		return 0, fmt.Errorf("answer on %s: %w", SubjectClusterIndex, err)
	}
	return ci.Index, nil
}
