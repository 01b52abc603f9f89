package coordinator

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// CommandType is the first byte of every Raft log entry. The enum is
// append-only: never renumber or reuse a value, or old logs replay wrongly.
type CommandType byte

// Command types.
const (
	CmdCreateService  CommandType = 1
	CmdAddVersion     CommandType = 2
	CmdDeleteService  CommandType = 3
	CmdRemoveService  CommandType = 4
	CmdAddReplicas    CommandType = 5
	CmdUpdateReplicas CommandType = 6
	CmdDeleteReplicas CommandType = 7
	CmdFlip           CommandType = 8
	CmdFailVersion    CommandType = 9
	CmdUpsertAgent    CommandType = 10
	CmdSetAgentAlive  CommandType = 11
	CmdRemoveAgent    CommandType = 12
	CmdUpsertAgents   CommandType = 13
	CmdSetAgentsAlive CommandType = 14
	CmdACLBootstrap   CommandType = 15
	CmdACLTokenCreate CommandType = 16
	CmdACLTokenRevoke CommandType = 17
	CmdBundleAdd      CommandType = 18
	CmdBundleDelete   CommandType = 19
)

func (t CommandType) String() string {
	switch t {
	case CmdCreateService:
		return "create_service"
	case CmdAddVersion:
		return "add_version"
	case CmdDeleteService:
		return "delete_service"
	case CmdRemoveService:
		return "remove_service"
	case CmdAddReplicas:
		return "add_replicas"
	case CmdUpdateReplicas:
		return "update_replicas"
	case CmdDeleteReplicas:
		return "delete_replicas"
	case CmdFlip:
		return "flip"
	case CmdFailVersion:
		return "fail_version"
	case CmdUpsertAgent:
		return "upsert_agent"
	case CmdSetAgentAlive:
		return "set_agent_alive"
	case CmdRemoveAgent:
		return "remove_agent"
	case CmdUpsertAgents:
		return "upsert_agents"
	case CmdSetAgentsAlive:
		return "set_agents_alive"
	case CmdACLBootstrap:
		return "acl_bootstrap"
	case CmdACLTokenCreate:
		return "acl_token_create"
	case CmdACLTokenRevoke:
		return "acl_token_revoke"
	case CmdBundleAdd:
		return "bundle_add"
	case CmdBundleDelete:
		return "bundle_delete"
	}
	return fmt.Sprintf("command(%d)", byte(t))
}

// CreateServiceCmd creates a service with version 1. The FSM gives it the
// lowest LB port at or above FirstPort that no other service holds.
type CreateServiceCmd struct {
	Name      string            `json:"name"`
	Spec      protocol.TaskSpec `json:"spec"`
	YAML      string            `json:"yaml"`
	FirstPort int               `json:"first_port"`
	At        time.Time         `json:"at"`
	// specDigest is computed from Spec when the command is decoded.
	specDigest string
}

// AddVersionCmd adds version N+1 and starts a rollout to it. A rollout
// already in progress is superseded: its target version fails.
type AddVersionCmd struct {
	Service string            `json:"service"`
	Spec    protocol.TaskSpec `json:"spec"`
	YAML    string            `json:"yaml"`
	Mode    string            `json:"mode"`
	// ProgressSeconds is how long the new version may go without a new
	// READY replica before it fails.
	ProgressSeconds int       `json:"progress_seconds"`
	At              time.Time `json:"at"`
	// specDigest is computed from Spec when the command is decoded.
	specDigest string
}

// DeleteServiceCmd starts `serve down`: every replica shuts down, then the
// leader removes the service.
type DeleteServiceCmd struct {
	Service string    `json:"service"`
	At      time.Time `json:"at"`
}

// RemoveServiceCmd forgets a deleted service once its replicas are gone.
type RemoveServiceCmd struct {
	Service string `json:"service"`
}

// AddReplicasCmd adds replicas; the FSM assigns their ids.
type AddReplicasCmd struct {
	Replicas []protocol.Replica `json:"replicas"`
	At       time.Time          `json:"at"`
}

