package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/agent/cgroups"
	"github.com/baton-dev/baton/internal/procscan"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// requireCgroups fails the test in CI and skips it elsewhere when
// replica cgroups cannot be written here.
func requireCgroups(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "switching users and writing cgroups")
	m, err := cgroups.Open("baton-test.slice/probe-" + strconv.Itoa(os.Getpid()))
	if err == nil && m.Mode() != cgroups.ModeNone {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("this test needs writable cgroups: %v", err)
	}
	t.Skipf("cgroups unavailable: %v", err)
}

// rootOnlyDir is a directory only its owner (root) may enter.
func rootOnlyDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testutil.OpenTempDir(t), "private")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// openServerScript copies testdata/server.py where an unprivileged user
// can read it: the repository may sit under a directory only root enters.
func openServerScript(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(serverScript(t))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(testutil.OpenTempDir(t), "server.py")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// markerPIDs lists the processes carrying a replica environment entry.
func markerPIDs(marker string) []int { return procscan.WithEnv(marker) }

// TestReplicaUserAndEnvironment: an agent running as root runs replicas as
// "nobody" by default, with the documented base environment, what
// --replica-env passes and the task's envs, and none of the agent's own
// environment.
func TestReplicaUserAndEnvironment(t *testing.T) {
	testutil.RequireRoot(t, "switching users and writing cgroups")
	t.Setenv("BATON_TEST_AGENT_SECRET", "do-not-leak")
	h := startAgent(t, func(c *Config) {
		c.ReplicaUser = "" // the default
		c.DataDir = filepath.Join(testutil.OpenTempDir(t), "data")
		c.ReplicaEnv = map[string]string{"HF_HOME": "/models", "SHARED": "from-agent"}
	})
	asg := serverAssignment(t, "who", 1)
	asg.Spec.Run = "exec python3 " + openServerScript(t)
	asg.Spec.Envs = map[string]string{"SHARED": "from-task", "MODEL": "m"}
	h.desire(1, asg)
	rep := h.waitStatus("who", 1, protocol.ReplicaReady, readyTimeout)
	var who struct {
		UID int               `json:"uid"`
		Env map[string]string `json:"env"`
	}
	if err := getJSON("http://"+rep.Endpoint+"/whoami", &who); err != nil {
		t.Fatal(err)
	}
	if who.UID != 65534 {
		t.Errorf("replica runs as uid %d, want nobody (65534)", who.UID)
	}
	dir := h.replicaDir("who", 1)
	want := map[string]string{
		"PATH": basePath, "USER": "nobody", "LOGNAME": "nobody", "HOME": dir, "SHELL": "/bin/bash",
		"LANG": "C.UTF-8", "TMPDIR": filepath.Join(dir, "tmp"),
		"HF_HOME": "/models", "SHARED": "from-task", "MODEL": "m",
		"PORT": strconv.Itoa(asg.Port), "BATON_SERVICE": "who", "BATON_REPLICA_ID": "1", "BATON_AGENT_ID": "a1",
	}
	for k, v := range want {
		if who.Env[k] != v {
			t.Errorf("replica env %s = %q, want %q", k, who.Env[k], v)
		}
	}
	documented := []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TMPDIR", "HF_HOME", "SHARED", "MODEL",
		"PORT", "CUDA_VISIBLE_DEVICES", "BATON_SERVICE", "BATON_REPLICA_ID", "BATON_VERSION", "BATON_AGENT_ID",
		"SKYPILOT_SERVE_REPLICA_ID", "SKYPILOT_NUM_GPUS_PER_NODE", "SKYPILOT_NUM_NODES", "SKYPILOT_NODE_RANK", "SKYPILOT_NODE_IPS",
		"PWD", "SHLVL", "_", "LC_CTYPE"} // the last ones bash and python add themselves
	for k := range who.Env {
		if !slices.Contains(documented, k) {
			t.Errorf("replica env has %s=%q, which is neither documented nor the task's", k, who.Env[k])
		}
	}
	// Its directory is its own; a directory only root may enter is not.
	rootOnly := rootOnlyDir(t)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 {
		t.Errorf("replica dir owned by uid %d, want the replica user", st.Uid)
	}
	if err := h.agent.user.canReach(rootOnly); err == nil {
		t.Errorf("nobody can reach %s (mode 0700, root's)", rootOnly)
	}
}

// TestUnreachableWorkdirFailsClearly: a workdir the replica user cannot
// read fails the replica with a reason that says so, before anything runs.
func TestUnreachableWorkdirFailsClearly(t *testing.T) {
	testutil.RequireRoot(t, "switching users and writing cgroups")
	h := startAgent(t, func(c *Config) { c.ReplicaUser = ""; c.DataDir = filepath.Join(testutil.OpenTempDir(t), "data") })
	asg := serverAssignment(t, "wd", 1)
	asg.Spec.Workdir = rootOnlyDir(t)
	h.desire(1, asg)
	rep := h.waitStatus("wd", 1, protocol.ReplicaFailed, readyTimeout)
	if !strings.Contains(rep.Reason, "is not usable by replica user nobody") || !strings.Contains(rep.Reason, "--replica-user") {
		t.Errorf("reason %q, want it to name the workdir, the user and what to do", rep.Reason)
	}
}

