// Package bus is the NATS connection every baton daemon uses: nats.go with
// the recovery a daemon needs to survive what the server does to it.
//
// nats.go reconnects after a network error, but it gives up for good when
// the server answers with an error it does not know how to recover from
// (a subject over the server's control line limit, an invalid subject, a
// parser error): the connection is closed and never comes back, and a
// daemon holding it is cut off from the control plane while it looks
// healthy. A Conn replaces such a closed connection with a new one and
// subscribes its handlers again, and it refuses to publish what would
// provoke that answer in the first place (invalid or overlong subjects,
// oversize payloads).
package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// MaxSubjectLen bounds a subject baton publishes on. NATS servers close a
// connection whose protocol line exceeds their max_control_line (4 KiB by
// default); baton's own subjects are far shorter.
const MaxSubjectLen = 512

// ErrInvalidSubject is returned by Publish and Request for a subject that
// is empty, too long, has an empty token or contains whitespace or
// wildcards. Nothing is sent.
var ErrInvalidSubject = errors.New("invalid NATS subject")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("bus: connection closed")

// Config configures a Conn.
type Config struct {
	// URL is the server, or a comma-separated list of servers. Required.
	URL string
	// Name is the connection's name as the server shows it.
	Name string
	// Logger receives connection events. Default slog.Default().
	Logger *slog.Logger
	// ReconnectWait is the pause between reconnection attempts. Default
	// 250ms.
	ReconnectWait time.Duration
	// NoReconnectBuffer makes publishing while disconnected fail instead of
	// queueing (an agent's heartbeat is stale by the time it would go out).
	NoReconnectBuffer bool
	// InProcess, if set, is a server in this process to connect to without
	// a socket (the coordinator's embedded NATS server); URL is then only
	// shown in logs.
	InProcess nats.InProcessConnProvider
	// TLS, if set, speaks TLS to the server with this config (its
	// certificate authenticates the connection). Default nil: plain text.
	TLS *tls.Config
	// Token, if set, authenticates the connection by token (the
	// coordinator's in-process connection to its own secured server).
	Token string
	// InboxPrefix, if set, starts every reply subject of this connection's
	// requests instead of "_INBOX": a secured server lets an agent or LB
	// subscribe to its own replies only (protocol.InboxPrefix).
	InboxPrefix string
	// OnConnect, if set, is called after every connection and
	// reconnection, including each replacement connection, from a
	// goroutine of its own. Daemons use it to resynchronise.
	OnConnect func()
}

// Conn is a NATS connection that survives being closed by the server. Its
// methods are safe for concurrent use.
type Conn struct {
	cfg Config
	log *slog.Logger

	// mu guards nc, subs and closed. Handlers never run under it.
	mu     sync.Mutex
	nc     *nats.Conn
	subs   map[*Subscription]struct{}
	closed bool

	replaced atomic.Int64
	// lastErr is the last connection error, for Health.
	lastErr atomic.Value // string
	// downSince is when the connection was last lost (zero time when up).
	downSince atomic.Value // time.Time
	wg        sync.WaitGroup
}

// Subscription is a handler for a subject that a Conn keeps subscribed
// across replacement connections.
type Subscription struct {
	subject string
	queue   string // "" for a plain subscription
	handler nats.MsgHandler
	c       *Conn
	sub     *nats.Subscription // guarded by c.mu
}

