// Command clusterbench measures a coordinator cluster run as separate
// processes on loopback addresses (127.0.102.x), started with the flags
// users give (`make bench` runs it):
//
//	a. leader failover: kill -9 of the leader -> a new leader, and -> a
//	   write accepted, over several kills, with the default Raft timeouts
//	   and with --raft-timeout 500ms and 300ms;
//	b. API writes (POST /v1/services): sequential latency and the
//	   throughput of 16 concurrent clients, on 1 and 3 coordinators;
//	c. agent failure detection: kill -9 of an agent -> GET /v1/agents
//	   shows it not alive, with gossip (--join) and heartbeats only
//	   (--nats-url).
//
//	go run ./internal/clusterbench --baton bin/baton [--json]
//
// Every loop is bounded in count and time; every process is killed at the
// end, on a failure (after its last log lines are printed) and on Ctrl-C.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-dev/baton/internal/localcluster"
)

// options are the command's flags.
type options struct {
	bin          string
	json         bool
	keep         bool
	parts        string
	kills        int
	raftTimeouts []string
	// writesRaftTimeout is the 3-node write clusters' --raft-timeout.
	writesRaftTimeout string
	agentKills        int
	seqWrites         int
	clients           int
	throughput        time.Duration
	maxWrites         int
	budget            time.Duration
}

func main() {
	var o options
	var timeouts string
	flag.StringVar(&o.bin, "baton", "bin/baton", "baton binary to run")
	flag.BoolVar(&o.json, "json", false, "print the figures as JSON instead of a table")
	flag.BoolVar(&o.keep, "keep", false, "keep the logs and data dirs (kept anyway on a failure)")
	flag.StringVar(&o.parts, "parts", "abc", "which measurements to run: a (failover), b (writes), c (agent failure detection)")
	flag.IntVar(&o.kills, "kills", 10, "leader kills per Raft timeout setting")
	flag.StringVar(&timeouts, "raft-timeouts", "default,500ms,300ms", "Raft timeout settings to measure failover with (default: no --raft-timeout, 1s)")
	flag.StringVar(&o.writesRaftTimeout, "writes-raft-timeout", "default", "--raft-timeout of the 3-coordinator write figures (default: none, 1s)")
	flag.IntVar(&o.agentKills, "agent-kills", 5, "agent kills per detection kind")
	flag.IntVar(&o.seqWrites, "seq-writes", 300, "sequential writes per latency figure")
	flag.IntVar(&o.clients, "clients", 16, "concurrent clients of the throughput figures")
	flag.DurationVar(&o.throughput, "throughput-time", 5*time.Second, "how long each throughput figure runs")
	flag.IntVar(&o.maxWrites, "max-writes", 50000, "most writes of one throughput figure")
	flag.DurationVar(&o.budget, "budget", 4*time.Minute+45*time.Second, "the whole run stops (and fails) after this long")
	flag.Parse()
	o.raftTimeouts = strings.Split(timeouts, ",")
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "clusterbench:", err)
		os.Exit(2)
	}
	res, err := run(o)
	if res != nil {
		if o.json {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(res)
		} else {
			res.print(os.Stdout)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "clusterbench failed:", err)
		os.Exit(1)
	}
}

func (o options) check() error {
	for _, p := range o.parts {
		if !strings.ContainsRune("abc", p) {
			return fmt.Errorf("--parts %q: use letters of abc", o.parts)
		}
	}
	for _, t := range append([]string{o.writesRaftTimeout}, o.raftTimeouts...) {
		if t == "default" {
			continue
		}
		if d, err := time.ParseDuration(t); err != nil || d <= 0 || d > time.Second {
			return fmt.Errorf("--raft-timeouts: %q: give default or a duration up to 1s", t)
		}
	}
	if o.kills < 1 || o.kills > 50 || o.agentKills < 1 || o.agentKills > 50 {
		return errors.New("--kills and --agent-kills: 1 to 50")
	}
	if o.seqWrites < 10 || o.clients < 1 || o.maxWrites < 1 || o.throughput <= 0 {
		return errors.New("--seq-writes (at least 10), --clients, --max-writes and --throughput-time must be positive")
	}
	return nil
}

// bench is one run: its scratch directory and every launcher it made (so
// that Ctrl-C kills every process).
type bench struct {
	o    options
	bin  string
	root string
	ctx  context.Context

	mu    sync.Mutex
	procs []*localcluster.Procs
}

