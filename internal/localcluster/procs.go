// Package localcluster runs baton daemons as separate processes on one
// machine, each on a loopback address of its own, as `make demo` and the
// cluster benchmarks (internal/clusterbench) do: a process launcher with
// logs per daemon, kill -9 and log tails, free-port checks, and a
// coordinator cluster laid out with the flags users give.
//
// It runs on Linux only (process groups, a parent-death signal, and every
// 127.0.0.0/8 address answering).
package localcluster

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Procs starts baton daemons and keeps track of them. Its methods are
// safe for concurrent use.
type Procs struct {
	// Bin is the baton binary; Dir holds one log file per daemon.
	Bin, Dir string

	mu    sync.Mutex
	procs map[string]*Proc
}

// NewProcs returns a launcher of bin logging to files in dir.
func NewProcs(bin, dir string) *Procs {
	return &Procs{Bin: bin, Dir: dir, procs: map[string]*Proc{}}
}

// Proc is one baton process. A name started again (a restart) gets a
// new Proc logging to the same file.
type Proc struct {
	Name    string
	Args    []string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// Start runs `baton args...` in its own process group, logging to
// Dir/name.log (appended to on a restart); the death of this process
// (Ctrl-C, a crash) sends it SIGTERM.
func (ps *Procs) Start(name string, args ...string) (*Proc, error) {
	p := &Proc{Name: name, Args: args, LogPath: filepath.Join(ps.Dir, name+".log"), done: make(chan struct{})}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(ps.Bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.procs[name] = p
	ps.mu.Unlock()
	return p, nil
}

// Restart starts name again with the arguments it last ran with.
func (ps *Procs) Restart(name string) (*Proc, error) {
	p := ps.Proc(name)
	if p == nil {
		return nil, fmt.Errorf("restart %s: never started", name)
	}
	if p.Running() {
		return nil, fmt.Errorf("restart %s: still running", name)
	}
	return ps.Start(name, p.Args...)
}

// Proc returns the daemon last started as name, or nil.
func (ps *Procs) Proc(name string) *Proc {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.procs[name]
}

// Running reports whether the daemon last started as name runs.
func (ps *Procs) Running(name string) bool {
	p := ps.Proc(name)
	return p != nil && p.Running()
}

// All returns the daemons (the last started under each name), by name.
func (ps *Procs) All() []*Proc {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := make([]*Proc, 0, len(ps.procs))
	for _, p := range ps.procs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill9 kills the daemon's process group with SIGKILL and waits for it.
func (p *Proc) Kill9() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// StopAll stops every daemon: SIGTERM (agents stop their replicas, all
// leave gossip), then SIGKILL to the process group of any still running
// after grace. A grace of 0 kills them all at once.
func (ps *Procs) StopAll(grace time.Duration) {
	procs := ps.All()
	if grace <= 0 {
		for _, p := range procs {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		}
	} else {
		for _, p := range procs {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(grace)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline:
			p.Kill9()
		}
	}
}

// KillAllNow sends SIGKILL to every daemon's process group without
// waiting (a signal handler's last act).
func (ps *Procs) KillAllNow() {
	for _, p := range ps.All() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// LogTails writes the last n lines of every daemon's log to w (after a
// failure).
func (ps *Procs) LogTails(w io.Writer, n int) {
	for _, p := range ps.All() {
		buf, err := os.ReadFile(p.LogPath)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(buf)), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(w, "--- last lines of %s's log (%s) ---\n%s\n", p.Name, p.LogPath, strings.Join(lines, "\n"))
	}
}

// PortOn returns want if it is free on host (TCP and UDP: gossip uses
// both), else a free port there. Other work on this machine may hold the
// usual ports.
func PortOn(host string, want int) (int, error) {
	if Free(host, want) {
		return want, nil
	}
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, fmt.Errorf("no free port on %s (is the loopback address usable?): %w", host, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if Free(host, port) {
			return port, nil
		}
	}
	return 0, errors.New("no free port on " + host)
}

// Free reports whether port is free on host, for TCP and UDP.
func Free(host string, port int) bool {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	u.Close()
	return true
}
