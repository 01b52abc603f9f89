package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is one baton process of the demo's cluster.
type daemon struct {
	name    string
	args    []string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// start runs `baton args...` in its own process group, logging to a file;
// the demo's death (Ctrl-C, a closed pipe) takes it down too.
func (d *demo) start(name string, args ...string) (*daemon, error) {
	p := &daemon{name: name, args: args, logPath: filepath.Join(d.dir, name+".log"), done: make(chan struct{})}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(d.bin, args...)
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
	d.daemons[name] = p
	return p, nil
}

// kill9 kills a daemon's process group with SIGKILL and waits for it.
func (p *daemon) kill9() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// stopAll stops every daemon: SIGTERM (agents stop their replicas), then
// SIGKILL after 30 s.
func (d *demo) stopAll() {
	for _, p := range d.daemons {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range d.daemons {
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
}

// logTails prints the last lines of every daemon's log (after a failure).
func (d *demo) logTails() {
	for _, p := range d.daemons {
		buf, err := os.ReadFile(p.logPath)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(buf)), "\n")
		if len(lines) > 25 {
			lines = lines[len(lines)-25:]
		}
		fmt.Fprintf(os.Stderr, "--- last lines of %s's log ---\n%s\n", p.name, strings.Join(lines, "\n"))
	}
}

// portOn returns want if it is free on host (TCP and UDP: gossip uses
// both), else a free port there. Other work on this machine may hold the
// usual ports.
func portOn(host string, want int) (int, error) {
	if free(host, want) {
		return want, nil
	}
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, fmt.Errorf("no free port on %s (is the loopback address usable?): %w", host, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if free(host, port) {
			return port, nil
		}
	}
	return 0, errors.New("no free port on " + host)
}

func free(host string, port int) bool {
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
