package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// exposureLine is systemd-analyze security's verdict, e.g.
// "→ Overall exposure level for baton-lb.service: 1.1 OK 🙂".
var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+(?:\.[0-9]+)?)`)

// TestUnitsSecurityExposure rates each unit's sandbox with systemd's own
// yardstick, `systemd-analyze security --offline=true` (systemd 250 and
// later), from 0 (locked down) to 10 (a root service with no sandbox).
// The coordinator and the LB must stay below 5; the agent, which runs as
// root and shares its sandbox with the replicas it starts, is logged and
// held below 6 so that its hardening cannot quietly go (deploy/README.md
// says what it cannot take and why).
func TestUnitsSecurityExposure(t *testing.T) {
	analyze := systemdAnalyze(t)
	for _, tc := range []struct {
		unit string
		max  float64
	}{
		{"baton-coordinator.service", 5},
		{"baton-lb.service", 5},
		{"baton-agent.service", 6},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			path, err := filepath.Abs(filepath.Join(deployDir, tc.unit))
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(analyze, "security", "--offline=true", "--no-pager", path)
			cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0")
			out, err := cmd.CombinedOutput()
			m := exposureLine.FindSubmatch(out)
			if m == nil {
				t.Fatalf("%s security --offline=true %s gave no overall exposure (systemd older than 250?): %v\n%s", analyze, path, err, out)
			}
			if err != nil {
				t.Fatalf("%s security --offline=true %s: %v\n%s", analyze, path, err, out)
			}
			exposure, err := strconv.ParseFloat(string(m[1]), 64)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: overall exposure %.1f (systemd-analyze security --offline=true deploy/%s)", tc.unit, exposure, tc.unit)
			if exposure >= tc.max {
				t.Errorf("%s: overall exposure %.1f, want below %.0f; what systemd-analyze counts against it:\n%s", tc.unit, exposure, tc.max, out)
			}
		})
	}
}

// TestUnitsVerify has `systemd-analyze verify` read each unit as systemd
// would and report what it does not understand (a misspelt setting is
// ignored with a warning, so its protection silently goes). The one
// complaint allowed is a missing /usr/local/bin/baton on this machine.
func TestUnitsVerify(t *testing.T) {
	analyze := systemdAnalyze(t)
	for _, unit := range []string{"baton-coordinator.service", "baton-agent.service", "baton-lb.service"} {
		t.Run(unit, func(t *testing.T) {
			path, err := filepath.Abs(filepath.Join(deployDir, unit))
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(analyze, "verify", "--no-pager", path)
			cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0")
			out, _ := cmd.CombinedOutput()
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if line == "" || strings.HasSuffix(line, "Command /usr/local/bin/baton is not executable: No such file or directory") {
					continue
				}
				t.Errorf("systemd-analyze verify deploy/%s: %s", unit, line)
			}
		})
	}
}

// systemdAnalyze returns the path of systemd-analyze. Without it the
// test skips, except in CI (CI set, as for testutil.RequireRoot), where it
// fails: .ci/run installs it.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err == nil {
		return analyze
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("systemd-analyze is not installed, so the deploy/ units cannot be checked: install systemd (apt-get install systemd; .ci/run does): %v", err)
	}
	t.Skipf("systemd-analyze is not installed (apt-get install systemd); the deploy/ units are not checked: %v", err)
	return ""
}
