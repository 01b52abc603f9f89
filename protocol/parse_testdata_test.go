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
	// Every spec the parser accepts passes the check agents apply to what
	// they receive (once its workdir is resolved, as the API does).
	resolved := *s
	resolved.ResolveWorkdir("/base")
	if err := resolved.Validate(); err != nil {
		t.Errorf("accepted spec fails Validate: %v", err)
	}
	rp := s.Service.ReplicaPolicy
	if rp.MinReplicas < 1 || rp.MaxReplicas < rp.MinReplicas || rp.MaxReplicas > MaxReplicas {
		t.Errorf("bad replica policy %+v", rp)
	}
	if rp.NumOverprovision < 0 || rp.NumOverprovision > MaxReplicas {
		t.Errorf("bad num_overprovision %d", rp.NumOverprovision)
	}
	if rp.UpscaleDelaySeconds < 0 || rp.DownscaleDelaySeconds < 0 {
		t.Errorf("negative delays %+v", rp)
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
	if s.Service.ResponseTimeoutSeconds < 0 {
		t.Errorf("negative response timeout %d", s.Service.ResponseTimeoutSeconds)
	}
	if err := ValidateEnvs(s.Envs); err != nil {
		t.Errorf("envs past the limits: %v", err)
	}
	if b, err := json.Marshal(s); err != nil || len(b) > MaxSpecBytes {
		t.Errorf("spec is %d bytes as JSON (err %v), more than %d", len(b), err, MaxSpecBytes)
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
