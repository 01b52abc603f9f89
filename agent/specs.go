package agent

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/protocol"
)

// Specs by reference: a desired set names each version's spec by digest
// (ReplicaAssignment.SpecDigest). The agent takes a spec it lacks from its
// cache, else asks the coordinators for it (SpecRequest on
// protocol.SubjectSpecGet) and caches the checked reply. A replica whose
// spec cannot be had is not started, and one already running under its key
// is kept; the rest of the set is applied. retrySpecs retries the set's
// left-out replicas with a backoff until their specs arrive or a newer set
// replaces it.

const (
	// specCacheSize is how many specs the agent caches.
	specCacheSize = 256
	// specFetchParallel is how many spec requests one set sends at once.
	specFetchParallel = 8
)

// errNotConnected is returned by fetchSpec before Run has connected.
var errNotConnected = errors.New("not connected to NATS")

// specCache holds task specs by digest, dropping the least recently used
// beyond its bound: at most specCacheSize (256) specs, each decoded from at
// most protocol.MaxSpecBytes (96 KiB) of JSON, so some 24 MiB at worst.
// A digest names its spec's bytes, so an entry never goes stale. Safe for
// concurrent use; the specs it returns are shared and must not be changed.
type specCache struct {
	max int

	mu       sync.Mutex
	order    *list.List               // guarded by mu; front is the most recently used; values *specEntry
	byDigest map[string]*list.Element // guarded by mu
}

type specEntry struct {
	digest string
	spec   protocol.TaskSpec
}

// newSpecCache returns a cache of at most max specs.
func newSpecCache(max int) *specCache {
	return &specCache{max: max, order: list.New(), byDigest: map[string]*list.Element{}}
}

// get returns the spec with digest, if cached, and marks it recently used.
func (c *specCache) get(digest string) (protocol.TaskSpec, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byDigest[digest]
	if !ok {
		return protocol.TaskSpec{}, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*specEntry).spec, true
}

// put caches spec under digest, dropping the least recently used spec if
// the cache is full.
func (c *specCache) put(digest string, spec protocol.TaskSpec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byDigest[digest]; ok {
		e.Value.(*specEntry).spec = spec
		c.order.MoveToFront(e)
		return
	}
	c.byDigest[digest] = c.order.PushFront(&specEntry{digest: digest, spec: spec})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byDigest, last.Value.(*specEntry).digest)
	}
}

// len returns the number of cached specs.
func (c *specCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// applyDesired fills in the specs d names by digest (cache, else fetch),
// then applies it and publishes the status if anything changed. d has been
// decoded, resolved (ResolveSpecs) and validated for this agent. It
// returns within Config.SpecFetchTimeout plus the time apply takes.
func (a *Agent) applyDesired(ctx context.Context, d *protocol.DesiredReplicas) {
	if a.wouldIgnore(d) {
		return
	}
	a.resolveSpecs(ctx, d)
	// Fetched specs were checked when decoded; check the whole set as it
	// will be applied all the same.
	if err := d.Validate(); err != nil {
		a.metrics.invalidMessages.Inc()
		if ok, held := a.badMessages.Allow("desired_resolved"); ok {
			a.logger.Warn("desired set dropped: invalid once its specs were filled in", "epoch", d.Epoch, "error", err, "dropped_since_last_log", held)
		}
		return
	}
	if a.apply(d) {
		a.publish()
	}
}

// wouldIgnore reports whether apply would ignore d (Run is stopping, or a
// newer set was applied), so that no spec is fetched for it.
func (a *Agent) wouldIgnore(d *protocol.DesiredReplicas) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closing || (a.haveEpoch && d.Epoch < a.epoch)
}

// resolveSpecs fills in the unresolved assignments of d from the cache,
// and fetches the specs still missing for those that apply would start
// (not draining, not running here). What cannot be fetched is counted,
// logged and left unresolved: apply does not start those replicas.
func (a *Agent) resolveSpecs(ctx context.Context, d *protocol.DesiredReplicas) {
	var reqs []protocol.SpecRequest
	asked := map[string]bool{}
	a.mu.Lock()
	for i := range d.Replicas {
		asg := &d.Replicas[i]
		if asg.SpecResolved() {
			continue
		}
		if spec, ok := a.specs.get(asg.SpecDigest); ok {
			asg.SetSpec(spec)
			continue
		}
		if _, running := a.replicas[asg.Key()]; running || asg.Draining || asked[asg.SpecDigest] {
			continue
		}
		asked[asg.SpecDigest] = true
		reqs = append(reqs, protocol.SpecRequest{Service: asg.Service, Version: asg.Version, Digest: asg.SpecDigest})
	}
	a.mu.Unlock()
	if len(reqs) == 0 {
		return
	}
	got := a.fetchSpecs(ctx, reqs)
	for i := range d.Replicas {
		asg := &d.Replicas[i]
		if spec, ok := got[asg.SpecDigest]; ok && !asg.SpecResolved() {
			asg.SetSpec(spec)
		}
	}
}

