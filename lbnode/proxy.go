package lbnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// newTransport is the connection pool every service shares: keep-alives,
// many idle connections per replica, a bounded dial, no transparent
// compression (Accept-Encoding passes through untouched) and no response
// timeout (model servers may think for minutes; a service that wants one
// sets response_timeout_seconds, applied per request by service.send).
func newTransport(dialTimeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           d.DialContext,
		MaxIdleConns:          0, // no limit across replicas
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}

// newService makes the service's proxy. Its listener is opened by bindLocked.
func (n *Node) newService(name string) *service {
	s := &service{
		name:           name,
		node:           n,
		backends:       make(map[string]*backend),
		inFlightGauge:  n.metrics.inFlight.WithLabelValues(name),
		duration:       n.metrics.duration.WithLabelValues(name),
		ejectedGauge:   n.metrics.ejected.WithLabelValues(name),
		ejectionsTotal: n.metrics.ejections.WithLabelValues(name),
	}
	for k := range numFailureKinds {
		s.failures[k] = n.metrics.upstreamFailures.WithLabelValues(name, k.String())
	}
	s.proxy = &httputil.ReverseProxy{
		Rewrite:       rewrite,
		Transport:     roundTripFunc(s.roundTrip),
		FlushInterval: -1, // stream: SSE and chunked bodies are never held back
		BufferPool:    copyBuffers,
		ErrorHandler:  s.proxyError,
		ErrorLog:      slog.NewLogLogger(n.log.With("service", name).Handler(), slog.LevelDebug),
	}
	return s
}

// copyBuffers recycles the 32 KiB buffers responses are copied through.
var copyBuffers = &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

// bufferPool is an httputil.BufferPool over sync.Pool; safe for concurrent use.
type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte  { return *p.pool.Get().(*[]byte) }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }

// rewrite prepares the outbound request. The replica is chosen later, in
// roundTrip, so that a dial error can move the request to another one.
func rewrite(pr *httputil.ProxyRequest) {
	// Keep the chain of proxies in front of us, then add the client.
	if prior := pr.In.Header["X-Forwarded-For"]; len(prior) > 0 {
		pr.Out.Header["X-Forwarded-For"] = prior
	}
	pr.SetXForwarded()
	pr.Out.URL.Scheme = "http"
	pr.Out.Host = "" // the Host header names the replica; X-Forwarded-Host keeps the client's
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

// RoundTrip implements http.RoundTripper.
func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// ctxKey carries a request's *proxyState through the ReverseProxy.
type ctxKey struct{}

// proxyState is one request's bookkeeping. It is used by one goroutine at a
// time: ServeHTTP, then the ReverseProxy calling roundTrip and proxyError
// synchronously.
type proxyState struct {
	route *route
	// ep is the replica serving the request (its in-flight count holds one
	// for us); nil when none does.
	ep    *endpoint
	code  int
	tried []*endpoint
	// release ends the context of the attempt that got the response, when
	// send made one (a response timeout is set); ServeHTTP calls it once
	// the response body has been copied.
	release context.CancelCauseFunc
}

// ServeHTTP proxies one request to a replica of the service's current route.
func (s *service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := s.route.Load()
	if len(rt.endpoints) == 0 {
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, rt.unavailable)
		s.requests.Add(1)
		s.node.metrics.requests.WithLabelValues(s.name, "none", "503").Inc()
		return
	}

	start := time.Now()
	s.inFlight.Add(1)
	s.inFlightGauge.Inc()
	st := &proxyState{route: rt}
	if r.ContentLength != 0 {
		// A proxy reads the request body while it writes the response (a
		// replica may answer before it has read everything). Without this
		// the HTTP/1 server would consume or close the body when the
		// response starts, under the transport's feet.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	// Deferred so that the accounting also runs when the ReverseProxy aborts
	// a response whose body copy failed (it panics with http.ErrAbortHandler).
	defer func() {
		if st.release != nil {
			st.release(nil)
		}
		version := "none"
		if st.ep != nil {
			version = st.ep.version
			st.ep.backend.done()
		}
		s.inFlight.Add(-1)
		s.inFlightGauge.Dec()
		s.requests.Add(1)
		s.node.metrics.requests.WithLabelValues(s.name, version, strconv.Itoa(st.code)).Inc()
		s.duration.Observe(time.Since(start).Seconds())
	}()
	s.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, st)))
}

