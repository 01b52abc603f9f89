package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// unitCommand reads a systemd unit in deploy/ and returns its ExecStart
// arguments with every ${VAR} and $VAR replaced by the unit's own
// Environment= default, as systemd would without an override file.
func unitCommand(t *testing.T, name string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	env := map[string]string{}
	var exec string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "Environment="); ok {
			k, val, _ := strings.Cut(v, "=")
			env[k] = val
		}
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			exec = v
		}
	}
	if exec == "" {
		t.Fatalf("%s has no ExecStart", name)
	}
	expanded := regexp.MustCompile(`\$\{([A-Z_]+)\}|\$([A-Z_]+)`).ReplaceAllStringFunc(exec, func(m string) string {
		return env[strings.Trim(m, "${}")]
	})
	args := strings.Fields(expanded)
	if len(args) < 2 || args[0] != "/usr/local/bin/baton" {
		t.Fatalf("%s runs %v, want /usr/local/bin/baton <role>", name, args)
	}
	return args[1:]
}

// TestDeployUnitsMatchTheFlags: each unit's command line, with its default
// environment, is one the binary accepts; the agent's leaves the id empty,
// which the agent derives from the host name (a systemd %H with dots or
// capitals is not a valid agent id).
func TestDeployUnitsMatchTheFlags(t *testing.T) {
	for _, tc := range []struct {
		unit string
		cmd  func() *cobra.Command
	}{
		{"baton-coordinator.service", newCoordinatorCmd},
		{"baton-agent.service", newAgentCmd},
		{"baton-lb.service", newLBCmd},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			args := unitCommand(t, tc.unit)
			cmd := tc.cmd()
			if args[0] != cmd.Name() {
				t.Fatalf("%s runs `baton %s`, want %s", tc.unit, args[0], cmd.Name())
			}
			if err := cmd.ParseFlags(args[1:]); err != nil {
				t.Fatalf("%s: the binary refuses its flags %v: %v", tc.unit, args[1:], err)
			}
			if tc.unit == "baton-agent.service" {
				if id := cmd.Flags().Lookup("id"); id == nil || id.Value.String() != "" {
					t.Errorf("the agent unit passes --id %q by default; leave it empty so the agent derives a valid id", id.Value)
				}
				if strings.Contains(strings.Join(args, " "), "%H") {
					t.Error("the agent unit still uses %H")
				}
			}
		})
	}
}
