package main

import (
	"net"

	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/lbnode"
)

func newLBCmd() *cobra.Command {
	cfg := lbnode.DefaultConfig()
	var logs logFlags
	var dev bool
	var gossipKey gossipKeyFlag
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
			if err := checkTLSFlags(cfg.TLS); err != nil {
				return err
			}
			if cfg.GossipKey, err = gossipKey.key(); err != nil {
				return err
			}
			if len(cfg.Join) > 0 && !cmd.Flags().Changed("nats-url") {
				cfg.NATSURL = "" // learnt from the coordinators over gossip
			}
			// Two LBs of one machine, each on its own --bind-host, do not
			// collide on the admin port.
			if cmd.Flags().Changed("bind-host") && !cmd.Flags().Changed("admin-addr") && cfg.BindHost != "" && cfg.BindHost != "0.0.0.0" && cfg.BindHost != "::" {
				cfg.AdminAddr = net.JoinHostPort(cfg.BindHost, "7404")
			}
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
	f.StringVar(&cfg.NATSURL, "nats-url", cfg.NATSURL, "NATS server URL, or a comma-separated list (with --join: default the coordinators' NATS URLs, learnt over gossip)")
	f.StringSliceVar(&cfg.Join, "join", nil, "gossip addresses (host:port, comma-separated) of any cluster members, typically the coordinators; joined in the background, retrying until one answers")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", "", "host:port to gossip on, TCP and UDP (default with --join: --bind-host and port 7402)")
	gossipKey.register(cmd)
	registerDaemonTLSFlags(cmd, &cfg.TLS, "lb")
	f.StringVar(&cfg.BindHost, "bind-host", cfg.BindHost, "host every service port listens on")
	f.StringVar(&cfg.AdminAddr, "admin-addr", cfg.AdminAddr, "listen address for /metrics, /healthz and /v1/routes")
	f.DurationVar(&cfg.SyncInterval, "sync-interval", cfg.SyncInterval, "how often to re-fetch every route table")
	f.BoolVar(&dev, "dev", false, "use the fast dev timings")
	logs.register(cmd)
	return cmd
}
