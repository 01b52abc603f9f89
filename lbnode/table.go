package lbnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/protocol"
)

// route is one immutable routing state of a service: built from a route
// table when it is applied, then published with a single atomic store.
// Requests load it once and use that snapshot to the end, so a request in
// flight during a swap finishes on the replica it started on.
type route struct {
	table     *protocol.RouteTable
	endpoints []*endpoint
	selector  selector
	// responseTimeout bounds the wait for a replica's response headers
	// (the table's ResponseTimeoutSeconds); 0: no limit.
	responseTimeout time.Duration
	// ejected is the service's count of ejected backends (see pick); nil
	// counts as 0.
	ejected *atomic.Int32
	// unavailable is the 503 body sent when endpoints is empty.
	unavailable string
}

// endpoint is a replica as one route table names it.
type endpoint struct {
	ep      protocol.Endpoint
	backend *backend
	// version is the metrics label; versionHdr and replicaHdr are the
	// response header values, shared read-only by every response.
	version    string
	versionHdr []string
	replicaHdr []string
}

// backend is the per-address state that outlives table swaps: the number of
// requests in flight to the replica at addr, read by least_load, and its
// passive health (outlier.go). A backend belongs to one service.
type backend struct {
	addr     string
	inFlight atomic.Int64
	health   health
	// retired is set while the current table no longer names addr; the
	// leader waits for its last request before stopping the replica.
	retired atomic.Bool
	// onIdle is called when a retired backend's last request ends.
	onIdle func()
}

// done ends one request to the backend.
func (b *backend) done() {
	if b.inFlight.Add(-1) == 0 && b.retired.Load() {
		b.onIdle()
	}
}

// service is one routed service: its current route (read lock-free by every
// request), its proxy and its listener.
type service struct {
	name  string
	node  *Node
	route atomic.Pointer[route]
	proxy *httputil.ReverseProxy

	// Request statistics, published on LBStatsSubject.
	requests atomic.Uint64
	inFlight atomic.Int64

	// ejectedCount is the number of the service's backends ejected now
	// (outlier.go), read by every request to skip the ejection checks when
	// it is 0. Like baton_lb_ejected_replicas it still counts a backend
	// that a newer table dropped until that backend's ejection ends.
	ejectedCount atomic.Int32

	// Metric children, resolved once.
	inFlightGauge  prometheus.Gauge
	duration       prometheus.Observer
	ejectedGauge   prometheus.Gauge
	ejectionsTotal prometheus.Counter
	failures       [numFailureKinds]prometheus.Counter // by failureKind

	// Guarded by Node.mu.
	backends map[string]*backend
	selector selector
	lis      *listener
	bindErr  error
}

// listener is a service port being served.
type listener struct {
	srv      *http.Server
	ln       net.Listener
	stopping atomic.Bool
}

// stop closes the port now and lets requests in flight finish within
// timeout, in a goroutine counted by wg.
func (l *listener) stop(wg *sync.WaitGroup, timeout time.Duration) {
	l.stopping.Store(true)
	_ = l.ln.Close()
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := l.srv.Shutdown(ctx); err != nil {
			_ = l.srv.Close()
		}
	})
}

// heldEpochLocked is the epoch held for name: its table's, or the epoch of
// the table that deleted it, or 0. n.mu must be held.
func (n *Node) heldEpochLocked(name string) uint64 {
	if s := n.services[name]; s != nil {
		return s.route.Load().table.Epoch
	}
	return n.deleted[name]
}

// applyTables applies every table newer than the one held for its service
// and reports whether anything changed. It also retries binding the ports
// of services that could not be bound before.
func (n *Node) applyTables(tables []protocol.RouteTable) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	changed := false
	for i := range tables {
		t := &tables[i]
		if t.Service == "" {
			n.log.Warn("route table without service name ignored", "epoch", t.Epoch)
			continue
		}
		held := n.heldEpochLocked(t.Service)
		if t.Epoch <= held {
			if t.Epoch < held {
				n.log.Debug("stale route table ignored", "service", t.Service, "epoch", t.Epoch, "held_epoch", held)
			}
			continue
		}
		changed = true
		n.metrics.routeUpdates.Inc()
		if t.Deleted {
			n.deleteServiceLocked(t)
			continue
		}
		n.updateServiceLocked(t)
	}
	n.bindMissingLocked()
	return changed
}

