package lbnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/protocol"
)

// ejectionNode is the part of a Node that ejection uses (config, log,
// metrics, return timers), without NATS or listeners.
func ejectionNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.Registry = prometheus.NewRegistry()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		t.Fatal(err)
	}
	return &Node{cfg: cfg, log: cfg.Logger, metrics: m, gatherer: cfg.Registry.(prometheus.Gatherer), returns: newReturnTimers()}
}

// TestEjectionBackoff walks one backend through ejections and returns on a
// fake clock: the threshold, the doubling and its cap, what resets the
// count and the multiplier, and that outcomes during an ejection change
// nothing.
func TestEjectionBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := ejectionNode(t, Config{EjectAfterFailures: 3, EjectBase: time.Second, EjectMax: 4 * time.Second})
		defer n.returns.stop()
		s := n.newService("svc")
		b := &backend{addr: "10.0.0.1:8080"}
		e := &endpoint{ep: protocol.Endpoint{ReplicaID: 1, Version: 1, Address: b.addr}, backend: b}
		fail := func(k int) func() {
			return func() {
				for range k {
					s.failed(e, failConnect, errors.New("connection refused"))
				}
			}
		}
		succeed := func() { s.succeeded(b) }
		wait := func(d time.Duration) func() {
			return func() {
				time.Sleep(d) // the bubble's fake clock
				synctest.Wait()
			}
		}
		steps := []struct {
			name        string
			do          func()
			wantEjected bool
			wantFor     time.Duration // ejection length, when ejected
			wantTotal   float64       // baton_lb_ejections_total
		}{
			{"two failures are below the threshold", fail(2), false, 0, 0},
			{"a success resets the count", func() { succeed(); fail(2)() }, false, 0, 0},
			{"the third failure in a row ejects for the base time", fail(1), true, time.Second, 1},
			{"failures while ejected are ignored", fail(10), true, time.Second, 1},
			{"still ejected just before the time is up", wait(time.Second - time.Nanosecond), true, time.Second, 1},
			{"returns when the time is up", wait(time.Nanosecond), false, 0, 1},
			{"one failure after the return does not eject", fail(1), false, 0, 1},
			{"a consecutive ejection doubles", fail(2), true, 2 * time.Second, 2},
			{"a success while ejected keeps the multiplier", func() { succeed(); wait(2 * time.Second)(); fail(3)() }, true, 4 * time.Second, 3},
			{"doubling is capped at EjectMax", func() { wait(4 * time.Second)(); fail(3)() }, true, 4 * time.Second, 4},
			{"a success after the return resets the multiplier", func() { wait(4 * time.Second)(); succeed(); fail(3)() }, true, time.Second, 5},
		}
		for _, st := range steps {
			st.do()
			if got := b.health.ejected.Load(); got != st.wantEjected {
				t.Fatalf("%s: ejected = %v, want %v", st.name, got, st.wantEjected)
			}
			wantCount := int32(0)
			if st.wantEjected {
				wantCount = 1
				if got := time.Duration(b.health.ejectedFor.Load()); got != st.wantFor {
					t.Fatalf("%s: ejected for %s, want %s", st.name, got, st.wantFor)
				}
			}
			if got := s.ejectedCount.Load(); got != wantCount {
				t.Fatalf("%s: service counts %d ejected, want %d", st.name, got, wantCount)
			}
			if err := metricIs(n, float64(wantCount), "baton_lb_ejected_replicas", "service", "svc"); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if err := metricIs(n, st.wantTotal, "baton_lb_ejections_total", "service", "svc"); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
		if err := metricIs(n, 2+2+1+10+1+2+3+3+3, "baton_lb_upstream_failures_total", "service", "svc", "kind", "connect"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestShutdownCancelsReturns: once the node has stopped no return runs.
func TestShutdownCancelsReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := ejectionNode(t, Config{EjectAfterFailures: 1, EjectBase: time.Second})
		s := n.newService("svc")
		b := &backend{addr: "10.0.0.1:8080"}
		s.failed(&endpoint{backend: b}, failReset, io.EOF)
		if !b.health.ejected.Load() {
			t.Fatal("not ejected after one failure with EjectAfterFailures 1")
		}
		n.returns.stop()
		time.Sleep(time.Hour)
		synctest.Wait()
		if !b.health.ejected.Load() || s.ejectedCount.Load() != 1 {
			t.Fatal("a return ran after stop")
		}
		// Nor is a new return scheduled.
		b2 := &backend{addr: "10.0.0.2:8080"}
		s.failed(&endpoint{backend: b2}, failReset, io.EOF)
		if len(n.returns.timers) != 0 {
			t.Fatalf("%d returns scheduled after stop", len(n.returns.timers))
		}
	})
}

func TestEjectionTime(t *testing.T) {
	tests := []struct {
		name        string
		base, limit time.Duration
		prior       int32
		want        time.Duration
	}{
		{"first ejection", time.Second, 30 * time.Second, 0, time.Second},
		{"second doubles", time.Second, 30 * time.Second, 1, 2 * time.Second},
		{"fifth", time.Second, 30 * time.Second, 4, 16 * time.Second},
		{"capped", time.Second, 30 * time.Second, 5, 30 * time.Second},
		{"many ejections do not overflow", time.Second, 30 * time.Second, 1 << 30, 30 * time.Second},
		{"base near the cap", 20 * time.Second, 30 * time.Second, 1, 30 * time.Second},
		{"base equal to the cap", 30 * time.Second, 30 * time.Second, 3, 30 * time.Second},
		{"huge durations do not overflow", time.Duration(1) << 61, time.Duration(1<<63 - 1), 5, time.Duration(1<<63 - 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ejectionTime(tc.base, tc.limit, tc.prior); got != tc.want {
				t.Fatalf("ejectionTime(%s, %s, %d) = %s, want %s", tc.base, tc.limit, tc.prior, got, tc.want)
			}
		})
	}
}

func TestClassifyFailure(t *testing.T) {
	live := httptest.NewRequest(http.MethodGet, "http://svc/", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gone := live.WithContext(ctx)
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	brokenBody := &trackedBody{}
	brokenBody.failed.Store(true)
	tests := []struct {
		name     string
		req      *http.Request
		err      error
		tb       *trackedBody
		want     failureKind
		wantSkip bool
	}{
		{"dial error", live, dial, nil, failConnect, false},
		{"dial timeout", live, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("i/o timeout")}, nil, failConnect, false},
		{"reset by peer", live, reset, nil, failReset, false},
		{"EOF before the headers", live, io.EOF, nil, failReset, false},
		{"malformed response", live, errors.New("net/http: HTTP/1.x transport connection broken: malformed HTTP status code"), nil, failReset, false},
		{"response timeout", live, fmt.Errorf("replica x: %w of 1s", errResponseTimeout), nil, failTimeout, false},
		{"client went away", gone, reset, nil, 0, true},
		{"client went away during a timeout", gone, errResponseTimeout, nil, 0, true},
		{"client body broke", live, io.ErrUnexpectedEOF, brokenBody, 0, true},
		{"intact client body", live, reset, &trackedBody{}, failReset, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := classifyFailure(tc.req, tc.err, tc.tb)
			if ok == tc.wantSkip || (ok && got != tc.want) {
				t.Fatalf("classifyFailure = %s, %v; want %s, counted %v", got, ok, tc.want, !tc.wantSkip)
			}
		})
	}
}
