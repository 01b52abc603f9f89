// Package cgroups puts each replica's process tree in a cgroup of its own:
// the kernel applies the replica's memory, CPU and process limits to the
// whole tree, counts its OOM kills, and lets the agent kill every process
// in it, however it was forked, daemonised or setsid'ed.
//
// A Manager owns one parent group (say "baton.slice/agent-1") in every
// cgroup hierarchy it uses, and creates one child Group per replica. The
// layout is detected from /proc/self/mountinfo; see Mode for what each one
// uses. Where cgroups cannot be used at all (no hierarchy, read-only in a
// container, not root) Open says why and returns a Manager in ModeNone,
// so that the agent logs it once and falls back to process groups.
//
// A process joins a group by writing its pid to each of the group's
// ProcsFiles. The agent does this in the child, before it runs anything:
// a tiny trampoline (the agent binary re-executed) calls JoinFiles and
// then execs `bash -c <run>`, so no process of the replica ever runs
// outside the group.
package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// ErrUnavailable is matched (with errors.Is) by the error Open returns
// when cgroups cannot be used on this host, and by a ModeNone Manager's
// Create.
var ErrUnavailable = errors.New("cgroups: not usable on this host")

// ErrNotEmpty is matched by the errors of Kill and Delete when members
// are left in a group.
var ErrNotEmpty = errors.New("cgroups: group still has members")

// ErrNotSupported is matched by the errors of a figure (OOMKills,
// MemoryPeak, CPUUsage) that this host's cgroups do not keep.
var ErrNotSupported = errors.New("cgroups: not supported on this host")

// Mode is the cgroup layout a Manager works with.
type Mode string

const (
	// ModeV2 is the unified hierarchy (cgroup2 at /sys/fs/cgroup, the
	// default of current distributions). One directory per group:
	// membership is cgroup.procs, limits are memory.max, cpu.max,
	// pids.max..., and Kill writes cgroup.kill (Linux 5.14), else
	// freezes with cgroup.freeze and SIGKILLs every member.
	ModeV2 Mode = "v2"
	// ModeHybrid is systemd's hybrid layout: the v1 controllers under
	// /sys/fs/cgroup/{memory,cpu,pids} carry the limits, and a cgroup2
	// hierarchy without controllers (/sys/fs/cgroup/unified) carries
	// membership, Populated, CPU usage and Kill (cgroup.kill, else
	// cgroup.freeze). A group is one directory in each.
	ModeHybrid Mode = "hybrid"
	// ModeV1 is legacy cgroup v1: one directory per mounted controller
	// (memory, cpu, pids, cpuacct, freezer); membership is the union of
	// their cgroup.procs, and Kill freezes the group (v1 freezer, if
	// mounted), SIGKILLs every member and thaws, until none is left.
	ModeV1 Mode = "v1"
	// ModeNone means cgroups are not used: Create fails with
	// ErrUnavailable, and the agent must isolate replicas by process
	// group alone.
	ModeNone Mode = "none"
)

// replaceKillTimeout bounds how long Create waits for the members of an
// existing group of the same name to die.
const replaceKillTimeout = 10 * time.Second

// place is where a controller's control files are: a directory, in the
// cgroup2 hierarchy (v2) or in the controller's v1 hierarchy.
type place struct {
	dir string
	v2  bool
}

// Manager creates replica groups under one parent group. Open it once per
// agent. It does not change after Open, so its methods are safe for
// concurrent use; Create, Kill and Delete of groups of the same name must
// not overlap (the agent supervises each replica from one goroutine).
type Manager struct {
	mode   Mode
	parent string // slash-separated, relative to each hierarchy's root
	fs     fileSystem

	unified string            // the parent's directory in cgroup2; "" if none is used
	v1      map[string]string // controller → the parent's directory in its v1 hierarchy
	limits  map[string]place  // enforced controller ("memory", "cpu", "pids") → parent directory with its files
	notes   []string          // why a limit is not enforced or a hierarchy not used
}

// Open detects the host's cgroup layout from /proc/self/mountinfo and
// creates the parent group parent (a slash-separated path relative to the
// root of each hierarchy, like "baton.slice/agent-1") in every hierarchy
// it uses. On cgroup v2 it enables the memory, cpu and pids controllers
// (those the kernel offers) in cgroup.subtree_control of every level from
// the root down to parent, so that parent's children get them.
//
// If cgroups cannot be used at all it returns a Manager in ModeNone and
// an error, matching ErrUnavailable, that says why and what to do; the
// caller logs it once and goes on without cgroups. If only some limits
// cannot be enforced, Open succeeds: see Enforced and Notes. Opening a
// parent that exists already (a restarted agent) is fine; its groups are
// then Leftovers.
func Open(parent string) (*Manager, error) {
	none := &Manager{mode: ModeNone, parent: parent, fs: osFS{}}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return none, fmt.Errorf("%w: read the mount table: %v", ErrUnavailable, err)
	}
	mounts, err := parseMountinfo(data)
	if err != nil {
		return none, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return open(detectLayout(mounts), parent, osFS{})
}

