package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// The service section: readiness_probe (with post_data and headers),
// replicas or replica_policy, ports, load_balancing_policy and baton's
// response_timeout_seconds.
//
// service.replicas, replica_policy.min_replicas, max_replicas and
// num_overprovision are each at most MaxReplicas.

var headerRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// serviceKeysFound are the service keys parseService reads after its loop,
// since they depend on each other or on resources.
type serviceKeysFound struct {
	probe, replicas, policy, ports *entry
}

func (p *taskParser) parseService(es []entry, serviceLine int, spec *TaskSpec) {
	s := &spec.Service
	s.LoadBalancingPolicy = DefaultLoadBalancingPolicy
	var found serviceKeysFound
	for i := range es {
		e := &es[i]
		f := join("service", e.key)
		p.mark(f, e.line)
		switch e.key {
		case "readiness_probe":
			found.probe = e
		case "replicas":
			found.replicas = e
		case "replica_policy":
			found.policy = e
		case "ports":
			found.ports = e
		case "load_balancing_policy":
			p.loadBalancingPolicy(*e, s)
		case "response_timeout_seconds":
			// 0 (absent) means no limit, so the file must give more.
			if n, ok := p.integer(f, e.value, e.line, seconds(false, "120")); ok {
				s.ResponseTimeoutSeconds = n
			}
		default:
			p.unknownKey(*e, "service", serviceKeys)
		}
	}
	p.serviceProbe(found.probe, &s.ReadinessProbe)
	p.serviceReplicas(found.replicas, found.policy, &s.ReplicaPolicy)
	p.servicePort(found.ports, serviceLine, spec)
}

func (p *taskParser) loadBalancingPolicy(e entry, s *ServiceSpec) {
	const field = "service.load_balancing_policy"
	v, ok := p.str(field, e.value, e.line, "round_robin or least_load")
	switch {
	case !ok:
	case v != PolicyRoundRobin && v != PolicyLeastLoad:
		p.errorf(lineAt(e.value, e.line), field, "%q is not a policy; use round_robin or least_load (the default)", v)
	default:
		s.LoadBalancingPolicy = v
	}
}

// serviceProbe reads readiness_probe, or fills SkyServe's default when the
// key is absent: probe / with the default delays.
func (p *taskParser) serviceProbe(probe *entry, rp *ReadinessProbe) {
	switch {
	case probe == nil:
		*rp = ReadinessProbe{Path: DefaultProbePath, InitialDelaySeconds: DefaultInitialDelaySeconds, TimeoutSeconds: DefaultProbeTimeoutSeconds}
	case p.isNull(probe.value):
		p.errorf(probe.line, "service.readiness_probe", "is empty; give the path that answers HTTP 200 once a replica is ready (e.g. readiness_probe: /health), or remove the key to probe %s", DefaultProbePath)
	default:
		p.parseProbe(*probe, rp)
	}
}

// serviceReplicas reads replicas (a fixed count) or replica_policy; with
// neither, the service has one replica.
func (p *taskParser) serviceReplicas(replicas, policy *entry, rp *ReplicaPolicy) {
	rp.UpscaleDelaySeconds = DefaultUpscaleDelaySeconds
	rp.DownscaleDelaySeconds = DefaultDownscaleDelaySeconds
	switch {
	case replicas != nil && policy != nil:
		second := replicas
		if policy.line > replicas.line {
			second = policy
		}
		p.errorf(second.line, "service", "replicas and replica_policy are both set; use replicas: N for a fixed count or replica_policy for autoscaling, not both")
	case replicas != nil:
		if n, ok := p.integer("service.replicas", replicas.value, replicas.line, replicaCount(1, "2")); ok {
			rp.MinReplicas, rp.MaxReplicas = n, n
		}
	case policy != nil:
		p.parseReplicaPolicy(*policy, rp)
	default:
		rp.MinReplicas, rp.MaxReplicas = 1, 1
	}
}

