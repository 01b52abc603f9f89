package coordinator

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/tlsutil"
)

// Config configures a coordinator. Zero fields take DefaultConfig's values
// in New.
type Config struct {
	// NodeID is this coordinator's Raft server id. Default "coord-1".
	NodeID string
	// DataDir holds the Raft log (raft-wal) and snapshots (raft/), and
	// this coordinator's copies of the bundles (bundles/). Required.
	DataDir string
	// HTTPAddr is the API listen address. Default 127.0.0.1:7400.
	HTTPAddr string
	// RaftAddr is the Raft transport address. Default 127.0.0.1:7401.
	RaftAddr string
	// Bootstrap makes a fresh node start a single-node cluster. Default
	// true; it cannot be combined with BootstrapExpect or Join (New
	// refuses the mix).
	Bootstrap bool
	// BootstrapExpect, when above 0, makes a fresh node wait until that
	// many coordinators (itself included) have found each other over
	// gossip, then bootstrap the cluster with all of them. Default 0.
	BootstrapExpect int
	// Join lists gossip addresses (host:port) of members to join: any
	// coordinator, agent or LB of the cluster. A fresh node that joins
	// without BootstrapExpect waits to be added as a voter by the leader.
	// Default none.
	Join []string
	// GossipAddr is the memberlist (gossip) listen address, TCP and UDP.
	// Default: for a node with Join or BootstrapExpect, the RaftAddr host
	// with port 7402; a lone coordinator gossips only when given one.
	GossipAddr string
	// GossipKey, if set, encrypts gossip (AES, 16, 24 or 32 bytes); every
	// coordinator, agent and LB of the cluster needs the same key, and a
	// node with another key or none cannot join. Default none: plain gossip.
	GossipKey []byte
	// NATSClusterPort is where the embedded NATS server accepts routes from
	// the other coordinators' servers (on NATSHost), when this node is part
	// of a cluster (BootstrapExpect or Join set). Default 6222; -1 picks a
	// free port.
	NATSClusterPort int
	// NATSURL names an external NATS server. Empty (the default) embeds one
	// on NATSHost:NATSPort.
	NATSURL string
	// NATSHost and NATSPort are where the embedded NATS listens. Defaults
	// 127.0.0.1 and 4222; -1 picks a free port.
	NATSHost string
	NATSPort int
	// LBHost is the host shown in service endpoints (where clients reach
	// the LBs). Default 127.0.0.1.
	LBHost string
	// FirstLBPort is the lowest LB port given to a service. Default 30001.
	FirstLBPort int
	// ReconcileInterval is how often the controller runs without being
	// kicked. Default 1s.
	ReconcileInterval time.Duration
	// RepairInterval is how often an unchanged desired set or route table
	// is sent again, in case a message was lost (each at its own time,
	// give or take a quarter). Changes are sent at once. Default 30s.
	RepairInterval time.Duration
	// SnapshotBytes takes a Raft snapshot (compacting the log) once this
	// many bytes of commands were applied since the last one, besides
	// hashicorp/raft's own threshold of 2048 entries. Default 32 MiB.
	SnapshotBytes int64
	// TLS names the CA, certificate and key (made by `baton tls`) this
	// coordinator uses: with a CA set, the API is HTTPS, and coordinators
	// reach each other (forwarding, Raft) with mutual TLS. Default none.
	TLS tlsutil.Files
	// ACLs requires an ACL token on every API request but /healthz and
	// /metrics (see acl.go); `baton acl bootstrap` makes the first one.
	// Default false.
	ACLs bool
	// DebugAddr, when set, serves Go's pprof handlers (/debug/pprof/) on
	// this address. Default off.
	DebugAddr string
	// AgentTimeout is how long an agent may stay silent before it is lost
	// and its replicas are replaced. Agents send a heartbeat every second
	// (500 ms in dev). Default 5s.
	AgentTimeout time.Duration
	// AgentGCAfter is how long a lost agent stays listed (with its
	// capacity) before it is forgotten. Default 24h.
	AgentGCAfter time.Duration
	// ReportGrace is how long a placed replica may go unreported by its
	// (alive) agent before it is FAILED. Default 30s.
	ReportGrace time.Duration
	// AckTimeout bounds the wait for every live LB to acknowledge a table
	// without a retired replica. Default 5s.
	AckTimeout time.Duration
	// DrainTimeout bounds the wait, after that, for the LBs' requests in
	// flight to a retired replica to finish before it is stopped (long
	// generations on a model server, say). Default 2m.
	DrainTimeout time.Duration
	// DrainDelay is how long a retired replica keeps running after the LBs
	// report no requests in flight to it. Default 1s.
	DrainDelay time.Duration
	// LBLiveness is how long an LB counts as live after its last ack.
	// Default 20s.
	LBLiveness time.Duration
	// FailedReplicaTTL is how long a FAILED replica stays visible in
	// status after it was replaced. Default 10m.
	FailedReplicaTTL time.Duration
	// ProgressDeadline is how long a new version may go without a new READY
	// replica, beyond its initial_delay_seconds, before it fails and the old
	// version keeps serving. Default 10m.
	ProgressDeadline time.Duration
	// MaxConsecutiveFailures fails a rolling-out version after this many
	// replica failures in a row. Default 3 per min_replica (at least 3).
	MaxConsecutiveFailures int
	// RestartBackoff is the first delay before replacing a failed replica;
	// it doubles with each failure in a row up to MaxRestartBackoff.
	// Defaults 1s and 1m.
	RestartBackoff    time.Duration
	MaxRestartBackoff time.Duration
	// RaftTimeout scales Raft's heartbeat, election and lease timeouts.
	// Default 1s (hashicorp/raft's defaults); tests use 50ms.
	RaftTimeout time.Duration
	// BundleGrace is how long a bundle no stored version names is kept
	// (counted from its upload, and from when the leader last saw a
	// version name it) before the leader deletes it; a file of a bundle
	// that was never committed (an upload that failed half way) is removed
	// after as long. Default 1h (10m in dev).
	BundleGrace time.Duration
	// BundleRepairInterval is how often each coordinator makes sure it
	// holds every committed bundle, fetching a missing one from another
	// coordinator, and removes the files of deleted ones. It also looks
	// soon after each bundle is added or deleted. Default 10s.
	BundleRepairInterval time.Duration

	Logger   *slog.Logger
	Registry prometheus.Registerer
	// Gatherer serves /metrics; default: Registry if it is a Gatherer.
	Gatherer prometheus.Gatherer
}

