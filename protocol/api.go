package protocol

import (
	"fmt"
	"time"
)

// HTTP API paths served by the coordinator. See coordinator/api.go.
//
//	POST   /v1/services                         UpRequest     -> ServiceResponse
//	POST   /v1/services/{name}/update           UpdateRequest -> ServiceResponse
//	DELETE /v1/services/{name}                                -> ServiceResponse
//	GET    /v1/status?service=a&service=b                     -> StatusResponse
//	GET    /v1/services/{name}/replicas/{id}/logs?follow=1    -> text/plain stream
//	GET    /v1/agents                                         -> []Agent
//	HEAD   /v1/bundles/{digest}                               -> 200 or 404
//	PUT    /v1/bundles/{digest}              the archive      -> BundleInfo
//	GET    /v1/bundles/{digest}                               -> the archive
//	GET    /v1/bundles                                        -> []BundleInfo
//
// Errors are APIError bodies with a 4xx or 5xx status.

// UpRequest creates a service from a task YAML.
type UpRequest struct {
	// Name is the service's name; empty takes the task's name: field, or
	// generates one (service-xxxx) if the task has none.
	Name string `json:"name"`
	// YAML is the task file's text and Filename its name (for errors).
	YAML     string `json:"yaml"`
	Filename string `json:"filename"`
	// BaseDir resolves a relative workdir (the CLI's working directory).
	BaseDir string `json:"base_dir,omitempty"`
	// Envs override or fill in the task's envs (the CLI's --env).
	Envs map[string]string `json:"envs,omitempty"`
	// Secrets override or fill in the task's secrets (the CLI's --secret).
	// No answer repeats them.
	Secrets map[string]string `json:"secrets,omitempty"`
	// Bundle is the digest of the workdir's bundle the CLI uploaded
	// (PUT /v1/bundles/{digest}); the cluster must hold it. Empty: the
	// workdir is used in place (--no-upload).
	Bundle string `json:"bundle,omitempty"`
}

// UpdateRequest adds a new version to a service.
type UpdateRequest struct {
	YAML     string `json:"yaml"`
	Filename string `json:"filename"`
	BaseDir  string `json:"base_dir,omitempty"`
	// Mode is blue_green (default) or rolling.
	Mode string `json:"mode,omitempty"`
	// Envs override or fill in the task's envs (the CLI's --env).
	Envs map[string]string `json:"envs,omitempty"`
	// Secrets override or fill in the task's secrets (the CLI's --secret).
	// No answer repeats them.
	Secrets map[string]string `json:"secrets,omitempty"`
	// Bundle is the digest of the workdir's bundle the CLI uploaded
	// (PUT /v1/bundles/{digest}); the cluster must hold it. Empty: the
	// workdir is used in place (--no-upload).
	Bundle string `json:"bundle,omitempty"`
}

// ServiceResponse answers up, update and down.
type ServiceResponse struct {
	Name     string   `json:"name"`
	Version  int      `json:"version"`
	Endpoint string   `json:"endpoint"`
	Warnings []string `json:"warnings,omitempty"`
}

// StatusResponse is `baton serve status --json`.
type StatusResponse struct {
	Services []ServiceStatusView `json:"services"`
	Replicas []ReplicaStatusView `json:"replicas"`
	// Index is the Raft index of the last command this coordinator had
	// applied when it answered.
	Index uint64 `json:"index"`
	// Stale is true when the answering coordinator knows no leader, or
	// has not heard from it lately: the state may miss recent writes.
	// A ?consistent read is never stale.
	Stale bool `json:"stale,omitempty"`
}

// ServiceStatusView is one row of the Services table.
type ServiceStatusView struct {
	Name           string        `json:"name"`
	Version        int           `json:"version"`
	ActiveVersions []int         `json:"active_versions"`
	UptimeSeconds  int64         `json:"uptime_seconds"`
	Status         ServiceStatus `json:"status"`
	ReadyReplicas  int           `json:"ready_replicas"`
	TotalReplicas  int           `json:"total_replicas"`
	Endpoint       string        `json:"endpoint"`
	Reason         string        `json:"reason,omitempty"`
}

