package protocol

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Replica is one running (or wanted) copy of a service version.
type Replica struct {
	Service string `json:"service"`
	// ID increases per service and is never reused.
	ID      int    `json:"id"`
	Version int    `json:"version"`
	AgentID string `json:"agent_id,omitempty"`
	// Endpoint is host:port once the agent has started the replica.
	Endpoint   string        `json:"endpoint,omitempty"`
	Status     ReplicaStatus `json:"status"`
	LaunchedAt time.Time     `json:"launched_at"`
	// StatusAt is when Status last changed (leader's clock).
	StatusAt time.Time `json:"status_at"`
	// Resources is what the replica was given on its agent.
	Resources Allocation `json:"resources"`
	Reason    string     `json:"reason,omitempty"`
	// EverReady is set once the replica has passed a readiness probe; a
	// failure of a replica that never got ready counts toward its version's
	// failure streak (backoff, and failing a new version).
	EverReady bool `json:"ever_ready,omitempty"`
}

// Key is the replica's unique name, "service/id".
func (r *Replica) Key() string { return ReplicaKey(r.Service, r.ID) }

// ReplicaKey names a replica uniquely: "service/id".
func ReplicaKey(service string, id int) string { return service + "/" + strconv.Itoa(id) }

// Allocation is what an agent gave one replica.
type Allocation struct {
	CPUs     float64  `json:"cpus"`
	MemoryGB float64  `json:"memory_gb,omitempty"`
	GPUName  string   `json:"gpu_name,omitempty"`
	GPUUUIDs []string `json:"gpu_uuids,omitempty"`
	// Port is the port the replica listens on, chosen at placement.
	Port int `json:"port,omitempty"`
}

// Describe formats the allocation as the status table shows it, like
// `1x agent-4(vCPU=4, A100:1)`.
func (a Allocation) Describe(agentID string) string {
	if agentID == "" {
		return "-"
	}
	parts := []string{"vCPU=" + strconv.FormatFloat(a.CPUs, 'f', -1, 64)}
	if a.MemoryGB > 0 {
		parts = append(parts, "mem="+strconv.FormatFloat(a.MemoryGB, 'f', -1, 64)+"GB")
	}
	if len(a.GPUUUIDs) > 0 {
		parts = append(parts, fmt.Sprintf("%s:%d", a.GPUName, len(a.GPUUUIDs)))
	}
	return fmt.Sprintf("1x %s(%s)", agentID, strings.Join(parts, ", "))
}
