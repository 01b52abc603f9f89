package fleetsim

import (
	"math"
	"testing"
)

const sampleMetrics = `# HELP baton_coordinator_replicas Replicas by service and status (leader only).
# TYPE baton_coordinator_replicas gauge
baton_coordinator_replicas{service="a",status="READY"} 3
baton_coordinator_replicas{service="b",status="READY"} 4
baton_coordinator_replicas{service="b",status="FAILED"} 1
baton_coordinator_replicas{service="c\"x",status="STARTING"} 2
# TYPE baton_coordinator_reconcile_duration_seconds histogram
baton_coordinator_reconcile_duration_seconds_bucket{le="0.01"} 50
baton_coordinator_reconcile_duration_seconds_bucket{le="0.1"} 90
baton_coordinator_reconcile_duration_seconds_bucket{le="1"} 100
baton_coordinator_reconcile_duration_seconds_bucket{le="+Inf"} 100
baton_coordinator_reconcile_duration_seconds_sum 3.5
baton_coordinator_reconcile_duration_seconds_count 100
baton_coordinator_is_leader 1
`

func TestParseMetrics(t *testing.T) {
	m := ParseMetrics([]byte(sampleMetrics))
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"ready", m.Sum("baton_coordinator_replicas", map[string]string{"status": "READY"}), 7},
		{"all", m.Sum("baton_coordinator_replicas", nil), 10},
		{"escaped label", m.Sum("baton_coordinator_replicas", map[string]string{"service": `c"x`}), 2},
		{"no labels", m.Sum("baton_coordinator_is_leader", nil), 1},
		{"count", m.Sum("baton_coordinator_reconcile_duration_seconds_count", nil), 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestQuantile(t *testing.T) {
	b := ParseMetrics([]byte(sampleMetrics)).Buckets("baton_coordinator_reconcile_duration_seconds", nil)
	tests := []struct {
		name    string
		q       float64
		buckets map[float64]float64
		want    float64
	}{
		// rank 50 is the top of the first bucket.
		{"p50", 0.5, b, 0.01},
		// rank 70: halfway through (0.01, 0.1].
		{"p70", 0.7, b, 0.055},
		// rank 99: 9 of 10 into (0.1, 1].
		{"p99", 0.99, b, 0.91},
		// over a window: only the later 10 observations, all in (0.1, 1].
		{"delta", 0.5, HistDelta(b, map[float64]float64{0.01: 50, 0.1: 90, 1: 90, math.Inf(1): 90}), 0.55},
		// in the +Inf bucket: the highest finite bound.
		{"overflow", 0.99, map[float64]float64{0.1: 1, math.Inf(1): 10}, 0.1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Quantile(tt.q, tt.buckets); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
	if got := Quantile(0.99, map[float64]float64{math.Inf(1): 0}); !math.IsNaN(got) {
		t.Errorf("no observations: got %v, want NaN", got)
	}
	if got := MaxBucket(b); got != 1 {
		t.Errorf("MaxBucket = %v, want 1", got)
	}
	if got := MaxBucket(map[float64]float64{0.1: 1, math.Inf(1): 2}); !math.IsInf(got, 1) {
		t.Errorf("MaxBucket with overflow = %v, want +Inf", got)
	}
}
