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
	// NetNS identifies the network namespace the agent runs in (the
	// kernel's boot id and the namespace's inode): agents with the same
	// NetNS share one port space, as several agents on one machine do.
	// Empty means unknown; placement then counts Host as the port space.
	NetNS string `json:"netns,omitempty"`
	// PortRange is where the coordinator picks ports for replicas whose
	// task names none (or whose port is taken on the host).
	PortRange PortRange `json:"port_range"`
	Alive     bool      `json:"alive"`
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

// PortRange is an inclusive range of TCP ports. The zero value is "not
// given".
type PortRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}
