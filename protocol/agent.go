package protocol

import "time"

// Agent is one machine that runs replicas.
type Agent struct {
	ID string `json:"id"`
	// Address is host:port of the agent's HTTP server (logs, metrics).
	Address string `json:"address"`
	// Host is the address replicas on this agent are reached at.
	Host     string            `json:"host"`
	Region   string            `json:"region,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Capacity Capacity          `json:"capacity"`
	Alive    bool              `json:"alive"`
	// LastSeen is the leader's clock when the last status arrived.
	LastSeen time.Time `json:"last_seen"`
}

// Capacity is what an agent has in total.
type Capacity struct {
	CPUs     float64 `json:"cpus"`
	MemoryGB float64 `json:"memory_gb"`
	GPUs     []GPU   `json:"gpus,omitempty"`
}

// GPU is one accelerator on an agent.
type GPU struct {
	Index    int    `json:"index"`
	Name     string `json:"name"`
	UUID     string `json:"uuid"`
	MemoryMB int    `json:"memory_mb,omitempty"`
	Healthy  bool   `json:"healthy"`
	// Reason explains an unhealthy GPU (an Xid error, say).
	Reason string `json:"reason,omitempty"`
}
