// Package procscan finds processes by their environment, from /proc: what
// the operating system sees, not what baton believes. Tests and the demo
// use it to prove that replica processes are gone.
package procscan

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
)

// WithEnv returns the PIDs of processes whose initial environment holds
// every one of pairs ("KEY=value"). Processes it may not read are skipped.
// On systems without /proc it returns nil.
func WithEnv(pairs ...string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if HasEnv(pid, pairs...) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// HasEnv reports whether process pid's initial environment holds every
// one of pairs ("KEY=value"). An unreadable process has none.
func HasEnv(pid int, pairs ...string) bool {
	env, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	return err == nil && hasAll(env, pairs)
}

func hasAll(environ []byte, pairs []string) bool {
	vars := bytes.Split(environ, []byte{0})
	for _, p := range pairs {
		found := false
		for _, v := range vars {
			if string(v) == p {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
