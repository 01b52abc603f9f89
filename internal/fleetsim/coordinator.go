package fleetsim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Coordinator is one `baton coordinator` process with production timings,
// restartable on the same data dir and ports.
type Coordinator struct {
	Bin      string
	Dir      string // holds data/ and coordinator.log
	HTTPAddr string
	RaftAddr string
	NATSPort int
	// DebugAddr is passed as --debug-addr when set.
	DebugAddr string
	// Insecure passes --insecure: the coordinator runs on loopback without
	// TLS and ACLs, which a binary that knows the flag refuses without it.
	Insecure bool

	cmd  *exec.Cmd
	done chan struct{}
}

// StartCoordinator picks free loopback ports and starts a coordinator in
// dir, trying fresh ports when the picked ones were taken meanwhile. With
// debug, it also passes --debug-addr (if the binary knows the flag). It
// passes --insecure if the binary knows it (an older one to compare with
// starts open without it).
func StartCoordinator(ctx context.Context, bin, dir string, debug bool) (*Coordinator, error) {
	if debug && !hasFlag(bin, "coordinator", "--debug-addr") {
		debug = false
	}
	insecure := hasFlag(bin, "coordinator", "--insecure")
	var last error
	for attempt := 1; attempt <= 3; attempt++ {
		ports, err := freePorts(4)
		if err != nil {
			return nil, err
		}
		c := &Coordinator{
			Bin: bin, Dir: dir,
			HTTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
			RaftAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
			NATSPort: ports[2],
			Insecure: insecure,
		}
		if debug {
			c.DebugAddr = fmt.Sprintf("127.0.0.1:%d", ports[3])
		}
		last = c.Start(ctx)
		if last == nil {
			return c, nil
		}
		if !strings.Contains(last.Error(), "address already in use") {
			return nil, last
		}
		_ = os.RemoveAll(filepath.Join(dir, "data"))
	}
	return nil, last
}

// NATSURL is the embedded NATS server's URL.
func (c *Coordinator) NATSURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", c.NATSPort) }

// PID is the running process's id (0 when not running).
func (c *Coordinator) PID() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// LogPath is the coordinator's log file.
func (c *Coordinator) LogPath() string { return filepath.Join(c.Dir, "coordinator.log") }

// Start runs the coordinator and waits (up to 60 s) until /healthz
// answers 200; it returns an error with the log's tail if the process
// exits first.
func (c *Coordinator) Start(ctx context.Context) error {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(c.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"coordinator", "--data-dir", filepath.Join(c.Dir, "data"),
		"--http-addr", c.HTTPAddr, "--raft-addr", c.RaftAddr,
		"--nats-host", "127.0.0.1", "--nats-port", strconv.Itoa(c.NATSPort), "--log-level", "warn"}
	if c.DebugAddr != "" {
		args = append(args, "--debug-addr", c.DebugAddr)
	}
	if c.Insecure {
		args = append(args, "--insecure")
	}
	fmt.Fprintf(logf, "=== %s %s\n", c.Bin, strings.Join(args, " "))
	cmd := exec.Command(c.Bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var startErr error
	launch(func() { startErr = cmd.Start() }) // at the priority the simulator started with
	if err := startErr; err != nil {
		return fmt.Errorf("start coordinator: %w", err)
	}
	c.cmd, c.done = cmd, make(chan struct{})
	done := c.done
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("coordinator exited while starting: %s", tail(c.LogPath(), 2000))
		case <-ctx.Done():
			c.Kill()
			return ctx.Err()
		default:
		}
		if code, _, err := httpGet(ctx, "http://"+c.HTTPAddr+"/healthz"); err == nil && code == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			c.Kill()
			return fmt.Errorf("coordinator not healthy after 60s: %s", tail(c.LogPath(), 2000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill sends SIGKILL to the coordinator and waits (up to 10 s) for it to
// exit.
func (c *Coordinator) Kill() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
	}
}

// Stop asks the coordinator to exit (SIGTERM), and kills it after 10 s.
func (c *Coordinator) Stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.Kill()
	}
}

// hasFlag reports whether `bin sub --help` mentions flag.
func hasFlag(bin, sub, flag string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, sub, "--help").CombinedOutput()
	return strings.Contains(string(out), flag)
}

// freePorts returns n distinct ports free on 127.0.0.1 just now.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tail returns the last n bytes of a file.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if fi.Size() > n {
		_, _ = f.Seek(fi.Size()-n, 0)
	}
	buf := make([]byte, n)
	k, _ := f.Read(buf)
	return string(buf[:k])
}

// ProcStats is a process's CPU time and resident memory.
type ProcStats struct {
	CPU time.Duration // utime + stime
	RSS int64         // bytes
}

// ReadProcStats reads /proc/<pid>/stat and /proc/<pid>/status.
func ReadProcStats(pid int) (ProcStats, error) {
	var s ProcStats
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return s, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return s, errors.New("unexpected /proc stat format")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	s.CPU = time.Duration(ut+st) * time.Second / clkTck
	fs, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	defer fs.Close()
	sc := bufio.NewScanner(fs)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			s.RSS = kb << 10
		}
	}
	return s, nil
}