// ReplicaUpdate changes one replica, only if it still has status From: the
// leader computes updates from a copy of the state, and a command committed
// meanwhile (a flip, `serve down`) must not be undone by a late update.
type ReplicaUpdate struct {
	Service string                 `json:"service"`
	ID      int                    `json:"id"`
	From    protocol.ReplicaStatus `json:"from"`
	Status  protocol.ReplicaStatus `json:"status"`
	// IfRolloutTo, when non-zero, applies the update only while the
	// service is rolling out to that version (retiring an old replica for
	// a new one).
	IfRolloutTo int `json:"if_rollout_to,omitempty"`
	// Endpoint replaces the replica's endpoint when non-empty.
	Endpoint string `json:"endpoint,omitempty"`
	Reason   string `json:"reason"`
	// AgentID, when non-empty, places the replica on that agent with
	// Resources.
	AgentID   string              `json:"agent_id,omitempty"`
	Resources protocol.Allocation `json:"resources"`
	// Port, when non-zero, gives a placed replica another port (its agent
	// found the old one held by a process baton does not run).
	Port int `json:"port,omitempty"`
}

// UpdateReplicasCmd changes several replicas at once.
type UpdateReplicasCmd struct {
	Updates []ReplicaUpdate `json:"updates"`
	At      time.Time       `json:"at"`
}

// DeleteReplicasCmd forgets replicas that are gone.
type DeleteReplicasCmd struct {
	Keys []string `json:"keys"`
}

// FlipCmd is the blue_green flip: version To becomes the only active
// version, older versions retire and their replicas shut down.
type FlipCmd struct {
	Service string    `json:"service"`
	To      int       `json:"to"`
	At      time.Time `json:"at"`
}

// FailVersionCmd marks a version failed and shuts its replicas down; the
// active versions keep serving.
type FailVersionCmd struct {
	Service string    `json:"service"`
	Version int       `json:"version"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

// UpsertAgentCmd registers an agent or updates its address and capacity.
type UpsertAgentCmd struct {
	Agent protocol.Agent `json:"agent"`
	At    time.Time      `json:"at"`
}

// SetAgentAliveCmd marks an agent alive or lost. A lost agent's replicas
// become FAILED (the leader replaces them elsewhere).
type SetAgentAliveCmd struct {
	ID     string    `json:"id"`
	Alive  bool      `json:"alive"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// UpsertAgentsCmd registers or updates many agents in one entry: a fleet
// that re-registers at once (a new leader, a network healing) costs one
// Raft write, not one per agent.
type UpsertAgentsCmd struct {
	Agents []protocol.Agent `json:"agents"`
	At     time.Time        `json:"at"`
}

// AgentAliveChange is one agent's change in a SetAgentsAliveCmd.
type AgentAliveChange struct {
	ID     string `json:"id"`
	Alive  bool   `json:"alive"`
	Reason string `json:"reason,omitempty"`
}

// SetAgentsAliveCmd marks many agents alive or lost in one entry (many
// agents lost at once: a rack, a switch).
type SetAgentsAliveCmd struct {
	Changes []AgentAliveChange `json:"changes"`
	At      time.Time          `json:"at"`
}

// RemoveAgentCmd forgets an agent that has been lost for a long time and
// runs nothing.
type RemoveAgentCmd struct {
	ID string `json:"id"`
}

// encodeCommand frames a command as its type byte followed by JSON.
func encodeCommand(t CommandType, cmd any) ([]byte, error) {
	payload, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return append([]byte{byte(t)}, payload...), nil
}

// ACLBootstrapCmd turns ACLs on the first time: it stores the first
// management token. A second bootstrap is rejected.
type ACLBootstrapCmd struct {
	Token protocol.ACLToken `json:"token"`
}

// ACLTokenCreateCmd stores a new token (its secret's hash only).
type ACLTokenCreateCmd struct {
	Token protocol.ACLToken `json:"token"`
}

// ACLTokenRevokeCmd deletes a token by its accessor id.
type ACLTokenRevokeCmd struct {
	AccessorID string `json:"accessor_id"`
}

// BundleAddCmd records a bundle that a majority of the coordinators hold.
// Adding one the state has already changes nothing (an upload retried, or
// two of the same code at once).
type BundleAddCmd struct {
	Digest string    `json:"digest"`
	Size   int64     `json:"size"`
	At     time.Time `json:"at"`
}

// BundleDeleteCmd forgets a bundle (its files are removed by every
// coordinator once applied). It is rejected while a stored version names
// the bundle.
type BundleDeleteCmd struct {
	Digest string `json:"digest"`
}
