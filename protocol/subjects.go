package protocol

// NATS subjects. See DESIGN.md, "Messages".
const (
	// SubjectRoutesPrefix + service carries a RouteTable, leader -> LBs.
	SubjectRoutesPrefix = "baton.routes."
	// SubjectRoutesSync is a request from an LB; the leader replies with a
	// RouteSync holding every table.
	SubjectRoutesSync = "baton.routes.sync"
	// SubjectRoutesAll subscribes to every service's table. It also matches
	// SubjectRoutesSync, which LBs must skip.
	SubjectRoutesAll = "baton.routes.*"
	// SubjectLBAck carries LBAck, LB -> leader.
	SubjectLBAck = "baton.lb.ack"
	// SubjectLBStats carries LB request statistics, LB -> leader.
	SubjectLBStats = "baton.lb.stats"
	// SubjectAgentStatus carries AgentStatus, agent -> leader.
	SubjectAgentStatus = "baton.agent.status"
	// SubjectSpecGet is a SpecRequest from an agent; one coordinator (a
	// queue group of all of them) replies with a SpecReply.
	SubjectSpecGet = "baton.specs.get"
	// QueueCoordinators is the queue group coordinators answer requests
	// in, so that each request gets one reply.
	QueueCoordinators = "baton-coordinators"
)

// RoutesSubject is the subject a service's route table is published on.
func RoutesSubject(service string) string { return SubjectRoutesPrefix + service }

// AgentDesiredSubject is the subject an agent's desired replica set is
// published on.
func AgentDesiredSubject(agentID string) string { return "baton.agent." + agentID + ".desired" }
