package protocol

import (
	"fmt"
	"strconv"
	"strings"
)

// TaskSpec is a parsed and validated SkyServe-compatible task YAML. It is
// stored in the FSM (inside Version) and sent to agents, so it is plain data
// with JSON tags.
type TaskSpec struct {
	Name string `json:"name,omitempty"`
	// Workdir is the directory setup and run execute in. The CLI resolves a
	// relative path against its own working directory before sending the
	// spec; empty means a fresh directory per replica on the agent.
	Workdir string `json:"workdir,omitempty"`
	// Bundle, when set, is the digest (sha256:<hex>) of the archive of the
	// workdir and the file_mounts' local sources, uploaded to the cluster
	// by the CLI: each replica then runs in its own copy of it, and
	// Workdir only says where it came from. Empty: Workdir is used in
	// place (`--no-upload`, a path every agent shares).
	Bundle string `json:"bundle,omitempty"`
	// FileMounts maps where a file or directory is placed for each
	// replica (an absolute path, "~/..." under the replica's home, or a
	// path relative to its working directory) to its local source as the
	// task wrote it (file_mounts); the sources travel in the bundle.
	FileMounts map[string]string `json:"file_mounts,omitempty"`
	Setup      string            `json:"setup,omitempty"`
	Run        string            `json:"run"`
	Envs       map[string]string `json:"envs,omitempty"`
	// Secrets are envs whose values baton never shows: no CLI output, API
	// answer or log line carries them. They reach the replica's
	// environment beside Envs; no name is in both. The values are stored
	// in the Raft state and sent to the agents that run the replicas, as
	// the rest of the spec is.
	Secrets   map[string]string `json:"secrets,omitempty"`
	Service   ServiceSpec       `json:"service"`
	Resources Resources         `json:"resources"`
	// Warnings are notes for the user (cloud-only fields that baton ignores).
	Warnings []string `json:"warnings,omitempty"`
	// Lines says where the task file wrote each key, so that checks done
	// after parsing (workdir exists, name is a valid service name, ...) can
	// report file:line. It maps a key's dotted path, spelled as in
	// SpecError.Field, to its 1-based line: every top-level key present
	// ("name", "workdir", "setup", "run", "envs", "service", "resources",
	// and ignored ones like "cloud"), and the keys inside service,
	// service.readiness_probe, service.replica_policy, resources and envs
	// ("service.replicas", "resources.gpus", "envs.HF_TOKEN", ...). A key
	// not in the file is absent (so Lines["x"] is 0). Lines is not encoded
	// (json:"-"): a spec decoded from JSON has none.
	Lines map[string]int `json:"-"`
}

// ServiceSpec is the task's `service:` section.
type ServiceSpec struct {
	// ReadinessProbe is always filled: without readiness_probe in the YAML
	// it is SkyServe's default, a GET of / with the default delays.
	ReadinessProbe ReadinessProbe `json:"readiness_probe"`
	// ReplicaPolicy is always filled: `replicas: N` becomes min = max = N.
	ReplicaPolicy ReplicaPolicy `json:"replica_policy"`
	// Port is the port replicas listen on (service.ports, else resources.ports,
	// else 0 = the agent picks one). The agent passes it as $PORT.
	Port int `json:"port,omitempty"`
	// LoadBalancingPolicy is round_robin or least_load (the default).
	LoadBalancingPolicy string `json:"load_balancing_policy"`
	// ResponseTimeoutSeconds (service.response_timeout_seconds, a baton
	// extension) bounds how long an LB waits for a replica's response
	// headers; a replica that exceeds it counts as failing for outlier
	// ejection and an idempotent request is retried on another replica.
	// 0, the default, means no limit (model servers may think for minutes).
	ResponseTimeoutSeconds int `json:"response_timeout_seconds,omitempty"`
}

// ReadinessProbe says how an agent decides a replica is READY.
type ReadinessProbe struct {
	Path string `json:"path"`
	// InitialDelaySeconds is how long a replica may take to pass its first
	// probe before it is FAILED_INITIAL_DELAY. Default 1200; 0 is allowed
	// and kept. The YAML may give a fraction, which is rounded up to the
	// next whole second (1.2 becomes 2).
	InitialDelaySeconds int `json:"initial_delay_seconds"`
	// TimeoutSeconds bounds one probe request. Default 15; it is at least
	// 1, since the YAML must give more than 0 and a fraction is rounded up
	// to the next whole second (0.5 becomes 1).
	TimeoutSeconds int `json:"timeout_seconds"`
	// PostData, when set, makes the probe a POST with this body (a mapping in
	// the YAML is sent as its JSON encoding).
	PostData string            `json:"post_data,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"`
}

