package cgroups

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
)

// fileSystem is the part of cgroupfs whose behaviour a plain directory
// does not have: mkdir fills a new group with control files, writes to
// cgroup.subtree_control add to it, and rmdir removes a group that still
// has its control files. Reads go straight to the os package. Tests
// replace it with a fake kernel over a temporary directory.
type fileSystem interface {
	Mkdir(path string) error
	Rmdir(path string) error
	WriteFile(path, value string) error
}

// osFS is the real cgroupfs.
type osFS struct{}

func (osFS) Mkdir(path string) error { return os.Mkdir(path, 0o755) }
func (osFS) Rmdir(path string) error { return os.Remove(path) }

// WriteFile writes value to an existing control file in one write(2), as
// the kernel wants: it never creates a file, so a control file that this
// kernel lacks is an error (fs.ErrNotExist), not a stray regular file.
func (osFS) WriteFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

var _ fileSystem = osFS{}

// exists reports whether path exists (an unreadable path counts as absent).
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// readFields reads a control file of words: cgroup.controllers,
// cgroup.subtree_control.
func readFields(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

// readInt reads a control file that holds one integer.
func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// readKey reads the integer after key in a flat-keyed control file
// ("key value" lines: cgroup.events, memory.events, cpu.stat,
// memory.oom_control).
func readKey(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		k, v, ok := strings.Cut(strings.TrimSpace(string(line)), " ")
		if ok && k == key {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s: %w", path, key, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: no %q line: %w", path, key, ErrNotSupported)
}

// readPids reads a cgroup.procs file: one pid a line, in no promised
// order, possibly with repeats (v1).
func readPids(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a pid", path, f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// subgroups lists the child groups (directories) of dir; none if dir is
// gone.
func subgroups(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}
