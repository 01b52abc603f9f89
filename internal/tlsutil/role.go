package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// The roles a certificate can carry. RoleCoordinator is what
// `baton tls cert create --server` makes; RoleCLI is --client.
const (
	RoleCoordinator = "coordinator"
	RoleCLI         = "cli"
	RoleAgent       = "agent"
	RoleLB          = "lb"
)

// CoordinatorServerName is the DNS name only a coordinator's certificate
// holds: coordinators, agents, LBs and the CLI dial coordinators with it as
// the TLS server name, whatever address they dial.
const CoordinatorServerName = "server.baton"

// AgentServerName is the DNS name every agent's certificate holds; a
// coordinator dials agents with it and checks the node in the certificate.
const AgentServerName = "agent.baton"

// Roles lists every role, in the order the CLI documents them.
var Roles = []string{RoleCoordinator, RoleCLI, RoleAgent, RoleLB}

// uriScheme and uriHost make the role URI: spiffe://baton/<role>/<node>.
const (
	uriScheme = "spiffe"
	uriHost   = "baton"
)

// MaxNodeLen is the longest node name a certificate may carry (the longest
// LB id).
const MaxNodeLen = 128

// nodeRE is what a node name may hold: an agent id, an LB id (a host name
// and a pid, say "lb-1" or "web-3:4711") or a coordinator's node id.
var nodeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)

// ValidNode reports whether node may name a certificate's holder: 1 to
// MaxNodeLen letters, digits, '.', '_', ':' and '-', starting with a letter
// or digit (every agent id, LB id and coordinator node id baton makes), or
// "" for none.
func ValidNode(node string) bool {
	return node == "" || (len(node) <= MaxNodeLen && nodeRE.MatchString(node))
}

// RoleURI returns the URI SAN that names a role and node:
// "spiffe://baton/agent/gpu-node-1", or "spiffe://baton/cli/" when the
// certificate names no node. This exact string is what other tools that
// match certificates by SAN (NATS's verify_and_map, say) should be given.
func RoleURI(role, node string) string {
	return uriScheme + "://" + uriHost + "/" + role + "/" + node
}

// RoleOf returns the role and node a certificate made by CreateCert
// carries. The URI SAN spiffe://baton/<role>/<node> is authoritative: it is
// the only thing RoleOf reads. The Subject's OrganizationalUnit holds the
// role too, but only for people reading the certificate (openssl x509
// -text); it is never trusted. ok is false when the certificate has no
// baton role URI, more than one, or one naming an unknown role or an
// invalid node.
//
// RoleOf does not verify the certificate: give it only a certificate that
// a chain to the cluster's CA was verified for (see PeerRole).
func RoleOf(cert *x509.Certificate) (role, node string, ok bool) {
	if cert == nil {
		return "", "", false
	}
	found := 0
	for _, u := range cert.URIs {
		if u == nil || u.Scheme != uriScheme || u.Host != uriHost {
			continue
		}
		found++
		role, node, ok = parseRoleURI(u)
	}
	if found != 1 || !ok {
		return "", "", false
	}
	return role, node, true
}

// parseRoleURI reads /<role>/<node> (the node may be empty, and a URI
// without the trailing slash names no node).
func parseRoleURI(u *url.URL) (role, node string, ok bool) {
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", "", false
	}
	path, found := strings.CutPrefix(u.Path, "/")
	if !found {
		return "", "", false
	}
	role, node, _ = strings.Cut(path, "/")
	if !slices.Contains(Roles, role) || !ValidNode(node) {
		return "", "", false
	}
	return role, node, true
}

// PeerRole returns the role and node of the peer of a TLS connection,
// from the leaf of its verified chain. ok is false when the peer gave no
// certificate, when it was not verified (a server with
// VerifyClientCertIfGiven whose client sent none, a client config that
// skipped verification), or when the certificate carries no valid role.
// Call it after the handshake (tls.Conn.ConnectionState, or
// http.Request.TLS).
func PeerRole(state *tls.ConnectionState) (role, node string, ok bool) {
	if state == nil || len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return "", "", false
	}
	return RoleOf(state.VerifiedChains[0][0])
}

// CheckIdentity reads the certificate in f.Cert and checks that it
// carries role and node, so that a daemon refuses to start with another
// node's certificate (the coordinators would give it that node's
// permissions, not its own).
func (f Files) CheckIdentity(role, node string) error {
	if f.Cert == "" {
		return nil
	}
	kp, err := loadKeyPair(f.Cert, f.Key)
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		return fmt.Errorf("certificate %s: %w", f.Cert, err)
	}
	gotRole, gotNode, ok := RoleOf(leaf)
	switch {
	case !ok:
		return fmt.Errorf("certificate %s carries no baton role; make one with `baton tls cert create --%s --node %s`", f.Cert, roleFlag(role), node)
	case gotRole != role || gotNode != node:
		return fmt.Errorf("certificate %s is for %s %q, not %s %q; make one with `baton tls cert create --%s --node %s`", f.Cert, gotRole, gotNode, role, node, roleFlag(role), node)
	}
	return nil
}

// roleFlag is the `baton tls cert create` flag that makes role's
// certificates.
func roleFlag(role string) string {
	switch role {
	case RoleCoordinator:
		return "server"
	case RoleCLI:
		return "client"
	}
	return role
}
