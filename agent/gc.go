package agent

import (
	"os"
	"path/filepath"
	"time"
)

// pruneReplicaDirs removes the directories (work dir and log) of replicas
// this agent no longer runs once nothing has been written to them for
// ReplicaDirTTL. Until then `baton serve logs` can still read them. A
// directory that still records a process group (a pgid file) is left to
// the orphan cleanup at start.
func (a *Agent) pruneReplicaDirs(now time.Time) {
	root := filepath.Join(a.cfg.DataDir, "replicas")
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	a.mu.Lock()
	inUse := make(map[string]bool, len(a.replicas))
	for _, r := range a.replicas {
		inUse[r.dir] = true
	}
	a.mu.Unlock()
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		if !e.IsDir() || inUse[dir] {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, pgidFile)); err == nil {
			continue
		}
		if last := lastWrite(dir); now.Sub(last) < a.cfg.ReplicaDirTTL {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			a.logger.Warn("could not remove old replica directory", "dir", dir, "error", err)
			continue
		}
		a.logger.Info("old replica directory removed", "dir", dir)
	}
}

// lastWrite is the latest modification time of dir and the files directly
// in it (the log is written long after the directory is made).
func lastWrite(dir string) time.Time {
	var last time.Time
	if fi, err := os.Stat(dir); err == nil {
		last = fi.ModTime()
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.ModTime().After(last) {
			last = fi.ModTime()
		}
	}
	return last
}
