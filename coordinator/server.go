package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/bus"
	"github.com/baton-dev/baton/internal/logutil"
	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/internal/natsembed"
	"github.com/baton-dev/baton/internal/tlsutil"
)

// Server is one coordinator: a Raft node with its FSM, the HTTP API, a
// NATS connection (and an embedded NATS server unless Config.NATSURL is
// set) and, while it leads, the controller.
type Server struct {
	cfg     Config
	log     *slog.Logger
	fsm     *FSM
	raft    *raftNode
	natsSrv *natsembed.Server // nil with an external NATS
	nc      *bus.Conn
	metrics *metrics
	api     *http.Server
	apiLn   net.Listener
	leaderC chan bool

	// peers carries requests to other coordinators' APIs (forwarding,
	// the bootstrap check) with peerScheme, "http", or "https" with
	// Config.TLS (see newPeerClient).
	peers      *http.Client
	peerScheme string

	// kick wakes the controller early; buffered 1, sends never block.
	kick chan struct{}

	// badMessages limits the logging of invalid NATS messages.
	badMessages *logutil.Limiter

	// pool is the gossip pool (nil for a lone coordinator without a
	// gossip address).
	pool *membership.Pool
	// bootstrapped is set once this node has Raft state or has found
	// that a cluster exists (--bootstrap-expect waits until then).
	bootstrapped atomic.Bool

	// bundles stores this coordinator's copies of the bundles and moves
	// them (bundles.go).
	bundles *bundleService

	// ctrlMu guards ctrl, the running controller (nil when not leader).
	ctrlMu sync.Mutex
	ctrl   *controller
}

// checkConfig refuses settings that cannot work together.
func checkConfig(cfg Config) error {
	if cfg.NodeID == "" || len(cfg.NodeID) > 128 || strings.ContainsAny(cfg.NodeID, "/ \t\r\n") {
		return fmt.Errorf("coordinator: node id %q: use 1-128 characters without '/' or spaces (e.g. c1)", cfg.NodeID)
	}
	if cfg.BootstrapExpect < 0 {
		return fmt.Errorf("coordinator: --bootstrap-expect %d: use the number of coordinators (3 or 5), or leave it out for one", cfg.BootstrapExpect)
	}
	if cfg.BootstrapExpect == 1 && len(cfg.Join) > 0 {
		return errors.New("coordinator: --bootstrap-expect 1 with --join would bootstrap a cluster of one beside the one it joins: use --bootstrap-expect N (the same N) on every coordinator, or --join alone to be added to a running cluster")
	}
	if !cfg.TLS.Enabled() && (cfg.TLS.Cert != "" || cfg.TLS.Key != "") {
		return errors.New("coordinator: a TLS certificate without a CA: give the CA, certificate and key together (--tls-ca, --tls-cert, --tls-key)")
	}
	for _, j := range cfg.Join {
		if strings.TrimSpace(j) == "" {
			return errors.New("coordinator: --join has an empty address; use host:port of any member's gossip address, comma-separated")
		}
	}
	return nil
}

