package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/coordinator"
	"github.com/baton-dev/baton/internal/tlsutil"
)

func newCoordinatorCmd() *cobra.Command {
	cfg := coordinator.DefaultConfig()
	var logs logFlags
	var dev bool
	var gossipKey gossipKeyFlag
	var insecure bool
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run a coordinator: Raft state, the HTTP API, the controller and (by default) an embedded NATS server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logs.logger()
			if err != nil {
				return err
			}
			flags := cmd.Flags()
			if err := checkBootstrapFlags(flags.Changed("bootstrap"), cfg.Bootstrap, cfg.BootstrapExpect, cfg.Join); err != nil {
				return err
			}
			if err := checkTLSFlags(cfg.TLS); err != nil {
				return err
			}
			if err := checkSecureDefaults(cfg.TLS.Enabled(), cfg.ACLs, dev, insecure); err != nil {
				return err
			}
			// In a cluster the other machines must reach this one's gossip
			// and NATS: by default on the host of --raft-addr, which Raft
			// already requires to be reachable.
			if host, _, err := net.SplitHostPort(cfg.RaftAddr); err == nil && cfg.Clustered() {
				if !flags.Changed("gossip-addr") {
					cfg.GossipAddr = net.JoinHostPort(host, "7402")
				}
				if !flags.Changed("nats-host") {
					cfg.NATSHost = host
				}
			}
			if dev {
				d := coordinator.DevConfig()
				// Flags given explicitly win over the dev timings.
				d.NodeID, d.DataDir, d.HTTPAddr, d.RaftAddr = cfg.NodeID, cfg.DataDir, cfg.HTTPAddr, cfg.RaftAddr
				d.NATSURL, d.NATSHost, d.NATSPort, d.LBHost, d.FirstLBPort = cfg.NATSURL, cfg.NATSHost, cfg.NATSPort, cfg.LBHost, cfg.FirstLBPort
				d.DebugAddr, d.SnapshotBytes = cfg.DebugAddr, cfg.SnapshotBytes
				d.Bootstrap, d.BootstrapExpect, d.Join, d.GossipAddr, d.NATSClusterPort = cfg.Bootstrap, cfg.BootstrapExpect, cfg.Join, cfg.GossipAddr, cfg.NATSClusterPort
				d.ACLs = cfg.ACLs
				d.TLS = cfg.TLS
				if flags.Changed("raft-timeout") {
					d.RaftTimeout = cfg.RaftTimeout
				}
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
			if cfg.GossipKey, err = gossipKey.key(); err != nil {
				return err
			}
			warnInsecure(logger, cfg.TLS.Enabled(), cfg.ACLs, len(cfg.GossipKey) > 0, cfg.Clustered(), dev, insecure)
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
	f.BoolVar(&cfg.Bootstrap, "bootstrap", cfg.Bootstrap, "bootstrap a single-node cluster when the data dir is empty (a lone coordinator; not with --bootstrap-expect or --join)")
	f.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", 0, "wait until this many coordinators (3 or 5) have found each other over gossip, then bootstrap the cluster with all of them")
	f.StringSliceVar(&cfg.Join, "join", nil, "gossip addresses (host:port, comma-separated) of any members to join; a new coordinator is added as a voter by the leader")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", "", "gossip (memberlist) listen address, TCP and UDP (default in a cluster: the --raft-addr host, port 7402; a lone coordinator gossips only when given one)")
	f.IntVar(&cfg.NATSClusterPort, "nats-cluster-port", cfg.NATSClusterPort, "port (on --nats-host) where the embedded NATS server takes routes from the other coordinators")
	f.DurationVar(&cfg.RaftTimeout, "raft-timeout", cfg.RaftTimeout, "Raft heartbeat and election timeout (hashicorp/raft's default 1s; the leader lease is half of it); lower fails over faster on a quiet LAN")
	f.StringVar(&cfg.NATSURL, "nats-url", "", "external NATS server URL (default: embed one)")
	f.StringVar(&cfg.NATSHost, "nats-host", cfg.NATSHost, "embedded NATS listen host (in a cluster: default the --raft-addr host)")
	f.IntVar(&cfg.NATSPort, "nats-port", cfg.NATSPort, "embedded NATS listen port")
	f.StringVar(&cfg.LBHost, "lb-host", cfg.LBHost, "host shown in service endpoints (where clients reach the LBs)")
	f.IntVar(&cfg.FirstLBPort, "first-lb-port", cfg.FirstLBPort, "lowest LB port given to a service")
	f.DurationVar(&cfg.AgentTimeout, "agent-timeout", cfg.AgentTimeout, "silence after which an agent is lost and its replicas replaced")
	f.DurationVar(&cfg.AgentGCAfter, "agent-gc-after", cfg.AgentGCAfter, "how long a lost agent stays listed before it is forgotten")
	f.DurationVar(&cfg.DrainDelay, "drain-delay", cfg.DrainDelay, "how long a retired replica keeps running after the LBs report no requests in flight to it")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "longest wait for requests in flight to a retired replica before it is stopped")
	f.DurationVar(&cfg.ProgressDeadline, "progress-deadline", cfg.ProgressDeadline, "how long a new version may go without a new READY replica before it fails")
	f.StringVar(&cfg.TLS.CA, "tls-ca", "", "CA certificate (baton-ca.pem from `baton tls ca create`): with --tls-cert and --tls-key, the API is HTTPS and coordinators reach each other with mutual TLS")
	f.StringVar(&cfg.TLS.Cert, "tls-cert", "", "this coordinator's certificate (from `baton tls cert create --server`); needs --tls-ca and --tls-key")
	f.StringVar(&cfg.TLS.Key, "tls-key", "", "the key of --tls-cert; needs --tls-ca and --tls-cert")
	f.BoolVar(&cfg.ACLs, "acl", false, "require an ACL token on every API request but /healthz and /metrics (`baton acl bootstrap` makes the first)")
	f.StringVar(&cfg.DebugAddr, "debug-addr", "", "serve Go's pprof handlers (/debug/pprof/) on this address, e.g. 127.0.0.1:7409 (off by default)")
	f.Int64Var(&cfg.SnapshotBytes, "snapshot-bytes", cfg.SnapshotBytes, "take a Raft snapshot once this many bytes of commands were applied since the last one")
	f.BoolVar(&dev, "dev", false, "use the fast dev timings (short reconcile, drain and agent timeouts); a dev coordinator may run without TLS and ACLs")
	f.BoolVar(&insecure, "insecure", false, "run without TLS (--tls-*) or without ACLs (--acl) outside --dev: anyone who reaches the API or NATS can run commands on every agent (logged loudly)")
	gossipKey.register(cmd)
	_ = cmd.MarkFlagRequired("data-dir")
	logs.register(cmd)
	return cmd
}

