package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/agent"
	"github.com/baton-dev/baton/coordinator"
	"github.com/baton-dev/baton/lbnode"
	"github.com/baton-dev/baton/protocol"
)

func newCoordinatorCmd() *cobra.Command {
	cfg := coordinator.DefaultConfig()
	var logs logFlags
	var dev bool
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run a coordinator: Raft state, the HTTP API, the controller and (by default) an embedded NATS server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logs.logger()
			if err != nil {
				return err
			}
			if dev {
				d := coordinator.DevConfig()
				flags := cmd.Flags()
				// Flags given explicitly win over the dev timings.
				d.NodeID, d.DataDir, d.HTTPAddr, d.RaftAddr = cfg.NodeID, cfg.DataDir, cfg.HTTPAddr, cfg.RaftAddr
				d.NATSURL, d.NATSHost, d.NATSPort, d.LBHost, d.FirstLBPort = cfg.NATSURL, cfg.NATSHost, cfg.NATSPort, cfg.LBHost, cfg.FirstLBPort
				d.DebugAddr, d.SnapshotBytes = cfg.DebugAddr, cfg.SnapshotBytes
				if flags.Changed("agent-timeout") {
					d.AgentTimeout = cfg.AgentTimeout
				}
				if flags.Changed("agent-gc-after") {
					d.AgentGCAfter = cfg.AgentGCAfter
				}
				if flags.Changed("drain-delay") {
					d.DrainDelay = cfg.DrainDelay
				}
				if flags.Changed("drain-timeout") {
					d.DrainTimeout = cfg.DrainTimeout
				}
				if flags.Changed("progress-deadline") {
					d.ProgressDeadline = cfg.ProgressDeadline
				}
				cfg = d
			}
			cfg.Logger = logger
			s, err := coordinator.New(cfg)
			if err != nil {
				return err
			}
			ctx, cancel := signalContext(cmd.Context())
			defer cancel()
			return s.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "this coordinator's Raft server id")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the Raft log and snapshots (required)")
	f.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "HTTP API listen address")
	f.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "Raft transport address")
	f.BoolVar(&cfg.Bootstrap, "bootstrap", cfg.Bootstrap, "bootstrap a single-node cluster when the data dir is empty")
	f.StringVar(&cfg.NATSURL, "nats-url", "", "external NATS server URL (default: embed one)")
	f.StringVar(&cfg.NATSHost, "nats-host", cfg.NATSHost, "embedded NATS listen host")
	f.IntVar(&cfg.NATSPort, "nats-port", cfg.NATSPort, "embedded NATS listen port")
	f.StringVar(&cfg.LBHost, "lb-host", cfg.LBHost, "host shown in service endpoints (where clients reach the LBs)")
	f.IntVar(&cfg.FirstLBPort, "first-lb-port", cfg.FirstLBPort, "lowest LB port given to a service")
	f.DurationVar(&cfg.AgentTimeout, "agent-timeout", cfg.AgentTimeout, "silence after which an agent is lost and its replicas replaced")
	f.DurationVar(&cfg.AgentGCAfter, "agent-gc-after", cfg.AgentGCAfter, "how long a lost agent stays listed before it is forgotten")
	f.DurationVar(&cfg.DrainDelay, "drain-delay", cfg.DrainDelay, "how long a retired replica keeps running after the LBs report no requests in flight to it")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "longest wait for requests in flight to a retired replica before it is stopped")
	f.DurationVar(&cfg.ProgressDeadline, "progress-deadline", cfg.ProgressDeadline, "how long a new version may go without a new READY replica before it fails")
	f.StringVar(&cfg.DebugAddr, "debug-addr", "", "serve Go's pprof handlers (/debug/pprof/) on this address, e.g. 127.0.0.1:7409 (off by default)")
	f.Int64Var(&cfg.SnapshotBytes, "snapshot-bytes", cfg.SnapshotBytes, "take a Raft snapshot once this many bytes of commands were applied since the last one")
	f.BoolVar(&dev, "dev", false, "use the fast dev timings (short reconcile, drain and agent timeouts)")
	_ = cmd.MarkFlagRequired("data-dir")
	logs.register(cmd)
	return cmd
}

