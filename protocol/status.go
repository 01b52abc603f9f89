package protocol

// ReplicaStatus is the life-cycle state of one replica, named as SkyServe
// names them.
type ReplicaStatus string

// Replica states. A replica moves PENDING -> PROVISIONING -> STARTING ->
// READY, may fall to NOT_READY and come back, and ends in SHUTTING_DOWN (then
// it is deleted) or one of the FAILED states.
const (
	ReplicaPending            ReplicaStatus = "PENDING"      // no agent fits yet
	ReplicaProvisioning       ReplicaStatus = "PROVISIONING" // placed, setup running
	ReplicaStarting           ReplicaStatus = "STARTING"     // run started, no probe passed yet
	ReplicaReady              ReplicaStatus = "READY"
	ReplicaNotReady           ReplicaStatus = "NOT_READY" // a probe failed after READY, or the replica failed and is stopping
	ReplicaShuttingDown       ReplicaStatus = "SHUTTING_DOWN"
	ReplicaFailed             ReplicaStatus = "FAILED"               // the process exited or setup failed
	ReplicaFailedInitialDelay ReplicaStatus = "FAILED_INITIAL_DELAY" // no probe passed within initial_delay_seconds
	ReplicaFailedProbing      ReplicaStatus = "FAILED_PROBING"       // probes kept failing after READY
	ReplicaFailedPlacement    ReplicaStatus = "FAILED_PLACEMENT"
)

// IsFailed reports whether s is one of the terminal FAILED states.
func (s ReplicaStatus) IsFailed() bool {
	switch s {
	case ReplicaFailed, ReplicaFailedInitialDelay, ReplicaFailedProbing, ReplicaFailedPlacement:
		return true
	}
	return false
}

// IsTerminal reports whether a replica in state s will never serve again.
func (s ReplicaStatus) IsTerminal() bool {
	return s.IsFailed() || s == ReplicaShuttingDown
}

// ServiceStatus is the state of a whole service, named as SkyServe names them.
type ServiceStatus string

// Service states.
const (
	ServiceControllerInit ServiceStatus = "CONTROLLER_INIT"
	ServiceReplicaInit    ServiceStatus = "REPLICA_INIT"
	ServiceReady          ServiceStatus = "READY"
	ServiceNoReplica      ServiceStatus = "NO_REPLICA"
	ServiceShuttingDown   ServiceStatus = "SHUTTING_DOWN"
	ServiceFailed         ServiceStatus = "FAILED"
)

// VersionState is the state of one version of a service.
type VersionState string

// Version states.
const (
	VersionPending VersionState = "pending" // being rolled out, not yet routed to
	VersionActive  VersionState = "active"  // in the set the LBs route to
	VersionRetired VersionState = "retired" // replaced by a newer version
	VersionFailed  VersionState = "failed"  // could not reach min_replicas; rolled back
)

// Update modes.
const (
	UpdateBlueGreen = "blue_green"
	UpdateRolling   = "rolling"
)

// Load-balancing policies.
const (
	PolicyRoundRobin = "round_robin"
	PolicyLeastLoad  = "least_load"
)
