package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testutil"
)

const (
	missingTLS = "TLS (--tls-ca, --tls-cert, --tls-key)"
	missingACL = "ACLs (--acl)"
)

// refusedFor returns what a refusal from checkSecureDefaults names as
// missing ("" if err is not one), and fails the test unless it says what
// to do instead.
func refusedFor(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	rest, ok := strings.CutPrefix(err.Error(), "refusing to start without ")
	if !ok {
		t.Fatalf("error %q is not a refusal to start open", err)
	}
	missing, _, ok := strings.Cut(rest, ": ")
	if !ok {
		t.Fatalf("refusal %q says no reason", err)
	}
	for _, hint := range []string{"--insecure", "baton tls ca create", "baton acl bootstrap", "baton dev"} {
		if !strings.Contains(err.Error(), hint) {
			t.Errorf("refusal %q does not mention %s", err, hint)
		}
	}
	return missing
}

func TestCheckSecureDefaults(t *testing.T) {
	tests := []struct {
		name                     string
		tls, acls, dev, insecure bool
		// wantMissing is what the refusal names; "" means it starts.
		wantMissing string
	}{
		{name: "TLS and ACLs", tls: true, acls: true},
		{name: "no ACLs", tls: true, wantMissing: missingACL},
		{name: "no TLS", acls: true, wantMissing: missingTLS},
		{name: "neither", wantMissing: missingTLS + " and " + missingACL},
		{name: "dev", dev: true},
		{name: "dev with TLS only", dev: true, tls: true},
		{name: "insecure", insecure: true},
		{name: "insecure with ACLs only", insecure: true, acls: true},
		{name: "insecure with TLS and ACLs", insecure: true, tls: true, acls: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSecureDefaults(tt.tls, tt.acls, tt.dev, tt.insecure)
			if got := refusedFor(t, err); got != tt.wantMissing {
				t.Fatalf("refused for %q (error %v), want %q", got, err, tt.wantMissing)
			}
		})
	}
}

func TestWarnInsecure(t *testing.T) {
	tests := []struct {
		name                                      string
		tls, acls, gossipKey, clustered, dev, ins bool
		// want are the parts of the line; none means nothing is logged.
		want []string
	}{
		{name: "secure", tls: true, acls: true},
		{name: "TLS and ACLs with --insecure", tls: true, acls: true, ins: true},
		{name: "open without --insecure or --dev", clustered: true},
		{name: "insecure", ins: true, want: []string{"(--insecure)", "no TLS", "no ACLs"}},
		{name: "insecure without ACLs", tls: true, ins: true, want: []string{"(--insecure)", "no ACLs"}},
		{name: "insecure cluster without a gossip key", tls: true, acls: true, clustered: true, ins: true, want: []string{"(--insecure)", "no gossip key"}},
		{name: "insecure cluster with a gossip key", tls: true, acls: true, clustered: true, gossipKey: true, ins: true},
		{name: "dev", dev: true, want: []string{"(--dev)", "no TLS", "no ACLs"}},
	}
	all := []string{"no TLS", "no ACLs", "no gossip key"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, nil))
			warnInsecure(log, tt.tls, tt.acls, tt.gossipKey, tt.clustered, tt.dev, tt.ins)
			if len(tt.want) == 0 {
				if buf.Len() != 0 {
					t.Fatalf("logged %s, want nothing", buf.String())
				}
				return
			}
			lines := logLines(t, buf.Bytes())
			if len(lines) != 1 {
				t.Fatalf("logged %d lines, want one: %s", len(lines), buf.String())
			}
			line := lines[0]
			if line.Level != "ERROR" || !strings.HasPrefix(line.Msg, "INSECURE") {
				t.Fatalf("logged %s, want an INSECURE line at ERROR", buf.String())
			}
			text := line.Msg + " " + line.Open
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("logged %s, want %q in it", buf.String(), w)
				}
			}
			for _, a := range all {
				if strings.Contains(line.Open, a) && !slices.Contains(tt.want, a) {
					t.Errorf("logged %s, which lists %q though it is not so", buf.String(), a)
				}
			}
		})
	}
}

// logLine is the part of a JSON log line these tests read.
type logLine struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	Open  string `json:"open"`
}

// logLines decodes JSON log lines.
func logLines(t *testing.T, b []byte) []logLine {
	t.Helper()
	var out []logLine
	for l := range bytes.Lines(b) {
		var line logLine
		if err := json.Unmarshal(l, &line); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, line)
	}
	return out
}

