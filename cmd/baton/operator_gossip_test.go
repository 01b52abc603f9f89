package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func TestGossipKeygen(t *testing.T) {
	var keys []string
	for range 2 {
		// keygen asks no coordinator: the address is never dialled.
		out, errOut, err := runOperator(t, "http://127.0.0.1:1", "gossip", "keygen")
		if err != nil {
			t.Fatalf("keygen: %v (stderr %q)", err, errOut)
		}
		if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
			t.Fatalf("keygen printed %q, want one line", out)
		}
		key := strings.TrimSuffix(out, "\n")
		if len(key) != 44 {
			t.Errorf("key %q is %d characters, want 44", key, len(key))
		}
		raw, err := base64.StdEncoding.DecodeString(key)
		if err != nil || len(raw) != 32 {
			t.Errorf("key %q decodes to %d bytes (%v), want 32", key, len(raw), err)
		}
		if _, err := parseGossipKey("--gossip-key", key); err != nil {
			t.Errorf("keygen's key refused by --gossip-key: %v", err)
		}
		keys = append(keys, key)
	}
	if keys[0] == keys[1] {
		t.Errorf("two keygens printed the same key %s", keys[0])
	}
	if _, _, err := runOperator(t, "http://127.0.0.1:1", "gossip", "keygen", "extra"); err == nil || !strings.Contains(err.Error(), "no arguments") {
		t.Errorf("keygen extra: error %v, want it to take no arguments", err)
	}
}

func TestParseGossipKey(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n)) }
	tests := []struct {
		name    string
		value   string
		wantLen int    // when no error
		wantErr string // "" means valid
	}{
		{name: "16 bytes", value: b64(16), wantLen: 16},
		{name: "24 bytes", value: b64(24), wantLen: 24},
		{name: "32 bytes", value: b64(32), wantLen: 32},
		{name: "32 bytes with a newline", value: b64(32) + "\n", wantLen: 32},
		{name: "empty", value: "", wantErr: "decodes to 0 bytes"},
		{name: "10 bytes", value: b64(10), wantErr: "decodes to 10 bytes"},
		{name: "64 bytes", value: b64(64), wantErr: "decodes to 64 bytes"},
		{name: "not base64", value: "not a key!", wantErr: "illegal base64"},
		{name: "url encoding", value: strings.ReplaceAll(strings.ReplaceAll(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff}, 16)), "+", "-"), "/", "_"), wantErr: "illegal base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := parseGossipKey("--gossip-key", tt.value)
			if tt.wantErr == "" {
				if err != nil || len(key) != tt.wantLen {
					t.Fatalf("got %d bytes, %v; want %d bytes", len(key), err, tt.wantLen)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %q as a %d-byte key", tt.value, len(key))
			}
			for _, want := range []string{"--gossip-key: not base64 of 16, 24 or 32 bytes", tt.wantErr, "baton operator gossip keygen"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if tt.value != "" && strings.Contains(err.Error(), strings.TrimSpace(tt.value)) {
				t.Errorf("error %q repeats the key", err)
			}
		})
	}
}

func TestGossipKeyFlagAndEnv(t *testing.T) {
	k16 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 16))
	k32 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))
	tests := []struct {
		name    string
		args    []string
		env     string
		wantLen int
		wantErr string
	}{
		{name: "none", wantLen: 0},
		{name: "flag", args: []string{"--gossip-key", k16}, wantLen: 16},
		{name: "env", env: k32, wantLen: 32},
		{name: "flag wins over env", args: []string{"--gossip-key", k16}, env: k32, wantLen: 16},
		{name: "bad flag", args: []string{"--gossip-key", "abc"}, env: k32, wantErr: "--gossip-key: not base64"},
		{name: "empty flag", args: []string{"--gossip-key="}, env: k32, wantErr: "--gossip-key: not base64"},
		{name: "bad env", env: "abc", wantErr: "$BATON_GOSSIP_KEY: not base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(gossipKeyEnv, tt.env)
			var g gossipKeyFlag
			cmd := &cobra.Command{Use: "x"}
			g.register(cmd)
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatal(err)
			}
			key, err := g.key()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(key) != tt.wantLen {
				t.Fatalf("got %d bytes, %v; want %d bytes", len(key), err, tt.wantLen)
			}
		})
	}
}

// TestDaemonsRefuseBadGossipKey runs the daemons with a bad key: each
// fails at once, naming where the key came from, before starting.
func TestDaemonsRefuseBadGossipKey(t *testing.T) {
	short := base64.StdEncoding.EncodeToString([]byte("too short"))
	for _, daemon := range [][]string{
		// --insecure: without TLS and ACLs the coordinator would refuse
		// before it reads the key.
		{"coordinator", "--data-dir", t.TempDir(), "--insecure"},
		{"agent", "--data-dir", t.TempDir()},
		{"lb"},
	} {
		for _, src := range []struct{ name, flag, env, want string }{
			{name: "flag", flag: short, want: "--gossip-key: not base64 of 16, 24 or 32 bytes (it decodes to 9 bytes)"},
			{name: "env", env: "%%%", want: "$BATON_GOSSIP_KEY: not base64 of 16, 24 or 32 bytes"},
		} {
			t.Run(daemon[0]+"/"+src.name, func(t *testing.T) {
				t.Setenv(gossipKeyEnv, src.env)
				args := daemon
				if src.flag != "" {
					args = append(append([]string(nil), daemon...), "--gossip-key", src.flag)
				}
				root := newRootCmd()
				root.SetArgs(args)
				root.SetOut(&bytes.Buffer{})
				root.SetErr(&bytes.Buffer{})
				// Should the key be taken, the daemon stops soon anyway.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				err := root.ExecuteContext(ctx)
				if err == nil || !strings.Contains(err.Error(), src.want) {
					t.Fatalf("baton %s: error %v, want one saying %q", strings.Join(args, " "), err, src.want)
				}
			})
		}
	}
}
