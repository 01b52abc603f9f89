package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// gossipKeyEnv names the environment variable read when --gossip-key is
// not given. It keeps the key out of ps and shell history.
const gossipKeyEnv = "BATON_GOSSIP_KEY"

// gossipKeySize is the size of the keys keygen makes (AES-256).
const gossipKeySize = 32

// gossipKeyFlag is --gossip-key, which the coordinator, agent and lb
// commands share: base64 (standard encoding) of a 16, 24 or 32 byte AES
// key, as `baton operator gossip keygen`, `consul keygen` and `nomad
// operator gossip keyring generate` print.
type gossipKeyFlag struct {
	value string
	cmd   *cobra.Command
}

func (g *gossipKeyFlag) register(cmd *cobra.Command) {
	g.cmd = cmd
	cmd.Flags().StringVar(&g.value, "gossip-key", "", "encrypt gossip with this `key`: base64 of 16, 24 or 32 bytes, as 'baton operator gossip keygen' prints; every coordinator, agent and LB needs the same (default $"+gossipKeyEnv+", else none: gossip is not encrypted)")
}

// key returns the key of --gossip-key, else of $BATON_GOSSIP_KEY, else
// nil (no encryption).
func (g *gossipKeyFlag) key() ([]byte, error) {
	if g.cmd != nil && g.cmd.Flags().Changed("gossip-key") {
		return parseGossipKey("--gossip-key", g.value)
	}
	if v := os.Getenv(gossipKeyEnv); strings.TrimSpace(v) != "" {
		return parseGossipKey("$"+gossipKeyEnv, v)
	}
	return nil, nil
}

// parseGossipKey decodes a base64 gossip key; what names where it came
// from. The error never repeats the value: it is a secret.
func parseGossipKey(what, s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err == nil {
		if n := len(key); n == 16 || n == 24 || n == 32 {
			return key, nil
		}
		err = fmt.Errorf("it decodes to %d bytes", len(key))
	}
	return nil, fmt.Errorf("%s: not base64 of 16, 24 or 32 bytes (%v); make one with `baton operator gossip keygen`", what, err)
}

// newGossipKey returns a new random key, base64.
func newGossipKey() (string, error) {
	key := make([]byte, gossipKeySize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key), nil
}

// gossipCmd is `baton operator gossip`, with `keygen`.
func gossipCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:           "gossip",
		Short:         "Manage gossip encryption",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "keygen",
		Short: "Print a new random gossip encryption key (32 bytes, base64)",
		Long: `Print a new random gossip encryption key: 32 random bytes (AES-256),
base64, on one line. Give the same key to every coordinator, agent and LB
of the cluster with --gossip-key or $` + gossipKeyEnv + `; a node with another
key or none cannot join. It talks to no coordinator.`,
		Example:       `  export ` + gossipKeyEnv + `=$(baton operator gossip keygen)`,
		Args:          noArgs("keygen"),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := newGossipKey()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), key)
			return err
		},
	})
	return cmd
}