// open is Open on a given layout and file system (tests pass a fake root).
func open(lay layout, parent string, fsys fileSystem) (*Manager, error) {
	m := &Manager{mode: ModeNone, parent: parent, fs: fsys, v1: map[string]string{}, limits: map[string]place{}}
	if err := validParent(parent); err != nil {
		return m, err
	}
	if lay.empty() {
		return m, fmt.Errorf("%w: no cgroup hierarchy is mounted (mount cgroup2 at /sys/fs/cgroup)", ErrUnavailable)
	}
	var problems []problem
	if h := lay.unified; h != nil {
		dir, err := m.createParent(h)
		if err != nil {
			problems = append(problems, *err)
		} else {
			m.unified = dir
		}
	}
	// Without cgroup2, cpuacct gives CPU usage and the v1 freezer makes
	// Kill safe; with it, cgroup2 has both.
	created := map[*hierarchy]string{}
	for _, c := range v1Controllers {
		h := lay.v1[c]
		if h == nil || (m.unified != "" && (c == "cpuacct" || c == "freezer")) {
			continue
		}
		dir, ok := created[h]
		if !ok {
			var err *problem
			if dir, err = m.createParent(h); err != nil {
				problems = append(problems, *err)
				created[h] = ""
				continue
			}
			created[h] = dir
		}
		if dir != "" {
			m.v1[c] = dir
		}
	}
	switch {
	case m.unified != "" && len(m.v1) > 0:
		m.mode = ModeHybrid
	case m.unified != "":
		m.mode = ModeV2
	case len(m.v1) > 0:
		m.mode = ModeV1
	default:
		return m, fmt.Errorf("%w: %s", ErrUnavailable, summarize(problems))
	}
	for _, p := range problems {
		m.notes = append(m.notes, "not used: "+p.err.Error()+p.hint)
	}
	m.placeLimits(lay)
	return m, nil
}

// placeLimits decides where each controller of Limits is applied: in its
// v1 hierarchy if it has one, else in cgroup2 once enabled down to the
// parent. Those it cannot place get a note.
func (m *Manager) placeLimits(lay layout) {
	for _, c := range limitControllers {
		switch {
		case m.v1[c] != "":
			m.limits[c] = place{dir: m.v1[c]}
		case m.unified != "":
			if err := m.enableV2(lay.unified.point, c); err != nil {
				m.notes = append(m.notes, fmt.Sprintf("%s limits are not enforced: %v", c, err))
				continue
			}
			m.limits[c] = place{dir: m.unified, v2: true}
		default:
			m.notes = append(m.notes, fmt.Sprintf("%s limits are not enforced: no %s controller is mounted", c, c))
		}
	}
}

// validParent checks that parent is a clean relative path.
func validParent(parent string) error {
	if parent == "" || path.IsAbs(parent) || path.Clean(parent) != parent || parent == "." ||
		strings.HasPrefix(parent, "../") || parent == ".." || strings.ContainsAny(parent, "\x00\n") {
		return fmt.Errorf("cgroups: parent %q is not a clean relative path (use a path like \"baton.slice/agent-1\")", parent)
	}
	return nil
}

// validName checks a group name: one path element.
func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00\n") {
		return fmt.Errorf("cgroups: group name %q is not one path element (use a name like \"web-3\")", name)
	}
	return nil
}

// problem is why a hierarchy cannot be used, and what to do (" (run the
// agent as root)"; "" if there is no advice).
type problem struct {
	err  error
	hint string
}

// summarize says why no hierarchy can be used: the first problem, how
// many more there are, and each piece of advice once.
func summarize(problems []problem) string {
	if len(problems) == 0 {
		return "no hierarchy can be used"
	}
	msg := problems[0].err.Error()
	if n := len(problems) - 1; n == 1 {
		msg += "; 1 more hierarchy fails too"
	} else if n > 1 {
		msg += fmt.Sprintf("; %d more hierarchies fail too", n)
	}
	var hints []string
	for _, p := range problems {
		if p.hint != "" && !slices.Contains(hints, p.hint) {
			hints = append(hints, p.hint)
		}
	}
	return msg + strings.Join(hints, "")
}

