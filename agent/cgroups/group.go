package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// deleteRetry bounds how long Delete retries a group that the kernel
// still calls busy (its last members are exiting).
const deleteRetry = 2 * time.Second

// Group is one replica's cgroup: a directory of the same name in each
// hierarchy its Manager uses. It holds no state of its own (every method
// reads or writes the kernel's files), so its methods are safe for
// concurrent use; the Manager's rule about Create, Kill and Delete of one
// name applies.
//
// Members are counted in this group and in any group a member creates
// below it. Zombies are not members: a killed replica's leader, not yet
// reaped by the agent, does not keep the group populated.
type Group struct {
	name    string
	fs      fileSystem
	unified string           // the group's directory in cgroup2; "" if not used
	dirs    []string         // every directory of the group, unified first
	limits  map[string]place // enforced controller → directory with its files
	cpuacct string           // the v1 cpuacct directory; "" if not used
	freezer string           // the v1 freezer directory; "" if not used
}

// Name returns the group's name under its Manager's parent.
func (g *Group) Name() string { return g.name }

// ProcsFiles returns the cgroup.procs file of the group in every
// hierarchy it spans (cgroup2 first). A process is a member once it has
// written its pid to each; see JoinFiles.
func (g *Group) ProcsFiles() []string {
	files := make([]string, len(g.dirs))
	for i, d := range g.dirs {
		files[i] = filepath.Join(d, "cgroup.procs")
	}
	return files
}

// JoinFiles moves the calling process, all its threads, into the groups
// whose cgroup.procs files are given (a Group's ProcsFiles, passed to a
// child on its command line or in its environment). The trampoline that
// starts a replica calls it before it execs the replica's command, so
// that everything the command forks starts inside the group; if it fails
// the trampoline must exit, not run the command. Call it from a process
// that runs nothing else: it moves the whole process.
//
// Until it has joined, the trampoline is no member: Kill does not see it.
// The agent, its parent, stops it by pid as well, and gives every run of
// a replica a group name of its own, so that a trampoline that joins late
// finds its group gone (and exits) rather than joining a successor's.
func JoinFiles(files []string) error {
	pid := strconv.Itoa(os.Getpid())
	for _, f := range files {
		if err := (osFS{}).WriteFile(f, pid); err != nil {
			return fmt.Errorf("cgroups: join %s: %w", f, err)
		}
	}
	return nil
}

// Join moves process pid (not its children: those already forked stay
// where they are) into the group in every hierarchy.
func (g *Group) Join(pid int) error {
	for _, f := range g.ProcsFiles() {
		if err := g.fs.WriteFile(f, strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("cgroups: move pid %d into %s: %w", pid, f, err)
		}
	}
	return nil
}

