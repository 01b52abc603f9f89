package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/baton-dev/baton/agent/gpu"
	"github.com/baton-dev/baton/internal/bus"
	"github.com/baton-dev/baton/internal/epochguard"
	"github.com/baton-dev/baton/internal/logutil"
	"github.com/baton-dev/baton/internal/membership"
	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// ErrAlreadyRun is returned by a second call to Agent.Run.
var ErrAlreadyRun = errors.New("agent: Run called twice")

// Agent runs the replicas assigned to one machine. Create it with New and
// start it with Run; its methods are safe for concurrent use.
//
// Concurrency: mu guards the replica table and every replica's mutable
// fields (see replica). pubMu serialises status publishing so that reports
// leave in the order their states changed; it is taken before mu, never
// while holding mu. The spec cache's own mutex is taken under mu and
// takes nothing else; specs are fetched holding neither mu nor pubMu.
type Agent struct {
	cfg     Config
	logger  *slog.Logger
	gpus    gpu.Source
	metrics *metrics
	gather  prometheus.Gatherer
	cpus    float64
	memGB   float64
	netns   string
	// user is who replicas run as; iso their cgroups; shimPath the binary
	// that supervises each replica (this program).
	user     replicaUser
	iso      *isolation
	shimPath string
	// badMessages limits the logging of invalid NATS messages and of
	// failed spec fetches.
	badMessages *logutil.Limiter
	// bundles caches the versions' code, unpacked.
	bundles *bundleStore
	// epochs rejects a desired set whose epoch jumps implausibly far
	// ahead of the cluster's Raft index.
	epochs *epochguard.Guard
	// specs caches the specs desired sets name by digest (see specs.go).
	specs *specCache
	// specWake tells retrySpecs that specWait went from nil to a set.
	specWake chan struct{}

	started  atomic.Bool
	httpAddr atomic.Value // string: bound address, set by Run
	advAddr  atomic.Value // string: address advertised to the coordinator
	// pool is the gossip pool, set by Run when gossip is on (/healthz).
	pool atomic.Pointer[membership.Pool]

	pubMu   sync.Mutex // serialises publish; taken before mu
	nc      *bus.Conn  // set by Run before any publish; guarded by pubMu
	gpuList []protocol.GPU
	// lastStatusBody is the last status encoded without its SentAt, and
	// lastStatus what was sent for it; guarded by pubMu.
	lastStatusBody, lastStatus []byte

	mu        sync.Mutex
	replicas  map[string]*replica // by "service/id"
	ports     map[int]bool        // ports handed to live replicas
	epoch     uint64              // epoch of the last applied desired set
	haveEpoch bool
	closing   bool // Run is stopping: start nothing new
	// specWait is the last applied set if it has replicas not started
	// because their spec could not be had, else nil; retrySpecs retries
	// it. Never changed once stored.
	specWait *protocol.DesiredReplicas

	wg sync.WaitGroup // replica supervisors
}

