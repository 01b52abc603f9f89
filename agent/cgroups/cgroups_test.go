package cgroups

import (
	"errors"
	"math"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	fakeV2Root = "/sys/fs/cgroup"
	allV2      = "cpuset cpu io memory hugetlb pids rdma misc"
	mib        = 1 << 20

	timeoutShort = time.Second // for Kill on a fake, whose groups have no members
)

// fakeV2 returns a fake pure-v2 host whose root offers allV2 and has on
// enabled.
func fakeV2(t *testing.T, on string) *fakeKernel {
	t.Helper()
	k := newFakeKernel(t)
	k.mountV2(fakeV2Root, allV2, on)
	return k
}

// fakeV1 returns a fake legacy v1 host: cpu and cpuacct co-mounted, and
// memory, pids and freezer, like CentOS 7.
func fakeV1(t *testing.T, noSwap bool) *fakeKernel {
	t.Helper()
	k := newFakeKernel(t)
	k.noSwap = noSwap
	k.mountV1("/sys/fs/cgroup/memory", "memory")
	k.mountV1("/sys/fs/cgroup/cpu,cpuacct", "cpu", "cpuacct")
	k.mountV1("/sys/fs/cgroup/pids", "pids")
	k.mountV1("/sys/fs/cgroup/freezer", "freezer")
	return k
}

func mustOpen(t *testing.T, k *fakeKernel, parent string) *Manager {
	t.Helper()
	m, err := k.open(parent)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return m
}

