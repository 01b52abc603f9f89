//go:build linux

package cgroups

// Tests against the machine's real cgroups. They need root and writable
// cgroups: without them they are skipped, or fail when CI is set. Each
// runs in every layout this machine can show: as detected ("host"), and,
// on a hybrid host, as pure v1 (the cgroup2 mount ignored) and as pure v2
// (the v1 mounts ignored: membership and Kill only, since a hybrid
// host's cgroup2 has no controllers).
//
// Replica processes start the way the agent starts them: the test binary,
// re-executed as a trampoline (TestMain), joins the group with JoinFiles
// and execs `bash -c script`.

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/procscan"
	"github.com/baton-dev/baton/internal/testutil"
)

// Environment of the trampoline.
const (
	helperEnv = "BATON_CGROUPS_TEST_TRAMPOLINE" // "1": run as the trampoline
	joinEnv   = "BATON_CGROUPS_TEST_JOIN"       // the cgroup.procs files, one a line
	scriptEnv = "BATON_CGROUPS_TEST_SCRIPT"     // what bash -c runs
	markEnv   = "BATON_CGROUPS_TEST_MARK"       // tags every process of one test, for /proc scans
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		trampoline()
	}
	os.Exit(m.Run())
}

// trampoline is what the agent's exec trampoline does: join, then exec.
func trampoline() {
	if err := JoinFiles(strings.Split(os.Getenv(joinEnv), "\n")); err != nil {
		fmt.Fprintln(os.Stderr, "trampoline:", err)
		os.Exit(111)
	}
	err := syscall.Exec("/bin/bash", []string{"bash", "-c", os.Getenv(scriptEnv)}, os.Environ())
	fmt.Fprintln(os.Stderr, "trampoline: exec bash:", err)
	os.Exit(112)
}

// skipOrFail skips the test, or fails it when CI is set.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set, so this must work)", msg)
	}
	t.Skipf("%s; skipping (set CI to make this fail)", msg)
}

// variant is one way to open this machine's cgroups.
type variant struct {
	name string
	open func(parent string) (*Manager, error)
}

// variants returns the layouts this machine can show.
func variants(t *testing.T) []variant {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "real cgroup tests need root")
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		skipOrFail(t, "no /proc/self/mountinfo: %v", err)
	}
	mounts, err := parseMountinfo(data)
	if err != nil {
		t.Fatal(err)
	}
	lay := detectLayout(mounts)
	vs := []variant{{name: "host", open: Open}}
	if lay.unified != nil && len(lay.v1) > 0 {
		v1, v2 := lay, lay
		v1.unified = nil
		v2.v1 = nil
		vs = append(vs,
			variant{"v1", func(p string) (*Manager, error) { return open(v1, p, osFS{}) }},
			variant{"v2", func(p string) (*Manager, error) { return open(v2, p, osFS{}) }})
	}
	return vs
}

// realManager opens a Manager under a parent of its own,
// "baton-test.slice/<random>", and removes all of it when the test ends.
// It skips the test if the layout does not enforce every limit in need
// (or fails it, for the host's own layout when CI is set). reopen opens
// the same parent again, as a restarted agent would.
func realManager(t *testing.T, v variant, need ...string) (m *Manager, reopen func() *Manager) {
	t.Helper()
	parent := fmt.Sprintf("baton-test.slice/t%d-%08x", os.Getpid(), rand.Uint32())
	reopen = func() *Manager {
		t.Helper()
		m, err := v.open(parent)
		if err != nil {
			t.Fatalf("open %s: %v", parent, err)
		}
		return m
	}
	m, err := v.open(parent)
	if err != nil {
		skipOrFail(t, "cgroups are not usable here: %v", err)
	}
	t.Cleanup(func() { removeAll(t, m) })
	t.Logf("%s layout: mode %s, enforced %v, parent %s", v.name, m.Mode(), m.Enforced(), parent)
	for _, c := range need {
		if slices.Contains(m.Enforced(), c) {
			continue
		}
		if v.name == "host" {
			skipOrFail(t, "this host does not enforce %s limits: %v", c, m.Notes())
		}
		t.Skipf("the %s layout does not enforce %s limits here: %v", v.name, c, m.Notes())
	}
	return m, reopen
}