// pruneAbsent treats services held here but missing from a complete sync
// reply as deleted, when that is safe: only a service whose epoch is older
// than maxEpoch, the newest epoch of the reply's valid tables (so the
// reply's state is newer than what we hold). A service created after the
// reply was computed has a higher epoch and is kept. present names every
// service the reply lists, the ones whose table was invalid included: a
// table we could not use is no evidence that the service is gone. An empty
// reply prunes nothing.
func (n *Node) pruneAbsent(present map[string]bool, maxEpoch uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	changed := false
	for name, s := range n.services {
		if present[name] {
			continue
		}
		epoch := s.route.Load().table.Epoch
		if epoch >= maxEpoch {
			continue
		}
		n.log.Info("service absent from route sync; removing", "service", name, "epoch", epoch, "sync_max_epoch", maxEpoch)
		n.deleteServiceLocked(&protocol.RouteTable{Service: name, Epoch: epoch, Deleted: true})
		changed = true
	}
	return changed
}

// updateServiceLocked publishes t as the service's route, creating the
// service and its listener the first time. n.mu must be held.
func (n *Node) updateServiceLocked(t *protocol.RouteTable) {
	s := n.services[t.Service]
	if s == nil {
		s = n.newService(t.Service)
		n.services[t.Service] = s
		delete(n.deleted, t.Service)
	}
	if s.selector == nil || policyName(s.selector) != policyOrDefault(t.Policy) {
		s.selector = newSelector(t.Policy)
	}
	r := s.buildRouteLocked(t)
	prev := s.route.Swap(r)
	// Only after the swap: a request that loaded the old route either is
	// counted on its backend by now or will see the retired flag.
	s.retireUnnamedLocked(r)
	n.metrics.routeEpoch.WithLabelValues(t.Service).Set(float64(t.Epoch))

	if prev != nil && prev.table.Port != t.Port && s.lis != nil {
		n.log.Warn("service port changed; moving listener", "service", t.Service, "old_port", prev.table.Port, "port", t.Port)
		s.lis.stop(&n.wg, n.cfg.ShutdownTimeout)
		s.lis = nil
	}
	n.bindLocked(s)
	n.log.Info("route table applied", "service", t.Service, "epoch", t.Epoch, "active_versions", t.ActiveVersions,
		"endpoints", len(r.endpoints), "policy", policyName(s.selector), "port", t.Port,
		"response_timeout", r.responseTimeout)
}

func policyOrDefault(p string) string {
	if p == protocol.PolicyRoundRobin {
		return p
	}
	return protocol.PolicyLeastLoad
}

// buildRouteLocked turns a table into a route, reusing the backend state of
// addresses the service already knows and forgetting idle addresses the
// table no longer names. n.mu must be held.
func (s *service) buildRouteLocked(t *protocol.RouteTable) *route {
	r := &route{
		table:           t,
		endpoints:       make([]*endpoint, 0, len(t.Endpoints)),
		selector:        s.selector,
		responseTimeout: time.Duration(t.ResponseTimeoutSeconds) * time.Second, // at most MaxInt32 s (Validate): no overflow
		ejected:         &s.ejectedCount,
		unavailable: fmt.Sprintf("no ready replica for service %q (active versions %v); try again shortly\n",
			t.Service, t.ActiveVersions),
	}
	seen := make(map[string]bool, len(t.Endpoints))
	for _, e := range t.Endpoints {
		if e.Address == "" {
			s.node.log.Warn("endpoint without address ignored", "service", t.Service, "replica_id", e.ReplicaID)
			continue
		}
		if seen[e.Address] {
			// Two entries for one address would double its share and let a
			// retry go back to the replica that just failed.
			s.node.log.Warn("endpoint listed twice in route table; keeping the first", "service", t.Service,
				"epoch", t.Epoch, "replica_id", e.ReplicaID, "replica_addr", e.Address)
			continue
		}
		seen[e.Address] = true
		b := s.backends[e.Address]
		if b == nil {
			b = &backend{addr: e.Address, onIdle: s.node.triggerAck}
			s.backends[e.Address] = b
		}
		b.retired.Store(false)
		v := strconv.Itoa(e.Version)
		r.endpoints = append(r.endpoints, &endpoint{
			ep:         e,
			backend:    b,
			version:    v,
			versionHdr: []string{v},
			replicaHdr: []string{strconv.Itoa(e.ReplicaID)},
		})
	}
	return r
}

