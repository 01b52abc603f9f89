// Command bundlebench measures code distribution: a 100 MB workdir packed,
// uploaded to a three-coordinator cluster and fanned out to three agents
// (`make bench` runs it). It prints the time `baton serve up` takes (pack,
// hash, upload and replication to the coordinators) and, from then, the
// time until every agent has the code in place (fetched over NATS,
// verified, unpacked, copied for its replica) and until every replica is
// READY.
//
//	go run ./internal/bundlebench --baton bin/baton [--mb 100]
//
// The daemons run on 127.0.103.x; everything is killed at the end.
package main

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/localcluster"
	"github.com/baton-dev/baton/protocol"
)

var (
	coordHosts = []string{"127.0.103.1", "127.0.103.2", "127.0.103.3"}
	agentHosts = []string{"127.0.103.11", "127.0.103.12", "127.0.103.13"}
)

func main() {
	bin := flag.String("baton", "bin/baton", "baton binary to run")
	mb := flag.Int("mb", 100, "megabytes of incompressible data in the workdir")
	keep := flag.Bool("keep", false, "keep the logs and data dirs")
	flag.Parse()
	bin2, err := filepath.Abs(*bin)
	if err == nil {
		err = run(bin2, *mb, *keep)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bundlebench:", err)
		os.Exit(1)
	}
}

func run(bin string, mb int, keep bool) error {
	dir, err := os.MkdirTemp("", "baton-bundlebench-")
	if err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	procs := localcluster.NewProcs(bin, dir)
	ok := false
	defer func() {
		procs.StopAll(10 * time.Second)
		if !ok {
			procs.LogTails(os.Stderr, 20)
			fmt.Fprintln(os.Stderr, "logs kept in", dir)
		} else if !keep {
			os.RemoveAll(dir)
		}
	}()
	coords, err := localcluster.Coordinators(coordHosts, dir, "--dev")
	if err != nil {
		return err
	}
	cl := localcluster.NewCluster(procs, coords)
	if err := cl.StartAll(); err != nil {
		return err
	}
	if err := cl.WaitPeers(3, 60*time.Second); err != nil {
		return err
	}
	join := strings.Join(cl.GossipAddrs(), ",")
	for i, h := range agentHosts {
		id := fmt.Sprintf("agent-%d", i+1)
		gp, err := localcluster.PortOn(h, localcluster.GossipPort)
		if err != nil {
			return err
		}
		if _, err := procs.Start(id, "agent", "--dev", "--id", id, "--host", h, "--http-addr", h+":0",
			"--gossip-addr", fmt.Sprintf("%s:%d", h, gp), "--join", join,
			"--data-dir", filepath.Join(dir, id), "--cpus", "1", "--memory", "4"); err != nil {
			return err
		}
	}
	if err := waitAgents(cl, len(agentHosts), 60*time.Second); err != nil {
		return err
	}

	// The service directory: mb MB of random bytes and a server that
	// answers once they are there.
	work := filepath.Join(dir, "service")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	data := make([]byte, mb<<20)
	_, _ = rand.Read(data)
	if err := os.WriteFile(filepath.Join(work, "weights.bin"), data, 0o644); err != nil {
		return err
	}
	task := `name: weights
workdir: .
run: test -s weights.bin && exec python3 -m http.server --bind 0.0.0.0 $PORT
service:
  readiness_probe: /
  replicas: 3
resources:
  cpus: 1
`
	if err := os.WriteFile(filepath.Join(work, "task.yaml"), []byte(task), 0o644); err != nil {
		return err
	}
	up := exec.Command(bin, "serve", "up", "task.yaml", "-y")
	up.Dir = work
	up.Env = append(os.Environ(), "BATON_ADDR="+strings.Join(cl.APIs(), ","))
	started := time.Now()
	out, err := up.CombinedOutput()
	upTook := time.Since(started)
	if err != nil {
		return fmt.Errorf("serve up: %v\n%s", err, out)
	}
	fanStart := time.Now()
	var readyTook time.Duration
	for {
		var st protocol.StatusResponse
		if err := cl.Get("/v1/status", &st); err == nil {
			ready := 0
			for _, r := range st.Replicas {
				if r.Status == protocol.ReplicaReady {
					ready++
				}
			}
			if ready == 3 {
				readyTook = time.Since(fanStart)
				break
			}
		}
		if time.Since(fanStart) > 5*time.Minute {
			return errors.New("3 replicas not READY within 5 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Each agent's replica log says how long placing the code took.
	var placed []string
	re := regexp.MustCompile(`code in place in \S+ \(([^)]+)\)`)
	logs, _ := filepath.Glob(filepath.Join(dir, "agent-*", "replicas", "*", "replica.log"))
	var slowest time.Duration
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if m := re.FindSubmatch(b); m != nil {
			placed = append(placed, string(m[1]))
			if d, err := time.ParseDuration(string(m[1])); err == nil && d > slowest {
				slowest = d
			}
		}
	}
	fmt.Printf("bundle of %d MB (incompressible), 3 coordinators, 3 agents (loopback, one machine):\n", mb)
	fmt.Printf("  %s", out)
	fmt.Printf("  serve up (pack, hash, upload, replicate to a majority): %s\n", upTook.Round(time.Millisecond))
	fmt.Printf("  code in place on each agent (fetch, verify, unpack, copy): %s; slowest %s\n", strings.Join(placed, ", "), slowest)
	fmt.Printf("  from serve up returning to 3 replicas READY: %s\n", readyTook.Round(time.Millisecond))
	ok = true
	return nil
}

func waitAgents(cl *localcluster.Cluster, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var agents []protocol.Agent
		if err := cl.Get("/v1/agents", &agents); err == nil {
			alive := 0
			for _, a := range agents {
				if a.Alive {
					alive++
				}
			}
			if alive >= n {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d agents not alive within %s", n, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
