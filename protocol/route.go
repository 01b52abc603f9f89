package protocol

// RouteTable is what an LB needs to serve one service. The leader publishes
// it on RoutesSubject(service); an LB applies it only when Epoch is newer
// than the table it holds.
type RouteTable struct {
	Service string `json:"service"`
	// Epoch is the Raft index of the state the table was computed from.
	Epoch  uint64 `json:"epoch"`
	Port   int    `json:"port"`
	Policy string `json:"policy"`
	// ActiveVersions are the versions routed to.
	ActiveVersions []int      `json:"active_versions"`
	Endpoints      []Endpoint `json:"endpoints"`
	// Deleted tells LBs to stop serving the service and free its port.
	Deleted bool `json:"deleted,omitempty"`
	// ResponseTimeoutSeconds is the task's service.response_timeout_seconds
	// (0: no limit): how long the LB waits for a replica's response headers.
	ResponseTimeoutSeconds int `json:"response_timeout_seconds,omitempty"`
}

// Endpoint is one READY replica an LB may send requests to.
type Endpoint struct {
	ReplicaID int    `json:"replica_id"`
	Version   int    `json:"version"`
	Address   string `json:"address"` // host:port
}

// RouteSync is the reply to a sync request: every service's table.
type RouteSync struct {
	Tables []RouteTable `json:"tables"`
}

// LBAck tells the leader which epoch an LB serves for each service, and
// which replicas that are no longer in its tables still have requests in
// flight. An LB sends it after applying tables, when a retired replica's
// last request ends, and every sync interval.
type LBAck struct {
	LBID   string            `json:"lb_id"`
	Epochs map[string]uint64 `json:"epochs"`
	// Draining maps the address (host:port) of each replica the LB no
	// longer routes to but still has requests in flight to, to their count.
	Draining map[string]int64 `json:"draining,omitempty"`
}

// Response headers the LB adds so clients (and tests) can see which replica
// served a request.
const (
	HeaderVersion = "X-Baton-Version"
	HeaderReplica = "X-Baton-Replica"
)
