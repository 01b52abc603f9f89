// Package testutil holds helpers shared by baton's tests.
package testutil

import (
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/natsembed"
)

// WaitFor calls check until it returns nil or timeout passes, then fails the
// test with check's last error.
func WaitFor(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	interval := 10 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(interval)
		if interval < 200*time.Millisecond {
			interval *= 2
		}
	}
}

// Never calls check every 100 ms for d and fails the test as soon as it
// returns an error: the way to assert that something does not happen.
func Never(t testing.TB, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if err := check(); err != nil {
			t.Fatalf("happened within %s: %v", d, err)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// NATS starts an embedded NATS server on a free loopback port for the
// test's lifetime and returns its URL.
func NATS(t testing.TB) string {
	t.Helper()
	s, err := natsembed.Start(natsembed.Config{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

// OpenTempDir is t.TempDir() made readable and searchable by every user,
// with its parent (the test's own temporary directories are 0700): an
// agent running as root runs replicas as "nobody", who must reach their
// data dirs and workdirs, as on a real machine.
func OpenTempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// handedOut are the ports FreePort returned in this process: the kernel
// may give a port just released to the next caller, and a test that picks
// several ports before binding any would get one twice.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// FreePort returns a TCP port on host that was free a moment ago and that
// it never returned before in this process. Safe for concurrent use.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	for range 1000 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port
		}
	}
	t.Fatal("free port: the kernel kept giving ports already handed out")
	return 0
}

// CounterValue sums every series of the counter or gauge name in g (0 when
// there is none).
func CounterValue(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// RequireRoot fails the test in CI (which runs as root) and skips it
// elsewhere; why says what needs root.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("this test needs root (CI runs as root): %s", why)
	}
	t.Skipf("needs root: %s", why)
}
