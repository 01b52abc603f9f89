package protocol

import (
	"errors"
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

// wantErrorLines checks that err matches ErrInvalidSpec and reads exactly
// lines, one problem a line.
func wantErrorLines(t *testing.T, err error, lines ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want:\n%s", strings.Join(lines, "\n"))
	}
	if !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("errors.Is(err, ErrInvalidSpec) = false for %T", err)
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, lines) {
		t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(lines, "\n"))
	}
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
				"  image_id: ami-0123456789abcdef0", // a cloud image; docker: is an error
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
