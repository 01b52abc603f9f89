package protocol

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The keys each mapping accepts, listed in messages about unknown keys.
// cloudKeys are accepted in addition at the top level and in resources, and
// spotKeys in replica_policy, each with a warning.
var (
	taskKeys          = []string{"envs", "file_mounts", "name", "num_nodes", "resources", "run", "secrets", "service", "setup", "workdir"}
	serviceKeys       = []string{"load_balancing_policy", "ports", "readiness_probe", "replica_policy", "replicas", "response_timeout_seconds"}
	probeKeys         = []string{"headers", "initial_delay_seconds", "path", "post_data", "timeout_seconds"}
	replicaPolicyKeys = []string{"downscale_delay_seconds", "max_replicas", "min_replicas", "num_overprovision", "target_qps_per_replica", "upscale_delay_seconds"}
	resourcesKeys     = []string{"accelerators", "cpus", "memory", "ports"}
)

// keyAliases are other names SkyPilot accepts for a key, by parent field.
// They are not listed among the valid keys, but a typo close to an alias is
// pointed at the key it stands for.
var keyAliases = map[string]map[string]string{
	"resources": {"gpus": "accelerators"},
}

// cloudKeys are SkyPilot fields that only mean something on a cloud. They
// are accepted at the top level and in resources, and ignored with a warning
// (except an image_id naming a docker image, see cloudKey).
var cloudKeys = map[string]bool{
	"infra": true, "cloud": true, "region": true, "zone": true,
	"instance_type": true, "use_spot": true, "disk_size": true, "image_id": true,
}

// spotKeys are SkyServe replica_policy fields about spot instances, which
// baton does not have; ignored with a warning.
var spotKeys = map[string]bool{
	"base_ondemand_fallback_replicas": true, "dynamic_ondemand_fallback": true, "spot_placer": true,
}

// unsupportedHints explain SkyPilot and SkyServe keys baton knows but does
// not support, by parent field ("" is the top level), so that a key is
// explained only where SkyPilot accepts it. They are still errors, like
// any unknown key.
var unsupportedHints = map[string]map[string]string{
	"": {},
	"service": {
		"tls": "baton's load balancers serve plain HTTP; terminate TLS in front of them (a reverse proxy or cloud load balancer holding the keyfile and certfile) and remove tls",
	},
	"resources": {
		"any_of":  "list the alternatives in accelerators instead (a mapping means any one of them, a list means in order of preference)",
		"ordered": "list the alternatives in accelerators instead (a list is tried in order)",
	},
}

var plainKeyRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// unknownKey reports a key that is not valid at this level, listing the
// valid ones and the closest match.
func (p *taskParser) unknownKey(e entry, parent string, valid []string) {
	msg := "unknown key"
	if hint, ok := unsupportedHints[parent][e.key]; ok {
		msg = "not supported: " + hint
	} else if s := p.suggest(e.key, parent, valid); s != "" {
		msg += fmt.Sprintf("; did you mean %s?", s)
	}
	p.errorf(e.line, join(parent, e.key), "%s (valid keys here: %s)", msg, strings.Join(valid, ", "))
}

// suggest is the key the user probably meant: the closest valid key or
// alias (an alias suggests the key it stands for), or, at the top level, a
// resources key written outside resources.
func (p *taskParser) suggest(key, parent string, valid []string) string {
	aliases := keyAliases[parent]
	cands := valid
	for a := range aliases {
		cands = append(cands[:len(cands):len(cands)], a)
	}
	if s := closest(key, cands); s != "" {
		if to, ok := aliases[s]; ok {
			return to
		}
		return s
	}
	if parent == "" {
		k := strings.ToLower(key)
		if to, ok := keyAliases["resources"][k]; ok {
			k = to
		}
		for _, r := range resourcesKeys {
			if k == r {
				return "resources." + r
			}
		}
	}
	return ""
}

// join builds a dotted field path. A key with characters other than
// letters, digits, '_', '-' and '.' is quoted, so a message stays one line.
func join(parent, key string) string {
	if !plainKeyRE.MatchString(key) {
		key = strconv.Quote(key)
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// closest returns the valid key within edit distance 2 of key, if any.
func closest(key string, valid []string) string {
	best, bestD := "", 3
	for _, v := range valid {
		if d := editDistance(strings.ToLower(key), v); d < bestD {
			best, bestD = v, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