// ReplicaStatusView is one row of the Service Replicas table.
type ReplicaStatusView struct {
	ServiceName string        `json:"service_name"`
	ID          int           `json:"id"`
	Version     int           `json:"version"`
	Endpoint    string        `json:"endpoint"`
	Agent       string        `json:"agent"`
	LaunchedAt  time.Time     `json:"launched_at"`
	Resources   string        `json:"resources"`
	Status      ReplicaStatus `json:"status"`
	Region      string        `json:"region"`
	Reason      string        `json:"reason,omitempty"`
}

// APIError is the body of every error response.
type APIError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *APIError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// API error codes.
const (
	CodeInvalidSpec   = "invalid_spec"
	CodeInvalidName   = "invalid_name"
	CodeNotFound      = "not_found"
	CodeAlreadyExists = "already_exists"
	CodeBadRequest    = "bad_request"
	CodeNotLeader     = "not_leader"
	CodeInternal      = "internal"
	CodeUnavailable   = "unavailable"
	// CodeCatchingUp: the coordinator has not yet replayed its Raft log
	// (it just started) and will not answer reads with a state that looks
	// real but is not. Nothing was done; retry shortly.
	CodeCatchingUp = "catching_up"
	// CodeNoQuorum: no leader could be reached because a majority of the
	// coordinators is not reachable; the message names who is missing.
	// Nothing was done.
	CodeNoQuorum = "no_quorum"
	// CodeNoLeader: the coordinators are reachable but hold an election
	// that did not end within the request's wait. Nothing was done.
	CodeNoLeader = "no_leader"
)

// Freshness headers on every read (GET) answered by a coordinator.
const (
	// HeaderIndex: the Raft index of the last command applied here.
	HeaderIndex = "X-Baton-Index"
	// HeaderKnownLeader: "true" when this coordinator knows a leader.
	HeaderKnownLeader = "X-Baton-Known-Leader"
	// HeaderLastContact: milliseconds since this coordinator last heard
	// from the leader (0 on the leader).
	HeaderLastContact = "X-Baton-Last-Contact"
	// HeaderStale: "true" when the answer may miss recent writes (no
	// leader known, or no contact with it lately).
	HeaderStale = "X-Baton-Stale"
	// HeaderServedBy: the node id of the coordinator that answered (the
	// leader's, for a forwarded request).
	HeaderServedBy = "X-Baton-Served-By"
)

// RaftPeersResponse is GET /v1/operator/raft/peers (`baton operator raft
// list-peers --json`).
type RaftPeersResponse struct {
	Peers []RaftPeer `json:"peers"`
}

// RaftPeer is one server in the Raft configuration.
type RaftPeer struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// State is "leader" or "follower" (or another Raft state for the
	// answering node itself: "candidate"); "unreachable" for a server
	// that gossip says is down.
	State string `json:"state"`
	Voter bool   `json:"voter"`
}

// MembersResponse is GET /v1/operator/members (`baton operator members
// --json`).
type MembersResponse struct {
	Members []Member `json:"members"`
}

// Member is one node of the gossip pool.
type Member struct {
	// Name is the gossip name, "<role>/<id>".
	Name string `json:"name"`
	// Role is "coordinator", "agent" or "lb".
	Role string `json:"role"`
	ID   string `json:"id"`
	// Address is the gossip address (host:port).
	Address string `json:"address"`
	// Status is "alive", "suspect", "failed" or "left".
	Status string `json:"status"`
	// API is the node's HTTP address (coordinator API, agent or LB admin).
	API string `json:"api,omitempty"`
	// NATS is the client URL of a coordinator's embedded NATS server.
	NATS string `json:"nats,omitempty"`
	// Raft is a coordinator's Raft address.
	Raft string `json:"raft,omitempty"`
}
