package agent

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/baton-dev/baton/protocol"
)

// lockedBuffer is a bytes.Buffer safe for the agent's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestReplicaSeesSecrets: a task's secrets reach the replica's environment
// beside its envs, and neither the agent's log nor its status messages
// carry a secret's value, through the replica's whole life.
func TestReplicaSeesSecrets(t *testing.T) {
	t.Parallel()
	const secret = "sk-agent-test-5f0c1d2e3b4a"
	var logs lockedBuffer
	h := startAgent(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(&logs, newTestWriter(t)), &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	asg := serverAssignment(t, "sec", 1)
	asg.Port = specPort(t)
	asg.Spec.Envs = map[string]string{"MODEL": "m"}
	asg.Spec.Secrets = map[string]string{"HF_TOKEN": secret}
	h.desire(1, asg)
	rep := h.waitStatus("sec", 1, protocol.ReplicaReady, readyTimeout)
	var who struct {
		Env map[string]string `json:"env"`
	}
	if err := getJSON("http://"+rep.Endpoint+"/whoami", &who); err != nil {
		t.Fatal(err)
	}
	env := who.Env
	if env["HF_TOKEN"] != secret || env["MODEL"] != "m" {
		t.Errorf("replica env HF_TOKEN = %q, MODEL = %q; want the secret and the env", env["HF_TOKEN"], env["MODEL"])
	}
	h.desire(2)
	h.waitGone("sec", 1, readyTimeout)

	if strings.Contains(logs.String(), secret) {
		t.Errorf("the agent's log holds the secret's value:\n%s", logs.String())
	}
	for _, st := range h.all() {
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), secret) {
			t.Errorf("a status message holds the secret's value: %s", b)
		}
	}
}
