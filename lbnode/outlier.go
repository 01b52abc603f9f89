package lbnode

// Passive health (outlier detection, as Envoy does it). Every LB watches
// the outcome of its own attempts on each replica and stops choosing a
// replica that keeps failing, without waiting for the control plane's
// readiness probes (which take seconds and go through the leader).
//
// A failure is an attempt that got no HTTP response from the replica:
//
//   - connect: the dial failed (refused, dial timeout, unreachable);
//   - reset: a connection was made but broke before the response headers
//     (reset by peer, EOF, broken pipe, a reply that is not HTTP);
//   - timeout: no response headers within the route table's
//     ResponseTimeoutSeconds (see service.send).
//
// Any HTTP response, whatever its status, is a success. An attempt that
// failed because of the client (it went away, or its request body could not
// be read) says nothing about the replica and is not counted.
//
// Config.EjectAfterFailures consecutive failures eject the backend: the
// selectors skip it for EjectBase, doubled for every further consecutive
// ejection up to EjectMax. When the time is up the backend returns with a
// clean failure count; a success after its return forgets the earlier
// ejections. Outcomes of attempts that end while the backend is ejected
// (sent before the ejection, or in panic mode) change nothing.
//
// All of it lives in the backend (per replica address, kept across table
// swaps) in atomics; requests take no lock. Only an ejection takes a lock,
// to schedule its return (returnTimers).

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// failureKind is the kind of a failed attempt; its String is the kind label
// of baton_lb_upstream_failures_total.
type failureKind int

const (
	failConnect failureKind = iota
	failReset
	failTimeout
	numFailureKinds
)

var failureKindNames = [numFailureKinds]string{"connect", "reset", "timeout"}

func (k failureKind) String() string { return failureKindNames[k] }

// errResponseTimeout is the cause of an attempt cancelled because the
// replica sent no response headers within the route table's
// ResponseTimeoutSeconds.
var errResponseTimeout = errors.New("no response headers within the response timeout")

// health is a backend's passive health state. Its fields are atomics,
// written by the requests that use the backend and by its return timer.
type health struct {
	// failures counts consecutive failed attempts since the last success,
	// ejection or return.
	failures atomic.Int64
	// ejections counts consecutive ejections: those with no success since
	// the backend returned from the one before.
	ejections atomic.Int32
	// ejected is set from an ejection until its return; selection skips the
	// backend meanwhile (unless every candidate is ejected).
	ejected atomic.Bool
	// ejectedFor is the length of the current or last ejection.
	ejectedFor atomic.Int64 // time.Duration
}

// classifyFailure says what kind of replica failure err, the error of an
// attempt of req, is; ok is false when the failure says nothing about the
// replica: the client went away, or reading the client's body failed.
func classifyFailure(req *http.Request, err error, tb *trackedBody) (kind failureKind, ok bool) {
	switch {
	case req.Context().Err() != nil, tb != nil && tb.failed.Load():
		return 0, false
	case errors.Is(err, errResponseTimeout):
		return failTimeout, true
	case isDialError(err):
		return failConnect, true
	default:
		return failReset, true
	}
}

// succeeded records that b answered an attempt. In the steady state it
// only reads: two atomic loads.
func (s *service) succeeded(b *backend) {
	h := &b.health
	if h.failures.Load() != 0 {
		h.failures.Store(0)
	}
	if h.ejections.Load() != 0 && !h.ejected.Load() {
		h.ejections.Store(0)
	}
}

// failed records a failed attempt on ep and ejects its backend when that
// makes EjectAfterFailures in a row.
func (s *service) failed(ep *endpoint, kind failureKind, err error) {
	s.failures[kind].Inc()
	h := &ep.backend.health
	if h.ejected.Load() {
		return // sent before the ejection, or in panic mode: the return starts a new count
	}
	n := h.failures.Add(1)
	if n < int64(s.node.cfg.EjectAfterFailures) || !h.ejected.CompareAndSwap(false, true) {
		return
	}
	s.eject(ep, n, kind, err)
}

// eject takes ep's backend out of selection; h.ejected has just been set by
// the caller, so each ejection runs this once.
func (s *service) eject(ep *endpoint, failures int64, kind failureKind, err error) {
	b := ep.backend
	h := &b.health
	prior := h.ejections.Add(1) - 1
	d := ejectionTime(s.node.cfg.EjectBase, s.node.cfg.EjectMax, prior)
	h.ejectedFor.Store(int64(d))
	h.failures.Store(0)
	s.ejectedCount.Add(1)
	s.ejectedGauge.Inc()
	s.ejectionsTotal.Inc()
	s.node.log.Warn("replica ejected after consecutive failures; routing around it", "service", s.name,
		"replica_id", ep.ep.ReplicaID, "replica_addr", b.addr, "consecutive_failures", failures,
		"last_failure", kind.String(), "error", err, "ejected_for", d, "consecutive_ejections", prior+1)
	s.node.returns.schedule(b, d, func() { s.unEject(b) })
}

// unEject ends b's ejection; its return timer calls it.
func (s *service) unEject(b *backend) {
	h := &b.health
	h.failures.Store(0)
	h.ejected.Store(false)
	s.ejectedCount.Add(-1)
	s.ejectedGauge.Dec()
	s.node.log.Info("replica returned from ejection", "service", s.name, "replica_addr", b.addr,
		"ejected_for", time.Duration(h.ejectedFor.Load()))
}

// ejectionTime is base doubled prior times, capped at limit.
func ejectionTime(base, limit time.Duration, prior int32) time.Duration {
	d := base
	for i := int32(0); i < prior && d < limit; i++ {
		if d > limit/2 {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}

// returnTimers holds the timer that ends each ejection, so that shutdown
// can stop them: no return runs (and logs) after Run has returned.
type returnTimers struct {
	// mu guards closed and timers, and is held while a return runs. It is
	// a leaf: nothing else is locked under it.
	mu     sync.Mutex
	closed bool
	timers map[*backend]*time.Timer
}

func newReturnTimers() *returnTimers {
	return &returnTimers{timers: make(map[*backend]*time.Timer)}
}

// schedule calls ret after d, unless stop is called first. Once stopped it
// schedules nothing: a backend ejected during shutdown stays ejected.
func (r *returnTimers) schedule(b *backend, d time.Duration, ret func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.closed || r.timers[b] != t {
			return
		}
		delete(r.timers, b)
		ret()
	})
	r.timers[b] = t
}

// stop cancels every pending return and waits for one that is running.
func (r *returnTimers) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for b, t := range r.timers {
		t.Stop()
		delete(r.timers, b)
	}
}
