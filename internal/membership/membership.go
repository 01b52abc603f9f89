// Package membership is the gossip pool every baton daemon joins: a small
// wrapper over hashicorp/memberlist (SWIM with Lifeguard) that tells each
// node who else is there, what role it plays and where to reach it.
//
// Coordinators find each other (Raft peers, NATS routes) and agents and
// LBs find the coordinators (NATS URLs) through it, so a daemon needs only
// the gossip address of any one member to join, as with Consul's and
// Nomad's retry_join. Each node gossips a small Meta (JSON, under
// memberlist.MetaMaxSize); a node that stops answering is declared failed
// within a few seconds (see Config's timings), one that leaves gracefully
// is shown as left at once.
//
// Members are named "<role>/<id>". A node that restarts with the same role
// and id, at the same or at another address, takes over its old entry.
package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/baton-dev/baton/internal/logutil"
)

// Role is what a member does in a baton cluster.
type Role string

// The roles of baton's daemons.
const (
	RoleCoordinator Role = "coordinator"
	RoleAgent       Role = "agent"
	RoleLB          Role = "lb"
)

func (r Role) valid() bool {
	return r == RoleCoordinator || r == RoleAgent || r == RoleLB
}

// DefaultPort is the gossip port (TCP and UDP) when none is given.
const DefaultPort = 7402

// DefaultBindAddr is host:DefaultPort.
func DefaultBindAddr(host string) string {
	return net.JoinHostPort(host, strconv.Itoa(DefaultPort))
}

// Meta is what a node gossips about itself. It travels as JSON in
// memberlist's node meta and must stay under memberlist.MetaMaxSize (512
// bytes): New and UpdateMeta refuse a larger one.
type Meta struct {
	Role Role   `json:"role"`
	ID   string `json:"id"`
	// API is the node's HTTP address: a coordinator's API, an agent's HTTP
	// server, an LB's admin address.
	API string `json:"api,omitempty"`
	// Raft is a coordinator's Raft address.
	Raft string `json:"raft,omitempty"`
	// NATS is a coordinator's embedded NATS server's client URL,
	// nats://host:port.
	NATS string `json:"nats,omitempty"`
	// NATSCluster is a coordinator's NATS route URL,
	// nats-route://host:port (or nats://host:port).
	NATSCluster string `json:"nats_cluster,omitempty"`
	// Expect is a coordinator's --bootstrap-expect.
	Expect int `json:"expect,omitempty"`
}

// Status is a member's state as the local node sees it.
type Status string

// Member states. A suspect member still counts as alive (see Pool.Alive):
// it is being checked and may yet answer. memberlist v0.7.0 does not tell
// its users which members it suspects, so a Pool reports them as alive
// and never reports StatusSuspect; the value is kept for a future
// memberlist that does.
const (
	StatusAlive   Status = "alive"
	StatusSuspect Status = "suspect"
	StatusFailed  Status = "failed"
	StatusLeft    Status = "left"
)

// Member is one node of the pool.
type Member struct {
	// Name is "<role>/<id>", memberlist's node name.
	Name string
	// Addr is the member's gossip address, host:port.
	Addr string
	// Meta is what the member gossips about itself. A member whose meta
	// could not be decoded, or names an unknown role, has Role "".
	Meta   Meta
	Status Status
	// Since is when Status last changed, as this node saw it.
	Since time.Time
}

// alive reports whether m counts as alive (alive or suspect).
func (m Member) alive() bool { return m.Status == StatusAlive || m.Status == StatusSuspect }

