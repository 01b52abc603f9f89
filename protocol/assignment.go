package protocol

import "time"

// DesiredReplicas is the full set of replicas an agent should run. It is
// level-triggered: the agent starts what is missing and stops (SIGTERM,
// grace, SIGKILL) every replica it runs that is not in the set. The leader
// re-sends it periodically, so a lost message is repaired by the next.
type DesiredReplicas struct {
	AgentID string `json:"agent_id"`
	// Epoch is the Raft index the set was computed from; an agent ignores a
	// set older than the one it last applied.
	Epoch    uint64              `json:"epoch"`
	Replicas []ReplicaAssignment `json:"replicas"`
	// Specs optionally holds specs inline, keyed by SpecKey(service,
	// version). The leader sends none: each assignment names its version's
	// spec by SpecDigest, and the agent fetches a spec it does not have
	// once (SubjectSpecGet) and caches it. An assignment whose version is
	// in Specs takes that spec.
	Specs map[string]TaskSpec `json:"specs,omitempty"`
}

// SpecKey names a version's spec in DesiredReplicas.Specs: "service/version".
func SpecKey(service string, version int) string { return ReplicaKey(service, version) }

// ResolveSpecs fills in each assignment's Spec from Specs. An assignment
// whose version is not in Specs must name its spec by SpecDigest: it is
// left unresolved (SpecResolved false) for the receiver to fill from its
// cache or a SpecRequest; one with neither is an error (matching
// ErrInvalidMessage). Call it before Validate.
func (d *DesiredReplicas) ResolveSpecs() error {
	for i := range d.Replicas {
		a := &d.Replicas[i]
		spec, ok := d.Specs[SpecKey(a.Service, a.Version)]
		if !ok {
			if a.SpecDigest == "" {
				return invalid("replicas[%d]: no spec for %s version %d: neither in specs nor named by spec_digest", i, a.Service, a.Version)
			}
			continue
		}
		a.SetSpec(spec)
	}
	return nil
}

// Unresolved returns the distinct spec digests of the assignments whose
// spec is not filled in yet, in the order they first appear.
func (d *DesiredReplicas) Unresolved() []string {
	var out []string
	seen := map[string]bool{}
	for i := range d.Replicas {
		a := &d.Replicas[i]
		if !a.resolved && !seen[a.SpecDigest] {
			seen[a.SpecDigest] = true
			out = append(out, a.SpecDigest)
		}
	}
	return out
}

// ReplicaAssignment is one replica an agent must run.
type ReplicaAssignment struct {
	Service   string `json:"service"`
	ReplicaID int    `json:"replica_id"`
	Version   int    `json:"version"`
	// Spec is the version's task spec (setup, run, envs, workdir, probe).
	// It never travels here (json:"-"): SpecDigest names it, and the
	// receiver fills it in (SetSpec) from DesiredReplicas.Specs, its cache,
	// or a SpecRequest.
	Spec TaskSpec `json:"-"`
	// SpecDigest names the version's spec by content: SpecDigestOf its
	// JSON encoding ("sha256:" and 64 hex digits). Assignments of one
	// version share it, and a digest once fetched never needs fetching
	// again.
	SpecDigest string `json:"spec_digest,omitempty"`
	// resolved is set once Spec is filled in.
	resolved bool
	// Port is the port the replica listens on ($PORT), chosen by the
	// leader's placement, which knows every replica on the host: the task's
	// own port where it is free there, else one from the agent's port
	// range. The agent only confirms that it can be bound.
	Port int `json:"port"`
	// GPUUUIDs are the GPUs assigned, passed as CUDA_VISIBLE_DEVICES.
	GPUUUIDs []string `json:"gpu_uuids,omitempty"`
	// Draining marks a retired replica kept only until the LBs have stopped
	// routing to it: an agent running it keeps it running, and an agent not
	// running it (restarted meanwhile, or told to stop it by an earlier
	// leader) must not start it.
	Draining bool `json:"draining,omitempty"`
}

// Key is the replica's unique name, "service/id".
func (a *ReplicaAssignment) Key() string { return ReplicaKey(a.Service, a.ReplicaID) }

// SetSpec fills in the assignment's spec.
func (a *ReplicaAssignment) SetSpec(spec TaskSpec) {
	a.Spec = spec
	a.resolved = true
}

// SpecResolved reports whether the assignment's Spec has been filled in.
func (a *ReplicaAssignment) SpecResolved() bool { return a.resolved }

// AgentStatus is an agent's registration, heartbeat and replica report in
// one message. Agents send it on every change and at least every
// heartbeat interval.
type AgentStatus struct {
	Agent    Agent           `json:"agent"`
	Replicas []ReplicaReport `json:"replicas"`
	// Leaving says the agent is shutting down: it starts nothing more and
	// is stopping its replicas, so the leader takes it out of service at
	// once instead of waiting for its heartbeats to stop.
	Leaving bool `json:"leaving,omitempty"`
	// SentAt is the agent's clock, for logs only.
	SentAt time.Time `json:"sent_at"`
}

// ReplicaReport is what an agent knows of one replica it runs.
type ReplicaReport struct {
	Service   string `json:"service"`
	ReplicaID int    `json:"replica_id"`
	Version   int    `json:"version"`
	// Status is PROVISIONING, STARTING, READY, NOT_READY, SHUTTING_DOWN
	// (stopping), or one of the FAILED states.
	Status   ReplicaStatus `json:"status"`
	Endpoint string        `json:"endpoint,omitempty"` // host:port once known
	PID      int           `json:"pid,omitempty"`
	Reason   string        `json:"reason,omitempty"`
	// PortBusy says the assigned port is held on the host by a process
	// baton does not run: the agent has started nothing and waits for the
	// leader to assign another port.
	PortBusy bool `json:"port_busy,omitempty"`
}

// Key is the replica's unique name, "service/id".
func (r *ReplicaReport) Key() string { return ReplicaKey(r.Service, r.ReplicaID) }
