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

	invalidMessages  *prometheus.CounterVec // subject: "routes" or "routes.sync"
	ejections        *prometheus.CounterVec // service
	ejected          *prometheus.GaugeVec   // service
	upstreamFailures *prometheus.CounterVec // service, kind: connect, reset or timeout
}

// Values of baton_lb_invalid_messages_total's subject label.
const (
	subjectLabelRoutes = "routes"
	subjectLabelSync   = "routes.sync"
)

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
		invalidMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_lb_invalid_messages_total",
			Help: "Messages dropped because they were too large, undecodable or invalid: subject \"routes\" counts pushed route tables, \"routes.sync\" sync replies and each invalid table in one.",
		}, []string{"subject"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_lb_ejections_total",
			Help: "Replicas this LB ejected from selection after consecutive failures (passive health).",
		}, []string{"service"}),
		ejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_lb_ejected_replicas",
			Help: "Replicas this LB has ejected now (passive health); they get traffic again when their ejection time ends, or when every replica of the service is ejected.",
		}, []string{"service"}),
		upstreamFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_lb_upstream_failures_total",
			Help: "Attempts on a replica that got no HTTP response, by kind: connect (dial error), reset (connection broken before the response headers), timeout (no response headers within the service's response timeout).",
		}, []string{"service", "kind"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inFlight, m.routeEpoch, m.routeUpdates, m.syncFailures, m.retries,
		m.invalidMessages, m.ejections, m.ejected, m.upstreamFailures} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Present from the start, so that rates and alerts see a zero.
	m.invalidMessages.WithLabelValues(subjectLabelRoutes)
	m.invalidMessages.WithLabelValues(subjectLabelSync)
	return m, nil
}
