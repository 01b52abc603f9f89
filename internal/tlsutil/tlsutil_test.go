package tlsutil

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testCA makes a CA in a new temporary directory and returns its files.
func testCA(t *testing.T) (dir, certPath, keyPath string) {
	t.Helper()
	dir = t.TempDir()
	certPath, keyPath, err := CreateCA(dir, 30, "")
	if err != nil {
		t.Fatal(err)
	}
	return dir, certPath, keyPath
}

// testCert makes a certificate with CreateCert and returns its files.
func testCert(t *testing.T, dir, caCert, caKey, role, node string) Files {
	t.Helper()
	certPath, keyPath, err := CreateCert(dir, caCert, caKey, role, node, 30, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return Files{CA: caCert, Cert: certPath, Key: keyPath}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no CERTIFICATE block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func wantMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v, want %v", filepath.Base(path), got, want)
	}
}

func wantP256Key(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := parseKey(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	k, ok := signer.(*ecdsa.PrivateKey)
	if !ok || k.Curve != elliptic.P256() {
		t.Errorf("%s: key is %T, want ECDSA P-256", path, signer)
	}
}

func TestCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "tls")
	before := time.Now()
	certPath, keyPath, err := CreateCA(dir, 10, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	if certPath != filepath.Join(dir, "baton-ca.pem") || keyPath != filepath.Join(dir, "baton-ca-key.pem") {
		t.Fatalf("files %s, %s", certPath, keyPath)
	}
	wantMode(t, certPath, 0o644)
	wantMode(t, keyPath, 0o600)
	wantP256Key(t, keyPath)
	ca := readCert(t, certPath)
	if !ca.IsCA || !ca.BasicConstraintsValid || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("not a CA: IsCA %v, key usage %v", ca.IsCA, ca.KeyUsage)
	}
	if ca.Subject.CommonName != "test CA" {
		t.Errorf("common name %q", ca.Subject.CommonName)
	}
	if d := before.Sub(ca.NotBefore); d < 50*time.Second || d > 70*time.Second {
		t.Errorf("NotBefore %v is %v before now, want a minute", ca.NotBefore, d)
	}
	if d := ca.NotAfter.Sub(before); d < 10*24*time.Hour-time.Minute || d > 10*24*time.Hour+time.Minute {
		t.Errorf("NotAfter is %v after now, want 10 days", d)
	}
	if ca.SerialNumber.BitLen() < 64 || ca.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v has %d bits", ca.SerialNumber, ca.SerialNumber.BitLen())
	}

	// Never overwritten: the error names the file, and nothing changes.
	old, _ := os.ReadFile(certPath)
	_, _, err = CreateCA(dir, 10, "")
	if !errors.Is(err, ErrFileExists) || !strings.Contains(err.Error(), certPath) {
		t.Errorf("second CreateCA: %v, want ErrFileExists naming %s", err, certPath)
	}
	if now, _ := os.ReadFile(certPath); !bytes.Equal(old, now) {
		t.Error("CA certificate rewritten")
	}
	// Only the key left: still refused, and no certificate written.
	os.Remove(certPath)
	_, _, err = CreateCA(dir, 10, "")
	if !errors.Is(err, ErrFileExists) || !strings.Contains(err.Error(), keyPath) {
		t.Errorf("CreateCA beside a key: %v, want ErrFileExists naming %s", err, keyPath)
	}
	if _, err := os.Stat(certPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("certificate written beside an existing key: %v", err)
	}

	if DefaultCommonName != "baton CA" {
		t.Errorf("DefaultCommonName %q", DefaultCommonName)
	}
	if _, _, err := CreateCA(t.TempDir(), 0, ""); err == nil {
		t.Error("CreateCA with 0 days: no error")
	}
}