func newAgentCmd() *cobra.Command {
	cfg := agent.DefaultConfig()
	var logs logFlags
	var labels, replicaEnv []string
	var dev bool
	var portRange, logMaxSize string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run an agent: report this machine's capacity and run the replicas assigned to it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logs.logger()
			if err != nil {
				return err
			}
			cfg.Logger = logger
			cfg.Labels, err = parseLabels(labels)
			if err != nil {
				return err
			}
			if cfg.ReplicaEnv, err = agent.ParseReplicaEnv(replicaEnv); err != nil {
				return fmt.Errorf("--replica-env: %w", err)
			}
			if cfg.PortRange, err = parsePortRange(portRange); err != nil {
				return err
			}
			if cfg.LogMaxBytes, err = parseSize(logMaxSize); err != nil {
				return fmt.Errorf("--replica-log-max-size: %w", err)
			}
			if dev {
				d := agent.DevConfig()
				if !cmd.Flags().Changed("probe-interval") {
					cfg.ProbeInterval = d.ProbeInterval
				}
				if !cmd.Flags().Changed("stop-grace") {
					cfg.StopGrace = d.StopGrace
				}
				cfg.HeartbeatInterval = d.HeartbeatInterval
			}
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			ctx, cancel := signalContext(cmd.Context())
			defer cancel()
			return a.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ID, "id", "", "agent id: 1-63 lowercase letters, digits and dashes (default: derived from the host name, e.g. gpu-node-example-com)")
	f.StringVar(&cfg.NATSURL, "nats-url", cfg.NATSURL, "NATS server URL")
	f.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "listen address for logs, /metrics and /healthz")
	f.StringVar(&cfg.Host, "host", cfg.Host, "address replicas on this machine are reached at")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for replica work dirs and logs")
	f.Float64Var(&cfg.CPUs, "cpus", 0, "CPUs to offer (default: all detected)")
	f.Float64Var(&cfg.MemoryGB, "memory", 0, "memory to offer in GiB (default: all detected)")
	f.StringVar(&cfg.Accelerators, "accelerators", "", `fake GPUs instead of NVML, like "A100:1" or "A100:2,H100:1" (testing)`)
	f.StringVar(&cfg.Region, "region", "", "region label shown in status")
	f.StringSliceVar(&labels, "label", nil, "key=value label (repeatable)")
	f.DurationVar(&cfg.ProbeInterval, "probe-interval", cfg.ProbeInterval, "readiness probe interval")
	f.DurationVar(&cfg.StopGrace, "stop-grace", cfg.StopGrace, "wait between SIGTERM and SIGKILL when stopping a replica")
	f.DurationVar(&cfg.ReplicaDirTTL, "replica-dir-ttl", cfg.ReplicaDirTTL, "how long the directory and log of a stopped replica are kept")
	f.StringVar(&cfg.ReplicaUser, "replica-user", "", `user replicas run as (default "nobody" when the agent is root, else the agent's own user; "root" to run them as root)`)
	f.StringArrayVar(&replicaEnv, "replica-env", nil, "KEY=VALUE (or KEY, to pass the agent's own) that every replica gets; nothing else of the agent's environment reaches replicas (repeatable)")
	f.StringVar(&cfg.CgroupParent, "cgroup-parent", cfg.CgroupParent, `cgroup under which each replica gets its own (<parent>/<agent id>/<service>-<id>); "-" turns cgroups off`)
	f.Int64Var(&cfg.ReplicaPidsMax, "replica-pids-max", cfg.ReplicaPidsMax, "most processes and threads one replica may have (pids.max)")
	f.StringVar(&portRange, "port-range", fmt.Sprintf("%d-%d", cfg.PortRange.Min, cfg.PortRange.Max), "ports the coordinator picks replica ports from when a task names none or its port is taken")
	f.StringVar(&logMaxSize, "replica-log-max-size", "10MiB", "size at which a replica's log is rotated (replica.log -> replica.log.1 ...), like 10MiB or 512KiB")
	f.IntVar(&cfg.LogMaxFiles, "replica-log-max-files", cfg.LogMaxFiles, "log files kept per replica, the current one included")
	f.BoolVar(&dev, "dev", false, "use the fast dev timings")
	logs.register(cmd)
	return cmd
}