// New checks cfg, detects the machine's capacity and opens the GPU source
// (fake GPUs when cfg.Accelerators is set, else NVML; no driver means no
// GPUs). It starts nothing; call Run.
func New(cfg Config) (*Agent, error) {
	if err := checkPlatform(); err != nil {
		return nil, err
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:         cfg,
		logger:      cfg.Logger.With("agent", cfg.ID),
		cpus:        cfg.CPUs,
		memGB:       cfg.MemoryGB,
		netns:       cfg.NetNS,
		replicas:    map[string]*replica{},
		ports:       map[int]bool{},
		badMessages: logutil.NewLimiter(10 * time.Second),
		specs:       newSpecCache(specCacheSize),
		specWake:    make(chan struct{}, 1),
	}
	a.epochs = &epochguard.Guard{Max: protocol.MaxEpochAhead, Ask: a.askClusterIndex}
	a.bundles = newBundleStore(filepath.Join(cfg.DataDir, "bundles"), cfg.BundleCache)
	if a.user, err = resolveReplicaUser(cfg.ReplicaUser); err != nil {
		return nil, err
	}
	if err := a.user.canReach(cfg.DataDir); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("data dir %s: %v; use a --data-dir the replica user can reach (e.g. under /var/lib), or another --replica-user", cfg.DataDir, err)
	}
	if a.shimPath, err = os.Executable(); err != nil {
		return nil, fmt.Errorf("find the agent's own binary (it supervises replicas): %w", err)
	}
	if a.netns == "" {
		a.netns = detectNetNS()
	}
	if a.cpus == 0 {
		a.cpus = detectCPUs()
	}
	if a.memGB == 0 {
		mem, err := detectMemoryGB()
		if err != nil {
			a.logger.Warn("cannot detect memory, reporting 0", "error", err)
		}
		a.memGB = math.Round(mem*100) / 100
	}
	if cfg.Labels != nil {
		a.cfg.Labels = maps.Clone(cfg.Labels)
	}

	reg, gather := cfg.Registry, cfg.Gatherer
	if reg == nil {
		own := prometheus.NewRegistry()
		own.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg = own
		if gather == nil {
			gather = own
		}
	}
	if gather == nil {
		if g, ok := reg.(prometheus.Gatherer); ok {
			gather = g
		}
	}
	if gather == nil {
		// The caller's registerer cannot be read back: keep a private
		// copy of our metrics to serve.
		own := prometheus.NewRegistry()
		reg = teeRegisterer{reg, own}
		gather = own
	}
	a.gather = gather
	if a.metrics, err = newMetrics(reg, cfg.ID); err != nil {
		return nil, fmt.Errorf("agent metrics: %w", err)
	}

	if cfg.Accelerators != "" {
		fake, err := gpu.NewFake(cfg.ID, cfg.Accelerators)
		if err != nil {
			return nil, err
		}
		a.gpus = fake
	} else {
		a.gpus = gpu.OpenNVML(a.logger)
	}
	a.iso = openIsolation(cfg)
	if a.iso.mgr == nil {
		a.logger.Warn("cgroups unavailable: "+errNoIsolation.Error(), "reason", a.iso.why)
	} else if err := a.iso.weigh(a.cpus); err != nil {
		a.logger.Warn("cannot weigh the replicas' cgroup", "error", err)
	}
	a.metrics.isolation.WithLabelValues(a.iso.mode()).Set(1)
	return a, nil
}

// teeRegisterer registers with two registerers.
type teeRegisterer struct{ a, b prometheus.Registerer }

func (t teeRegisterer) Register(c prometheus.Collector) error {
	if err := t.a.Register(c); err != nil {
		return err
	}
	return t.b.Register(c)
}

func (t teeRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := t.Register(c); err != nil {
			panic(err)
		}
	}
}

func (t teeRegisterer) Unregister(c prometheus.Collector) bool {
	return t.a.Unregister(c) && t.b.Unregister(c)
}

// GPUSource returns the agent's GPU source (a *gpu.Fake when
// Config.Accelerators is set), for tests that change GPU health.
func (a *Agent) GPUSource() gpu.Source { return a.gpus }

// HTTPAddr returns the address the HTTP server is bound to, or "" before
// Run has bound it.
func (a *Agent) HTTPAddr() string {
	s, _ := a.httpAddr.Load().(string)
	return s
}

