package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/coordinator"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// lockedLog is a log sink safe for the coordinator's goroutines.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestServeSecretsNeverShown runs `baton serve up` and `update` with
// secrets (in the file and from --secret) against an in-process
// coordinator, then `serve status` (plain and --json) and the raw status
// API, and checks that no output, answer, error or coordinator log line
// holds a secret's value.
func TestServeSecretsNeverShown(t *testing.T) {
	const (
		fromFlag  = "sk-flag-9e8d7c6b5a4f3e2d"
		fromShell = "sk-shell-1a2b3c4d5e6f7a8b"
		tooBig    = "sk-big-"
	)
	var logs lockedLog
	cfg := coordinator.DevConfig()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	cfg.GossipAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	cfg.NATSPort = -1
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	api := "http://" + s.HTTPAddr()
	testutil.WaitFor(t, 10*time.Second, func() error {
		resp, err := http.Get(api + "/v1/status")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	t.Setenv("BATON_TEST_SECRET_FROM_SHELL", fromShell)

	task := writeTask(t, `name: sec
envs:
  MODEL: small
secrets:
  HF_TOKEN:
  API_KEY:
service:
  readiness_probe: /health
run: python3 server.py --port $PORT
`)
	var shown strings.Builder // everything the CLI printed
	run := func(args ...string) error {
		t.Helper()
		c := &serveCLI{stdin: strings.NewReader(""), isTerminal: func() bool { return false }, now: time.Now}
		cmd := c.command()
		var out, errOut bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(append([]string{"--addr", api}, args...))
		err := cmd.Execute()
		fmt.Fprintf(&shown, "$ serve %s\n%s%s", args[0], out.String(), errOut.String()) // the args hold secrets
		if err != nil {
			fmt.Fprintf(&shown, "error: %v\n", err)
		}
		return err
	}

	// A null secret with no --secret fails, naming the flag.
	if err := run("up", task, "-y"); err == nil || !strings.Contains(err.Error(), "secrets.HF_TOKEN: has no value; pass it with --secret HF_TOKEN=VALUE") {
		t.Errorf("up without --secret: %v", err)
	}
	if err := run("up", task, "-y", "--secret", "HF_TOKEN="+fromFlag, "--secret", "BATON_TEST_SECRET_FROM_SHELL", "--secret", "API_KEY="+fromFlag); err != nil {
		t.Fatalf("up: %v\n%s", err, shown.String())
	}
	// Errors about secrets, from the CLI and from the coordinator.
	if err := run("update", "sec", task, "-y", "--secret", "HF_TOKEN="+tooBig+strings.Repeat("x", 17<<10), "--secret", "API_KEY=x"); err == nil {
		t.Error("update with a secret over the limit succeeded")
	}
	if err := run("update", "sec", task, "-y", "--secret", fromFlag); err == nil {
		t.Error("update with --secret VALUE (no name) succeeded")
	}
	if err := run("update", "sec", task, "-y", "--env", "HF_TOKEN=x", "--secret", "HF_TOKEN="+fromFlag, "--secret", "API_KEY=y"); err == nil {
		t.Error("update with HF_TOKEN both an env and a secret succeeded")
	}
	if err := run("update", "sec", task, "-y", "--secret", "HF_TOKEN="+fromFlag, "--secret", "API_KEY="+fromShell); err != nil {
		t.Fatalf("update: %v\n%s", err, shown.String())
	}
	if err := run("status", "--json"); err != nil {
		t.Fatal(err)
	}
	if err := run("status"); err != nil {
		t.Fatal(err)
	}
	if err := run("status", "sec", "--json", "--consistent"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(shown.String(), `"name": "sec"`) || !strings.Contains(shown.String(), `"version": 2`) {
		t.Errorf("status --json does not show the service at version 2:\n%s", shown.String())
	}
	var answers strings.Builder
	// Requests the CLI would have refused, straight to the API: the
	// coordinator's errors must not repeat the values either.
	yaml, err := os.ReadFile(task)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []protocol.UpdateRequest{
		{YAML: string(yaml), Secrets: map[string]string{"HF_TOKEN": tooBig + strings.Repeat("x", 17<<10), "API_KEY": fromFlag}},
		{YAML: string(yaml), Envs: map[string]string{"HF_TOKEN": fromShell}, Secrets: map[string]string{"HF_TOKEN": fromFlag, "API_KEY": fromFlag}},
		{YAML: string(yaml), Secrets: map[string]string{fromFlag: "x", "HF_TOKEN": fromFlag}},
		{YAML: string(yaml) + "  BAD: [" + fromShell + "]\n", Secrets: map[string]string{"HF_TOKEN": fromFlag, "API_KEY": fromFlag}},
	} {
		b, _ := json.Marshal(req)
		resp, err := http.Post(api+"/v1/services/sec/update", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("update %d %s, want 400", resp.StatusCode, body)
		}
		fmt.Fprintf(&answers, "POST update: %d %s\n", resp.StatusCode, body)
	}
	for _, path := range []string{"/v1/status", "/v1/status?service=sec", "/v1/status?consistent=1", "/v1/agents"} {
		resp, err := http.Get(api + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(&answers, "GET %s: %d %s\n", path, resp.StatusCode, b)
	}
	for name, text := range map[string]string{"CLI output": shown.String(), "API answers": answers.String(), "coordinator log": logs.String()} {
		for _, secret := range []string{fromFlag, fromShell, tooBig} {
			if strings.Contains(text, secret) {
				t.Errorf("the %s holds a secret's value (%s):\n%s", name, secret, text)
			}
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("CLI:\n%s\nAPI:\n%s", shown.String(), answers.String())
	}
}
