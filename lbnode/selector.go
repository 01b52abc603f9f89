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
