package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// operatorCLI holds what the `baton operator` commands share.
type operatorCLI struct {
	addr addrFlag
}

// newOperatorCmd returns `baton operator` with `raft list-peers`, `raft
// remove-peer`, `members` and `gossip keygen` (operator_gossip.go).
func newOperatorCmd() *cobra.Command {
	return (&operatorCLI{}).command()
}

func (c *operatorCLI) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Inspect and repair the cluster: Raft peers and members",
		Long: `Inspect and repair the cluster of coordinators, agents and LBs.

The commands talk to the coordinators at --addr, else $BATON_ADDR, else
` + defaultAddr + `: a comma-separated list, tried in order until one answers.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	c.addr.register(cmd)
	raft := &cobra.Command{
		Use:           "raft",
		Short:         "List or remove the coordinators' Raft peers",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	raft.AddCommand(c.listPeersCmd(), c.removePeerCmd())
	cmd.AddCommand(raft, c.membersCmd(), gossipCmd())
	return cmd
}

func (c *operatorCLI) listPeersCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list-peers",
		Short: "List the Raft servers: the coordinators that replicate the state, and which one leads",
		Example: `  baton operator raft list-peers
  baton operator raft list-peers --json`,
		Args:          noArgs("list-peers"),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.addr.client()
			if err != nil {
				return err
			}
			resp, raw, err := cl.RaftPeers(contextOf(cmd))
			if err != nil {
				return err
			}
			if asJSON {
				return writeRawJSON(cmd.OutOrStdout(), raw)
			}
			return writePeers(cmd.OutOrStdout(), resp.Peers)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print the peers as the coordinator sent them: {"peers":[{"id","address","state","voter"}]}`)
	return cmd
}

func (c *operatorCLI) removePeerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove-peer ID",
		Short: "Remove a coordinator from the Raft configuration (one that is gone for good)",
		Long: `Remove a coordinator from the Raft configuration, by the ID that
baton operator raft list-peers shows. Use it for a coordinator that is gone
for good and will not leave by itself: until it is removed it still counts
towards the majority that every write needs.`,
		Example: `  baton operator raft remove-peer c3`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
				return fmt.Errorf("remove-peer takes exactly one peer ID, got %d arguments (see the ID column of baton operator raft list-peers)", len(args))
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.addr.client()
			if err != nil {
				return err
			}
			removed, err := cl.RemovePeer(contextOf(cmd), strings.TrimSpace(args[0]))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed peer %s\n", removed)
			return nil
		},
	}
	return cmd
}

func (c *operatorCLI) membersCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List every coordinator, agent and LB of the gossip pool, alive, failed or left",
		Example: `  baton operator members
  baton operator members --json`,
		Args:          noArgs("members"),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.addr.client()
			if err != nil {
				return err
			}
			resp, raw, err := cl.Members(contextOf(cmd))
			if err != nil {
				return err
			}
			if asJSON {
				return writeRawJSON(cmd.OutOrStdout(), raw)
			}
			return writeMembers(cmd.OutOrStdout(), resp.Members)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print the members as the coordinator sent them: {"members":[...]}`)
	return cmd
}

// noArgs refuses arguments with a message naming the command.
func noArgs(name string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("%s takes no arguments, got %q", name, strings.Join(args, " "))
		}
		return nil
	}
}

// writeRawJSON prints a JSON value as the server sent it, indented like
// the other --json outputs, with a final newline.
func writeRawJSON(w io.Writer, raw json.RawMessage) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return errors.New("the coordinator sent an empty answer")
	}
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return err
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}