// roundTrip sends the request to a replica chosen by the route's policy,
// skipping ejected replicas (route.pick). A failed attempt counts against
// its replica's health (outlier.go) and moves to another replica, each
// replica at most once, when that is safe (see retryable).
func (s *service) roundTrip(req *http.Request) (*http.Response, error) {
	st, _ := req.Context().Value(ctxKey{}).(*proxyState)
	if st == nil {
		return nil, errors.New("lbnode: request without proxy state")
	}
	eps := st.route.endpoints
	body := req.Body
	for reloads := 0; ; {
		candidates := eps
		if len(st.tried) > 0 {
			candidates = untried(eps, st.tried)
		}
		ep := st.route.pick(candidates)
		ep.backend.inFlight.Add(1)
		if ep.backend.retired.Load() && reloads < 3 {
			// A table without this replica was applied after the request
			// loaded its route, and the LB may already have told the leader
			// that nothing is in flight to it: use the new route instead.
			// (The count is visible before the retired flag is read, so the
			// pruning side either sees it or we see the flag.)
			ep.backend.done()
			reloads++
			st.route = s.route.Load()
			eps = st.route.endpoints
			st.tried = nil
			if len(eps) == 0 {
				return nil, errRouteEmptied
			}
			continue
		}
		st.ep = ep

		out := req
		if len(st.tried) > 0 {
			out = req.Clone(req.Context())
		}
		var tb *trackedBody
		if body != nil {
			tb = &trackedBody{rc: body, length: req.ContentLength}
			out.Body = tb
		}
		out.URL.Host = ep.ep.Address

		resp, err := s.send(out, st)
		if err == nil {
			s.succeeded(ep.backend)
			resp.Header[protocol.HeaderVersion] = ep.versionHdr
			resp.Header[protocol.HeaderReplica] = ep.replicaHdr
			st.code = resp.StatusCode
			return resp, nil
		}

		if kind, ok := classifyFailure(req, err, tb); ok {
			s.failed(ep, kind, err)
		}
		ep.backend.done()
		st.ep = nil
		st.tried = append(st.tried, ep)
		if len(st.tried) >= len(eps) || !retryable(req, err, tb) {
			return nil, err
		}
		s.node.metrics.retries.WithLabelValues(s.name).Inc()
		s.node.log.Debug("replica unreachable; retrying on another", "service", s.name,
			"replica_id", ep.ep.ReplicaID, "replica_addr", ep.ep.Address, "method", req.Method, "error", err)
	}
}

// send makes one attempt: the shared transport's RoundTrip, bounded by the
// route's response timeout when it has one.
//
// The timeout is per request (the transport is shared by every service):
// the attempt gets its own context, and a timer started once the
// connection is ready (a dial is bounded by DialTimeout and fails as a
// dial error) cancels it with errResponseTimeout as the cause when no
// response headers have come by then. Once they have, the timer is stopped
// and the context stays alive while the body streams (model servers stream
// for minutes): st.release ends it when ServeHTTP is done. A timed-out
// attempt returns an error wrapping errResponseTimeout, which is not a dial
// error: the replica may have seen the request, so retryable lets only an
// idempotent request without a body try another replica.
func (s *service) send(out *http.Request, st *proxyState) (*http.Response, error) {
	timeout := st.route.responseTimeout
	if timeout <= 0 {
		return s.node.transport.RoundTrip(out)
	}
	ctx, cancel := context.WithCancelCause(out.Context())
	var timer *time.Timer
	trace := &httptrace.ClientTrace{
		// The HTTP/1 transport calls GotConn in this goroutine, before
		// RoundTrip returns; again if it retries on a fresh connection,
		// which does not restart the clock.
		GotConn: func(httptrace.GotConnInfo) {
			if timer == nil {
				timer = time.AfterFunc(timeout, func() { cancel(errResponseTimeout) })
			}
		},
	}
	resp, err := s.node.transport.RoundTrip(out.WithContext(httptrace.WithClientTrace(ctx, trace)))
	inTime := timer == nil || timer.Stop()
	if err == nil && inTime {
		st.release = cancel
		return resp, nil
	}
	if err == nil {
		// The headers came just as the timer fired: the context, and with
		// it the body, is already cancelled.
		resp.Body.Close()
	}
	if !inTime && context.Cause(ctx) == errResponseTimeout && out.Context().Err() == nil {
		err = fmt.Errorf("replica %s: %w of %s (service.response_timeout_seconds)", out.URL.Host, errResponseTimeout, timeout)
	}
	cancel(nil)
	return nil, err
}

