package fleetsim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// ReplicasPerService is the size of every sim service.
const ReplicasPerService = 100

// Options configures one scenario run.
type Options struct {
	// Baton is the binary run as the coordinator. Required.
	Baton string
	// Agents is the fleet size; the scenario runs Agents/10 services of
	// 100 replicas (10 per agent). Required.
	Agents int
	// Services overrides Agents/10 when > 0.
	Services int
	// LBs is the number of sim LBs. Default 2.
	LBs int
	// ReadyDelay and Heartbeat configure the sim agents (default 1s each).
	ReadyDelay time.Duration
	Heartbeat  time.Duration
	// PassOnly runs steps 1-4 only (start, submit, at rest, pass p99).
	PassOnly bool
	// Debug passes --debug-addr to the coordinator when it knows the flag.
	Debug bool
	// Dir is where the scenario's directory is made. Default os.TempDir().
	Dir string
	// Keep keeps the scenario's directory (the coordinator's data and log).
	Keep bool
	// UpdateServices is how many services are updated at once. Default 5.
	UpdateServices int
	// KillAgents is how many agents are killed. Default 5.
	KillAgents int
	// Logf receives progress lines. Default: discard.
	Logf func(format string, args ...any)
}

// Result is what one scenario measured. A nil figure was not measured
// (see Errors).
type Result struct {
	Agents   int  `json:"agents"`
	Services int  `json:"services"`
	Replicas int  `json:"replicas"`
	PassOnly bool `json:"pass_only,omitempty"`

	// RestCPUPercent is the coordinator's CPU over 10 s at rest, in % of
	// one core.
	RestCPUPercent *float64 `json:"rest_cpu_percent"`
	// SimCPUPercent is the simulator's own CPU over the same window (it
	// shares the machine with the coordinator).
	SimCPUPercent *float64 `json:"sim_cpu_percent"`
	// PassP99Seconds is the p99 of baton_coordinator_reconcile_duration_seconds
	// over the scenario; PassMaxBucketSeconds the highest bucket bound seen.
	PassP99Seconds       *float64           `json:"pass_p99_seconds"`
	PassMaxBucketSeconds *float64           `json:"pass_max_bucket_seconds"`
	PassOverflow         bool               `json:"pass_overflow,omitempty"`
	PhaseP99Seconds      map[string]float64 `json:"phase_p99_seconds,omitempty"`
	Passes               float64            `json:"passes"`
	// AllReadySeconds is from the first submit to every replica READY.
	AllReadySeconds *float64 `json:"all_ready_seconds"`
	// UpdateToFlipSeconds is from the update's submit to the flipped table
	// at the LBs; LastReadyToFlipSeconds from the min_replicas-th READY of
	// the new version to it (worst service of those updated).
	UpdateToFlipSeconds    *float64 `json:"update_to_flip_seconds"`
	LastReadyToFlipSeconds *float64 `json:"last_ready_to_flip_seconds"`
	// RSSMaxBytes and RSSEndBytes are the coordinator's VmRSS.
	RSSMaxBytes int64 `json:"rss_max_bytes"`
	RSSEndBytes int64 `json:"rss_end_bytes"`
	// RestartSeconds is from kill -9 to /v1/status listing everything.
	RestartSeconds *float64 `json:"restart_seconds"`
	// FailureDetectedSeconds is from killing agents to /v1/agents showing
	// them lost; FailureReplacedSeconds to every replica READY again.
	FailureDetectedSeconds *float64 `json:"failure_detected_seconds"`
	FailureReplacedSeconds *float64 `json:"failure_replaced_seconds"`

	SpecFetches  int64 `json:"spec_fetches"`
	SpecFailures int64 `json:"spec_fetch_failures"`
	Heartbeats   int64 `json:"heartbeats"`
	DesiredSets  int64 `json:"desired_sets"`

	Errors []string `json:"errors,omitempty"`
}

func ptr(f float64) *float64 { return &f }

func secs(d time.Duration) *float64 { return ptr(d.Seconds()) }

