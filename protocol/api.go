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
)