// ReplicaPolicy is the task's replica count and autoscaling settings, with
// SkyServe's rules already checked.
type ReplicaPolicy struct {
	MinReplicas int `json:"min_replicas"`
	// MaxReplicas equals MinReplicas when autoscaling is off.
	MaxReplicas         int     `json:"max_replicas"`
	TargetQPSPerReplica float64 `json:"target_qps_per_replica,omitempty"`
	// UpscaleDelaySeconds (default 300) and DownscaleDelaySeconds (default
	// 1200) are >= 0. The YAML may give a fraction, which is rounded up to
	// the next whole second (0.1 becomes 1).
	UpscaleDelaySeconds   int `json:"upscale_delay_seconds,omitempty"`
	DownscaleDelaySeconds int `json:"downscale_delay_seconds,omitempty"`
	NumOverprovision      int `json:"num_overprovision,omitempty"`
}

// Resources is what one replica needs from an agent.
type Resources struct {
	CPUs Quantity `json:"cpus"`
	// Memory is in GiB. The YAML may give a bare number (GiB) or a unit,
	// case-insensitive: KB, MB, GB, TB or PB, where GB means GiB as in
	// SkyPilot and the others are powers of 1024 from it (512MB is 0.5).
	Memory Quantity `json:"memory"`
	// Accelerators is resources.accelerators, or its SkyPilot alias
	// resources.gpus (the YAML may not set both).
	Accelerators AcceleratorRequest `json:"accelerators"`
	// Ports are the ports the replica opens (resources.ports).
	Ports []int `json:"ports,omitempty"`
}

// Quantity is a resource amount: `4` means exactly 4, `4+` at least 4.
// The zero value means "not requested".
type Quantity struct {
	Value   float64 `json:"value,omitempty"`
	AtLeast bool    `json:"at_least,omitempty"`
}

// IsSet reports whether the quantity was requested.
func (q Quantity) IsSet() bool { return q.Value > 0 }

// AcceleratorRequest is `A100`, `A100:2`, a set `{A100: 1, H100: 1}` (any
// one of them) or a list (the same, in order of preference). The zero value
// requests no accelerator.
type AcceleratorRequest struct {
	Options []AcceleratorOption `json:"options,omitempty"`
	// Ordered is true for a list: try Options in order. For a set, any
	// option that fits is fine.
	Ordered bool `json:"ordered,omitempty"`
}

// AcceleratorOption is one accelerator name with a count, like A100:2.
type AcceleratorOption struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// IsSet reports whether any accelerator was requested.
func (a AcceleratorRequest) IsSet() bool { return len(a.Options) > 0 }

// String renders 4 as "4" and at-least 4 as "4+", as a task file writes them.
func (q Quantity) String() string {
	s := strconv.FormatFloat(q.Value, 'f', -1, 64)
	if q.AtLeast {
		s += "+"
	}
	return s
}

// String renders the accelerators as "A100:1", "A100:1 or H100:1" (a set)
// or "A100:2, else T4:1" (a list in order of preference).
func (a AcceleratorRequest) String() string {
	opts := make([]string, len(a.Options))
	for i, o := range a.Options {
		opts[i] = fmt.Sprintf("%s:%d", o.Name, o.Count)
	}
	sep := " or "
	if a.Ordered {
		sep = ", else "
	}
	return strings.Join(opts, sep)
}

// String describes what a replica asks for, like
// "cpus 4+, memory 16 GiB, accelerators A100:1", or "any resources".
func (r Resources) String() string {
	var parts []string
	if r.CPUs.IsSet() {
		parts = append(parts, "cpus "+r.CPUs.String())
	}
	if r.Memory.IsSet() {
		parts = append(parts, "memory "+r.Memory.String()+" GiB")
	}
	if r.Accelerators.IsSet() {
		parts = append(parts, "accelerators "+r.Accelerators.String())
	}
	if len(parts) == 0 {
		return "any resources"
	}
	return strings.Join(parts, ", ")
}