// retryable reports whether a request that failed with err may be sent to
// another replica:
//
//   - never once the client has gone away;
//   - a dial error (connection refused, dial timeout: the request never
//     reached the replica) is retried for any method, provided the transport
//     did not read any of the request body (it never does before a
//     connection exists, so the unread body is simply handed on; nothing is
//     buffered);
//   - any other error (the replica may have seen the request) is retried
//     only for an idempotent method without a body. No response byte has
//     reached the client yet at this point, since the transport returned
//     no response.
func retryable(req *http.Request, err error, tb *trackedBody) bool {
	if req.Context().Err() != nil {
		return false
	}
	if isDialError(err) {
		return tb == nil || !tb.read.Load()
	}
	return tb == nil && idempotent(req.Method)
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

func untried(eps, tried []*endpoint) []*endpoint {
	out := make([]*endpoint, 0, len(eps)-len(tried))
next:
	for _, e := range eps {
		for _, t := range tried {
			if e == t {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

// trackedBody hands the client's request body to one attempt and records
// whether the attempt read any of it. Close does nothing: the server closes
// the client's body when the handler returns, and a retry reuses it.
//
// Once length bytes (the Content-Length) have been read, a read that finds
// the body closed reports io.EOF: the transport reads once more past the
// declared length to check for EOF, possibly after the handler has finished
// and the server has closed the fully read body; reporting that as an
// error would make the transport close a healthy replica connection.
type trackedBody struct {
	rc   io.ReadCloser
	read atomic.Bool
	// failed is set when reading the client's body failed (the client went
	// away mid-body): the attempt's failure is then not the replica's.
	failed atomic.Bool
	length int64 // Content-Length, or -1
	n      int64 // bytes read; only the transport's writer touches it
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	n, err := b.rc.Read(p)
	b.n += int64(n)
	if errors.Is(err, http.ErrBodyReadAfterClose) && b.length >= 0 && b.n == b.length {
		err = io.EOF
	}
	if err != nil && err != io.EOF {
		b.failed.Store(true)
	}
	return n, err
}

func (b *trackedBody) Close() error { return nil }

// proxyError answers a request that no replica served: 502 with what was
// tried, or nothing useful when the client already left.
// errRouteEmptied means the service's table lost its last replica while the
// request was being routed.
var errRouteEmptied = errors.New("no ready replica left in the route table")

func (s *service) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	st, _ := r.Context().Value(ctxKey{}).(*proxyState)
	if errors.Is(err, errRouteEmptied) {
		if st != nil {
			st.code = http.StatusServiceUnavailable
		}
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, s.route.Load().unavailable)
		return
	}
	if r.Context().Err() != nil {
		// The client went away; 499 as nginx counts it.
		if st != nil {
			st.code = 499
		}
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	var tried []string
	if st != nil {
		st.code = http.StatusBadGateway
		for _, e := range st.tried {
			tried = append(tried, fmt.Sprintf("replica %d (v%d) at %s", e.ep.ReplicaID, e.ep.Version, e.ep.Address))
		}
	}
	s.node.log.Warn("proxy failed", "service", s.name, "method", r.Method, "path", r.URL.Path, "tried", len(tried), "error", err)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Retry-After", "1")
	w.WriteHeader(http.StatusBadGateway)
	_, _ = fmt.Fprintf(w, "service %q: no replica answered (tried %s): %v; try again shortly\n",
		s.name, strings.Join(tried, ", "), err)
}
