// Package lbnode is baton's stateless load balancer node (`baton lb`).
//
// A Node learns route tables from the control plane over NATS, listens on
// each service's port and proxies every request to a READY replica of the
// service's active version(s). Tables arrive pushed on
// protocol.SubjectRoutesAll and pulled with a sync request
// (protocol.SubjectRoutesSync) at start, on every reconnect and every
// SyncInterval; a table is applied only when its epoch is newer than the one
// held for its service, and replaces the service's routing state with one
// atomic pointer store. With the control plane down the node keeps serving
// the last tables it has. After each change, and with every periodic sync,
// the node acknowledges the epochs it serves (protocol.LBAck) and publishes
// request statistics (Stats). Every message is bounded and validated before
// it is used; an invalid one is dropped and counted (messages.go).
//
// Each node also watches its own attempts on every replica and ejects, for
// a while, a replica that keeps failing to connect, breaking connections or
// missing the service's response timeout, without waiting for the control
// plane (passive health, outlier.go).
//
// The node never imports the coordinator, the agent, Raft or NVML.
package lbnode

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/baton-dev/baton/internal/bus"
	"github.com/baton-dev/baton/internal/epochguard"
	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// Node is one LB. Create it with New, then call Run once. Its methods are
// safe for concurrent use.
type Node struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	// epochs rejects a pushed table whose epoch jumps implausibly far
	// ahead of the cluster's Raft index.
	epochs    *epochguard.Guard
	gatherer  prometheus.Gatherer
	transport *http.Transport
	adminLn   net.Listener
	started   atomic.Bool
	syncNow   chan struct{}
	ackNow    chan struct{}
	// syncFailing is true while sync requests go unanswered; used only by
	// Run's goroutine.
	syncFailing bool
	// bus is the NATS connection, set by Run (read by /healthz).
	bus atomic.Pointer[bus.Conn]
	// pool is the gossip pool, set by Run when gossip is on (/healthz).
	pool atomic.Pointer[membership.Pool]

	// mu guards services, deleted, closed and the fields of each service
	// marked "guarded by Node.mu". Requests never take it.
	mu       sync.Mutex
	services map[string]*service
	deleted  map[string]uint64 // service -> epoch of the table that deleted it
	// draining holds backends of deleted services with requests in flight.
	draining map[string]*backend
	closed   bool

	// ackMu serializes building and publishing acks, so that an older ack
	// is never published after a newer one. Lock order: ackMu, then mu.
	ackMu sync.Mutex

	// returns ends ejections (outlier.go). Its mutex is a leaf, taken by a
	// request only when it ejects a replica.
	returns *returnTimers

	// wg counts the service listeners' Serve goroutines and their
	// shutdowns; Run waits for it before returning.
	wg sync.WaitGroup
}

// New checks cfg, fills its defaults, registers the metrics and binds the
// admin listener (so AdminAddr is known at once). It connects to nothing
// else: Run does. Call Run to serve and eventually release the admin port.
func New(cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("lb config: %w", err)
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("register lb metrics: %w", err)
	}
	gatherer, ok := cfg.Registry.(prometheus.Gatherer)
	if !ok {
		return nil, errors.New("lb config: Registry must also be a prometheus.Gatherer (a *prometheus.Registry is) so /metrics can serve it")
	}
	ln, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("lb admin listener on %s: %w (is another baton lb running? set another admin address)", cfg.AdminAddr, err)
	}
	n := &Node{
		cfg:       cfg,
		log:       cfg.Logger.With("lb_id", cfg.ID),
		metrics:   m,
		gatherer:  gatherer,
		transport: newTransport(cfg.DialTimeout),
		adminLn:   ln,
		syncNow:   make(chan struct{}, 1),
		ackNow:    make(chan struct{}, 1),
		services:  make(map[string]*service),
		deleted:   make(map[string]uint64),
		draining:  make(map[string]*backend),
		returns:   newReturnTimers(),
	}
	n.epochs = &epochguard.Guard{Max: protocol.MaxEpochAhead, Ask: n.askClusterIndex}
	return n, nil
}

// askClusterIndex asks the leader for the cluster's Raft index
// (protocol.SubjectClusterIndex).
func (n *Node) askClusterIndex(ctx context.Context) (uint64, error) {
	nc := n.bus.Load()
	if nc == nil {
		return 0, errors.New("not connected to NATS yet")
	}
	return protocol.AskClusterIndex(ctx, nc.Request)
}

// ID is the node's id as used in acks and stats.
func (n *Node) ID() string { return n.cfg.ID }

// AdminAddr is the address /metrics, /healthz and /v1/routes are served on
// (the bound one, so a ":0" port is resolved).
func (n *Node) AdminAddr() string { return n.adminLn.Addr().String() }

