//go:build linux

package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-dev/baton/agent/cgroups"
)

// The shim and the trampoline run in the agent's binary before main: any
// program that imports this package (baton, and the test binaries that
// start agents) can serve as a replica's shim.
func init() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case shimArg:
		os.Exit(runShim(os.Stdin, os.NewFile(3, "events")))
	case execArg:
		os.Exit(runExec())
	}
}

// Environment entries through which the shim tells the trampoline what to
// do; the trampoline removes them before it execs bash.
const (
	execEnvCgroup = "BATON_EXEC_CGROUP_PROCS="
	execEnvUID    = "BATON_EXEC_UID="
	execEnvGID    = "BATON_EXEC_GID="
	execEnvGroups = "BATON_EXEC_GROUPS="
	execEnvScript = "BATON_EXEC_SCRIPT="
	execEnvBinds  = "BATON_EXEC_BINDS="
)

// killWait bounds how long the tree may take to go after SIGKILL: only a
// process stuck in the kernel (D state) takes longer.
const killWait = 10 * time.Second

// runShim supervises one replica process tree; see shim.go. It returns the
// shim's exit code: 0 once the tree is gone, 2 if it could not start.
func runShim(stdin io.Reader, events *os.File) int {
	var cfg shimConfig
	if err := json.NewDecoder(io.LimitReader(stdin, 16<<20)).Decode(&cfg); err != nil {
		fmt.Fprintf(os.Stderr, "baton shim: bad config: %v\n", err)
		return 2
	}
	sh := &shim{cfg: cfg, events: events, ppid: os.Getppid()}
	// Orphans of the tree come to the shim, not to init: the tree stays
	// findable through parent links, and the shim reaps its zombies.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "baton shim: cannot become a child subreaper: %v\n", err)
	}
	// The agent set a parent-death signal too; a second arming closes the
	// race where the agent died before this process could see it.
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0, 0, 0)
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	if cfg.Cgroup != nil {
		g, err := openShimCgroup(cfg.Cgroup)
		if err != nil {
			sh.emit(shimEvent{StartError: fmt.Sprintf("open the replica's cgroup: %v", err)})
			return 2
		}
		sh.group = g
	}
	pid, err := sh.start()
	if err != nil {
		sh.emit(shimEvent{StartError: err.Error()})
		return 2
	}
	sh.main = pid
	sh.emit(shimEvent{PID: pid})
	mainExit := make(chan syscall.WaitStatus, 1)
	go sh.reap(mainExit)

	parentGone := make(chan struct{})
	go func() {
		for os.Getppid() == sh.ppid {
			time.Sleep(500 * time.Millisecond)
		}
		close(parentGone)
	}()
	select {
	case ws := <-mainExit:
		sh.emit(describeWait(ws))
	case <-stop:
	case <-parentGone:
	}
	sh.stopTree()
	sh.emit(shimEvent{Gone: true})
	return 0
}

// shim is one running shim's state.
type shim struct {
	cfg    shimConfig
	events *os.File
	ppid   int
	main   int
	group  shimGroup // nil without a cgroup

	mu       sync.Mutex
	mainDone bool
}

func (sh *shim) emit(e shimEvent) {
	if sh.events != nil {
		_, _ = sh.events.Write(e.encode())
	}
}