// TestCoordinatorRefusesToStartOpen runs `baton coordinator` without TLS
// or without ACLs (or both), on ports this test holds and a data dir of
// its own: it returns the refusal at once, naming what is missing, and
// has bound no port (it would fail with "address already in use"
// otherwise) and written nothing to the data dir. TLS files that do not
// exist are not read before the refusal either.
func TestCoordinatorRefusesToStartOpen(t *testing.T) {
	tlsFlags := []string{"--tls-ca", "/nonexistent/ca.pem", "--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"}
	tests := []struct {
		name        string
		flags       []string
		wantMissing string
	}{
		{name: "neither", wantMissing: missingTLS + " and " + missingACL},
		{name: "ACLs only", flags: []string{"--acl"}, wantMissing: missingTLS},
		{name: "TLS only", flags: tlsFlags, wantMissing: missingACL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ports []string
			for range 3 {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
			}
			dataDir := t.TempDir()
			args := append([]string{"coordinator", "--data-dir", dataDir,
				"--http-addr", "127.0.0.1:" + ports[0], "--raft-addr", "127.0.0.1:" + ports[1],
				"--nats-host", "127.0.0.1", "--nats-port", ports[2]}, tt.flags...)
			root := newRootCmd()
			root.SetArgs(args)
			root.SetOut(&bytes.Buffer{})
			root.SetErr(&bytes.Buffer{})
			// Should it start after all, it stops when this ends.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			err := root.ExecuteContext(ctx)
			if err == nil {
				t.Fatalf("baton %s started", strings.Join(args, " "))
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("the refusal took %s", took)
			}
			if got := refusedFor(t, err); got != tt.wantMissing {
				t.Fatalf("refused for %q (error %v), want %q", got, err, tt.wantMissing)
			}
			if entries, err := os.ReadDir(dataDir); err != nil || len(entries) != 0 {
				t.Errorf("the data dir holds %v (%v), want nothing", entries, err)
			}
		})
	}
}

// TestCoordinatorInsecureStarts runs `baton coordinator --insecure`
// without TLS and ACLs: it serves /healthz, stops cleanly, and logs at
// error level that it runs open. The command logs to os.Stderr, so the
// test points os.Stderr at a file while it runs.
func TestCoordinatorInsecureStarts(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "stderr.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = logFile
	t.Cleanup(func() {
		os.Stderr = stderr
		logFile.Close()
	})

	api := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	args := []string{"coordinator", "--insecure", "--data-dir", t.TempDir(),
		"--http-addr", api, "--raft-addr", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1")),
		"--nats-host", "127.0.0.1", "--nats-port", "-1", "--log-format", "json"}
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		runErr = root.ExecuteContext(ctx)
	}()
	// stop ends the command and returns what it returned. Cleanups run
	// last first: it is done before os.Stderr is restored.
	stop := func() error {
		cancel()
		select {
		case <-finished:
			return runErr
		case <-time.After(30 * time.Second):
			return errors.New("the coordinator did not stop within 30s of its context's end")
		}
	}
	t.Cleanup(func() { _ = stop() })

	client := &http.Client{Timeout: time.Second}
	testutil.WaitFor(t, 30*time.Second, func() error {
		select {
		case <-finished:
			t.Fatalf("baton %s exited: %v", strings.Join(args, " "), runErr)
		default:
		}
		resp, err := client.Get("http://" + api + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz %s", resp.Status)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatalf("baton coordinator --insecure: %v", err)
	}

	out, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// Raft's and NATS's own loggers may write other lines there.
	var insecure []logLine
	for l := range bytes.Lines(out) {
		var line logLine
		if json.Unmarshal(l, &line) == nil && strings.HasPrefix(line.Msg, "INSECURE") {
			insecure = append(insecure, line)
		}
	}
	if len(insecure) != 1 {
		t.Fatalf("%d INSECURE lines in the log, want one:\n%s", len(insecure), out)
	}
	l := insecure[0]
	if l.Level != "ERROR" {
		t.Errorf("the INSECURE line is at %s, want ERROR", l.Level)
	}
	for _, w := range []string{"no TLS", "no ACLs"} {
		if !strings.Contains(l.Open, w) {
			t.Errorf("the INSECURE line lists %q, want %q in it", l.Open, w)
		}
	}
	if !strings.Contains(l.Msg, "--insecure") {
		t.Errorf("the INSECURE line %q does not name --insecure", l.Msg)
	}
}