// checkTLSFlags refuses some but not all of --tls-ca, --tls-cert and
// --tls-key: a coordinator serves HTTPS with all three or plain HTTP with
// none.
func checkTLSFlags(f tlsutil.Files) error {
	var given, missing []string
	for _, p := range []struct{ flag, value string }{{"--tls-ca", f.CA}, {"--tls-cert", f.Cert}, {"--tls-key", f.Key}} {
		if p.value != "" {
			given = append(given, p.flag)
		} else {
			missing = append(missing, p.flag)
		}
	}
	if len(given) == 0 || len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%s given without %s: TLS needs all three of --tls-ca, --tls-cert and --tls-key (make them with `baton tls ca create` and `baton tls cert create`), or none to run without TLS",
		strings.Join(given, " and "), strings.Join(missing, " and "))
}

// checkSecureDefaults refuses a coordinator that would take requests
// without TLS or without ACL tokens, unless it is a dev coordinator or the
// operator said --insecure: anyone who reaches an open API runs any
// command on every agent.
func checkSecureDefaults(tlsOn, acls, dev, insecure bool) error {
	if tlsOn && acls || dev || insecure {
		return nil
	}
	var missing []string
	if !tlsOn {
		missing = append(missing, "TLS (--tls-ca, --tls-cert, --tls-key)")
	}
	if !acls {
		missing = append(missing, "ACLs (--acl)")
	}
	return fmt.Errorf("refusing to start without %s: anyone who can reach this coordinator's API or NATS could run any command on every agent. "+
		"Set them up as the README's \"Running a secure cluster\" says (baton tls ca create; baton tls cert create --server; --acl, then baton acl bootstrap), "+
		"or pass --insecure to run open anyway (for a trusted network only), or use `baton dev` for a local cluster", strings.Join(missing, " and "))
}

// warnInsecure logs, at error level so it stands out, each protection an
// --insecure (or --dev) coordinator runs without.
func warnInsecure(log *slog.Logger, tlsOn, acls, gossipKey, clustered, dev, insecure bool) {
	if !insecure && !dev {
		return
	}
	var open []string
	if !tlsOn {
		open = append(open, "no TLS: the API, NATS and Raft are plain text and NATS takes anonymous connections")
	}
	if !acls {
		open = append(open, "no ACLs: any API request may deploy, so run commands on every agent")
	}
	if clustered && !gossipKey {
		open = append(open, "no gossip key: gossip is not encrypted")
	}
	if len(open) == 0 {
		return
	}
	flag := "--insecure"
	if dev {
		flag = "--dev"
	}
	log.Error("INSECURE: this coordinator runs open ("+flag+"); do not expose it to an untrusted network", "open", strings.Join(open, "; "))
}

// checkBootstrapFlags refuses --bootstrap (a cluster of one) beside
// --bootstrap-expect or --join: a node that bootstraps alone and then
// joins others would make two clusters.
func checkBootstrapFlags(bootstrapGiven, bootstrap bool, expect int, join []string) error {
	switch {
	case expect < 0:
		return fmt.Errorf("--bootstrap-expect %d: use the number of coordinators (3 or 5)", expect)
	case bootstrapGiven && bootstrap && expect > 0:
		return errors.New("--bootstrap starts a cluster of one and cannot be used with --bootstrap-expect: use --bootstrap-expect N (the same N) on every coordinator of a cluster, or --bootstrap alone for a single coordinator")
	case bootstrapGiven && bootstrap && len(join) > 0:
		return errors.New("--bootstrap starts a cluster of one and cannot be used with --join: drop --bootstrap (the leader adds a coordinator that joins) or use --bootstrap-expect N on every coordinator")
	}
	return nil
}
