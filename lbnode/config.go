package lbnode

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Node. The zero value of any field means its default;
// DefaultConfig and DevConfig return every field filled in.
type Config struct {
	// ID names this LB in acks and stats. Default: "<hostname>-<pid>", or a
	// random id when the hostname is unknown.
	ID string
	// NATSURL is the control plane's NATS server. Default nats://127.0.0.1:4222.
	NATSURL string
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
	}
}

// DevConfig returns the defaults for `baton dev` and tests on one machine:
// service ports on 127.0.0.1 and a faster sync.
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
	if c.NATSURL == "" {
		c.NATSURL = d.NATSURL
	}
	if c.BindHost == "" {
		c.BindHost = d.BindHost
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
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	var errs []error
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
	return c, errors.Join(errs...)
}

func defaultID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		return "lb-" + hex.EncodeToString(b[:])
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}
