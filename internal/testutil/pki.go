package testutil

import (
	"testing"

	"github.com/baton-dev/baton/internal/tlsutil"
)

// PKI is a CA made with tlsutil (as `baton tls ca create` makes it) in a
// temporary directory, for tests that need certificates.
type PKI struct {
	t testing.TB
	// Dir holds the CA's files and every certificate made.
	Dir string
	// CACert and CAKey are the CA's certificate and key files.
	CACert, CAKey string
}

// NewPKI makes a CA valid for 30 days.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	caCert, key, err := tlsutil.CreateCA(dir, 30, "")
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{t: t, Dir: dir, CACert: caCert, CAKey: key}
}

// Cert makes a certificate for role and node (as `baton tls cert create`
// does) and returns the files of its holder: the CA, the certificate and
// its key.
func (p *PKI) Cert(role, node string) tlsutil.Files {
	p.t.Helper()
	cert, key, err := tlsutil.CreateCert(p.Dir, p.CACert, p.CAKey, role, node, 30, nil, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	return tlsutil.Files{CA: p.CACert, Cert: cert, Key: key}
}