func TestCreateCertRoles(t *testing.T) {
	dir, caCert, caKey := testCA(t)
	ca := readCert(t, caCert)
	server := x509.ExtKeyUsageServerAuth
	client := x509.ExtKeyUsageClientAuth
	tests := []struct {
		name, role, node string
		file             string
		cn               string
		dns              []string
		ips              []string
		usages           []x509.ExtKeyUsage
	}{
		{name: "server", role: RoleCoordinator, file: "baton-server-0", cn: "server.baton",
			dns: []string{"localhost", "server.baton"}, ips: []string{"127.0.0.1"}, usages: []x509.ExtKeyUsage{server, client}},
		{name: "server with node", role: RoleCoordinator, node: "c1", file: "baton-server-1", cn: "c1.server.baton",
			dns: []string{"localhost", "server.baton", "c1", "c1.server.baton"}, ips: []string{"127.0.0.1"}, usages: []x509.ExtKeyUsage{server, client}},
		{name: "cli", role: RoleCLI, file: "baton-cli-0", cn: "cli.baton",
			dns: []string{"cli.baton"}, usages: []x509.ExtKeyUsage{client}},
		{name: "agent", role: RoleAgent, file: "baton-agent-0", cn: "agent.baton",
			dns: []string{"localhost", "agent.baton"}, ips: []string{"127.0.0.1"}, usages: []x509.ExtKeyUsage{server, client}},
		{name: "agent with node", role: RoleAgent, node: "gpu-node-1", file: "baton-agent-1", cn: "gpu-node-1.agent.baton",
			dns: []string{"localhost", "agent.baton", "gpu-node-1", "gpu-node-1.agent.baton"}, ips: []string{"127.0.0.1"}, usages: []x509.ExtKeyUsage{server, client}},
		{name: "lb", role: RoleLB, file: "baton-lb-0", cn: "lb.baton",
			dns: []string{"localhost", "lb.baton"}, ips: []string{"127.0.0.1"}, usages: []x509.ExtKeyUsage{server, client}},
		// An LB id with a pid is no host name: in the URI and CN only.
		{name: "lb with host:pid node", role: RoleLB, node: "web-3:4711", file: "baton-lb-1", cn: "web-3:4711.lb.baton",
			dns: []string{"localhost", "lb.baton"}, ips: []string{"127.0.0.1"}, usages: []x509.ExtKeyUsage{server, client}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPath, keyPath, err := CreateCert(dir, caCert, caKey, tt.role, tt.node, 30, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if certPath != filepath.Join(dir, tt.file+".pem") || keyPath != filepath.Join(dir, tt.file+"-key.pem") {
				t.Fatalf("files %s, %s; want %s.pem and %s-key.pem", certPath, keyPath, tt.file, tt.file)
			}
			wantMode(t, certPath, 0o644)
			wantMode(t, keyPath, 0o600)
			wantP256Key(t, keyPath)
			if _, err := tls.LoadX509KeyPair(certPath, keyPath); err != nil {
				t.Fatalf("key pair: %v", err)
			}
			cert := readCert(t, certPath)
			if err := cert.CheckSignatureFrom(ca); err != nil {
				t.Errorf("not signed by the CA: %v", err)
			}
			if cert.IsCA {
				t.Error("leaf is a CA")
			}
			role, node, ok := RoleOf(cert)
			if !ok || role != tt.role || node != tt.node {
				t.Errorf("RoleOf = %q, %q, %v; want %q, %q", role, node, ok, tt.role, tt.node)
			}
			if want := []string{tt.role}; !slices.Equal(cert.Subject.OrganizationalUnit, want) {
				t.Errorf("OU %v, want %v", cert.Subject.OrganizationalUnit, want)
			}
			if len(cert.URIs) != 1 || cert.URIs[0].String() != RoleURI(tt.role, tt.node) {
				t.Errorf("URIs %v, want [%s]", cert.URIs, RoleURI(tt.role, tt.node))
			}
			if cert.Subject.CommonName != tt.cn {
				t.Errorf("CN %q, want %q", cert.Subject.CommonName, tt.cn)
			}
			if !slices.Equal(cert.DNSNames, tt.dns) {
				t.Errorf("DNS names %v, want %v", cert.DNSNames, tt.dns)
			}
			var ips []string
			for _, ip := range cert.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.ips) {
				t.Errorf("IPs %v, want %v", ips, tt.ips)
			}
			if !slices.Equal(cert.ExtKeyUsage, tt.usages) {
				t.Errorf("extended key usages %v, want %v", cert.ExtKeyUsage, tt.usages)
			}
			if cert.SerialNumber.BitLen() < 64 || cert.SerialNumber.BitLen() > 128 {
				t.Errorf("serial has %d bits", cert.SerialNumber.BitLen())
			}
			if d := time.Since(cert.NotBefore); d < 50*time.Second || d > 2*time.Minute {
				t.Errorf("NotBefore is %v ago, want a minute", d)
			}
		})
	}
}

