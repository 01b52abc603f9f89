package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/bus"
	"github.com/baton-dev/baton/internal/logutil"
	"github.com/baton-dev/baton/internal/natsembed"
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

	// kick wakes the controller early; buffered 1, sends never block.
	kick chan struct{}

	// badMessages limits the logging of invalid NATS messages.
	badMessages *logutil.Limiter

	// ctrlMu guards ctrl, the running controller (nil when not leader).
	ctrlMu sync.Mutex
	ctrl   *controller
}

// New opens Raft, starts NATS (embedded unless cfg.NATSURL) and binds the
// API listener. Run starts serving.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "coordinator", "node_id", cfg.NodeID),
		fsm:     NewFSM(),
		metrics: newMetrics(cfg.Registry),
		leaderC: make(chan bool, 16),
		kick:    make(chan struct{}, 1),

		badMessages: logutil.NewLimiter(10 * time.Second),
	}
	s.fsm.onApply = func(index uint64) {
		s.metrics.appliedIndex.Set(float64(index))
		s.Kick()
	}
	natsURL := cfg.NATSURL
	var inProcess nats.InProcessConnProvider
	if natsURL == "" {
		ns, err := natsembed.Start(natsembed.Config{Host: cfg.NATSHost, Port: cfg.NATSPort})
		if err != nil {
			return nil, err
		}
		s.natsSrv = ns
		natsURL = ns.ClientURL()
		// Every agent's heartbeat reaches the leader through this
		// connection: in-process, without a socket, it costs no syscalls.
		inProcess = ns
	}
	nc, err := bus.Connect(bus.Config{
		URL:       natsURL,
		Name:      "baton-coordinator-" + cfg.NodeID,
		Logger:    s.log,
		InProcess: inProcess,
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
	s.api = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
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
	var wg sync.WaitGroup
	apiErr := make(chan error, 1)
	if s.cfg.DebugAddr != "" {
		dbg, err := startDebugServer(s.cfg.DebugAddr, s.log)
		if err != nil {
			return err
		}
		defer dbg.Close()
		s.log.Info("pprof listening", "addr", dbg.Addr)
	}
	wg.Add(4)
	go func() {
		defer wg.Done()
		s.serveSpecs(ctx)
	}()
	go func() {
		defer wg.Done()
		s.compactLog(ctx)
	}()
	go func() {
		defer wg.Done()
		if err := s.api.Serve(s.apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			apiErr <- err
		}
	}()
	go func() {
		defer wg.Done()
		s.monitorLeadership(ctx)
	}()
	s.log.Info("coordinator started", "api", s.HTTPAddr(), "raft", s.cfg.RaftAddr, "nats", s.NATSURL())

	var err error
	select {
	case <-ctx.Done():
	case err = <-apiErr:
		s.log.Error("api server failed", "error", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.api.Shutdown(shutdownCtx)
	wg.Wait()
	if cerr := s.raft.Close(); cerr != nil {
		s.log.Warn("raft shutdown", "error", cerr)
	}
	s.closeNATS()
	s.log.Info("coordinator stopped")
	return err
}