// Run serves HTTP, connects to NATS (retrying forever), applies desired
// replica sets and reports status until ctx is done. Before it returns,
// every replica's process group has been stopped (SIGTERM, StopGrace,
// SIGKILL) and waited for. It returns nil after a clean shutdown, or an
// error if it could not start.
func (a *Agent) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	defer a.gpus.Close()

	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("agent http listen on %s: %w (set another address with the http address flag)", a.cfg.HTTPAddr, err)
	}
	bound := ln.Addr().(*net.TCPAddr)
	a.httpAddr.Store(bound.String())
	adv := bound.String()
	if bound.IP.IsUnspecified() {
		adv = net.JoinHostPort(a.cfg.Host, fmt.Sprint(bound.Port))
	}
	a.advAddr.Store(adv)

	if err := a.prepareDataDir(); err != nil {
		return err
	}
	a.bundles.adopt()
	a.killOrphans()
	a.refreshGPUs()

	srv, err := a.newHTTPServer()
	if err != nil {
		ln.Close()
		return err
	}
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		serve := srv.Serve
		if srv.TLSConfig != nil {
			serve = func(ln net.Listener) error { return srv.ServeTLS(ln, "", "") }
		}
		if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("agent http server stopped", "error", err)
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		<-httpDone
	}()

	natsURL := a.cfg.NATSURL
	if a.cfg.GossipAddr != "" {
		pool, err := membership.New(membership.Config{
			Meta:      membership.Meta{Role: membership.RoleAgent, ID: a.cfg.ID, API: adv},
			BindAddr:  a.cfg.GossipAddr,
			Join:      a.cfg.Join,
			Logger:    a.logger,
			SecretKey: a.cfg.GossipKey,
		})
		if err != nil {
			return fmt.Errorf("agent gossip: %w", err)
		}
		a.pool.Store(pool)
		defer leavePool(pool, a.logger)
		if natsURL == "" {
			if natsURL, err = pool.WaitForNATS(ctx, a.logger); err != nil {
				return nil // ctx ended: stopped before it could start
			}
			a.logger.Info("coordinators found over gossip", "nats_url", natsURL)
		}
	}

	var natsTLS *tls.Config
	if a.cfg.TLS.Enabled() {
		if natsTLS, err = tlsutil.ClientConfig(a.cfg.TLS, tlsutil.CoordinatorServerName); err != nil {
			return fmt.Errorf("agent nats: %w", err)
		}
	}
	nc, err := bus.Connect(bus.Config{
		URL:         natsURL,
		Name:        "baton-agent-" + a.cfg.ID,
		Logger:      a.logger,
		TLS:         natsTLS,
		InboxPrefix: protocol.InboxPrefix(tlsutil.RoleAgent, a.cfg.ID),
		// Publishing while disconnected fails instead of queueing stale
		// heartbeats; the next heartbeat after reconnecting is fresh.
		NoReconnectBuffer: true,
		OnConnect:         a.publish,
	})
	if err != nil {
		return fmt.Errorf("agent nats connect to %s: %w", natsURL, err)
	}
	defer nc.Close()
	a.pubMu.Lock()
	a.nc = nc
	a.pubMu.Unlock()

	retryCtx, stopRetry := context.WithCancel(ctx)
	retryDone := make(chan struct{})
	go func() {
		defer close(retryDone)
		a.retrySpecs(retryCtx)
	}()
	defer func() {
		stopRetry()
		<-retryDone
	}()

	sub, err := nc.Subscribe(protocol.AgentDesiredSubject(a.cfg.ID), func(msg *nats.Msg) { a.onDesired(ctx, msg) })
	if err != nil {
		return fmt.Errorf("agent subscribe %s: %w", protocol.AgentDesiredSubject(a.cfg.ID), err)
	}
	a.logger.Info("agent started", "http_addr", a.HTTPAddr(), "nats_url", natsURL,
		"host", a.cfg.Host, "cpus", a.cpus, "memory_gb", a.memGB, "gpus", len(a.gpuList),
		"replica_user", a.user.name, "isolation", a.iso.describe())

	hbCtx, stopHeartbeat := context.WithCancel(context.Background())
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		a.heartbeat(hbCtx)
	}()

	<-ctx.Done()
	a.logger.Info("agent stopping replicas")
	if err := sub.Unsubscribe(); err != nil {
		a.logger.Debug("unsubscribe", "error", err)
	}
	a.mu.Lock()
	a.closing = true
	for _, r := range a.replicas {
		r.requestStop()
	}
	a.mu.Unlock()
	a.publish() // leaving: the leader takes this agent out of service now
	a.wg.Wait()
	if err := a.iso.close(); err != nil {
		a.logger.Warn("remove the agent's cgroup", "error", err)
	}
	stopHeartbeat()
	<-hbDone
	// The last status reports (SHUTTING_DOWN) go out if NATS is still up;
	// with the server gone, waiting longer would only delay the exit.
	if nc.IsConnected() {
		if err := nc.Flush(time.Second); err != nil {
			a.logger.Debug("nats flush", "error", err)
		}
	}
	a.logger.Info("agent stopped")
	return nil
}