// Table returns the route table the node currently serves for service, or
// nil if it serves none (never seen, or deleted). The result is shared: do
// not modify it.
func (n *Node) Table(service string) *protocol.RouteTable {
	n.mu.Lock()
	s := n.services[service]
	n.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.route.Load().table
}

// ServiceAddr returns the address the service's port is listening on, or ""
// when it is not listening (unknown service, or its port could not be bound).
func (n *Node) ServiceAddr(service string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := n.services[service]; s != nil && s.lis != nil {
		return s.lis.ln.Addr().String()
	}
	return ""
}

// Run connects to NATS, serves the admin endpoints and every service port,
// and keeps the routes in sync until ctx is done. It then closes every
// listener, lets requests in flight finish (up to ShutdownTimeout) and
// returns nil. NATS being unreachable is not an error: the node keeps
// retrying and serving the tables it has. Run may be called once.
func (n *Node) Run(ctx context.Context) error {
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("lbnode: Run called twice")
	}
	admin := &http.Server{
		Handler:           n.adminHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	adminErr := make(chan error, 1)
	go func() { adminErr <- admin.Serve(n.adminLn) }()
	defer func() {
		_ = admin.Close()
		<-adminErr
	}()

	natsURL := n.cfg.NATSURL
	if n.cfg.GossipAddr != "" {
		pool, err := membership.New(membership.Config{
			Meta:      membership.Meta{Role: membership.RoleLB, ID: n.cfg.ID, API: n.advertisedAdmin()},
			BindAddr:  n.cfg.GossipAddr,
			Join:      n.cfg.Join,
			Logger:    n.log,
			SecretKey: n.cfg.GossipKey,
		})
		if err != nil {
			n.shutdown()
			return fmt.Errorf("lb gossip: %w", err)
		}
		n.pool.Store(pool)
		defer func() {
			if err := pool.Leave(1500 * time.Millisecond); err != nil {
				n.log.Debug("gossip leave", "error", err)
			}
			if err := pool.Shutdown(); err != nil {
				n.log.Debug("gossip shutdown", "error", err)
			}
		}()
		if natsURL == "" {
			if natsURL, err = pool.WaitForNATS(ctx, n.log); err != nil {
				n.shutdown()
				return nil // ctx ended before a coordinator was known
			}
			n.log.Info("coordinators found over gossip", "nats_url", natsURL)
		}
	}

	var natsTLS *tls.Config
	if n.cfg.TLS.Enabled() {
		var err error
		if natsTLS, err = tlsutil.ClientConfig(n.cfg.TLS, tlsutil.CoordinatorServerName); err != nil {
			n.shutdown()
			return fmt.Errorf("lb nats: %w", err)
		}
	}
	nc, err := bus.Connect(bus.Config{
		URL:           natsURL,
		Name:          "baton-lb " + n.cfg.ID,
		Logger:        n.log,
		TLS:           natsTLS,
		InboxPrefix:   protocol.InboxPrefix(tlsutil.RoleLB, n.cfg.ID),
		ReconnectWait: 500 * time.Millisecond,
		// On every (re)connection, and on a replacement connection after
		// the server closed one: pull every table again.
		OnConnect: n.triggerSync,
	})
	if err != nil {
		n.shutdown()
		return err
	}
	n.bus.Store(nc)
	if _, err := nc.Subscribe(protocol.SubjectRoutesAll, func(m *nats.Msg) { n.onTable(nc, m) }); err != nil {
		nc.Close()
		n.shutdown()
		return fmt.Errorf("subscribe to %s: %w", protocol.SubjectRoutesAll, err)
	}
	n.log.Info("lb started", "nats_url", natsURL, "bind_host", n.cfg.BindHost, "admin_addr", n.AdminAddr())

	ticker := time.NewTicker(n.cfg.SyncInterval)
	defer ticker.Stop()
	n.triggerSync()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-adminErr:
			runErr = fmt.Errorf("lb admin server: %w", err)
			adminErr <- err // for the deferred wait
			break loop
		case <-n.syncNow:
			n.sync(ctx, nc)
		case <-n.ackNow:
			n.publishAck(nc)
		case <-ticker.C:
			n.sync(ctx, nc)
			n.publishStats(nc)
		}
	}
	nc.Close()
	n.shutdown()
	n.log.Info("lb stopped")
	return runErr
}