// start forks the replica's main process: the trampoline when it must
// join a cgroup first, else bash itself, as the replica user either way.
func (sh *shim) start() (int, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	attr := &syscall.ProcAttr{
		Dir:   sh.cfg.Dir,
		Env:   sh.cfg.Env,
		Files: []uintptr{devnull.Fd(), os.Stdout.Fd(), os.Stderr.Fd()},
		// Its own process group: the replica's group is signalled without
		// signalling the shim.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	}
	if len(sh.cfg.Binds) > 0 {
		// A mount namespace of the replica's own (Go makes / private
		// in it, so nothing propagates back), where the trampoline
		// bind-mounts the file_mounts before dropping to the replica
		// user.
		attr.Sys.Unshareflags = syscall.CLONE_NEWNS
	}
	if sh.cfg.Cgroup == nil && len(sh.cfg.Binds) == 0 {
		attr.Sys.Credential = sh.cfg.Credential
		bash, err := lookBash()
		if err != nil {
			return 0, err
		}
		return syscall.ForkExec(bash, []string{"bash", "-c", sh.cfg.Script}, attr)
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	env := append([]string(nil), sh.cfg.Env...)
	env = append(env, execEnvScript+sh.cfg.Script)
	if sh.cfg.Cgroup != nil {
		env = append(env, execEnvCgroup+strings.Join(sh.cfg.Cgroup.ProcsFiles, "\n"))
	}
	if len(sh.cfg.Binds) > 0 {
		b, err := json.Marshal(sh.cfg.Binds)
		if err != nil {
			return 0, err
		}
		env = append(env, execEnvBinds+string(b))
	}
	if c := sh.cfg.Credential; c != nil {
		groups := make([]string, len(c.Groups))
		for i, g := range c.Groups {
			groups[i] = strconv.FormatUint(uint64(g), 10)
		}
		env = append(env, execEnvUID+strconv.FormatUint(uint64(c.Uid), 10), execEnvGID+strconv.FormatUint(uint64(c.Gid), 10),
			execEnvGroups+strings.Join(groups, ","))
	}
	attr.Env = env
	return syscall.ForkExec(self, []string{"baton-replica", execArg}, attr)
}

func lookBash() (string, error) {
	for _, p := range []string{"/bin/bash", "/usr/bin/bash", "/usr/local/bin/bash"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("bash not found in /bin, /usr/bin or /usr/local/bin")
}

// reap waits for every child of the shim (the main process and orphans
// re-parented to it), sending the main process's status on mainExit.
func (sh *shim) reap(mainExit chan<- syscall.WaitStatus) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			// No children now; orphans may be re-parented here later.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		sh.mu.Lock()
		if pid == sh.main && !sh.mainDone {
			sh.mainDone = true
			mainExit <- ws
		}
		sh.mu.Unlock()
	}
}

// stopTree stops every process of the replica: SIGTERM, up to Grace for
// them to exit, then SIGKILL until none is left (bounded by killWait).
func (sh *shim) stopTree() {
	sh.signalTree(syscall.SIGTERM)
	deadline := time.Now().Add(sh.cfg.Grace)
	for time.Now().Before(deadline) {
		if sh.treeEmpty() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	if sh.group != nil {
		if err := sh.group.Kill(killWait); err != nil {
			fmt.Fprintf(os.Stderr, "baton shim: %v\n", err)
		}
	}
	deadline = time.Now().Add(killWait)
	for time.Now().Before(deadline) {
		sh.signalTree(syscall.SIGKILL)
		if sh.treeEmpty() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signalTree sends sig to every live process of the replica: the members
// of its cgroup, and (always) the shim's descendants.
func (sh *shim) signalTree(sig syscall.Signal) {
	if sh.group != nil {
		_ = sh.group.Signal(sig)
	}
	for _, pid := range descendants(os.Getpid()) {
		_ = syscall.Kill(pid, sig)
	}
}

// treeEmpty reports whether no live process of the replica is left.
func (sh *shim) treeEmpty() bool {
	if sh.group != nil {
		if populated, err := sh.group.Populated(); err == nil && populated {
			return false
		}
	}
	return len(descendants(os.Getpid())) == 0
}

// descendants lists the live (not zombie) processes below pid, from
// /proc's parent links.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, ppid, ok := procState(p)
		if !ok || state == 'Z' || state == 'X' {
			continue
		}
		children[ppid] = append(children[ppid], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// procState reads a process's state letter and parent pid from
// /proc/<pid>/stat ("pid (comm) S ppid ...", comm may hold spaces and ')').
func procState(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) == 0 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, err == nil
}

// runExec is the trampoline: join the replica's cgroup, drop to the
// replica user, exec bash. What it prints goes to the replica's log.
func runExec() int {
	var files []string
	var uid, gid = -1, -1
	var groups []int
	var script string
	var binds []shimBind
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, execEnvCgroup):
			files = strings.Split(strings.TrimPrefix(kv, execEnvCgroup), "\n")
		case strings.HasPrefix(kv, execEnvUID):
			uid, _ = strconv.Atoi(strings.TrimPrefix(kv, execEnvUID))
		case strings.HasPrefix(kv, execEnvGID):
			gid, _ = strconv.Atoi(strings.TrimPrefix(kv, execEnvGID))
		case strings.HasPrefix(kv, execEnvGroups):
			for _, g := range strings.Split(strings.TrimPrefix(kv, execEnvGroups), ",") {
				if n, err := strconv.Atoi(g); err == nil {
					groups = append(groups, n)
				}
			}
		case strings.HasPrefix(kv, execEnvScript):
			script = strings.TrimPrefix(kv, execEnvScript)
		case strings.HasPrefix(kv, execEnvBinds):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(kv, execEnvBinds)), &binds); err != nil {
				fmt.Fprintf(os.Stderr, "baton: bad file_mounts: %v\n", err)
				return 126
			}
		default:
			env = append(env, kv)
		}
	}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "baton: "+format+"\n", args...)
		return 126
	}
	if len(files) > 0 {
		if err := cgroups.JoinFiles(files); err != nil {
			return fail("join the replica's cgroup: %v", err)
		}
	}
	for _, b := range binds {
		if err := bindMount(b); err != nil {
			return fail("file_mounts %s: %v", b.Target, err)
		}
	}
	if uid >= 0 {
		// Groups first: after setuid the process may no longer change them.
		if err := syscall.Setgroups(groups); err != nil {
			return fail("set groups: %v", err)
		}
		if err := syscall.Setgid(gid); err != nil {
			return fail("set gid %d: %v", gid, err)
		}
		if err := syscall.Setuid(uid); err != nil {
			return fail("set uid %d: %v", uid, err)
		}
	}
	bash, err := lookBash()
	if err != nil {
		return fail("%v", err)
	}
	err = syscall.Exec(bash, []string{"bash", "-c", script}, env)
	return fail("exec bash: %v", err)
}

// readShimEvents decodes the shim's event lines until the pipe closes.
func readShimEvents(r io.Reader, fn func(shimEvent)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		var e shimEvent
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			fn(e)
		}
	}
}

// bindMount places b.Source at b.Target in this process's mount namespace
// (a private one: see shim.start). A missing mount point is created on the
// machine (an empty directory or file, as SkyPilot creates file_mounts'
// directories), since a mount needs one; what is mounted stays the
// replica's own.
func bindMount(b shimBind) error {
	fi, err := os.Stat(b.Source)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		if err := os.MkdirAll(b.Target, 0o755); err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(b.Target), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(b.Target, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			return err
		}
		f.Close()
	}
	return unix.Mount(b.Source, b.Target, "", unix.MS_BIND|unix.MS_REC, "")
}
