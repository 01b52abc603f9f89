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
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-dev/baton/internal/loadgen"
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
	apiAddr string
	dir     string
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

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
	d := &demo{bin: bin, apiAddr: fmt.Sprintf("127.0.0.1:%d", freePort()), dir: dir}

	agents := []string{"cpus=2", "cpus=2", "cpus=4", "cpus=4,accelerators=A100:1"}
	args := []string{"dev", "--data-dir", filepath.Join(dir, "state"), "--http-addr", d.apiAddr,
		"--raft-addr", fmt.Sprintf("127.0.0.1:%d", freePort()), "--nats-port", strconv.Itoa(freePort()),
		"--lb-admin-addr", fmt.Sprintf("127.0.0.1:%d", freePort())}
	for _, a := range agents {
		args = append(args, "--agent", a)
	}
	devLog := filepath.Join(dir, "dev.log")
	logf, err := os.Create(devLog)
	if err != nil {
		return err
	}
	dev := exec.Command(bin, args...)
	dev.Stdout, dev.Stderr = logf, logf
	// If the demo dies (Ctrl-C, a closed pipe), baton dev gets SIGINT and
	// stops its replicas instead of running on.
	dev.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	say("$ baton %s", strings.Join(append([]string{"dev"}, quoteAgents(agents)...), " "))
	if err := dev.Start(); err != nil {
		return err
	}
	devDone := make(chan error, 1)
	go func() { devDone <- dev.Wait() }()
	defer func() {
		// Ctrl-C for baton dev: it stops every replica, then exits.
		_ = dev.Process.Signal(os.Interrupt)
		select {
		case <-devDone:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-dev.Process.Pid, syscall.SIGKILL)
			<-devDone
		}
		logf.Close()
		if left := procscan.WithEnv("BATON_SERVICE=http-server"); len(left) > 0 {
			err = errors.Join(err, fmt.Errorf("replica processes left behind: %v", left))
		}
		if err != nil {
			if buf, rerr := os.ReadFile(devLog); rerr == nil {
				lines := strings.Split(strings.TrimSpace(string(buf)), "\n")
				if len(lines) > 40 {
					lines = lines[len(lines)-40:]
				}
				fmt.Fprintf(os.Stderr, "--- last lines of the baton dev log ---\n%s\n", strings.Join(lines, "\n"))
			}
		}
	}()
	if err := d.waitAgents(len(agents), 30*time.Second); err != nil {
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

	// 2. load on the endpoint for the whole update
	say("\n# load: %d concurrent clients on http://%s/ until the old replicas are gone", workers, endpoint)
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	loadDone := make(chan []loadgen.Result, 1)
	go func() {
		loadDone <- loadgen.Run(ctx, loadgen.Config{URL: "http://" + endpoint + "/", Workers: workers, MaxDuration: 5 * time.Minute})
	}()
	time.Sleep(2 * time.Second) // version-1 traffic before the update

	// 3. update
	updateAt := time.Now()
	if _, err := d.cli("serve", "update", "http-server", "examples/http_server/task_v2.yaml", "-y"); err != nil {
		return err
	}
	if _, err := d.cli("serve", "status", "http-server"); err != nil {
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
	if _, err := d.cli("serve", "status", "http-server"); err != nil {
		return err
	}
	if err := d.logsTail("http-server", "3", 5); err != nil {
		return err
	}

	// 5. down
	if _, err := d.cli("serve", "down", "http-server", "-y", "--wait"); err != nil {
		return err
	}

	sum := loadgen.Summarize(results)
	say("\n=== figures ===")
	say("requests sent:                         %d", sum.Sent)
	say("requests failed:                       %d", sum.Failed)
	say("served by version 1:                   %d", sum.ByVersion[1])
	say("served by version 2:                   %d", sum.ByVersion[2])
	say("started after first v2, served by v1:  %d", sum.StaleAfterFlip)
	say("time from update to flip:              %s", flipAt.Sub(updateAt).Round(time.Millisecond))
	say("time from flip to old replicas gone:   %s", goneAt.Sub(flipAt).Round(time.Millisecond))
	for _, e := range sum.FirstErrors {
		say("  failure: %s", e)
	}
	if sum.Failed > 0 || sum.StaleAfterFlip > 0 {
		return fmt.Errorf("%d requests failed and %d were served by the old version after the flip", sum.Failed, sum.StaleAfterFlip)
	}
	say("OK: no request failed during the update")
	return nil
}

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func quoteAgents(agents []string) []string {
	var out []string
	for _, a := range agents {
		out = append(out, "--agent", a)
	}
	return out
}

// cli runs and echoes `baton args...` as a user would type it.
func (d *demo) cli(args ...string) (string, error) {
	say("\n$ baton %s", strings.Join(args, " "))
	cmd := exec.Command(d.bin, args...)
	cmd.Env = append(os.Environ(), "BATON_ADDR=http://"+d.apiAddr)
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
	cmd.Env = append(os.Environ(), "BATON_ADDR=http://"+d.apiAddr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("baton serve logs: %w: %s", err, out)
	}
	fmt.Print(string(out))
	return nil
}

func (d *demo) status() (protocol.StatusResponse, error) {
	var st protocol.StatusResponse
	resp, err := http.Get("http://" + d.apiAddr + "/v1/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
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
		resp, err := http.Get("http://" + d.apiAddr + "/v1/agents")
		if err == nil {
			var agents []protocol.Agent
			_ = json.NewDecoder(resp.Body).Decode(&agents)
			resp.Body.Close()
			if len(agents) >= n {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("baton dev did not register %d agents within %s", n, timeout)
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