// heartbeat publishes the status every HeartbeatInterval (and immediately),
// re-reading GPU health each time. It also prunes old replica directories now and then.
func (a *Agent) heartbeat(ctx context.Context) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	prune := time.NewTicker(min(max(a.cfg.ReplicaDirTTL/10, time.Minute), time.Hour))
	defer prune.Stop()
	a.pruneReplicaDirs(time.Now())
	for {
		a.publish()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.refreshGPUs()
		case now := <-prune.C:
			a.pruneReplicaDirs(now)
		}
	}
}

// refreshGPUs re-reads the GPUs; on error the last list is kept.
func (a *Agent) refreshGPUs() {
	list, err := a.gpus.GPUs()
	if err != nil {
		a.logger.Warn("gpu query failed", "error", err)
		return
	}
	a.pubMu.Lock()
	a.gpuList = list
	a.pubMu.Unlock()
}

// Status returns the report the agent would publish now.
func (a *Agent) Status() protocol.AgentStatus {
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	return a.statusLocked()
}

// statusLocked builds a report. pubMu must be held.
func (a *Agent) statusLocked() protocol.AgentStatus {
	adv, _ := a.advAddr.Load().(string)
	gpus := make([]protocol.GPU, len(a.gpuList))
	copy(gpus, a.gpuList)
	st := protocol.AgentStatus{
		Agent: protocol.Agent{
			ID:      a.cfg.ID,
			Address: adv,
			Host:    a.cfg.Host,
			Region:  a.cfg.Region,
			Labels:  a.cfg.Labels,
			Capacity: protocol.Capacity{
				CPUs:     a.cpus,
				MemoryGB: a.memGB,
				GPUs:     gpus,
			},
			NetNS:     a.netns,
			PortRange: a.cfg.PortRange,
			Alive:     true,
		},
		Replicas: []protocol.ReplicaReport{},
		SentAt:   time.Now(),
	}
	a.mu.Lock()
	st.Leaving = a.closing
	for _, r := range a.replicas {
		st.Replicas = append(st.Replicas, r.reportLocked())
	}
	a.mu.Unlock()
	sort.Slice(st.Replicas, func(i, j int) bool {
		x, y := st.Replicas[i], st.Replicas[j]
		if x.Service != y.Service {
			return x.Service < y.Service
		}
		return x.ReplicaID < y.ReplicaID
	})
	return st
}

// publish sends the current status on AgentStatusSubject. Calls are
// serialised, so reports leave in the order the states changed.
func (a *Agent) publish() {
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	st := a.statusLocked()
	a.metrics.observe(&st)
	if a.nc == nil {
		return
	}
	// SentAt is when this content was first sent: a heartbeat that repeats
	// the last report is the same bytes, which the leader recognises
	// without decoding them again.
	st.SentAt = time.Time{}
	body, err := json.Marshal(st)
	if err != nil {
		a.logger.Error("encode agent status", "error", err)
		return
	}
	if !bytes.Equal(body, a.lastStatusBody) {
		st.SentAt = time.Now()
		data, err := json.Marshal(st)
		if err != nil {
			a.logger.Error("encode agent status", "error", err)
			return
		}
		a.lastStatusBody, a.lastStatus = body, data
	}
	if err := a.nc.Publish(protocol.AgentStatusSubject(a.cfg.ID), a.lastStatus); err != nil {
		a.logger.Debug("publish agent status", "error", err)
	}
}

