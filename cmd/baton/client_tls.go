package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/baton-dev/baton/internal/tlsutil"
)

// coordinatorServerName is the name the CLI verifies a coordinator's
// certificate under, whatever address it dials: every coordinator's
// certificate (`baton tls cert create --server`) has it, and no other
// role's does, so an address given as an IP or a name missing from the
// certificate still works, and only a coordinator of the cluster's CA
// passes.
const coordinatorServerName = tlsutil.CoordinatorServerName

// tlsFlags are the CLI's TLS settings: the CA to trust and an optional
// client certificate, each from its flag, else its environment variable.
type tlsFlags struct {
	caCert, clientCert, clientKey string
}

// files resolves the flags against $BATON_CACERT, $BATON_CLIENT_CERT and
// $BATON_CLIENT_KEY.
func (f tlsFlags) files() tlsutil.Files {
	pick := func(flag, env string) string {
		if v := strings.TrimSpace(flag); v != "" {
			return v
		}
		return strings.TrimSpace(os.Getenv(env))
	}
	return tlsutil.Files{
		CA:   pick(f.caCert, "BATON_CACERT"),
		Cert: pick(f.clientCert, "BATON_CLIENT_CERT"),
		Key:  pick(f.clientKey, "BATON_CLIENT_KEY"),
	}
}

// config returns the TLS client config for files, or nil when no CA is
// set (https:// addresses are then checked against the system's CAs,
// which never signed a baton coordinator's certificate).
func (f tlsFlags) config(files tlsutil.Files) (*tls.Config, error) {
	if !files.Enabled() {
		if files.Cert != "" || files.Key != "" {
			return nil, errors.New("a client certificate needs the CA it trusts: set $BATON_CACERT (or --ca-cert) to the cluster's baton-ca.pem")
		}
		return nil, nil
	}
	tc, err := tlsutil.ClientConfig(files, coordinatorServerName)
	if err != nil {
		return nil, fmt.Errorf("%w (set by $BATON_CACERT, $BATON_CLIENT_CERT and $BATON_CLIENT_KEY, or --ca-cert, --client-cert and --client-key)", err)
	}
	return tc, nil
}

// tlsError: the TLS handshake with a coordinator failed, or a plain HTTP
// request reached an HTTPS one. Either way the request reached no
// handler, so nothing was done.
type tlsError struct {
	addr string
	err  error
}

func (e *tlsError) Error() string {
	return fmt.Sprintf("TLS with the baton coordinator at %s failed: %s", e.addr, e.advice())
}

func (e *tlsError) Unwrap() error { return e.err }

// advice says what went wrong and what to set.
func (e *tlsError) advice() string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var remote *net.OpError
	switch {
	case errors.Is(e.err, errPlainToHTTPS):
		return "it serves HTTPS and was sent plain HTTP: use https://host:port in $BATON_ADDR or --addr (or set $BATON_CACERT, which makes host:port mean https)"
	case errors.As(e.err, &unknown):
		return "the coordinator's certificate is not signed by a CA you trust: set $BATON_CACERT (or --ca-cert) to the cluster's baton-ca.pem"
	case errors.As(e.err, &host):
		return fmt.Sprintf("its certificate is not a baton coordinator's (%v): use the coordinator's certificate from `baton tls cert create --server`", host)
	case errors.As(e.err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Sprintf("a certificate has expired or is not valid yet (%v): make new ones with `baton tls cert create`", invalid)
	case errors.As(e.err, &invalid):
		return fmt.Sprintf("its certificate cannot serve a coordinator (%v): use one from `baton tls cert create --server`", invalid)
	case errors.As(e.err, &record), errors.Is(e.err, http.ErrSchemeMismatch):
		return "it does not speak TLS (started without --tls-ca, --tls-cert and --tls-key?): use http://host:port in $BATON_ADDR or --addr"
	case errors.As(e.err, &remote) && remote.Op == "remote error":
		return fmt.Sprintf("it refused the connection (%v): if it wants a client certificate, set $BATON_CLIENT_CERT and $BATON_CLIENT_KEY (or --client-cert and --client-key) to one signed by the cluster's CA", remote.Err)
	}
	return unwrapURLError(e.err).Error()
}

// short says why, in a few words.
func (e *tlsError) short() string {
	var unknown x509.UnknownAuthorityError
	var record tls.RecordHeaderError
	switch {
	case errors.Is(e.err, errPlainToHTTPS):
		return "serves HTTPS, sent plain HTTP"
	case errors.As(e.err, &unknown):
		return "certificate signed by an unknown CA (set $BATON_CACERT)"
	case errors.As(e.err, &record), errors.Is(e.err, http.ErrSchemeMismatch):
		return "does not speak TLS"
	}
	return "TLS: " + unwrapURLError(e.err).Error()
}

// errPlainToHTTPS is the failure of a plain HTTP request to an HTTPS
// server, which Go's server answers with 400 "Client sent an HTTP request
// to an HTTPS server".
var errPlainToHTTPS = errors.New("plain HTTP request to an HTTPS server")

// isPlainToHTTPS reports whether a 400 answer is Go's refusal of a plain
// HTTP request on an HTTPS port.
func isPlainToHTTPS(err error) bool {
	var rerr *requestError
	return errors.As(err, &rerr) && rerr.foreign && rerr.status == 400 &&
		strings.Contains(rerr.api.Message, "Client sent an HTTP request to an HTTPS server")
}