func TestServerCertVerifiesNames(t *testing.T) {
	dir, caCert, caKey := testCA(t)
	certPath, _, err := CreateCert(dir, caCert, caKey, RoleCoordinator, "c2", 30,
		[]string{"coord.example.com"}, []net.IP{net.ParseIP("10.1.2.3"), net.ParseIP("fd00::1")})
	if err != nil {
		t.Fatal(err)
	}
	cert := readCert(t, certPath)
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, caCert))
	verify := func(name string, usage x509.ExtKeyUsage) error {
		_, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}
	for _, name := range []string{"localhost", "server.baton", "127.0.0.1", "c2", "c2.server.baton", "coord.example.com", "10.1.2.3", "fd00::1"} {
		if err := verify(name, x509.ExtKeyUsageServerAuth); err != nil {
			t.Errorf("server auth for %s: %v", name, err)
		}
	}
	if err := verify("", x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("client auth: %v", err)
	}
	for _, name := range []string{"agent.baton", "lb.baton", "10.1.2.4", "example.com"} {
		if err := verify(name, x509.ExtKeyUsageServerAuth); err == nil {
			t.Errorf("server cert verifies for %s", name)
		}
	}

	// The CLI's certificate cannot serve.
	cli := testCert(t, dir, caCert, caKey, RoleCLI, "")
	if _, err := readCert(t, cli.Cert).Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("CLI certificate verifies for server auth")
	}
}