// advertisedAdmin is the admin address others can reach: the bound one,
// with BindHost for an unspecified IP.
func (n *Node) advertisedAdmin() string {
	addr := n.adminLn.Addr().(*net.TCPAddr)
	if addr.IP.IsUnspecified() && n.cfg.BindHost != "" {
		if ip := net.ParseIP(n.cfg.BindHost); ip == nil || !ip.IsUnspecified() {
			return net.JoinHostPort(n.cfg.BindHost, strconv.Itoa(addr.Port))
		}
	}
	return addr.String()
}

// triggerSync asks Run's loop for a sync soon; it never blocks.
func (n *Node) triggerSync() {
	select {
	case n.syncNow <- struct{}{}:
	default:
	}
}

// triggerAck asks Run's loop to send an ack soon (a retired replica just
// finished its last request); it never blocks.
func (n *Node) triggerAck() {
	select {
	case n.ackNow <- struct{}{}:
	default:
	}
}

// shutdown closes every service port, waits for requests in flight to
// finish (each listener bounded by ShutdownTimeout) and cancels the pending
// ends of ejections.
func (n *Node) shutdown() {
	n.mu.Lock()
	n.closed = true
	for _, s := range n.services {
		if s.lis != nil {
			s.lis.stop(&n.wg, n.cfg.ShutdownTimeout)
			s.lis = nil
		}
	}
	n.mu.Unlock()
	n.wg.Wait()
	n.returns.stop()
	n.transport.CloseIdleConnections()
}

// onTable handles a table pushed on baton.routes.<service>.
func (n *Node) onTable(nc *bus.Conn, m *nats.Msg) {
	if m.Subject == protocol.SubjectRoutesSync {
		return // another LB's sync request
	}
	if n.receiveTable(m.Subject, m.Data) {
		n.publishAck(nc)
	}
}

// receiveTable checks a table pushed on subject (see decodeTable) and
// applies it; it reports whether anything changed. An invalid table is
// dropped, logged and counted.
func (n *Node) receiveTable(subject string, data []byte) bool {
	t, err := decodeTable(subject, data)
	if err == nil {
		if gerr := n.epochs.Check(context.Background(), t.Epoch); gerr != nil {
			err = fmt.Errorf("%w: service %s: %v", protocol.ErrInvalidMessage, t.Service, gerr)
			// The tables the leader holds come with the next sync.
			n.triggerSync()
		}
	}
	if err != nil {
		n.invalidMessage(subjectLabelRoutes, subject, err)
		return false
	}
	return n.applyTables([]protocol.RouteTable{*t})
}

// sync pulls every table from the leader, applies the newer ones and acks.
// Without an answer the node keeps its tables and tries again later.
func (n *Node) sync(ctx context.Context, nc *bus.Conn) {
	rctx, cancel := context.WithTimeout(ctx, n.cfg.SyncTimeout)
	defer cancel()
	msg, err := nc.Request(rctx, protocol.SubjectRoutesSync, nil)
	switch {
	case err == nil:
		reply, err := decodeSync(msg.Data)
		if err != nil {
			n.metrics.syncFailures.Inc()
			n.invalidMessage(subjectLabelSync, protocol.SubjectRoutesSync, err)
			break
		}
		if n.syncFailing {
			n.log.Info("route sync answered again", "tables", len(reply.tables)+len(reply.invalid))
			n.syncFailing = false
		}
		n.applySync(reply)
	case ctx.Err() != nil:
		return
	default:
		n.metrics.syncFailures.Inc()
		// Warn once per outage, not on every interval.
		if n.syncFailing {
			n.log.Debug("route sync failed; keeping current tables", "error", err)
		} else {
			n.log.Warn("route sync failed; keeping current tables and retrying every sync interval",
				"error", err, "sync_interval", n.cfg.SyncInterval)
		}
		n.syncFailing = true
		n.mu.Lock()
		if !n.closed {
			n.bindMissingLocked()
		}
		n.mu.Unlock()
	}
	n.publishAck(nc)
}

// ackLocked is the epoch held for every service, deleted ones included (so
// the leader learns that a deletion was applied), and the retired replicas
// that still have requests in flight. n.mu must be held.
func (n *Node) ackLocked() protocol.LBAck {
	ack := protocol.LBAck{LBID: n.cfg.ID, Epochs: make(map[string]uint64, len(n.services)+len(n.deleted))}
	for name, epoch := range n.deleted {
		ack.Epochs[name] = epoch
	}
	addDraining := func(addr string, b *backend) bool {
		c := b.inFlight.Load()
		if c > 0 && b.retired.Load() {
			if ack.Draining == nil {
				ack.Draining = map[string]int64{}
			}
			ack.Draining[addr] += c
		}
		return c > 0
	}
	for name, s := range n.services {
		ack.Epochs[name] = s.route.Load().table.Epoch
		for addr, b := range s.backends {
			addDraining(addr, b)
		}
	}
	for addr, b := range n.draining {
		if !addDraining(addr, b) {
			delete(n.draining, addr)
		}
	}
	return ack
}

