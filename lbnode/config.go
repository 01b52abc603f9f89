package lbnode

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// Config configures a Node. The zero value of any field means its default;
// DefaultConfig and DevConfig return every field filled in.
type Config struct {
	// ID names this LB in acks and stats. Default: "<hostname>-<pid>", or a
	// random id when the hostname is unknown.
	ID string
	// NATSURL is the control plane's NATS server, or a comma-separated
	// list of servers. Default nats://127.0.0.1:4222, unless Join is set:
	// then empty means the NATS URLs of the alive coordinators learnt over
	// gossip (Run waits for one).
	NATSURL string
	// GossipAddr is host:port where the node joins the gossip pool (TCP
	// and UDP). Default: no gossip unless Join is set, then BindHost:7402.
	GossipAddr string
	// Join lists the gossip addresses (host:port) of any pool members,
	// typically the coordinators; the node joins them in the background,
	// retrying until one answers. Default none (no gossip unless
	// GossipAddr is set).
	Join []string
	// GossipKey encrypts gossip (16, 24 or 32 bytes; the same on every
	// member). Default none.
	GossipKey []byte
	// TLS names the CA and this LB's certificate and key (made by
	// `baton tls cert create --lb --node <ID>`). With a CA set, the LB
	// connects to NATS with TLS, authenticated by that certificate (whose
	// node must be ID). Default none.
	TLS tlsutil.Files
	// BindHost is the host every service port listens on. Default 0.0.0.0
	// (DevConfig: 127.0.0.1). Several LBs on one machine each take their own
	// loopback address (127.0.0.11, 127.0.0.12, ...).
	BindHost string
	// AdminAddr serves /metrics, /healthz and /v1/routes. Default
	// 127.0.0.1:7404; "127.0.0.1:0" picks a free port (see Node.AdminAddr).
	AdminAddr string
	// SyncInterval is how often the node asks for every route table (repair),
	// re-sends its ack and publishes stats. Default 5s.
	SyncInterval time.Duration
	// SyncTimeout bounds one sync request. Default 2s.
	SyncTimeout time.Duration
	// DialTimeout bounds connecting to a replica. Default 2s.
	DialTimeout time.Duration
	// ShutdownTimeout bounds how long Run waits for in-flight requests when
	// it stops, and how long a deleted service's requests may finish.
	// Default 10s.
	ShutdownTimeout time.Duration
	// EjectAfterFailures is how many consecutive failed attempts on a
	// replica make this LB eject it (passive health; see outlier.go). A
	// failure is an attempt that got no HTTP response: a connect error, a
	// connection broken before the response headers, or no headers within
	// the route table's response timeout. Any response, whatever its status,
	// resets the count. Default 3 (DevConfig: 3).
	EjectAfterFailures int
	// EjectBase is how long a replica's first ejection lasts; each further
	// consecutive ejection (no success since the replica returned) doubles
	// it, up to EjectMax. Default 1s (DevConfig: 1s).
	EjectBase time.Duration
	// EjectMax caps one ejection. It must not be shorter than EjectBase.
	// Default 30s (DevConfig: 30s).
	EjectMax time.Duration
	// Logger receives the node's logs. Default slog.Default().
	Logger *slog.Logger
	// Registry receives the node's metrics. Default: a new registry private
	// to the node. /metrics serves Registry when it is also a
	// prometheus.Gatherer (as *prometheus.Registry is).
	Registry prometheus.Registerer
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		ID:              defaultID(),
		NATSURL:         "nats://127.0.0.1:4222",
		BindHost:        "0.0.0.0",
		AdminAddr:       "127.0.0.1:7404",
		SyncInterval:    5 * time.Second,
		SyncTimeout:     2 * time.Second,
		DialTimeout:     2 * time.Second,
		ShutdownTimeout: 10 * time.Second,

		EjectAfterFailures: 3,
		EjectBase:          time.Second,
		EjectMax:           30 * time.Second,
	}
}

// DevConfig returns the defaults for `baton dev` and tests on one machine:
// service ports on 127.0.0.1 and a faster sync. Ejection is as in
// production.
func DevConfig() Config {
	cfg := DefaultConfig()
	cfg.BindHost = "127.0.0.1"
	cfg.SyncInterval = time.Second
	cfg.DialTimeout = time.Second
	cfg.ShutdownTimeout = 5 * time.Second
	return cfg
}

// withDefaults fills zero fields from DefaultConfig and checks the rest.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.ID == "" {
		c.ID = d.ID
	}
	if c.NATSURL == "" && len(c.Join) == 0 {
		c.NATSURL = d.NATSURL
	}
	if c.BindHost == "" {
		c.BindHost = d.BindHost
	}
	if c.GossipAddr == "" && len(c.Join) > 0 {
		c.GossipAddr = membership.DefaultBindAddr(c.BindHost)
	}
	if c.AdminAddr == "" {
		c.AdminAddr = d.AdminAddr
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = d.SyncInterval
	}
	if c.SyncTimeout == 0 {
		c.SyncTimeout = d.SyncTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = d.ShutdownTimeout
	}
	if c.EjectAfterFailures == 0 {
		c.EjectAfterFailures = d.EjectAfterFailures
	}
	if c.EjectBase == 0 {
		c.EjectBase = d.EjectBase
	}
	if c.EjectMax == 0 {
		c.EjectMax = d.EjectMax
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	var errs []error
	if err := protocol.ValidateLBID(c.ID); err != nil {
		errs = append(errs, fmt.Errorf("id: %w", err))
	}
	if c.TLS.Enabled() {
		if c.TLS.Cert == "" || c.TLS.Key == "" {
			errs = append(errs, fmt.Errorf("tls: an LB needs its certificate and key beside the CA (baton tls cert create --lb --node %s)", c.ID))
		} else if err := c.TLS.CheckIdentity(tlsutil.RoleLB, c.ID); err != nil {
			errs = append(errs, fmt.Errorf("tls: %w", err))
		}
	}
	if c.SyncInterval < 0 {
		errs = append(errs, fmt.Errorf("sync interval %s is negative (use a positive duration such as 5s)", c.SyncInterval))
	}
	if c.SyncTimeout < 0 {
		errs = append(errs, fmt.Errorf("sync timeout %s is negative (use a positive duration such as 2s)", c.SyncTimeout))
	}
	if c.DialTimeout < 0 {
		errs = append(errs, fmt.Errorf("dial timeout %s is negative (use a positive duration such as 2s)", c.DialTimeout))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout %s is negative", c.ShutdownTimeout))
	}
	if c.EjectAfterFailures < 0 {
		errs = append(errs, fmt.Errorf("eject after failures %d is negative (use a count such as 3, or leave it 0 for the default)", c.EjectAfterFailures))
	}
	if c.EjectBase < 0 {
		errs = append(errs, fmt.Errorf("eject base %s is negative (use a positive duration such as 1s)", c.EjectBase))
	}
	if c.EjectMax < 0 {
		errs = append(errs, fmt.Errorf("eject max %s is negative (use a positive duration such as 30s)", c.EjectMax))
	}
	if c.EjectBase > 0 && c.EjectMax > 0 && c.EjectMax < c.EjectBase {
		errs = append(errs, fmt.Errorf("eject max %s is shorter than eject base %s (set eject max to at least eject base)", c.EjectMax, c.EjectBase))
	}
	return c, errors.Join(errs...)
}

func defaultID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		return "lb-" + hex.EncodeToString(b[:])
	}
	// Dots would split the id into several NATS subject tokens.
	host = strings.ReplaceAll(host, ".", "-")
	if len(host) > 100 {
		host = host[:100]
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}
