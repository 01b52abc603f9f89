package protocol

import (
	"testing"
)

// TestParseTaskNumbers checks the number reader's messages in full, one
// rule at a time: every number field reports the same problems in the
// same words.
func TestParseTaskNumbers(t *testing.T) {
	const (
		replicas = "task.yaml:4: service.replicas: "
		timeout  = "task.yaml:4: service.response_timeout_seconds: "
		qps      = "task.yaml:7: service.replica_policy.target_qps_per_replica: "
		probe    = "task.yaml:5: service.readiness_probe.timeout_seconds: "
		cpus     = "task.yaml:5: resources.cpus: "
	)
	policy := func(qps string) []byte {
		return withMinimal("  replica_policy:", "    min_replicas: 1", "    max_replicas: 2", "    target_qps_per_replica: "+qps)
	}
	probeTimeout := func(v string) []byte {
		return yml("run: x", "service:", "  readiness_probe:", "    path: /", "    timeout_seconds: "+v)
	}
	tests := []struct {
		name string
		data []byte
		line string // the whole error
	}{
		// service.response_timeout_seconds: seconds > 0, as timeout_seconds.
		{"response timeout zero", withMinimal("  response_timeout_seconds: 0"), timeout + "0 is too small; use a number of seconds > 0 (e.g. 120)"},
		{"response timeout zero as a float", withMinimal("  response_timeout_seconds: 0.0"), timeout + "0.0 is too small; use a number of seconds > 0 (e.g. 120)"},
		{"response timeout negative", withMinimal("  response_timeout_seconds: -5"), timeout + "-5 is too small; use a number of seconds > 0 (e.g. 120)"},
		{"response timeout empty", withMinimal("  response_timeout_seconds:"), timeout + "has no value; use a number of seconds > 0 (e.g. 120)"},
		{"response timeout a word", withMinimal("  response_timeout_seconds: never"), timeout + `"never" is not a number; use a number of seconds > 0 (e.g. 120)`},
		{"response timeout quoted", withMinimal("  response_timeout_seconds: '30'"), timeout + `"30" is a string; use a number of seconds > 0 (e.g. 120) without quotes`},
		{"response timeout a list", withMinimal("  response_timeout_seconds: [30]"), timeout + "must be a number of seconds > 0 (e.g. 120), got a list"},
		{"response timeout too large", withMinimal("  response_timeout_seconds: 2147483647.5"), timeout + "2147483647.5 is too large; use a number of seconds > 0 (e.g. 120) up to 2147483647"},
		{"response timeout exponent", withMinimal("  response_timeout_seconds: 1e3"), timeout + "1e3 is not a number in YAML (write an exponent like 1.0e+3); use a number of seconds > 0 (e.g. 120)"},
		// Numbers too large or too small for YAML read as strings; the
		// range check reports them like any other number.
		{"seconds too large for YAML", probeTimeout("99999999999999999999"), probe + "99999999999999999999 is too large; use a number of seconds > 0 (e.g. 15) up to 2147483647"},
		{"seconds too small for YAML", probeTimeout("-99999999999999999999"), probe + "-99999999999999999999 is too small; use a number of seconds > 0 (e.g. 15)"},
		{"exponent too large for a float", probeTimeout("1.0e+400"), probe + "1.0e+400 is too large; use a number of seconds > 0 (e.g. 15) up to 2147483647"},
		{"replicas too small for YAML", withMinimal("  replicas: -99999999999999999999"), replicas + "-99999999999999999999 is too small; use a whole number >= 1 (e.g. 2)"},
		// An exponent without '.' is a string in YAML.
		{"whole number with an exponent", withMinimal("  replicas: 1e3"), replicas + "1e3 is not a number in YAML (write the digits out); use a whole number >= 1 (e.g. 2)"},
		{"rate with an exponent", policy("1e3"), qps + "1e3 is not a number in YAML (write an exponent like 1.0e+3); use a number > 0 (e.g. 2.5)"},
		{"rate zero", policy("0"), qps + "0 is too small; use a number > 0 (e.g. 2.5)"},
		{"rate negative", policy("-1.5"), qps + "-1.5 is too small; use a number > 0 (e.g. 2.5)"},
		{"rate quoted", policy("'2.5'"), qps + `"2.5" is a string; use a number > 0 (e.g. 2.5) without quotes`},
		{"rate infinite", policy(".inf"), qps + "must be a number > 0 (e.g. 2.5), got the number .inf"},
		{"rate too large for a float", policy("1.0e+400"), qps + "1.0e+400 is too large; use a number > 0 (e.g. 2.5)"},
		{"whole number given a whole float", withMinimal("  replicas: 2.0"), replicas + "2.0 is not a whole number; use a whole number >= 1 (e.g. 2)"},
		{"whole number given a boolean", withMinimal("  replicas: true"), replicas + "must be a whole number >= 1 (e.g. 2), got the boolean true"},
		// Resource amounts put the advice in parentheses.
		{"cpus negative", withMinimal("resources:", "  cpus: -2"), cpus + "-2 is not allowed; it must be more than 0 (use 4 or 4+)"},
		{"cpus a mapping", withMinimal("resources:", "  cpus: {min: 2}"), cpus + "must be a number, got a mapping (use 4 or 4+)"},
		{"cpus plus twice", withMinimal("resources:", "  cpus: 4++"), cpus + `"4++" is not a number (use 4 or 4+)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTask("task.yaml", tt.data)
			wantErrorLines(t, err, tt.line)
		})
	}
}

func TestParseTaskResponseTimeout(t *testing.T) {
	tests := []struct {
		name string
		line string // the key's line in service; empty for none
		want int
	}{
		{"absent means no limit", "", 0},
		{"whole seconds", "  response_timeout_seconds: 300", 300},
		{"a fraction rounds up", "  response_timeout_seconds: 2.1", 3},
		{"a tiny fraction is one second", "  response_timeout_seconds: 0.001", 1},
		{"a whole float", "  response_timeout_seconds: 60.0", 60},
		{"the bound", "  response_timeout_seconds: 2147483647", 2147483647},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := yml(minimal...)
			if tt.line != "" {
				data = withMinimal(tt.line)
			}
			s := mustParse(t, data)
			if got := s.Service.ResponseTimeoutSeconds; got != tt.want {
				t.Errorf("ResponseTimeoutSeconds = %d, want %d", got, tt.want)
			}
			if line := s.Lines["service.response_timeout_seconds"]; (tt.line != "") != (line == 4) {
				t.Errorf(`Lines["service.response_timeout_seconds"] = %d`, line)
			}
			if err := s.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}
