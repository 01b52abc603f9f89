package lbnode

import (
	"sync/atomic"

	"github.com/baton-dev/baton/protocol"
)

// selector picks the endpoint a request goes to. Select is called
// concurrently by every request of a service, so implementations keep their
// state in atomics; eps is never empty and must not be modified.
type selector interface {
	Select(eps []*endpoint) *endpoint
}

var (
	_ selector = (*roundRobin)(nil)
	_ selector = (*leastLoad)(nil)
)

// newSelector returns the policy named by a route table. Unknown or empty
// names get least_load, the task spec's default.
func newSelector(policy string) selector {
	if policy == protocol.PolicyRoundRobin {
		return &roundRobin{}
	}
	return &leastLoad{}
}

// policyName is the name newSelector's result answers to.
func policyName(s selector) string {
	if _, ok := s.(*roundRobin); ok {
		return protocol.PolicyRoundRobin
	}
	return protocol.PolicyLeastLoad
}

// roundRobin sends each request to the next endpoint in turn.
type roundRobin struct {
	next atomic.Uint64
}

// Select implements selector.
func (r *roundRobin) Select(eps []*endpoint) *endpoint {
	n := r.next.Add(1) - 1
	return eps[n%uint64(len(eps))]
}

// leastLoad sends each request to the endpoint with the fewest requests in
// flight (counted per replica address, across every service table swap).
// Ties are broken round-robin: the scan starts one place further each time.
type leastLoad struct {
	next atomic.Uint64
}

// Select implements selector.
func (l *leastLoad) Select(eps []*endpoint) *endpoint {
	n := uint64(len(eps))
	start := (l.next.Add(1) - 1) % n
	best := eps[start]
	bestLoad := best.backend.inFlight.Load()
	for i := uint64(1); i < n && bestLoad > 0; i++ {
		e := eps[(start+i)%n]
		if load := e.backend.inFlight.Load(); load < bestLoad {
			best, bestLoad = e, load
		}
	}
	return best
}

// pick chooses the endpoint of one attempt among cands (never empty): the
// route's policy over the candidates that are not ejected (outlier.go), or
// over all of them when every one is ejected. That is panic mode, as with
// Envoy's panic threshold: ejection is this LB's guess from its own
// failures, so it steers traffic but never refuses it. While nothing of the
// service is ejected (the common case) this is the policy's Select, one
// atomic load more and no allocation.
func (r *route) pick(cands []*endpoint) *endpoint {
	if r.ejected == nil || r.ejected.Load() == 0 {
		return r.selector.Select(cands)
	}
	return r.selector.Select(notEjected(cands))
}

// notEjected returns the endpoints of cands whose backend is not ejected,
// or cands itself when that is all or none of them.
func notEjected(cands []*endpoint) []*endpoint {
	healthy := 0
	for _, e := range cands {
		if !e.backend.health.ejected.Load() {
			healthy++
		}
	}
	if healthy == 0 || healthy == len(cands) {
		return cands
	}
	out := make([]*endpoint, 0, healthy)
	for _, e := range cands {
		if !e.backend.health.ejected.Load() {
			out = append(out, e)
		}
	}
	if len(out) == 0 { // all ejected between the two passes
		return cands
	}
	return out
}
