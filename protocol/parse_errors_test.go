package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestParseTaskInvalid(t *testing.T) {
	tests := []struct {
		name   string
		data   []byte
		prefix string // the whole `file:line: field:` part
		substr string // part of the helpful message
	}{
		{
			name:   "unknown top-level key",
			data:   withMinimal("rnu: echo"),
			prefix: "task.yaml:4: rnu: ",
			substr: "unknown key; did you mean run? (valid keys here: envs, file_mounts, name, num_nodes, resources, run, secrets, service, setup, workdir)",
		},
		{
			name:   "unknown service key",
			data:   withMinimal("  replica: 2"),
			prefix: "task.yaml:4: service.replica: ",
			substr: "did you mean replicas?",
		},
		{
			name:   "unknown resources key",
			data:   withMinimal("resources:", "  disk_tier: best"),
			prefix: "task.yaml:5: resources.disk_tier: ",
			substr: "unknown key (valid keys here: accelerators, cpus, memory, ports)",
		},
		{
			name:   "unknown probe key",
			data:   yml("run: x", "service:", "  readiness_probe:", "    path: /", "    period_seconds: 5"),
			prefix: "task.yaml:5: service.readiness_probe.period_seconds: ",
			substr: "valid keys here: headers, initial_delay_seconds, path, post_data, timeout_seconds",
		},
		{
			name:   "file_mounts from a bucket",
			data:   withMinimal("file_mounts:", "  /data: s3://bucket"),
			prefix: "task.yaml:5: file_mounts.\"/data\": ",
			substr: `source "s3://bucket" is remote: baton copies only local files and directories`,
		},
		{
			name:   "file_mounts in SkyPilot's storage form",
			data:   withMinimal("file_mounts:", "  /data:", "    source: s3://bucket", "    mode: MOUNT"),
			prefix: "task.yaml:5: file_mounts.\"/data\": ",
			substr: "storage form ({source, mode}) is not supported",
		},
		{
			name:   "file_mounts target with ..",
			data:   withMinimal("file_mounts:", "  /data/../etc: ./x"),
			prefix: "task.yaml:5: file_mounts.\"/data/../etc\": ",
			substr: `has a ".." element`,
		},
		{
			name:   "file_mounts not a mapping",
			data:   withMinimal("file_mounts: ./x"),
			prefix: "task.yaml:4: file_mounts: ",
			substr: "must be a mapping of /path/on/replica: ./local/source pairs",
		},
		{
			name:   "any_of",
			data:   withMinimal("resources:", "  any_of:", "    - accelerators: A100"),
			prefix: "task.yaml:5: resources.any_of: ",
			substr: "list the alternatives in accelerators",
		},
		{
			name:   "run missing",
			data:   yml("service:", "  readiness_probe: /"),
			prefix: "task.yaml:1: run: ",
			substr: "required: give the command that starts the server",
		},
		{
			name:   "run empty",
			data:   yml("run: ''", "service:", "  readiness_probe: /"),
			prefix: "task.yaml:1: run: ",
			substr: "is empty",
		},
		{
			name:   "run is a list",
			data:   yml("run: [echo, hi]", "service:", "  readiness_probe: /"),
			prefix: "task.yaml:1: run: ",
			substr: "must be a string of shell commands (use run: | for several lines), got a list",
		},
		{
			name:   "cpus four",
			data:   withMinimal("resources:", "  accelerators: A100", "  # the cpus line", "  cpus: four"),
			prefix: "task.yaml:7: resources.cpus: ",
			substr: `"four" is not a number (use 4 or 4+)`,
		},
		{
			name:   "memory zero",
			data:   withMinimal("resources:", "  memory: 0"),
			prefix: "task.yaml:5: resources.memory: ",
			substr: "must be more than 0 (" + memoryHint + ")",
		},
		{
			name:   "memory with GiB unit",
			data:   withMinimal("resources:", "  memory: 16GiB"),
			prefix: "task.yaml:5: resources.memory: ",
			substr: `"16GiB" is not a memory size (use a size like 16, 16+, 16GB, 512MB or 1TB+; units are KB, MB, GB, TB and PB or K, M, G, T and P (GB meaning GiB), and a bare number is GB)`,
		},
		{
			name:   "negative replicas",
			data:   withMinimal("  replicas: -1"),
			prefix: "task.yaml:4: service.replicas: ",
			substr: "-1 is too small; use a whole number >= 1",
		},
		{
			name:   "fractional replicas",
			data:   withMinimal("  replicas: 1.5"),
			prefix: "task.yaml:4: service.replicas: ",
			substr: "1.5 is not a whole number",
		},
		{
			name:   "both replicas and replica_policy",
			data:   withMinimal("  replicas: 2", "  replica_policy:", "    min_replicas: 1"),
			prefix: "task.yaml:5: service: ",
			substr: "replicas and replica_policy are both set",
		},
		{
			name:   "max less than min",
			data:   withMinimal("  replica_policy:", "    min_replicas: 3", "    max_replicas: 2", "    target_qps_per_replica: 1"),
			prefix: "task.yaml:6: service.replica_policy.max_replicas: ",
			substr: "2 is less than min_replicas (3); use a number >= 3",
		},
		{
			name:   "target qps without max",
			data:   withMinimal("  replica_policy:", "    min_replicas: 1", "    target_qps_per_replica: 5"),
			prefix: "task.yaml:6: service.replica_policy.target_qps_per_replica: ",
			substr: "needs max_replicas",
		},
		{
			name:   "max above min without target qps",
			data:   withMinimal("  replica_policy:", "    min_replicas: 1", "    max_replicas: 3"),
			prefix: "task.yaml:6: service.replica_policy.target_qps_per_replica: ",
			substr: "required when max_replicas (3) is more than min_replicas (1)",
		},
		{
			name:   "quoted replicas",
			data:   withMinimal("  replicas: '3'"),
			prefix: "task.yaml:4: service.replicas: ",
			substr: `"3" is a string; use a whole number >= 1 (e.g. 2) without quotes`,
		},
		{
			name:   "word for max_replicas",
			data:   withMinimal("  replica_policy:", "    min_replicas: 1", "    max_replicas: lots"),
			prefix: "task.yaml:6: service.replica_policy.max_replicas: ",
			substr: `"lots" is not a number; use a whole number >= 1 (e.g. 4)`,
		},
		{
			name:   "min_replicas missing",
			data:   withMinimal("  replica_policy:", "    max_replicas: 3"),
			prefix: "task.yaml:4: service.replica_policy.min_replicas: ",
			substr: "required",
		},
		{
			name:   "zero target qps",
			data:   withMinimal("  replica_policy:", "    min_replicas: 1", "    max_replicas: 2", "    target_qps_per_replica: 0"),
			prefix: "task.yaml:7: service.replica_policy.target_qps_per_replica: ",
			substr: "use a number > 0",
		},
		{
			name:   "bad accelerator count",
			data:   withMinimal("resources:", "  accelerators: A100:x"),
			prefix: "task.yaml:5: resources.accelerators: ",
			substr: `"A100:x" has a count "x" that is not a whole number (use A100 or A100:2)`,
		},
		{
			name:   "fractional accelerator count",
			data:   withMinimal("resources:", "  accelerators: A100:0.5"),
			prefix: "task.yaml:5: resources.accelerators: ",
			substr: "fractional count; baton assigns whole accelerators",
		},
		{
			name:   "zero accelerator count in a set",
			data:   withMinimal("resources:", "  accelerators: {A100: 0}"),
			prefix: "task.yaml:5: resources.accelerators: ",
			substr: "A100: 0 is not a valid count",
		},
		{
			name:   "accelerator listed twice",
			data:   withMinimal("resources:", "  accelerators: [A100, a100:2]"),
			prefix: "task.yaml:5: resources.accelerators: ",
			substr: "a100 is listed twice",
		},
		{
			name:   "empty accelerator list",
			data:   withMinimal("resources:", "  accelerators: []"),
			prefix: "task.yaml:5: resources.accelerators: ",
			substr: "lists no accelerators",
		},
		{
			name:   "bad load balancing policy",
			data:   withMinimal("  load_balancing_policy: random"),
			prefix: "task.yaml:4: service.load_balancing_policy: ",
			substr: `"random" is not a policy; use round_robin or least_load`,
		},
		{
			name:   "probe path without slash",
			data:   yml("run: x", "service:", "  readiness_probe: health"),
			prefix: "task.yaml:3: service.readiness_probe: ",
			substr: `"health" must start with '/' (e.g. /health)`,
		},
		{
			name:   "probe mapping path without slash",
			data:   yml("run: x", "service:", "  readiness_probe:", "    path: v1/models"),
			prefix: "task.yaml:4: service.readiness_probe.path: ",
			substr: "must start with '/' (e.g. /v1/models)",
		},
		{
			name:   "probe mapping without path",
			data:   yml("run: x", "service:", "  readiness_probe:", "    timeout_seconds: 3"),
			prefix: "task.yaml:3: service.readiness_probe.path: ",
			substr: "required",
		},
		{
			name:   "readiness probe empty",
			data:   yml("run: x", "service:", "  replicas: 2", "  readiness_probe:"),
			prefix: "task.yaml:4: service.readiness_probe: ",
			substr: "is empty; give the path that answers HTTP 200 once a replica is ready (e.g. readiness_probe: /health), or remove the key to probe /",
		},
		{
			name:   "service missing",
			data:   yml("run: x"),
			prefix: "task.yaml:1: service: ",
			substr: "required: add a service section",
		},
		{
			name:   "timeout_seconds zero",
			data:   yml("run: x", "service:", "  readiness_probe:", "    path: /", "    timeout_seconds: 0"),
			prefix: "task.yaml:5: service.readiness_probe.timeout_seconds: ",
			substr: "0 is too small; use a number of seconds > 0 (e.g. 15)",
		},
		{
			name:   "post_data not JSON",
			data:   yml("run: x", "service:", "  readiness_probe:", "    path: /", "    post_data: '{bad'"),
			prefix: "task.yaml:5: service.readiness_probe.post_data: ",
			substr: "is not valid JSON",
		},
		{
			name:   "header with a bad name",
			data:   yml("run: x", "service:", "  readiness_probe:", "    path: /", "    headers:", "      'Bad Name': x"),
			prefix: "task.yaml:6: service.readiness_probe.headers: ",
			substr: `"Bad Name" is not a valid HTTP header name`,
		},
		{
			name:   "malformed YAML unclosed bracket",
			data:   withMinimal("resources:", "  accelerators: [A100, H100"),
			prefix: "task.yaml:5: ",
			substr: "invalid YAML: sequence end token ']' not found",
		},
		{
			name:   "duplicate key",
			data:   withMinimal("run: again"),
			prefix: "task.yaml:4: ",
			substr: `invalid YAML: mapping key "run" already defined on line 1; keep one`,
		},
		{
			name:   "service port out of range",
			data:   withMinimal("  ports: 70000"),
			prefix: "task.yaml:4: service.ports: ",
			substr: "70000 is not a port; use a number from 1 to 65535",
		},
		{
			name:   "resources port out of range",
			data:   withMinimal("resources:", "  ports: [8080, 70000]"),
			prefix: "task.yaml:5: resources.ports: ",
			substr: "70000 is not a port",
		},
		{
			name:   "reversed port range",
			data:   withMinimal("resources:", "  ports: 8010-8000"),
			prefix: "task.yaml:5: resources.ports: ",
			substr: `"8010-8000" is an empty range; write the lower port first (e.g. 8000-8010)`,
		},
		{
			name:   "several resource ports and no service port",
			data:   withMinimal("resources:", "  ports: [8000, 8001]"),
			prefix: "task.yaml:2: service.ports: ",
			substr: "required when resources.ports lists 2 ports",
		},
		{
			name:   "bad env key",
			data:   withMinimal("envs:", "  1BAD: x"),
			prefix: "task.yaml:5: envs: ",
			substr: `"1BAD" is not a valid environment variable name; use letters, digits and _`,
		},
		{
			name:   "env without value",
			data:   withMinimal("envs:", "  HF_TOKEN:"),
			prefix: "task.yaml:5: envs.HF_TOKEN: ",
			substr: "has no value; pass it with --env HF_TOKEN=VALUE",
		},
		{
			name:   "num_nodes 2",
			data:   withMinimal("num_nodes: 2"),
			prefix: "task.yaml:4: num_nodes: ",
			substr: "2 is not supported; baton runs each replica on one machine",
		},
		{
			name:   "empty file",
			data:   []byte("# nothing here\n"),
			prefix: "task.yaml:1: ",
			substr: "the file is empty",
		},
		{
			name:   "top level list",
			data:   yml("- run: x"),
			prefix: "task.yaml:1: ",
			substr: "a task must be a mapping of keys like run: and service:, got a list",
		},
		{
			name:   "two documents",
			data:   yml("run: x", "service:", "  readiness_probe: /", "---", "run: y"),
			prefix: "task.yaml:5: ",
			substr: "found a second YAML document",
		},
		{
			name:   "resources not a mapping",
			data:   withMinimal("resources: 4"),
			prefix: "task.yaml:4: resources: ",
			substr: "must be a mapping of resource requests",
		},
		{
			name:   "merge key",
			data:   withMinimal("resources:", "  <<: {cpus: 1}"),
			prefix: "task.yaml:5: resources: ",
			substr: "merge keys (<<) are not supported",
		},
		// resources.memory with units.
		{
			name:   "memory unknown unit",
			data:   withMinimal("resources:", "  memory: 16XB"),
			prefix: "task.yaml:5: resources.memory: ",
			substr: `"16XB" is not a memory size (use a size like 16, 16+, 16GB`,
		},
		{
			name:   "memory unit without number",
			data:   withMinimal("resources:", "  memory: GB"),
			prefix: "task.yaml:5: resources.memory: ",
			substr: `"GB" is not a memory size`,
		},
		{
			name:   "memory plus before unit",
			data:   withMinimal("resources:", "  memory: 16+GB"),
			prefix: "task.yaml:5: resources.memory: ",
			substr: `"16+GB" is not a memory size`,
		},
		{
			name:   "memory zero with unit",
			data:   withMinimal("resources:", "  memory: 0MB+"),
			prefix: "task.yaml:5: resources.memory: ",
			substr: "0MB+ is not allowed; it must be more than 0 (use a size like 16",
		},
		{
			name:   "memory negative with unit",
			data:   withMinimal("resources:", "  memory: -1GB"),
			prefix: "task.yaml:5: resources.memory: ",
			substr: `"-1GB" is not a memory size`,
		},
		{
			name:   "memory list",
			data:   withMinimal("resources:", "  memory: [16GB]"),
			prefix: "task.yaml:5: resources.memory: ",
			substr: "must be a memory size, got a list (use a size like 16",
		},
		{
			name:   "cpus stay unitless",
			data:   withMinimal("resources:", "  cpus: 4GB"),
			prefix: "task.yaml:5: resources.cpus: ",
			substr: `"4GB" is not a number (use 4 or 4+)`,
		},
		// resources.gpus, the alias of accelerators.
		{
			name:   "gpus and accelerators both set",
			data:   withMinimal("resources:", "  accelerators: A100", "  cpus: 4", "  gpus: H100"),
			prefix: "task.yaml:7: resources.gpus: ",
			substr: "accelerators (line 5) and gpus (line 7) are both set; gpus is another name for accelerators, so keep one",
		},
		{
			name:   "gpus before accelerators",
			data:   withMinimal("resources:", "  gpus: H100", "  accelerators: A100"),
			prefix: "task.yaml:6: resources.accelerators: ",
			substr: "gpus (line 5) and accelerators (line 6) are both set",
		},
		{
			name:   "gpus bad count",
			data:   withMinimal("resources:", "  gpus: A100:x"),
			prefix: "task.yaml:5: resources.gpus: ",
			substr: `"A100:x" has a count "x" that is not a whole number (use A100 or A100:2)`,
		},
		{
			name:   "gpus empty list",
			data:   withMinimal("resources:", "  gpus: []"),
			prefix: "task.yaml:5: resources.gpus: ",
			substr: "lists no accelerators",
		},
		{
			name:   "gpu typo suggests accelerators",
			data:   withMinimal("resources:", "  gpu: A100"),
			prefix: "task.yaml:5: resources.gpu: ",
			substr: "unknown key; did you mean accelerators? (valid keys here: accelerators, cpus, memory, ports)",
		},
		{
			name:   "GPUS suggests accelerators",
			data:   withMinimal("resources:", "  GPUS: A100"),
			prefix: "task.yaml:5: resources.GPUS: ",
			substr: "did you mean accelerators?",
		},
		{
			name:   "accelerator typo",
			data:   withMinimal("resources:", "  accelerator: A100"),
			prefix: "task.yaml:5: resources.accelerator: ",
			substr: "did you mean accelerators?",
		},
		{
			name:   "gpus at the top level",
			data:   withMinimal("gpus: A100"),
			prefix: "task.yaml:4: gpus: ",
			substr: "unknown key; did you mean resources.accelerators?",
		},
		{
			name:   "memory at the top level",
			data:   withMinimal("memory: 16GB"),
			prefix: "task.yaml:4: memory: ",
			substr: "unknown key; did you mean resources.memory?",
		},
		// Fractional seconds: the sign rules are unchanged.
		{
			name:   "negative fractional initial delay",
			data:   yml("run: x", "service:", "  readiness_probe:", "    path: /", "    initial_delay_seconds: -0.5"),
			prefix: "task.yaml:5: service.readiness_probe.initial_delay_seconds: ",
			substr: "-0.5 is too small; use a number of seconds >= 0 (e.g. 1200)",
		},
		{
			name:   "negative initial delay",
			data:   yml("run: x", "service:", "  readiness_probe:", "    path: /", "    initial_delay_seconds: -1"),
			prefix: "task.yaml:5: service.readiness_probe.initial_delay_seconds: ",
			substr: "-1 is too small",
		},
		{
			name:   "timeout zero as a float",
			data:   yml("run: x", "service:", "  readiness_probe:", "    path: /", "    timeout_seconds: 0.0"),
			prefix: "task.yaml:5: service.readiness_probe.timeout_seconds: ",
			substr: "0.0 is too small; use a number of seconds > 0 (e.g. 15)",
		},
		{
			name:   "timeout too large",
			data:   yml("run: x", "service:", "  readiness_probe:", "    path: /", "    timeout_seconds: 1.0e+20"),
			prefix: "task.yaml:5: service.readiness_probe.timeout_seconds: ",
			substr: "1.0e+20 is too large; use a number of seconds > 0 (e.g. 15) up to 2147483647",
		},
		{
			name:   "timeout infinite",
			data:   yml("run: x", "service:", "  readiness_probe:", "    path: /", "    timeout_seconds: .inf"),
			prefix: "task.yaml:5: service.readiness_probe.timeout_seconds: ",
			substr: "must be a number of seconds > 0 (e.g. 15), got the number .inf",
		},
		{
			name:   "exponent YAML reads as a string",
			data:   yml("run: x", "service:", "  readiness_probe:", "    path: /", "    timeout_seconds: 1e3"),
			prefix: "task.yaml:5: service.readiness_probe.timeout_seconds: ",
			substr: "1e3 is not a number in YAML (write an exponent like 1.0e+3); use a number of seconds > 0 (e.g. 15)",
		},
		{
			name:   "quoted fractional timeout",
			data:   yml("run: x", "service:", "  readiness_probe:", "    path: /", "    timeout_seconds: '2.5'"),
			prefix: "task.yaml:5: service.readiness_probe.timeout_seconds: ",
			substr: `"2.5" is a string; use a number of seconds > 0 (e.g. 15) without quotes`,
		},
		{
			name:   "negative fractional upscale delay",
			data:   withMinimal("  replica_policy:", "    min_replicas: 1", "    upscale_delay_seconds: -0.1"),
			prefix: "task.yaml:6: service.replica_policy.upscale_delay_seconds: ",
			substr: "-0.1 is too small; use a number of seconds >= 0 (e.g. 300)",
		},
		{
			name:   "downscale delay a word",
			data:   withMinimal("  replica_policy:", "    min_replicas: 1", "    downscale_delay_seconds: soon"),
			prefix: "task.yaml:6: service.replica_policy.downscale_delay_seconds: ",
			substr: `"soon" is not a number; use a number of seconds >= 0 (e.g. 1200)`,
		},
		// Byte order mark: line numbers are unchanged.
		{
			name:   "error after a BOM",
			data:   append([]byte("\xEF\xBB\xBF"), withMinimal("  replicas: 0")...),
			prefix: "task.yaml:4: service.replicas: ",
			substr: "0 is too small",
		},
		{
			name:   "error on the BOM line",
			data:   append([]byte("\xEF\xBB\xBF"), yml("rnu: x", "service: {}")...),
			prefix: "task.yaml:1: rnu: ",
			substr: "did you mean run?",
		},
		// Required envs, with no --env override.
		{
			name:   "env null without override",
			data:   withMinimal("envs:", "  MODEL: llama", "  HF_TOKEN: null"),
			prefix: "task.yaml:6: envs.HF_TOKEN: ",
			substr: "has no value; pass it with --env HF_TOKEN=VALUE",
		},
		{
			name:   "env in flow mapping without value",
			data:   withMinimal("envs: {HF_TOKEN: }"),
			prefix: "task.yaml:4: envs.HF_TOKEN: ",
			substr: "has no value; pass it with --env HF_TOKEN=VALUE",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := ParseTask("task.yaml", tt.data)
			if err == nil {
				t.Fatalf("ParseTask succeeded (%+v), want an error starting %q\ninput:\n%s", spec, tt.prefix, tt.data)
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("errors.Is(err, ErrInvalidSpec) = false for %T", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.prefix) {
				t.Errorf("error = %q\nwant prefix %q", msg, tt.prefix)
			}
			first := strings.SplitN(msg, "\n", 2)[0]
			if !strings.Contains(first, tt.substr) {
				t.Errorf("error = %q\nwant it to contain %q", first, tt.substr)
			}
		})
	}
}

