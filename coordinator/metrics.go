package coordinator

import (
	"github.com/prometheus/client_golang/prometheus"
)

// passBuckets resolve reconcile passes from 100 µs to 10 s.
var passBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10}

// metrics are the coordinator's Prometheus series.
type metrics struct {
	commands     *prometheus.CounterVec
	replicas     *prometheus.GaugeVec
	isLeader     prometheus.Gauge
	raftState    *prometheus.GaugeVec
	appliedIndex prometheus.Gauge
	flips        prometheus.Counter
	flipSeconds  prometheus.Histogram
	reconciles   prometheus.Counter
	agentsAlive  prometheus.Gauge
	lbsLive      prometheus.Gauge

	reconcileSeconds prometheus.Histogram
	applySeconds     prometheus.Histogram
	phaseSeconds     *prometheus.HistogramVec
	desiredSent      prometheus.Counter
	specRequests     *prometheus.CounterVec
	snapshots        *prometheus.CounterVec

	forwarded        *prometheus.CounterVec
	fsmApplied       *prometheus.CounterVec
	invalidMessages  *prometheus.CounterVec
	identityMismatch *prometheus.CounterVec
	natsRefused      prometheus.Counter
	reconcilePanics  prometheus.Counter
	desiredTooLarge  prometheus.Counter

	bundlesStored       prometheus.Gauge
	bundleBytes         prometheus.Gauge
	bundleUploads       *prometheus.CounterVec
	bundleTransfers     *prometheus.CounterVec
	bundleChunkRequests *prometheus.CounterVec
	bundleChunkBytes    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_coordinator_raft_commands_total",
			Help: "Raft commands applied through this node, by type.",
		}, []string{"type"}),
		replicas: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_coordinator_replicas",
			Help: "Replicas by service and status (leader only).",
		}, []string{"service", "status"}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_coordinator_is_leader",
			Help: "1 while this node is the Raft leader.",
		}),
		raftState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_coordinator_raft_state",
			Help: "1 for this node's current Raft state (Leader, Follower, Candidate, Shutdown).",
		}, []string{"state"}),
		appliedIndex: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_coordinator_raft_applied_index",
			Help: "Index of the last Raft entry applied to the FSM.",
		}),
		flips: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_coordinator_flips_total",
			Help: "blue_green flips committed by this leader.",
		}),
		flipSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_coordinator_update_to_flip_seconds",
			Help:    "Time from a version's creation to its flip.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 12),
		}),
		reconciles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_coordinator_reconciles_total",
			Help: "Controller reconcile passes.",
		}),
		agentsAlive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_coordinator_agents_alive",
			Help: "Agents marked alive.",
		}),
		lbsLive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_coordinator_lbs_live",
			Help: "LB nodes that acknowledged route tables recently.",
		}),
		reconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_coordinator_reconcile_duration_seconds",
			Help:    "Duration of one controller reconcile pass (leader only).",
			Buckets: passBuckets,
		}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_coordinator_raft_apply_seconds",
			Help:    "Time from proposing a command to its result (committed and applied), on this node.",
			Buckets: passBuckets,
		}),
		phaseSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "baton_coordinator_reconcile_phase_seconds",
			Help:    "Duration of each phase of a reconcile pass: read, agents, reports, plan, bundles, routes, desired, metrics.",
			Buckets: passBuckets,
		}, []string{"phase"}),
		desiredSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_coordinator_desired_sets_sent_total",
			Help: "Desired sets sent to agents (on change and on repair).",
		}),
		specRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_coordinator_spec_requests_total",
			Help: "Spec requests from agents answered by this node, by result (ok, not_found, not_assigned: no replica of it on the asking agent, invalid).",
		}, []string{"result"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_coordinator_snapshots_total",
			Help: "Raft snapshots this node asked for because its log grew past --snapshot-bytes, by result.",
		}, []string{"result"}),
		fsmApplied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_coordinator_fsm_applied_total",
			Help: "Commands this node's FSM applied from the Raft log (every node applies every command, replays included), by type and result (ok, or rejected by a guard).",
		}, []string{"type", "result"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_coordinator_forwarded_requests_total",
			Help: "API requests this node forwarded to the leader and got an answer for, by method.",
		}, []string{"method"}),
		invalidMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_coordinator_invalid_messages_total",
			Help: "NATS messages dropped because they were oversize, undecodable or invalid, by subscription subject.",
		}, []string{"subject"}),
		identityMismatch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_coordinator_identity_mismatch_total",
			Help: "NATS messages dropped because the sender their subject names is not the one their content names (agent X reporting for agent Y), by subscription subject.",
		}, []string{"subject"}),
		natsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_coordinator_nats_connections_refused_total",
			Help: "Connections this node's embedded NATS server refused: no certificate of the cluster's CA with an agent, LB or coordinator role.",
		}),
		reconcilePanics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_coordinator_reconcile_panics_total",
			Help: "Reconcile passes that failed with a panic (a bug; the next pass runs as usual).",
		}),
		desiredTooLarge: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_coordinator_desired_set_too_large_total",
			Help: "Desired sets not sent because they exceeded the NATS payload limit.",
		}),
		bundlesStored: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_coordinator_bundles_stored",
			Help: "Bundles this coordinator holds a file of (committed or not yet), as of its last repair pass.",
		}),
		bundleBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_coordinator_bundles_stored_bytes",
			Help: "Bytes of the bundle files this coordinator holds, as of its last repair pass.",
		}),
		bundleUploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_coordinator_bundle_uploads_total",
			Help: "Bundle uploads (PUT /v1/bundles/{digest}) this node received, by result: created, exists (committed before), too_large, digest_mismatch, no_majority (too few coordinators took it), failed.",
		}, []string{"result"}),
		bundleTransfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_coordinator_bundle_transfers_total",
			Help: "Bundle files moved between coordinators, by kind (push: this node sent one it was uploaded; receive: another node pushed one here; pull: this node fetched a missing one) and result (ok, error).",
		}, []string{"kind", "result"}),
		bundleChunkRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_coordinator_bundle_chunk_requests_total",
			Help: "Bundle chunk requests from agents answered by this node, by result (ok, not_assigned: no replica of a version naming it on the asking agent, not_found, busy, invalid).",
		}, []string{"result"}),
		bundleChunkBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_coordinator_bundle_chunk_bytes_total",
			Help: "Bundle bytes this node sent to agents over NATS.",
		}),
	}
	reg.MustRegister(m.bundlesStored, m.bundleBytes, m.bundleUploads, m.bundleTransfers, m.bundleChunkRequests, m.bundleChunkBytes)
	reg.MustRegister(m.commands, m.replicas, m.isLeader, m.raftState, m.appliedIndex,
		m.flips, m.flipSeconds, m.reconciles, m.agentsAlive, m.lbsLive,
		m.invalidMessages, m.identityMismatch, m.natsRefused, m.reconcilePanics, m.desiredTooLarge,
		m.reconcileSeconds, m.applySeconds, m.phaseSeconds, m.desiredSent, m.specRequests, m.snapshots, m.forwarded, m.fsmApplied)
	return m
}