// removeAll kills and removes every group under m's parent, and the
// parent.
func removeAll(t *testing.T, m *Manager) {
	t.Helper()
	left, err := m.Leftovers()
	if err != nil {
		t.Errorf("cleanup: %v", err)
	}
	for _, g := range left {
		if err := g.Kill(10 * time.Second); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := g.Delete(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	dirs := []string{m.unified}
	for _, d := range m.v1 {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	for _, d := range slices.Compact(dirs) {
		if d == "" {
			continue
		}
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cleanup: %v", err)
		}
		_ = os.Remove(filepath.Dir(d)) // baton-test.slice, unless another run uses it
	}
}

// replica is a process tree started in a group through the trampoline.
type replica struct {
	cmd  *exec.Cmd
	mark string // the value of markEnv in all its processes
	out  string // file with its output
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// start runs script in g the way the agent would, and makes sure the
// group is killed when the test ends.
func start(t *testing.T, g *Group, script string) *replica {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	r := &replica{mark: fmt.Sprintf("%08x", rand.Uint32()), out: out.Name(), done: make(chan struct{})}
	r.cmd = exec.Command(exe)
	r.cmd.Env = append(os.Environ(), helperEnv+"=1", joinEnv+"="+strings.Join(g.ProcsFiles(), "\n"),
		scriptEnv+"="+script, markEnv+"="+r.mark)
	// A file, not a pipe: Wait must not wait for daemons holding it.
	r.cmd.Stdout, r.cmd.Stderr = out, out
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		if err := g.Kill(10 * time.Second); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		r.wait(t, 10*time.Second)
	})
	return r
}

// wait waits for the trampoline's process (bash, after exec) to exit.
func (r *replica) wait(t *testing.T, timeout time.Duration) *os.ProcessState {
	t.Helper()
	select {
	case <-r.done:
		return r.cmd.ProcessState
	case <-time.After(timeout):
		t.Fatalf("replica still running after %s; output:\n%s", timeout, r.output())
		return nil
	}
}

func (r *replica) output() string {
	b, _ := os.ReadFile(r.out)
	return string(b)
}

// alive lists the live processes (not zombies) that carry r's mark.
func (r *replica) alive() []int { return procscan.WithEnv(markEnv + "=" + r.mark) }

func mustCreate(t *testing.T, m *Manager, name string, l Limits) *Group {
	t.Helper()
	g, err := m.Create(name, l)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestRealMemoryMaxOOMKills(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			m, _ := realManager(t, v, "memory")
			const limit = 64 * mib
			g := mustCreate(t, m, "mem", Limits{MemoryMax: limit})
			r := start(t, g, `exec python3 -c 'b = bytearray(300 << 20); print("allocated 300 MiB")'`)
			st := r.wait(t, 60*time.Second)
			ws := st.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Errorf("python ended with %v, want killed by SIGKILL (the OOM killer); output:\n%s", st, r.output())
			}
			oom, err := g.OOMKills()
			if err != nil || oom < 1 {
				t.Errorf("OOMKills() = %d, %v; want at least 1", oom, err)
			}
			peak, err := g.MemoryPeak()
			if err != nil {
				t.Fatal(err)
			}
			// The group was filled up to its limit and not past it.
			if peak > limit+mib || peak < limit/2 {
				t.Errorf("MemoryPeak() = %.1f MiB, want about %d MiB (at most 1 MiB over)", float64(peak)/mib, limit/mib)
			}
			t.Logf("%s (%s): OOM kills %d, memory peak %d bytes (%.2f MiB) of a %d MiB limit", v.name, m.Mode(), oom, peak, float64(peak)/mib, limit/mib)
		})
	}
}

func TestRealPidsMax(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			m, _ := realManager(t, v, "pids")
			g := mustCreate(t, m, "pids", Limits{PidsMax: 20})
			r := start(t, g, `for i in $(seq 100); do sleep 60 & done; wait`)
			most := 0
			testutil.WaitFor(t, 10*time.Second, func() error {
				pids, err := g.Procs()
				if err != nil {
					return err
				}
				most = max(most, len(pids))
				if len(pids) < 20 {
					return fmt.Errorf("%d members, waiting for the limit of 20", len(pids))
				}
				return nil
			})
			// Bash keeps retrying its forks; none may succeed past 20.
			for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				pids, err := g.Procs()
				if err != nil {
					t.Fatal(err)
				}
				most = max(most, len(pids))
			}
			if most > 20 {
				t.Errorf("the group held %d processes, want at most 20", most)
			}
			refused := int64(-1)
			if p := g.limits["pids"]; exists(filepath.Join(p.dir, "pids.events")) {
				var err error
				if refused, err = readKey(filepath.Join(p.dir, "pids.events"), "max"); err != nil || refused < 1 {
					t.Errorf("pids.events max = %d, %v; want forks refused", refused, err)
				}
			}
			if err := g.Kill(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			r.wait(t, 5*time.Second)
			t.Logf("%s (%s): at most %d live processes with PidsMax 20 (a script forking 100); forks refused: %d", v.name, m.Mode(), most, refused)
		})
	}
}