// Procs returns the pids of the group's members, sorted: the union over
// every hierarchy and every group below this one. A group that does not
// exist has none.
func (g *Group) Procs() ([]int, error) {
	var pids []int
	for _, dir := range g.dirs {
		p, err := procsBelow(dir)
		if err != nil {
			return nil, err
		}
		pids = append(pids, p...)
	}
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

// procsBelow lists the members of dir and of every group below it.
func procsBelow(dir string) ([]int, error) {
	dirs, err := tree(dir)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, d := range dirs {
		p, err := readPids(filepath.Join(d, "cgroup.procs"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		pids = append(pids, p...)
	}
	return pids, nil
}

// tree lists dir and every directory below it, children before their
// parent (the order in which rmdir can remove them); none if dir is gone.
func tree(dir string) ([]string, error) {
	if !exists(dir) {
		return nil, nil
	}
	sub, err := subgroups(dir)
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	var dirs []string
	for _, s := range sub {
		below, err := tree(filepath.Join(dir, s))
		if err != nil {
			return nil, err
		}
		dirs = append(dirs, below...)
	}
	return append(dirs, dir), nil
}

// Populated reports whether the group has a member: in cgroup2, its
// cgroup.events says "populated 1"; in v1 hierarchies, a cgroup.procs
// below it lists a pid. (Hybrid checks both, for a process that joined
// only some hierarchies.)
func (g *Group) Populated() (bool, error) {
	for _, dir := range g.dirs {
		if dir == g.unified {
			n, err := readKey(filepath.Join(dir, "cgroup.events"), "populated")
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return false, fmt.Errorf("cgroups: %w", err)
			}
			if n != 0 {
				return true, nil
			}
			continue
		}
		pids, err := procsBelow(dir)
		if err != nil {
			return false, err
		}
		if len(pids) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// Signal sends sig to every member (SIGTERM, for a graceful stop). A
// member that exits meanwhile is not an error. A process that joins
// while Signal runs may be missed; Kill does not miss any.
func (g *Group) Signal(sig syscall.Signal) error {
	return g.signal(sig)
}

// signal sends sig to the members that Procs lists, without ever
// signalling a process that merely inherited a member's pid: it takes a
// handle on each pid first (os.FindProcess holds a pidfd on Linux 5.3
// and later), then reads the members again and signals through the
// handles of the pids still listed. A pid that is still a member after
// its handle was taken is that handle's process. It never signals the
// calling process.
func (g *Group) signal(sig syscall.Signal) error {
	pids, err := g.Procs()
	if err != nil || len(pids) == 0 {
		return err
	}
	self := os.Getpid()
	procs := make([]*os.Process, 0, len(pids))
	for _, pid := range pids {
		if pid == self {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil {
			procs = append(procs, p)
		}
	}
	defer func() {
		for _, p := range procs {
			_ = p.Release()
		}
	}()
	still, err := g.Procs()
	if err != nil {
		return err
	}
	var first error
	for _, p := range procs {
		if _, ok := slices.BinarySearch(still, p.Pid); !ok {
			continue
		}
		err := p.Signal(sig)
		if err != nil && !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, syscall.ESRCH) && first == nil {
			first = fmt.Errorf("cgroups: signal pid %d in %q: %w", p.Pid, g.name, err)
		}
	}
	return first
}

// OOMKills returns how many times the kernel's OOM killer has killed a
// member because the group hit MemoryMax (v2 memory.events oom_kill,
// v1 memory.oom_control oom_kill, Linux 4.13 and later). The count lives
// as long as the group.
func (g *Group) OOMKills() (int64, error) {
	p, ok := g.limits["memory"]
	if !ok {
		return 0, fmt.Errorf("%w: no memory controller", ErrNotSupported)
	}
	file := "memory.oom_control"
	if p.v2 {
		file = "memory.events"
	}
	return g.figure(p.dir, file, "oom_kill")
}

// MemoryPeak returns the most memory, in bytes, that the group has used
// at once (v2 memory.peak, Linux 5.19 and later; v1
// memory.max_usage_in_bytes).
func (g *Group) MemoryPeak() (int64, error) {
	p, ok := g.limits["memory"]
	if !ok {
		return 0, fmt.Errorf("%w: no memory controller", ErrNotSupported)
	}
	if p.v2 {
		return g.figure(p.dir, "memory.peak", "")
	}
	return g.figure(p.dir, "memory.max_usage_in_bytes", "")
}

// CPUUsage returns the CPU time the group's members have used, user and
// system, since the group was created (cgroup2 cpu.stat usage_usec,
// which needs no controller; v1 cpuacct.usage).
func (g *Group) CPUUsage() (time.Duration, error) {
	switch {
	case g.unified != "":
		us, err := g.figure(g.unified, "cpu.stat", "usage_usec")
		return time.Duration(us) * time.Microsecond, err
	case g.cpuacct != "":
		ns, err := g.figure(g.cpuacct, "cpuacct.usage", "")
		return time.Duration(ns), err
	}
	return 0, fmt.Errorf("%w: no cpu accounting", ErrNotSupported)
}

// figure reads a number from file in dir: the value after key, or the
// whole file if key is "". A file this kernel lacks is ErrNotSupported.
func (g *Group) figure(dir, file, key string) (int64, error) {
	path := filepath.Join(dir, file)
	var v int64
	var err error
	if key == "" {
		v, err = readInt(path)
	} else {
		v, err = readKey(path, key)
	}
	switch {
	case err == nil:
		return v, nil
	case errors.Is(err, fs.ErrNotExist) && exists(dir):
		return 0, fmt.Errorf("%w: group %q has no %s", ErrNotSupported, g.name, file)
	default:
		return 0, fmt.Errorf("cgroups: group %q: %w", g.name, err)
	}
}

// Delete removes the group, and any group a member made below it, from
// every hierarchy. It must have no members (Kill it first): while the
// kernel still calls it busy, Delete retries for up to 2 s, then returns
// an error matching ErrNotEmpty. A group that is already gone is not an
// error.
func (g *Group) Delete() error {
	var errs []error
	for _, dir := range g.dirs {
		if err := g.remove(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// remove removes dir and every group below it, retrying while busy.
func (g *Group) remove(dir string) error {
	deadline := time.Now().Add(deleteRetry)
	for {
		dirs, err := tree(dir)
		if err != nil {
			return err
		}
		var failed string
		for _, d := range dirs {
			if err = g.fs.Rmdir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				failed = d
				break
			}
			err = nil
		}
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, syscall.EBUSY):
			return fmt.Errorf("cgroups: remove %s: %w", failed, err)
		case time.Now().After(deadline):
			return fmt.Errorf("%w: remove %s: %w", ErrNotEmpty, failed, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exists reports whether the group has a directory in some hierarchy.
func (g *Group) exists() bool {
	for _, d := range g.dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return true
		}
	}
	return false
}