// onDesired applies a DesiredReplicas message. A message that is
// oversize, undecodable, invalid in any part, or for another agent is
// dropped whole (never applied in part), counted and logged. Specs it
// names by digest are taken from the cache or fetched (applyDesired),
// which blocks the handler at most Config.SpecFetchTimeout; fetches stop
// when ctx (Run's) is done.
func (a *Agent) onDesired(ctx context.Context, msg *nats.Msg) {
	var d protocol.DesiredReplicas
	err := protocol.DecodeMessage(msg.Data, protocol.MaxMessageBytes, &d)
	if err == nil {
		err = d.ResolveSpecs()
	}
	if err == nil {
		err = d.Validate()
	}
	if err == nil && d.AgentID != a.cfg.ID {
		err = fmt.Errorf("%w: desired set for agent %q, not this one", protocol.ErrInvalidMessage, d.AgentID)
	}
	if err == nil {
		if gerr := a.epochs.Check(ctx, d.Epoch); gerr != nil {
			err = fmt.Errorf("%w: %v", protocol.ErrInvalidMessage, gerr)
		}
	}
	if err != nil {
		a.metrics.invalidMessages.Inc()
		if ok, held := a.badMessages.Allow(msg.Subject); ok {
			a.logger.Warn("invalid desired set dropped", "subject", msg.Subject, "bytes", len(msg.Data), "error", err, "dropped_since_last_log", held)
		}
		return
	}
	a.applyDesired(ctx, &d)
}

// apply reconciles to d: start what is missing, stop what is not wanted,
// forget ended replicas that left the set. It reports whether anything
// changed. A set older than the last applied one is ignored.
//
// An assignment whose spec is not resolved (it could not be fetched) is
// not started, but a replica running under its key is kept as wanted; d
// is then kept in specWait for retrySpecs.
func (a *Agent) apply(d *protocol.DesiredReplicas) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return false
	}
	if a.haveEpoch && d.Epoch < a.epoch {
		a.logger.Debug("ignoring stale desired replicas", "epoch", d.Epoch, "applied_epoch", a.epoch)
		return false
	}
	a.epoch, a.haveEpoch = d.Epoch, true

	changed, waiting := false, false
	want := make(map[string]bool, len(d.Replicas))
	for i := range d.Replicas {
		asg := d.Replicas[i]
		key := asg.Key()
		want[key] = true
		if r, ok := a.replicas[key]; ok {
			if r.portBusy && asg.Port != r.offeredPort {
				// The leader moved it off a busy port.
				select {
				case <-r.newPort:
				default:
				}
				r.newPort <- asg.Port
				r.offeredPort = asg.Port
			}
			continue
		}
		if asg.Draining {
			continue
		}
		if !asg.SpecResolved() {
			waiting = true
			continue
		}
		r := newReplica(asg, a.replicaDir(asg.Service, asg.ReplicaID))
		a.replicas[key] = r
		a.wg.Add(1)
		go a.supervise(r)
		changed = true
		a.logger.Info("replica assigned", "service", asg.Service, "replica_id", asg.ReplicaID, "version", asg.Version)
	}
	for key, r := range a.replicas {
		if want[key] {
			continue
		}
		if r.ended() {
			delete(a.replicas, key)
			changed = true
			continue
		}
		if !r.removed {
			r.removed = true
			if !r.status.IsFailed() {
				r.status, r.reason = protocol.ReplicaShuttingDown, ""
			}
			r.requestStop()
			changed = true
			a.logger.Info("replica stopping", "service", r.asg.Service, "replica_id", r.asg.ReplicaID)
		}
	}
	a.setSpecWaitLocked(d, waiting)
	return changed
}