// createParent creates the parent group in hierarchy h, level by level,
// and returns its directory.
func (m *Manager) createParent(h *hierarchy) (string, *problem) {
	kind := "cgroup v1"
	if h.v2 {
		kind = "cgroup2"
	}
	if h.readOnly {
		return "", &problem{
			err:  fmt.Errorf("%s (%s) is mounted read-only", h.point, kind),
			hint: " (run the agent on the host, or in a container with its own cgroup namespace and a writable /sys/fs/cgroup)",
		}
	}
	dir := h.point
	for _, elem := range strings.Split(m.parent, "/") {
		dir = filepath.Join(dir, elem)
		err := m.fs.Mkdir(dir)
		if err == nil || errors.Is(err, fs.ErrExist) {
			continue
		}
		hint := ""
		switch {
		case errors.Is(err, syscall.EROFS):
			hint = " (the cgroup file system is read-only: run the agent on the host, or in a container with a writable /sys/fs/cgroup)"
		case errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0:
			hint = " (run the agent as root, or give it a delegated subtree, e.g. systemd Delegate=yes, and a parent inside it)"
		case errors.Is(err, fs.ErrPermission):
			hint = " (the cgroup file system refuses even root: a container without its own writable cgroup namespace?)"
		}
		return "", &problem{err: fmt.Errorf("create %s (%s): %w", dir, kind, err), hint: hint}
	}
	return dir, nil
}

// enableV2 enables controller ctl in cgroup.subtree_control of every
// level from the hierarchy's root down to the parent group.
func (m *Manager) enableV2(root, ctl string) error {
	dir := root
	levels := []string{root}
	for _, elem := range strings.Split(m.parent, "/") {
		dir = filepath.Join(dir, elem)
		levels = append(levels, dir)
	}
	for _, dir := range levels {
		control := filepath.Join(dir, "cgroup.subtree_control")
		on, err := readFields(control)
		if err != nil {
			return err
		}
		if slices.Contains(on, ctl) {
			continue
		}
		avail, err := readFields(filepath.Join(dir, "cgroup.controllers"))
		if err != nil {
			return err
		}
		if !slices.Contains(avail, ctl) {
			return fmt.Errorf("the %s controller is not available in %s (the level above does not pass it down; with systemd, run the agent in a unit with Delegate=yes)", ctl, dir)
		}
		if err := m.fs.WriteFile(control, "+"+ctl); err != nil {
			if errors.Is(err, syscall.EBUSY) {
				return fmt.Errorf("enable it in %s: %w (that group has processes of its own, and cgroup v2 gives controllers only to groups whose processes live in leaf groups: move them into a child group)", control, err)
			}
			return fmt.Errorf("enable it in %s: %w", control, err)
		}
	}
	return nil
}

// Mode returns the layout the Manager works with.
func (m *Manager) Mode() Mode { return m.mode }

// Parent returns the parent group's path, as given to Open.
func (m *Manager) Parent() string { return m.parent }

// Enforced lists which of "memory", "cpu" and "pids" limits groups really
// get on this host, in that order; none in ModeNone.
func (m *Manager) Enforced() []string {
	var on []string
	for _, c := range limitControllers {
		if _, ok := m.limits[c]; ok {
			on = append(on, c)
		}
	}
	return on
}

// Notes says, one line each, why a limit in Limits is not enforced or a
// mounted hierarchy is not used (for a log line next to Mode and
// Enforced); none if everything is.
func (m *Manager) Notes() []string { return slices.Clone(m.notes) }

// Create makes the group name (one path element) under the parent, in
// every hierarchy, and applies l to it. An existing group of that name,
// left by an earlier run, is killed (waiting up to 10 s) and removed
// first. The group starts empty: have the replica's first process join
// it (JoinFiles, Join). If a step fails, what was created is removed.
func (m *Manager) Create(name string, l Limits) (*Group, error) {
	if m.mode == ModeNone {
		return nil, fmt.Errorf("%w: cannot create group %q", ErrUnavailable, name)
	}
	if err := validName(name); err != nil {
		return nil, err
	}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	g := m.group(name)
	if g.exists() {
		if err := g.Kill(replaceKillTimeout); err != nil {
			return nil, fmt.Errorf("cgroups: replace group %q: %w", name, err)
		}
		if err := g.Delete(); err != nil {
			return nil, fmt.Errorf("cgroups: replace group %q: %w", name, err)
		}
	}
	for _, dir := range g.dirs {
		if err := m.fs.Mkdir(dir); err != nil {
			_ = g.Delete()
			return nil, fmt.Errorf("cgroups: create group %q: %w", name, err)
		}
	}
	for _, c := range limitControllers {
		p, ok := g.limits[c]
		if !ok {
			continue
		}
		has := func(file string) bool { return exists(filepath.Join(p.dir, file)) }
		for _, s := range settings(c, p.v2, l, has) {
			if err := m.fs.WriteFile(filepath.Join(p.dir, s.file), s.value); err != nil {
				_ = g.Delete()
				return nil, fmt.Errorf("cgroups: group %q: write %q to %s: %w", name, s.value, s.file, err)
			}
		}
	}
	return g, nil
}

