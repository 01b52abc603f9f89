package coordinator

import "errors"

// Errors returned by FSM commands and the API. Callers check them with
// errors.Is.
var (
	// ErrServiceNotFound means no service has the given name.
	ErrServiceNotFound = errors.New("service not found")
	// ErrServiceExists means `up` named a service that already exists.
	ErrServiceExists = errors.New("service already exists")
	// ErrServiceDeleting means the service is shutting down and takes no
	// more changes.
	ErrServiceDeleting = errors.New("service is shutting down")
	// ErrRolloutChanged means a flip or failure was proposed for a rollout
	// that has since ended or been superseded.
	ErrRolloutChanged = errors.New("rollout changed")
	// ErrNoPortsLeft means every LB port is taken.
	ErrNoPortsLeft = errors.New("no free LB port")
	// ErrNotLeader means this coordinator is not the Raft leader; the
	// command was not applied and may be retried.
	ErrNotLeader = errors.New("not the leader")
	// ErrOutcomeUnknown means leadership was lost while a command was in
	// flight: it may or may not have been applied.
	ErrOutcomeUnknown = errors.New("leadership lost while applying; the change may or may not have been made")
	// ErrACLBootstrapped means the ACLs were bootstrapped before.
	ErrACLBootstrapped = errors.New("ACLs were already bootstrapped")
	// ErrTokenNotFound means no token has the given accessor id.
	ErrTokenNotFound = errors.New("ACL token not found")
	// ErrTokenExists means a token with that accessor id exists.
	ErrTokenExists = errors.New("ACL token exists")
	// ErrBundleNotFound means a bundle is not in the cluster's state
	// (never uploaded, or deleted as unused).
	ErrBundleNotFound = errors.New("bundle not in the cluster")
	// ErrBundleInUse means a bundle cannot be deleted: a stored version
	// names it.
	ErrBundleInUse = errors.New("bundle in use")
)
