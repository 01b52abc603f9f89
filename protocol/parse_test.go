package protocol

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// yml joins lines with newlines, so a test can count lines at a glance:
// the first argument is line 1.
func yml(lines ...string) []byte { return []byte(strings.Join(lines, "\n") + "\n") }

// minimal is the smallest valid task: lines 1-3.
var minimal = []string{
	"run: python3 -m http.server $PORT",
	"service:",
	"  readiness_probe: /health",
}

func withMinimal(extra ...string) []byte {
	return yml(append(append([]string{}, minimal...), extra...)...)
}

func mustParse(t *testing.T, data []byte) *TaskSpec {
	t.Helper()
	spec, err := ParseTask("task.yaml", data)
	if err != nil {
		t.Fatalf("ParseTask: unexpected error:\n%v\ninput:\n%s", err, data)
	}
	return spec
}

func TestParseTaskDefaults(t *testing.T) {
	got := mustParse(t, yml(minimal...))
	want := &TaskSpec{
		Run: "python3 -m http.server $PORT",
		Service: ServiceSpec{
			ReadinessProbe: ReadinessProbe{Path: "/health", InitialDelaySeconds: 1200, TimeoutSeconds: 15},
			ReplicaPolicy: ReplicaPolicy{
				MinReplicas: 1, MaxReplicas: 1,
				UpscaleDelaySeconds: 300, DownscaleDelaySeconds: 1200,
			},
			LoadBalancingPolicy: PolicyLeastLoad,
		},
		Lines: map[string]int{"run": 1, "service": 2, "service.readiness_probe": 3},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseTaskValid(t *testing.T) {
	tests := []struct {
		name  string
		data  []byte
		check func(t *testing.T, s *TaskSpec)
	}{
		{
			name: "probe as string",
			data: yml("run: x", "service:", "  readiness_probe: /v1/models"),
			check: func(t *testing.T, s *TaskSpec) {
				wantProbe(t, s, ReadinessProbe{Path: "/v1/models", InitialDelaySeconds: 1200, TimeoutSeconds: 15})
			},
		},
		{
			name: "probe as mapping with defaults",
			data: yml("run: x", "service:", "  readiness_probe:", "    path: /ready"),
			check: func(t *testing.T, s *TaskSpec) {
				wantProbe(t, s, ReadinessProbe{Path: "/ready", InitialDelaySeconds: 1200, TimeoutSeconds: 15})
			},
		},
		{
			name: "probe with every field",
			data: yml(
				"run: x",
				"service:",
				"  readiness_probe:",
				"    path: /v1/chat/completions",
				"    initial_delay_seconds: 0",
				"    timeout_seconds: 5",
				"    post_data: {model: m, messages: [{role: user, content: '<hi> & bye'}], max_tokens: 1, temp: 0.5, stream: false, stop: null}",
				"    headers:",
				"      Authorization: Bearer abc",
				"      X-Retries: 3",
			),
			check: func(t *testing.T, s *TaskSpec) {
				wantProbe(t, s, ReadinessProbe{
					Path:                "/v1/chat/completions",
					InitialDelaySeconds: 0,
					TimeoutSeconds:      5,
					PostData:            `{"model":"m","messages":[{"role":"user","content":"<hi> & bye"}],"max_tokens":1,"temp":0.5,"stream":false,"stop":null}`,
					Headers:             map[string]string{"Authorization": "Bearer abc", "X-Retries": "3"},
				})
			},
		},
		{
			name: "post_data as JSON string",
			data: yml("run: x", "service:", "  readiness_probe:", "    path: /p", `    post_data: '{"a": 1}'`),
			check: func(t *testing.T, s *TaskSpec) {
				if got := s.Service.ReadinessProbe.PostData; got != `{"a": 1}` {
					t.Errorf("PostData = %q", got)
				}
			},
		},
		{
			name: "post_data as list",
			data: yml("run: x", "service:", "  readiness_probe:", "    path: /p", "    post_data: [1, two]"),
			check: func(t *testing.T, s *TaskSpec) {
				if got := s.Service.ReadinessProbe.PostData; got != `[1,"two"]` {
					t.Errorf("PostData = %q", got)
				}
			},
		},
		{
			name: "fixed replicas",
			data: withMinimal("  replicas: 3"),
			check: func(t *testing.T, s *TaskSpec) {
				wantPolicy(t, s, ReplicaPolicy{MinReplicas: 3, MaxReplicas: 3, UpscaleDelaySeconds: 300, DownscaleDelaySeconds: 1200})
			},
		},
		{
			name: "replica_policy with min only",
			data: withMinimal("  replica_policy:", "    min_replicas: 2"),
			check: func(t *testing.T, s *TaskSpec) {
				wantPolicy(t, s, ReplicaPolicy{MinReplicas: 2, MaxReplicas: 2, UpscaleDelaySeconds: 300, DownscaleDelaySeconds: 1200})
			},
		},
		{
			name: "replica_policy autoscaling",
			data: withMinimal(
				"  replica_policy:",
				"    min_replicas: 1",
				"    max_replicas: 5",
				"    target_qps_per_replica: 2.5",
				"    upscale_delay_seconds: 0",
				"    downscale_delay_seconds: 60",
				"    num_overprovision: 1",
			),
			check: func(t *testing.T, s *TaskSpec) {
				wantPolicy(t, s, ReplicaPolicy{
					MinReplicas: 1, MaxReplicas: 5, TargetQPSPerReplica: 2.5,
					UpscaleDelaySeconds: 0, DownscaleDelaySeconds: 60, NumOverprovision: 1,
				})
			},
		},
		{
			name: "integer target qps and spot keys warned",
			data: withMinimal(
				"  replica_policy:",
				"    min_replicas: 1",
				"    max_replicas: 2",
				"    target_qps_per_replica: 3",
				"    base_ondemand_fallback_replicas: 1",
			),
			check: func(t *testing.T, s *TaskSpec) {
				if s.Service.ReplicaPolicy.TargetQPSPerReplica != 3 {
					t.Errorf("TargetQPSPerReplica = %v", s.Service.ReplicaPolicy.TargetQPSPerReplica)
				}
				wantWarnings(t, s, "task.yaml:8: service.replica_policy.base_ondemand_fallback_replicas: ignored:")
			},
		},
		{
			name: "accelerator name only",
			data: withMinimal("resources:", "  accelerators: A100"),
			check: func(t *testing.T, s *TaskSpec) {
				wantAcc(t, s, AcceleratorRequest{Options: []AcceleratorOption{{"A100", 1}}})
			},
		},
		{
			name: "accelerator with count",
			data: withMinimal("resources:", "  accelerators: H100:8"),
			check: func(t *testing.T, s *TaskSpec) {
				wantAcc(t, s, AcceleratorRequest{Options: []AcceleratorOption{{"H100", 8}}})
			},
		},
		{
			name: "accelerator set is sorted",
			data: withMinimal("resources:", "  accelerators: {L4: 1, a10g: 2, A100: 1}"),
			check: func(t *testing.T, s *TaskSpec) {
				wantAcc(t, s, AcceleratorRequest{Options: []AcceleratorOption{{"A100", 1}, {"a10g", 2}, {"L4", 1}}})
			},
		},
		{
			name: "accelerator set in block style with name:count keys",
			data: withMinimal("resources:", "  accelerators:", "    V100:4:", "    T4:"),
			check: func(t *testing.T, s *TaskSpec) {
				wantAcc(t, s, AcceleratorRequest{Options: []AcceleratorOption{{"T4", 1}, {"V100", 4}}})
			},
		},
		{
			name: "accelerator list of strings keeps order",
			data: withMinimal("resources:", "  accelerators: [L4, A100:2, H100:1]"),
			check: func(t *testing.T, s *TaskSpec) {
				wantAcc(t, s, AcceleratorRequest{Ordered: true, Options: []AcceleratorOption{{"L4", 1}, {"A100", 2}, {"H100", 1}}})
			},
		},
		{
			name: "accelerator list of mappings",
			data: withMinimal("resources:", "  accelerators:", "    - H100: 2", "    - A100-80GB: 4"),
			check: func(t *testing.T, s *TaskSpec) {
				wantAcc(t, s, AcceleratorRequest{Ordered: true, Options: []AcceleratorOption{{"H100", 2}, {"A100-80GB", 4}}})
			},
		},
		{
			name: "cpus exact and memory at least",
			data: withMinimal("resources:", "  cpus: 4", "  memory: 2.5+"),
			check: func(t *testing.T, s *TaskSpec) {
				if got := s.Resources.CPUs; got != (Quantity{Value: 4}) {
					t.Errorf("CPUs = %+v", got)
				}
				if got := s.Resources.Memory; got != (Quantity{Value: 2.5, AtLeast: true}) {
					t.Errorf("Memory = %+v", got)
				}
			},
		},
		{
			name: "cpus at least and fractional memory",
			data: withMinimal("resources:", "  cpus: 4+", "  memory: 0.5"),
			check: func(t *testing.T, s *TaskSpec) {
				if got := s.Resources.CPUs; got != (Quantity{Value: 4, AtLeast: true}) {
					t.Errorf("CPUs = %+v", got)
				}
				if got := s.Resources.Memory; got != (Quantity{Value: 0.5}) {
					t.Errorf("Memory = %+v", got)
				}
			},
		},
		{
			name: "quoted cpus",
			data: withMinimal("resources:", `  cpus: "2"`),
			check: func(t *testing.T, s *TaskSpec) {
				if got := s.Resources.CPUs; got != (Quantity{Value: 2}) {
					t.Errorf("CPUs = %+v", got)
				}
			},
		},
		{
			name: "one resources port becomes the service port",
			data: withMinimal("resources:", "  ports: 8080"),
			check: func(t *testing.T, s *TaskSpec) {
				wantPorts(t, s, []int{8080}, 8080)
			},
		},
		{
			name: "port as string",
			data: withMinimal("resources:", `  ports: "9000"`),
			check: func(t *testing.T, s *TaskSpec) {
				wantPorts(t, s, []int{9000}, 9000)
			},
		},
		{
			name: "port range and list with duplicates",
			data: withMinimal("  ports: 8001", "resources:", "  ports: [8000-8002, 8001, '9000']"),
			check: func(t *testing.T, s *TaskSpec) {
				wantPorts(t, s, []int{8000, 8001, 8002, 9000}, 8001)
			},
		},
		{
			name: "no ports means the agent picks",
			data: yml(minimal...),
			check: func(t *testing.T, s *TaskSpec) {
				wantPorts(t, s, nil, 0)
			},
		},
		{
			name: "round robin",
			data: withMinimal("  load_balancing_policy: round_robin"),
			check: func(t *testing.T, s *TaskSpec) {
				if s.Service.LoadBalancingPolicy != PolicyRoundRobin {
					t.Errorf("LoadBalancingPolicy = %q", s.Service.LoadBalancingPolicy)
				}
			},
		},
		{
			name: "cloud fields become warnings",
			data: withMinimal(
				"cloud: aws",
				"region: us-east-1",
				"resources:",
				"  use_spot: true",
				"  infra: gcp/us-central1",
				"  instance_type: p4d.24xlarge",
				"  disk_size: 512",
				"  image_id: docker:vllm/vllm-openai",
				"  zone: us-east-1a",
			),
			check: func(t *testing.T, s *TaskSpec) {
				wantWarnings(t, s,
					"task.yaml:4: cloud: ignored: baton places replicas on its own agents",
					"task.yaml:5: region: ignored:",
					"task.yaml:7: resources.use_spot: ignored:",
					"task.yaml:8: resources.infra: ignored:",
					"task.yaml:9: resources.instance_type: ignored:",
					"task.yaml:10: resources.disk_size: ignored:",
					"task.yaml:11: resources.image_id: ignored:",
					"task.yaml:12: resources.zone: ignored:",
				)
			},
		},
		{
			name: "envs become strings as written",
			data: withMinimal("envs:", "  MODEL: llama", "  RATE: 1.10", "  DEBUG: true", "  N: 8", `  EMPTY: ""`),
			check: func(t *testing.T, s *TaskSpec) {
				want := map[string]string{"MODEL": "llama", "RATE": "1.10", "DEBUG": "true", "N": "8", "EMPTY": ""}
				if !reflect.DeepEqual(s.Envs, want) {
					t.Errorf("Envs = %v, want %v", s.Envs, want)
				}
			},
		},
		{
			name: "name workdir setup and block run",
			data: yml(
				"name: my-svc",
				"workdir: ./app",
				"setup: |",
				"  pip install -r requirements.txt",
				"run: |",
				"  python serve.py \\",
				"    --port $PORT",
				"num_nodes: 1",
				"service:",
				"  readiness_probe: /",
			),
			check: func(t *testing.T, s *TaskSpec) {
				if s.Name != "my-svc" || s.Workdir != "./app" {
					t.Errorf("Name, Workdir = %q, %q", s.Name, s.Workdir)
				}
				if s.Setup != "pip install -r requirements.txt\n" {
					t.Errorf("Setup = %q", s.Setup)
				}
				if s.Run != "python serve.py \\\n  --port $PORT\n" {
					t.Errorf("Run = %q", s.Run)
				}
			},
		},
		{
			name: "anchors and aliases",
			data: yml(
				"run: x",
				"service:",
				"  readiness_probe:",
				"    path: &p /health",
				"    post_data: &body {q: 1}",
				"  replicas: &n 2",
				"resources:",
				"  cpus: *n",
			),
			check: func(t *testing.T, s *TaskSpec) {
				if s.Resources.CPUs.Value != 2 || s.Service.ReplicaPolicy.MinReplicas != 2 {
					t.Errorf("aliases not resolved: cpus %+v, replicas %d", s.Resources.CPUs, s.Service.ReplicaPolicy.MinReplicas)
				}
			},
		},
		{
			name: "memory units",
			data: withMinimal("resources:", "  memory: 16GB"),
			check: func(t *testing.T, s *TaskSpec) {
				if got := s.Resources.Memory; got != (Quantity{Value: 16}) {
					t.Errorf("Memory = %+v", got)
				}
			},
		},
		{
			name: "gpus is accelerators",
			data: withMinimal("resources:", "  gpus: {L4: 1, A100: 2}"),
			check: func(t *testing.T, s *TaskSpec) {
				wantAcc(t, s, AcceleratorRequest{Options: []AcceleratorOption{{"A100", 2}, {"L4", 1}}})
			},
		},
		{
			name: "gpus list keeps order",
			data: withMinimal("resources:", "  gpus: [H100:8, A100:8]"),
			check: func(t *testing.T, s *TaskSpec) {
				wantAcc(t, s, AcceleratorRequest{Ordered: true, Options: []AcceleratorOption{{"H100", 8}, {"A100", 8}}})
			},
		},
		{
			name: "no readiness probe probes /",
			data: yml("run: x", "service:", "  replicas: 2"),
			check: func(t *testing.T, s *TaskSpec) {
				wantProbe(t, s, ReadinessProbe{Path: "/", InitialDelaySeconds: 1200, TimeoutSeconds: 15})
				wantPolicy(t, s, ReplicaPolicy{MinReplicas: 2, MaxReplicas: 2, UpscaleDelaySeconds: 300, DownscaleDelaySeconds: 1200})
			},
		},
		{
			name: "empty service mapping",
			data: yml("run: x", "service: {}"),
			check: func(t *testing.T, s *TaskSpec) {
				wantProbe(t, s, ReadinessProbe{Path: "/", InitialDelaySeconds: 1200, TimeoutSeconds: 15})
				wantPolicy(t, s, ReplicaPolicy{MinReplicas: 1, MaxReplicas: 1, UpscaleDelaySeconds: 300, DownscaleDelaySeconds: 1200})
			},
		},
		{
			name: "fractional seconds round up",
			data: yml(
				"run: x",
				"service:",
				"  readiness_probe:",
				"    path: /",
				"    initial_delay_seconds: 0.5",
				"    timeout_seconds: 2.1",
				"  replica_policy:",
				"    min_replicas: 1",
				"    upscale_delay_seconds: 0.1",
				"    downscale_delay_seconds: 59.9",
			),
			check: func(t *testing.T, s *TaskSpec) {
				wantProbe(t, s, ReadinessProbe{Path: "/", InitialDelaySeconds: 1, TimeoutSeconds: 3})
				wantPolicy(t, s, ReplicaPolicy{MinReplicas: 1, MaxReplicas: 1, UpscaleDelaySeconds: 1, DownscaleDelaySeconds: 60})
			},
		},
		{
			name: "whole floats and zero delays stay",
			data: yml(
				"run: x",
				"service:",
				"  readiness_probe:",
				"    path: /",
				"    initial_delay_seconds: 0.0",
				"    timeout_seconds: 5.0",
				"  replica_policy:",
				"    min_replicas: 1",
				"    upscale_delay_seconds: 0",
				"    downscale_delay_seconds: 1.0e+3",
			),
			check: func(t *testing.T, s *TaskSpec) {
				wantProbe(t, s, ReadinessProbe{Path: "/", InitialDelaySeconds: 0, TimeoutSeconds: 5})
				wantPolicy(t, s, ReplicaPolicy{MinReplicas: 1, MaxReplicas: 1, UpscaleDelaySeconds: 0, DownscaleDelaySeconds: 1000})
			},
		},
		{
			name: "tiny timeout rounds up to one second",
			data: yml("run: x", "service:", "  readiness_probe:", "    path: /", "    timeout_seconds: 0.001"),
			check: func(t *testing.T, s *TaskSpec) {
				wantProbe(t, s, ReadinessProbe{Path: "/", InitialDelaySeconds: 1200, TimeoutSeconds: 1})
			},
		},
		{
			name: "leading byte order mark",
			data: append([]byte("\xEF\xBB\xBF"), withMinimal("name: bom")...),
			check: func(t *testing.T, s *TaskSpec) {
				if s.Name != "bom" || s.Run != "python3 -m http.server $PORT" {
					t.Errorf("Name, Run = %q, %q", s.Name, s.Run)
				}
				if s.Lines["run"] != 1 || s.Lines["name"] != 4 {
					t.Errorf("Lines = %v", s.Lines)
				}
			},
		},
		{
			name: "null sections are absent",
			data: yml("run: x", "setup:", "envs:", "resources:", "service:", "  readiness_probe: /"),
			check: func(t *testing.T, s *TaskSpec) {
				if s.Setup != "" || s.Envs != nil || s.Resources.CPUs.IsSet() {
					t.Errorf("unexpected values: %+v", s)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, mustParse(t, tt.data))
		})
	}
}

func wantProbe(t *testing.T, s *TaskSpec, want ReadinessProbe) {
	t.Helper()
	if got := s.Service.ReadinessProbe; !reflect.DeepEqual(got, want) {
		t.Errorf("ReadinessProbe:\n got %+v\nwant %+v", got, want)
	}
}

func wantPolicy(t *testing.T, s *TaskSpec, want ReplicaPolicy) {
	t.Helper()
	if got := s.Service.ReplicaPolicy; got != want {
		t.Errorf("ReplicaPolicy:\n got %+v\nwant %+v", got, want)
	}
}

func wantAcc(t *testing.T, s *TaskSpec, want AcceleratorRequest) {
	t.Helper()
	if got := s.Resources.Accelerators; !reflect.DeepEqual(got, want) {
		t.Errorf("Accelerators:\n got %+v\nwant %+v", got, want)
	}
}

func wantPorts(t *testing.T, s *TaskSpec, ports []int, port int) {
	t.Helper()
	if !reflect.DeepEqual(s.Resources.Ports, ports) {
		t.Errorf("Resources.Ports = %v, want %v", s.Resources.Ports, ports)
	}
	if s.Service.Port != port {
		t.Errorf("Service.Port = %d, want %d", s.Service.Port, port)
	}
}

// wantWarnings checks that each warning starts with the matching prefix.
func wantWarnings(t *testing.T, s *TaskSpec, prefixes ...string) {
	t.Helper()
	if len(s.Warnings) != len(prefixes) {
		t.Fatalf("Warnings = %q, want %d", s.Warnings, len(prefixes))
	}
	for i, p := range prefixes {
		if !strings.HasPrefix(s.Warnings[i], p) {
			t.Errorf("Warnings[%d] = %q, want prefix %q", i, s.Warnings[i], p)
		}
	}
}

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
			substr: "unknown key; did you mean run? (valid keys here: envs, name, num_nodes, resources, run, service, setup, workdir)",
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
			name:   "file_mounts",
			data:   withMinimal("file_mounts:", "  /data: s3://bucket"),
			prefix: "task.yaml:4: file_mounts: ",
			substr: "not supported: baton does not copy files",
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

func TestParseTaskLimits(t *testing.T) {
	tests := []struct {
		name   string
		data   []byte
		prefix string
	}{
		{"deep flow nesting", []byte("run: x\npost: " + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + "\n"), "task.yaml:2: invalid YAML: nested more than 100 levels deep"},
		{"deep block nesting", []byte("run: x\nlist:\n  " + strings.Repeat("- ", 5000) + "x\n"), "task.yaml:3: invalid YAML: nested more than 100 levels deep"},
		{"huge file", []byte("run: x\n# " + strings.Repeat("x", MaxTaskFileSize) + "\n"), "task.yaml:1: the file is 65546 bytes; task files are limited to 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTask("task.yaml", tt.data)
			if err == nil || !strings.HasPrefix(err.Error(), tt.prefix) {
				t.Errorf("error = %v, want prefix %q", err, tt.prefix)
			}
		})
	}
	t.Run("many balanced braces in run are fine", func(t *testing.T) {
		s := mustParse(t, withMinimal("setup: |", "  "+strings.Repeat(`echo "${A}" [x] {y}; `, 500)))
		if !strings.Contains(s.Setup, "${A}") {
			t.Errorf("Setup = %q", s.Setup)
		}
	})
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

func TestParseTaskTestdata(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "valid", "*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("testdata/valid: %v files, err %v", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			spec, err := ParseTask(filepath.Base(f), data)
			if err != nil {
				t.Fatalf("ParseTask: %v", err)
			}
			checkInvariants(t, spec)
			// The spec travels as JSON (FSM, NATS): it must round-trip.
			b, err := json.Marshal(spec)
			if err != nil {
				t.Fatal(err)
			}
			var back TaskSpec
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			// Lines is not encoded.
			if back.Lines != nil {
				t.Errorf("Lines survived JSON: %v", back.Lines)
			}
			noLines := *spec
			noLines.Lines = nil
			if !reflect.DeepEqual(back, noLines) {
				t.Errorf("JSON round trip changed the spec:\n got %+v\nwant %+v", back, *spec)
			}
		})
	}
}

