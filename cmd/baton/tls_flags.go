package main

import (
	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/internal/tlsutil"
)

// registerDaemonTLSFlags adds --tls-ca, --tls-cert and --tls-key to an
// agent's or LB's command; role is "agent" or "lb", as in
// `baton tls cert create --<role>`.
func registerDaemonTLSFlags(cmd *cobra.Command, f *tlsutil.Files, role string) {
	fl := cmd.Flags()
	fl.StringVar(&f.CA, "tls-ca", "", "CA certificate (baton-ca.pem from `baton tls ca create`): with --tls-cert and --tls-key, NATS is spoken over TLS and this "+role+" authenticates with its certificate")
	fl.StringVar(&f.Cert, "tls-cert", "", "this "+role+"'s certificate (from `baton tls cert create --"+role+" --node <its --id>`); needs --tls-ca and --tls-key")
	fl.StringVar(&f.Key, "tls-key", "", "the key of --tls-cert; needs --tls-ca and --tls-cert")
}