// New opens Raft, starts NATS (embedded unless cfg.NATSURL) and binds the
// API listener. Run starts serving.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "coordinator", "node_id", cfg.NodeID),
		fsm:     NewFSM(),
		metrics: newMetrics(cfg.Registry),
		leaderC: make(chan bool, 16),
		kick:    make(chan struct{}, 1),

		badMessages: logutil.NewLimiter(10 * time.Second),
	}
	var apiTLS *tls.Config
	var err error
	if cfg.TLS.Enabled() {
		// Client certificates are verified when given but not required:
		// the CLI may have none, and ACL tokens authorize.
		if apiTLS, err = tlsutil.ServerConfig(cfg.TLS, false); err != nil {
			return nil, fmt.Errorf("coordinator: API: %w", err)
		}
	}
	if s.peers, s.peerScheme, err = newPeerClient(cfg); err != nil {
		return nil, err
	}
	if s.bundles, err = newBundleService(s); err != nil {
		return nil, err
	}
	s.fsm.onApply = func(index uint64, t CommandType, rejected bool) {
		s.metrics.appliedIndex.Set(float64(index))
		result := "ok"
		if rejected {
			result = "rejected"
		}
		s.metrics.fsmApplied.WithLabelValues(t.String(), result).Inc()
		if t == CmdBundleAdd || t == CmdBundleDelete {
			s.bundles.kickRepair()
		}
		s.Kick()
	}
	natsURL := cfg.NATSURL
	var inProcess nats.InProcessConnProvider
	var natsToken string
	var natsTLS *tls.Config
	if natsURL == "" {
		ncfg := natsembed.Config{Host: cfg.NATSHost, Port: cfg.NATSPort}
		if cfg.Clustered() {
			ncfg.ClusterPort = cfg.NATSClusterPort
		}
		if cfg.TLS.Enabled() {
			natsToken = rand.Text()
			refusedLog := logutil.NewLimiter(time.Minute)
			ncfg.Security = &natsembed.Security{
				TLS:            cfg.TLS,
				InProcessToken: natsToken,
				OnRefuse: func(remote, reason string) {
					s.metrics.natsRefused.Inc()
					if ok, held := refusedLog.Allow("refused"); ok {
						s.log.Warn("nats connection refused", "remote", remote, "reason", reason, "refused_since_last_log", held)
					}
				},
			}
		}
		ns, err := natsembed.Start(ncfg)
		if err != nil {
			return nil, err
		}
		s.natsSrv = ns
		natsURL = ns.ClientURL()
		// Every agent's heartbeat reaches the leader through this
		// connection: in-process, without a socket, it costs no syscalls.
		inProcess = ns
	}
	if cfg.NATSURL != "" && cfg.TLS.Enabled() {
		// An external server authenticates this coordinator by its
		// certificate, as the operator configured it.
		if natsTLS, err = tlsutil.ClientConfig(cfg.TLS, ""); err != nil {
			return nil, fmt.Errorf("coordinator: nats: %w", err)
		}
	}
	nc, err := bus.Connect(bus.Config{
		URL:       natsURL,
		Name:      "baton-coordinator-" + cfg.NodeID,
		Logger:    s.log,
		InProcess: inProcess,
		Token:     natsToken,
		TLS:       natsTLS,
	})
	if err != nil {
		s.closeNATS()
		return nil, err
	}
	s.nc = nc
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		s.closeNATS()
		return nil, fmt.Errorf("listen for the API on %s: %w", cfg.HTTPAddr, err)
	}
	s.apiLn = ln
	rn, err := openRaft(cfg, s.fsm, s.leaderC)
	if err != nil {
		ln.Close()
		s.closeNATS()
		return nil, err
	}
	s.raft = rn
	s.bootstrapped.Store(rn.existing)
	if err := s.startGossip(); err != nil {
		_ = rn.Close()
		ln.Close()
		s.closeNATS()
		return nil, err
	}
	s.api = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second, TLSConfig: apiTLS}
	return s, nil
}

// transferLeadership hands leadership to another voter before a planned
// shutdown, so the cluster does not wait an election timeout.
func (s *Server) transferLeadership() {
	if !s.IsLeader() || soleVoter(s.raft.raft, s.raft.id) {
		return
	}
	f := s.raft.raft.LeadershipTransfer()
	if s.pool != nil {
		// Only to a voter that gossip shows alive: raft would pick the
		// most up-to-date one, which may be down.
		f = nil
		if c := s.raft.raft.GetConfiguration(); c.Error() == nil {
			for _, srv := range c.Configuration().Servers {
				if srv.Suffrage == raft.Voter && string(srv.ID) != s.cfg.NodeID && s.memberAlive(membership.RoleCoordinator, string(srv.ID)) {
					f = s.raft.raft.LeadershipTransferToServer(srv.ID, srv.Address)
					break
				}
			}
		}
		if f == nil {
			return
		}
	}
	if err := f.Error(); err != nil {
		s.log.Warn("leadership transfer before shutdown", "error", err)
		return
	}
	s.log.Info("leadership transferred before shutdown")
}

