package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/internal/tlsutil"
)

// newTLSCmd returns `baton tls`: `ca create` and `cert create`, which make
// the cluster's CA and its certificates as `nomad tls` does.
func newTLSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Create the cluster's certificate authority and certificates",
		Long: `Create a certificate authority (CA) and the certificates coordinators, agents,
LBs and the CLI use to talk TLS, each certificate naming its holder's role.

  baton tls ca create                      baton-ca.pem, baton-ca-key.pem
  baton tls cert create --server --node c1 baton-server-0.pem, baton-server-0-key.pem
  baton tls cert create --agent --node gpu-node-1
  baton tls cert create --lb --node lb-1
  baton tls cert create --client           baton-cli-0.pem, for $BATON_CLIENT_CERT

Keep baton-ca-key.pem off the cluster's machines: it signs certificates.
Existing files are never overwritten.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	ca := &cobra.Command{
		Use:           "ca",
		Short:         "Create a certificate authority",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	ca.AddCommand(newTLSCACreateCmd())
	cert := &cobra.Command{
		Use:           "cert",
		Short:         "Create a certificate for a coordinator, agent, LB or the CLI",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cert.AddCommand(newTLSCertCreateCmd())
	cmd.AddCommand(ca, cert)
	return cmd
}

func newTLSCACreateCmd() *cobra.Command {
	var (
		days       int
		commonName string
		dir        string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a CA: baton-ca.pem and baton-ca-key.pem (0600)",
		Example: `  baton tls ca create
  baton tls ca create --days 3650 --common-name "example.com baton CA" --dir /etc/baton/tls`,
		Args:          noArgs("tls ca create"),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if days < 1 {
				return fmt.Errorf("--days %d: use 1 or more", days)
			}
			if strings.TrimSpace(commonName) == "" {
				return errors.New("--common-name is empty: give the CA a name, or leave the flag out for " + fmt.Sprintf("%q", tlsutil.DefaultCommonName))
			}
			certPath, keyPath, err := tlsutil.CreateCA(dir, days, commonName)
			if errors.Is(err, tlsutil.ErrFileExists) {
				return fmt.Errorf("%w (remove it first, or choose another --dir)", err)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "==> CA certificate saved to: %s\n", certPath)
			fmt.Fprintf(out, "==> CA certificate key saved to: %s\n", keyPath)
			return describeCert(out, certPath)
		},
	}
	f := cmd.Flags()
	f.IntVar(&days, "days", 1825, "days the CA is valid")
	f.StringVar(&commonName, "common-name", tlsutil.DefaultCommonName, "the CA's common name")
	f.StringVar(&dir, "dir", ".", "directory to write the files into (created if missing)")
	return cmd
}

// tlsRoleFlags are cert create's role flags, each with the role it picks.
var tlsRoleFlags = []struct{ flag, role, what string }{
	{"server", tlsutil.RoleCoordinator, "Server"},
	{"client", tlsutil.RoleCLI, "CLI"},
	{"agent", tlsutil.RoleAgent, "Agent"},
	{"lb", tlsutil.RoleLB, "LB"},
}

func newTLSCertCreateCmd() *cobra.Command {
	var (
		roles    = make([]bool, len(tlsRoleFlags))
		caPath   string
		keyPath  string
		days     int
		node     string
		dnsNames []string
		ipArgs   []string
		dir      string
	)
	cmd := &cobra.Command{
		Use:   "create --server|--client|--agent|--lb",
		Short: "Create a certificate and key signed by the CA, for one role",
		Long: `Create a certificate and key signed by the CA, for one role:

  --server  a coordinator: baton-server-<n>.pem, for the HTTPS API, Raft, NATS
            and the other coordinators (server and client auth); DNS names
            localhost, server.baton and --node, IP 127.0.0.1
  --client  the CLI: baton-cli-<n>.pem (client auth only), CN cli.baton
  --agent   an agent: baton-agent-<n>.pem (server and client auth: it serves
            logs over HTTPS); CN <node>.agent.baton, DNS names localhost,
            agent.baton and --node, IP 127.0.0.1
  --lb      an LB: baton-lb-<n>.pem (server and client auth); CN <node>.lb.baton