func TestCreateCertNumbering(t *testing.T) {
	dir, caCert, caKey := testCA(t)
	out := filepath.Join(dir, "certs")
	for _, want := range []string{"baton-agent-0.pem", "baton-agent-1.pem"} {
		certPath, _, err := CreateCert(out, caCert, caKey, RoleAgent, "", 1, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(certPath) != want {
			t.Errorf("got %s, want %s", filepath.Base(certPath), want)
		}
	}
	// A stray key or certificate takes its number: it is never overwritten.
	strayKey := filepath.Join(out, "baton-agent-2-key.pem")
	strayCert := filepath.Join(out, "baton-agent-3.pem")
	for _, p := range []string{strayKey, strayCert} {
		if err := os.WriteFile(p, []byte("mine"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	certPath, keyPath, err := CreateCert(out, caCert, caKey, RoleAgent, "", 1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(certPath) != "baton-agent-4.pem" || filepath.Base(keyPath) != "baton-agent-4-key.pem" {
		t.Errorf("got %s, %s; want baton-agent-4", certPath, keyPath)
	}
	for _, p := range []string{strayKey, strayCert} {
		if data, _ := os.ReadFile(p); string(data) != "mine" {
			t.Errorf("%s overwritten", p)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "baton-agent-2.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("certificate written beside a stray key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "baton-agent-3-key.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("key left beside a stray certificate: %v", err)
	}
}

func TestCreateCertClampedToCA(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey, err := CreateCA(dir, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	f := testCert(t, dir, caCert, caKey, RoleLB, "lb-1")
	if got, want := readCert(t, f.Cert).NotAfter, readCert(t, caCert).NotAfter; !got.Equal(want) {
		t.Errorf("NotAfter %v, want the CA's %v", got, want)
	}
}

func TestCreateCertErrors(t *testing.T) {
	dir, caCert, caKey := testCA(t)
	_, otherCert, otherKey := testCA(t)
	leaf := testCert(t, dir, caCert, caKey, RoleCoordinator, "")
	tests := []struct {
		name          string
		caCert, caKey string
		role, node    string
		days          int
		dns           []string
		ips           []net.IP
		want          string
	}{
		{name: "unknown role", role: "server", want: `role "server": use one of coordinator, cli, agent, lb`},
		{name: "bad node", role: RoleAgent, node: "a b", want: `node name "a b"`},
		{name: "node too long", role: RoleAgent, node: strings.Repeat("a", MaxNodeLen+1), want: "node name"},
		{name: "zero days", role: RoleAgent, days: -1, want: "validity of -1 days"},
		{name: "bad DNS name", role: RoleAgent, dns: []string{"a_b"}, want: `DNS name "a_b"`},
		{name: "missing CA", role: RoleAgent, caCert: filepath.Join(dir, "nope.pem"), want: "nope.pem"},
		{name: "missing CA key", role: RoleAgent, caKey: filepath.Join(dir, "nope-key.pem"), want: "nope-key.pem"},
		{name: "key of another CA", role: RoleAgent, caKey: otherKey, want: "is not the key of CA certificate"},
		{name: "not a CA", role: RoleAgent, caCert: leaf.Cert, caKey: leaf.Key, want: "is not a CA certificate"},
		{name: "key as CA", role: RoleAgent, caCert: caKey, want: "no PEM CERTIFICATE block"},
		{name: "other CA's files swapped", role: RoleAgent, caCert: otherCert, want: "is not the key of CA certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, k, days := caCert, caKey, 30
			if tt.caCert != "" {
				c = tt.caCert
			}
			if tt.caKey != "" {
				k = tt.caKey
			}
			if tt.days != 0 {
				days = tt.days
			}
			out := t.TempDir()
			_, _, err := CreateCert(out, c, k, tt.role, tt.node, days, tt.dns, tt.ips)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(out); len(entries) > 0 {
				t.Errorf("files left behind: %v", entries)
			}
		})
	}
}

// handshake runs one TLS handshake over loopback and returns each side's
// error and the server's view of the connection. The server writes a byte
// after its handshake, so that a client refused by the server (which, with
// TLS 1.3, learns of it only after its own handshake) sees the error.
func handshake(t *testing.T, server, client *tls.Config) (state tls.ConnectionState, serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	type result struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(conn, server)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		_, err = tc.Write([]byte{1})
		done <- result{state: tc.ConnectionState(), err: err}
	}()
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(conn, client)
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = io.ReadFull(tc, make([]byte, 1))
	}
	if clientErr != nil {
		conn.Close() // the server may be waiting on the client
	}
	r := <-done
	return r.state, r.err, clientErr
}

func TestHandshake(t *testing.T) {
	dir, caCert, caKey := testCA(t)
	serverFiles := testCert(t, dir, caCert, caKey, RoleCoordinator, "c1")
	agentFiles := testCert(t, dir, caCert, caKey, RoleAgent, "gpu-node-1")
	cliFiles := testCert(t, dir, caCert, caKey, RoleCLI, "")
	otherDir, otherCert, otherKey := testCA(t)
	foreign := testCert(t, otherDir, otherCert, otherKey, RoleCoordinator, "c1")

	tests := []struct {
		name       string
		server     Files
		require    bool
		client     Files
		serverName string
		wantOK     bool
		wantRole   string // of the client, seen by the server
		wantNode   string
		wantErr    string // when refused
	}{
		{name: "agent cert, required", server: serverFiles, require: true, client: agentFiles, serverName: "server.baton",
			wantOK: true, wantRole: RoleAgent, wantNode: "gpu-node-1"},
		{name: "cli cert, required", server: serverFiles, require: true, client: cliFiles, serverName: "localhost",
			wantOK: true, wantRole: RoleCLI},
		{name: "coordinator to coordinator", server: serverFiles, require: true, client: serverFiles, serverName: "server.baton",
			wantOK: true, wantRole: RoleCoordinator, wantNode: "c1"},
		{name: "by IP", server: serverFiles, require: true, client: agentFiles, serverName: "127.0.0.1",
			wantOK: true, wantRole: RoleAgent, wantNode: "gpu-node-1"},
		{name: "no client cert, required", server: serverFiles, require: true, client: Files{CA: caCert}, serverName: "server.baton",
			wantErr: "client didn't provide a certificate"},
		{name: "no client cert, optional", server: serverFiles, client: Files{CA: caCert}, serverName: "server.baton", wantOK: true},
		{name: "cert of another CA, required", server: serverFiles, require: true,
			client: Files{CA: caCert, Cert: foreign.Cert, Key: foreign.Key}, serverName: "server.baton",
			wantErr: "server: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{name: "cert of another CA, optional", server: serverFiles,
			client: Files{CA: caCert, Cert: foreign.Cert, Key: foreign.Key}, serverName: "server.baton",
			wantErr: "server: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{name: "server of another CA", server: foreign, require: true, client: agentFiles, serverName: "server.baton",
			wantErr: "client: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{name: "agent posing as coordinator", server: agentFiles, require: true, client: cliFiles, serverName: "server.baton",
			wantErr: "not server.baton"},
		{name: "cli cert cannot serve", server: cliFiles, client: Files{CA: caCert}, serverName: "cli.baton",
			wantErr: "incompatible key usage"},
		{name: "wrong server name", server: serverFiles, require: true, client: agentFiles, serverName: "agent.baton",
			wantErr: "not agent.baton"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, err := ServerConfig(tt.server, tt.require)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := ClientConfig(tt.client, tt.serverName)
			if err != nil {
				t.Fatal(err)
			}
			state, serr, cerr := handshake(t, sc, cc)
			if !tt.wantOK {
				if serr == nil && cerr == nil {
					t.Fatal("handshake succeeded, want it refused")
				}
				if got := fmt.Sprintf("server: %v; client: %v", serr, cerr); !strings.Contains(got, tt.wantErr) {
					t.Errorf("%s; want %q", got, tt.wantErr)
				}
				return
			}
			if serr != nil || cerr != nil {
				t.Fatalf("handshake: server %v, client %v", serr, cerr)
			}
			if state.Version != tls.VersionTLS13 {
				t.Errorf("version %x, want TLS 1.3", state.Version)
			}
			role, node, ok := PeerRole(&state)
			if ok != (tt.wantRole != "") || role != tt.wantRole || node != tt.wantNode {
				t.Errorf("PeerRole = %q, %q, %v; want %q, %q", role, node, ok, tt.wantRole, tt.wantNode)
			}
		})
	}
}

func TestConfigs(t *testing.T) {
	dir, caCert, caKey := testCA(t)
	f := testCert(t, dir, caCert, caKey, RoleCoordinator, "")
	if (Files{}).Enabled() || !(Files{CA: caCert}).Enabled() {
		t.Error("Enabled: want true exactly when CA is set")
	}
	sc, err := ServerConfig(f, true)
	if err != nil {
		t.Fatal(err)
	}
	if sc.MinVersion != tls.VersionTLS12 || sc.ClientAuth != tls.RequireAndVerifyClientCert || sc.ClientCAs == nil || len(sc.Certificates) != 1 {
		t.Errorf("ServerConfig(require): %+v", sc)
	}
	if sc, _ := ServerConfig(f, false); sc.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Errorf("ServerConfig(optional): ClientAuth %v", sc.ClientAuth)
	}
	cc, err := ClientConfig(Files{CA: caCert}, "server.baton")
	if err != nil {
		t.Fatal(err)
	}
	if cc.MinVersion != tls.VersionTLS12 || cc.RootCAs == nil || cc.ServerName != "server.baton" || len(cc.Certificates) != 0 || cc.InsecureSkipVerify {
		t.Errorf("ClientConfig: %+v", cc)
	}

	tests := []struct {
		name   string
		server bool
		files  Files
		want   string
	}{
		{name: "server without CA", server: true, files: Files{Cert: f.Cert, Key: f.Key}, want: "no CA certificate"},
		{name: "server without key", server: true, files: Files{CA: caCert, Cert: f.Cert}, want: "both needed"},
		{name: "client without CA", files: Files{Cert: f.Cert, Key: f.Key}, want: "baton tls ca create"},
		{name: "client cert without key", files: Files{CA: caCert, Cert: f.Cert}, want: "go together"},
		{name: "missing CA file", files: Files{CA: filepath.Join(dir, "gone.pem")}, want: "gone.pem"},
		{name: "CA file without PEM", files: Files{CA: caKey}, want: "no PEM certificate"},
		{name: "missing cert file", server: true, files: Files{CA: caCert, Cert: filepath.Join(dir, "gone.pem"), Key: f.Key}, want: "gone.pem"},
		{name: "key of another cert", server: true, files: Files{CA: caCert, Cert: f.Cert, Key: caKey}, want: f.Cert},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.server {
				_, err = ServerConfig(tt.files, true)
			} else {
				_, err = ClientConfig(tt.files, "")
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestRoleOf(t *testing.T) {
	uris := func(ss ...string) *x509.Certificate {
		c := &x509.Certificate{}
		for _, s := range ss {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			c.URIs = append(c.URIs, u)
		}
		return c
	}
	tests := []struct {
		name       string
		cert       *x509.Certificate
		role, node string
		ok         bool
	}{
		{name: "agent", cert: uris("spiffe://baton/agent/gpu-node-1"), role: RoleAgent, node: "gpu-node-1", ok: true},
		{name: "no node", cert: uris("spiffe://baton/cli/"), role: RoleCLI, ok: true},
		{name: "no node, no slash", cert: uris("spiffe://baton/lb"), role: RoleLB, ok: true},
		{name: "beside a foreign URI", cert: uris("https://example.com/x", "spiffe://other/agent/a", "spiffe://baton/coordinator/c1"), role: RoleCoordinator, node: "c1", ok: true},
		{name: "nil", cert: nil},
		{name: "no URI", cert: uris()},
		{name: "two role URIs", cert: uris("spiffe://baton/cli/", "spiffe://baton/coordinator/c1")},
		{name: "unknown role", cert: uris("spiffe://baton/server/c1")},
		{name: "another trust domain", cert: uris("spiffe://evil/coordinator/c1")},
		{name: "extra path segment", cert: uris("spiffe://baton/agent/a/b")},
		{name: "bad node", cert: uris("spiffe://baton/agent/-a")},
		{name: "query", cert: uris("spiffe://baton/agent/a?x=1")},
		{name: "user", cert: uris("spiffe://u@baton/agent/a")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			role, node, ok := RoleOf(tt.cert)
			if role != tt.role || node != tt.node || ok != tt.ok {
				t.Errorf("RoleOf = %q, %q, %v; want %q, %q, %v", role, node, ok, tt.role, tt.node, tt.ok)
			}
		})
	}
	// The OU is never trusted: only the URI decides.
	c := uris("spiffe://baton/lb/lb-1")
	c.Subject.OrganizationalUnit = []string{RoleCoordinator}
	if role, _, _ := RoleOf(c); role != RoleLB {
		t.Errorf("RoleOf read the OU: %q", role)
	}
	if _, _, ok := PeerRole(nil); ok {
		t.Error("PeerRole(nil) ok")
	}
	if _, _, ok := PeerRole(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{uris("spiffe://baton/lb/lb-1")}}); ok {
		t.Error("PeerRole trusted an unverified certificate")
	}
}