// Leftovers returns the groups under the parent that exist now, sorted by
// name: after a crash, those of the earlier agent run, to Kill and Delete
// (or Create again, which does both). None in ModeNone.
func (m *Manager) Leftovers() ([]*Group, error) {
	var names []string
	dirs := []string{m.unified}
	for _, c := range v1Controllers {
		dirs = append(dirs, m.v1[c])
	}
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		sub, err := subgroups(dir)
		if err != nil {
			return nil, fmt.Errorf("cgroups: list groups: %w", err)
		}
		names = append(names, sub...)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	groups := make([]*Group, 0, len(names))
	for _, n := range names {
		groups = append(groups, m.group(n))
	}
	return groups, nil
}

// Group returns the existing group name under the parent, without
// creating or checking it: for a process other than the one that created
// it (a replica's shim) to Signal, Kill or watch it. In ModeNone, or for
// a name that is not one path element, the group spans no hierarchy:
// it has no members, and Kill and Delete do nothing.
func (m *Manager) Group(name string) *Group {
	if m.mode == ModeNone || validName(name) != nil {
		return &Group{name: name, fs: m.fs}
	}
	return m.group(name)
}

// group builds the Group for name from the Manager's directories.
func (m *Manager) group(name string) *Group {
	g := &Group{name: name, fs: m.fs, limits: map[string]place{}}
	if m.unified != "" {
		g.unified = filepath.Join(m.unified, name)
		g.dirs = append(g.dirs, g.unified)
	}
	for _, c := range v1Controllers {
		if d := m.v1[c]; d != "" && !slices.Contains(g.dirs, filepath.Join(d, name)) {
			g.dirs = append(g.dirs, filepath.Join(d, name))
		}
	}
	for c, p := range m.limits {
		g.limits[c] = place{dir: filepath.Join(p.dir, name), v2: p.v2}
	}
	if d := m.v1["cpuacct"]; d != "" {
		g.cpuacct = filepath.Join(d, name)
	}
	if d := m.v1["freezer"]; d != "" {
		g.freezer = filepath.Join(d, name)
	}
	return g
}

// RemoveParent removes the parent group from every hierarchy, once it has
// no groups left (an agent stopping cleanly). A parent still holding
// groups, or already gone, is left as it is without error: only its own
// directory is removed, never the levels above it (shared by other
// agents).
func (m *Manager) RemoveParent() error {
	if m.mode == ModeNone {
		return nil
	}
	dirs := []string{}
	if m.unified != "" {
		dirs = append(dirs, m.unified)
	}
	for _, c := range v1Controllers {
		if d := m.v1[c]; d != "" && !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	var errs []error
	for _, d := range dirs {
		err := m.fs.Rmdir(d)
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.EBUSY) && !errors.Is(err, syscall.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("cgroups: remove %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// SetCPUWeight gives the parent group, and each level of the parent path
// above it, the CPU weight of cpus CPUs (v2 cpu.weight, v1 cpu.shares), as
// kubelet does for its pods' group. Otherwise every replica of the machine
// together would compete with the machine's other processes as much as a
// single one of them, whatever the number of replicas. No-op where the cpu
// controller is not enforced.
func (m *Manager) SetCPUWeight(cpus float64) error {
	p, ok := m.limits["cpu"]
	if !ok || cpus <= 0 {
		return nil
	}
	root := strings.TrimSuffix(p.dir, "/"+m.parent)
	file, value := "cpu.shares", itoa(cpuSharesV1(cpus))
	if p.v2 {
		file, value = "cpu.weight", itoa(cpuWeightV2(cpus))
	}
	dir := root
	for _, elem := range strings.Split(m.parent, "/") {
		dir = filepath.Join(dir, elem)
		if err := m.fs.WriteFile(filepath.Join(dir, file), value); err != nil {
			return fmt.Errorf("cgroups: set %s of %s: %w", file, dir, err)
		}
	}
	return nil
}