n is the first number for which no file exists yet; keys are written 0600.
The role and --node are in the certificate (URI SAN spiffe://baton/<role>/<node>),
and the coordinators decide what a connection may do by them: give each agent
and LB its own certificate with --node set to its --id.`,
		Example: `  baton tls cert create --server --node c1 --additional-ipaddress 10.0.0.11
  baton tls cert create --agent --node gpu-node-1 --additional-dnsname gpu-node-1.example.com
  baton tls cert create --client --ca /etc/baton/tls/baton-ca.pem --key /etc/baton/tls/baton-ca-key.pem`,
		Args:          noArgs("tls cert create"),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var chosen []int
			for i := range tlsRoleFlags {
				if roles[i] {
					chosen = append(chosen, i)
				}
			}
			choose := "choose exactly one of --server, --client, --agent or --lb"
			switch len(chosen) {
			case 0:
				return errors.New("which role is the certificate for? " + choose)
			case 1:
			default:
				var given []string
				for _, i := range chosen {
					given = append(given, "--"+tlsRoleFlags[i].flag)
				}
				return fmt.Errorf("%s given together: %s", strings.Join(given, " and "), choose)
			}
			rf := tlsRoleFlags[chosen[0]]
			if days < 1 {
				return fmt.Errorf("--days %d: use 1 or more", days)
			}
			if !tlsutil.ValidNode(node) {
				return fmt.Errorf("--node %q: use 1-%d letters, digits, '.', '_', ':' and '-', starting with a letter or digit (the agent's or LB's --id, the coordinator's --node-id)", node, tlsutil.MaxNodeLen)
			}
			for _, n := range dnsNames {
				if !tlsutil.ValidDNSName(n) {
					return fmt.Errorf("--additional-dnsname %q is not a host name", n)
				}
			}
			var ips []net.IP
			for _, s := range ipArgs {
				ip := net.ParseIP(strings.TrimSpace(s))
				if ip == nil {
					return fmt.Errorf("--additional-ipaddress %q is not an IP address", s)
				}
				ips = append(ips, ip)
			}
			if caPath == "" {
				caPath = filepath.Join(dir, tlsutil.CAFile)
			}
			if keyPath == "" {
				keyPath = filepath.Join(dir, tlsutil.CAKeyFile)
			}
			for _, p := range []struct{ flag, path string }{{"--ca", caPath}, {"--key", keyPath}} {
				if _, err := os.Stat(p.path); errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("%s %s: no such file; create a CA with `baton tls ca create`, or point --ca and --key at your CA's certificate and key", p.flag, p.path)
				}
			}
			certPath, certKeyPath, err := tlsutil.CreateCert(dir, caPath, keyPath, rf.role, node, days, dnsNames, ips)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "==> Using CA certificate %s and key %s\n", caPath, keyPath)
			fmt.Fprintf(out, "==> %s certificate saved to: %s\n", rf.what, certPath)
			fmt.Fprintf(out, "==> %s certificate key saved to: %s\n", rf.what, certKeyPath)
			return describeCert(out, certPath)
		},
	}
	f := cmd.Flags()
	for i, rf := range tlsRoleFlags {
		f.BoolVar(&roles[i], rf.flag, false, fmt.Sprintf("make a certificate for %s (role %s)", map[string]string{
			"server": "a coordinator", "client": "the CLI", "agent": "an agent", "lb": "an LB",
		}[rf.flag], rf.role))
	}
	f.StringVar(&caPath, "ca", "", "the CA's certificate (default "+tlsutil.CAFile+" in --dir)")
	f.StringVar(&keyPath, "key", "", "the CA's key (default "+tlsutil.CAKeyFile+" in --dir)")
	f.IntVar(&days, "days", 365, "days the certificate is valid (never past the CA's end)")
	f.StringVar(&node, "node", "", "the holder's name: the agent's or LB's --id, the coordinator's --node-id; also a DNS name when it is a host name")
	f.StringSliceVar(&dnsNames, "additional-dnsname", nil, "another DNS name the holder is reached by (repeatable, or comma-separated)")
	f.StringSliceVar(&ipArgs, "additional-ipaddress", nil, "another IP address the holder is reached by (repeatable, or comma-separated)")
	f.StringVar(&dir, "dir", ".", "directory to write the files into (created if missing)")
	return cmd
}

// describeCert prints what a certificate just written holds: its subject,
// role, names and validity, so that a wrong --node or a missing address is
// seen at once.
func describeCert(w io.Writer, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return fmt.Errorf("%s: no PEM block in it", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Fprintf(w, "    subject:     %s\n", cert.Subject.CommonName)
	if role, node, ok := tlsutil.RoleOf(cert); ok {
		if node == "" {
			node = "(none)"
		}
		fmt.Fprintf(w, "    role:        %s, node %s\n", role, node)
	}
	if len(cert.DNSNames) > 0 {
		fmt.Fprintf(w, "    DNS names:   %s\n", strings.Join(cert.DNSNames, ", "))
	}
	if len(cert.IPAddresses) > 0 {
		ips := make([]string, len(cert.IPAddresses))
		for i, ip := range cert.IPAddresses {
			ips[i] = ip.String()
		}
		fmt.Fprintf(w, "    IPs:         %s\n", strings.Join(ips, ", "))
	}
	fmt.Fprintf(w, "    valid until: %s\n", cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
