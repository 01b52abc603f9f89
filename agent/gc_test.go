package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/baton-dev/baton/protocol"
)

func TestPruneReplicaDirs(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ID = "gc-test"
	cfg.DataDir = t.TempDir()
	cfg.Accelerators = "A100:1" // fake GPUs: no NVML needed
	cfg.ReplicaDirTTL = time.Hour
	cfg.ReplicaUser = currentUser(t)
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	mk := func(name string, age time.Duration, files ...string) string {
		dir := filepath.Join(cfg.DataDir, "replicas", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range append(files, "replica.log") {
			p := filepath.Join(dir, f)
			if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			_ = os.Chtimes(p, now.Add(-age), now.Add(-age))
		}
		_ = os.Chtimes(dir, now.Add(-age), now.Add(-age))
		return dir
	}
	old := mk("web-1", 2*time.Hour)
	recent := mk("web-2", 10*time.Minute)
	orphan := mk("web-3", 2*time.Hour, pgidFile)
	// An old directory whose key was just assigned again is in use.
	reused := mk("web-4", 2*time.Hour)
	a.mu.Lock()
	a.replicas["web/4"] = newReplica(protocol.ReplicaAssignment{Service: "web", ReplicaID: 4}, reused)
	a.mu.Unlock()
	a.pruneReplicaDirs(now)
	for dir, want := range map[string]bool{old: false, recent: true, orphan: true, reused: true, old + ".removing": false} {
		_, err := os.Stat(dir)
		if got := err == nil; got != want {
			t.Errorf("%s exists = %v, want %v", filepath.Base(dir), got, want)
		}
	}
}