// servicePort reads service.ports, or takes the port from resources.ports
// when it lists one.
func (p *taskParser) servicePort(ports *entry, serviceLine int, spec *TaskSpec) {
	if ports != nil {
		if port, ok := p.port("service.ports", ports.value, ports.line); ok {
			spec.Service.Port = port
		}
		return
	}
	switch ps := spec.Resources.Ports; {
	case len(ps) == 1:
		spec.Service.Port = ps[0]
	case len(ps) > 1:
		p.errorf(serviceLine, "service.ports", "required when resources.ports lists %d ports: say which one replicas serve on (e.g. ports: %d)", len(ps), ps[0])
	}
}

func (p *taskParser) parseProbe(e entry, probe *ReadinessProbe) {
	const field = "service.readiness_probe"
	probe.InitialDelaySeconds = DefaultInitialDelaySeconds
	probe.TimeoutSeconds = DefaultProbeTimeoutSeconds
	r, _ := p.resolve(e.value)
	switch r.(type) {
	case *ast.StringNode, *ast.LiteralNode:
		if path, ok := p.str(field, e.value, e.line, "a path"); ok {
			probe.Path, _ = p.probePath(field, path, lineAt(e.value, e.line))
		}
		return
	case *ast.MappingNode:
	default:
		p.errorf(lineAt(e.value, e.line), field, "must be a path like /health or a mapping with path (and optionally initial_delay_seconds, timeout_seconds, post_data, headers), got %s", describe(r))
		return
	}
	es, _ := p.entries(field, r)
	havePath := false
	for _, kv := range es {
		f := join(field, kv.key)
		p.mark(f, kv.line)
		switch kv.key {
		case "path":
			havePath = true
			if path, ok := p.str(f, kv.value, kv.line, "a path like /health"); ok {
				probe.Path, _ = p.probePath(f, path, lineAt(kv.value, kv.line))
			}
		case "initial_delay_seconds":
			if n, ok := p.integer(f, kv.value, kv.line, seconds(true, "1200")); ok {
				probe.InitialDelaySeconds = n
			}
		case "timeout_seconds":
			if n, ok := p.integer(f, kv.value, kv.line, seconds(false, "15")); ok {
				probe.TimeoutSeconds = n
			}
		case "post_data":
			probe.PostData, _ = p.postData(f, kv.value, kv.line)
		case "headers":
			probe.Headers = p.headers(f, kv)
		default:
			p.unknownKey(kv, field, probeKeys)
		}
	}
	if !havePath {
		p.errorf(e.line, join(field, "path"), "required: give the path that answers HTTP 200 once a replica is ready (e.g. path: /health)")
	}
}

// probePath checks a readiness probe path.
// maxProbePath bounds a readiness probe's path.
const maxProbePath = 2048

func (p *taskParser) probePath(field, path string, line int) (string, bool) {
	if !strings.HasPrefix(path, "/") {
		p.errorf(line, field, "%q must start with '/' (e.g. /%s)", path, strings.TrimLeft(strings.TrimSpace(path), "/"))
		return "", false
	}
	if len(path) > maxProbePath {
		p.errorf(line, field, "is %d characters long; a probe path has at most %d", len(path), maxProbePath)
		return "", false
	}
	for _, c := range path {
		if c <= ' ' || c == 0x7f {
			p.errorf(line, field, "%q contains a space or control character; percent-encode it (e.g. %%20)", path)
			return "", false
		}
	}
	return path, true
}

