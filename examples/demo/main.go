// Command demo is `make demo`: it starts `baton dev` with agents of two
// sizes, walks through DESIGN.md's seed story with the real CLI (up,
// status, update, status, down) while a load of concurrent requests runs on
// the service's endpoint, and prints the figures: requests sent, failed,
// served per version, time from update to flip and from flip to the old
// replicas gone. It exits non-zero if any request failed, and leaves no
// process behind.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/loadgen"
	"github.com/baton-dev/baton/internal/localcluster"
	"github.com/baton-dev/baton/internal/procscan"
	"github.com/baton-dev/baton/protocol"
)

func main() {
	bin := flag.String("baton", "bin/baton", "baton binary to run")
	workers := flag.Int("workers", 8, "concurrent clients of the load")
	flag.Parse()
	if err := run(*bin, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

type demo struct {
	bin     string
	dir     string
	work    string // a world-readable copy of examples/, where the CLI runs
	addrs   []string
	procs   *localcluster.Procs
	cluster *localcluster.Cluster
}

// The demo's machines, each its own loopback address: three coordinators,
// four agents and one LB.
var (
	coordHosts = []string{"127.0.100.1", "127.0.100.2", "127.0.100.3"}
	agentHosts = []string{"127.0.100.11", "127.0.100.12", "127.0.100.13", "127.0.100.14"}
	agentCPUs  = []string{"2", "2", "4", "4"}
	lbHost     = "127.0.100.21"
)

func run(bin string, workers int) (err error) {
	bin, err = filepath.Abs(bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "baton-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// Agents running as root run replicas as nobody, who must be able to
	// read the example's workdir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	d := &demo{bin: bin, dir: dir, work: filepath.Join(dir, "work"), procs: localcluster.NewProcs(bin, dir)}
	if err := os.CopyFS(filepath.Join(d.work, "examples"), os.DirFS("examples")); err != nil {
		return fmt.Errorf("copy examples: %w", err)
	}
	defer func() {
		d.procs.StopAll(30 * time.Second)
		if left := procscan.WithEnv("BATON_SERVICE=http-server"); len(left) > 0 {
			err = errors.Join(err, fmt.Errorf("replica processes left behind: %v", left))
		}
		if err != nil {
			d.procs.LogTails(os.Stderr, 25)
		}
	}()
	if err := d.startCluster(); err != nil {
		return err
	}
	if _, err := d.cli("operator", "raft", "list-peers"); err != nil {
		return err
	}
	if _, err := d.cli("operator", "members"); err != nil {
		return err
	}

	// 1. up
	if _, err := d.cli("serve", "up", "examples/http_server/task.yaml", "-n", "http-server", "-y"); err != nil {
		return err
	}
	st, err := d.waitFor(90*time.Second, "2 READY replicas of version 1", func(st protocol.StatusResponse) bool {
		return countReady(st, 1) >= 2
	})
	if err != nil {
		return err
	}
	endpoint := st.Services[0].Endpoint
	if _, err := d.cli("serve", "status", "http-server"); err != nil {
		return err
	}

	// 2. load on the endpoint for the whole update: plain requests and
	// server-sent event streams
	say("\n# load: %d concurrent clients and 2 event streams on http://%s/ until the old replicas are gone", workers, endpoint)
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	loadDone := make(chan []loadgen.Result, 1)
	go func() {
		loadDone <- loadgen.Run(ctx, loadgen.Config{URL: "http://" + endpoint + "/", Workers: workers, MaxDuration: 5 * time.Minute})
	}()
	streamsDone := make(chan loadgen.StreamResult, 1)
	go func() { streamsDone <- loadgen.Streams(ctx, "http://"+endpoint+"/stream", 2, 5, 100000) }()
	time.Sleep(2 * time.Second) // version-1 traffic before the update

	// 3. update, and kill -9 the leader while it is under way
	updateAt := time.Now()
	if _, err := d.cli("serve", "update", "http-server", "examples/http_server/task_v2.yaml", "-y"); err != nil {
		return err
	}
	if _, err := d.cli("serve", "status", "http-server"); err != nil {
		return err
	}
	failover, killed, err := d.killLeader()
	if err != nil {
		return err
	}

	// 4. the flip, then the old replicas going
	var flipAt, goneAt time.Time
	shownShutdown := false
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if time.Now().After(deadline) {
			stopLoad()
			<-loadDone
			return errors.New("the update did not finish within 3 minutes")
		}
		st, err := d.status()
		if err == nil && len(st.Services) == 1 {
			svc := st.Services[0]
			if flipAt.IsZero() && len(svc.ActiveVersions) == 1 && svc.ActiveVersions[0] == 2 {
				flipAt = time.Now()
				say("\n# flipped to version 2 after %s", flipAt.Sub(updateAt).Round(time.Millisecond))
			}
			old := 0
			for _, r := range st.Replicas {
				if r.Version == 1 {
					old++
				}
			}
			if !flipAt.IsZero() && old > 0 && !shownShutdown {
				shownShutdown = true
				if _, err := d.cli("serve", "status", "http-server"); err != nil {
					return err
				}
			}
			if !flipAt.IsZero() && old == 0 {
				goneAt = time.Now()
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // version-2 traffic after the old replicas are gone
	stopLoad()
	results := <-loadDone
	streams := <-streamsDone

	// 5. the killed coordinator comes back with its data dir and rejoins
	say("\n# %s restarts with its data dir", killed)
	if err := d.cluster.StartCoordinator(killed); err != nil {
		return err
	}
	if err := d.cluster.WaitPeers(3, 30*time.Second); err != nil {
		return err
	}
	if _, err := d.cli("operator", "raft", "list-peers"); err != nil {
		return err
	}
	if _, err := d.cli("serve", "status", "http-server"); err != nil {
		return err
	}
	if err := d.logsTail("http-server", "3", 5); err != nil {
		return err
	}

	// 6. down
	if _, err := d.cli("serve", "down", "http-server", "-y", "--wait"); err != nil {
		return err
	}

	sum := loadgen.Summarize(results)
	say("\n=== figures ===")
	say("coordinators / agents / LBs:           3 / %d / 1 (separate processes)", len(agentHosts))
	say("requests sent:                         %d", sum.Sent)
	say("requests failed:                       %d", sum.Failed)
	say("served by version 1:                   %d", sum.ByVersion[1])
	say("served by version 2:                   %d", sum.ByVersion[2])
	say("started after first v2, served by v1:  %d", sum.StaleAfterFlip)
	say("event streams completed / cut:         %d / %d", streams.Completed, streams.Cut)
	say("leader failover (kill -9 -> new leader): %s", failover.Round(time.Millisecond))
	say("time from update to flip:              %s (the leader killed meanwhile)", flipAt.Sub(updateAt).Round(time.Millisecond))
	say("time from flip to old replicas gone:   %s", goneAt.Sub(flipAt).Round(time.Millisecond))
	for _, e := range sum.FirstErrors {
		say("  failure: %s", e)
	}
	for _, e := range streams.Errors {
		say("  stream cut: %s", e)
	}
	if sum.Failed > 0 || sum.StaleAfterFlip > 0 || streams.Cut > 0 {
		return fmt.Errorf("%d requests failed, %d were served by the old version after the flip, %d streams were cut",
			sum.Failed, sum.StaleAfterFlip, streams.Cut)
	}
	say("OK: no request failed and no stream was cut during the update, though the leader was killed")
	return nil
}

// startCluster starts the coordinators, agents and LB and waits until the
// coordinators have a leader and every agent has registered.
func (d *demo) startCluster() error {
	lbPort, err := localcluster.PortOn(lbHost, 30001)
	if err != nil {
		return err
	}
	coords, err := localcluster.Coordinators(coordHosts, d.dir,
		// The LAN setting docs/cluster.md recommends: a killed leader is
		// replaced in well under a second.
		"--dev", "--raft-timeout", "300ms", "--lb-host", lbHost, "--first-lb-port", strconv.Itoa(lbPort))
	if err != nil {
		return err
	}
	d.cluster = localcluster.NewCluster(d.procs, coords)
	d.addrs = d.cluster.APIs()
	gossip := d.cluster.GossipAddrs()
	say("$ baton coordinator --dev --node-id c1 --http-addr %s ... --bootstrap-expect 3 --join %s   # and c2, c3",
		coords[0].API, strings.Join(gossip, ","))
	if err := d.cluster.StartAll(); err != nil {
		return err
	}
	if err := d.cluster.WaitPeers(3, 30*time.Second); err != nil {
		return err
	}
	join := strings.Join(gossip, ",")
	for i, h := range agentHosts {
		id := fmt.Sprintf("agent-%d", i+1)
		gp, err := localcluster.PortOn(h, localcluster.GossipPort)
		if err != nil {
			return err
		}
		args := []string{"agent", "--dev", "--id", id, "--host", h, "--http-addr", h + ":0",
			"--gossip-addr", fmt.Sprintf("%s:%d", h, gp), "--join", join,
			"--data-dir", filepath.Join(d.dir, id), "--cpus", agentCPUs[i], "--memory", "8"}
		if i == 3 {
			args = append(args, "--accelerators", "A100:1")
		}
		if _, err := d.procs.Start(id, args...); err != nil {
			return err
		}
	}
	say("$ baton agent --id agent-1 --host %s --join %s ...   # and agent-2..4 on %s", agentHosts[0], join, strings.Join(agentHosts[1:], ", "))
	gp, err := localcluster.PortOn(lbHost, localcluster.GossipPort)
	if err != nil {
		return err
	}
	if _, err := d.procs.Start("lb-1", "lb", "--dev", "--id", "lb-1", "--bind-host", lbHost, "--admin-addr", lbHost+":0",
		"--gossip-addr", fmt.Sprintf("%s:%d", lbHost, gp), "--join", join); err != nil {
		return err
	}
	say("$ baton lb --id lb-1 --bind-host %s --join %s", lbHost, join)
	say("$ export BATON_ADDR=%s", strings.Join(d.addrs, ","))
	return d.waitAgents(len(agentHosts), 60*time.Second)
}

// killLeader kill -9s the leader and returns how long until another
// coordinator leads.
func (d *demo) killLeader() (time.Duration, string, error) {
	old := d.cluster.LeaderID()
	if old == "" {
		return 0, "", errors.New("no leader to kill")
	}
	say("\n$ kill -9 <pid of the leader, %s>   # in the middle of the update", old)
	start := time.Now()
	d.procs.Proc(old).Kill9()
	for {
		if id := d.cluster.LeaderID(); id != "" && id != old {
			took := time.Since(start)
			say("# %s leads after %s", id, took.Round(time.Millisecond))
			return took, old, nil
		}
		if time.Since(start) > 30*time.Second {
			return 0, old, errors.New("no new leader within 30s of killing " + old)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// cli runs and echoes `baton args...` as a user would type it.
func (d *demo) cli(args ...string) (string, error) {
	say("\n$ baton %s", strings.Join(args, " "))
	cmd := exec.Command(d.bin, args...)
	cmd.Dir = d.work
	cmd.Env = append(os.Environ(), "BATON_ADDR="+strings.Join(d.addrs, ","))
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	fmt.Print(out.String())
	if err != nil {
		return out.String(), fmt.Errorf("baton %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// logsTail shows the last lines of `baton serve logs` for one replica.
func (d *demo) logsTail(service, id string, n int) error {
	say("\n$ baton serve logs %s %s --tail %d --no-follow", service, id, n)
	cmd := exec.Command(d.bin, "serve", "logs", service, id, "--tail", strconv.Itoa(n), "--no-follow")
	cmd.Dir = d.work
	cmd.Env = append(os.Environ(), "BATON_ADDR="+strings.Join(d.addrs, ","))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("baton serve logs: %w: %s", err, out)
	}
	fmt.Print(string(out))
	return nil
}

func (d *demo) status() (protocol.StatusResponse, error) {
	var st protocol.StatusResponse
	return st, d.cluster.Get("/v1/status", &st)
}

func (d *demo) waitFor(timeout time.Duration, what string, ok func(protocol.StatusResponse) bool) (protocol.StatusResponse, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := d.status()
		if err == nil && ok(st) {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *demo) waitAgents(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var agents []protocol.Agent
		if err := d.cluster.Get("/v1/agents", &agents); err == nil && len(agents) >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the coordinators did not register %d agents within %s", n, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func countReady(st protocol.StatusResponse, version int) int {
	n := 0
	for _, r := range st.Replicas {
		if r.Version == version && r.Status == protocol.ReplicaReady {
			n++
		}
	}
	return n
}