func TestParseTaskSeveralErrors(t *testing.T) {
	data := yml(
		"service:",
		"  readiness_probe: health",
		"  replicas: 0",
		"resources:",
		"  cpus: many",
	)
	_, err := ParseTask("svc.yaml", data)
	var errs SpecErrors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T (%v), want SpecErrors", err, err)
	}
	if !errors.Is(err, ErrInvalidSpec) {
		t.Error("errors.Is(err, ErrInvalidSpec) = false")
	}
	var one *SpecError
	if !errors.As(err, &one) || one.Line != 1 {
		t.Errorf("errors.As(*SpecError) gave %+v, want the first problem (line 1)", one)
	}
	want := []string{
		"svc.yaml:1: run: required",
		"svc.yaml:2: service.readiness_probe: ",
		"svc.yaml:3: service.replicas: ",
		"svc.yaml:5: resources.cpus: ",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

func TestParseTaskServiceNotMapping(t *testing.T) {
	_, err := ParseTask("task.yaml", yml("run: x", "service: [1]"))
	var one *SpecError
	if _, many := err.(SpecErrors); many || !errors.As(err, &one) {
		t.Fatalf("want exactly one problem, got %T: %v", err, err)
	}
	if want := "task.yaml:2: service: must be a mapping"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %q, want prefix %q", err, want)
	}
}

func TestSpecErrorFormat(t *testing.T) {
	e := &SpecError{File: "task.yaml", Line: 7, Field: "resources.cpus", Message: `"four" is not a number (use 4 or 4+)`}
	if got, want := e.Error(), `task.yaml:7: resources.cpus: "four" is not a number (use 4 or 4+)`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e = &SpecError{File: "task.yaml", Line: 1, Message: "the file is empty"}
	if got, want := e.Error(), "task.yaml:1: the file is empty"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestSpecErrorWithoutLine(t *testing.T) {
	e := &SpecError{File: "task.yaml", Field: "--env 1X", Message: "bad"}
	if got, want := e.Error(), "task.yaml: --env 1X: bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e = &SpecError{File: "task.yaml", Message: "bad"}
	if got, want := e.Error(), "task.yaml: bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