func (n *Node) publishAck(nc *bus.Conn) {
	n.ackMu.Lock()
	defer n.ackMu.Unlock()
	n.mu.Lock()
	ack := n.ackLocked()
	n.mu.Unlock()
	n.publishJSON(nc, protocol.LBAckSubject(n.cfg.ID), ack)
}

// Stats is what an LB publishes on protocol.LBStatsSubject every
// SyncInterval: its request counts per service, for autoscaling and LB
// liveness.
type Stats struct {
	LBID     string                  `json:"lb_id"`
	Services map[string]ServiceStats `json:"services"`
}

// ServiceStats counts one service's requests at one LB.
type ServiceStats struct {
	// Epoch is the route table epoch served.
	Epoch uint64 `json:"epoch"`
	// RequestsTotal counts requests since the LB started serving the
	// service (a counter: the leader derives rates from successive values).
	RequestsTotal uint64 `json:"requests_total"`
	// InFlight is the number of requests being proxied now.
	InFlight int64 `json:"in_flight"`
}

// Stats returns the node's current request statistics.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := Stats{LBID: n.cfg.ID, Services: make(map[string]ServiceStats, len(n.services))}
	for name, s := range n.services {
		st.Services[name] = ServiceStats{
			Epoch:         s.route.Load().table.Epoch,
			RequestsTotal: s.requests.Load(),
			InFlight:      s.inFlight.Load(),
		}
	}
	return st
}

func (n *Node) publishStats(nc *bus.Conn) {
	n.publishJSON(nc, protocol.LBStatsSubject(n.cfg.ID), n.Stats())
}

func (n *Node) publishJSON(nc *bus.Conn, subject string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		n.log.Error("encode message", "subject", subject, "error", err)
		return
	}
	if err := nc.Publish(subject, data); err != nil {
		n.log.Debug("publish failed", "subject", subject, "error", err)
	}
}

// RoutesDump is the body of GET /v1/routes.
type RoutesDump struct {
	LBID string `json:"lb_id"`
	// Tables are the tables served, sorted by service.
	Tables []protocol.RouteTable `json:"tables"`
	// Listening maps each service to the address its port is bound on; a
	// service missing here could not bind its port (see the logs).
	Listening map[string]string `json:"listening"`
	// Deleted maps deleted services to the epoch that deleted them.
	Deleted map[string]uint64 `json:"deleted,omitempty"`
	// Ejected maps each service to the addresses (host:port, sorted) of the
	// replicas of its table that this LB has ejected now (passive health).
	Ejected map[string][]string `json:"ejected,omitempty"`
}

func (n *Node) dump() RoutesDump {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := RoutesDump{LBID: n.cfg.ID, Tables: []protocol.RouteTable{}, Listening: map[string]string{}}
	for name, s := range n.services {
		r := s.route.Load()
		d.Tables = append(d.Tables, *r.table)
		if s.lis != nil {
			d.Listening[name] = s.lis.ln.Addr().String()
		}
		for _, e := range r.endpoints {
			if e.backend.health.ejected.Load() {
				if d.Ejected == nil {
					d.Ejected = map[string][]string{}
				}
				d.Ejected[name] = append(d.Ejected[name], e.ep.Address)
			}
		}
		slices.Sort(d.Ejected[name])
	}
	if len(n.deleted) > 0 {
		d.Deleted = make(map[string]uint64, len(n.deleted))
		for name, e := range n.deleted {
			d.Deleted[name] = e
		}
	}
	slices.SortFunc(d.Tables, func(a, b protocol.RouteTable) int { return strings.Compare(a.Service, b.Service) })
	return d
}

func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.gatherer, promhttp.HandlerOpts{}))
	// An LB without the control plane still serves its last tables, so
	// /healthz stays 200 (a TCP load balancer in front must not take it
	// out); the second line says how NATS stands.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		line := "nats: not started"
		pool := n.pool.Load()
		if pool != nil && n.cfg.NATSURL == "" {
			line = "nats: waiting for a coordinator over gossip"
		}
		if nc := n.bus.Load(); nc != nil {
			if err := nc.Health(); err != nil {
				line = "nats: " + err.Error() + "; serving the last route tables"
			} else {
				line = "nats: connected to " + nc.ConnectedURL()
			}
		}
		if pool != nil {
			line += "\n" + pool.Health()
		}
		_, _ = w.Write([]byte("ok\n" + line + "\n"))
	})
	mux.HandleFunc("GET /v1/routes", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(n.dump())
	})
	return mux
}
