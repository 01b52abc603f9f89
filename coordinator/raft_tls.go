package coordinator

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/baton-dev/baton/internal/tlsutil"
)

// raftServerName is the name a coordinator dials its peers' Raft ports
// with: only a coordinator's certificate (`baton tls cert create
// --server`) holds it, whatever address is dialed.
const raftServerName = tlsutil.CoordinatorServerName

// raftHandshakeTimeout bounds a TLS handshake on the Raft port when the
// transport gives no timeout of its own.
const raftHandshakeTimeout = 10 * time.Second

// tlsStreamLayer is Raft's stream layer with mutual TLS: it accepts on a
// TCP listener and dials its peers with TLS, each side presenting its
// certificate, and only a peer whose verified certificate carries the
// coordinator role gets through. Anyone else (a certificate from another
// CA, an agent's or LB's certificate from the cluster's own CA, a plain
// TCP client) is dropped after at most the handshake timeout.
//
// Accept never handshakes: raft's NetworkTransport calls it in a loop and
// serves each connection in a goroutine of its own, so the handshake runs
// on the connection's first Read or Write (in that goroutine), with a
// deadline, and a peer that never handshakes wedges nothing.
type tlsStreamLayer struct {
	listener  net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	timeout   time.Duration
	logger    hclog.Logger
	// lastWarn is when (unix nanoseconds) a refused peer was last logged
	// at warning level: one a minute, the rest at debug level.
	lastWarn atomic.Int64
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

// newTLSStreamLayer listens on bindAddr for Raft with mutual TLS from the
// files f. advertise is the address peers reach it at (it must name a
// host, not 0.0.0.0); timeout bounds every handshake (0 for
// raftHandshakeTimeout).
func newTLSStreamLayer(bindAddr string, advertise net.Addr, f tlsutil.Files, timeout time.Duration, logger hclog.Logger) (*tlsStreamLayer, error) {
	serverCfg, err := tlsutil.ServerConfig(f, true)
	if err != nil {
		return nil, fmt.Errorf("raft tls: %w", err)
	}
	clientCfg, err := tlsutil.ClientConfig(f, raftServerName)
	if err != nil {
		return nil, fmt.Errorf("raft tls: %w", err)
	}
	if len(clientCfg.Certificates) == 0 {
		return nil, errors.New("raft tls: a coordinator's certificate and key are needed (baton tls cert create --server)")
	}
	if tcp, ok := advertise.(*net.TCPAddr); !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		return nil, fmt.Errorf("raft tls: advertise address %v is not one peers can reach", advertise)
	}
	if timeout <= 0 {
		timeout = raftHandshakeTimeout
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	list, err := net.Listen("tcp", bindAddr)
	if err != nil {
		return nil, err
	}
	return &tlsStreamLayer{listener: list, advertise: advertise, server: serverCfg, client: clientCfg,
		timeout: timeout, logger: logger}, nil
}

// Accept waits for the next TCP connection and returns it as the server
// side of a TLS connection whose handshake (and peer check) runs on its
// first Read or Write.
func (s *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := s.listener.Accept()
	if err != nil {
		return nil, err
	}
	return &raftTLSConn{Conn: tls.Server(c, s.server), layer: s, side: "from"}, nil
}

// Close closes the listener.
func (s *tlsStreamLayer) Close() error { return s.listener.Close() }

// Addr is the advertised address.
func (s *tlsStreamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to a peer's Raft port with TLS and completes the
// handshake within timeout: the peer must hold a coordinator's
// certificate from the cluster's CA.
func (s *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = s.timeout
	}
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Deadline: deadline}
	c, err := d.Dial("tcp", string(address))
	if err != nil {
		return nil, err
	}
	conn := &raftTLSConn{Conn: tls.Client(c, s.client), layer: s, side: "to"}
	if err := conn.handshake(deadline); err != nil {
		return nil, err
	}
	return conn, nil
}

// refused logs a peer that was dropped: at warning level at most once a
// minute (anyone who can reach the port can make these), else at debug.
func (s *tlsStreamLayer) refused(side string, remote net.Addr, err error) {
	now := time.Now().UnixNano()
	last := s.lastWarn.Load()
	if now-last >= int64(time.Minute) && s.lastWarn.CompareAndSwap(last, now) {
		s.logger.Warn("raft: connection refused (Raft takes mutual TLS with a coordinator's certificate from the cluster's CA; more are logged at debug level for a minute)",
			"direction", side, "peer", remote.String(), "error", err)
		return
	}
	s.logger.Debug("raft: connection refused", "direction", side, "peer", remote.String(), "error", err)
}

// raftTLSConn is a TLS connection of the Raft port that is usable only
// once its handshake succeeded and the peer's certificate carries the
// coordinator role; otherwise it is closed and every Read and Write fails.
type raftTLSConn struct {
	*tls.Conn
	layer *tlsStreamLayer
	side  string // "from" (accepted) or "to" (dialed), for the log

	once sync.Once
	err  error
}

// handshake runs the TLS handshake once, by deadline, and checks the
// peer's role; a failure closes the connection.
func (c *raftTLSConn) handshake(deadline time.Time) error {
	c.once.Do(func() {
		c.err = c.verify(deadline)
		if c.err != nil {
			c.layer.refused(c.side, c.RemoteAddr(), c.err)
			_ = c.Conn.Close()
		}
	})
	return c.err
}

func (c *raftTLSConn) verify(deadline time.Time) error {
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	if err := c.Handshake(); err != nil {
		return fmt.Errorf("raft tls handshake %s %s: %w", c.side, c.RemoteAddr(), err)
	}
	state := c.ConnectionState()
	role, node, ok := tlsutil.PeerRole(&state)
	if !ok {
		return fmt.Errorf("raft tls: peer %s has no baton role in its certificate", c.RemoteAddr())
	}
	if role != tlsutil.RoleCoordinator {
		return fmt.Errorf("raft tls: peer %s holds a %s certificate (node %q), not a coordinator's", c.RemoteAddr(), role, node)
	}
	// Raft sets its own deadlines from here on.
	return c.SetDeadline(time.Time{})
}

// Read handshakes first (on an accepted connection), then reads.
func (c *raftTLSConn) Read(b []byte) (int, error) {
	if err := c.handshake(time.Now().Add(c.layer.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

// Write handshakes first (on an accepted connection), then writes.
func (c *raftTLSConn) Write(b []byte) (int, error) {
	if err := c.handshake(time.Now().Add(c.layer.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