// TestDataDirUnreachableByReplicaUser: an agent refuses to start on a data
// dir its replica user cannot reach, and says what to do.
func TestDataDirUnreachableByReplicaUser(t *testing.T) {
	testutil.RequireRoot(t, "switching users and writing cgroups")
	_, err := New(Config{ID: "a", DataDir: filepath.Join(rootOnlyDir(t), "data"), Accelerators: "T4"})
	if err == nil || !strings.Contains(err.Error(), "replica user nobody") || !strings.Contains(err.Error(), "--data-dir") {
		t.Fatalf("New = %v, want an error naming the replica user and --data-dir", err)
	}
}

// TestDaemonizedChildStopped: a replica whose run starts a daemon with
// setsid (out of its process group, re-parented when its parent exits) is
// still stopped whole, with cgroups and with the subreaper alone.
func TestDaemonizedChildStopped(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parent string
	}{{"cgroup", ""}, {"subreaper without cgroups", "-"}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.parent == "" {
				requireCgroups(t)
			}
			marker := fmt.Sprintf("BATON_TEST_DAEMON=%d-%s", time.Now().UnixNano(), strings.ReplaceAll(tc.name, " ", "-"))
			h := startAgent(t, func(c *Config) {
				c.CgroupParent = tc.parent
				c.ReplicaEnv = map[string]string{"BATON_TEST_DAEMON": strings.TrimPrefix(marker, "BATON_TEST_DAEMON=")}
			})
			asg := serverAssignment(t, "daemon", 1)
			// A double fork: the daemon's parent exits at once, so it is
			// re-parented; setsid takes it out of the replica's group.
			asg.Spec.Run = "(setsid sleep 1000 &); setsid -f sleep 1001; exec python3 " + serverScript(t)
			h.desire(1, asg)
			h.waitStatus("daemon", 1, protocol.ReplicaReady, readyTimeout)
			testutil.WaitFor(t, 5*time.Second, func() error {
				if n := len(markerPIDs(marker)); n < 3 {
					return fmt.Errorf("%d processes of the replica, want the server and two daemons", n)
				}
				return nil
			})
			h.desire(2) // removed
			h.waitGone("daemon", 1, 15*time.Second)
			if pids := markerPIDs(marker); len(pids) > 0 {
				t.Fatalf("processes of a stopped replica still run: %v", pids)
			}
		})
	}
}

// TestMemoryLimitEnforced: a replica asking `memory: 0.5` (exactly) gets a
// 512 MiB limit; allocating 1.5 GiB gets it killed by the kernel, reported
// FAILED with a reason that names the limit.
func TestMemoryLimitEnforced(t *testing.T) {
	requireCgroups(t)
	h := startAgent(t, nil)
	asg := serverAssignment(t, "mem", 1)
	asg.Spec.Resources.Memory = protocol.Quantity{Value: 0.5}
	asg.Spec.Run = `python3 -c 'import time; b = bytearray(1536 << 20); time.sleep(60)'`
	h.desire(1, asg)
	rep := h.waitStatus("mem", 1, protocol.ReplicaFailed, readyTimeout)
	if !strings.Contains(rep.Reason, "out of memory") || !strings.Contains(rep.Reason, "512 MiB") {
		t.Errorf("reason %q, want an out-of-memory reason naming the 512 MiB limit", rep.Reason)
	}
	t.Logf("memory: 0.5 allocating 1.5 GiB: %s", rep.Reason)
	// Asked as at least 0.5 GiB, the same allocation is fine.
	soft := serverAssignment(t, "mem", 2)
	soft.Version = 2
	soft.Spec.Resources.Memory = protocol.Quantity{Value: 0.5, AtLeast: true}
	soft.Spec.Run = `python3 -c 'b = bytearray(1536 << 20)' && exec python3 ` + serverScript(t)
	h.desire(2, asg, soft)
	h.waitStatus("mem", 2, protocol.ReplicaReady, readyTimeout)
}

// TestLogsBounded: a replica printing 300 MB as fast as it can leaves at
// most LogMaxBytes × LogMaxFiles of log on disk, and its last output is
// still there.
func TestLogsBounded(t *testing.T) {
	h := startAgent(t, func(c *Config) { c.LogMaxBytes = 1 << 20; c.LogMaxFiles = 3 })
	asg := serverAssignment(t, "loud", 1)
	asg.Spec.Run = `head -c 300000000 /dev/zero | tr '\0' 'x' | fold -w 99; echo; echo the-end; exec python3 ` + serverScript(t)
	start := time.Now()
	h.desire(1, asg)
	h.waitStatus("loud", 1, protocol.ReplicaReady, 2*readyTimeout)
	t.Logf("300 MB printed and the replica READY after %s", time.Since(start).Round(time.Millisecond))
	dir := h.replicaDir("loud", 1)
	var total int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && !e.IsDir() {
			total += fi.Size()
			names = append(names, e.Name())
		}
	}
	if total > 3<<20+64<<10 {
		t.Errorf("replica dir holds %d bytes (%v), want at most 3 MiB of logs", total, names)
	}
	t.Logf("on disk: %d bytes in %v", total, names)
	if !strings.Contains(readLog(t, h, "loud", 1), "the-end") {
		t.Error("the last output is not in replica.log")
	}
}
