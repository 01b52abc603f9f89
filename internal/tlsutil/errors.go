package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
)

// IsHandshakeError reports whether err is a failed TLS handshake: the
// server's certificate did not verify (unknown authority, wrong name,
// expired), the peer does not speak TLS (a plain HTTP server answered),
// or the peer refused this side's certificate with an alert. No request
// reached the peer's handler then, so a client may safely try another
// address.
func IsHandshakeError(err error) bool {
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	var alert tls.AlertError // QUIC's form of an alert
	var remote *net.OpError  // TCP's: Op "remote error", Err an alert
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &record) || errors.As(err, &alert) ||
		(errors.As(err, &remote) && remote.Op == "remote error") ||
		errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
}