// Config configures a Pool. Zero timings take the defaults given in their
// comments, tuned so that a machine that dies is declared failed in about
// 2-3 s on a LAN.
type Config struct {
	// Meta is what this node gossips. Role and ID are required.
	Meta Meta
	// BindAddr is host:port for gossip, TCP and UDP on the same port. The
	// host is also the address advertised to the others (an IP, or a name
	// resolved once); an empty or unspecified host (0.0.0.0) binds every
	// interface and advertises a private IP memberlist picks. Port 0 picks
	// a free one (tests). Default 0.0.0.0:7402.
	BindAddr string
	// Join lists host:port (host an IP or a name) of any members. New joins
	// them in the background, retrying every RetryJoinInterval until one
	// answers, then stops (gossip does the rest). This node's own address
	// in the list is skipped. Default none: this node starts a pool that
	// others join.
	Join []string
	// Logger receives the pool's logs and memberlist's (its [ERR] and
	// [WARN] lines at Error and Warn, rate-limited; the rest at Debug).
	// Default slog.Default().
	Logger *slog.Logger
	// ProbeInterval is how often each member probes a random other.
	// Default 500ms (memberlist's LAN default is 1s).
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for an ack before asking
	// others to probe indirectly. Default 250ms.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspect member has to refute before
	// it is declared failed: SuspicionMult × log10(members) × ProbeInterval
	// at least, shortened by Lifeguard as others confirm the suspicion.
	// Default 4 (memberlist's).
	SuspicionMult int
	// GossipInterval is how often gossip messages go out. Default 100ms.
	GossipInterval time.Duration
	// RetryJoinInterval is the pause between join attempts. Default 1s.
	RetryJoinInterval time.Duration
	// SecretKey, if set, encrypts and authenticates gossip (AES-GCM with
	// a 16, 24 or 32 byte key, memberlist's keyring); every member must use
	// the same key. A node with another key or none cannot join, and what
	// it sends is dropped. Default none: gossip is plain.
	SecretKey []byte
	// RememberFor is how long failed and left members stay listed by
	// Members (memberlist itself forgets them after 30s). A member that
	// comes back replaces its entry. Default 24h.
	RememberFor time.Duration
}

// Defaults of Config's timings.
const (
	DefaultProbeInterval     = 500 * time.Millisecond
	DefaultProbeTimeout      = 250 * time.Millisecond
	DefaultSuspicionMult     = 4
	DefaultGossipInterval    = 100 * time.Millisecond
	DefaultRetryJoinInterval = time.Second
	DefaultRememberFor       = 24 * time.Hour
)

// deadNodeReclaimTime is how long after a member was declared failed a
// node with its name may rejoin from another address.
const deadNodeReclaimTime = time.Second

// rejoinWindow is how long after another node claimed this node's name
// (this node restarted at a new address before the old one was declared
// failed) the pool keeps re-joining, until the others accept the new
// address.
const rejoinWindow = 15 * time.Second

// tcpTimeout bounds memberlist's TCP exchanges (join, push/pull), and so
// how long Leave and Shutdown may wait for a join attempt in flight.
const tcpTimeout = 5 * time.Second

// ErrShutdown is returned by the methods of a Pool that was shut down.
var ErrShutdown = errors.New("membership: pool shut down")

// Pool is this node's view of the gossip pool. Its methods are safe for
// concurrent use.
type Pool struct {
	cfg  Config
	name string
	log  *slog.Logger
	ml   *memberlist.Memberlist

	// local holds this node's meta, encoded, for memberlist's NodeMeta.
	local atomic.Pointer[localMeta]
	// joined is set once a Join address answered.
	joined atomic.Bool
	// joinAttempts counts join attempts that failed (tests).
	joinAttempts atomic.Int64
	// rejoin wakes the join loop after a name conflict about this node.
	rejoin chan struct{}

	// life guards shut: Leave and Shutdown hold it for writing, calls
	// into memberlist that must not follow its Shutdown (UpdateNode) for
	// reading. Lock order: life, then memberlist's locks, then mu.
	life sync.RWMutex
	shut bool

	// mu guards members, subs and intents. memberlist calls the event
	// delegate with its own lock held, so never call into memberlist
	// while holding mu.
	mu      sync.Mutex
	members map[string]*Member
	subs    map[chan struct{}]struct{}
	// intents are the leave intents heard, by member name (leave.go).
	intents map[string]heardIntent

	// numAlive counts the alive members, for the broadcast queue (which
	// must not call into memberlist).
	numAlive atomic.Int32
	// broadcasts holds leave intents to gossip.
	broadcasts *memberlist.TransmitLimitedQueue

	// badMeta limits the warnings about members with undecodable meta.
	badMeta *logutil.Limiter

	stopJoin context.CancelFunc
	joinDone chan struct{}
}

type localMeta struct {
	meta Meta
	raw  []byte
}

// encodeMeta checks m and returns its JSON.
func encodeMeta(m Meta) ([]byte, error) {
	if !m.Role.valid() {
		return nil, fmt.Errorf("membership: role %q: use %q, %q or %q", m.Role, RoleCoordinator, RoleAgent, RoleLB)
	}
	if m.ID == "" {
		return nil, errors.New("membership: no id in the meta")
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(raw) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("membership: meta is %d bytes, over memberlist's limit of %d (shorten the addresses or the id)", len(raw), memberlist.MetaMaxSize)
	}
	return raw, nil
}

