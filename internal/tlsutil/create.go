package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// ErrFileExists is matched (with errors.Is) by the error CreateCA and
// CreateCert return when a file they would write is already there: they
// never overwrite one.
var ErrFileExists = errors.New("file already exists")

// File names and modes. Certificates are public; keys are for their owner
// only.
const (
	CAFile    = "baton-ca.pem"
	CAKeyFile = "baton-ca-key.pem"

	certMode fs.FileMode = 0o644
	keyMode  fs.FileMode = 0o600
)

// DefaultCommonName is the CA's common name when CreateCA is given none.
const DefaultCommonName = "baton CA"

// backdate is how far before now a certificate becomes valid, for clocks a
// little behind the one that made it.
const backdate = time.Minute

// maxSerial bounds the random serial numbers: 128 bits.
var maxSerial = new(big.Int).Lsh(big.NewInt(1), 128)

// CreateCA makes a new certificate authority in dir (created if missing):
// an ECDSA P-256 key and a self-signed certificate valid for days days,
// written to dir/baton-ca.pem (0644) and dir/baton-ca-key.pem (0600). An
// empty commonName is DefaultCommonName. If either file exists, nothing is
// written and the error wraps ErrFileExists and names the file.
func CreateCA(dir string, days int, commonName string) (certPath, keyPath string, err error) {
	if days < 1 {
		return "", "", fmt.Errorf("CA validity of %d days: use 1 or more", days)
	}
	if commonName == "" {
		commonName = DefaultCommonName
	}
	certPath, keyPath = filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if err := refuseExisting(p); err != nil {
			return "", "", err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generating the CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"baton"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.AddDate(0, 0, days),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA signs leaf certificates only, never another CA.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("making the CA certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// CreateCert makes a certificate for role (RoleCoordinator, RoleCLI,
// RoleAgent or RoleLB) signed by the CA in the files caCert and caKey, and
// writes it with its new ECDSA P-256 key into dir (created if missing) as
// baton-<kind>-<n>.pem and baton-<kind>-<n>-key.pem, where kind is
// "server" for a coordinator and the role otherwise, and n the first
// number (0, 1, 2...) for which neither file exists; it never overwrites
// a file.
//
// node is the holder's name (an agent id, an LB id, a coordinator's node
// id), or "" for none; it goes into the role URI, the common name
// (<node>.<kind>.baton) and, when it is a valid host name, the DNS SANs.
// dnsNames and ips are added to the SANs each role gets (see the package
// comment). The certificate is valid for days days, cut to when the CA
// expires.
func CreateCert(dir string, caCert, caKey string, role string, node string, days int, dnsNames []string, ips []net.IP) (certPath, keyPath string, err error) {
	if !slices.Contains(Roles, role) {
		return "", "", fmt.Errorf("role %q: use one of %s", role, strings.Join(Roles, ", "))
	}
	if !ValidNode(node) {
		return "", "", fmt.Errorf("node name %q: use 1-%d letters, digits, '.', '_', ':' and '-', starting with a letter or digit", node, MaxNodeLen)
	}
	if days < 1 {
		return "", "", fmt.Errorf("certificate validity of %d days: use 1 or more", days)
	}
	for _, name := range dnsNames {
		if !ValidDNSName(name) {
			return "", "", fmt.Errorf("DNS name %q is not a valid host name", name)
		}
	}
	for _, ip := range ips {
		if ip == nil || (ip.To4() == nil && len(ip) != net.IPv6len) {
			return "", "", fmt.Errorf("IP address %v is not valid", ip)
		}
	}
	ca, signer, err := loadCA(caCert, caKey)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	if !now.Before(ca.NotAfter) {
		return "", "", fmt.Errorf("CA certificate %s expired on %s; create a new CA with `baton tls ca create`", caCert, ca.NotAfter.UTC().Format(time.DateOnly))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generating the key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", err
	}
	tmpl := leafTemplate(role, node, dnsNames, ips)
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.AddDate(0, 0, days)
	if tmpl.NotAfter.After(ca.NotAfter) {
		// A chain is valid only while its CA is: a longer life is a lie.
		tmpl.NotAfter = ca.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, signer)
	if err != nil {
		return "", "", fmt.Errorf("signing the certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	prefix := "baton-" + fileKind(role)
	for n := 0; n < 100000; n++ {
		certPath = filepath.Join(dir, fmt.Sprintf("%s-%d.pem", prefix, n))
		keyPath = filepath.Join(dir, fmt.Sprintf("%s-%d-key.pem", prefix, n))
		err := writePair(certPath, keyPath, der, key)
		if errors.Is(err, ErrFileExists) {
			continue // taken, or taken just now by another run: the next
		}
		if err != nil {
			return "", "", err
		}
		return certPath, keyPath, nil
	}
	return "", "", fmt.Errorf("no free file name for %s-<n>.pem in %s", prefix, dir)
}

// fileKind names a role in file names and host names: "server" for a
// coordinator, as `--server` and nomad's dc1-server-nomad-0.pem do.
func fileKind(role string) string {
	if role == RoleCoordinator {
		return "server"
	}
	return role
}

// leafTemplate returns the template of a role's certificate, less its
// serial and validity.
func leafTemplate(role, node string, extraDNS []string, extraIPs []net.IP) *x509.Certificate {
	kind := fileKind(role)
	base := kind + ".baton"
	cn := base
	if node != "" {
		cn = node + "." + base
	}
	uri, err := url.Parse(RoleURI(role, node))
	if err != nil {
		// ValidNode admits nothing url.Parse refuses.
		panic(fmt.Sprintf("tlsutil: role URI %q: %v", RoleURI(role, node), err))
	}
	var dns []string
	var ips []net.IP
	usages := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if role == RoleCLI {
		// The CLI only ever dials: it must not be able to pose as a server.
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		dns = []string{base}
	} else {
		dns = []string{"localhost", base}
		ips = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	if node != "" {
		dns = append(dns, node, cn)
	}
	dns = append(dns, extraDNS...)
	ips = append(ips, extraIPs...)
	return &x509.Certificate{
		Subject: pkix.Name{
			CommonName:         cn,
			Organization:       []string{"baton"},
			OrganizationalUnit: []string{role},
		},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usages,
		BasicConstraintsValid: true,
		DNSNames:              uniqueDNS(dns),
		IPAddresses:           uniqueIPs(ips),
		URIs:                  []*url.URL{uri},
	}
}

// uniqueDNS drops duplicates (case-insensitively) and names that are not
// valid host names (a node such as "web-3:4711").
func uniqueDNS(names []string) []string {
	var out []string
	for _, n := range names {
		if ValidDNSName(n) && !slices.ContainsFunc(out, func(o string) bool { return strings.EqualFold(o, n) }) {
			out = append(out, n)
		}
	}
	return out
}

func uniqueIPs(ips []net.IP) []net.IP {
	var out []net.IP
	for _, ip := range ips {
		if !slices.ContainsFunc(out, ip.Equal) {
			out = append(out, ip)
		}
	}
	return out
}

// dnsLabelRE is one label of a host name.
var dnsLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// ValidDNSName reports whether name may be a DNS SAN: a host name, or a
// wildcard one (*.example.com).
func ValidDNSName(name string) bool {
	name = strings.TrimPrefix(name, "*.")
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if !dnsLabelRE.MatchString(label) {
			return false
		}
	}
	return true
}

// loadCA reads the CA's certificate and key and checks they belong
// together.
func loadCA(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA certificate: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("CA certificate %s: no PEM CERTIFICATE block in it", certPath)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate %s: %w", certPath, err)
	}
	if !ca.BasicConstraintsValid || !ca.IsCA {
		return nil, nil, fmt.Errorf("%s is not a CA certificate (make one with `baton tls ca create`)", certPath)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA key: %w", err)
	}
	signer, err := parseKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.PublicKey) {
		return nil, nil, fmt.Errorf("CA key %s is not the key of CA certificate %s", keyPath, certPath)
	}
	return ca, signer, nil
}

// parseKey reads a PEM private key: PKCS #8 (what baton writes), SEC 1
// (EC PRIVATE KEY) or PKCS #1 (RSA PRIVATE KEY).
func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block in it")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", key)
	}
	return signer, nil
}

// newSerial returns a random, non-zero 128-bit serial number.
func newSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, maxSerial)
		if err != nil {
			return nil, fmt.Errorf("generating a serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// refuseExisting returns an error wrapping ErrFileExists if path exists.
func refuseExisting(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s: %w; not overwriting it", path, ErrFileExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// writePair writes a certificate and its key, each only if its file does
// not exist yet (O_EXCL: two runs at once cannot both take a name). The
// key goes first; if the certificate cannot be written, the key is
// removed again.
func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding the key: %w", err)
	}
	if err := refuseExisting(certPath); err != nil {
		return err
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), keyMode); err != nil {
		return err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), certMode); err != nil {
		os.Remove(keyPath)
		return err
	}
	return nil
}

// writeNew creates path with exactly mode (whatever the umask) and writes
// data to it; it fails, wrapping ErrFileExists, if path exists.
func writeNew(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s: %w; not overwriting it", path, ErrFileExists)
	}
	if err != nil {
		return err
	}
	err = f.Chmod(mode)
	if _, werr := f.Write(data); err == nil {
		err = werr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