// closeAll releases what New opened, for a Run that fails to start.
func (s *Server) closeAll() {
	s.apiLn.Close()
	if s.pool != nil {
		_ = s.pool.Shutdown()
	}
	_ = s.raft.Close()
	s.closeNATS()
}

func (s *Server) closeNATS() {
	if s.nc != nil {
		s.nc.Close()
	}
	if s.natsSrv != nil {
		s.natsSrv.Shutdown()
	}
}

// HTTPAddr is the API's bound address.
func (s *Server) HTTPAddr() string { return s.apiLn.Addr().String() }

// NATSURL is the URL of the NATS server in use: the embedded server's, or
// the one connected to.
func (s *Server) NATSURL() string {
	if s.natsSrv != nil {
		return s.natsSrv.ClientURL()
	}
	if u := s.nc.ConnectedURL(); u != "" {
		return u
	}
	return s.cfg.NATSURL
}

// FSM gives read access to the replicated state (tests, views).
func (s *Server) FSM() *FSM { return s.fsm }

// IsLeader reports whether this node leads right now.
func (s *Server) IsLeader() bool { return s.raft.raft.State() == raft.Leader }

// Kick wakes the controller for an early reconcile. Safe for concurrent use.
func (s *Server) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run serves the API and runs the controller while this node leads, until
// ctx ends; then it shuts everything down.
func (s *Server) Run(ctx context.Context) error {
	// Everything below stops with ctx, also when the API server fails.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	apiErr := make(chan error, 1)
	if s.cfg.DebugAddr != "" {
		dbg, err := startDebugServer(s.cfg.DebugAddr, s.log)
		if err != nil {
			s.closeAll()
			return err
		}
		defer dbg.Close()
		s.log.Info("pprof listening", "addr", dbg.Addr)
	}
	s.bundles.start(ctx)
	wg.Add(6)
	go func() {
		defer wg.Done()
		s.serveSpecs(ctx)
	}()
	go func() {
		defer wg.Done()
		s.bundles.run(ctx)
	}()
	go func() {
		defer wg.Done()
		s.watchCluster(ctx)
	}()
	go func() {
		defer wg.Done()
		s.compactLog(ctx)
	}()
	go func() {
		defer wg.Done()
		var err error
		if s.cfg.TLS.Enabled() {
			// The certificate is in TLSConfig. A plain HTTP request
			// gets 400 "Client sent an HTTP request to an HTTPS server".
			err = s.api.ServeTLS(s.apiLn, "", "")
		} else {
			err = s.api.Serve(s.apiLn)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			apiErr <- err
		}
	}()
	go func() {
		defer wg.Done()
		s.monitorLeadership(ctx)
	}()
	s.log.Info("coordinator started", "api", s.HTTPAddr(), "api_tls", s.cfg.TLS.Enabled(), "raft", s.cfg.RaftAddr, "nats", s.NATSURL())

	var err error
	select {
	case <-ctx.Done():
	case err = <-apiErr:
		s.log.Error("api server failed", "error", err)
	}
	cancel()
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	_ = s.api.Shutdown(shutdownCtx)
	wg.Wait()
	s.bundles.stop()
	s.transferLeadership()
	if s.pool != nil {
		// Others see this node "left" at once rather than "failed" after
		// their probes time out; it stays a Raft voter.
		_ = s.pool.Leave(time.Second)
		_ = s.pool.Shutdown()
	}
	if cerr := s.raft.Close(); cerr != nil {
		s.log.Warn("raft shutdown", "error", cerr)
	}
	s.closeNATS()
	s.log.Info("coordinator stopped")
	return err
}