func TestRealCPUMax(t *testing.T) {
	const busy = `exec timeout 2 bash -c 'while :; do :; done'`
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			m, _ := realManager(t, v, "cpu")
			capped := mustCreate(t, m, "capped", Limits{CPUMax: 0.5})
			// The same loop beside it, unlimited, shows how much CPU
			// this machine had to give (other tests may share it).
			free := mustCreate(t, m, "free", Limits{})
			begin := time.Now()
			rc, rf := start(t, capped, busy), start(t, free, busy)
			st := rc.wait(t, 20*time.Second)
			wall := time.Since(begin)
			rf.wait(t, 20*time.Second)
			used, err := capped.CPUUsage()
			if err != nil {
				t.Fatal(err)
			}
			freeUsed, err := free.CPUUsage()
			if err != nil {
				t.Fatal(err)
			}
			rusage := st.UserTime() + st.SystemTime()
			throttled, err := readKey(filepath.Join(capped.limits["cpu"].dir, "cpu.stat"), "nr_throttled")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s (%s): CPUMax 0.5, 2 s busy loop: group CPU %v (rusage %v, %d periods throttled); unlimited beside it: %v; wall %v",
				v.name, m.Mode(), used.Round(time.Millisecond), rusage.Round(time.Millisecond), throttled,
				freeUsed.Round(time.Millisecond), wall.Round(time.Millisecond))

			// Half a CPU for 2 s is 1 s; unlimited it would be 2 s.
			if used > 1300*time.Millisecond || rusage > 1300*time.Millisecond {
				t.Errorf("the capped group used %v of CPU (rusage %v) in 2 s, want at most about 1s", used, rusage)
			}
			if freeUsed < 1500*time.Millisecond {
				t.Logf("the machine is too busy (an unlimited loop got %v of 2 s) to check that the capped one got its 1 s", freeUsed)
				return
			}
			if used < 700*time.Millisecond || throttled == 0 {
				t.Errorf("the capped group used %v, %d periods throttled, while an unlimited one got %v: want about 1s, throttled", used, throttled, freeUsed)
			}
		})
	}
}

// noCgroupKill is the real cgroupfs of a kernel before 5.14, which has no
// cgroup.kill.
type noCgroupKill struct{ osFS }

func (f noCgroupKill) WriteFile(path, value string) error {
	if filepath.Base(path) == "cgroup.kill" {
		return &fs.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	return f.osFS.WriteFile(path, value)
}

func TestRealKillLeavesNothing(t *testing.T) {
	// Each layout with cgroup2 once more as on a kernel without
	// cgroup.kill, where Kill freezes with cgroup.freeze.
	var vs []variant
	for _, v := range variants(t) {
		vs = append(vs, v)
		if v.name == "host" || v.name == "v2" {
			vs = append(vs, variant{v.name + "-freezer", func(p string) (*Manager, error) {
				m, err := v.open(p)
				m.fs = noCgroupKill{}
				return m, err
			}})
		}
	}
	for _, v := range vs {
		t.Run(v.name, func(t *testing.T) {
			m, _ := realManager(t, v)
			limits := Limits{}
			// The forks of a loop, or a real fork bomb where PidsMax
			// keeps it from taking the machine.
			forker := `( while :; do sleep 1005 & sleep 0.01; done ) &`
			if slices.Contains(m.Enforced(), "pids") {
				limits.PidsMax = 200
				forker = `( bomb() { bomb | bomb & }; bomb ) 2>/dev/null &`
			}
			g := mustCreate(t, m, "kill", limits)
			r := start(t, g, `
				setsid sleep 1000 &
				setsid sh -c 'sleep 1001 & exec sleep 1002' &
				( ( exec sleep 1003 ) & ) &
				( trap "" TERM HUP INT; exec sleep 1004 ) &
				`+forker+`
				wait`)
			testutil.WaitFor(t, 10*time.Second, func() error {
				if n := len(r.alive()); n < 8 {
					return fmt.Errorf("%d processes started, want at least 8", n)
				}
				return nil
			})
			before := len(r.alive())
			begin := time.Now()
			if err := g.Kill(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			took := time.Since(begin)
			r.wait(t, 5*time.Second)
			if left := r.alive(); len(left) > 0 {
				t.Errorf("after Kill, processes %v are left", left)
			}
			if p, err := g.Populated(); err != nil || p {
				t.Errorf("Populated() = %v, %v after Kill; want false", p, err)
			}
			if err := g.Delete(); err != nil {
				t.Fatal(err)
			}
			for _, f := range g.ProcsFiles() {
				if exists(filepath.Dir(f)) {
					t.Errorf("%s is left after Delete", filepath.Dir(f))
				}
			}
			t.Logf("%s (%s): Kill of %d+ processes (setsid, double-forked, TERM-ignoring, %s) took %v", v.name, m.Mode(), before,
				map[bool]string{true: "fork bomb", false: "fork loop"}[limits.PidsMax > 0], took.Round(time.Millisecond))
		})
	}
}

func TestRealSignalAndMembership(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			m, _ := realManager(t, v)
			g := mustCreate(t, m, "sig", Limits{})
			r := start(t, g, `sleep 1000 & sleep 1001 & ( trap "" TERM; exec sleep 1002 ) & wait`)
			testutil.WaitFor(t, 5*time.Second, func() error {
				pids, _ := g.Procs()
				if len(pids) != 4 {
					return fmt.Errorf("members %v, want bash and 3 sleeps", pids)
				}
				// Signal only once the subshell has set its trap and exec'd
				// the sleep that ignores SIGTERM.
				for _, pid := range pids {
					if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); string(b) == "sleep\x001002\x00" {
						return nil
					}
				}
				return fmt.Errorf("members %v: the sleep ignoring SIGTERM has not started yet", pids)
			})
			pids, _ := g.Procs()
			for _, pid := range pids {
				checkMember(t, pid, m, g)
			}
			if err := g.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			r.wait(t, 5*time.Second)
			testutil.WaitFor(t, 5*time.Second, func() error {
				if pids, _ := g.Procs(); len(pids) != 1 {
					return fmt.Errorf("members %v, want only the sleep that ignores SIGTERM", pids)
				}
				return nil
			})
			if p, err := g.Populated(); err != nil || !p {
				t.Errorf("Populated() = %v, %v; want true while a member is left", p, err)
			}
		})
	}
}