// postData reads post_data: a JSON string, or a mapping or list stored as
// its JSON text (keys in file order).
func (p *taskParser) postData(field string, n ast.Node, line int) (string, bool) {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	switch r.(type) {
	case nil:
		return "", true
	case *ast.StringNode, *ast.LiteralNode:
		s, ok := p.str(field, n, line, "a JSON string")
		if !ok {
			return "", false
		}
		if !json.Valid([]byte(s)) {
			p.errorf(line, field, "is not valid JSON; write a mapping (e.g. post_data: {model: my-model}) or a JSON string like '{\"model\": \"my-model\"}'")
			return "", false
		}
		return s, true
	case *ast.MappingNode, *ast.SequenceNode:
		var buf bytes.Buffer
		budget := maxJSONNodes
		if err := p.toJSON(&buf, r, 0, &budget); err != "" {
			p.errorf(line, field, "%s", err)
			return "", false
		}
		if buf.Len() > maxPostData {
			p.errorf(line, field, "is %d bytes as JSON; keep it under %d", buf.Len(), maxPostData)
			return "", false
		}
		return buf.String(), true
	}
	p.errorf(line, field, "must be a mapping (sent as JSON) or a JSON string, got %s", describe(r))
	return "", false
}

// toJSON writes a resolved node as JSON. It returns a message on failure.
func (p *taskParser) toJSON(buf *bytes.Buffer, n ast.Node, depth int, budget *int) string {
	*budget--
	if *budget < 0 || depth > maxJSONDepth || buf.Len() > maxPostData {
		return fmt.Sprintf("is too large or too deeply nested; keep it under %d bytes of JSON", maxPostData)
	}
	switch v := n.(type) {
	case nil:
		buf.WriteString("null")
	case *ast.MappingNode:
		return p.toJSONObject(buf, v, depth, budget)
	case *ast.SequenceNode:
		buf.WriteByte('[')
		for i, e := range v.Values {
			if i > 0 {
				buf.WriteByte(',')
			}
			r, _ := p.resolve(e)
			if msg := p.toJSON(buf, r, depth+1, budget); msg != "" {
				return msg
			}
		}
		buf.WriteByte(']')
	case *ast.StringNode, *ast.LiteralNode:
		text, _ := textOf(v)
		writeJSONString(buf, text)
	case *ast.IntegerNode:
		fmt.Fprint(buf, v.Value)
	case *ast.FloatNode:
		buf.WriteString(strconv.FormatFloat(v.Value, 'g', -1, 64))
	case *ast.BoolNode:
		buf.WriteString(strconv.FormatBool(v.Value))
	default:
		return fmt.Sprintf("contains %s, which JSON cannot represent", describe(n))
	}
	return ""
}

// toJSONObject writes a mapping as a JSON object, keys in file order.
func (p *taskParser) toJSONObject(buf *bytes.Buffer, m *ast.MappingNode, depth int, budget *int) string {
	buf.WriteByte('{')
	for i, mv := range m.Values {
		if i > 0 {
			buf.WriteByte(',')
		}
		if _, isMerge := mv.Key.(*ast.MergeKeyNode); isMerge {
			return "merge keys (<<) are not supported; write the keys out"
		}
		key, ok := p.keyText(mv.Key)
		if !ok {
			k, _ := p.resolve(mv.Key)
			return fmt.Sprintf("has a key that is %s; JSON keys must be strings", describe(k))
		}
		writeJSONString(buf, key)
		buf.WriteByte(':')
		r, _ := p.resolve(mv.Value)
		if msg := p.toJSON(buf, r, depth+1, budget); msg != "" {
			return msg
		}
	}
	buf.WriteByte('}')
	return ""
}

func writeJSONString(buf *bytes.Buffer, s string) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)           // encoding a string cannot fail
	buf.Truncate(buf.Len() - 1) // Encode appends a newline
}

func (p *taskParser) headers(field string, e entry) map[string]string {
	if p.isNull(e.value) {
		return nil
	}
	es, ok := p.mapping(field, e.value, e.line, "Header-Name: value pairs")
	if !ok || len(es) == 0 {
		return nil
	}
	h := make(map[string]string, len(es))
	for _, kv := range es {
		if !headerRE.MatchString(kv.key) {
			p.errorf(kv.line, field, "%q is not a valid HTTP header name; use letters, digits and - (e.g. Authorization)", kv.key)
			continue
		}
		v, ok := p.scalarText(join(field, kv.key), kv.value, kv.line, "a string (e.g. Bearer my-token)")
		if !ok {
			continue
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			p.errorf(lineAt(kv.value, kv.line), join(field, kv.key), "contains a line break; a header value must be one line")
			continue
		}
		h[kv.key] = v
	}
	return h
}

