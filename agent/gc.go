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
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, pgidFile)); err == nil {
			continue
		}
		if last := lastWrite(dir); now.Sub(last) < a.cfg.ReplicaDirTTL {
			continue
		}
		// Checked and moved out of the way under a.mu: a replica assigned
		// the same key meanwhile (apply holds a.mu) must not lose the
		// directory it is about to use.
		trash := dir + ".removing"
		a.mu.Lock()
		inUse := false
		for _, r := range a.replicas {
			inUse = inUse || r.dir == dir
		}
		var err error
		if !inUse {
			err = os.Rename(dir, trash)
		}
		a.mu.Unlock()
		if inUse {
			continue
		}
		if err == nil {
			err = os.RemoveAll(trash)
		}
		if err != nil {
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