// Env is a running coordinator with a sim fleet: what a scenario or a
// test drives.
type Env struct {
	Dir    string
	Coord  *Coordinator
	Fleet  *Fleet
	API    Client
	logf   func(string, ...any)
	keep   bool
	rssMax int64
	// rssMu guards rssMax.
	rssMu  sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// EnvConfig configures NewEnv.
type EnvConfig struct {
	Baton      string
	Dir        string // parent of the env's directory; default os.TempDir()
	Agents     int
	LBs        int
	ReadyDelay time.Duration
	Heartbeat  time.Duration
	Debug      bool
	Keep       bool
	Logf       func(string, ...any)
}

// NewEnv starts a coordinator and the fleet, and waits until the
// coordinator lists every agent alive.
func NewEnv(ctx context.Context, cfg EnvConfig) (*Env, error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	dir, err := os.MkdirTemp(cfg.Dir, fmt.Sprintf("baton-sim-%d-", cfg.Agents))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	e := &Env{Dir: dir, logf: cfg.Logf, keep: cfg.Keep, cancel: cancel}
	e.Coord, err = StartCoordinator(ctx, cfg.Baton, dir, cfg.Debug)
	if err != nil {
		e.Close()
		return nil, err
	}
	e.API = Client{Base: "http://" + e.Coord.HTTPAddr}
	e.wg.Go(func() { e.sampleRSS(ctx) })
	cfg.Logf("coordinator pid %d, api %s, nats %s, dir %s", e.Coord.PID(), e.Coord.HTTPAddr, e.Coord.NATSURL(), dir)
	e.Fleet, err = StartFleet(ctx, AgentConfig{NATSURL: e.Coord.NATSURL(), Heartbeat: cfg.Heartbeat, ReadyDelay: cfg.ReadyDelay}, cfg.Agents, cfg.LBs, 0)
	if err != nil {
		e.Close()
		return nil, err
	}
	err = e.WaitFor(ctx, "every agent alive", 60*time.Second+time.Duration(cfg.Agents)*20*time.Millisecond, 500*time.Millisecond, func() (string, bool) {
		as, err := e.API.Agents(ctx)
		if err != nil {
			return err.Error(), false
		}
		alive := 0
		for _, a := range as {
			if a.Alive {
				alive++
			}
		}
		return fmt.Sprintf("%d of %d alive", alive, cfg.Agents), alive == cfg.Agents
	})
	if err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func (e *Env) sampleRSS(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		e.noteRSS()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// noteRSS samples the coordinator's RSS and returns it.
func (e *Env) noteRSS() int64 {
	pid := e.Coord.PID()
	if pid == 0 {
		return 0
	}
	st, err := ReadProcStats(pid)
	if err != nil {
		return 0
	}
	e.rssMu.Lock()
	e.rssMax = max(e.rssMax, st.RSS)
	e.rssMu.Unlock()
	return st.RSS
}

// Close stops the fleet and the coordinator and removes the directory
// (unless kept).
func (e *Env) Close() {
	if e.Fleet != nil {
		e.Fleet.Close()
	}
	if e.Coord != nil {
		e.Coord.Stop()
	}
	e.cancel()
	e.wg.Wait()
	if e.keep {
		e.logf("kept %s", e.Dir)
	} else {
		_ = os.RemoveAll(e.Dir)
	}
}

// WaitFor polls check every interval until it reports done, for at most
// timeout; the error names what and the last state check described.
func (e *Env) WaitFor(ctx context.Context, what string, timeout, interval time.Duration, check func() (string, bool)) error {
	deadline := time.Now().Add(timeout)
	lastLog := time.Now()
	for {
		state, done := check()
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %s (%s)", what, timeout, state)
		}
		if time.Since(lastLog) > 10*time.Second {
			e.logf("  waiting for %s: %s", what, state)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (%s)", what, ctx.Err(), state)
		case <-time.After(interval):
		}
	}
}

// ServiceName is the name of sim service i (1-based).
func ServiceName(i int) string { return fmt.Sprintf("sim-svc-%04d", i) }

// SubmitServices creates services 1..n of replicas each, 16 at a time.
func (e *Env) SubmitServices(ctx context.Context, n, replicas int) error {
	sem := make(chan struct{}, 16)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for i := 1; i <= n; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			name := ServiceName(i)
			if err := e.API.Up(ctx, name, ServiceYAML(name, replicas, 1)); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ReplicaCounts returns the coordinator's replica gauge: READY, and all
// but the failed ones (which the coordinator keeps listed for a while).
func (e *Env) ReplicaCounts(ctx context.Context) (ready, all int, err error) {
	m, err := e.API.Metrics(ctx)
	if err != nil {
		return 0, 0, err
	}
	for _, smp := range m["baton_coordinator_replicas"] {
		st := protocol.ReplicaStatus(smp.Labels["status"])
		switch {
		case st == protocol.ReplicaReady:
			ready += int(smp.Value)
			all += int(smp.Value)
		case !st.IsFailed():
			all += int(smp.Value)
		}
	}
	return ready, all, nil
}

// restCounters returns what should not grow much at rest: the Raft
// applied index, desired sets received and reconcile passes.
func (e *Env) restCounters(ctx context.Context) (applied float64, sets int64, passes float64) {
	sets = e.Fleet.DesiredSets.Load()
	m, err := e.API.Metrics(ctx)
	if err != nil {
		return 0, sets, 0
	}
	return m.Sum("baton_coordinator_raft_applied_index", nil), sets, m.Sum("baton_coordinator_reconciles_total", nil)
}

// WaitAllReady waits until total replicas are READY and no others but
// failed ones exist,
// polling the metrics every 100 ms.
func (e *Env) WaitAllReady(ctx context.Context, what string, total int, timeout time.Duration) error {
	return e.WaitFor(ctx, what, timeout, 100*time.Millisecond, func() (string, bool) {
		ready, all, err := e.ReplicaCounts(ctx)
		if err != nil {
			return err.Error(), false
		}
		return fmt.Sprintf("%d READY of %d, %d listed", ready, total, all), ready == total && all == total
	})
}

// Run runs the scenario of opts and returns what it measured; on a
// failed step the result holds the figures measured before it, and the
// error says what failed.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.LBs <= 0 {
		o.LBs = 2
	}
	if o.UpdateServices <= 0 {
		o.UpdateServices = 5
	}
	if o.KillAgents <= 0 {
		o.KillAgents = 5
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	services := o.Services
	if services <= 0 {
		services = max(1, o.Agents/10)
	}
	total := services * ReplicasPerService
	res := &Result{Agents: o.Agents, Services: services, Replicas: total, PassOnly: o.PassOnly}
	fail := func(err error) (*Result, error) {
		res.Errors = append(res.Errors, err.Error())
		o.Logf("FAILED: %v", err)
		return res, err
	}
	logf := func(format string, args ...any) {
		o.Logf("[%d agents] "+format, append([]any{o.Agents}, args...)...)
	}

	// 1. Coordinator and fleet.
	logf("starting coordinator and %d agents, %d LBs", o.Agents, o.LBs)
	e, err := NewEnv(ctx, EnvConfig{Baton: o.Baton, Dir: o.Dir, Agents: o.Agents, LBs: o.LBs,
		ReadyDelay: o.ReadyDelay, Heartbeat: o.Heartbeat, Debug: o.Debug, Keep: o.Keep, Logf: logf})
	if err != nil {
		return fail(err)
	}
	defer func() {
		res.SpecFetches = e.Fleet.Specs.Fetches.Load()
		res.SpecFailures = e.Fleet.Specs.Failures.Load()
		res.Heartbeats = e.Fleet.Heartbeats.Load()
		res.DesiredSets = e.Fleet.DesiredSets.Load()
		res.RSSEndBytes = e.noteRSS()
		e.rssMu.Lock()
		res.RSSMaxBytes = e.rssMax
		e.rssMu.Unlock()
		e.Close()
	}()
	logf("%d agents alive", o.Agents)

	// 2. Submit every service; wait for every replica READY.
	start := time.Now()
	if err := e.SubmitServices(ctx, services, ReplicasPerService); err != nil {
		return fail(fmt.Errorf("submit services: %w", err))
	}
	logf("%d services submitted in %s", services, time.Since(start).Round(time.Millisecond))
	if err := e.WaitAllReady(ctx, "every replica READY", total, 120*time.Second+time.Duration(total)*30*time.Millisecond); err != nil {
		return fail(err)
	}
	res.AllReadySeconds = secs(time.Since(start))
	logf("all %d replicas READY after %s", total, time.Since(start).Round(time.Millisecond))

	// 3. At rest.
	if err := sleep(ctx, 5*time.Second); err != nil {
		return fail(err)
	}
	before, err := ReadProcStats(e.Coord.PID())
	if err != nil {
		return fail(fmt.Errorf("read coordinator cpu: %w", err))
	}
	simBefore, _ := ReadProcStats(os.Getpid())
	idx0, sets0, passes0 := e.restCounters(ctx)
	const window = 10 * time.Second
	if err := sleep(ctx, window); err != nil {
		return fail(err)
	}
	after, err := ReadProcStats(e.Coord.PID())
	if err != nil {
		return fail(fmt.Errorf("read coordinator cpu: %w", err))
	}
	idx1, sets1, passes1 := e.restCounters(ctx)
	simAfter, _ := ReadProcStats(os.Getpid())
	res.RestCPUPercent = ptr(100 * float64(after.CPU-before.CPU) / float64(window))
	res.SimCPUPercent = ptr(100 * float64(simAfter.CPU-simBefore.CPU) / float64(window))
	logf("coordinator CPU at rest: %.1f%% of a core (the sim's own: %.1f%%; over %s: %.0f raft entries applied, %d desired sets sent, %.0f reconcile passes)",
		*res.RestCPUPercent, *res.SimCPUPercent, window, idx1-idx0, sets1-sets0, passes1-passes0)

	// 4. Reconcile pass p99 (again just before the restart, which resets
	// the histogram).
	passP99 := func() {
		m, err := e.API.Metrics(ctx)
		if err != nil {
			logf("metrics: %v", err)
			return
		}
		b := m.Buckets("baton_coordinator_reconcile_duration_seconds", nil)
		res.Passes = m.Sum("baton_coordinator_reconcile_duration_seconds_count", nil)
		if q := Quantile(0.99, b); !math.IsNaN(q) {
			res.PassP99Seconds = ptr(q)
			// JSON has no +Inf: a pass beyond the last finite bucket is
			// PassOverflow.
			if mb := MaxBucket(b); math.IsInf(mb, 1) {
				res.PassMaxBucketSeconds, res.PassOverflow = nil, true
			} else {
				res.PassMaxBucketSeconds, res.PassOverflow = ptr(mb), false
			}
		}
		phases := map[string]bool{}
		for _, s := range m["baton_coordinator_reconcile_phase_seconds_bucket"] {
			phases[s.Labels["phase"]] = true
		}
		if len(phases) > 0 {
			res.PhaseP99Seconds = map[string]float64{}
		}
		for p := range phases {
			if q := Quantile(0.99, m.Buckets("baton_coordinator_reconcile_phase_seconds", map[string]string{"phase": p})); !math.IsNaN(q) {
				res.PhaseP99Seconds[p] = q
			}
		}
	}
	passP99()
	logf("reconcile pass p99: %s over %.0f passes%s", fmtSeconds(res.PassP99Seconds), res.Passes, phaseLine(res.PhaseP99Seconds))
	if o.PassOnly {
		return res, nil
	}

	// 5. blue_green update of a few services at once.
	upd := min(o.UpdateServices, services)
	start = time.Now()
	var uwg sync.WaitGroup
	uerrs := make([]error, upd)
	for i := range upd {
		uwg.Go(func() {
			name := ServiceName(i + 1)
			uerrs[i] = e.API.Update(ctx, name, ServiceYAML(name, ReplicasPerService, 2))
		})
	}
	uwg.Wait()
	if err := errors.Join(uerrs...); err != nil {
		return fail(fmt.Errorf("update: %w", err))
	}
	err = e.WaitFor(ctx, "the flipped tables at every LB", 120*time.Second, 50*time.Millisecond, func() (string, bool) {
		missing := 0
		for i := range upd {
			for _, l := range e.Fleet.LBs {
				if _, ok := l.FlipTime(ServiceName(i+1), 2); !ok {
					missing++
				}
			}
		}
		return fmt.Sprintf("%d service/LB pairs without the flip", missing), missing == 0
	})
	if err != nil {
		return fail(err)
	}
	var worstFlip, worstAfterReady time.Duration
	for i := range upd {
		name := ServiceName(i + 1)
		var flip time.Time
		for _, l := range e.Fleet.LBs {
			if t, _ := l.FlipTime(name, 2); t.After(flip) {
				flip = t
			}
		}
		worstFlip = max(worstFlip, flip.Sub(start))
		readies := e.Fleet.ReadyTimes(name, 2)
		if len(readies) < ReplicasPerService {
			return fail(fmt.Errorf("update of %s: flipped with %d new replicas READY at the agents, want %d", name, len(readies), ReplicasPerService))
		}
		worstAfterReady = max(worstAfterReady, flip.Sub(readies[ReplicasPerService-1]))
	}
	res.UpdateToFlipSeconds, res.LastReadyToFlipSeconds = secs(worstFlip), secs(worstAfterReady)
	logf("blue_green update of %d services: update -> flip %s, last READY -> flip %s", upd,
		worstFlip.Round(time.Millisecond), worstAfterReady.Round(time.Millisecond))
	if err := e.WaitAllReady(ctx, "old versions gone after the update", total, 120*time.Second); err != nil {
		return fail(err)
	}

	// 6. Failure detection.
	// Kill the agents that run the most replicas (placement packs them,
	// so the last agents may run none).
	kill := min(o.KillAgents, o.Agents-1)
	victims := slices.Clone(e.Fleet.Agents)
	counts := map[*Agent]int{}
	for _, a := range victims {
		counts[a] = len(a.Replicas())
	}
	slices.SortStableFunc(victims, func(a, b *Agent) int { return counts[b] - counts[a] })
	killed := map[string]bool{}
	lost := 0
	for _, a := range victims[:kill] {
		a.Kill()
		killed[a.ID()] = true
		lost += counts[a]
	}
	logf("killed %d agents running %d replicas", kill, lost)
	start = time.Now()
	err = e.WaitFor(ctx, "killed agents lost", 120*time.Second, 100*time.Millisecond, func() (string, bool) {
		as, err := e.API.Agents(ctx)
		if err != nil {
			return err.Error(), false
		}
		alive := 0
		for _, a := range as {
			if killed[a.ID] && a.Alive {
				alive++
			}
		}
		return fmt.Sprintf("%d of %d killed agents still alive", alive, kill), alive == 0
	})
	if err != nil {
		return fail(err)
	}
	res.FailureDetectedSeconds = secs(time.Since(start))
	logf("%d killed agents lost after %s", kill, time.Since(start).Round(time.Millisecond))
	err = e.WaitFor(ctx, "replicas of the killed agents replaced", 120*time.Second, 250*time.Millisecond, func() (string, bool) {
		st, err := e.API.Status(ctx)
		if err != nil {
			return err.Error(), false
		}
		ready, onKilled := 0, 0
		for _, r := range st.Replicas {
			switch {
			case killed[r.Agent] && !r.Status.IsFailed():
				onKilled++
			case !killed[r.Agent] && r.Status == protocol.ReplicaReady:
				ready++
			}
		}
		return fmt.Sprintf("%d READY elsewhere of %d, %d listed, %d on killed agents not failed", ready, total, len(st.Replicas), onKilled),
			ready == total && onKilled == 0
	})
	if err != nil {
		return fail(err)
	}
	res.FailureReplacedSeconds = secs(time.Since(start))
	logf("their replicas replaced and READY after %s", time.Since(start).Round(time.Millisecond))
	passP99()
	logf("reconcile pass p99 over the scenario: %s over %.0f passes%s", fmtSeconds(res.PassP99Seconds), res.Passes, phaseLine(res.PhaseP99Seconds))

	// 7. Restart: kill -9, start again on the same data and ports; wait
	// until /v1/status lists every replica it listed before.
	prior, err := e.API.Status(ctx)
	if err != nil {
		return fail(fmt.Errorf("status before the restart: %w", err))
	}
	listed := replicaKeys(prior)
	start = time.Now()
	e.Coord.Kill()
	if err := e.Coord.Start(ctx); err != nil {
		return fail(fmt.Errorf("restart: %w", err))
	}
	logf("restarted coordinator healthy after %s", time.Since(start).Round(time.Millisecond))
	err = e.WaitFor(ctx, "full status after the restart", 120*time.Second, 50*time.Millisecond, func() (string, bool) {
		st, err := e.API.Status(ctx)
		if err != nil {
			return err.Error(), false
		}
		missing := 0
		now := replicaKeys(st)
		for k := range listed {
			if !now[k] {
				missing++
			}
		}
		return fmt.Sprintf("%d services, %d replicas listed, %d of %d missing", len(st.Services), len(st.Replicas), missing, len(listed)),
			len(st.Services) == services && missing == 0
	})
	if err != nil {
		return fail(err)
	}
	res.RestartSeconds = secs(time.Since(start))
	logf("restart (kill -9) -> full status served: %s", time.Since(start).Round(time.Millisecond))
	if err := e.WaitAllReady(ctx, "every replica READY after the restart", total, 120*time.Second); err != nil {
		return fail(err)
	}
	return res, nil
}

// phaseLine shows the phases' p99s, slowest first.
func phaseLine(p map[string]float64) string {
	if len(p) == 0 {
		return ""
	}
	names := slices.Collect(maps.Keys(p))
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(p[b], p[a]) })
	var b strings.Builder
	b.WriteString("; phase p99s:")
	for _, n := range names {
		fmt.Fprintf(&b, " %s %s", n, fmtDur(p[n]))
	}
	return b.String()
}

// replicaKeys returns the service/id of every replica st lists.
func replicaKeys(st *protocol.StatusResponse) map[string]bool {
	out := make(map[string]bool, len(st.Replicas))
	for _, r := range st.Replicas {
		out[protocol.ReplicaKey(r.ServiceName, r.ID)] = true
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func fmtSeconds(f *float64) string {
	if f == nil {
		return "n/a"
	}
	return fmtDur(*f)
}

func fmtDur(s float64) string {
	switch {
	case math.IsInf(s, 1):
		return "+Inf"
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	case s < 10:
		return fmt.Sprintf("%.2f s", s)
	}
	return fmt.Sprintf("%.1f s", s)
}
