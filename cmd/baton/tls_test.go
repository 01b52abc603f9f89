package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-dev/baton/internal/tlsutil"
)

// runTLS runs `baton tls ARGS...` and returns its output.
func runTLS(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"tls"}, args...))
	err := cmd.Execute()
	return out.String(), err
}

func readPEMCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestTLSCreate(t *testing.T) {
	dir := t.TempDir()
	out, err := runTLS(t, "ca", "create", "--dir", dir, "--days", "100", "--common-name", "test CA")
	if err != nil {
		t.Fatalf("ca create: %v\n%s", err, out)
	}
	caPath := filepath.Join(dir, "baton-ca.pem")
	caKeyPath := filepath.Join(dir, "baton-ca-key.pem")
	if !strings.Contains(out, "CA certificate saved to: "+caPath) || !strings.Contains(out, "CA certificate key saved to: "+caKeyPath) {
		t.Errorf("ca create printed:\n%s", out)
	}
	ca := readPEMCert(t, caPath)
	if !ca.IsCA || ca.Subject.CommonName != "test CA" {
		t.Errorf("CA: IsCA %v, CN %q", ca.IsCA, ca.Subject.CommonName)
	}

	tests := []struct {
		name      string
		args      []string
		file      string
		role      string
		node      string
		verifyFor []string // names a server certificate must verify for
	}{
		{name: "server", args: []string{"--server"}, file: "baton-server-0", role: tlsutil.RoleCoordinator,
			verifyFor: []string{"localhost", "server.baton", "127.0.0.1"}},
		{name: "second server", args: []string{"--server", "--node", "c2", "--additional-dnsname", "c2.example.com", "--additional-ipaddress", "10.0.0.2,fd00::2"},
			file: "baton-server-1", role: tlsutil.RoleCoordinator, node: "c2",
			verifyFor: []string{"localhost", "server.baton", "127.0.0.1", "c2", "c2.example.com", "10.0.0.2", "fd00::2"}},
		{name: "client", args: []string{"--client"}, file: "baton-cli-0", role: tlsutil.RoleCLI},
		{name: "agent", args: []string{"--agent", "--node", "gpu-node-1"}, file: "baton-agent-0", role: tlsutil.RoleAgent, node: "gpu-node-1",
			verifyFor: []string{"agent.baton", "gpu-node-1", "127.0.0.1"}},
		{name: "lb", args: []string{"--lb", "--node", "lb-1", "--days", "7"}, file: "baton-lb-0", role: tlsutil.RoleLB, node: "lb-1",
			verifyFor: []string{"lb.baton", "lb-1"}},
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runTLS(t, append([]string{"cert", "create", "--dir", dir}, tt.args...)...)
			if err != nil {
				t.Fatalf("cert create: %v\n%s", err, out)
			}
			certPath := filepath.Join(dir, tt.file+".pem")
			keyPath := filepath.Join(dir, tt.file+"-key.pem")
			if !strings.Contains(out, "certificate saved to: "+certPath) || !strings.Contains(out, "certificate key saved to: "+keyPath) {
				t.Errorf("cert create printed:\n%s", out)
			}
			for path, want := range map[string]os.FileMode{certPath: 0o644, keyPath: 0o600} {
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != want {
					t.Errorf("%s: mode %v, want %v", filepath.Base(path), fi.Mode().Perm(), want)
				}
			}
			cert := readPEMCert(t, certPath)
			if role, node, ok := tlsutil.RoleOf(cert); !ok || role != tt.role || node != tt.node {
				t.Errorf("RoleOf = %q, %q, %v; want %q, %q", role, node, ok, tt.role, tt.node)
			}
			for _, name := range tt.verifyFor {
				if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
					t.Errorf("does not verify for %s: %v", name, err)
				}
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("does not verify for client auth: %v", err)
			}
		})
	}

	// ca create never overwrites: the error names the file, which is unchanged.
	before, _ := os.ReadFile(caPath)
	out, err = runTLS(t, "ca", "create", "--dir", dir)
	if err == nil || !strings.Contains(err.Error(), caPath) || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second ca create: %v, want an error naming %s", err, caPath)
	}
	if after, _ := os.ReadFile(caPath); !bytes.Equal(before, after) {
		t.Error("baton-ca.pem rewritten")
	}
	if strings.Contains(out, "saved") {
		t.Errorf("second ca create printed:\n%s", out)
	}
}

func TestTLSCertCreateCAElsewhere(t *testing.T) {
	caDir, outDir := t.TempDir(), t.TempDir()
	if out, err := runTLS(t, "ca", "create", "--dir", caDir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := runTLS(t, "cert", "create", "--client", "--dir", outDir,
		"--ca", filepath.Join(caDir, "baton-ca.pem"), "--key", filepath.Join(caDir, "baton-ca-key.pem"))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(outDir, "baton-cli-0.pem")); err != nil {
		t.Error(err)
	}
}

func TestTLSErrors(t *testing.T) {
	dir := t.TempDir()
	empty := t.TempDir()
	if out, err := runTLS(t, "ca", "create", "--dir", dir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no role", args: []string{"cert", "create", "--dir", dir}, want: "exactly one of --server, --client, --agent or --lb"},
		{name: "two roles", args: []string{"cert", "create", "--dir", dir, "--server", "--agent"}, want: "--server and --agent given together"},
		{name: "no CA", args: []string{"cert", "create", "--dir", empty, "--server"}, want: "baton tls ca create"},
		{name: "no CA names the flag", args: []string{"cert", "create", "--dir", empty, "--server"}, want: "--ca " + filepath.Join(empty, "baton-ca.pem")},
		{name: "no CA key", args: []string{"cert", "create", "--dir", empty, "--server", "--ca", filepath.Join(dir, "baton-ca.pem")}, want: "--key " + filepath.Join(empty, "baton-ca-key.pem")},
		{name: "bad IP", args: []string{"cert", "create", "--dir", dir, "--agent", "--additional-ipaddress", "10.0.0.300"}, want: `--additional-ipaddress "10.0.0.300"`},
		{name: "bad DNS name", args: []string{"cert", "create", "--dir", dir, "--agent", "--additional-dnsname", "a b"}, want: `--additional-dnsname "a b"`},
		{name: "bad node", args: []string{"cert", "create", "--dir", dir, "--agent", "--node", "a/b"}, want: `--node "a/b"`},
		{name: "bad days", args: []string{"cert", "create", "--dir", dir, "--agent", "--days", "0"}, want: "--days 0"},
		{name: "bad CA days", args: []string{"ca", "create", "--dir", empty, "--days", "-1"}, want: "--days -1"},
		{name: "argument", args: []string{"cert", "create", "--dir", dir, "--agent", "extra"}, want: "takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runTLS(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	// Nothing was written by the refused commands.
	for _, d := range []string{dir, empty} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if e.Name() != "baton-ca.pem" && e.Name() != "baton-ca-key.pem" {
				t.Errorf("%s left in %s", e.Name(), d)
			}
		}
	}
}