func newLBCmd() *cobra.Command {
	cfg := lbnode.DefaultConfig()
	var logs logFlags
	var dev bool
	cmd := &cobra.Command{
		Use:   "lb",
		Short: "Run an LB node: serve each service's port and route to its ready replicas",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logs.logger()
			if err != nil {
				return err
			}
			cfg.Logger = logger
			if dev {
				d := lbnode.DevConfig()
				cfg.SyncInterval, cfg.DialTimeout, cfg.ShutdownTimeout = d.SyncInterval, d.DialTimeout, d.ShutdownTimeout
			}
			n, err := lbnode.New(cfg)
			if err != nil {
				return err
			}
			ctx, cancel := signalContext(cmd.Context())
			defer cancel()
			return n.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ID, "id", cfg.ID, "LB id used in acks and stats")
	f.StringVar(&cfg.NATSURL, "nats-url", cfg.NATSURL, "NATS server URL")
	f.StringVar(&cfg.BindHost, "bind-host", cfg.BindHost, "host every service port listens on")
	f.StringVar(&cfg.AdminAddr, "admin-addr", cfg.AdminAddr, "listen address for /metrics, /healthz and /v1/routes")
	f.DurationVar(&cfg.SyncInterval, "sync-interval", cfg.SyncInterval, "how often to re-fetch every route table")
	f.BoolVar(&dev, "dev", false, "use the fast dev timings")
	logs.register(cmd)
	return cmd
}

// parsePortRange reads "10000-29999".
func parsePortRange(s string) (protocol.PortRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if !ok || err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return protocol.PortRange{}, fmt.Errorf("--port-range %q: use two ports from 1 to 65535, the lower first (e.g. 10000-29999)", s)
	}
	return protocol.PortRange{Min: a, Max: b}, nil
}

// parseSize reads a byte size: 1048576, 10MiB, 10M, 512KiB, 1GiB (powers
// of 1024; KB, MB and GB mean the same, as in SkyPilot).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 1 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size; use a whole number of bytes or one with a unit, like 10MiB or 512KiB", s)
	}
	return n * mult, nil
}

func parseLabels(in []string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: use key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

// agentSpec is one `baton dev --agent` value: cpus=4,memory=16,accelerators=A100:1,region=r.
type agentSpec struct {
	cpus, memory float64
	accelerators string
	region       string
}

// parseAgentSpec reads `cpus=4,memory=16,accelerators=A100:2,H100:1`. A
// piece without '=' continues the previous value, so accelerator lists need
// no quoting.
func parseAgentSpec(s string) (agentSpec, error) {
	var spec agentSpec
	var last string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			if last != "accelerators" {
				return spec, fmt.Errorf("--agent %q: %q is not key=value (keys: cpus, memory, accelerators, region)", s, part)
			}
			spec.accelerators += "," + part
			continue
		}
		last = k
		var err error
		switch k {
		case "cpus":
			spec.cpus, err = strconv.ParseFloat(v, 64)
		case "memory":
			spec.memory, err = strconv.ParseFloat(strings.TrimSuffix(strings.ToUpper(v), "GB"), 64)
		case "accelerators", "gpus":
			spec.accelerators = v
			last = "accelerators"
		case "region":
			spec.region = v
		default:
			return spec, fmt.Errorf("--agent %q: unknown key %q (keys: cpus, memory, accelerators, region)", s, k)
		}
		if err != nil {
			return spec, fmt.Errorf("--agent %q: %s=%q is not a number", s, k, v)
		}
	}
	return spec, nil
}
