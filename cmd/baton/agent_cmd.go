package main

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/agent"
)

func newAgentCmd() *cobra.Command {
	cfg := agent.DefaultConfig()
	var logs logFlags
	var labels, replicaEnv []string
	var dev bool
	var portRange, logMaxSize string
	var gossipKey gossipKeyFlag
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
			if err := checkTLSFlags(cfg.TLS); err != nil {
				return err
			}
			if len(cfg.Join) > 0 && !cmd.Flags().Changed("nats-url") {
				cfg.NATSURL = "" // learnt from the coordinators over gossip
			}
			// The coordinator fetches replica logs from this server: by
			// default it listens where replicas are reached, not on
			// loopback alone (and two agents of one machine, each on its
			// own --host, do not collide).
			if cmd.Flags().Changed("host") && !cmd.Flags().Changed("http-addr") {
				cfg.HTTPAddr = net.JoinHostPort(cfg.Host, "7403")
			}
			cfg.Labels, err = parseLabels(labels)
			if err != nil {
				return err
			}
			if cfg.ReplicaEnv, err = agent.ParseReplicaEnv(replicaEnv); err != nil {
				return fmt.Errorf("--replica-env: %w", err)
			}
			if cfg.GossipKey, err = gossipKey.key(); err != nil {
				return err
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
	f.StringVar(&cfg.NATSURL, "nats-url", cfg.NATSURL, "NATS server URL, or a comma-separated list (with --join: default the coordinators' NATS URLs, learnt over gossip)")
	f.StringSliceVar(&cfg.Join, "join", nil, "gossip addresses (host:port, comma-separated) of any cluster members, typically the coordinators; joined in the background, retrying until one answers")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", "", "host:port to gossip on, TCP and UDP (default with --join: --host and port 7402)")
	gossipKey.register(cmd)
	registerDaemonTLSFlags(cmd, &cfg.TLS, "agent")
	f.StringSliceVar(&cfg.MountRoots, "mount-root", cfg.MountRoots, "directories under which the agent may create a missing mount point for a file_mounts entry with an absolute target (repeatable; a new top-level directory like /data is always allowed)")
	f.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "listen address for logs, /metrics and /healthz (default: the --host address, port 7403, when --host is given)")
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