// DefaultConfig is for production coordinators.
func DefaultConfig() Config {
	return Config{
		NodeID:                 "coord-1",
		HTTPAddr:               "127.0.0.1:7400",
		RaftAddr:               "127.0.0.1:7401",
		NATSClusterPort:        6222,
		Bootstrap:              true,
		NATSHost:               "127.0.0.1",
		NATSPort:               4222,
		LBHost:                 "127.0.0.1",
		FirstLBPort:            30001,
		ReconcileInterval:      time.Second,
		RepairInterval:         30 * time.Second,
		SnapshotBytes:          32 << 20,
		AgentTimeout:           5 * time.Second,
		AgentGCAfter:           24 * time.Hour,
		ReportGrace:            30 * time.Second,
		AckTimeout:             5 * time.Second,
		DrainTimeout:           2 * time.Minute,
		DrainDelay:             time.Second,
		LBLiveness:             20 * time.Second,
		FailedReplicaTTL:       10 * time.Minute,
		ProgressDeadline:       10 * time.Minute,
		MaxConsecutiveFailures: 3,
		RestartBackoff:         time.Second,
		MaxRestartBackoff:      time.Minute,
		RaftTimeout:            time.Second,
		BundleGrace:            time.Hour,
		BundleRepairInterval:   10 * time.Second,
	}
}

// DevConfig is for `baton dev` and tests: faster loops, shorter waits.
func DevConfig() Config {
	c := DefaultConfig()
	c.ReconcileInterval = 200 * time.Millisecond
	c.RepairInterval = 10 * time.Second
	c.AgentTimeout = 3 * time.Second
	c.AgentGCAfter = 10 * time.Minute
	c.ReportGrace = 10 * time.Second
	c.AckTimeout = 3 * time.Second
	c.DrainTimeout = 30 * time.Second
	c.DrainDelay = 500 * time.Millisecond
	c.LBLiveness = 10 * time.Second
	c.FailedReplicaTTL = 2 * time.Minute
	c.RestartBackoff = 500 * time.Millisecond
	c.MaxRestartBackoff = 10 * time.Second
	c.BundleGrace = 10 * time.Minute
	return c
}

// Clustered reports whether this node is (to be) one of several
// coordinators: it bootstraps with others or joins them.
func (c Config) Clustered() bool { return c.BootstrapExpect > 0 || len(c.Join) > 0 }

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setStr := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	setDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	setStr(&c.NodeID, d.NodeID)
	setStr(&c.HTTPAddr, d.HTTPAddr)
	setStr(&c.RaftAddr, d.RaftAddr)
	if c.NATSClusterPort == 0 {
		c.NATSClusterPort = d.NATSClusterPort
	}
	setStr(&c.NATSHost, d.NATSHost)
	setStr(&c.LBHost, d.LBHost)
	if c.NATSPort == 0 {
		c.NATSPort = d.NATSPort
	}
	if c.FirstLBPort == 0 {
		c.FirstLBPort = d.FirstLBPort
	}
	if c.MaxConsecutiveFailures == 0 {
		c.MaxConsecutiveFailures = d.MaxConsecutiveFailures
	}
	setDur(&c.ReconcileInterval, d.ReconcileInterval)
	setDur(&c.RepairInterval, d.RepairInterval)
	if c.SnapshotBytes == 0 {
		c.SnapshotBytes = d.SnapshotBytes
	}
	setDur(&c.AgentTimeout, d.AgentTimeout)
	setDur(&c.AgentGCAfter, d.AgentGCAfter)
	setDur(&c.ReportGrace, d.ReportGrace)
	setDur(&c.AckTimeout, d.AckTimeout)
	setDur(&c.DrainTimeout, d.DrainTimeout)
	setDur(&c.DrainDelay, d.DrainDelay)
	setDur(&c.LBLiveness, d.LBLiveness)
	setDur(&c.FailedReplicaTTL, d.FailedReplicaTTL)
	setDur(&c.ProgressDeadline, d.ProgressDeadline)
	setDur(&c.RestartBackoff, d.RestartBackoff)
	setDur(&c.MaxRestartBackoff, d.MaxRestartBackoff)
	setDur(&c.RaftTimeout, d.RaftTimeout)
	setDur(&c.BundleGrace, d.BundleGrace)
	setDur(&c.BundleRepairInterval, d.BundleRepairInterval)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		reg := prometheus.NewRegistry()
		c.Registry = reg
		c.Gatherer = reg
	}
	if c.Gatherer == nil {
		if g, ok := c.Registry.(prometheus.Gatherer); ok {
			c.Gatherer = g
		} else {
			c.Gatherer = prometheus.NewRegistry()
		}
	}
	return c
}