func TestOpenV2EnablesControllersOnEveryLevel(t *testing.T) {
	k := fakeV2(t, "memory pids") // systemd has enabled some already
	m := mustOpen(t, k, "baton.slice/agent-1")
	if m.Mode() != ModeV2 {
		t.Fatalf("mode %q, want v2", m.Mode())
	}
	want := []string{
		"/sys/fs/cgroup/baton.slice/cgroup.subtree_control=+memory",
		"/sys/fs/cgroup/baton.slice/agent-1/cgroup.subtree_control=+memory",
		"/sys/fs/cgroup/cgroup.subtree_control=+cpu",
		"/sys/fs/cgroup/baton.slice/cgroup.subtree_control=+cpu",
		"/sys/fs/cgroup/baton.slice/agent-1/cgroup.subtree_control=+cpu",
		"/sys/fs/cgroup/baton.slice/cgroup.subtree_control=+pids",
		"/sys/fs/cgroup/baton.slice/agent-1/cgroup.subtree_control=+pids",
	}
	if got := k.writes(); !slices.Equal(got, want) {
		t.Errorf("writes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if got := k.read("/sys/fs/cgroup/baton.slice/agent-1/cgroup.subtree_control"); got != "memory cpu pids" {
		t.Errorf("parent's cgroup.subtree_control = %q, want \"memory cpu pids\"", got)
	}
	if got := m.Enforced(); !slices.Equal(got, []string{"memory", "cpu", "pids"}) {
		t.Errorf("Enforced() = %v, want all three (notes %v)", got, m.Notes())
	}

	// A second agent start finds everything enabled and writes nothing.
	mustOpen(t, k, "baton.slice/agent-1")
	if got := k.writes(); len(got) != 0 {
		t.Errorf("reopen wrote %v, want nothing", got)
	}
}

func TestOpenV2PartialControllers(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(k *fakeKernel)
		enforced []string
		note     string // in the note about cpu
	}{
		{
			name: "cpu not offered by the kernel",
			setup: func(k *fakeKernel) {
				k.set("/sys/fs/cgroup/cgroup.controllers", "memory pids\n")
			},
			enforced: []string{"memory", "pids"},
			note:     "cpu controller is not available in",
		},
		{
			name: "a level has processes of its own",
			setup: func(k *fakeKernel) {
				k.refuse["/sys/fs/cgroup/baton.slice/cgroup.subtree_control"] = syscall.EBUSY
			},
			enforced: []string{},
			note:     "has processes of its own",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := fakeV2(t, "")
			tt.setup(k)
			m, err := k.open("baton.slice/agent-1")
			if err != nil {
				t.Fatalf("open: %v (a missing controller must not fail Open)", err)
			}
			if got := m.Enforced(); !slices.Equal(got, tt.enforced) && !(len(got) == 0 && len(tt.enforced) == 0) {
				t.Errorf("Enforced() = %v, want %v", got, tt.enforced)
			}
			notes := strings.Join(m.Notes(), "\n")
			if !strings.Contains(notes, "cpu limits are not enforced") || !strings.Contains(notes, tt.note) {
				t.Errorf("notes %q do not say why cpu is not enforced (%q)", notes, tt.note)
			}
			g, err := m.Create("web-1", Limits{MemoryMax: 64 * mib, CPUMax: 1, PidsMax: 10})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			for _, w := range k.writes() {
				if strings.Contains(w, "/cpu.") {
					t.Errorf("wrote %s for a controller that is not enforced", w)
				}
			}
			if err := g.Delete(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestCreateV2Limits(t *testing.T) {
	tests := []struct {
		name   string
		limits Limits
		noSwap bool
		want   []string // file=value, in order
	}{
		{
			name:   "no limits",
			limits: Limits{},
			want: []string{"memory.max=max", "memory.swap.max=max", "memory.low=0",
				"cpu.max=max 100000", "cpu.weight=100", "pids.max=max"},
		},
		{
			name:   "all limits",
			limits: Limits{MemoryMax: 512 * mib, MemoryLow: 256 * mib, CPUMax: 1.5, CPUWeight: 2, PidsMax: 100},
			want: []string{"memory.max=536870912", "memory.swap.max=0", "memory.low=268435456",
				"cpu.max=150000 100000", "cpu.weight=200", "pids.max=100"},
		},
		{
			name:   "no swap accounting",
			limits: Limits{MemoryMax: 64 * mib},
			noSwap: true,
			want: []string{"memory.max=67108864", "memory.low=0",
				"cpu.max=max 100000", "cpu.weight=100", "pids.max=max"},
		},
		{
			name:   "tiny CPU figures are clamped to the kernel's least",
			limits: Limits{CPUMax: 0.001, CPUWeight: 0.001},
			want: []string{"memory.max=max", "memory.swap.max=max", "memory.low=0",
				"cpu.max=1000 100000", "cpu.weight=1", "pids.max=max"},
		},
		{
			name:   "huge CPU weight is clamped",
			limits: Limits{CPUMax: 64, CPUWeight: 500},
			want: []string{"memory.max=max", "memory.swap.max=max", "memory.low=0",
				"cpu.max=6400000 100000", "cpu.weight=10000", "pids.max=max"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := fakeV2(t, "")
			k.noSwap = tt.noSwap
			m := mustOpen(t, k, "baton.slice/agent-1")
			k.writes()
			g, err := m.Create("web-1", tt.limits)
			if err != nil {
				t.Fatal(err)
			}
			dir := "/sys/fs/cgroup/baton.slice/agent-1/web-1/"
			var want []string
			for _, w := range tt.want {
				want = append(want, dir+w)
			}
			if got := k.writes(); !slices.Equal(got, want) {
				t.Errorf("writes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			if got, want := g.ProcsFiles(), []string{k.path(dir + "cgroup.procs")}; !slices.Equal(got, want) {
				t.Errorf("ProcsFiles() = %v, want %v", got, want)
			}
		})
	}
}

func TestCreateV1Limits(t *testing.T) {
	const (
		mem = "/sys/fs/cgroup/memory/baton.slice/agent-1/web-1/"
		cpu = "/sys/fs/cgroup/cpu,cpuacct/baton.slice/agent-1/web-1/"
		pid = "/sys/fs/cgroup/pids/baton.slice/agent-1/web-1/"
	)
	tests := []struct {
		name   string
		limits Limits
		noSwap bool
		want   []string
	}{
		{
			name:   "no limits",
			limits: Limits{},
			want: []string{mem + "memory.memsw.limit_in_bytes=-1", mem + "memory.limit_in_bytes=-1", mem + "memory.soft_limit_in_bytes=-1",
				cpu + "cpu.cfs_period_us=100000", cpu + "cpu.cfs_quota_us=-1", cpu + "cpu.shares=1024", pid + "pids.max=max"},
		},
		{
			name:   "all limits, memory before memory+swap",
			limits: Limits{MemoryMax: 512 * mib, MemoryLow: 256 * mib, CPUMax: 0.5, CPUWeight: 4, PidsMax: 100},
			want: []string{mem + "memory.limit_in_bytes=536870912", mem + "memory.memsw.limit_in_bytes=536870912",
				mem + "memory.soft_limit_in_bytes=268435456",
				cpu + "cpu.cfs_period_us=100000", cpu + "cpu.cfs_quota_us=50000", cpu + "cpu.shares=4096", pid + "pids.max=100"},
		},
		{
			name:   "no memsw file without swap accounting",
			limits: Limits{MemoryMax: 64 * mib, CPUWeight: 0.001},
			noSwap: true,
			want: []string{mem + "memory.limit_in_bytes=67108864", mem + "memory.soft_limit_in_bytes=-1",
				cpu + "cpu.cfs_period_us=100000", cpu + "cpu.cfs_quota_us=-1", cpu + "cpu.shares=2", pid + "pids.max=max"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := fakeV1(t, tt.noSwap)
			m := mustOpen(t, k, "baton.slice/agent-1")
			if m.Mode() != ModeV1 {
				t.Fatalf("mode %q, want v1", m.Mode())
			}
			if got := k.writes(); len(got) != 0 {
				t.Errorf("Open on v1 wrote %v, want nothing", got)
			}
			g, err := m.Create("web-1", tt.limits)
			if err != nil {
				t.Fatal(err)
			}
			if got := k.writes(); !slices.Equal(got, tt.want) {
				t.Errorf("writes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
			// One directory per hierarchy: cpu,cpuacct once.
			var want []string
			for _, h := range []string{"memory", "cpu,cpuacct", "pids", "freezer"} {
				want = append(want, k.path("/sys/fs/cgroup/"+h+"/baton.slice/agent-1/web-1/cgroup.procs"))
			}
			if got := g.ProcsFiles(); !slices.Equal(got, want) {
				t.Errorf("ProcsFiles() =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
}

func TestCreateRejectsBadInput(t *testing.T) {
	m := mustOpen(t, fakeV2(t, ""), "baton.slice")
	tests := []struct {
		name   string
		group  string
		limits Limits
		want   string
	}{
		{"empty name", "", Limits{}, "not one path element"},
		{"name with a slash", "a/b", Limits{}, "not one path element"},
		{"dot dot", "..", Limits{}, "not one path element"},
		{"negative memory", "x", Limits{MemoryMax: -1}, "MemoryMax -1 is negative"},
		{"negative pids", "x", Limits{PidsMax: -5}, "PidsMax -5 is negative"},
		{"NaN cpus", "x", Limits{CPUMax: math.NaN()}, "CPUMax NaN is not a number"},
		{"negative weight", "x", Limits{CPUWeight: -1}, "CPUWeight -1 is not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Create(tt.group, tt.limits)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Create(%q, %+v) error = %v, want one containing %q", tt.group, tt.limits, err, tt.want)
			}
		})
	}
	for _, parent := range []string{"", "/abs", "a/../b", "../up", "a//b", "."} {
		if _, err := fakeV2(t, "").open(parent); err == nil || !strings.Contains(err.Error(), "not a clean relative path") {
			t.Errorf("open(%q) error = %v, want \"not a clean relative path\"", parent, err)
		}
	}
}

func removeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func TestCreateReplacesExistingGroup(t *testing.T) {
	for _, mode := range []string{"v2", "v1"} {
		t.Run(mode, func(t *testing.T) {
			k := fakeV2(t, "")
			dir := "/sys/fs/cgroup/baton.slice/web-1"
			memFile := dir + "/memory.max"
			if mode == "v1" {
				k = fakeV1(t, false)
				dir = "/sys/fs/cgroup/memory/baton.slice/web-1"
				memFile = dir + "/memory.limit_in_bytes"
			}
			m := mustOpen(t, k, "baton.slice")
			if _, err := m.Create("web-1", Limits{MemoryMax: 64 * mib}); err != nil {
				t.Fatal(err)
			}
			// The old replica made a group of its own inside.
			if err := k.Mkdir(k.path(dir + "/inner")); err != nil {
				t.Fatal(err)
			}
			k.writes()
			if _, err := m.Create("web-1", Limits{MemoryMax: 128 * mib}); err != nil {
				t.Fatal(err)
			}
			if exists(k.path(dir + "/inner")) {
				t.Error("the old group's child group survived Create")
			}
			if got := k.read(memFile); got != "134217728" {
				t.Errorf("%s = %q, want the new limit 134217728", memFile, got)
			}
			w := strings.Join(k.writes(), "\n")
			kill := "cgroup.kill=1"
			if mode == "v1" {
				kill = "freezer.state=FROZEN"
			}
			if !strings.Contains(w, kill) {
				t.Errorf("replacing did not kill the old group (%s); writes:\n%s", kill, w)
			}
		})
	}
}

func TestKillWithoutCgroupKillFreezes(t *testing.T) {
	k := fakeV2(t, "")
	m := mustOpen(t, k, "baton.slice")
	g, err := m.Create("web-1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	k.refuse["/sys/fs/cgroup/baton.slice/web-1/cgroup.kill"] = syscall.ENOENT // before Linux 5.14
	k.writes()
	if err := g.Kill(timeoutShort); err != nil {
		t.Fatal(err)
	}
	want := []string{"/sys/fs/cgroup/baton.slice/web-1/cgroup.freeze=1", "/sys/fs/cgroup/baton.slice/web-1/cgroup.freeze=0"}
	if got := k.writes(); !slices.Equal(got, want) {
		t.Errorf("writes %v, want freeze then thaw %v", got, want)
	}
}

func TestPopulatedAndDeleteOnFake(t *testing.T) {
	k := fakeV1(t, false)
	m := mustOpen(t, k, "baton.slice")
	g, err := m.Create("web-1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := g.Populated(); err != nil || p {
		t.Fatalf("new group: Populated() = %v, %v; want false", p, err)
	}
	// A member in one hierarchy only, in a group below.
	if err := k.Mkdir(k.path("/sys/fs/cgroup/pids/baton.slice/web-1/inner")); err != nil {
		t.Fatal(err)
	}
	k.set("/sys/fs/cgroup/pids/baton.slice/web-1/inner/cgroup.procs", "4242\n4242\n")
	if p, err := g.Populated(); err != nil || !p {
		t.Errorf("Populated() = %v, %v; want true", p, err)
	}
	if pids, err := g.Procs(); err != nil || !slices.Equal(pids, []int{4242}) {
		t.Errorf("Procs() = %v, %v; want [4242]", pids, err)
	}
	k.set("/sys/fs/cgroup/pids/baton.slice/web-1/inner/cgroup.procs", "")
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	for _, f := range g.ProcsFiles() {
		if exists(f) {
			t.Errorf("%s is left after Delete", f)
		}
	}
	if err := g.Delete(); err != nil {
		t.Errorf("second Delete: %v, want nil for a group that is gone", err)
	}
}

func TestFiguresOnFake(t *testing.T) {
	t.Run("v2", func(t *testing.T) {
		k := fakeV2(t, "")
		g, err := mustOpen(t, k, "baton.slice").Create("web-1", Limits{})
		if err != nil {
			t.Fatal(err)
		}
		dir := "/sys/fs/cgroup/baton.slice/web-1/"
		k.set(dir+"memory.events", "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n")
		k.set(dir+"memory.peak", "67108864\n")
		k.set(dir+"cpu.stat", "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
		checkFigures(t, g, 2, 64*mib, 1500)
	})
	t.Run("v1", func(t *testing.T) {
		k := fakeV1(t, false)
		g, err := mustOpen(t, k, "baton.slice").Create("web-1", Limits{})
		if err != nil {
			t.Fatal(err)
		}
		k.set("/sys/fs/cgroup/memory/baton.slice/web-1/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
		k.set("/sys/fs/cgroup/memory/baton.slice/web-1/memory.max_usage_in_bytes", "1048576\n")
		k.set("/sys/fs/cgroup/cpu,cpuacct/baton.slice/web-1/cpuacct.usage", "2500000000\n")
		checkFigures(t, g, 5, mib, 2500)
	})
	t.Run("old kernel", func(t *testing.T) {
		k := fakeV2(t, "")
		g, err := mustOpen(t, k, "baton.slice").Create("web-1", Limits{})
		if err != nil {
			t.Fatal(err)
		}
		k.set("/sys/fs/cgroup/baton.slice/web-1/memory.events", "low 0\nhigh 0\nmax 0\noom 0\n") // before 4.13
		removeFile(t, k.path("/sys/fs/cgroup/baton.slice/web-1/memory.peak"))                    // before 5.19
		if _, err := g.OOMKills(); !errors.Is(err, ErrNotSupported) {
			t.Errorf("OOMKills() error = %v, want ErrNotSupported", err)
		}
		if _, err := g.MemoryPeak(); !errors.Is(err, ErrNotSupported) {
			t.Errorf("MemoryPeak() error = %v, want ErrNotSupported", err)
		}
	})
}

func checkFigures(t *testing.T, g *Group, oom, peak, cpuMS int64) {
	t.Helper()
	if n, err := g.OOMKills(); err != nil || n != oom {
		t.Errorf("OOMKills() = %d, %v; want %d", n, err, oom)
	}
	if n, err := g.MemoryPeak(); err != nil || n != peak {
		t.Errorf("MemoryPeak() = %d, %v; want %d", n, err, peak)
	}
	if d, err := g.CPUUsage(); err != nil || d.Milliseconds() != cpuMS {
		t.Errorf("CPUUsage() = %v, %v; want %d ms", d, err, cpuMS)
	}
}

func TestLeftoversOnFake(t *testing.T) {
	k := fakeV1(t, false)
	m := mustOpen(t, k, "baton.slice/agent-1")
	for _, n := range []string{"web-2", "web-1"} {
		if _, err := m.Create(n, Limits{}); err != nil {
			t.Fatal(err)
		}
	}
	// A crash between two mkdirs left a group in one hierarchy only.
	if err := k.Mkdir(k.path("/sys/fs/cgroup/pids/baton.slice/agent-1/half")); err != nil {
		t.Fatal(err)
	}
	// The agent restarts.
	m2 := mustOpen(t, k, "baton.slice/agent-1")
	left, err := m2.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range left {
		names = append(names, g.Name())
		if err := g.Kill(timeoutShort); err != nil {
			t.Errorf("kill %s: %v", g.Name(), err)
		}
		if err := g.Delete(); err != nil {
			t.Errorf("delete %s: %v", g.Name(), err)
		}
	}
	if want := []string{"half", "web-1", "web-2"}; !slices.Equal(names, want) {
		t.Errorf("Leftovers() = %v, want %v", names, want)
	}
	if left, err := m2.Leftovers(); err != nil || len(left) != 0 {
		t.Errorf("Leftovers() after Delete = %d groups, %v; want none", len(left), err)
	}
}

func TestOpenWithoutCgroup2FallsBackToV1(t *testing.T) {
	k := fakeV1(t, false)
	k.mountV2("/sys/fs/cgroup/unified", "", "")
	lay := k.layout()
	lay.unified.readOnly = true
	m, err := open(lay, "baton.slice", k)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode() != ModeV1 || !slices.Equal(m.Enforced(), []string{"memory", "cpu", "pids"}) {
		t.Errorf("mode %q, enforced %v; want v1 with all limits", m.Mode(), m.Enforced())
	}
	if notes := strings.Join(m.Notes(), "\n"); !strings.Contains(notes, "not used: ") || !strings.Contains(notes, "unified (cgroup2) is mounted read-only") {
		t.Errorf("notes %q do not say that cgroup2 is not used", notes)
	}
	// Without cgroup2, Kill needs the v1 freezer and CPUUsage cpuacct.
	g, err := m.Create("web-1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if g.freezer == "" || g.cpuacct == "" {
		t.Errorf("group without freezer (%q) or cpuacct (%q)", g.freezer, g.cpuacct)
	}
}

func TestGroupByName(t *testing.T) {
	k := fakeV1(t, false)
	m := mustOpen(t, k, "baton.slice")
	created, err := m.Create("web-1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	// A shim opens the same parent and finds the group by name.
	g := mustOpen(t, k, "baton.slice").Group("web-1")
	if !slices.Equal(g.ProcsFiles(), created.ProcsFiles()) {
		t.Errorf("Group(\"web-1\").ProcsFiles() = %v, want %v", g.ProcsFiles(), created.ProcsFiles())
	}
	for _, bad := range []string{"..", "../memory", "a/b", ""} {
		g := m.Group(bad)
		if len(g.ProcsFiles()) != 0 {
			t.Errorf("Group(%q) spans %v, want nothing", bad, g.ProcsFiles())
		}
		if err := g.Kill(timeoutShort); err != nil {
			t.Errorf("Group(%q).Kill() = %v, want nil", bad, err)
		}
		if err := g.Delete(); err != nil {
			t.Errorf("Group(%q).Delete() = %v, want nil", bad, err)
		}
	}
	if !exists(k.path("/sys/fs/cgroup/memory/baton.slice")) {
		t.Error("the parent was removed through a bad name")
	}
}

func TestModeNone(t *testing.T) {
	m, err := open(layout{}, "baton.slice", newFakeKernel(t))
	if !errors.Is(err, ErrUnavailable) || m.Mode() != ModeNone {
		t.Fatalf("open with no hierarchy = %q, %v; want none, ErrUnavailable", m.Mode(), err)
	}
	if _, err := m.Create("web-1", Limits{}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Create in mode none: %v, want ErrUnavailable", err)
	}
	if left, err := m.Leftovers(); err != nil || len(left) != 0 {
		t.Errorf("Leftovers in mode none = %v, %v; want none", left, err)
	}
	if len(m.Enforced()) != 0 {
		t.Errorf("Enforced in mode none = %v, want none", m.Enforced())
	}
	if g := m.Group("web-1"); len(g.ProcsFiles()) != 0 || g.Kill(timeoutShort) != nil {
		t.Errorf("Group in mode none spans %v, want nothing", g.ProcsFiles())
	}
}

// TestSetCPUWeight: the parent path gets the weight of the agent's CPUs on
// every level, so replicas together compete like the CPUs they were given.
func TestSetCPUWeight(t *testing.T) {
	k := fakeV2(t, "")
	m := mustOpen(t, k, "baton.slice/agent-1")
	k.writes()
	if err := m.SetCPUWeight(8); err != nil {
		t.Fatal(err)
	}
	want := []string{"/sys/fs/cgroup/baton.slice/cpu.weight=800", "/sys/fs/cgroup/baton.slice/agent-1/cpu.weight=800"}
	if got := k.writes(); !slices.Equal(got, want) {
		t.Errorf("v2 writes %v, want %v", got, want)
	}
	k1 := fakeV1(t, false)
	m1 := mustOpen(t, k1, "baton.slice/agent-1")
	k1.writes()
	if err := m1.SetCPUWeight(2); err != nil {
		t.Fatal(err)
	}
	want = []string{"/sys/fs/cgroup/cpu,cpuacct/baton.slice/cpu.shares=2048", "/sys/fs/cgroup/cpu,cpuacct/baton.slice/agent-1/cpu.shares=2048"}
	if got := k1.writes(); !slices.Equal(got, want) {
		t.Errorf("v1 writes %v, want %v", got, want)
	}
}