func TestParseTaskVLLMExample(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "valid", "vllm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := mustParse(t, data)
	var body map[string]any
	if err := json.Unmarshal([]byte(s.Service.ReadinessProbe.PostData), &body); err != nil {
		t.Fatalf("post_data is not JSON: %v", err)
	}
	if body["model"] != "meta-llama/Llama-3.1-8B-Instruct" || body["max_tokens"] != float64(1) {
		t.Errorf("post_data = %s", s.Service.ReadinessProbe.PostData)
	}
	wantPolicy(t, s, ReplicaPolicy{MinReplicas: 1, MaxReplicas: 4, TargetQPSPerReplica: 2.5, UpscaleDelaySeconds: 60, DownscaleDelaySeconds: 600})
	wantAcc(t, s, AcceleratorRequest{Options: []AcceleratorOption{{"A100", 1}, {"A10G", 1}, {"L4", 1}}})
	if s.Service.Port != 8000 || s.Envs["MAX_MODEL_LEN"] != "8192" {
		t.Errorf("Port %d, envs %v", s.Service.Port, s.Envs)
	}
	wantWarnings(t, s, "task.yaml:36: resources.use_spot: ignored:", "task.yaml:37: resources.disk_size: ignored:")
}

// checkInvariants is what every successfully parsed spec must satisfy.
func checkInvariants(t *testing.T, s *TaskSpec) {
	t.Helper()
	if strings.TrimSpace(s.Run) == "" {
		t.Errorf("Run is empty")
	}
	rp := s.Service.ReplicaPolicy
	if rp.MinReplicas < 1 || rp.MaxReplicas < rp.MinReplicas {
		t.Errorf("bad replica policy %+v", rp)
	}
	if rp.MaxReplicas > rp.MinReplicas && !(rp.TargetQPSPerReplica > 0) {
		t.Errorf("autoscaling without target qps: %+v", rp)
	}
	p := s.Service.ReadinessProbe
	if !strings.HasPrefix(p.Path, "/") || p.TimeoutSeconds < 1 || p.InitialDelaySeconds < 0 {
		t.Errorf("bad probe %+v", p)
	}
	if p.PostData != "" && !json.Valid([]byte(p.PostData)) {
		t.Errorf("post_data is not JSON: %q", p.PostData)
	}
	if s.Service.Port < 0 || s.Service.Port > 65535 {
		t.Errorf("bad port %d", s.Service.Port)
	}
	switch s.Service.LoadBalancingPolicy {
	case PolicyRoundRobin, PolicyLeastLoad:
	default:
		t.Errorf("bad policy %q", s.Service.LoadBalancingPolicy)
	}
	for _, o := range s.Resources.Accelerators.Options {
		if o.Name == "" || o.Count < 1 {
			t.Errorf("bad accelerator %+v", o)
		}
	}
	for _, q := range []Quantity{s.Resources.CPUs, s.Resources.Memory} {
		if q.Value < 0 || (q.AtLeast && q.Value == 0) {
			t.Errorf("bad quantity %+v", q)
		}
	}
}

