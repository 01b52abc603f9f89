package procscan

import (
	"os/exec"
	"slices"
	"testing"
)

func TestWithEnvFindsAChild(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.Env = []string{"PROCSCAN_TEST=yes-" + t.Name(), "OTHER=1"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if pids := WithEnv("PROCSCAN_TEST=yes-"+t.Name(), "OTHER=1"); !slices.Contains(pids, cmd.Process.Pid) {
		t.Fatalf("WithEnv found %v, want %d among them", pids, cmd.Process.Pid)
	}
	if pids := WithEnv("PROCSCAN_TEST=yes-"+t.Name(), "OTHER=2"); slices.Contains(pids, cmd.Process.Pid) {
		t.Fatal("a process lacking one of the pairs must not match")
	}
	if pids := WithEnv("PROCSCAN_TEST=yes"); slices.Contains(pids, cmd.Process.Pid) {
		t.Fatal("a prefix of a value must not match")
	}
}