// decodeMeta decodes a member's meta; ok is false when it is not JSON or
// names no known role (the Meta then has Role "").
func decodeMeta(raw []byte) (m Meta, ok bool) {
	if err := json.Unmarshal(raw, &m); err != nil {
		return Meta{}, false
	}
	if !m.Role.valid() {
		m.Role = ""
		return m, false
	}
	return m, true
}

// New creates this node's memberlist, bound on cfg.BindAddr, and starts
// joining cfg.Join in the background. It returns once bound; see Joined.
func New(cfg Config) (*Pool, error) {
	raw, err := encodeMeta(cfg.Meta)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = DefaultBindAddr("0.0.0.0")
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.SuspicionMult <= 0 {
		cfg.SuspicionMult = DefaultSuspicionMult
	}
	if cfg.GossipInterval <= 0 {
		cfg.GossipInterval = DefaultGossipInterval
	}
	if cfg.RetryJoinInterval <= 0 {
		cfg.RetryJoinInterval = DefaultRetryJoinInterval
	}
	if cfg.RememberFor <= 0 {
		cfg.RememberFor = DefaultRememberFor
	}
	bindIP, port, err := splitBindAddr(cfg.BindAddr)
	if err != nil {
		return nil, err
	}
	var keyring *memberlist.Keyring
	if len(cfg.SecretKey) > 0 {
		if keyring, err = newKeyring(cfg.SecretKey); err != nil {
			return nil, err
		}
	}

	name := string(cfg.Meta.Role) + "/" + cfg.Meta.ID
	p := &Pool{
		cfg:     cfg,
		name:    name,
		log:     cfg.Logger.With("gossip_name", name),
		rejoin:  make(chan struct{}, 1),
		members: map[string]*Member{},
		subs:    map[chan struct{}]struct{}{},
		intents: map[string]heardIntent{},
		badMeta: logutil.NewLimiter(time.Minute),
	}
	p.broadcasts = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return int(p.numAlive.Load()) },
		RetransmitMult: memberlist.DefaultLANConfig().RetransmitMult,
	}
	p.local.Store(&localMeta{meta: cfg.Meta, raw: raw})

	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.BindAddr = bindIP.String()
	mc.BindPort = port
	mc.AdvertisePort = port
	if !bindIP.IsUnspecified() {
		mc.AdvertiseAddr = bindIP.String()
	}
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.GossipInterval = cfg.GossipInterval
	mc.DeadNodeReclaimTime = deadNodeReclaimTime
	// A join to an address that does not answer (a powered-off machine)
	// waits this long; push/pull on a LAN takes milliseconds.
	mc.TCPTimeout = tcpTimeout
	// With a keyring, refuse plain messages and never send any (both
	// are memberlist's defaults; written here because they are the point).
	mc.Keyring = keyring
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.Delegate = (*delegate)(p)
	mc.Events = (*events)(p)
	mc.Conflict = (*conflicts)(p)
	mc.Logger = log.New(newLogWriter(p.log), "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership: gossip on %s: %w", cfg.BindAddr, err)
	}
	p.ml = ml

	join := p.joinAddrs(cfg.Join)
	ctx, cancel := context.WithCancel(context.Background())
	p.stopJoin = cancel
	p.joinDone = make(chan struct{})
	if len(join) == 0 {
		p.joined.Store(true)
	}
	go func() {
		defer close(p.joinDone)
		p.joinLoop(ctx, join)
	}()
	p.log.Info("gossip started", "addr", p.Local().Addr, "join", strings.Join(cfg.Join, ","), "encrypted", keyring != nil)
	return p, nil
}

// newKeyring is a keyring holding key, checked to be an AES key.
func newKeyring(key []byte) (*memberlist.Keyring, error) {
	if l := len(key); l != 16 && l != 24 && l != 32 {
		return nil, fmt.Errorf("membership: gossip key is %d bytes: use 16, 24 or 32 (AES-128, -192 or -256)", l)
	}
	kr, err := memberlist.NewKeyring(nil, key)
	if err != nil {
		return nil, fmt.Errorf("membership: gossip key: %w", err)
	}
	return kr, nil
}

