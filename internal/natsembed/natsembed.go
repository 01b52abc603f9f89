// Package natsembed starts an in-process NATS server, as the coordinator does
// by default and as tests do.
package natsembed

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says where the embedded server listens.
type Config struct {
	// Host to bind. Default 127.0.0.1.
	Host string
	// Port to bind; -1 picks a free port. Default 4222 (set by callers).
	Port int
	// StoreDir is unused unless JetStream is ever enabled.
	StoreDir string
}

// Server is a running embedded NATS server.
type Server struct {
	ns *server.Server
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
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats server on %s:%d did not start within 10s (is the port in use?)", host, cfg.Port)
	}
	return &Server{ns: ns}, nil
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
