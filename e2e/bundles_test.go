package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// codeServer serves message.txt from its working directory on GET / and
// 200 on /health.
const codeServer = `import http.server, os, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/health" else open("message.txt", "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
`

// codeTask runs codeServer from the workdir; setup writes a file there.
const codeTask = `name: code
workdir: .
setup: echo built > built.txt
run: test -f built.txt && exec python3 server.py --port $PORT
service:
  readiness_probe:
    path: /health
    initial_delay_seconds: 30
  replicas: 2
resources:
  cpus: 1
`

// codeDir writes a service directory (outside the repository) whose
// message.txt holds message.
func codeDir(t *testing.T, message string) string {
	t.Helper()
	dir := testutil.OpenTempDir(t)
	for name, text := range map[string]string{"server.py": codeServer, "task.yaml": codeTask, "message.txt": message} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// lbGet fetches path from the service through the LB.
func lbGet(t *testing.T, endpoint string) string {
	t.Helper()
	resp, err := http.Get("http://" + endpoint + "/")
	if err != nil {
		t.Fatalf("LB: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestCodeTravelsWithTheVersion: `serve up` from a directory that is then
// deleted runs on the agents, which never saw it, and so do a replacement
// after a replica is killed and the replicas after an agent restarts; an
// update that changes only a file makes a new version serving the new
// file (the old one served the old file until the flip); code unchanged
// is not uploaded again; setup writes into the replicas' copies, never the
// user's directory.
func TestCodeTravelsWithTheVersion(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 4}, agentOpts{cpus: 4})
	first := codeDir(t, "message one")
	// file_mounts: one in each replica's home, one at an absolute path
	// (bind-mounted in the replica's own mount namespace: the e2e agents
	// run as root, as CI does).
	// Under /mnt, where an agent may create the mount point (the
	// directory is removed at the end).
	mnt := fmt.Sprintf("/mnt/baton-e2e-%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() { os.RemoveAll(mnt) })
	conf := filepath.Join(mnt, "conf")
	if err := os.WriteFile(filepath.Join(first, "app.conf"), []byte("mode=e2e\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	task := strings.Replace(codeTask, "setup: echo built > built.txt",
		`setup: echo built > built.txt && grep -q mode=e2e ~/conf/app.conf`, 1) +
		"file_mounts:\n  ~/conf/app.conf: ./app.conf\n"
	if os.Geteuid() == 0 {
		task = strings.Replace(task, "grep -q mode=e2e ~/conf/app.conf", "grep -q mode=e2e ~/conf/app.conf && grep -q mode=e2e "+conf+"/app.conf", 1) +
			"  " + conf + "/app.conf: ./app.conf\n"
	}
	if err := os.WriteFile(filepath.Join(first, "task.yaml"), []byte(task), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := c.cliIn(first, "serve", "up", "task.yaml", "-y")
	if err != nil || !strings.Contains(out, "Uploaded bundle sha256:") {
		t.Fatalf("serve up: %v\n%s%s", err, out, errOut)
	}
	if err := os.RemoveAll(first); err != nil {
		t.Fatal(err)
	}
	st := c.waitReady("code", 1, 2, 90*time.Second)
	endpoint := service(st, "code").Endpoint
	if got := lbGet(t, endpoint); got != "message one" {
		t.Fatalf("version 1 answered %q", got)
	}

	// A killed replica's replacement starts from the bundle too.
	for _, pid := range c.replicaPIDs("code", 1) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	testutil.WaitFor(t, 60*time.Second, func() error {
		st, err := c.statusAPI()
		if err != nil {
			return err
		}
		if r, ok := replicas(st, "code")[3]; !ok || r.Status != protocol.ReplicaReady {
			return fmt.Errorf("replacement replica 3 not READY: %+v", replicas(st, "code"))
		}
		return nil
	})
	// So do the replicas of an agent that restarts.
	c.kill9("agent-1")
	c.startAgent("agent-1", "127.0.0.11", agentOpts{cpus: 4})
	testutil.WaitFor(t, 90*time.Second, func() error {
		st, err := c.statusAPI()
		if err != nil {
			return err
		}
		ready, onAgent1 := 0, 0
		for _, r := range replicas(st, "code") {
			if r.Status == protocol.ReplicaReady {
				ready++
				if r.Agent == "agent-1" {
					onAgent1++
				}
			}
		}
		if ready != 2 {
			return fmt.Errorf("%d READY after agent-1 restarted: %+v", ready, st.Replicas)
		}
		return nil
	})

	// An update that changes only message.txt: a new version, serving it.
	second := codeDir(t, "message two")
	for name, text := range map[string]string{"task.yaml": task, "app.conf": "mode=e2e\n"} {
		if err := os.WriteFile(filepath.Join(second, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, err = c.cliIn(second, "serve", "update", "code", "task.yaml", "-y")
	if err != nil || !strings.Contains(out, "Uploaded bundle") || !strings.Contains(out, "version 2") {
		t.Fatalf("serve update: %v\n%s%s", err, out, errOut)
	}
	// Until the flip every answer is the old file, after it the new one.
	sawTwo := false
	deadline := time.Now().Add(90 * time.Second)
	for !sawTwo && time.Now().Before(deadline) {
		switch got := lbGet(t, endpoint); got {
		case "message one":
		case "message two":
			sawTwo = true
		default:
			t.Fatalf("answer %q during the update", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !sawTwo {
		t.Fatal("version 2 never served")
	}
	for range 20 {
		if got := lbGet(t, endpoint); got != "message two" {
			t.Fatalf("after the flip: %q", got)
		}
	}
	c.waitReady("code", 2, 2, 30*time.Second)
	// setup ran in the replicas' copies.
	if _, err := os.Stat(filepath.Join(second, "built.txt")); err == nil {
		t.Error("setup wrote built.txt into the user's directory")
	}

	// Unchanged code with another env: a new version, no upload.
	out, errOut, err = c.cliIn(second, "serve", "update", "code", "task.yaml", "-y", "--env", "EXTRA=1")
	if err != nil || !strings.Contains(out, "Code unchanged") || strings.Contains(out, "Uploaded") || !strings.Contains(out, "version 3") {
		t.Fatalf("update with unchanged code: %v\n%s%s", err, out, errOut)
	}
	c.waitReady("code", 3, 2, 90*time.Second)
}

// TestBadCodeRefused: a workdir over the limit, an unreadable file and a
// remote file_mount each get a clear error naming the file and field, and
// nothing is created.
func TestBadCodeRefused(t *testing.T) {
	c := newCluster(t)
	refused := func(dir, want string, asNobody bool) {
		t.Helper()
		cmd := exec.Command(batonBin, "serve", "up", "task.yaml", "-y", "-n", "bad")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "BATON_ADDR=http://"+c.apiAddr)
		if asNobody {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("serve up in %s: %v, want an error saying %q:\n%s", dir, err, want, out)
		}
		if st := c.status(); len(st.Services) != 0 {
			t.Errorf("a refused up created %+v", st.Services)
		}
	}

	// Over 1 GiB: a sparse file, so nothing is written or read.
	big := codeDir(t, "x")
	f, err := os.Create(filepath.Join(big, "weights.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(protocol.MaxBundleBytes + 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	start := time.Now()
	refused(big, "task.yaml:2: workdir ", false)
	refused(big, "over the 1 GiB limit", false)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("refusing an oversize workdir took %s; it must not read it", d)
	}

	// A file the user cannot read (the CLI runs as nobody here; root
	// reads everything).
	if os.Geteuid() == 0 {
		locked := codeDir(t, "x")
		if err := os.WriteFile(filepath.Join(locked, "secret.key"), []byte("k"), 0o600); err != nil {
			t.Fatal(err)
		}
		refused(locked, "secret.key", true)
	} else {
		locked := codeDir(t, "x")
		if err := os.WriteFile(filepath.Join(locked, "secret.key"), []byte("k"), 0o000); err != nil {
			t.Fatal(err)
		}
		refused(locked, "secret.key", false)
	}

	// A remote file_mount.
	remote := codeDir(t, "x")
	task := codeTask + "file_mounts:\n  /data: s3://my-bucket/data\n"
	if err := os.WriteFile(filepath.Join(remote, "task.yaml"), []byte(task), 0o644); err != nil {
		t.Fatal(err)
	}
	refused(remote, `task.yaml:13: file_mounts."/data": source "s3://my-bucket/data" is remote`, false)
}

// TestBundleOutlivesTheCoordinatorThatTookIt: kill -9 of the coordinator
// that received an upload loses nothing: an agent that joins afterwards,
// and never saw the code, runs the service from the bundle the other
// coordinators hold.
func TestBundleOutlivesTheCoordinatorThatTookIt(t *testing.T) {
	fc := newFaultCluster(t, faultOpts{agents: 2})
	// gpu-2 is the late joiner: stopped before anything is deployed.
	fc.base.kill9("gpu-2")
	fc.waitLeader(60 * time.Second)
	fc.waitAgentsAlive(1)

	dir := codeDir(t, "survivor")
	task := strings.Replace(codeTask, "replicas: 2", "replicas: 1", 1)
	if err := os.WriteFile(filepath.Join(dir, "task.yaml"), []byte(task), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(batonBin, "serve", "up", "task.yaml", "-y")
	cmd.Dir = dir
	// One address: this coordinator takes the upload.
	cmd.Env = append(os.Environ(), "BATON_ADDR="+fc.apiURL("c1"))
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Uploaded bundle") {
		t.Fatalf("serve up through c1: %v\n%s", err, out)
	}
	fc.waitReady("code", 1, 1)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}

	fc.kill9("c1")
	fc.waitLeader(60*time.Second, "c1")
	// The late agent joins; the one running the replica dies, so the
	// replacement can only go to the late one.
	fc.startNode("gpu-2")
	fc.waitAgentsAlive(2)
	fc.kill9("gpu-1")
	st := fc.waitStatus(120*time.Second, "the replacement READY on gpu-2", func(st protocol.StatusResponse) error {
		for _, r := range replicas(st, "code") {
			if r.Agent == "gpu-2" && r.Status == protocol.ReplicaReady {
				return nil
			}
		}
		return fmt.Errorf("replicas %+v", replicas(st, "code"))
	})
	for _, r := range replicas(st, "code") {
		if r.Agent == "gpu-2" && r.Status == protocol.ReplicaReady {
			resp, err := http.Get("http://" + r.Endpoint + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "survivor" {
				t.Errorf("the replica on gpu-2 answered %q", b)
			}
		}
	}
}
