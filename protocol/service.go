package protocol

import "time"

// Service is one named service as stored in the FSM.
type Service struct {
	Name string `json:"name"`
	// Port is the LB port, fixed for the service's life (30001 and up).
	Port int `json:"port"`
	// LatestVersion is the newest version number (1, 2, ...).
	LatestVersion int `json:"latest_version"`
	// ActiveVersions is the set of versions the LBs route to.
	ActiveVersions []int     `json:"active_versions"`
	CreatedAt      time.Time `json:"created_at"`
	// Rollout is the update in progress, nil when none.
	Rollout *Rollout `json:"rollout,omitempty"`
	// NextReplicaID is the id the next replica gets; ids are never reused.
	NextReplicaID int `json:"next_replica_id"`
	// Deleting is set by `serve down`: replicas drain, then the service goes.
	Deleting bool `json:"deleting,omitempty"`
}

// Rollout is an update in progress from the active versions to a new one.
type Rollout struct {
	Mode      string    `json:"mode"`
	From      []int     `json:"from"`
	To        int       `json:"to"`
	StartedAt time.Time `json:"started_at"`
	// Deadline is when the new version fails if it has not reached
	// min_replicas; each new READY replica pushes it out.
	Deadline time.Time `json:"deadline"`
	// ProgressSeconds is the window each new READY replica grants.
	ProgressSeconds int `json:"progress_seconds"`
}

// Version is one version of a service's spec.
type Version struct {
	Service string   `json:"service"`
	Number  int      `json:"number"`
	Spec    TaskSpec `json:"spec"`
	// SpecDigest is SpecDigestOf(Spec's JSON encoding): desired sets name
	// the spec by it, and agents fetch and cache it once.
	SpecDigest string       `json:"spec_digest,omitempty"`
	YAML       string       `json:"yaml"`
	State      VersionState `json:"state"`
	// CreatedAt is stamped by the leader when the version is added.
	CreatedAt time.Time `json:"created_at"`
	// Reason explains a failed state.
	Reason string `json:"reason,omitempty"`
	// Failures counts replicas of this version that failed before they
	// became ready, since the last one that did; LastFailureAt is the
	// latest such failure. They drive restart backoff and failing a new
	// version.
	Failures      int       `json:"failures,omitempty"`
	LastFailureAt time.Time `json:"last_failure_at"`
}

// IsActive reports whether v is among s's active versions.
func (s *Service) IsActive(v int) bool {
	for _, a := range s.ActiveVersions {
		if a == v {
			return true
		}
	}
	return false
}
