package lbnode

import (
	"maps"
	"sync/atomic"
	"testing"

	"github.com/baton-dev/baton/protocol"
)

func TestSelectors(t *testing.T) {
	mk := func(loads ...int64) []*endpoint {
		var eps []*endpoint
		for i, l := range loads {
			b := &backend{addr: string(rune('a' + i))}
			b.inFlight.Store(l)
			eps = append(eps, &endpoint{ep: protocol.Endpoint{ReplicaID: i}, backend: b})
		}
		return eps
	}
	tests := []struct {
		name   string
		policy string
		loads  []int64
		picks  int
		want   map[int]int // replica index -> times picked
	}{
		{"round robin ignores load", protocol.PolicyRoundRobin, []int64{5, 0, 0}, 6, map[int]int{0: 2, 1: 2, 2: 2}},
		{"least load picks the idle one", protocol.PolicyLeastLoad, []int64{3, 0, 2}, 6, map[int]int{1: 6}},
		{"least load breaks ties round robin", protocol.PolicyLeastLoad, []int64{1, 1, 1}, 9, map[int]int{0: 3, 1: 3, 2: 3}},
		{"least load spreads among equal minimums", protocol.PolicyLeastLoad, []int64{0, 4, 0}, 4, map[int]int{0: 2, 2: 2}},
		{"unknown policy is least load", "fancy", []int64{2, 1}, 3, map[int]int{1: 3}},
		{"single endpoint", protocol.PolicyRoundRobin, []int64{0}, 3, map[int]int{0: 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSelector(tc.policy)
			eps := mk(tc.loads...)
			got := map[int]int{}
			for range tc.picks {
				got[s.Select(eps).ep.ReplicaID]++
			}
			if len(got) != len(tc.want) {
				t.Fatalf("picks %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("picks %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// TestPickSkipsEjected: both policies route around ejected backends, and
// use every candidate when all of them are ejected (panic mode).
func TestPickSkipsEjected(t *testing.T) {
	tests := []struct {
		name    string
		policy  string
		loads   []int64
		ejected []int // indexes of ejected endpoints
		picks   int
		want    map[int]int // replica index -> times picked
	}{
		{"round robin skips the ejected one", protocol.PolicyRoundRobin, []int64{0, 0, 0}, []int{1}, 6, map[int]int{0: 3, 2: 3}},
		{"round robin keeps the healthy even", protocol.PolicyRoundRobin, []int64{0, 0, 0, 0}, []int{0, 3}, 8, map[int]int{1: 4, 2: 4}},
		{"least load skips an idle ejected one", protocol.PolicyLeastLoad, []int64{0, 3, 5}, []int{0}, 4, map[int]int{1: 4}},
		{"all ejected: round robin over all (panic mode)", protocol.PolicyRoundRobin, []int64{0, 0}, []int{0, 1}, 4, map[int]int{0: 2, 1: 2}},
		{"all ejected: least load over all (panic mode)", protocol.PolicyLeastLoad, []int64{2, 0}, []int{0, 1}, 3, map[int]int{1: 3}},
		{"none ejected", protocol.PolicyRoundRobin, []int64{0, 0}, nil, 4, map[int]int{0: 2, 1: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var count atomic.Int32
			r := &route{selector: newSelector(tc.policy), ejected: &count}
			for i, l := range tc.loads {
				b := &backend{addr: string(rune('a' + i))}
				b.inFlight.Store(l)
				r.endpoints = append(r.endpoints, &endpoint{ep: protocol.Endpoint{ReplicaID: i}, backend: b})
			}
			for _, i := range tc.ejected {
				r.endpoints[i].backend.health.ejected.Store(true)
				count.Add(1)
			}
			got := map[int]int{}
			for range tc.picks {
				got[r.pick(r.endpoints).ep.ReplicaID]++
			}
			if !maps.Equal(got, tc.want) {
				t.Fatalf("picks %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPickDoesNotAllocate: with nothing ejected, choosing a replica costs
// no allocation, for either policy.
func TestPickDoesNotAllocate(t *testing.T) {
	for _, policy := range []string{protocol.PolicyRoundRobin, protocol.PolicyLeastLoad} {
		t.Run(policy, func(t *testing.T) {
			var count atomic.Int32
			r := &route{selector: newSelector(policy), ejected: &count}
			for i := range 4 {
				b := &backend{addr: string(rune('a' + i))}
				b.inFlight.Store(int64(i % 2))
				r.endpoints = append(r.endpoints, &endpoint{backend: b})
			}
			if allocs := testing.AllocsPerRun(1000, func() { r.pick(r.endpoints) }); allocs != 0 {
				t.Fatalf("pick allocates %v times per call with nothing ejected", allocs)
			}
		})
	}
}