// retireUnnamedLocked marks the backends r does not name as retired and
// forgets the idle ones. A retired backend with requests in flight keeps
// its counter (reported as draining in acks) until a later table finds it
// idle; those requests still decrement it. n.mu must be held.
func (s *service) retireUnnamedLocked(r *route) {
	named := make(map[string]bool, len(r.endpoints))
	for _, e := range r.endpoints {
		named[e.ep.Address] = true
	}
	for addr, b := range s.backends {
		if named[addr] {
			continue
		}
		b.retired.Store(true)
		if b.inFlight.Load() == 0 {
			delete(s.backends, addr)
		}
	}
}

// deleteServiceLocked stops serving t.Service and frees its port, keeping
// t.Epoch as a tombstone so that an older table cannot bring it back.
// n.mu must be held.
func (n *Node) deleteServiceLocked(t *protocol.RouteTable) {
	n.deleted[t.Service] = t.Epoch
	s := n.services[t.Service]
	if s == nil {
		n.log.Info("route table deletes unknown service", "service", t.Service, "epoch", t.Epoch)
		return
	}
	delete(n.services, t.Service)
	// Requests still running on its replicas keep being reported as
	// draining, so the leader does not stop those replicas under them.
	for addr, b := range s.backends {
		b.retired.Store(true)
		if b.inFlight.Load() > 0 {
			n.draining[addr] = b
		}
	}
	if s.lis != nil {
		s.lis.stop(&n.wg, n.cfg.ShutdownTimeout)
		s.lis = nil
	}
	n.metrics.routeEpoch.DeleteLabelValues(t.Service)
	// Returns still pending decrement the service's own (now unexported)
	// gauge child; a service created again under this name starts at 0.
	n.metrics.ejected.DeleteLabelValues(t.Service)
	n.log.Info("service deleted; port freed", "service", t.Service, "epoch", t.Epoch, "port", s.route.Load().table.Port)
}

// bindMissingLocked retries the ports that could not be bound before.
// n.mu must be held.
func (n *Node) bindMissingLocked() {
	for _, s := range n.services {
		if s.lis == nil {
			n.bindLocked(s)
		}
	}
}

// bindLocked opens and serves the service's port if it is not open yet. A
// failure is logged (once per distinct error) and retried on the next table
// or sync. n.mu must be held.
func (n *Node) bindLocked(s *service) {
	if s.lis != nil {
		return
	}
	port := s.route.Load().table.Port
	addr := net.JoinHostPort(n.cfg.BindHost, strconv.Itoa(port))
	if port <= 0 || port > 65535 {
		err := fmt.Errorf("route table port %d is not a valid TCP port", port)
		if s.bindErr == nil || s.bindErr.Error() != err.Error() {
			n.log.Error("cannot serve service", "service", s.name, "error", err)
		}
		s.bindErr = err
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if s.bindErr == nil || s.bindErr.Error() != err.Error() {
			n.log.Error("cannot listen on service port; will retry on next table or sync", "service", s.name, "addr", addr, "error", err)
		}
		s.bindErr = err
		return
	}
	s.bindErr = nil
	l := &listener{
		ln: ln,
		srv: &http.Server{
			Handler:           s,
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
		},
	}
	s.lis = l
	n.log.Info("listening for service", "service", s.name, "addr", ln.Addr().String())
	n.wg.Go(func() {
		err := l.srv.Serve(ln)
		if err == nil || errors.Is(err, http.ErrServerClosed) || l.stopping.Load() {
			return
		}
		n.log.Error("service listener failed; will listen again on next table or sync", "service", s.name, "addr", addr, "error", err)
		_ = ln.Close()
		n.mu.Lock()
		if s.lis == l {
			s.lis = nil
		}
		n.mu.Unlock()
	})
}
