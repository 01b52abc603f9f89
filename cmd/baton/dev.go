package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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
		layout     = devLayout{coordinators: 1}
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
process is stopped.

--coordinators 3 (or 5) runs that many coordinators, a Raft cluster that
survives the loss of 1 (or 2). Each takes a loopback address of its own:
the first the host of --http-addr and --raft-addr (127.0.0.1), the others
the next ones (127.0.0.2, 127.0.0.3, ...), all on the same ports. Point the
CLI at all of them:

  baton dev --coordinators 3
  export BATON_ADDR=http://127.0.0.1:7400,http://127.0.0.2:7400,http://127.0.0.3:7400
  baton operator raft list-peers
  baton operator members

The agents and the LB join the coordinators' gossip too (on ports the OS
picks), so operator members lists them.

(On macOS only 127.0.0.1 answers by default; add the others first, e.g.
sudo ifconfig lo0 alias 127.0.0.2 up.)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logs.logger()
			if err != nil {
				return err
			}
			if err := layout.check(); err != nil {
				return err
			}
			if w := layout.warning(); w != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
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
			layout.dataDir = dataDir
			ccfgs, err := layout.configs()
			if err != nil {
				return err
			}
			reg := prometheus.NewRegistry()

			var runners []func(context.Context) error
			var coords []*coordinator.Server
			var natsURLs []string
			for _, ccfg := range ccfgs {
				ccfg.LBHost = lbHost
				ccfg.FirstLBPort = firstPort
				ccfg.Logger = logger
				ccfg.Registry = reg
				if len(ccfgs) > 1 {
					// One registry for the process: each coordinator's
					// series carry its node id.
					ccfg.Registry = prometheus.WrapRegistererWith(prometheus.Labels{"coordinator": ccfg.NodeID}, reg)
					ccfg.Gatherer = reg
				}
				coord, err := coordinator.New(ccfg)
				if err != nil {
					if len(ccfgs) > 1 {
						err = fmt.Errorf("coordinator %s: %w%s", ccfg.NodeID, err, loopbackHint())
					}
					return err
				}
				coords = append(coords, coord)
				natsURLs = append(natsURLs, coord.NATSURL())
				runners = append(runners, coord.Run)
			}
			// Agents and the LB know every coordinator's NATS server, so
			// that they reconnect to another when one goes. With several
			// coordinators they also join the coordinators' gossip pool
			// (`baton operator members` lists them, and one that stops
			// answering is declared failed there).
			natsURL := strings.Join(natsURLs, ",")
			join := gossipJoin(ccfgs)

			for i, spec := range specs {
				acfg := agent.DevConfig()
				acfg.ID = fmt.Sprintf("agent-%d", i+1)
				acfg.NATSURL = natsURL
				acfg.HTTPAddr = "127.0.0.1:0"
				acfg.Join, acfg.GossipAddr = join, memberGossipAddr(join, acfg.Host)
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
			lcfg.Join, lcfg.GossipAddr = join, memberGossipAddr(join, lbHost)
			lcfg.Logger = logger
			lcfg.Registry = reg
			lb, err := lbnode.New(lcfg)
			if err != nil {
				return err
			}
			runners = append(runners, lb.Run)

			ctx, cancel := signalContext(cmd.Context())
			defer cancel()
			w := cmd.ErrOrStderr()
			if len(coords) == 1 {
				fmt.Fprintf(w, "baton dev: API http://%s, NATS %s, %d agents, LB on %s (admin %s). Ctrl-C stops everything.\n",
					coords[0].HTTPAddr(), natsURL, len(specs), lbHost, lb.AdminAddr())
			} else {
				apis := make([]string, len(coords))
				for i, c := range coords {
					apis[i] = "http://" + c.HTTPAddr()
					fmt.Fprintf(w, "baton dev: coordinator %s: API %s, Raft %s, gossip %s, NATS %s\n",
						ccfgs[i].NodeID, apis[i], ccfgs[i].RaftAddr, ccfgs[i].GossipAddr, natsURLs[i])
				}
				fmt.Fprintf(w, "baton dev: %d coordinators, %d agents, LB on %s (admin %s). Ctrl-C stops everything. To use them:\n",
					len(coords), len(specs), lbHost, lb.AdminAddr())
				fmt.Fprintf(w, "export BATON_ADDR=%s\n", strings.Join(apis, ","))
			}
			return runAll(ctx, cancel, runners)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&agentSpecs, "agent", nil, "add an agent: cpus=N,memory=GB,accelerators=A100:1,region=R (repeatable; default one agent with this machine's capacity)")
	f.StringVar(&dataDir, "data-dir", "", "keep state here (default: a temporary directory removed at exit)")
	f.IntVar(&layout.coordinators, "coordinators", 1, "how many coordinators to run (3 or 5 for a Raft cluster that survives losing 1 or 2), each on its own loopback address")
	f.StringVar(&layout.httpAddr, "http-addr", "127.0.0.1:7400", "coordinator API address (of the first coordinator; the others take the next loopback addresses, same port)")
	f.StringVar(&layout.raftAddr, "raft-addr", "127.0.0.1:7401", "Raft address (of the first coordinator, as --http-addr)")
	f.IntVar(&layout.gossipPort, "gossip-port", 7402, "gossip (memberlist) port of each coordinator, on its API host, when there are several")
	f.IntVar(&layout.natsPort, "nats-port", 4222, "embedded NATS port (of each coordinator, on its API host when there are several)")
	f.IntVar(&layout.natsClusterPort, "nats-cluster-port", 6222, "NATS cluster route port of each coordinator, on its API host, when there are several")
	f.StringVar(&lbHost, "lb-host", "127.0.0.1", "host the LB's service ports listen on")
	f.StringVar(&lbAdmin, "lb-admin-addr", "127.0.0.1:7404", "LB /metrics and /healthz address")
	f.IntVar(&firstPort, "first-lb-port", 30001, "lowest LB port given to a service")
	logs.register(cmd)
	return cmd
}

