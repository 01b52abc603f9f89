// Package agent is baton's per-machine agent: it reports the machine's
// capacity (CPUs, memory, GPUs), runs the replicas the coordinator assigns
// to it as child process groups, probes their readiness, reports their
// states over NATS and serves their logs over HTTP.
//
// Life of a replica: the coordinator publishes the full set of replicas the
// agent should run (protocol.DesiredReplicas), naming each version's spec by
// digest, which the agent fetches once and caches (see specs.go); the agent
// starts each new one (PROVISIONING while setup runs, STARTING once run
// started, READY after a probe got HTTP 200, NOT_READY when a later probe
// fails) and stops each one that left the set (SHUTTING_DOWN until its
// process group is gone, then it is no longer reported). A replica that
// ends on its own (FAILED, FAILED_INITIAL_DELAY, FAILED_PROBING) is never
// restarted: it is reported until it leaves the desired set, and the
// coordinator replaces it with a new replica id.
//
// Isolation: each replica runs under a shim (see shim.go), in a cgroup of
// its own with limits from its resources (memory.max, cpu.max, pids.max)
// where cgroups can be written, as an unprivileged user when the agent is
// root, with a documented base environment and nothing else of the
// agent's (see replicaEnv).
//
// No orphans: the agent stops a replica (SIGTERM to every process of it, a
// grace period, SIGKILL) on removal and when Run returns. If the agent
// dies, the kernel signals each shim, which stops its tree; the next agent
// start kills whatever an earlier run left (cgroups and process groups
// recorded in the replica directories).
//
// See DESIGN.md, "Replicas on an agent" and "Messages".
package agent

