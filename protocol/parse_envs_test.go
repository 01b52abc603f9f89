package protocol

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

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

func TestParseTaskEnvLimits(t *testing.T) {
	// envsOf is a task with the envs NAME0..NAMEn-1 on lines 5.. (value v).
	envsOf := func(prefix string, n int, v string) []byte {
		lines := append([]string{}, minimal...)
		lines = append(lines, "envs:")
		for i := range n {
			lines = append(lines, fmt.Sprintf("  %s%d: %s", prefix, i, v))
		}
		return yml(lines...)
	}
	overridesOf := func(prefix string, n int) map[string]string {
		over := map[string]string{}
		for i := range n {
			over[fmt.Sprintf("%s%02d", prefix, i)] = "v"
		}
		return over
	}
	big := strings.Repeat("x", MaxEnvValueBytes+1)
	const keep = "(keep large values in a file in workdir and read it in run)"
	tests := []struct {
		name  string
		data  []byte
		over  map[string]string
		lines []string // the whole error, one problem a line
	}{
		{
			name:  "file value too large",
			data:  withMinimal("envs:", "  BIG: "+big),
			lines: []string{"task.yaml:5: envs.BIG: the value is 16385 bytes; an env's value is limited to 16384 " + keep},
		},
		{
			name:  "override value too large",
			data:  yml(minimal...),
			over:  map[string]string{"BIG": big},
			lines: []string{"task.yaml: --env BIG: the value is 16385 bytes; an env's value is limited to 16384 " + keep},
		},
		{
			name:  "override replacing a file env",
			data:  withMinimal("envs:", "  BIG: small"),
			over:  map[string]string{"BIG": big},
			lines: []string{"task.yaml: --env BIG: the value is 16385 bytes; an env's value is limited to 16384 " + keep},
		},
		{
			name:  "override filling a required env",
			data:  withMinimal("envs:", "  BIG:"),
			over:  map[string]string{"BIG": big},
			lines: []string{"task.yaml: --env BIG: the value is 16385 bytes; an env's value is limited to 16384 " + keep},
		},
		{
			name: "too many envs in the file",
			data: envsOf("E", MaxEnvs+1, "v"),
			lines: []string{
				"task.yaml:261: envs.E256: is env 257 of 257; a task has at most 256 envs and secrets, the file's and the command line's together (put the rest in a file in workdir and read it in run)",
			},
		},
		{
			name: "too many envs with overrides",
			data: envsOf("E", 200, "v"),
			over: overridesOf("O", 60),
			lines: []string{
				"task.yaml: --env O56: is env 257 of 260; a task has at most 256 envs and secrets, the file's and the command line's together (put the rest in a file in workdir and read it in run)",
			},
		},
		{
			name: "names and values too large in the file",
			data: withMinimal("envs:", "  A: "+strings.Repeat("a", 16000), "  B: "+strings.Repeat("b", 16000), "  C: "+strings.Repeat("c", 1000)),
			lines: []string{
				"task.yaml:7: envs.C: the names and values of the envs and secrets come to 33003 bytes, the file's and the command line's together, and pass the limit of 32768 here " + keep,
			},
		},
		{
			name: "names and values too large with an override",
			data: withMinimal("envs:", "  A: "+strings.Repeat("a", 16384)),
			over: map[string]string{"Z": strings.Repeat("z", 16383)},
			lines: []string{
				"task.yaml: --env Z: the names and values of the envs and secrets come to 32769 bytes, the file's and the command line's together, and pass the limit of 32768 here " + keep,
			},
		},
		{
			name:  "NUL byte in a file env",
			data:  withMinimal("envs:", `  A: "x\0y"`),
			lines: []string{"task.yaml:5: envs.A: the value contains a NUL byte, which an environment variable cannot hold; remove it"},
		},
		{
			name:  "NUL byte in an override",
			data:  yml(minimal...),
			over:  map[string]string{"A": "x\x00y"},
			lines: []string{"task.yaml: --env A: the value contains a NUL byte, which an environment variable cannot hold; remove it"},
		},
		{
			name: "a large value is reported alone",
			data: withMinimal("envs:", "  A: "+big, "  B: "+big),
			lines: []string{
				"task.yaml:5: envs.A: the value is 16385 bytes; an env's value is limited to 16384 " + keep,
				"task.yaml:6: envs.B: the value is 16385 bytes; an env's value is limited to 16384 " + keep,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTaskWithEnvs("task.yaml", tt.data, tt.over)
			wantErrorLines(t, err, tt.lines...)
		})
	}

	valid := []struct {
		name string
		data []byte
		over map[string]string
	}{
		{"a value at the limit", withMinimal("envs:", "  A: "+strings.Repeat("a", MaxEnvValueBytes)), nil},
		{"MaxEnvs envs in the file", envsOf("E", MaxEnvs, "v"), nil},
		{"MaxEnvs envs with overrides", envsOf("E", 200, "v"), overridesOf("O", 56)},
		{"overrides of file envs count once", envsOf("E", MaxEnvs, "v"), map[string]string{"E0": "w", "E255": "w"}},
		{"names and values at the limit", withMinimal("envs:", "  A: "+strings.Repeat("a", 16383)), map[string]string{"B": strings.Repeat("b", 16383)}},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseTaskWithEnvs("task.yaml", tt.data, tt.over)
			if err != nil {
				t.Fatalf("ParseTaskWithEnvs: %v", err)
			}
			if err := ValidateEnvs(s.Envs); err != nil {
				t.Errorf("ValidateEnvs: %v", err)
			}
		})
	}
}
