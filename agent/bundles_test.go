package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/bundle"
	"github.com/baton-dev/baton/protocol"
)

// serveBundle answers bundle chunk requests on h's NATS with the archive
// in path, as the coordinators do, and counts the requests.
func serveBundle(t *testing.T, h *harness, path, digest string) *atomic.Int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int64
	if _, err := h.nc.Subscribe(protocol.SubjectBundleGetAll, func(m *nats.Msg) {
		asked.Add(1)
		var req protocol.BundleChunkRequest
		reply := &nats.Msg{Header: nats.Header{}}
		switch {
		case json.Unmarshal(m.Data, &req) != nil || req.Validate() != nil:
			reply.Header.Set(protocol.HeaderBundleError, "invalid request")
		case req.Digest != digest:
			reply.Header.Set(protocol.HeaderBundleError, "unknown bundle")
		default:
			end := min(req.Offset+int64(req.Length), int64(len(data)))
			reply.Header.Set(protocol.HeaderBundleSize, strconv.Itoa(len(data)))
			reply.Data = data[req.Offset:end]
		}
		_ = m.RespondMsg(reply)
	}); err != nil {
		t.Fatal(err)
	}
	_ = h.nc.Flush()
	return &asked
}

// TestReplicaRunsFromBundle: a replica whose spec names a bundle runs in
// its own copy of the bundle's workdir, with its ~/ file_mounts in its own
// home; setup writes there and not into the bundle; a second replica of
// the same bundle does not fetch it again; the fetched bundle is larger
// than one chunk.
func TestReplicaRunsFromBundle(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello from the bundle\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Incompressible, so the archive spans several chunks.
	big := make([]byte, 2*protocol.MaxBundleChunk+12345)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(big)
	if err := os.WriteFile(filepath.Join(src, "weights.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(cfgDir, "app.conf"), []byte("mode=test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mounts := []bundle.Mount{{Target: "~/conf", Source: cfgDir}}
	// An absolute target is bind-mounted in the replica's own mount
	// namespace, which needs a root agent.
	absTarget, mountRoot := "", t.TempDir()
	if os.Geteuid() == 0 {
		absTarget = filepath.Join(mountRoot, "srv", "conf")
		mounts = append(mounts, bundle.Mount{Target: absTarget, Source: cfgDir})
	}
	archive, digest, size, _, err := bundle.PackFile(src, bundle.Options{Mounts: mounts}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if size < protocol.MaxBundleChunk {
		t.Fatalf("bundle of %d bytes fits one chunk; the test wants several", size)
	}

	h := startAgent(t, func(c *Config) { c.MountRoots = []string{mountRoot} })
	asked := serveBundle(t, h, archive, digest)
	one, two := serverAssignment(t, "code", 1), serverAssignment(t, "code", 2)
	for _, a := range []*protocol.ReplicaAssignment{&one, &two} {
		a.Spec.Bundle = digest
		a.Spec.FileMounts = map[string]string{"~/conf": "./conf"}
		a.Spec.Setup = "echo built > built.txt && cat hello.txt && test \"$(cat ~/conf/app.conf)\" = mode=test"
		if absTarget != "" {
			a.Spec.FileMounts[absTarget] = "./conf"
			// Each replica writes into its own copy at the same path.
			a.Spec.Setup += fmt.Sprintf(" && test \"$(cat %[1]s/app.conf)\" = mode=test && echo $BATON_REPLICA_ID > %[1]s/mine && test \"$(cat %[1]s/mine)\" = $BATON_REPLICA_ID", absTarget)
		}
		a.Spec.Run = "test -f built.txt && test -f weights.bin && " + a.Spec.Run
	}
	h.desire(1, one)
	h.waitStatus("code", 1, protocol.ReplicaReady, readyTimeout)
	// PROVISIONING while the code was fetched, then STARTING.
	if hist := h.history("code", 1); len(hist) < 2 || hist[0] != protocol.ReplicaProvisioning {
		t.Errorf("replica 1's statuses %v, want PROVISIONING first", hist)
	}
	fetches := asked.Load()
	if want := (size + protocol.MaxBundleChunk - 1) / protocol.MaxBundleChunk; fetches != want {
		t.Errorf("%d chunk requests for a %d-byte bundle, want %d", fetches, size, want)
	}
	h.desire(2, one, two)
	h.waitStatus("code", 2, protocol.ReplicaReady, readyTimeout)
	if asked.Load() != fetches {
		t.Errorf("the second replica fetched the bundle again: %d requests, was %d", asked.Load(), fetches)
	}
	for _, id := range []int{1, 2} {
		work := filepath.Join(h.replicaDir("code", id), "work")
		if b, err := os.ReadFile(filepath.Join(work, "built.txt")); err != nil || string(b) != "built\n" {
			t.Errorf("replica %d: setup's file in its own copy: %q, %v", id, b, err)
		}
		if b, err := os.ReadFile(filepath.Join(work, "weights.bin")); err != nil || !bytes.Equal(b, big) {
			t.Errorf("replica %d: weights.bin differs from the source (%d bytes, %v)", id, len(b), err)
		}
	}
	// Setup wrote into the replicas' copies only.
	if _, err := os.Stat(filepath.Join(src, "built.txt")); err == nil {
		t.Error("setup wrote into the source tree")
	}
	unpacked := filepath.Join(h.cfg.DataDir, "bundles", digestDir(digest), bundle.WorkdirDir)
	if _, err := os.Stat(filepath.Join(unpacked, "built.txt")); err == nil {
		t.Error("setup wrote into the agent's unpacked bundle")
	}
	if absTarget != "" {
		// The mount was the replicas' own: the machine sees only the
		// empty mount point.
		if ents, err := os.ReadDir(absTarget); err != nil || len(ents) != 0 {
			t.Errorf("%s on the machine: %v, %v; want an empty mount point", absTarget, ents, err)
		}
		for _, id := range []int{1, 2} {
			mine := filepath.Join(h.replicaDir("code", id), "mounts", "0", "mine")
			if b, err := os.ReadFile(mine); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(id) {
				t.Errorf("replica %d's own copy of %s: %q, %v", id, absTarget, b, err)
			}
		}
	}
	logs := readLog(t, h, "code", 1)
	if !strings.Contains(logs, "hello from the bundle") || !strings.Contains(logs, "fetching code: bundle "+digest) {
		t.Errorf("replica 1's log:\n%s", logs)
	}
}

// TestBundleFetchFailureFailsReplica: a bundle no coordinator has, and one
// whose bytes do not hash to its digest, fail the replica with a reason
// naming the bundle; nothing is left half unpacked.
func TestBundleFetchFailureFailsReplica(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	archive, digest, _, _, err := bundle.PackFile(src, bundle.Options{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := startAgent(t, nil)
	// Serve these bytes under another digest: they will not verify.
	forged := "sha256:" + strings.Repeat("ab", 32)
	serveBundle(t, h, archive, forged)
	bad := serverAssignment(t, "bad", 1)
	bad.Spec.Bundle = forged
	missing := serverAssignment(t, "missing", 1)
	missing.Spec.Bundle = digest
	h.desire(1, bad, missing)
	r := h.waitStatus("bad", 1, protocol.ReplicaFailed, 30*time.Second)
	if !strings.Contains(r.Reason, forged) || !strings.Contains(r.Reason, "damaged or not the one asked for") {
		t.Errorf("forged bundle: reason %q", r.Reason)
	}
	r = h.waitStatus("missing", 1, protocol.ReplicaFailed, 60*time.Second)
	if !strings.Contains(r.Reason, digest) || !strings.Contains(r.Reason, "unknown bundle") {
		t.Errorf("missing bundle: reason %q", r.Reason)
	}
	left, _ := filepath.Glob(filepath.Join(h.cfg.DataDir, "bundles", "*"))
	if len(left) != 0 {
		t.Errorf("left in the bundle cache: %v", left)
	}
}

// TestMountPointOutsideRootsRefused: an absolute file_mounts target whose
// mount point does not exist and would be created in a system directory
// (/etc/nologin locks users out, even empty) fails the replica, saying
// where mount points may be created, and creates nothing.
func TestMountPointOutsideRootsRefused(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("absolute file_mounts need a root agent; a non-root one refuses them whatever the path (TestReplicaRunsFromBundle)")
	}
	src, cfgDir := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(cfgDir, "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := "/etc/baton-test-mount-" + strconv.Itoa(os.Getpid())
	archive, digest, _, _, err := bundle.PackFile(src, bundle.Options{Mounts: []bundle.Mount{{Target: target, Source: cfgDir}}}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := startAgent(t, nil)
	serveBundle(t, h, archive, digest)
	asg := serverAssignment(t, "sys", 1)
	asg.Spec.Bundle = digest
	asg.Spec.FileMounts = map[string]string{target: "./conf"}
	h.desire(1, asg)
	r := h.waitStatus("sys", 1, protocol.ReplicaFailed, 30*time.Second)
	if !strings.Contains(r.Reason, "creates mount points only as a new top-level directory or under /mnt, /opt, /srv, /data") {
		t.Errorf("reason %q", r.Reason)
	}
	if _, err := os.Lstat(target); err == nil {
		os.RemoveAll(target)
		t.Errorf("%s was created on the machine", target)
	}
}
