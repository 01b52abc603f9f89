package protocol

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// errLineRE is the start every error line must have; overrideLineRE
// allows also the start of a problem with an --env override.
var (
	errLineRE      = regexp.MustCompile(`^fuzz\.yaml:[1-9][0-9]*: `)
	overrideLineRE = regexp.MustCompile(`^fuzz\.yaml(:[1-9][0-9]*)?: `)
)

// FuzzParseTask checks that ParseTask never panics, that every spec it
// accepts satisfies the rules it promises, and that every error it returns
// is located (`fuzz.yaml:LINE: ...` on each line).
func FuzzParseTask(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "valid", "*.yaml"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, seed := range []string{
		"",
		"run: x\nservice:\n  readiness_probe: /\n",
		"run: x\nservice:\n  readiness_probe: {path: /, post_data: &a {b: [*a]}}\n",
		"run: x\nservice:\n  readiness_probe: /\n  replica_policy: {min_replicas: 1, max_replicas: 3, target_qps_per_replica: 1}\n",
		"run: x\nservice:\n  readiness_probe: /\nresources:\n  accelerators: [A100:1, {H100: 2}]\n  ports: [8000-8001, '9000']\n  cpus: 2.5+\n",
		"run: x\nservice:\n  readiness_probe: /\nresources:\n  accelerators: {A100:8, T4:}\n",
		"run: [x]\nservice: {readiness_probe: health, replicas: -1}\nresources: {cpus: four}\n",
		"a: &x\n  b: *x\n<<: *x\n",
		"--- \n...\n---\nrun: x\n",
		"!!str run: !!int x\nservice: !custom\n  readiness_probe: !!str /\n",
		"\xEF\xBB\xBFrun: x\nservice: {}\nresources: {memory: 512MB+, gpus: A100:2}\n",
		"run: x\nservice:\n  readiness_probe: {path: /, initial_delay_seconds: 0.5, timeout_seconds: 1e3}\n  replica_policy: {min_replicas: 1, upscale_delay_seconds: 1.5}\n",
		"run: x\nservice: {replicas: 2}\nenvs: {HF_TOKEN: , A: null, B: 1}\n",
		"run: x\nservice:\n  tls: {keyfile: k, certfile: c}\n  response_timeout_seconds: 2.5\n",
		"run: x\nservice: {replicas: 1000, response_timeout_seconds: 0}\nimage_id: docker:x\nresources: {image_id: ami-1}\n",
		"run: x\nservice:\n  replica_policy: {min_replicas: 1, max_replicas: 1001, target_qps_per_replica: 1e3, num_overprovision: 99999999999999999999}\n",
		"run: x\nservice: {}\nenvs: {A: \"a\\0b\", B: -99999999999999999999}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := ParseTask("fuzz.yaml", data)
		if err != nil {
			if spec != nil {
				t.Fatalf("ParseTask returned both a spec and an error: %v", err)
			}
			// Overrides can fill required envs but never cause a panic.
			_, _ = ParseTaskWithEnvs("fuzz.yaml", data, map[string]string{"HF_TOKEN": "x", "A": ""})
			for _, line := range strings.Split(err.Error(), "\n") {
				if !errLineRE.MatchString(line) {
					t.Fatalf("error line %q does not start with fuzz.yaml:LINE:", line)
				}
			}
			return
		}
		checkInvariants(t, spec)
		for k, line := range spec.Lines {
			if line < 1 {
				t.Fatalf("Lines[%q] = %d", k, line)
			}
		}
		// A spec with no required envs parses the same with one more small
		// env, unless that env passes a limit.
		over := map[string]string{"FUZZ_ENV": "x"}
		withEnv, err := ParseTaskWithEnvs("fuzz.yaml", data, over)
		if err == nil && withEnv.Envs["FUZZ_ENV"] != "x" {
			t.Fatalf("ParseTaskWithEnvs with an override lost it: %v", withEnv.Envs)
		}
		if err != nil && hasRoom(spec) {
			t.Fatalf("ParseTaskWithEnvs with an override: %v", err)
		}
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !overrideLineRE.MatchString(line) {
					t.Fatalf("error line %q does not start with fuzz.yaml[:LINE]:", line)
				}
			}
		}
		for _, w := range spec.Warnings {
			if !errLineRE.MatchString(w) {
				t.Fatalf("warning %q does not start with fuzz.yaml:LINE:", w)
			}
		}
		if _, err := json.Marshal(spec); err != nil {
			t.Fatalf("spec does not encode as JSON: %v", err)
		}
	})
}

// hasRoom reports whether one more env of 9 bytes (FUZZ_ENV=x) stays within
// the limits on envs and on the spec's JSON.
func hasRoom(s *TaskSpec) bool {
	size := 0
	for k, v := range s.Envs {
		size += len(k) + len(v)
	}
	b, err := json.Marshal(s)
	const more = len(`"envs":{"FUZZ_ENV":"x"},`)
	return len(s.Envs) < MaxEnvs && size+len("FUZZ_ENVx") <= MaxEnvsBytes && err == nil && len(b)+more <= MaxSpecBytes
}