func TestValidateServiceName(t *testing.T) {
	tests := []struct {
		name   string
		input  string
		substr string // empty: valid
	}{
		{"simple", "web", ""},
		{"with digits and dashes", "llama-3-8b", ""},
		{"one letter", "a", ""},
		{"63 characters", "a" + strings.Repeat("b", 62), ""},
		{"empty", "", "the name is empty"},
		{"64 characters", "a" + strings.Repeat("b", 63), "64 characters long"},
		{"uppercase", "Web", "does not start with a lowercase letter"},
		{"starts with digit", "1web", "does not start with a lowercase letter"},
		{"starts with dash", "-web", "does not start with a lowercase letter"},
		{"ends with dash", "web-", "ends with '-'"},
		{"dot", "web.v2", `contains '.'`},
		{"underscore", "my_web", `contains '_'`},
		{"space", "my web", `contains ' '`},
		{"subject wildcard", "web*", `contains '*'`},
		{"non ascii", "wéb", `contains 'é'`},
		{"reserved for route sync", "sync", "reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateServiceName(tt.input)
			if tt.substr == "" {
				if err != nil {
					t.Fatalf("ValidateServiceName(%q) = %v, want nil", tt.input, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateServiceName(%q) = nil, want an error", tt.input)
			}
			if !errors.Is(err, ErrInvalidServiceName) {
				t.Errorf("error does not match ErrInvalidServiceName: %v", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.substr) || !strings.Contains(msg, "use 1-63 lowercase letters, digits and '-'") {
				t.Errorf("error = %q, want it to contain %q and the rule", msg, tt.substr)
			}
		})
	}
}

func TestResolveWorkdir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	base := t.TempDir()
	tests := []struct {
		name    string
		workdir string
		base    string
		want    string
	}{
		{"empty stays empty", "", base, ""},
		{"dot", ".", base, base},
		{"relative", "app/src", base, filepath.Join(base, "app", "src")},
		{"parent", "../x", filepath.Join(base, "sub"), filepath.Join(base, "x")},
		{"absolute unchanged", "/srv/app/", base, "/srv/app"},
		{"tilde", "~", base, home},
		{"tilde slash", "~/models/llama", base, filepath.Join(home, "models", "llama")},
		{"tilde user is relative", "~bob/x", base, filepath.Join(base, "~bob", "x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &TaskSpec{Workdir: tt.workdir}
			s.ResolveWorkdir(tt.base)
			if s.Workdir != tt.want {
				t.Errorf("ResolveWorkdir(%q) from %q = %q, want %q", tt.workdir, tt.base, s.Workdir, tt.want)
			}
		})
	}
	t.Run("relative base is made absolute", func(t *testing.T) {
		s := &TaskSpec{Workdir: "app"}
		s.ResolveWorkdir("rel")
		if !filepath.IsAbs(s.Workdir) || !strings.HasSuffix(s.Workdir, filepath.Join("rel", "app")) {
			t.Errorf("Workdir = %q, want an absolute path ending in rel/app", s.Workdir)
		}
	})
}

func TestParseTaskMemoryUnits(t *testing.T) {
	tests := []struct {
		in   string
		want Quantity
	}{
		{"16", Quantity{Value: 16}},
		{"16+", Quantity{Value: 16, AtLeast: true}},
		{"16GB", Quantity{Value: 16}},
		{"16gb+", Quantity{Value: 16, AtLeast: true}},
		{"16Gb", Quantity{Value: 16}},
		{"'16 GB+'", Quantity{Value: 16, AtLeast: true}},
		{"0.5GB", Quantity{Value: 0.5}},
		{"512MB", Quantity{Value: 0.5}},
		{"512mb+", Quantity{Value: 0.5, AtLeast: true}},
		{"1048576KB", Quantity{Value: 1}},
		{"1TB", Quantity{Value: 1024}},
		{"1.5tb+", Quantity{Value: 1536, AtLeast: true}},
		{"2PB", Quantity{Value: 2 << 20}},
		{".5TB", Quantity{Value: 512}},
		{"16G", Quantity{Value: 16}},
		{"512m+", Quantity{Value: 0.5, AtLeast: true}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s := mustParse(t, withMinimal("resources:", "  memory: "+tt.in))
			if got := s.Resources.Memory; got != tt.want {
				t.Errorf("memory: %s = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseTaskWithEnvs(t *testing.T) {
	task := withMinimal(
		"envs:",          // 4
		"  MODEL: llama", // 5
		"  HF_TOKEN:",    // 6
		"  OTHER: null",  // 7
		"  KEEP: 1.10",   // 8
	)
	t.Run("overrides fill, replace and add", func(t *testing.T) {
		over := map[string]string{"HF_TOKEN": "hf_x", "OTHER": "", "MODEL": "mistral", "NEW": "a=b"}
		s, err := ParseTaskWithEnvs("task.yaml", task, over)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"MODEL": "mistral", "HF_TOKEN": "hf_x", "OTHER": "", "KEEP": "1.10", "NEW": "a=b"}
		if !reflect.DeepEqual(s.Envs, want) {
			t.Errorf("Envs = %v, want %v", s.Envs, want)
		}
		if len(over) != 4 || over["MODEL"] != "mistral" {
			t.Errorf("overrides were modified: %v", over)
		}
		if s.Lines["envs.HF_TOKEN"] != 6 || s.Lines["envs.KEEP"] != 8 {
			t.Errorf("Lines = %v", s.Lines)
		}
	})
	t.Run("overrides without envs in the file", func(t *testing.T) {
		s, err := ParseTaskWithEnvs("task.yaml", yml(minimal...), map[string]string{"A": "1"})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(s.Envs, map[string]string{"A": "1"}) {
			t.Errorf("Envs = %v", s.Envs)
		}
	})
	t.Run("nil overrides equal ParseTask", func(t *testing.T) {
		data := withMinimal("envs:", "  A: x")
		a, errA := ParseTask("task.yaml", data)
		b, errB := ParseTaskWithEnvs("task.yaml", data, nil)
		if errA != nil || errB != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("ParseTask = %+v, %v; ParseTaskWithEnvs(nil) = %+v, %v", a, errA, b, errB)
		}
		_, errA = ParseTask("task.yaml", task)
		_, errB = ParseTaskWithEnvs("task.yaml", task, map[string]string{})
		if errA == nil || errB == nil || errA.Error() != errB.Error() {
			t.Errorf("errors differ: %v / %v", errA, errB)
		}
	})

	tests := []struct {
		name  string
		data  []byte
		over  map[string]string
		lines []string // the whole error, one problem a line
	}{
		{
			name: "two required envs missing",
			data: task,
			over: map[string]string{"MODEL": "m"},
			lines: []string{
				"task.yaml:6: envs.HF_TOKEN: has no value; pass it with --env HF_TOKEN=VALUE",
				"task.yaml:7: envs.OTHER: has no value; pass it with --env OTHER=VALUE",
			},
		},
		{
			name: "one required env missing",
			data: task,
			over: map[string]string{"HF_TOKEN": "x"},
			lines: []string{
				"task.yaml:7: envs.OTHER: has no value; pass it with --env OTHER=VALUE",
			},
		},
		{
			name: "bad override names",
			data: yml(minimal...),
			over: map[string]string{"1BAD": "x", "has space": "y", "OK": "z"},
			lines: []string{
				`task.yaml: --env 1BAD: "1BAD" is not a valid environment variable name; use letters, digits and _, not starting with a digit (e.g. MODEL_NAME); write --env NAME=VALUE`,
				`task.yaml: --env "has space": "has space" is not a valid environment variable name; use letters, digits and _, not starting with a digit (e.g. MODEL_NAME); write --env NAME=VALUE`,
			},
		},
		{
			name: "empty override name with a file problem",
			data: withMinimal("  replicas: 0"),
			over: map[string]string{"": "x"},
			lines: []string{
				`task.yaml: --env "": "" is not a valid environment variable name; use letters, digits and _, not starting with a digit (e.g. MODEL_NAME); write --env NAME=VALUE`,
				"task.yaml:4: service.replicas: 0 is too small; use a whole number >= 1 (e.g. 2)",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseTaskWithEnvs("task.yaml", tt.data, tt.over)
			if err == nil {
				t.Fatalf("succeeded (%+v), want an error", s)
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("errors.Is(err, ErrInvalidSpec) = false for %T", err)
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tt.lines) {
				t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(tt.lines, "\n"))
			}
		})
	}
}

func TestValidateEnvName(t *testing.T) {
	for _, ok := range []string{"A", "_", "HF_TOKEN", "a1", "_x9"} {
		if err := ValidateEnvName(ok); err != nil {
			t.Errorf("ValidateEnvName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "1A", "A-B", "A=B", "A B", "É"} {
		err := ValidateEnvName(bad)
		if err == nil || !strings.Contains(err.Error(), "is not a valid environment variable name") {
			t.Errorf("ValidateEnvName(%q) = %v, want an error", bad, err)
		}
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

func TestParseTaskLines(t *testing.T) {
	s := mustParse(t, yml(
		"# a comment",          // 1
		"name: web",            // 2
		"workdir: ./app",       // 3
		"setup: |",             // 4
		"  pip install x",      // 5
		"run: python serve.py", // 6
		"envs:",                // 7
		"  A: b",               // 8
		"cloud: aws",           // 9
		"service:",             // 10
		"  replica_policy:",    // 11
		"    min_replicas: 1",  // 12
		"resources:",           // 13
		"  gpus: A100",         // 14
		"  memory: 16GB+",      // 15
	))
	want := map[string]int{
		"name": 2, "workdir": 3, "setup": 4, "run": 6, "envs": 7, "envs.A": 8, "cloud": 9,
		"service": 10, "service.replica_policy": 11, "service.replica_policy.min_replicas": 12,
		"resources": 13, "resources.gpus": 14, "resources.memory": 15,
	}
	if !reflect.DeepEqual(s.Lines, want) {
		t.Errorf("Lines:\n got %v\nwant %v", s.Lines, want)
	}
	if s.Lines["service.readiness_probe"] != 0 {
		t.Errorf("an absent key has a line")
	}
	wantProbe(t, s, ReadinessProbe{Path: "/", InitialDelaySeconds: 1200, TimeoutSeconds: 15})
	wantAcc(t, s, AcceleratorRequest{Options: []AcceleratorOption{{"A100", 1}}})
}