// setSpecWaitLocked keeps d for retrySpecs if it has replicas waiting for
// their spec, else forgets the waiting set; it wakes retrySpecs when a
// wait begins. a.mu must be held.
func (a *Agent) setSpecWaitLocked(d *protocol.DesiredReplicas, waiting bool) {
	if !waiting {
		a.specWait = nil
		return
	}
	began := a.specWait == nil
	a.specWait = d
	if began {
		select {
		case a.specWake <- struct{}{}:
		default:
		}
	}
}

// replicaDir is DataDir/replicas/<service>-<id>.
func (a *Agent) replicaDir(service string, id int) string {
	return filepath.Join(a.cfg.DataDir, "replicas", fmt.Sprintf("%s-%d", service, id))
}

// prepareDataDir creates the data dir and its replicas directory, and
// makes both searchable by the replica user whatever the umask: each
// replica's own directory below is its user's.
func (a *Agent) prepareDataDir() error {
	dir := filepath.Join(a.cfg.DataDir, "replicas")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("agent data dir: %w", err)
	}
	if a.user.switchTo {
		for _, d := range []string{a.cfg.DataDir, dir} {
			if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o005 != 0o005 {
				if err := os.Chmod(d, fi.Mode().Perm()|0o005); err != nil {
					return fmt.Errorf("agent data dir: %w", err)
				}
			}
		}
	}
	if err := a.user.canReach(dir); err != nil {
		return fmt.Errorf("data dir %s: %v; use a --data-dir the replica user can reach (e.g. under /var/lib), or another --replica-user", a.cfg.DataDir, err)
	}
	return nil
}

// killOrphans kills what an earlier run of this agent left running (it
// died without stopping its replicas and their shims could not): the
// replica cgroups under its cgroup parent, and the process groups (and
// shims) recorded in the replica directories' pgid files, each confirmed
// through its BATON_* environment or the shim's command line so that an
// unrelated group that reused the id is left alone.
func (a *Agent) killOrphans() {
	if names, err := a.iso.leftovers(); err != nil {
		a.logger.Warn("could not clean up leftover replica cgroups", "error", err)
	} else if len(names) > 0 {
		a.logger.Warn("killed replica cgroups left by an earlier run", "cgroups", names)
	}
	files, _ := filepath.Glob(filepath.Join(a.cfg.DataDir, "replicas", "*", pgidFile))
	for _, f := range files {
		var pgid, shimPID int
		var service, id string
		// A record that does not parse kills nothing: pgid stays 0. The
		// shim's pid is missing in records of older agents.
		if data, err := os.ReadFile(f); err == nil {
			_, _ = fmt.Sscanf(string(data), "%d %s %s %d", &pgid, &service, &id, &shimPID)
		}
		if shimPID > 1 && isShim(shimPID) {
			_ = syscall.Kill(shimPID, syscall.SIGKILL)
		}
		if pgid > 1 && groupHasEnv(pgid, "BATON_SERVICE="+service, "BATON_REPLICA_ID="+id) {
			a.logger.Warn("killing orphaned replica processes", "service", service, "replica_id", id, "pgid", pgid)
			killGroup(pgid)
		}
		os.Remove(f)
	}
}

// closedChan is an always-closed channel.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// leavePool leaves the gossip pool gracefully (the others see "left", not
// "failed") and stops gossip.
func leavePool(pool *membership.Pool, log *slog.Logger) {
	if err := pool.Leave(1500 * time.Millisecond); err != nil {
		log.Debug("gossip leave", "error", err)
	}
	if err := pool.Shutdown(); err != nil {
		log.Debug("gossip shutdown", "error", err)
	}
}

// askClusterIndex asks the leader for the cluster's Raft index
// (protocol.SubjectClusterIndex).
func (a *Agent) askClusterIndex(ctx context.Context) (uint64, error) {
	a.pubMu.Lock()
	nc := a.nc
	a.pubMu.Unlock()
	if nc == nil {
		return 0, errNotConnected
	}
	return protocol.AskClusterIndex(ctx, nc.Request)
}
