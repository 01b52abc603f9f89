// Package natsembed starts an in-process NATS server, as the coordinator does
// by default and as tests do.
package natsembed

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/baton-dev/baton/internal/tlsutil"
)

// Config says where the embedded server listens.
type Config struct {
	// Host to bind. Default 127.0.0.1.
	Host string
	// Port to bind; -1 picks a free port. Default 4222 (set by callers).
	Port int
	// StoreDir is unused unless JetStream is ever enabled.
	StoreDir string
	// ClusterPort, when not 0, accepts routes from the other servers of a
	// NATS cluster on Host (-1 picks a free port). Default 0: no cluster.
	ClusterPort int
	// ClusterName names the cluster; servers only route to servers of the
	// same name. Default "baton".
	ClusterName string
	// Security, if set, secures the server: TLS on the client port with a
	// certificate of the cluster's CA required of every client, each
	// client given the permissions of its certificate's role (see
	// Permissions), and mutual TLS between coordinators on the cluster
	// port. Default nil: open, plain text (dev).
	Security *Security
}

// Security is how a secured server authenticates.
type Security struct {
	// TLS is the embedding coordinator's CA, certificate and key (all
	// required).
	TLS tlsutil.Files
	// InProcessToken authenticates the embedding process's own in-process
	// connection (nats.Token): it has no certificate. Keep it secret and
	// random; required.
	InProcessToken string
	// OnRefuse, if set, is called for every connection refused, with the
	// remote address and why. It must not block.
	OnRefuse func(remote, reason string)
}

// tlsHandshakeTimeout bounds a TLS handshake, in seconds (nats-server's
// unit).
const tlsHandshakeTimeout = 2

// Server is a running embedded NATS server.
type Server struct {
	ns *server.Server

	// mu guards opts and routes (SetRoutes).
	mu     sync.Mutex
	opts   server.Options
	routes []string
}

// Start runs a NATS server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	opts := &server.Options{
		Host:           host,
		Port:           cfg.Port,
		NoLog:          true,
		NoSigs:         true,
		MaxPayload:     8 << 20,
		MaxControlLine: 4096,
	}
	if cfg.ClusterPort != 0 {
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: host, Port: cfg.ClusterPort}
		if opts.Cluster.Name == "" {
			opts.Cluster.Name = "baton"
		}
	}
	if sec := cfg.Security; sec != nil {
		if sec.InProcessToken == "" {
			return nil, errors.New("nats server: a secured server needs an in-process token")
		}
		clientTLS, err := tlsutil.ServerConfig(sec.TLS, true)
		if err != nil {
			return nil, fmt.Errorf("nats server: %w", err)
		}
		opts.TLS, opts.TLSVerify, opts.TLSConfig, opts.TLSTimeout = true, true, clientTLS, tlsHandshakeTimeout
		opts.CustomClientAuthentication = &roleAuth{token: []byte(sec.InProcessToken), onRefuse: sec.OnRefuse}
		if cfg.ClusterPort != 0 {
			routeTLS, err := tlsutil.MutualConfig(sec.TLS, tlsutil.CoordinatorServerName, tlsutil.RoleCoordinator)
			if err != nil {
				return nil, fmt.Errorf("nats server routes: %w", err)
			}
			opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = routeTLS, tlsHandshakeTimeout
		}
	}
	saved := *opts
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats server on %s:%d did not start within 10s (is the port in use?)", host, cfg.Port)
	}
	return &Server{ns: ns, opts: saved}, nil
}

// ClusterURL is the nats-route:// URL other servers of the cluster route
// to; "" without a cluster port.
func (s *Server) ClusterURL() string {
	addr := s.ns.ClusterAddr()
	if addr == nil {
		return ""
	}
	return "nats-route://" + net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port))
}

// NumRoutes is the number of routes to other servers now connected.
func (s *Server) NumRoutes() int { return s.ns.NumRoutes() }

// SetRoutes makes the server route to exactly these nats-route:// URLs
// (its own left out), reloading its options when they changed. The
// server keeps retrying a route whose peer is down; peers also learn of
// each other through the routes they have. Safe for concurrent use.
func (s *Server) SetRoutes(urls []string) error {
	own := s.ClusterURL()
	if own == "" {
		return fmt.Errorf("nats server has no cluster port")
	}
	var want []string
	for _, u := range urls {
		if u != "" && u != own {
			want = append(want, u)
		}
	}
	slices.Sort(want)
	want = slices.Compact(want)
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Equal(want, s.routes) {
		return nil
	}
	// A bad URL (from a member's gossip) is left out; the others still
	// get their routes.
	parsed := make([]*url.URL, 0, len(want))
	var bad []error
	for _, u := range want {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "nats-route" && pu.Scheme != "nats") || pu.Port() == "" {
			bad = append(bad, fmt.Errorf("route %q is not nats-route://host:port", u))
			continue
		}
		parsed = append(parsed, pu)
	}
	opts := s.opts
	opts.Routes = parsed
	// The cluster port was fixed at start (it may have been -1).
	opts.Cluster.Port = s.ns.ClusterAddr().Port
	opts.Port = s.ns.Addr().(*net.TCPAddr).Port
	if err := s.ns.ReloadOptions(&opts); err != nil {
		return fmt.Errorf("nats routes: %w", err)
	}
	s.routes = want
	return errors.Join(bad...)
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string {
	addr := s.ns.Addr().(*net.TCPAddr)
	return "nats://" + net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port))
}

// InProcessConn returns a connection to the server that bypasses TCP (for
// nats.InProcessServer): the process that embeds the server talks to it
// without a socket.
func (s *Server) InProcessConn() (net.Conn, error) { return s.ns.InProcessConn() }

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
