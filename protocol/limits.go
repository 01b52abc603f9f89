package protocol

// Limits on what baton accepts. Every input — task files, API bodies and
// NATS messages — is checked against them where it arrives, so a message
// from a careless or hostile process is refused with a clear error instead
// of growing without bound downstream. docs/inputs.md lists every input
// with its limits and what a violation gets.
const (
	// MaxReplicas bounds replicas, min_replicas and max_replicas of one
	// service.
	MaxReplicas = 1000
	// MaxSpecBytes bounds a task spec encoded as JSON, which is what Raft
	// stores and what agents receive: the task file's limit plus room for
	// --env values and a resolved workdir.
	MaxSpecBytes = 96 << 10
	// MaxEnvs bounds the number of envs of a task (the file's and --env's
	// together).
	MaxEnvs = 256
	// MaxEnvValueBytes bounds one env's value.
	MaxEnvValueBytes = 16 << 10
	// MaxEnvsBytes bounds all of a task's env names and values together.
	MaxEnvsBytes = 32 << 10
	// MaxAgentIDLen bounds an agent id (a NATS subject token).
	MaxAgentIDLen = 63
	// MaxLBIDLen bounds an LB id.
	MaxLBIDLen = 128
	// MaxReasonLen bounds a replica's, GPU's or version's reason text.
	// Senders truncate longer text with TruncateReason.
	MaxReasonLen = 1024
	// MaxReplicasPerAgent bounds the replicas one agent runs (its desired
	// set and its reports); placement puts no more than this on an agent.
	MaxReplicasPerAgent = 1024
	// MaxGPUsPerAgent bounds the GPUs an agent reports.
	MaxGPUsPerAgent = 64
	// MaxLabels bounds an agent's labels.
	MaxLabels = 64
	// MaxServices bounds the services one message lists (an LB's ack, a
	// route sync reply).
	MaxServices = 10000
	// MaxEndpoints bounds one route table's endpoints: the READY replicas of
	// up to three versions (a rolling update beside a failed one).
	MaxEndpoints = 3 * MaxReplicas
	// MaxStatusBytes bounds an agent's status message and an LB's ack or
	// stats message.
	MaxStatusBytes = 1 << 20
	// MaxMessageBytes is the largest NATS message baton sends or accepts
	// (the embedded server's max_payload). A desired set or route sync
	// reply that would exceed it is not sent, and says so in the logs.
	MaxMessageBytes = 8 << 20
)

// TruncateReason shortens s to at most MaxReasonLen bytes, cutting at a
// UTF-8 boundary and marking the cut with "...".
func TruncateReason(s string) string {
	if len(s) <= MaxReasonLen {
		return s
	}
	cut := MaxReasonLen - 3
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "..."
}
