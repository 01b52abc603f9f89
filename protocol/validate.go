package protocol

import (
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrInvalidMessage is matched (with errors.Is) by every error the
// Validate methods of NATS messages return. A daemon drops such a message,
// logs why and counts it; it never acts on part of it.
var ErrInvalidMessage = errors.New("invalid message")

var (
	agentIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	lbIDRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_:-]*$`)
	hostRE    = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
	labelRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)
	gpuUUIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)
)

// ValidateAgentID checks an agent id: 1 to 63 lowercase letters, digits
// and '-', starting with a letter or digit. Agent ids are NATS subject
// tokens (baton.agent.<id>.desired), so nothing else is allowed.
func ValidateAgentID(id string) error {
	const valid = "use 1-63 lowercase letters, digits and '-', starting with a letter or digit (e.g. gpu-node-1)"
	switch {
	case id == "":
		return fmt.Errorf("agent id is empty; %s", valid)
	case len(id) > MaxAgentIDLen:
		return fmt.Errorf("agent id %q is %d characters long; %s", abbreviate(id), len(id), valid)
	case !agentIDRE.MatchString(id):
		return fmt.Errorf("agent id %q is not valid; %s", abbreviate(id), valid)
	}
	return nil
}

// AgentIDFromHostname derives a valid agent id from a host name, as the
// agent does when --id is not given: lowercased, every character other than
// a letter, digit or '-' (the dots of a domain name) turned into '-', cut to
// 63 characters. "GPU-Node.Example.COM" becomes "gpu-node-example-com". A
// name with nothing usable in it gives "agent".
func AgentIDFromHostname(host string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(host) {
		switch {
		case (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	id := strings.Trim(b.String(), "-")
	for strings.Contains(id, "--") {
		id = strings.ReplaceAll(id, "--", "-")
	}
	if len(id) > MaxAgentIDLen {
		id = strings.TrimRight(id[:MaxAgentIDLen], "-")
	}
	if id == "" {
		return "agent"
	}
	return id
}

// ValidateLBID checks an LB id: 1 to 128 letters, digits, '.', '_', ':'
// and '-', starting with a letter or digit (a host name followed by a pid,
// say).
func ValidateLBID(id string) error {
	const valid = "use 1-128 letters, digits, '_', ':' and '-', starting with a letter or digit (e.g. lb-1); it is a NATS subject token, so no '.'"
	switch {
	case id == "":
		return fmt.Errorf("lb id is empty; %s", valid)
	case len(id) > MaxLBIDLen:
		return fmt.Errorf("lb id %q is %d characters long; %s", abbreviate(id), len(id), valid)
	case !lbIDRE.MatchString(id):
		return fmt.Errorf("lb id %q is not valid; %s", abbreviate(id), valid)
	}
	return nil
}

// ValidateHost checks a host as agents advertise it: an IP address or a
// DNS name of at most 253 characters.
func ValidateHost(host string) error {
	if net.ParseIP(host) != nil {
		return nil
	}
	if host == "" || len(host) > 253 || !hostRE.MatchString(host) {
		return fmt.Errorf("%q is not an IP address or host name", abbreviate(host))
	}
	return nil
}

// ValidateEndpoint checks a host:port address: a valid host (see
// ValidateHost) and a port from 1 to 65535.
func ValidateEndpoint(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", abbreviate(addr))
	}
	if err := ValidateHost(host); err != nil {
		return fmt.Errorf("%q: host %w", abbreviate(addr), err)
	}
	if _, err := parsePortNumber(port); err != nil {
		return fmt.Errorf("%q: %w", abbreviate(addr), err)
	}
	return nil
}

func parsePortNumber(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", abbreviate(s))
	}
	return n, nil
}

// Valid reports whether s is one of the replica states.
func (s ReplicaStatus) Valid() bool {
	switch s {
	case ReplicaPending, ReplicaProvisioning, ReplicaStarting, ReplicaReady, ReplicaNotReady,
		ReplicaShuttingDown, ReplicaFailed, ReplicaFailedInitialDelay, ReplicaFailedProbing, ReplicaFailedPlacement:
		return true
	}
	return false
}

// Validate checks an agent's status message: its agent's identity and
// capacity, and every replica report, against the limits in limits.go.
// The error names the field and matches ErrInvalidMessage.
func (s *AgentStatus) Validate() error {
	if err := s.Agent.validate(); err != nil {
		return invalid("agent.%v", err)
	}
	if len(s.Replicas) > MaxReplicasPerAgent {
		return invalid("replicas: %d reports; at most %d", len(s.Replicas), MaxReplicasPerAgent)
	}
	seen := make(map[string]bool, len(s.Replicas))
	for i := range s.Replicas {
		r := &s.Replicas[i]
		if err := r.validate(); err != nil {
			return invalid("replicas[%d].%v", i, err)
		}
		if seen[r.Key()] {
			return invalid("replicas[%d]: replica %s is reported twice", i, r.Key())
		}
		seen[r.Key()] = true
	}
	return nil
}

func (a *Agent) validate() error {
	if err := ValidateAgentID(a.ID); err != nil {
		return fieldError("id", err)
	}
	if a.Address != "" {
		if err := ValidateEndpoint(a.Address); err != nil {
			return fieldError("address", err)
		}
	}
	if err := ValidateHost(a.Host); err != nil {
		return fieldError("host", err)
	}
	if err := checkText(a.Region, 63); err != nil {
		return fieldError("region", err)
	}
	if err := checkText(a.NetNS, 128); err != nil {
		return fieldError("netns", err)
	}
	if len(a.Labels) > MaxLabels {
		return fmt.Errorf("labels: %d labels; at most %d", len(a.Labels), MaxLabels)
	}
	for k, v := range a.Labels {
		if len(k) > 63 || !labelRE.MatchString(k) {
			return fmt.Errorf("labels: key %q is not valid; use up to 63 letters, digits, '.', '_', '/' and '-'", abbreviate(k))
		}
		if err := checkText(v, 256); err != nil {
			return fieldError("labels."+k, err)
		}
	}
	if err := a.PortRange.validate(); err != nil {
		return fieldError("port_range", err)
	}
	return a.Capacity.validate()
}

func (c *Capacity) validate() error {
	if !finiteIn(c.CPUs, 0, 1e5) {
		return fmt.Errorf("capacity.cpus: %v is not a number from 0 to 100000", c.CPUs)
	}
	if !finiteIn(c.MemoryGB, 0, 1e8) {
		return fmt.Errorf("capacity.memory_gb: %v is not a number from 0 to 1e8", c.MemoryGB)
	}
	if len(c.GPUs) > MaxGPUsPerAgent {
		return fmt.Errorf("capacity.gpus: %d GPUs; at most %d", len(c.GPUs), MaxGPUsPerAgent)
	}
	uuids := make(map[string]bool, len(c.GPUs))
	for i, g := range c.GPUs {
		if err := ValidateGPUUUID(g.UUID); err != nil {
			return fmt.Errorf("capacity.gpus[%d].uuid: %w", i, err)
		}
		if uuids[g.UUID] {
			return fmt.Errorf("capacity.gpus[%d].uuid: %q is listed twice", i, g.UUID)
		}
		uuids[g.UUID] = true
		if err := checkText(g.Name, 128); err != nil {
			return fmt.Errorf("capacity.gpus[%d].name: %w", i, err)
		}
		if err := checkText(g.Reason, MaxReasonLen); err != nil {
			return fmt.Errorf("capacity.gpus[%d].reason: %w", i, err)
		}
		if g.Index < 0 || g.MemoryMB < 0 {
			return fmt.Errorf("capacity.gpus[%d]: index and memory_mb must not be negative", i)
		}
	}
	return nil
}

// ValidateGPUUUID checks a GPU's UUID as NVML reports it (GPU-5f3c...): 1
// to 128 letters, digits, '.', '_', ':' and '-'. UUIDs are joined with
// commas into CUDA_VISIBLE_DEVICES, so a comma is not allowed.
func ValidateGPUUUID(uuid string) error {
	if uuid == "" || len(uuid) > 128 || !gpuUUIDRE.MatchString(uuid) {
		return fmt.Errorf("%q is not a GPU UUID (letters, digits, '.', '_', ':' and '-', up to 128)", abbreviate(uuid))
	}
	return nil
}

func (p PortRange) validate() error {
	if p == (PortRange{}) {
		return nil
	}
	if p.Min < 1 || p.Max > 65535 || p.Min > p.Max {
		return fmt.Errorf("%d-%d is not a range of ports from 1 to 65535", p.Min, p.Max)
	}
	return nil
}

func (r *ReplicaReport) validate() error {
	if err := ValidateServiceName(r.Service); err != nil {
		return fieldError("service", err)
	}
	if r.ReplicaID < 1 || r.ReplicaID > math.MaxInt32 {
		return fmt.Errorf("replica_id: %d is not a replica id (1 or more)", r.ReplicaID)
	}
	if r.Version < 1 || r.Version > math.MaxInt32 {
		return fmt.Errorf("version: %d is not a version (1 or more)", r.Version)
	}
	if !r.Status.Valid() {
		return fmt.Errorf("status: %q is not a replica status", abbreviate(string(r.Status)))
	}
	if r.Endpoint != "" {
		if err := ValidateEndpoint(r.Endpoint); err != nil {
			return fieldError("endpoint", err)
		}
	}
	if r.PID < 0 {
		return fmt.Errorf("pid: %d is negative", r.PID)
	}
	if err := checkText(r.Reason, MaxReasonLen); err != nil {
		return fieldError("reason", err)
	}
	return nil
}

// Validate checks a desired set as an agent receives it: the agent id, the
// number of replicas and each assignment, its spec included. The error
// names the field and matches ErrInvalidMessage.
func (d *DesiredReplicas) Validate() error {
	if err := ValidateAgentID(d.AgentID); err != nil {
		return invalid("agent_id: %v", err)
	}
	if len(d.Replicas) > MaxReplicasPerAgent {
		return invalid("replicas: %d assignments; at most %d", len(d.Replicas), MaxReplicasPerAgent)
	}
	seen := make(map[string]bool, len(d.Replicas))
	for i := range d.Replicas {
		a := &d.Replicas[i]
		if err := a.validate(); err != nil {
			return invalid("replicas[%d].%v", i, err)
		}
		if seen[a.Key()] {
			return invalid("replicas[%d]: replica %s is assigned twice", i, a.Key())
		}
		seen[a.Key()] = true
	}
	return nil
}

func (a *ReplicaAssignment) validate() error {
	if err := ValidateServiceName(a.Service); err != nil {
		return fieldError("service", err)
	}
	if a.ReplicaID < 1 || a.ReplicaID > math.MaxInt32 {
		return fmt.Errorf("replica_id: %d is not a replica id (1 or more)", a.ReplicaID)
	}
	if a.Version < 1 || a.Version > math.MaxInt32 {
		return fmt.Errorf("version: %d is not a version (1 or more)", a.Version)
	}
	if a.Port < 1 || a.Port > 65535 {
		return fmt.Errorf("port: %d is not a port from 1 to 65535", a.Port)
	}
	if len(a.GPUUUIDs) > MaxGPUsPerAgent {
		return fmt.Errorf("gpu_uuids: %d GPUs; at most %d", len(a.GPUUUIDs), MaxGPUsPerAgent)
	}
	for i, u := range a.GPUUUIDs {
		if err := ValidateGPUUUID(u); err != nil {
			return fmt.Errorf("gpu_uuids[%d]: %w", i, err)
		}
	}
	if a.SpecDigest != "" {
		if err := ValidateSpecDigest(a.SpecDigest); err != nil {
			return fieldError("spec_digest", err)
		}
	}
	if a.resolved {
		if err := a.Spec.Validate(); err != nil {
			return fieldError("spec", err)
		}
	}
	return nil
}

// Validate checks the invariants every stored or received spec must keep,
// the ones ParseTask guarantees for what it returns: a run command, a
// probe path, known policies, replica counts and seconds in range, env
// names and sizes (secrets' too), an absolute workdir. It is for specs that did not come
// straight from ParseTask (agents check what the coordinator sends them).
func (t *TaskSpec) Validate() error {
	if strings.TrimSpace(t.Run) == "" {
		return errors.New("run: is empty")
	}
	if len(t.Run) > MaxSpecBytes || len(t.Setup) > MaxSpecBytes {
		return fmt.Errorf("run and setup: longer than %d bytes", MaxSpecBytes)
	}
	if t.Workdir != "" && (!filepath.IsAbs(t.Workdir) || strings.ContainsRune(t.Workdir, 0) || len(t.Workdir) > 4096) {
		return fmt.Errorf("workdir: %q is not an absolute path", abbreviate(t.Workdir))
	}
	if t.Bundle != "" {
		if err := ValidateBundleDigest(t.Bundle); err != nil {
			return fmt.Errorf("bundle: %v", err)
		}
	}
	if len(t.FileMounts) > MaxFileMounts {
		return fmt.Errorf("file_mounts: %d entries; at most %d", len(t.FileMounts), MaxFileMounts)
	}
	for target, src := range t.FileMounts {
		if err := ValidateMountTarget(target); err != nil {
			return fmt.Errorf("file_mounts: %v", err)
		}
		if src == "" || len(src) > 4096 || strings.ContainsRune(src, 0) {
			return fmt.Errorf("file_mounts: %q: source is not a path", abbreviate(target))
		}
	}
	if err := ValidateEnvs(t.Envs); err != nil {
		return fieldError("envs", err)
	}
	if len(t.Secrets) > 0 {
		// Envs and secrets share the limits; no name is in both. The
		// messages name secrets, never their values.
		all := make(map[string]string, len(t.Envs)+len(t.Secrets))
		for k, v := range t.Envs {
			all[k] = v
		}
		for k, v := range t.Secrets {
			if _, ok := t.Envs[k]; ok {
				return fmt.Errorf("secrets.%s: is also an env; a name can be an env or a secret, not both", k)
			}
			all[k] = v
		}
		if err := ValidateEnvs(t.Secrets); err != nil {
			return fieldError("secrets", err)
		}
		if err := ValidateEnvs(all); err != nil {
			return fieldError("envs and secrets", err)
		}
	}
	s := &t.Service
	p := &s.ReadinessProbe
	if !strings.HasPrefix(p.Path, "/") || strings.ContainsAny(p.Path, " \t\r\n\x00") || len(p.Path) > 2048 {
		return fmt.Errorf("service.readiness_probe.path: %q is not a path like /health", abbreviate(p.Path))
	}
	if p.InitialDelaySeconds < 0 || p.TimeoutSeconds < 0 {
		return errors.New("service.readiness_probe: seconds must not be negative")
	}
	if len(p.PostData) > 64<<10 || len(p.Headers) > 64 {
		return errors.New("service.readiness_probe: post_data or headers too large")
	}
	for k, v := range p.Headers {
		if k == "" || strings.ContainsAny(k+v, "\r\n\x00") {
			return fmt.Errorf("service.readiness_probe.headers: %q is not a valid header", abbreviate(k))
		}
	}
	rp := &s.ReplicaPolicy
	if rp.MinReplicas < 1 || rp.MinReplicas > MaxReplicas || rp.MaxReplicas < rp.MinReplicas || rp.MaxReplicas > MaxReplicas {
		return fmt.Errorf("service.replica_policy: min_replicas %d and max_replicas %d must be from 1 to %d, min <= max",
			rp.MinReplicas, rp.MaxReplicas, MaxReplicas)
	}
	if s.Port < 0 || s.Port > 65535 {
		return fmt.Errorf("service.ports: %d is not a port", s.Port)
	}
	if s.ResponseTimeoutSeconds < 0 {
		return errors.New("service.response_timeout_seconds: must not be negative")
	}
	switch s.LoadBalancingPolicy {
	case "", PolicyRoundRobin, PolicyLeastLoad:
	default:
		return fmt.Errorf("service.load_balancing_policy: %q is not a policy", abbreviate(s.LoadBalancingPolicy))
	}
	r := &t.Resources
	if !finiteIn(r.CPUs.Value, 0, 1e5) || !finiteIn(r.Memory.Value, 0, 1e8) {
		return errors.New("resources: cpus or memory out of range")
	}
	if len(r.Accelerators.Options) > 16 || len(r.Ports) > 1024 {
		return errors.New("resources: too many accelerator options or ports")
	}
	for _, o := range r.Accelerators.Options {
		if o.Count < 1 || o.Count > MaxGPUsPerAgent || o.Name == "" || len(o.Name) > 128 {
			return fmt.Errorf("resources.accelerators: %q:%d is not valid", abbreviate(o.Name), o.Count)
		}
	}
	return nil
}

// ValidateEnvs checks envs against MaxEnvs, MaxEnvValueBytes and
// MaxEnvsBytes and that every name is an environment variable name.
func ValidateEnvs(envs map[string]string) error {
	if len(envs) > MaxEnvs {
		return fmt.Errorf("%d envs; at most %d", len(envs), MaxEnvs)
	}
	total := 0
	for k, v := range envs {
		if err := ValidateEnvName(k); err != nil {
			return err
		}
		if len(v) > MaxEnvValueBytes {
			return fmt.Errorf("%s: the value is %d bytes; at most %d", k, len(v), MaxEnvValueBytes)
		}
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("%s: the value contains a NUL byte", k)
		}
		total += len(k) + len(v)
	}
	if total > MaxEnvsBytes {
		return fmt.Errorf("names and values are %d bytes together; at most %d", total, MaxEnvsBytes)
	}
	return nil
}

// Validate checks a route table as an LB receives it. The error names the
// field and matches ErrInvalidMessage.
func (t *RouteTable) Validate() error {
	if err := ValidateServiceName(t.Service); err != nil {
		return invalid("service: %v", err)
	}
	if t.Port < 0 || t.Port > 65535 || (t.Port == 0 && !t.Deleted) {
		return invalid("port: %d is not a port from 1 to 65535", t.Port)
	}
	switch t.Policy {
	case "", PolicyRoundRobin, PolicyLeastLoad:
	default:
		return invalid("policy: %q is not round_robin or least_load", abbreviate(t.Policy))
	}
	if t.ResponseTimeoutSeconds < 0 || t.ResponseTimeoutSeconds > math.MaxInt32 {
		return invalid("response_timeout_seconds: %d is out of range", t.ResponseTimeoutSeconds)
	}
	if len(t.ActiveVersions) > 16 {
		return invalid("active_versions: %d versions; at most 16", len(t.ActiveVersions))
	}
	for i, v := range t.ActiveVersions {
		if v < 1 {
			return invalid("active_versions[%d]: %d is not a version", i, v)
		}
	}
	if len(t.Endpoints) > MaxEndpoints {
		return invalid("endpoints: %d endpoints; at most %d", len(t.Endpoints), MaxEndpoints)
	}
	for i, e := range t.Endpoints {
		if e.ReplicaID < 1 || e.Version < 1 {
			return invalid("endpoints[%d]: replica %d version %d: both must be 1 or more", i, e.ReplicaID, e.Version)
		}
		if err := ValidateEndpoint(e.Address); err != nil {
			return invalid("endpoints[%d].address: %v", i, err)
		}
	}
	return nil
}

// Validate checks an LB's ack. The error names the field and matches
// ErrInvalidMessage.
func (a *LBAck) Validate() error {
	if err := ValidateLBID(a.LBID); err != nil {
		return invalid("lb_id: %v", err)
	}
	if len(a.Epochs) > MaxServices {
		return invalid("epochs: %d services; at most %d", len(a.Epochs), MaxServices)
	}
	for name := range a.Epochs {
		if err := ValidateServiceName(name); err != nil {
			return invalid("epochs: %v", err)
		}
	}
	if len(a.Draining) > MaxEndpoints {
		return invalid("draining: %d replicas; at most %d", len(a.Draining), MaxEndpoints)
	}
	for addr, n := range a.Draining {
		if err := ValidateEndpoint(addr); err != nil {
			return invalid("draining: %v", err)
		}
		if n < 0 {
			return invalid("draining[%s]: %d requests is negative", addr, n)
		}
	}
	return nil
}

// checkText checks a free-text field: at most max bytes of valid UTF-8
// without control characters other than tab.
func checkText(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("is %d bytes long; at most %d", len(s), max)
	}
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	for _, r := range s {
		if r < ' ' && r != '\t' || r == 0x7f {
			return fmt.Errorf("contains the control character %q", r)
		}
	}
	return nil
}

func finiteIn(f, lo, hi float64) bool {
	return !math.IsNaN(f) && f >= lo && f <= hi
}

// fieldError prefixes err with the field it is about.
func fieldError(field string, err error) error { return fmt.Errorf("%s: %w", field, err) }

// invalid builds an ErrInvalidMessage error.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidMessage, fmt.Sprintf(format, args...))
}

// abbreviate shortens s for an error message: an id of 5,000 characters
// must not make a 5,000-character log line.
func abbreviate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + fmt.Sprintf("...(%d bytes)", len(s))
}