// The loopback addresses of each cluster: a fresh set per cluster, so
// that nothing of one (gossip, NATS routes) reaches the next.
var (
	failoverHosts = [][]string{
		{"127.0.102.1", "127.0.102.2", "127.0.102.3"},
		{"127.0.102.4", "127.0.102.5", "127.0.102.6"},
		{"127.0.102.7", "127.0.102.8", "127.0.102.9"},
		{"127.0.102.10", "127.0.102.11", "127.0.102.12"},
		{"127.0.102.13", "127.0.102.14", "127.0.102.15"},
	}
	singleHost     = []string{"127.0.102.20"}
	writesHosts    = [][]string{{"127.0.102.21", "127.0.102.22", "127.0.102.23"}, {"127.0.102.24", "127.0.102.25", "127.0.102.26"}}
	detectHosts    = []string{"127.0.102.31", "127.0.102.32", "127.0.102.33"}
	gossipAgents   = []string{"127.0.102.41", "127.0.102.42", "127.0.102.43"}
	heartbeatHosts = []string{"127.0.102.51", "127.0.102.52", "127.0.102.53"}
)

func run(o options) (res *results, err error) {
	if len(o.raftTimeouts) > len(failoverHosts) {
		return nil, fmt.Errorf("--raft-timeouts: at most %d settings", len(failoverHosts))
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("baton binary: %w (run make build)", err)
	}
	root, err := os.MkdirTemp("", "baton-clusterbench-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil || o.keep {
			fmt.Fprintf(os.Stderr, "clusterbench: the logs and data dirs are kept in %s\n", root)
			return
		}
		os.RemoveAll(root)
	}()
	// Agents running as root run replicas as nobody, who must be able to
	// reach their data dirs.
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.budget)
	defer cancel()
	b := &bench{o: o, bin: bin, root: root, ctx: ctx}

	// Ctrl-C (or SIGTERM): kill every process and the scratch directory.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		s, ok := <-sig
		if !ok {
			return
		}
		b.killAll()
		os.RemoveAll(root)
		fmt.Fprintf(os.Stderr, "clusterbench: %s: every process killed\n", s)
		os.Exit(130)
	}()
	defer b.killAll()

	res = &results{Machine: fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())}
	start := time.Now()
	defer func() { res.Took = time.Since(start).Round(time.Second).String() }()
	if strings.Contains(o.parts, "a") {
		for i, t := range o.raftTimeouts {
			r, err := b.failover(failoverHosts[i], t)
			if r != nil {
				res.Failover = append(res.Failover, *r)
			}
			if err != nil {
				return res, fmt.Errorf("failover (raft timeout %s): %w", t, err)
			}
		}
	}
	if strings.Contains(o.parts, "b") {
		if err := b.writes(res); err != nil {
			return res, fmt.Errorf("writes: %w", err)
		}
	}
	if strings.Contains(o.parts, "c") {
		if err := b.detection(res); err != nil {
			return res, fmt.Errorf("agent failure detection: %w", err)
		}
	}
	return res, nil
}

// progress reports what the run is doing, on stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// newProcs returns a launcher logging under root/name.
func (b *bench) newProcs(name string) (*localcluster.Procs, error) {
	dir := filepath.Join(b.root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ps := localcluster.NewProcs(b.bin, dir)
	b.mu.Lock()
	b.procs = append(b.procs, ps)
	b.mu.Unlock()
	return ps, nil
}

func (b *bench) killAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ps := range b.procs {
		ps.KillAllNow()
	}
}

// startCluster starts coordinators on hosts (with extra flags) and waits
// until they are all healthy. The caller runs finish when done with it.
func (b *bench) startCluster(name string, hosts []string, extra ...string) (*localcluster.Cluster, error) {
	ps, err := b.newProcs(name)
	if err != nil {
		return nil, err
	}
	coords, err := localcluster.Coordinators(hosts, ps.Dir, extra...)
	if err != nil {
		return nil, err
	}
	cl := localcluster.NewCluster(ps, coords)
	progress("%s: starting %d coordinator(s) on %s: baton %s", name, len(hosts), strings.Join(hosts, ", "), strings.Join(coords[0].Args, " "))
	if err := cl.StartAll(); err != nil {
		return cl, err
	}
	if err := cl.WaitHealthy(30 * time.Second); err != nil {
		return cl, err
	}
	return cl, nil
}

// finish kills a cluster's processes, after printing their last log
// lines if *err is set.
func finish(ps *localcluster.Procs, err *error) {
	if ps == nil {
		return
	}
	if *err != nil {
		ps.LogTails(os.Stderr, 20)
	}
	ps.StopAll(0)
}

// errOutOfTime is returned when the run's budget is spent.
func (b *bench) outOfTime() error {
	if b.ctx.Err() != nil {
		return fmt.Errorf("out of time: the run's budget of %s is spent", b.o.budget)
	}
	return nil
}
