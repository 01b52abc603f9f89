package cgroups

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// fakeKernel plays cgroupfs over a temporary directory: mkdir fills a new
// group with the control files of its controllers, writes go to files
// that exist (and are recorded), cgroup.subtree_control takes "+ctl", and
// rmdir removes a group unless it has members or child groups.
type fakeKernel struct {
	t    *testing.T
	root string // the temporary directory that stands for "/"

	mu       sync.Mutex
	v2       map[string]bool     // mount point → is the cgroup2 hierarchy
	v1       map[string][]string // mount point of a v1 hierarchy → its controllers
	noSwap   bool                // the kernel has no swap accounting files
	refuse   map[string]error    // path relative to root → error its writes return
	writeLog []string            // "path=value", path relative to root, in order
}

var _ fileSystem = (*fakeKernel)(nil)

// newFakeKernel returns an empty fake; add hierarchies with mountV2 and
// mountV1.
func newFakeKernel(t *testing.T) *fakeKernel {
	t.Helper()
	return &fakeKernel{t: t, root: t.TempDir(), v2: map[string]bool{}, v1: map[string][]string{}, refuse: map[string]error{}}
}

// path turns a path as the host sees it ("/sys/fs/cgroup") into the
// fake's.
func (k *fakeKernel) path(p string) string { return filepath.Join(k.root, p) }

// rel turns a fake path back into the host's view.
func (k *fakeKernel) rel(p string) string {
	r, err := filepath.Rel(k.root, p)
	if err != nil {
		k.t.Fatalf("path %s is outside the fake root %s", p, k.root)
	}
	return "/" + r
}

// mountV2 mounts a cgroup2 hierarchy at point whose root offers
// controllers and has enabled (cgroup.subtree_control) those in on.
func (k *fakeKernel) mountV2(point, controllers, on string) {
	k.t.Helper()
	dir := k.path(point)
	k.v2[dir] = true
	k.mkFiles(dir, v2CoreFiles, map[string]string{
		"cgroup.controllers":     controllers + "\n",
		"cgroup.subtree_control": on + "\n",
	})
}

// mountV1 mounts a v1 hierarchy of controllers at point.
func (k *fakeKernel) mountV1(point string, controllers ...string) {
	k.t.Helper()
	dir := k.path(point)
	k.v1[dir] = controllers
	k.mkFiles(dir, v1CoreFiles, nil)
}

// layout is the layout detection would find for the fake's mounts.
func (k *fakeKernel) layout() layout {
	var mounts []mount
	for dir := range k.v2 {
		mounts = append(mounts, mount{root: "/", point: dir, options: []string{"rw"}, fsType: "cgroup2", superOpts: []string{"rw"}})
	}
	for dir, ctls := range k.v1 {
		mounts = append(mounts, mount{root: "/", point: dir, options: []string{"rw"}, fsType: "cgroup", superOpts: append([]string{"rw"}, ctls...)})
	}
	slices.SortFunc(mounts, func(a, b mount) int { return strings.Compare(a.point, b.point) })
	return detectLayout(mounts)
}

// Control files a new group gets, with their initial contents.
var (
	v2CoreFiles = map[string]string{
		"cgroup.procs": "", "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.kill": "",
		"cgroup.freeze": "0\n", "cgroup.subtree_control": "\n", "cgroup.controllers": "\n",
		"cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
	}
	v2ControllerFiles = map[string]map[string]string{
		"memory": {"memory.max": "max\n", "memory.swap.max": "max\n", "memory.low": "0\n", "memory.peak": "0\n",
			"memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"},
		"cpu":  {"cpu.max": "max 100000\n", "cpu.weight": "100\n"},
		"pids": {"pids.max": "max\n", "pids.events": "max 0\n"},
	}
	v1CoreFiles       = map[string]string{"cgroup.procs": "", "tasks": "", "notify_on_release": "0\n"}
	v1ControllerFiles = map[string]map[string]string{
		"memory": {"memory.limit_in_bytes": "9223372036854771712\n", "memory.memsw.limit_in_bytes": "9223372036854771712\n",
			"memory.soft_limit_in_bytes": "9223372036854771712\n", "memory.max_usage_in_bytes": "0\n",
			"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"},
		"cpu":     {"cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "-1\n", "cpu.shares": "1024\n"},
		"cpuacct": {"cpuacct.usage": "0\n"},
		"pids":    {"pids.max": "max\n"},
		"freezer": {"freezer.state": "THAWED\n"},
	}
)

func (k *fakeKernel) mkFiles(dir string, files ...map[string]string) {
	k.t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		k.t.Fatal(err)
	}
	for _, set := range files {
		for name, content := range set {
			if k.noSwap && (name == "memory.swap.max" || name == "memory.memsw.limit_in_bytes") {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				k.t.Fatal(err)
			}
		}
	}
}