import (
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// Config configures an Agent. Zero fields take the defaults given in their
// comments (DefaultConfig fills them explicitly).
type Config struct {
	// ID names the agent; it is a NATS subject token: 1-63 lowercase
	// letters, digits and '-'. Default: derived from the host name
	// (protocol.AgentIDFromHostname), so "GPU-Node.example.com" becomes
	// "gpu-node-example-com".
	ID string
	// NATSURL is the NATS server, or a comma-separated list of servers, to
	// connect to. Default nats://127.0.0.1:4222, unless Join is set: then
	// empty means the NATS URLs of the alive coordinators learnt over
	// gossip (Run waits for one).
	NATSURL string
	// GossipAddr is host:port where the agent joins the gossip pool (TCP
	// and UDP). Default: no gossip unless Join is set, then Host:7402.
	GossipAddr string
	// Join lists the gossip addresses (host:port) of any pool members,
	// typically the coordinators; the agent joins them in the background,
	// retrying until one answers. Default none (no gossip unless
	// GossipAddr is set).
	Join []string
	// GossipKey encrypts gossip (16, 24 or 32 bytes; the same on every
	// member). Default none.
	GossipKey []byte
	// TLS names the CA and this agent's certificate and key (made by
	// `baton tls cert create --agent --node <ID>`). With a CA set, the
	// agent connects to NATS with TLS, authenticated by that certificate
	// (whose node must be ID), and serves logs over HTTPS to coordinators
	// only. Default none.
	TLS tlsutil.Files
	// HTTPAddr is where the logs, /metrics and /healthz server listens.
	// Default 127.0.0.1:7403; ":0" picks a free port (see Agent.HTTPAddr).
	HTTPAddr string
	// Host is the address replicas are reached at, advertised in their
	// endpoints and used by readiness probes. Default 127.0.0.1. Several
	// agents on one machine use 127.0.0.11, 127.0.0.12, ...
	Host string
	// Region and Labels are reported to the coordinator for placement.
	Region string
	Labels map[string]string
	// DataDir holds one directory per replica,
	// DataDir/replicas/<service>-<id>/, with its log file replica.log.
	// Default ./baton-agent-data.
	DataDir string
	// CPUs and MemoryGB override the detected capacity; 0 = detect
	// (runtime.NumCPU, MemTotal from /proc/meminfo).
	CPUs     float64
	MemoryGB float64
	// Accelerators, when set, replaces NVML with fake GPUs (gpu.Fake) built
	// from a spec like "A100:1" or "A100:2,H100:1". For tests and demos.
	Accelerators string
	// HeartbeatInterval is how often the agent publishes its status even
	// when nothing changed. Default 1s.
	HeartbeatInterval time.Duration
	// ProbeInterval is how often a replica's readiness is probed. Default 2s.
	ProbeInterval time.Duration
	// ProbeFailureThreshold is how many consecutive failed probes a replica
	// that was READY may have (it is NOT_READY meanwhile); one more and it
	// is FAILED_PROBING and stopped. Default 3.
	ProbeFailureThreshold int
	// StopGrace is the wait between SIGTERM and SIGKILL when stopping a
	// replica's process group. Default 10s.
	StopGrace time.Duration
	// ReplicaDirTTL is how long the directory and log of a replica this
	// agent no longer runs are kept (for `baton serve logs`). Default 24h.
	ReplicaDirTTL time.Duration
	// ReplicaUser is who replicas run as: a user name or numeric uid.
	// Default: "nobody" when the agent runs as root, as Nomad's exec
	// driver does; otherwise the agent's own user (an agent that is not
	// root cannot switch users). "root" runs replicas as root. DevConfig
	// uses the agent's own user.
	ReplicaUser string
	// ReplicaEnv are environment variables every replica gets besides the
	// documented base (PATH, HOME, USER, LOGNAME, SHELL, LANG, TMPDIR) and
	// baton's own; a task's envs override them. Nothing else of the
	// agent's environment reaches replicas. Default none.
	ReplicaEnv map[string]string
	// CgroupParent is the cgroup (relative to each hierarchy's root) under
	// which the agent creates <CgroupParent>/<ID>/<service>-<id> for each
	// replica. "-" turns cgroups off. Default "baton.slice". Where cgroups
	// cannot be written the agent logs why once and tracks each replica's
	// process tree with a child subreaper instead (no resource limits).
	CgroupParent string
	// ReplicaPidsMax bounds the processes and threads of one replica
	// (pids.max of its cgroup). Default 8192.
	ReplicaPidsMax int64
	// PortRange is where the coordinator picks ports for replicas whose
	// task names none or whose port is taken. Default 10000-29999: below
	// the LB ports and outside Linux's ephemeral range, so an outgoing
	// connection cannot take a port before its replica binds it.
	PortRange protocol.PortRange
	// NetNS identifies the agent's network namespace for the coordinator
	// (agents that share one share ports). Default: read from the kernel
	// (boot id and /proc/self/ns/net); tests may set it.
	NetNS string
	// LogMaxBytes is the size at which a replica's log file is rotated
	// (replica.log becomes replica.log.1, and so on). Default 10 MiB.
	LogMaxBytes int64
	// SpecFetchTimeout bounds the fetching of the specs one desired set
	// names by digest and the agent has not cached (requests on
	// baton.specs.get, several at once): a replica whose spec has not
	// arrived by then is not started yet. Default 5s.
	SpecFetchTimeout time.Duration
	// MountRoots are where the agent may create a missing mount point for
	// a file_mounts entry with an absolute target (the mount itself is the
	// replica's own; the empty directory or file it needs stays on the
	// machine). A target that exists already, or whose first missing
	// directory is a new top-level one (/data, /models), needs none.
	// Default /mnt, /opt, /srv and /data.
	MountRoots []string
	// BundleCache is how many unpacked bundles (versions' code) the agent
	// keeps in DataDir/bundles, least recently used out; one a replica is
	// being placed from is never removed. Default 8.
	BundleCache int
	// SpecRetryMin and SpecRetryMax bound the backoff with which the agent
	// retries fetching the specs of the last desired set's replicas it
	// could not start: first SpecRetryMin after the failure, doubling up
	// to SpecRetryMax. Defaults 1s and 30s.
	SpecRetryMin time.Duration
	SpecRetryMax time.Duration
	// LogMaxFiles is how many log files a replica keeps, the current one
	// included, so its logs take at most LogMaxBytes × LogMaxFiles on disk.
	// Default 5.
	LogMaxFiles int
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Registry receives the agent's metrics, each with the const label
	// agent=<ID> so that several agents may share one registry (baton dev).
	// Default: a new registry of the agent's own, served at /metrics.
	Registry prometheus.Registerer
	// Gatherer is what /metrics serves. Default: Registry when it is also a
	// Gatherer (a *prometheus.Registry is), else the agent's metrics only.
	Gatherer prometheus.Gatherer
}

// DefaultConfig returns the production defaults. ID must still be set.
func DefaultConfig() Config {
	return Config{
		NATSURL:               "nats://127.0.0.1:4222",
		HTTPAddr:              "127.0.0.1:7403",
		Host:                  "127.0.0.1",
		DataDir:               "baton-agent-data",
		HeartbeatInterval:     time.Second,
		ProbeInterval:         2 * time.Second,
		ProbeFailureThreshold: 3,
		StopGrace:             10 * time.Second,
		ReplicaDirTTL:         24 * time.Hour,
		LogMaxBytes:           10 << 20,
		LogMaxFiles:           5,
		CgroupParent:          "baton.slice",
		ReplicaPidsMax:        8192,
		PortRange:             protocol.PortRange{Min: 10000, Max: 29999},
		SpecFetchTimeout:      5 * time.Second,
		BundleCache:           8,
		MountRoots:            []string{"/mnt", "/opt", "/srv", "/data"},
		SpecRetryMin:          time.Second,
		SpecRetryMax:          30 * time.Second,
	}
}

// DevConfig returns defaults for `baton dev`: an agent "dev-1" with faster
// probes and a shorter stop grace, running replicas as the agent's own
// user (whoever runs `baton dev`).
func DevConfig() Config {
	cfg := DefaultConfig()
	cfg.ID = "dev-1"
	if u, err := user.Current(); err == nil {
		cfg.ReplicaUser = u.Username
	}
	cfg.HeartbeatInterval = 500 * time.Millisecond
	cfg.ProbeInterval = time.Second
	cfg.StopGrace = 5 * time.Second
	return cfg
}

// withDefaults validates cfg and fills its zero fields.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.ID == "" {
		host, err := os.Hostname()
		if err != nil {
			return cfg, fmt.Errorf("no agent id given and the host name is unknown (%v); set --id", err)
		}
		cfg.ID = protocol.AgentIDFromHostname(host)
	}
	if err := protocol.ValidateAgentID(cfg.ID); err != nil {
		return cfg, fmt.Errorf("--id: %w", err)
	}
	if err := checkTLS(cfg.TLS, cfg.ID); err != nil {
		return cfg, err
	}
	def := DefaultConfig()
	if cfg.NATSURL == "" && len(cfg.Join) == 0 {
		cfg.NATSURL = def.NATSURL
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = def.HTTPAddr
	}
	if cfg.Host == "" {
		cfg.Host = def.Host
	}
	if cfg.GossipAddr == "" && len(cfg.Join) > 0 {
		cfg.GossipAddr = membership.DefaultBindAddr(cfg.Host)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = def.DataDir
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return cfg, fmt.Errorf("data dir %q: %w", cfg.DataDir, err)
	}
	cfg.DataDir = abs
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = def.HeartbeatInterval
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = def.ProbeInterval
	}
	if cfg.ProbeFailureThreshold <= 0 {
		cfg.ProbeFailureThreshold = def.ProbeFailureThreshold
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = def.StopGrace
	}
	if cfg.ReplicaDirTTL <= 0 {
		cfg.ReplicaDirTTL = def.ReplicaDirTTL
	}
	if cfg.LogMaxBytes <= 0 {
		cfg.LogMaxBytes = def.LogMaxBytes
	}
	if cfg.LogMaxFiles <= 0 {
		cfg.LogMaxFiles = def.LogMaxFiles
	}
	if cfg.SpecFetchTimeout <= 0 {
		cfg.SpecFetchTimeout = def.SpecFetchTimeout
	}
	if cfg.BundleCache == 0 {
		cfg.BundleCache = def.BundleCache
	}
	if cfg.MountRoots == nil {
		cfg.MountRoots = def.MountRoots
	}
	for _, r := range cfg.MountRoots {
		if !filepath.IsAbs(r) || filepath.Clean(r) != r || r == "/" {
			return cfg, fmt.Errorf("--mount-root %q: use a clean absolute directory other than /", r)
		}
	}
	if cfg.SpecRetryMin <= 0 {
		cfg.SpecRetryMin = def.SpecRetryMin
	}
	if cfg.SpecRetryMax <= 0 {
		cfg.SpecRetryMax = def.SpecRetryMax
	}
	if cfg.SpecRetryMax < cfg.SpecRetryMin {
		cfg.SpecRetryMax = cfg.SpecRetryMin
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = def.CgroupParent
	}
	if cfg.ReplicaPidsMax <= 0 {
		cfg.ReplicaPidsMax = def.ReplicaPidsMax
	}
	if cfg.PortRange == (protocol.PortRange{}) {
		cfg.PortRange = def.PortRange
	}
	if r := cfg.PortRange; r.Min < 1 || r.Max > 65535 || r.Min > r.Max {
		return cfg, fmt.Errorf("port range %d-%d: use two ports from 1 to 65535, the lower first (e.g. 10000-29999)", r.Min, r.Max)
	}
	if err := protocol.ValidateEnvs(cfg.ReplicaEnv); err != nil {
		return cfg, fmt.Errorf("replica env: %w", err)
	}
	if cfg.CPUs < 0 || cfg.MemoryGB < 0 {
		return cfg, fmt.Errorf("cpus %g / memory %g GB: must not be negative (0 = detect)", cfg.CPUs, cfg.MemoryGB)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}