// Connect returns a Conn and starts connecting; it does not wait for the
// server (a daemon may start before NATS does), retrying forever.
func Connect(cfg Config) (*Conn, error) {
	if cfg.URL == "" {
		return nil, errors.New("bus: no NATS URL")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReconnectWait <= 0 {
		cfg.ReconnectWait = 250 * time.Millisecond
	}
	c := &Conn{cfg: cfg, log: cfg.Logger, subs: map[*Subscription]struct{}{}}
	c.downSince.Store(time.Now())
	c.lastErr.Store("not connected yet")
	nc, err := c.dial()
	if err != nil {
		return nil, err
	}
	c.nc = nc
	return c, nil
}

func (c *Conn) dial() (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(c.cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(c.cfg.ReconnectWait),
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(nc *nats.Conn) { c.up(nc, "nats connected") }),
		nats.ReconnectHandler(func(nc *nats.Conn) { c.up(nc, "nats reconnected") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			c.downSince.Store(time.Now())
			if err != nil {
				c.lastErr.Store(err.Error())
				c.log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ClosedHandler(c.onClosed),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			c.log.Warn("nats error", "subject", subject, "error", err)
		}),
	}
	if c.cfg.NoReconnectBuffer {
		opts = append(opts, nats.ReconnectBufSize(-1))
	}
	if c.cfg.InProcess != nil {
		opts = append(opts, nats.InProcessServer(c.cfg.InProcess))
	}
	if c.cfg.TLS != nil {
		opts = append(opts, nats.Secure(c.cfg.TLS))
	}
	if c.cfg.Token != "" {
		opts = append(opts, nats.Token(c.cfg.Token))
	}
	if c.cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.cfg.InboxPrefix))
	}
	nc, err := nats.Connect(c.cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", c.cfg.URL, err)
	}
	return nc, nil
}

func (c *Conn) up(nc *nats.Conn, msg string) {
	c.downSince.Store(time.Time{})
	c.log.Info(msg, "url", nc.ConnectedUrl())
	if c.cfg.OnConnect != nil {
		go c.cfg.OnConnect()
	}
}

// onClosed runs when a connection is closed for good. Unless Close did it,
// the server closed it with an error nats.go does not recover from: open
// a replacement and subscribe every handler again.
func (c *Conn) onClosed(old *nats.Conn) {
	c.mu.Lock()
	if c.closed || c.nc != old {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1) // under mu: Close waits for it only after setting closed
	c.mu.Unlock()
	reason := "closed"
	if err := old.LastError(); err != nil {
		reason = err.Error()
	}
	c.lastErr.Store(reason)
	c.downSince.Store(time.Now())
	c.log.Error("nats connection closed by the server; opening a new one", "error", reason)
	go func() {
		defer c.wg.Done()
		c.replace(old)
	}()
}

func (c *Conn) replace(old *nats.Conn) {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			time.Sleep(c.cfg.ReconnectWait)
		}
		nc, err := c.dial()
		if err != nil {
			c.log.Warn("nats: new connection failed; retrying", "error", err)
			continue
		}
		c.mu.Lock()
		if c.closed || c.nc != old {
			c.mu.Unlock()
			nc.Close()
			return
		}
		c.nc = nc
		for s := range c.subs {
			sub, err := nc.QueueSubscribe(s.subject, s.queue, s.handler)
			if err != nil {
				c.log.Error("nats: subscribe again failed", "subject", s.subject, "error", err)
				continue
			}
			s.sub = sub
		}
		c.mu.Unlock()
		c.replaced.Add(1)
		return
	}
}

// conn returns the current connection, or ErrClosed.
func (c *Conn) conn() (*nats.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	return c.nc, nil
}

// ValidSubject reports whether subject may be published on: 1 to
// MaxSubjectLen bytes, non-empty tokens between dots, no whitespace, no
// wildcards ('*', '>').
func ValidSubject(subject string) error {
	if subject == "" || len(subject) > MaxSubjectLen {
		return fmt.Errorf("%w: %d bytes (1 to %d)", ErrInvalidSubject, len(subject), MaxSubjectLen)
	}
	for _, tok := range strings.Split(subject, ".") {
		if tok == "" {
			return fmt.Errorf("%w %q: empty token", ErrInvalidSubject, subject)
		}
		if strings.ContainsAny(tok, " \t\r\n\f\v*>\x00") {
			return fmt.Errorf("%w %q: whitespace or wildcard", ErrInvalidSubject, subject)
		}
	}
	return nil
}

// validSubscription is ValidSubject allowing the wildcard tokens * and >.
func validSubscription(subject string) error {
	tokens := strings.Split(subject, ".")
	for i, tok := range tokens {
		if tok == "*" || (tok == ">" && i == len(tokens)-1) {
			tokens[i] = "x"
		}
	}
	return ValidSubject(strings.Join(tokens, "."))
}

