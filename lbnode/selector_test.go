package lbnode

import (
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