// splitBindAddr parses host:port, resolving a host name to an IP.
func splitBindAddr(addr string) (net.IP, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, fmt.Errorf("membership: gossip address %q: %w (use host:port, e.g. 10.0.0.1:%d)", addr, err, DefaultPort)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, 0, fmt.Errorf("membership: gossip address %q: bad port %q", addr, portStr)
	}
	if host == "" {
		return net.IPv4zero, port, nil
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip, port, nil
	}
	ipa, err := net.ResolveIPAddr("ip", host)
	if err != nil {
		return nil, 0, fmt.Errorf("membership: gossip address %q: %w", addr, err)
	}
	return ipa.IP, port, nil
}

// joinAddrs is addrs without this node's own address.
func (p *Pool) joinAddrs(addrs []string) []string {
	self := p.ml.LocalNode()
	var out []string
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if ta, err := net.ResolveTCPAddr("tcp", a); err == nil && ta.IP.Equal(self.Addr) && ta.Port == int(self.Port) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// joinLoop joins addrs until one answers, then waits for name conflicts
// about this node, after which it re-joins for a while (see rejoinWindow).
func (p *Pool) joinLoop(ctx context.Context, addrs []string) {
	if len(addrs) == 0 {
		return
	}
	wait := func() bool {
		t := time.NewTimer(p.cfg.RetryJoinInterval)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	keyWarned := false
	for attempt := 0; ; attempt++ {
		n, err := p.tryJoin(addrs)
		if err == nil && p.ml.NumMembers() > 1 {
			p.joined.Store(true)
			p.log.Info("joined the gossip pool", "answered", n, "members", p.ml.NumMembers())
			p.notify()
			break
		}
		p.joinAttempts.Add(1)
		if err == nil {
			err = errors.New("only this node answered")
		}
		if !keyWarned && strings.Contains(strings.ToLower(err.Error()), "crypt") {
			// Deterministic, unlike a seed not up yet: say it loudly once.
			keyWarned = true
			p.log.Warn("gossip join refused: this node's gossip key, or its lack of one, differs from the members'; retrying",
				"join", strings.Join(addrs, ","), "encrypted", len(p.cfg.SecretKey) > 0, "error", err)
		} else if attempt == 0 {
			p.log.Info("gossip join failed; retrying", "join", strings.Join(addrs, ","), "every", p.cfg.RetryJoinInterval, "error", err)
		} else {
			p.log.Debug("gossip join failed; retrying", "join", strings.Join(addrs, ","), "error", err)
		}
		if !wait() {
			return
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.rejoin:
		}
		for until := time.Now().Add(rejoinWindow); time.Now().Before(until); {
			if !wait() {
				return
			}
			if _, err := p.tryJoin(addrs); err != nil {
				p.log.Debug("gossip re-join failed", "error", err)
			}
		}
	}
}

// tryJoin joins every address at once (one that does not answer costs
// up to memberlist's TCP timeout, which should not delay the others) and
// returns how many answered, or the errors if none did.
func (p *Pool) tryJoin(addrs []string) (int, error) {
	type result struct {
		n   int
		err error
	}
	results := make(chan result, len(addrs))
	for _, a := range addrs {
		go func() {
			n, err := p.ml.Join([]string{a})
			results <- result{n, err}
		}()
	}
	total, errs := 0, []error(nil)
	for range addrs {
		r := <-results
		total += r.n
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	if total > 0 {
		return total, nil
	}
	return 0, errors.Join(errs...)
}

// Joined reports whether a Join address answered (true at once when
// there was none to join).
func (p *Pool) Joined() bool { return p.joined.Load() }

// Local is this node as a Member.
func (p *Pool) Local() Member {
	n := p.ml.LocalNode()
	return Member{
		Name:   p.name,
		Addr:   n.Address(),
		Meta:   p.local.Load().meta,
		Status: StatusAlive,
		Since:  p.sinceOf(p.name),
	}
}

func (p *Pool) sinceOf(name string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.members[name]; m != nil {
		return m.Since
	}
	return time.Time{}
}

// Members returns every member known, alive or not (failed and left ones
// for RememberFor), this node included, sorted by role then id.
func (p *Pool) Members() []Member {
	now := time.Now()
	p.mu.Lock()
	out := make([]Member, 0, len(p.members))
	for name, m := range p.members {
		if !m.alive() && now.Sub(m.Since) > p.cfg.RememberFor {
			delete(p.members, name)
			continue
		}
		out = append(out, *m)
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		if c := strings.Compare(string(a.Meta.Role), string(b.Meta.Role)); c != 0 {
			return c
		}
		if c := strings.Compare(a.Meta.ID, b.Meta.ID); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// Alive returns the alive members with role (suspect ones included),
// sorted by id.
func (p *Pool) Alive(role Role) []Member {
	var out []Member
	for _, m := range p.Members() {
		if m.Meta.Role == role && m.alive() {
			out = append(out, m)
		}
	}
	return out
}

// Member returns the member with role and id, alive or not. It is one
// map lookup: the leader asks it for every agent on every pass.
func (p *Pool) Member(role Role, id string) (Member, bool) {
	name := string(role) + "/" + id
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.members[name]
	if m == nil || m.Meta.Role != role || (!m.alive() && time.Since(m.Since) > p.cfg.RememberFor) {
		return Member{}, false
	}
	return *m, true
}

// IsAlive reports whether the member with role and id is alive (or
// suspect), with one lookup.
func (p *Pool) IsAlive(role Role, id string) bool {
	m, ok := p.Member(role, id)
	return ok && m.alive()
}

// NumMembers is the number of alive (or suspect) members, this node
// included.
func (p *Pool) NumMembers() int { return p.ml.NumMembers() }

// Subscribe returns a channel that receives a value after any change of
// the membership (a join, leave, failure or meta update), coalesced: it is
// buffered 1 and never blocks memberlist, so a reader that is slow sees
// one signal for many changes and should re-read Members. cancel stops the
// subscription; the channel is never closed.
func (p *Pool) Subscribe() (ch <-chan struct{}, cancel func()) {
	c := make(chan struct{}, 1)
	p.mu.Lock()
	p.subs[c] = struct{}{}
	p.mu.Unlock()
	return c, func() {
		p.mu.Lock()
		delete(p.subs, c)
		p.mu.Unlock()
	}
}

// notify signals every subscriber without blocking.
func (p *Pool) notify() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notifyLocked()
}

func (p *Pool) notifyLocked() {
	for c := range p.subs {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// UpdateMeta replaces this node's meta and gossips it. Role and ID cannot
// change (they name the node).
func (p *Pool) UpdateMeta(m Meta) error {
	cur := p.local.Load().meta
	if m.Role != cur.Role || m.ID != cur.ID {
		return fmt.Errorf("membership: meta names %s/%s but this node is %s: role and id cannot change", m.Role, m.ID, p.name)
	}
	raw, err := encodeMeta(m)
	if err != nil {
		return err
	}
	p.life.RLock()
	defer p.life.RUnlock()
	if p.shut {
		return ErrShutdown
	}
	p.local.Store(&localMeta{meta: m, raw: raw})
	if err := p.ml.UpdateNode(2 * time.Second); err != nil {
		// Applied here and spreading with gossip and push/pull even
		// though no one acknowledged it yet.
		p.log.Debug("gossip meta update not acknowledged yet", "error", err)
	}
	return nil
}

// Leave tells the others this node is leaving (they show it as "left")
// and stops joining; it waits up to timeout for the message to go out.
// Call Shutdown after it.
func (p *Pool) Leave(timeout time.Duration) error {
	p.life.Lock()
	defer p.life.Unlock()
	if p.shut {
		return ErrShutdown
	}
	p.stopJoin()
	<-p.joinDone
	deadline := time.Now().Add(timeout)
	if p.ml.NumMembers() > 1 {
		// The intent first, so that the others know the dead message
		// that follows is a leave; wait for it to have gone around
		// (half the time at most).
		done := make(chan struct{})
		p.broadcasts.QueueBroadcast(&intentBroadcast{
			node: p.name,
			msg:  encodeIntent(leaveIntent{Node: p.name, Nonce: time.Now().UnixNano()}),
			done: done,
		})
		t := time.NewTimer(timeout / 2)
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
	}
	// memberlist waits forever on a timeout of 0.
	if err := p.ml.Leave(max(time.Until(deadline), 50*time.Millisecond)); err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossip without leaving: the others declare this node
// failed after their timeouts. It stops the join loop too. It is
// idempotent.
func (p *Pool) Shutdown() error {
	p.life.Lock()
	defer p.life.Unlock()
	if p.shut {
		return nil
	}
	p.shut = true
	p.stopJoin()
	<-p.joinDone
	return p.ml.Shutdown()
}
