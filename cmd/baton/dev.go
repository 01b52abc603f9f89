package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/agent"
	"github.com/baton-dev/baton/coordinator"
	"github.com/baton-dev/baton/lbnode"
)

func newDevCmd() *cobra.Command {
	var (
		logs       logFlags
		agentSpecs []string
		dataDir    string
		httpAddr   string
		raftAddr   string
		natsPort   int
		lbHost     string
		lbAdmin    string
		firstPort  int
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a coordinator, agents and an LB in one process, for trying baton on one machine",
		Long: `Run a whole baton cluster in one process: a single-node coordinator with
an embedded NATS server, one agent per --agent flag and one LB node.

  baton dev --agent cpus=2 --agent cpus=2 --agent cpus=4 --agent cpus=4,accelerators=A100:1

Agents given accelerators get fake GPUs of that name; all agents share this
machine (the coordinator gives each replica a port no other replica on it
holds). Replicas run as the user running baton dev, each in a cgroup of its
own where cgroups can be written. Stop it with Ctrl-C: every replica
process is stopped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logs.logger()
			if err != nil {
				return err
			}
			if len(agentSpecs) == 0 {
				agentSpecs = []string{""}
			}
			specs := make([]agentSpec, len(agentSpecs))
			for i, s := range agentSpecs {
				if specs[i], err = parseAgentSpec(s); err != nil {
					return err
				}
			}
			if dataDir == "" {
				dataDir, err = os.MkdirTemp("", "baton-dev-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dataDir)
			}
			reg := prometheus.NewRegistry()

			ccfg := coordinator.DevConfig()
			ccfg.DataDir = filepath.Join(dataDir, "coordinator")
			ccfg.HTTPAddr = httpAddr
			ccfg.RaftAddr = raftAddr
			ccfg.NATSPort = natsPort
			ccfg.LBHost = lbHost
			ccfg.FirstLBPort = firstPort
			ccfg.Logger = logger
			ccfg.Registry = reg
			coord, err := coordinator.New(ccfg)
			if err != nil {
				return err
			}
			natsURL := coord.NATSURL()

			var runners []func(context.Context) error
			runners = append(runners, coord.Run)
			for i, spec := range specs {
				acfg := agent.DevConfig()
				acfg.ID = fmt.Sprintf("agent-%d", i+1)
				acfg.NATSURL = natsURL
				acfg.HTTPAddr = "127.0.0.1:0"
				acfg.DataDir = filepath.Join(dataDir, acfg.ID)
				acfg.CPUs, acfg.MemoryGB, acfg.Accelerators, acfg.Region = spec.cpus, spec.memory, spec.accelerators, spec.region
				if acfg.Region == "" {
					acfg.Region = "local"
				}
				acfg.Logger = logger
				acfg.Registry = reg
				a, err := agent.New(acfg)
				if err != nil {
					return err
				}
				runners = append(runners, a.Run)
			}
			lcfg := lbnode.DevConfig()
			lcfg.ID = "lb-1"
			lcfg.NATSURL = natsURL
			lcfg.BindHost = lbHost
			lcfg.AdminAddr = lbAdmin
			lcfg.Logger = logger
			lcfg.Registry = reg
			lb, err := lbnode.New(lcfg)
			if err != nil {
				return err
			}
			runners = append(runners, lb.Run)

			ctx, cancel := signalContext(cmd.Context())
			defer cancel()
			fmt.Fprintf(cmd.ErrOrStderr(), "baton dev: API http://%s, NATS %s, %d agents, LB on %s (admin %s). Ctrl-C stops everything.\n",
				coord.HTTPAddr(), natsURL, len(specs), lbHost, lb.AdminAddr())
			return runAll(ctx, cancel, runners)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&agentSpecs, "agent", nil, "add an agent: cpus=N,memory=GB,accelerators=A100:1,region=R (repeatable; default one agent with this machine's capacity)")
	f.StringVar(&dataDir, "data-dir", "", "keep state here (default: a temporary directory removed at exit)")
	f.StringVar(&httpAddr, "http-addr", "127.0.0.1:7400", "coordinator API address")
	f.StringVar(&raftAddr, "raft-addr", "127.0.0.1:7401", "Raft address")
	f.IntVar(&natsPort, "nats-port", 4222, "embedded NATS port")
	f.StringVar(&lbHost, "lb-host", "127.0.0.1", "host the LB's service ports listen on")
	f.StringVar(&lbAdmin, "lb-admin-addr", "127.0.0.1:7404", "LB /metrics and /healthz address")
	f.IntVar(&firstPort, "first-lb-port", 30001, "lowest LB port given to a service")
	logs.register(cmd)
	return cmd
}

// runAll runs every component until ctx ends or one fails; then it stops
// the rest and waits for all of them.
func runAll(ctx context.Context, cancel context.CancelFunc, runners []func(context.Context) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(runners))
	for i, run := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errs[i] = err
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
