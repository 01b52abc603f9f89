// Package tlsutil makes the cluster's certificate authority and
// certificates (what `baton tls` writes) and the tls.Configs every
// daemon and the CLI use with them.
//
// One CA signs every certificate. A certificate carries the role of its
// holder (coordinator, cli, agent or lb) and optionally a node name (an
// agent id, an LB id, a coordinator's node id) in a URI SAN,
// spiffe://baton/<role>/<node>; RoleOf and PeerRole read it, and it is the
// only place a role is trusted from. Host names are checked the usual way
// (tls verifies the server's name), but a host name is not an identity:
// coordinators, agents and LBs all carry 127.0.0.1, so a peer's role must
// be read with PeerRole before it is allowed anything.
//
// Which certificate may do what:
//
//	role         flag       key usages               DNS SANs
//	coordinator  --server   server auth, client auth  localhost, server.baton, <node>
//	cli          --client   client auth               cli.baton
//	agent        --agent    server auth, client auth  localhost, agent.baton, <node>
//	lb           --lb       server auth, client auth  localhost, lb.baton, <node>
//
// Every server-capable certificate also has IP SAN 127.0.0.1. Coordinators
// talk mutual TLS to each other (Raft, NATS routes, forwarded requests) and
// should dial each other with server name "server.baton", which only a
// coordinator's certificate holds, whatever address they dial.
//
// This package imports no daemon package: coordinator, agent, lbnode and
// the CLI all use it.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Files names the PEM files of one party: the CA certificate it trusts,
// and its own certificate and key. An empty path is not set.
type Files struct {
	CA, Cert, Key string
}

// Enabled reports whether TLS is configured: a CA is set.
func (f Files) Enabled() bool { return f.CA != "" }

// ServerConfig returns the config of a TLS server: its certificate from
// f.Cert and f.Key (both required), client certificates verified against
// f.CA (required). With requireClientCert a client without a certificate
// signed by the CA is refused (RequireAndVerifyClientCert: Raft, NATS,
// coordinator-to-coordinator); without it a client may send none, but one
// it sends must verify (VerifyClientCertIfGiven: the HTTPS API, where a
// token may stand in). TLS 1.2 is the minimum; TLS 1.3 is used whenever
// the peer has it. Read the client's role with PeerRole.
func ServerConfig(f Files, requireClientCert bool) (*tls.Config, error) {
	if err := f.need("server", true); err != nil {
		return nil, err
	}
	pool, err := loadPool(f.CA)
	if err != nil {
		return nil, err
	}
	cert, err := loadKeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	auth := tls.VerifyClientCertIfGiven
	if requireClientCert {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   auth,
	}, nil
}

// ClientConfig returns the config of a TLS client: servers verified
// against f.CA (required) under serverName (when empty, crypto/tls uses
// the host dialed, or refuses to dial without one), and the client's own
// certificate from f.Cert and f.Key when both are set (one without the
// other is an error). TLS 1.2 is the minimum.
func ClientConfig(f Files, serverName string) (*tls.Config, error) {
	if err := f.need("client", false); err != nil {
		return nil, err
	}
	pool, err := loadPool(f.CA)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		ServerName: serverName,
	}
	if f.Cert != "" {
		cert, err := loadKeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// need checks that the paths a config needs are set: the CA always; a
// certificate and key for a server, and both or neither for a client.
func (f Files) need(side string, certRequired bool) error {
	switch {
	case f.CA == "":
		return fmt.Errorf("tls %s: no CA certificate given (create one with `baton tls ca create`)", side)
	case certRequired && (f.Cert == "" || f.Key == ""):
		return fmt.Errorf("tls %s: a certificate and its key are both needed (got cert %q, key %q; create them with `baton tls cert create`)", side, f.Cert, f.Key)
	case (f.Cert == "") != (f.Key == ""):
		return fmt.Errorf("tls %s: a certificate and its key go together (got cert %q, key %q)", side, f.Cert, f.Key)
	}
	return nil
}

// loadPool reads a PEM file of one or more CA certificates.
func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA certificate %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// loadKeyPair reads a certificate and its key, saying which file is wrong.
func loadKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err != nil {
			return tls.Certificate{}, fmt.Errorf("reading TLS certificate and key: %w", err)
		}
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS certificate %s with key %s: %w", certPath, keyPath, err)
	}
	return cert, nil
}

// MutualConfig returns a config for a party that both accepts and dials
// connections of its own kind (NATS routes between coordinators): its
// certificate from f, peers verified against f.CA in both directions under
// serverName, and the peer's certificate required to carry peerRole.
func MutualConfig(f Files, serverName, peerRole string) (*tls.Config, error) {
	cfg, err := ServerConfig(f, true)
	if err != nil {
		return nil, err
	}
	cfg.RootCAs = cfg.ClientCAs
	cfg.ServerName = serverName
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		role, node, ok := PeerRole(&cs)
		if !ok || role != peerRole {
			return fmt.Errorf("peer certificate is not a %s's (role %q, node %q)", peerRole, role, node)
		}
		return nil
	}
	return cfg, nil
}
