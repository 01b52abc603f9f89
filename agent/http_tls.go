package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// With Config.TLS the agent's HTTP server speaks HTTPS only, with the
// agent's own certificate. A client certificate is verified when one is
// sent (tlsutil.ServerConfig without requiring one), and what it may read
// depends on its role:
//
//	GET /v1/replicas/{service}/{id}/logs, /v1/status  coordinators only
//	GET /healthz, /metrics                            anyone (monitoring)
//
// People read logs through the coordinator (`baton serve logs`), whose
// ACLs decide who may; the agent trusts the coordinator's certificate.

// checkTLS refuses TLS settings the agent cannot work with: a certificate
// without a CA or a CA without a certificate, files that cannot be read,
// a certificate the CA did not sign, or one that is not this agent's (its
// role must be agent and its node id). It reads the files once, so that
// New fails at once, naming the file, rather than Run or a handshake later.
func checkTLS(f tlsutil.Files, id string) error {
	create := "`baton tls cert create --agent --node " + id + "`"
	if !f.Enabled() {
		if f.Cert != "" || f.Key != "" {
			return errors.New("agent: a TLS certificate without a CA: give --tls-ca, --tls-cert and --tls-key together")
		}
		return nil
	}
	if f.Cert == "" || f.Key == "" {
		return fmt.Errorf("agent: --tls-ca needs this agent's certificate and key too (--tls-cert, --tls-key; make them with %s)", create)
	}
	sc, err := tlsutil.ServerConfig(f, false)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	leaf, err := leafOf(sc.Certificates[0])
	if err != nil {
		return fmt.Errorf("agent: TLS certificate %s: %w", f.Cert, err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: sc.ClientCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("agent: TLS certificate %s does not verify against the CA %s (%v): make it with %s using that CA", f.Cert, f.CA, err, create)
	}
	role, node, ok := tlsutil.RoleOf(leaf)
	switch {
	case !ok:
		return fmt.Errorf("agent: TLS certificate %s carries no baton role: make the agent's with %s", f.Cert, create)
	case role != tlsutil.RoleAgent:
		return fmt.Errorf("agent: TLS certificate %s is a %s's, not an agent's: make the agent's with %s", f.Cert, role, create)
	case node != id:
		return fmt.Errorf("agent: TLS certificate %s is for agent %q, but this agent's id is %q: give it the certificate made for %q (%s), or run it with --id %s",
			f.Cert, node, id, id, create, node)
	}
	return nil
}

// leafOf returns the parsed leaf of a loaded certificate.
func leafOf(c tls.Certificate) (*x509.Certificate, error) {
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	if len(c.Certificate) == 0 {
		return nil, errors.New("no certificate in it")
	}
	return x509.ParseCertificate(c.Certificate[0])
}

// coordinatorsOnly serves h, when the agent has TLS, only to a client
// that presented a certificate the CA signed (the TLS server verified it)
// whose role is coordinator: 401 without one, 403 with another role's.
// Without TLS it is h: the agent's HTTP server is then open to whoever
// reaches it, as before TLS (keep it on a private address).
func (a *Agent) coordinatorsOnly(h http.HandlerFunc) http.HandlerFunc {
	if !a.cfg.TLS.Enabled() {
		return h
	}
	only := fmt.Sprintf("agent %s serves this to coordinators only; read a replica's logs through the coordinator with `baton serve logs <service> <replica id>`", a.cfg.ID)
	return func(w http.ResponseWriter, r *http.Request) {
		what := r.Method + " " + r.URL.Path
		role, node, ok := tlsutil.PeerRole(r.TLS)
		switch {
		case !ok && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0):
			writeError(w, http.StatusUnauthorized, protocol.CodeUnauthenticated,
				what+": no client certificate: "+only)
		case !ok:
			writeError(w, http.StatusForbidden, protocol.CodePermissionDenied,
				what+": the client certificate carries no baton role: "+only)
		case role != tlsutil.RoleCoordinator:
			holder := "a certificate of role " + role
			if node != "" {
				holder += " (node " + node + ")"
			}
			writeError(w, http.StatusForbidden, protocol.CodePermissionDenied,
				what+": "+holder+" may not read this: "+only)
		default:
			h(w, r)
		}
	}
}
