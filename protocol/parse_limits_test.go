package protocol

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

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

func TestParseTaskReplicaBounds(t *testing.T) {
	const tooMany = "is too large; baton runs at most 1000 replicas of a service (use a whole number from 1 to 1000)"
	tests := []struct {
		name string
		data []byte
		line string // the whole error
	}{
		{
			name: "replicas at the int32 bound",
			data: withMinimal("  replicas: 2147483647"),
			line: "task.yaml:4: service.replicas: 2147483647 " + tooMany,
		},
		{
			name: "replicas one past the bound",
			data: withMinimal("  replicas: 1001"),
			line: "task.yaml:4: service.replicas: 1001 " + tooMany,
		},
		{
			name: "replicas too large for YAML",
			data: withMinimal("  replicas: 99999999999999999999"),
			line: "task.yaml:4: service.replicas: 99999999999999999999 " + tooMany,
		},
		{
			name: "min_replicas",
			data: withMinimal("  replica_policy:", "    min_replicas: 1001"),
			line: "task.yaml:5: service.replica_policy.min_replicas: 1001 " + tooMany,
		},
		{
			name: "max_replicas",
			data: withMinimal("  replica_policy:", "    min_replicas: 1", "    max_replicas: 5000", "    target_qps_per_replica: 1"),
			line: "task.yaml:6: service.replica_policy.max_replicas: 5000 " + tooMany,
		},
		{
			name: "num_overprovision",
			data: withMinimal("  replica_policy:", "    min_replicas: 1", "    num_overprovision: 1001"),
			line: "task.yaml:6: service.replica_policy.num_overprovision: 1001 is too large; baton runs at most 1000 replicas of a service (use a whole number from 0 to 1000)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTask("task.yaml", tt.data)
			wantErrorLines(t, err, tt.line)
		})
	}

	t.Run("the bound itself is fine", func(t *testing.T) {
		s := mustParse(t, withMinimal("  replicas: 1000"))
		wantPolicy(t, s, ReplicaPolicy{MinReplicas: 1000, MaxReplicas: 1000, UpscaleDelaySeconds: 300, DownscaleDelaySeconds: 1200})
		s = mustParse(t, withMinimal("  replica_policy:", "    min_replicas: 1000", "    num_overprovision: 1000"))
		wantPolicy(t, s, ReplicaPolicy{MinReplicas: 1000, MaxReplicas: 1000, UpscaleDelaySeconds: 300, DownscaleDelaySeconds: 1200, NumOverprovision: 1000})
		s = mustParse(t, withMinimal("  replica_policy:", "    min_replicas: 1", "    max_replicas: 1000", "    target_qps_per_replica: 1"))
		wantPolicy(t, s, ReplicaPolicy{MinReplicas: 1, MaxReplicas: 1000, TargetQPSPerReplica: 1, UpscaleDelaySeconds: 300, DownscaleDelaySeconds: 1200})
	})
}

func TestParseTaskSpecSize(t *testing.T) {
	// task is a file whose JSON encoding grows one byte for each byte of
	// pad, with envs of 32768 bytes from --env (the most allowed), so that
	// the JSON can pass MaxSpecBytes while the file stays under
	// MaxTaskFileSize.
	task := func(pad int) []byte { return withMinimal("setup: " + strings.Repeat("a", pad)) }
	over := map[string]string{"A": strings.Repeat("x", 16384), "B": strings.Repeat("y", 16382)}
	jsonLen := func(t *testing.T, data []byte) int {
		t.Helper()
		s, err := ParseTaskWithEnvs("task.yaml", data, over)
		if err != nil {
			t.Fatalf("ParseTaskWithEnvs: %v", err)
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return len(b)
	}
	base := jsonLen(t, task(1000))
	fits := 1000 + MaxSpecBytes - base // the pad that makes the JSON exactly MaxSpecBytes

	t.Run("exactly MaxSpecBytes", func(t *testing.T) {
		if got := jsonLen(t, task(fits)); got != MaxSpecBytes {
			t.Fatalf("JSON is %d bytes, want %d", got, MaxSpecBytes)
		}
	})
	t.Run("one byte more", func(t *testing.T) {
		_, err := ParseTaskWithEnvs("task.yaml", task(fits+1), over)
		wantErrorLines(t, err, "task.yaml:1: the task is 98305 bytes as JSON, with its envs; baton stores at most 98304 (keep large scripts and values in files in workdir and read them in run)")
	})
	t.Run("characters JSON escapes", func(t *testing.T) {
		// 20000 '<' are 20 KB of file and 120 KB of JSON (\u003c each).
		small := mustParse(t, withMinimal("setup: x"))
		b, err := json.Marshal(small)
		if err != nil {
			t.Fatal(err)
		}
		want := len(b) - 1 + 6*20000 // "x" becomes 20000 escapes
		_, err = ParseTask("task.yaml", withMinimal("setup: "+strings.Repeat("<", 20000)))
		wantErrorLines(t, err, fmt.Sprintf("task.yaml:1: the task is %d bytes as JSON, with its envs; baton stores at most 98304 (keep large scripts and values in files in workdir and read them in run)", want))
	})
}

// TestParseTaskSizeBounds: numbers and texts that no machine or shell can
// use are refused at their line, so every accepted spec passes
// TaskSpec.Validate (the check agents apply).
func TestParseTaskSizeBounds(t *testing.T) {
	many := make([]string, 17)
	for i := range many {
		many[i] = fmt.Sprintf("G%d", i)
	}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"cpus beyond any machine", withMinimal("resources:", "  cpus: 100001"),
			"task.yaml:5: resources.cpus: 100001 is too large"},
		{"memory beyond any machine", withMinimal("resources:", "  memory: 1000PB"),
			"task.yaml:5: resources.memory: "},
		{"accelerator count", withMinimal("resources:", "  accelerators: A100:65"),
			"task.yaml:5: resources.accelerators: \"A100:65\" has count 65; use a whole number from 1 to 64"},
		{"accelerator count in a mapping", withMinimal("resources:", "  accelerators: {A100: 65}"),
			"task.yaml:5: resources.accelerators: A100: 65 is not a valid count; use a whole number from 1 to 64"},
		{"too many alternatives", withMinimal("resources:", "  accelerators: ["+strings.Join(many, ", ")+"]"),
			"task.yaml:5: resources.accelerators: lists 17 accelerators; list at most 16 alternatives"},
		{"NUL in run", yml("run: \"python3 a\\0b\"", "service:", "  replicas: 1"),
			"task.yaml:1: run: contains a NUL byte"},
		{"NUL in setup", withMinimal("setup: \"a\\0\""),
			"task.yaml:4: setup: contains a NUL byte"},
		{"NUL in workdir", withMinimal("workdir: \"/a\\0b\""),
			"task.yaml:4: workdir: must be a directory path of at most 4096 bytes without NUL bytes"},
		{"long probe path", yml("run: x", "service:", "  readiness_probe: /"+strings.Repeat("a", 2048)),
			"task.yaml:3: service.readiness_probe: is 2049 characters long; a probe path has at most 2048"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTask("task.yaml", tt.data)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
