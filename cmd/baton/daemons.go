package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/baton-dev/baton/protocol"
)

// parsePortRange reads "10000-29999".
func parsePortRange(s string) (protocol.PortRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if !ok || err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return protocol.PortRange{}, fmt.Errorf("--port-range %q: use two ports from 1 to 65535, the lower first (e.g. 10000-29999)", s)
	}
	return protocol.PortRange{Min: a, Max: b}, nil
}

// parseSize reads a byte size: 1048576, 10MiB, 10M, 512KiB, 1GiB (powers
// of 1024; KB, MB and GB mean the same, as in SkyPilot).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 1 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size; use a whole number of bytes or one with a unit, like 10MiB or 512KiB", s)
	}
	return n * mult, nil
}

func parseLabels(in []string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: use key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

// agentSpec is one `baton dev --agent` value: cpus=4,memory=16,accelerators=A100:1,region=r.
type agentSpec struct {
	cpus, memory float64
	accelerators string
	region       string
}

// parseAgentSpec reads `cpus=4,memory=16,accelerators=A100:2,H100:1`. A
// piece without '=' continues the previous value, so accelerator lists need
// no quoting.
func parseAgentSpec(s string) (agentSpec, error) {
	var spec agentSpec
	var last string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			if last != "accelerators" {
				return spec, fmt.Errorf("--agent %q: %q is not key=value (keys: cpus, memory, accelerators, region)", s, part)
			}
			spec.accelerators += "," + part
			continue
		}
		last = k
		var err error
		switch k {
		case "cpus":
			spec.cpus, err = strconv.ParseFloat(v, 64)
		case "memory":
			spec.memory, err = strconv.ParseFloat(strings.TrimSuffix(strings.ToUpper(v), "GB"), 64)
		case "accelerators", "gpus":
			spec.accelerators = v
			last = "accelerators"
		case "region":
			spec.region = v
		default:
			return spec, fmt.Errorf("--agent %q: unknown key %q (keys: cpus, memory, accelerators, region)", s, k)
		}
		if err != nil {
			return spec, fmt.Errorf("--agent %q: %s=%q is not a number", s, k, v)
		}
	}
	return spec, nil
}