// Publish sends data on subject. An invalid subject or a payload over the
// server's limit is refused here, before it could make the server close
// the connection.
func (c *Conn) Publish(subject string, data []byte) error {
	if err := ValidSubject(subject); err != nil {
		return err
	}
	nc, err := c.conn()
	if err != nil {
		return err
	}
	if mp := nc.MaxPayload(); mp > 0 && int64(len(data)) > mp {
		return fmt.Errorf("publish on %s: %d bytes is over the server's max payload of %d: %w", subject, len(data), mp, nats.ErrMaxPayload)
	}
	return nc.Publish(subject, data)
}

// Request sends data on subject and waits for one reply until ctx ends.
func (c *Conn) Request(ctx context.Context, subject string, data []byte) (*nats.Msg, error) {
	if err := ValidSubject(subject); err != nil {
		return nil, err
	}
	nc, err := c.conn()
	if err != nil {
		return nil, err
	}
	return nc.RequestWithContext(ctx, subject, data)
}

// Subscribe calls h for every message on subject (wildcards allowed as
// whole tokens), on this connection and every replacement, until the
// Subscription is unsubscribed. Messages of one subscription are handled
// one at a time.
func (c *Conn) Subscribe(subject string, h nats.MsgHandler) (*Subscription, error) {
	return c.QueueSubscribe(subject, "", h)
}

// QueueSubscribe is Subscribe in a queue group: each message goes to one
// member of the group (queue "" is a plain subscription).
func (c *Conn) QueueSubscribe(subject, queue string, h nats.MsgHandler) (*Subscription, error) {
	if err := validSubscription(subject); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	sub, err := c.nc.QueueSubscribe(subject, queue, h)
	if err != nil {
		return nil, err
	}
	s := &Subscription{subject: subject, queue: queue, handler: h, c: c, sub: sub}
	c.subs[s] = struct{}{}
	return s, nil
}

// Unsubscribe stops the handler. It is idempotent.
func (s *Subscription) Unsubscribe() error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.subs[s]; !ok {
		return nil
	}
	delete(c.subs, s)
	if s.sub != nil {
		return s.sub.Unsubscribe()
	}
	return nil
}

// Flush waits until the server has processed everything sent so far.
func (c *Conn) Flush(timeout time.Duration) error {
	nc, err := c.conn()
	if err != nil {
		return err
	}
	return nc.FlushTimeout(timeout)
}

// IsConnected reports whether the connection is up now.
func (c *Conn) IsConnected() bool {
	nc, err := c.conn()
	return err == nil && nc.IsConnected()
}

// Health is nil while connected, else an error saying since when the
// connection is down and why.
func (c *Conn) Health() error {
	nc, err := c.conn()
	if err != nil {
		return err
	}
	if nc.IsConnected() {
		return nil
	}
	since, _ := c.downSince.Load().(time.Time)
	why, _ := c.lastErr.Load().(string)
	if since.IsZero() {
		return fmt.Errorf("nats %s: %s", strings.ToLower(nc.Status().String()), why)
	}
	return fmt.Errorf("nats %s for %s: %s", strings.ToLower(nc.Status().String()), time.Since(since).Round(100*time.Millisecond), why)
}

// ConnectedURL is the server connected to, or "" while disconnected.
func (c *Conn) ConnectedURL() string {
	nc, err := c.conn()
	if err != nil {
		return ""
	}
	return nc.ConnectedUrl()
}

// MaxPayload is the server's payload limit (0 while unknown).
func (c *Conn) MaxPayload() int64 {
	nc, err := c.conn()
	if err != nil {
		return 0
	}
	return nc.MaxPayload()
}

// Replacements counts connections that were closed by the server and
// replaced.
func (c *Conn) Replacements() int64 { return c.replaced.Load() }

// Close closes the connection for good (no replacement) and waits for a
// replacement in progress to give up.
func (c *Conn) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	nc := c.nc
	c.mu.Unlock()
	nc.Close()
	c.wg.Wait()
}
