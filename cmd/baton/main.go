// Command baton runs long-lived HTTP services on your own machines and
// updates them with no downtime.
//
//	baton coordinator   Raft-replicated state, API, controller, embedded NATS
//	baton agent         runs replicas on this machine
//	baton lb            serves each service's port, routing to ready replicas
//	baton dev           all of the above in one process, for trying it out
//	baton serve ...     up, status, update, down, logs (talks to $BATON_ADDR)
//	baton operator ...  raft list-peers, raft remove-peer, members
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "baton",
		Short:         "Run long-lived HTTP services on your own machines, updated with no downtime",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newCoordinatorCmd(), newAgentCmd(), newLBCmd(), newDevCmd(), newServeCmd(), newOperatorCmd(), newACLCmd(), newSimCmd(), newTLSCmd())
	return root
}

// logFlags are the logging flags every daemon takes.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	cmd.Flags().StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(l.format) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", l.format)
}

// signalContext ends on SIGINT or SIGTERM.
func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}