// checkMember checks /proc/pid/cgroup: the process is in g in every
// hierarchy g spans.
func checkMember(t *testing.T, pid int, m *Manager, g *Group) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := "/" + m.parent + "/" + g.name
	var in []string // controllers lists ("" for cgroup2) where pid is in g
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && parts[2] == want {
			in = append(in, parts[1])
		}
	}
	wantIn := len(g.dirs)
	if len(in) != wantIn {
		t.Errorf("pid %d is in %s in %d hierarchies %q, want %d", pid, want, len(in), in, wantIn)
	}
}

func TestRealLeftoversAfterCrash(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			m, reopen := realManager(t, v)
			a := mustCreate(t, m, "a", Limits{PidsMax: 50})
			mustCreate(t, m, "b", Limits{})
			r := start(t, a, `exec sleep 1000`)
			testutil.WaitFor(t, 5*time.Second, func() error {
				if pids, err := a.Procs(); err != nil || len(pids) != 1 {
					return fmt.Errorf("members %v, %v; want the trampoline or its sleep", pids, err)
				}
				return nil
			})

			// The agent crashes: its Manager and Groups are gone.
			m2 := reopen()
			left, err := m2.Leftovers()
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, g := range left {
				names = append(names, g.Name())
			}
			if !slices.Equal(names, []string{"a", "b"}) {
				t.Fatalf("Leftovers() = %v, want [a b]", names)
			}
			// Creating "a" again kills what the old one held.
			a2 := mustCreate(t, m2, "a", Limits{})
			r.wait(t, 5*time.Second)
			if alive := r.alive(); len(alive) != 0 {
				t.Errorf("the old replica's processes %v survived Create of the same name", alive)
			}
			if pids, err := a2.Procs(); err != nil || len(pids) != 0 {
				t.Errorf("the new group has members %v, %v; want none", pids, err)
			}
			for _, g := range left[1:] {
				if err := g.Delete(); err != nil {
					t.Error(err)
				}
			}
			if err := a2.Delete(); err != nil {
				t.Error(err)
			}
			if left, err := m2.Leftovers(); err != nil || len(left) != 0 {
				t.Errorf("Leftovers() after Delete = %d groups, %v; want none", len(left), err)
			}
			// An agent stopping cleanly removes its own parent group.
			if err := m2.RemoveParent(); err != nil {
				t.Fatal(err)
			}
			for _, d := range append([]string{m2.unified}, slices.Collect(maps.Values(m2.v1))...) {
				if d == "" {
					continue
				}
				if _, err := os.Stat(d); !os.IsNotExist(err) {
					t.Errorf("parent %s still there after RemoveParent: %v", d, err)
				}
			}
		})
	}
}