// fetchSpecs asks for the specs of reqs (distinct digests), at most
// specFetchParallel at a time and all within Config.SpecFetchTimeout, and
// caches those that arrive. It returns them by digest; each failure is
// counted and logged (rate-limited).
func (a *Agent) fetchSpecs(ctx context.Context, reqs []protocol.SpecRequest) map[string]protocol.TaskSpec {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.SpecFetchTimeout)
	defer cancel()
	var (
		mu  sync.Mutex
		got = make(map[string]protocol.TaskSpec, len(reqs))
		wg  sync.WaitGroup
		sem = make(chan struct{}, specFetchParallel)
	)
	for _, req := range reqs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			spec, err := a.fetchSpec(ctx, req)
			if err != nil {
				a.metrics.specFetchFailures.Inc()
				if ok, held := a.badMessages.Allow("spec_fetch " + req.Digest); ok {
					a.logger.Warn("cannot get a spec: its replicas are not started until it arrives (retrying); check that a coordinator is up and answers "+protocol.SpecGetSubject(a.cfg.ID),
						"service", req.Service, "version", req.Version, "spec_digest", req.Digest, "error", err, "dropped_since_last_log", held)
				}
				return
			}
			a.specs.put(req.Digest, spec)
			a.logger.Debug("spec fetched", "service", req.Service, "version", req.Version, "spec_digest", req.Digest)
			mu.Lock()
			got[req.Digest] = spec
			mu.Unlock()
		})
	}
	wg.Wait()
	return got
}

// fetchSpec requests one spec and checks the reply against the digest.
func (a *Agent) fetchSpec(ctx context.Context, req protocol.SpecRequest) (protocol.TaskSpec, error) {
	a.pubMu.Lock()
	nc := a.nc
	a.pubMu.Unlock()
	if nc == nil {
		return protocol.TaskSpec{}, errNotConnected
	}
	body, err := json.Marshal(req)
	if err != nil {
		return protocol.TaskSpec{}, fmt.Errorf("encode spec request: %w", err)
	}
	a.metrics.specFetches.Inc()
	subject := protocol.SpecGetSubject(a.cfg.ID)
	msg, err := nc.Request(ctx, subject, body)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return protocol.TaskSpec{}, fmt.Errorf("no coordinator answers %s: %w", subject, err)
	case errors.Is(err, context.DeadlineExceeded):
		return protocol.TaskSpec{}, fmt.Errorf("no answer on %s within %s: %w", subject, a.cfg.SpecFetchTimeout, err)
	case err != nil:
		return protocol.TaskSpec{}, fmt.Errorf("request on %s: %w", subject, err)
	}
	return protocol.DecodeSpecReply(msg.Data, req)
}

// retrySpecs retries the last applied set while some of its replicas wait
// for their spec (a.specWait): first Config.SpecRetryMin after it began
// waiting, then doubling up to Config.SpecRetryMax, until the specs arrive,
// a set without waiting replicas replaces it, or ctx is done.
func (a *Agent) retrySpecs(ctx context.Context) {
	backoff := a.cfg.SpecRetryMin
	timer := time.NewTimer(backoff)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.specWake:
			backoff = a.cfg.SpecRetryMin
			timer.Reset(backoff)
		case <-timer.C:
			a.mu.Lock()
			waiting := a.specWait
			a.mu.Unlock()
			if waiting == nil {
				continue
			}
			// The waiting set is shared with nothing else once stored, but
			// apply may store this copy in its place: resolve a copy.
			d := *waiting
			d.Replicas = slices.Clone(waiting.Replicas)
			a.applyDesired(ctx, &d)
			a.mu.Lock()
			still := a.specWait != nil
			a.mu.Unlock()
			if still {
				backoff = min(2*backoff, a.cfg.SpecRetryMax)
				timer.Reset(backoff)
			}
		}
	}
}