// hierarchyOf returns the mount point that dir is in.
func (k *fakeKernel) hierarchyOf(dir string) (point string, v2 bool) {
	for p := range k.v2 {
		if dir == p || strings.HasPrefix(dir, p+"/") {
			return p, true
		}
	}
	for p := range k.v1 {
		if dir == p || strings.HasPrefix(dir, p+"/") {
			return p, false
		}
	}
	k.t.Fatalf("%s is in no fake hierarchy", dir)
	return "", false
}

// Mkdir creates a group with the control files the kernel would give it.
func (k *fakeKernel) Mkdir(dir string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	point, v2 := k.hierarchyOf(dir)
	if !v2 {
		sets := []map[string]string{v1CoreFiles}
		for _, c := range k.v1[point] {
			sets = append(sets, v1ControllerFiles[c])
		}
		k.mkFiles(dir, sets...)
		return nil
	}
	// A child gets the controllers its parent enabled.
	on, err := readFields(filepath.Join(filepath.Dir(dir), "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	sets := []map[string]string{v2CoreFiles}
	for _, c := range on {
		sets = append(sets, v2ControllerFiles[c])
	}
	k.mkFiles(dir, sets...)
	return os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte(strings.Join(on, " ")+"\n"), 0o644)
}

// Rmdir removes a group that has no members and no child group.
func (k *fakeKernel) Rmdir(dir string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !exists(dir) {
		return &fs.PathError{Op: "rmdir", Path: dir, Err: syscall.ENOENT}
	}
	sub, err := subgroups(dir)
	if err != nil {
		return err
	}
	pids, _ := readPids(filepath.Join(dir, "cgroup.procs"))
	if len(sub) > 0 || len(pids) > 0 {
		return &fs.PathError{Op: "rmdir", Path: dir, Err: syscall.EBUSY}
	}
	return os.RemoveAll(dir)
}

// WriteFile writes an existing control file and records the write.
func (k *fakeKernel) WriteFile(path, value string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.refuse[k.rel(path)]; err != nil {
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	if !exists(path) {
		return &fs.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	k.writeLog = append(k.writeLog, k.rel(path)+"="+value)
	dir := filepath.Dir(path)
	switch filepath.Base(path) {
	case "cgroup.subtree_control":
		avail, _ := readFields(filepath.Join(dir, "cgroup.controllers"))
		on, _ := readFields(path)
		for _, w := range strings.Fields(value) {
			c := w[1:]
			if !slices.Contains(avail, c) {
				return &fs.PathError{Op: "write", Path: path, Err: syscall.ENOENT}
			}
			if w[0] == '+' && !slices.Contains(on, c) {
				on = append(on, c)
				k.passDown(dir, c)
			}
		}
		value = strings.Join(on, " ")
	case "cgroup.freeze":
		frozen := "populated 0\nfrozen " + value + "\n"
		if err := os.WriteFile(filepath.Join(dir, "cgroup.events"), []byte(frozen), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(path, []byte(value+"\n"), 0o644)
}

// passDown gives controller c to the existing children of dir, as the
// kernel does when c is enabled in dir's cgroup.subtree_control.
func (k *fakeKernel) passDown(dir, c string) {
	k.t.Helper()
	sub, err := subgroups(dir)
	if err != nil {
		k.t.Fatal(err)
	}
	for _, s := range sub {
		child := filepath.Join(dir, s)
		ctls, _ := readFields(filepath.Join(child, "cgroup.controllers"))
		ctls = append(ctls, c)
		k.mkFiles(child, v2ControllerFiles[c], map[string]string{"cgroup.controllers": strings.Join(ctls, " ") + "\n"})
	}
}

// writes returns the recorded writes and forgets them.
func (k *fakeKernel) writes() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	w := k.writeLog
	k.writeLog = nil
	return w
}

// read returns a file's content as the host sees path, trimmed.
func (k *fakeKernel) read(path string) string {
	k.t.Helper()
	b, err := os.ReadFile(k.path(path))
	if err != nil {
		k.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// set overwrites a file (a figure the kernel keeps, a member list).
func (k *fakeKernel) set(path, content string) {
	k.t.Helper()
	if err := os.WriteFile(k.path(path), []byte(content), 0o644); err != nil {
		k.t.Fatal(err)
	}
}

// open opens a Manager for parent on the fake.
func (k *fakeKernel) open(parent string) (*Manager, error) {
	return open(k.layout(), parent, k)
}
