package lbnode

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus collectors, registered on the injected
// registry. Collectors are safe for concurrent use.
type metrics struct {
	requests     *prometheus.CounterVec   // service, version, code
	duration     *prometheus.HistogramVec // service
	inFlight     *prometheus.GaugeVec     // service
	routeEpoch   *prometheus.GaugeVec     // service
	routeUpdates prometheus.Counter
	syncFailures prometheus.Counter
	retries      *prometheus.CounterVec // service
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_lb_requests_total",
			Help: "Requests proxied, by service, version of the replica that served it (\"none\" when no replica did) and HTTP status code.",
		}, []string{"service", "version", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "baton_lb_request_duration_seconds",
			Help:    "Time from receiving a request to the end of its response body.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"service"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_lb_in_flight_requests",
			Help: "Requests being proxied now.",
		}, []string{"service"}),
		routeEpoch: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_lb_route_epoch",
			Help: "Epoch (Raft index) of the route table served for the service.",
		}, []string{"service"}),
		routeUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_lb_route_updates_total",
			Help: "Route tables applied (newer epoch than the one held).",
		}),
		syncFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_lb_route_sync_failures_total",
			Help: "Route sync requests that got no answer (no leader, NATS down, timeout).",
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_lb_retries_total",
			Help: "Requests re-sent to another replica after the first one could not be reached.",
		}, []string{"service"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inFlight, m.routeEpoch, m.routeUpdates, m.syncFailures, m.retries} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
