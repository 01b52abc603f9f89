package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/protocol"
)

// newACLCmd returns `baton acl`: bootstrap, and token create/list/revoke.
func newACLCmd() *cobra.Command {
	var addr addrFlag
	cmd := &cobra.Command{
		Use:   "acl",
		Short: "Bootstrap the ACLs and manage API tokens",
		Long: `Coordinators started with --acl require a token on every API request
(but /healthz and /metrics). baton acl bootstrap, run once on a new cluster,
returns the first management token; a management token creates the others:

  read        status, agents and logs (of --service names only, if given)
  deploy      also up, update and down (of --service names only, if given)
  operator    also baton operator commands
  management  everything, tokens included

The CLI sends $BATON_TOKEN (or --token) with every request.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addr.register(cmd)
	token := &cobra.Command{Use: "token", Short: "Create, list and revoke ACL tokens", SilenceUsage: true, SilenceErrors: true}
	token.AddCommand(aclCreateCmd(&addr), aclListCmd(&addr), aclRevokeCmd(&addr))
	cmd.AddCommand(aclBootstrapCmd(&addr), token)
	return cmd
}

func aclBootstrapCmd(addr *addrFlag) *cobra.Command {
	var asJSON, quiet bool
	cmd := &cobra.Command{
		Use:           "bootstrap",
		Short:         "Create the first management token (once per cluster)",
		Args:          noArgs("bootstrap"),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := addr.client()
			if err != nil {
				return err
			}
			var resp protocol.ACLTokenResponse
			if _, err := cl.do(contextOf(cmd), http.MethodPost, "/v1/acl/bootstrap", nil, struct{}{}, &resp); err != nil {
				return err
			}
			return printToken(cmd.OutOrStdout(), resp, asJSON, quiet)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the token as JSON")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the secret (for BATON_TOKEN=$(baton acl bootstrap -q))")
	return cmd
}

func aclCreateCmd(addr *addrFlag) *cobra.Command {
	var req protocol.ACLTokenRequest
	var asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "create --policy read|deploy|operator|management [--service NAME...] [--name TEXT]",
		Short: "Create a token (needs a management token)",
		Example: `  baton acl token create --policy deploy --service http-server --name ci
  baton acl token create --policy read`,
		Args:          noArgs("create"),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := req.Validate(); err != nil {
				return fmt.Errorf("acl token create: %w", err)
			}
			cl, err := addr.client()
			if err != nil {
				return err
			}
			var resp protocol.ACLTokenResponse
			if _, err := cl.do(contextOf(cmd), http.MethodPost, "/v1/acl/tokens", nil, req, &resp); err != nil {
				return err
			}
			return printToken(cmd.OutOrStdout(), resp, asJSON, quiet)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the secret")
	cmd.Flags().StringVar(&req.Policy, "policy", "", "read, deploy, operator or management (required)")
	cmd.Flags().StringSliceVar(&req.Services, "service", nil, "limit a read or deploy token to these services (repeatable)")
	cmd.Flags().StringVar(&req.Name, "name", "", "a description shown in token list")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the token as JSON")
	return cmd
}

func aclListCmd(addr *addrFlag) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:           "list",
		Short:         "List the tokens, without their secrets (needs a management token)",
		Args:          noArgs("list"),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := addr.client()
			if err != nil {
				return err
			}
			var resp protocol.ACLTokensResponse
			if _, err := cl.do(contextOf(cmd), http.MethodGet, "/v1/acl/tokens", nil, nil, &resp); err != nil {
				return err
			}
			if asJSON {
				return writeJSONTo(cmd.OutOrStdout(), resp)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ACCESSOR ID\tPOLICY\tSERVICES\tNAME\tCREATED")
			for _, t := range resp.Tokens {
				svcs := strings.Join(t.Services, ",")
				if svcs == "" {
					svcs = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.AccessorID, t.Policy, svcs, t.Name, t.CreatedAt.Format("2006-01-02 15:04:05"))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"tokens":[...]} as JSON`)
	return cmd
}

func aclRevokeCmd(addr *addrFlag) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ACCESSOR_ID",
		Short: "Revoke a token by its accessor id (needs a management token)",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
				return fmt.Errorf("revoke takes exactly one accessor id (see baton acl token list), got %d arguments", len(args))
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := addr.client()
			if err != nil {
				return err
			}
			id := strings.TrimSpace(args[0])
			if _, err := cl.do(contextOf(cmd), http.MethodDelete, "/v1/acl/tokens/"+url.PathEscape(id), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked token %s\n", id)
			return nil
		},
	}
}

// printToken shows a new token; its secret is shown this once.
func printToken(w io.Writer, t protocol.ACLTokenResponse, asJSON, quiet bool) error {
	if asJSON {
		return writeJSONTo(w, t)
	}
	if quiet {
		_, err := fmt.Fprintln(w, t.SecretID)
		return err
	}
	svcs := strings.Join(t.Services, ", ")
	if svcs == "" {
		svcs = "all"
	}
	_, err := fmt.Fprintf(w, "Accessor ID: %s\nSecret ID:   %s\nPolicy:      %s\nServices:    %s\n\nThe secret is shown this once: export BATON_TOKEN=%s\n",
		t.AccessorID, t.SecretID, t.Policy, svcs, t.SecretID)
	return err
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