// replicaPolicyKeysFound is what parseReplicaPolicy's checks across keys
// need to know.
type replicaPolicyKeysFound struct {
	haveMin, haveMax, haveQPS bool
	maxLine, qpsLine          int
	bad                       bool // a value was reported already
}

func (p *taskParser) parseReplicaPolicy(e entry, rp *ReplicaPolicy) {
	const field = "service.replica_policy"
	es, ok := p.mapping(field, e.value, e.line, "min_replicas, max_replicas, target_qps_per_replica, ...")
	if !ok {
		return
	}
	var found replicaPolicyKeysFound
	for _, kv := range es {
		p.replicaPolicyKey(kv, rp, &found)
	}
	switch {
	case !found.haveMin:
		p.errorf(e.line, join(field, "min_replicas"), "required: the number of replicas to keep running (e.g. min_replicas: 1)")
	case found.bad:
		// Already reported; the checks below would only add noise.
	case !found.haveMax && found.haveQPS:
		p.errorf(found.qpsLine, join(field, "target_qps_per_replica"), "needs max_replicas: autoscaling scales between min_replicas and max_replicas (e.g. max_replicas: %d)", rp.MinReplicas+2)
	case !found.haveMax:
		rp.MaxReplicas = rp.MinReplicas
	case rp.MaxReplicas < rp.MinReplicas:
		p.errorf(found.maxLine, join(field, "max_replicas"), "%d is less than min_replicas (%d); use a number >= %d", rp.MaxReplicas, rp.MinReplicas, rp.MinReplicas)
	case rp.MaxReplicas > rp.MinReplicas && !found.haveQPS:
		p.errorf(found.maxLine, join(field, "target_qps_per_replica"), "required when max_replicas (%d) is more than min_replicas (%d): the requests per second one replica should take (e.g. target_qps_per_replica: 2.5)", rp.MaxReplicas, rp.MinReplicas)
	}
}

// replicaPolicyKey reads one key of replica_policy.
func (p *taskParser) replicaPolicyKey(kv entry, rp *ReplicaPolicy, found *replicaPolicyKeysFound) {
	const field = "service.replica_policy"
	f := join(field, kv.key)
	p.mark(f, kv.line)
	ok := true
	switch kv.key {
	case "min_replicas":
		found.haveMin = true
		rp.MinReplicas, ok = p.integer(f, kv.value, kv.line, replicaCount(1, "1"))
	case "max_replicas":
		found.haveMax, found.maxLine = true, lineAt(kv.value, kv.line)
		rp.MaxReplicas, ok = p.integer(f, kv.value, kv.line, replicaCount(1, "4"))
	case "target_qps_per_replica":
		found.haveQPS, found.qpsLine = true, lineAt(kv.value, kv.line)
		rp.TargetQPSPerReplica, ok = p.float(f, kv.value, kv.line, positive("2.5"))
	case "upscale_delay_seconds":
		if n, ok := p.integer(f, kv.value, kv.line, seconds(true, "300")); ok {
			rp.UpscaleDelaySeconds = n
		}
	case "downscale_delay_seconds":
		if n, ok := p.integer(f, kv.value, kv.line, seconds(true, "1200")); ok {
			rp.DownscaleDelaySeconds = n
		}
	case "num_overprovision":
		if n, ok := p.integer(f, kv.value, kv.line, replicaCount(0, "1")); ok {
			rp.NumOverprovision = n
		}
	default:
		if spotKeys[kv.key] {
			p.warnf(kv.line, f, "ignored: baton places replicas on its own agents (no spot instances)")
			return
		}
		p.unknownKey(kv, field, replicaPolicyKeys)
	}
	found.bad = found.bad || !ok
}
