package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/protocol"
)

// metrics are the agent's Prometheus metrics. Each carries the const label
// agent=<id>.
type metrics struct {
	replicas       *prometheus.GaugeVec // by status
	probeFailures  prometheus.Counter
	gpus           *prometheus.GaugeVec // by healthy
	replicaStarts  prometheus.Counter
	replicaFails   *prometheus.CounterVec // by status
	statusMessages prometheus.Counter
	// invalidMessages counts desired sets dropped as invalid.
	invalidMessages prometheus.Counter
	// specFetches counts spec requests sent; specFetchFailures those that
	// brought no usable spec (no answer, an error reply, a digest or
	// bytes that do not match, an invalid spec).
	specFetches       prometheus.Counter
	specFetchFailures prometheus.Counter
	// bundleFetches counts bundles downloaded; bundleFetchFailures
	// replicas failed because their code could not be fetched.
	bundleFetches       prometheus.Counter
	bundleFetchFailures prometheus.Counter
	// isolation is 1 for the way replicas are isolated (mode v2, hybrid,
	// v1 or none).
	isolation *prometheus.GaugeVec
}

// reportedStatuses are the states a replica on an agent can be in; the
// replicas gauge has a series for each, zero when none.
var reportedStatuses = []protocol.ReplicaStatus{
	protocol.ReplicaProvisioning,
	protocol.ReplicaStarting,
	protocol.ReplicaReady,
	protocol.ReplicaNotReady,
	protocol.ReplicaShuttingDown,
	protocol.ReplicaFailed,
	protocol.ReplicaFailedInitialDelay,
	protocol.ReplicaFailedProbing,
}

func newMetrics(reg prometheus.Registerer, agentID string) (*metrics, error) {
	m := &metrics{
		replicas: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_agent_replicas",
			Help: "Replicas this agent knows, by status.",
		}, []string{"status"}),
		probeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_agent_probe_failures_total",
			Help: "Readiness probes that did not get HTTP 200.",
		}),
		gpus: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_agent_gpus",
			Help: "GPUs on this agent, by health.",
		}, []string{"healthy"}),
		replicaStarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_agent_replica_starts_total",
			Help: "Replicas this agent has started.",
		}),
		replicaFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_agent_replica_failures_total",
			Help: "Replicas that ended in a FAILED state, by that state.",
		}, []string{"status"}),
		statusMessages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_agent_status_messages_total",
			Help: "AgentStatus messages published.",
		}),
		invalidMessages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_agent_invalid_messages_total",
			Help: "Desired sets dropped because they were oversize, undecodable, invalid or for another agent.",
		}),
		specFetches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_agent_spec_fetches_total",
			Help: "Specs requested from the coordinators (each is fetched once, then cached).",
		}),
		specFetchFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_agent_spec_fetch_failures_total",
			Help: "Spec fetches that failed (no answer, error reply, digest mismatch, invalid spec); the replicas needing them wait and are retried.",
		}),
		bundleFetches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_agent_bundle_fetches_total",
			Help: "Bundles (a version's code) downloaded from the coordinators; each is fetched once per agent while cached.",
		}),
		bundleFetchFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_agent_bundle_fetch_failures_total",
			Help: "Replicas failed because their version's bundle could not be fetched, verified or unpacked.",
		}),
		isolation: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_agent_isolation",
			Help: "1 for how replicas are isolated: cgroups v2, hybrid or v1, or none (a subreaper tracks each tree).",
		}, []string{"mode"}),
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"agent": agentID}, reg)
	for _, c := range []prometheus.Collector{m.replicas, m.probeFailures, m.gpus, m.replicaStarts, m.replicaFails, m.statusMessages, m.invalidMessages, m.specFetches, m.specFetchFailures, m.bundleFetches, m.bundleFetchFailures, m.isolation} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe sets the gauges from one status report.
func (m *metrics) observe(st *protocol.AgentStatus) {
	counts := map[protocol.ReplicaStatus]int{}
	for _, r := range st.Replicas {
		counts[r.Status]++
	}
	for _, s := range reportedStatuses {
		m.replicas.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
	healthy, unhealthy := 0, 0
	for _, g := range st.Agent.Capacity.GPUs {
		if g.Healthy {
			healthy++
		} else {
			unhealthy++
		}
	}
	m.gpus.WithLabelValues("true").Set(float64(healthy))
	m.gpus.WithLabelValues("false").Set(float64(unhealthy))
	m.statusMessages.Inc()
}
