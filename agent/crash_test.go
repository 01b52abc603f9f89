package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// TestHelperAgentProcess is not a test: TestAgentCrashLeavesNoOrphans runs
// the test binary with BATON_AGENT_HELPER set to get an agent in a process
// it can SIGKILL.
func TestHelperAgentProcess(t *testing.T) {
	if os.Getenv("BATON_AGENT_HELPER") == "" {
		t.Skip("helper process only")
	}
	a, err := New(Config{
		ID:                "crashy",
		NATSURL:           os.Getenv("BATON_AGENT_HELPER_NATS"),
		HTTPAddr:          "127.0.0.1:0",
		DataDir:           os.Getenv("BATON_AGENT_HELPER_DATA"),
		Accelerators:      "T4",
		HeartbeatInterval: 100 * time.Millisecond,
		ProbeInterval:     100 * time.Millisecond,
		StopGrace:         time.Second,
		ReplicaUser:       os.Getenv("BATON_AGENT_HELPER_USER"),
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = a.Run(context.Background()) // until killed
}

// TestAgentCrashLeavesNoOrphans SIGKILLs an agent process: the kernel
// tells each replica's shim, which stops the whole tree (the background
// sleep too) without waiting for the agent to come back; the next agent
// start on the same data dir finds nothing left to kill and runs.
func TestAgentCrashLeavesNoOrphans(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	h := startAgent(t, func(c *Config) { c.ID = "watcher"; c.DataDir = t.TempDir() })
	url := h.cfg.NATSURL

	helper := exec.Command(os.Args[0], "-test.run=^TestHelperAgentProcess$")
	helper.Env = append(os.Environ(), "BATON_AGENT_HELPER=1", "BATON_AGENT_HELPER_NATS="+url, "BATON_AGENT_HELPER_DATA="+dataDir, "BATON_AGENT_HELPER_USER="+currentUser(t))
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { helper.Wait(); close(waited) }()
	t.Cleanup(func() { helper.Process.Kill(); <-waited })

	// The harness records every agent's status; use its NATS connection
	// to drive the helper agent.
	crashy := &harness{t: t, cfg: Config{ID: "crashy"}, nc: h.nc}
	asg := serverAssignment(t, "crash", 1)
	asg.Spec.Run = "sleep 300 & exec python3 " + serverScript(t)
	var leader int
	testutil.WaitFor(t, 20*time.Second, func() error {
		crashy.desire(1, asg) // re-sent until the helper is up
		for _, st := range h.all() {
			if st.Agent.ID != "crashy" {
				continue
			}
			for _, r := range st.Replicas {
				if r.Status == protocol.ReplicaReady {
					leader = r.PID
				}
			}
		}
		if leader == 0 {
			return fmt.Errorf("helper agent's replica not READY yet")
		}
		return nil
	})

	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-waited
	killedAt := time.Now()
	// Stop grace is 1s: SIGTERM, then SIGKILL for what ignores it.
	testutil.WaitFor(t, 5*time.Second, func() error {
		if pidAlive(leader) && !isZombie(leader) {
			return fmt.Errorf("replica leader %d outlived its agent", leader)
		}
		return groupGone(leader)
	})
	t.Logf("replica tree gone %s after the agent's SIGKILL", time.Since(killedAt).Round(time.Millisecond))

	startAgent(t, func(c *Config) { c.ID = "crashy"; c.DataDir = dataDir; c.NATSURL = url })
}

// isZombie reports whether pid is a zombie (its parent died and nobody
// reaped it yet).
func isZombie(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && strings.HasPrefix(s[i+1:], " Z")
}