// devLayout is where `baton dev` puts its coordinators.
type devLayout struct {
	coordinators int
	// httpAddr and raftAddr are the first coordinator's; the others take
	// the next loopback IPs after each host, on the same ports.
	httpAddr, raftAddr string
	// gossipPort, natsPort and natsClusterPort are every coordinator's,
	// on its API host (NATS: with several coordinators only).
	gossipPort, natsPort, natsClusterPort int
	dataDir                               string
}

// check refuses a number of coordinators that cannot run.
func (l devLayout) check() error {
	if l.coordinators < 1 {
		return fmt.Errorf("--coordinators %d: run at least 1 (3 or 5 make a cluster that survives losing 1 or 2)", l.coordinators)
	}
	return nil
}

// warning returns a warning about the layout, or "".
func (l devLayout) warning() string {
	if n := l.coordinators; n > 1 && n%2 == 0 {
		return fmt.Sprintf("--coordinators %d: an even number adds no fault tolerance (a majority of %d is %d, so it survives losing %d, as %d does); use %d",
			n, n, n/2+1, (n-1)/2, n-1, n+1)
	}
	return ""
}

// configs returns each coordinator's Config (without LB, logger and
// registry settings). One coordinator is the single-node dev cluster it
// has always been: bootstrapped alone, no gossip. Several are c1..cN, each
// on its own loopback IP, bootstrapping together once all N have found
// each other over gossip.
func (l devLayout) configs() ([]coordinator.Config, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	if l.coordinators == 1 {
		c := coordinator.DevConfig()
		c.DataDir = filepath.Join(l.dataDir, "coordinator")
		c.HTTPAddr = l.httpAddr
		c.RaftAddr = l.raftAddr
		c.NATSPort = l.natsPort
		return []coordinator.Config{c}, nil
	}
	httpHosts, httpPort, err := loopbackHosts("--http-addr", l.httpAddr, l.coordinators)
	if err != nil {
		return nil, err
	}
	raftHosts, raftPort, err := loopbackHosts("--raft-addr", l.raftAddr, l.coordinators)
	if err != nil {
		return nil, err
	}
	if l.gossipPort < 1 || l.gossipPort > 65535 {
		return nil, fmt.Errorf("--gossip-port %d: give a port from 1 to 65535 (the coordinators find each other there)", l.gossipPort)
	}
	gossip := make([]string, l.coordinators)
	for i, h := range httpHosts {
		gossip[i] = net.JoinHostPort(h, strconv.Itoa(l.gossipPort))
	}
	cfgs := make([]coordinator.Config, l.coordinators)
	for i := range cfgs {
		c := coordinator.DevConfig()
		c.NodeID = fmt.Sprintf("c%d", i+1)
		c.DataDir = filepath.Join(l.dataDir, c.NodeID)
		c.HTTPAddr = net.JoinHostPort(httpHosts[i], httpPort)
		c.RaftAddr = net.JoinHostPort(raftHosts[i], raftPort)
		c.GossipAddr = gossip[i]
		c.Bootstrap = false
		c.BootstrapExpect = l.coordinators
		for j, g := range gossip {
			if j != i {
				c.Join = append(c.Join, g)
			}
		}
		c.NATSHost = httpHosts[i]
		c.NATSPort = l.natsPort
		c.NATSClusterPort = l.natsClusterPort
		cfgs[i] = c
	}
	return cfgs, nil
}

// gossipJoin returns the coordinators' gossip addresses for agents and LBs
// to join: none for the single-node dev cluster, which has no gossip.
func gossipJoin(ccfgs []coordinator.Config) []string {
	var join []string
	for _, c := range ccfgs {
		if c.Clustered() {
			join = append(join, c.GossipAddr)
		}
	}
	return join
}

// memberGossipAddr is the gossip address of an agent or LB of baton dev
// on host: a port the OS picks there (memberlist binds TCP on port 0,
// then UDP on the same port), so that it never clashes with a
// coordinator's or another member's on the same loopback address; "" (no
// gossip) where there is nothing to join.
func memberGossipAddr(join []string, host string) string {
	if len(join) == 0 {
		return ""
	}
	return net.JoinHostPort(host, "0")
}

// loopbackHosts returns n hosts for addr (host:port, host an IPv4 loopback
// address): its own, then the next n-1 addresses, with its port.
func loopbackHosts(flag, addr string, n int) ([]string, string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", fmt.Errorf("%s %q: %v (use host:port, like 127.0.0.1:7400)", flag, addr, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Is4() || !ip.IsLoopback() {
		return nil, "", fmt.Errorf("%s %q: with %d coordinators give an IPv4 loopback address, like 127.0.0.1%s (the others take the next addresses, 127.0.0.2 and on, same port)",
			flag, addr, n, addr[len(host):])
	}
	hosts := make([]string, n)
	for i := range hosts {
		if !ip.IsLoopback() {
			return nil, "", fmt.Errorf("%s %q: %d coordinators do not fit in 127.0.0.0/8 from %s on", flag, addr, n, host)
		}
		hosts[i] = ip.String()
		ip = ip.Next()
	}
	return hosts, port, nil
}

// loopbackHint is added to a coordinator's failure to start when several
// run: on macOS only 127.0.0.1 is set up.
func loopbackHint() string {
	if runtime.GOOS == "darwin" {
		return " (on macOS, add each loopback address first, e.g. sudo ifconfig lo0 alias 127.0.0.2 up)"
	}
	return ""
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
