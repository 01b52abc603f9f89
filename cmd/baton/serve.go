package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/agent"
	"github.com/baton-dev/baton/protocol"
)

// downWaitTimeout bounds `baton serve down --wait`.
const downWaitTimeout = 2 * time.Minute

// downPollInterval is how often `baton serve down --wait` asks for status.
const downPollInterval = 500 * time.Millisecond

// serveCLI holds what the `baton serve` commands share. Tests replace
// stdin, isTerminal and now.
type serveCLI struct {
	addr       addrFlag // --addr; empty means $BATON_ADDR, else defaultAddr
	stdin      io.Reader
	isTerminal func() bool
	now        func() time.Time
}

// stderrTerminal reports whether stderr is a terminal: the upload's
// progress bar is drawn only there.
func (c *serveCLI) stderrTerminal() bool { return isatty.IsTerminal(os.Stderr.Fd()) }

// newServeCmd returns the `baton serve` command with its subcommands up,
// update, status, down and logs. Errors are returned from RunE with clean
// messages for the root command to print as `error: <message>`.
func newServeCmd() *cobra.Command {
	c := &serveCLI{
		stdin:      os.Stdin,
		isTerminal: func() bool { return isatty.IsTerminal(os.Stdin.Fd()) },
		now:        time.Now,
	}
	return c.command()
}

func (c *serveCLI) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run, update and inspect services",
		Long: `Run, update and inspect services described by SkyServe-compatible task YAMLs.

The commands talk to the coordinators at --addr, else $BATON_ADDR, else
` + defaultAddr + `: a comma-separated list, tried in order until one answers.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	c.addr.register(cmd)
	cmd.AddCommand(c.upCmd(), c.updateCmd(), c.statusCmd(), c.downCmd(), c.logsCmd())
	return cmd
}

func (c *serveCLI) upCmd() *cobra.Command {
	var name string
	var yes, noUpload bool
	var envFlags, secretFlags []string
	cmd := &cobra.Command{
		Use:   "up TASK.yaml",
		Short: "Start a service from a task YAML",
		Example: `  baton serve up examples/http_server/task.yaml -n http-server
  baton serve up task.yaml -y`,
		Args:          cobra.ExactArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			file := args[0]
			envs, err := parseEnvFlags(envFlags)
			if err != nil {
				return err
			}
			secrets, err := parseSecretFlags(secretFlags)
			if err != nil {
				return err
			}
			data, spec, err := readTask(file, envs, secrets)
			if err != nil {
				return err
			}
			printWarnings(cmd.ErrOrStderr(), spec.Warnings)
			switch {
			case name != "":
				if err := protocol.ValidateServiceName(name); err != nil {
					return fmt.Errorf("-n: %w", err)
				}
			case spec.Name != "":
				if err := protocol.ValidateServiceName(spec.Name); err != nil {
					return protocol.TaskNameError(file, spec, err)
				}
				name = spec.Name
			}
			// With neither -n nor a name: field the coordinator picks one.
			cwd, err := os.Getwd()
			if err != nil {
				return fmt.Errorf("working directory: %w", err)
			}
			spec.ResolveWorkdir(cwd)
			shown := name
			if shown == "" {
				shown = "(a generated name)"
			} else {
				shown = strconv.Quote(shown)
			}
			ok, err := c.confirm(cmd, yes, fmt.Sprintf("Launching service %s: %s.", shown, describeSpec(spec)))
			if err != nil || !ok {
				return err
			}
			cl, err := c.addr.client()
			if err != nil {
				return err
			}
			digest, err := shipCode(contextOf(cmd), cl, file, spec, noUpload, cmd.OutOrStdout(), cmd.ErrOrStderr(), c.stderrTerminal())
			if err != nil {
				return err
			}
			resp, err := cl.Up(contextOf(cmd), protocol.UpRequest{
				Name: name, YAML: string(data), Filename: file, BaseDir: cwd, Envs: envs, Secrets: secrets, Bundle: digest,
			})
			if err != nil {
				return err
			}
			printWarnings(cmd.ErrOrStderr(), newWarnings(resp.Warnings, spec.Warnings))
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Service %q is up: version %d, endpoint %s\n", resp.Name, resp.Version, orDash(resp.Endpoint))
			fmt.Fprintf(out, "To see its status: baton serve status %s\n", resp.Name)
			return nil
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "service name (default the task's name: field, else a generated service-xxxx)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	addNoUploadFlag(cmd, &noUpload)
	addEnvFlag(cmd, &envFlags)
	addSecretFlag(cmd, &secretFlags)
	return cmd
}

// addEnvFlag adds --env, SkyPilot's way to set or override the task's envs.
func addEnvFlag(cmd *cobra.Command, envFlags *[]string) {
	cmd.Flags().StringArrayVar(envFlags, "env", nil,
		"set an env of the task, overriding the YAML: --env KEY=VALUE, or --env KEY to take KEY from this shell (repeatable)")
}

// parseEnvFlags turns --env flags into overrides. A bare KEY takes its
// value from the CLI's own environment, as SkyPilot does.
func parseEnvFlags(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	envs := make(map[string]string, len(flags))
	for _, f := range flags {
		key, value, hasValue := strings.Cut(f, "=")
		if err := protocol.ValidateEnvName(key); err != nil {
			return nil, fmt.Errorf("--env %s: %w; write --env KEY=VALUE", f, err)
		}
		if !hasValue {
			v, ok := os.LookupEnv(key)
			if !ok {
				return nil, fmt.Errorf("--env %s: %s is not set in this shell; write --env %s=VALUE", f, key, key)
			}
			value = v
		}
		envs[key] = value
	}
	return envs, nil
}

// addSecretFlag adds --secret, SkyPilot's way to set or override the
// task's secrets: envs whose values baton never shows.
func addSecretFlag(cmd *cobra.Command, secretFlags *[]string) {
	cmd.Flags().StringArrayVar(secretFlags, "secret", nil,
		"set a secret of the task, overriding the YAML: --secret KEY=VALUE, or --secret KEY to take KEY from this shell (repeatable; "+
			"the value reaches the replicas' environment and is never shown; --secret KEY keeps it off this command line)")
}

// parseSecretFlags turns --secret flags into overrides, as parseEnvFlags
// does for --env. No message repeats a value.
func parseSecretFlags(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	secrets := make(map[string]string, len(flags))
	for _, f := range flags {
		key, value, hasValue := strings.Cut(f, "=")
		if err := protocol.ValidateEnvName(key); err != nil {
			if hasValue {
				return nil, fmt.Errorf("--secret: %w; write --secret KEY=VALUE", err)
			}
			// Without '=' the whole flag may be a value pasted alone.
			return nil, errors.New("--secret: the name is not a valid environment variable name (not repeated here, in case it is the value); write --secret KEY=VALUE, or --secret KEY to take KEY from this shell")
		}
		if !hasValue {
			v, ok := os.LookupEnv(key)
			if !ok {
				return nil, fmt.Errorf("--secret %s: %s is not set in this shell; write --secret %s=VALUE", key, key, key)
			}
			value = v
		}
		secrets[key] = value
	}
	return secrets, nil
}

func (c *serveCLI) updateCmd() *cobra.Command {
	var mode string
	var yes, noUpload bool
	var envFlags, secretFlags []string
	cmd := &cobra.Command{
		Use:   "update NAME TASK.yaml",
		Short: "Roll a service out to a new version with no downtime",
		Long: `Roll a service out to a new version with no downtime.

blue_green (the default) brings up the new version beside the old one and
flips all traffic in one step once min_replicas new replicas are READY.
rolling replaces old replicas one at a time as new ones become READY.`,
		Example:       `  baton serve update http-server examples/http_server/task_v2.yaml --mode rolling`,
		Args:          cobra.ExactArgs(2),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, file := args[0], args[1]
			if mode != protocol.UpdateBlueGreen && mode != protocol.UpdateRolling {
				return fmt.Errorf("--mode %q: use %s or %s", mode, protocol.UpdateBlueGreen, protocol.UpdateRolling)
			}
			if err := protocol.ValidateServiceName(name); err != nil {
				return err
			}
			envs, err := parseEnvFlags(envFlags)
			if err != nil {
				return err
			}
			secrets, err := parseSecretFlags(secretFlags)
			if err != nil {
				return err
			}
			data, spec, err := readTask(file, envs, secrets)
			if err != nil {
				return err
			}
			printWarnings(cmd.ErrOrStderr(), spec.Warnings)
			cwd, err := os.Getwd()
			if err != nil {
				return fmt.Errorf("working directory: %w", err)
			}
			spec.ResolveWorkdir(cwd)
			ok, err := c.confirm(cmd, yes, fmt.Sprintf("Updating service %q (%s): %s.", name, mode, describeSpec(spec)))
			if err != nil || !ok {
				return err
			}
			cl, err := c.addr.client()
			if err != nil {
				return err
			}
			digest, err := shipCode(contextOf(cmd), cl, file, spec, noUpload, cmd.OutOrStdout(), cmd.ErrOrStderr(), c.stderrTerminal())
			if err != nil {
				return err
			}
			resp, err := cl.Update(contextOf(cmd), name, protocol.UpdateRequest{
				YAML: string(data), Filename: file, BaseDir: cwd, Mode: mode, Envs: envs, Secrets: secrets, Bundle: digest,
			})
			if err != nil {
				return err
			}
			printWarnings(cmd.ErrOrStderr(), newWarnings(resp.Warnings, spec.Warnings))
			out := cmd.OutOrStdout()
			switch mode {
			case protocol.UpdateRolling:
				fmt.Fprintf(out, "Service %q updating to version %d (%s); old replicas are replaced one at a time as new ones become READY\n",
					resp.Name, resp.Version, mode)
			default:
				n := spec.Service.ReplicaPolicy.MinReplicas
				fmt.Fprintf(out, "Service %q updating to version %d (%s); traffic flips when %s READY\n",
					resp.Name, resp.Version, mode, countNoun(n, "new replica is", "new replicas are"))
			}
			fmt.Fprintf(out, "To follow it: baton serve status %s\n", resp.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&mode, "mode", protocol.UpdateBlueGreen, "update mode: blue_green or rolling")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	addNoUploadFlag(cmd, &noUpload)
	addEnvFlag(cmd, &envFlags)
	addSecretFlag(cmd, &secretFlags)
	return cmd
}

func (c *serveCLI) statusCmd() *cobra.Command {
	var asJSON, consistent bool
	cmd := &cobra.Command{
		Use:   "status [NAME...]",
		Short: "Show services and their replicas",
		Long: `Show services and their replicas.

Any coordinator answers from its own copy of the state. When that copy may
miss recent writes (the coordinator knows no leader, or has not heard from it
lately) a warning says so; --consistent asks the leader instead, which first
confirms that it still leads.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.addr.client()
			if err != nil {
				return err
			}
			st, info, err := cl.Status(contextOf(cmd), args, consistent)
			if err != nil {
				return err
			}
			for _, n := range args {
				if !slices.ContainsFunc(st.Services, func(s protocol.ServiceStatusView) bool { return s.Name == n }) {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: service %q not found\n", n)
				}
			}
			if st.Services == nil {
				st.Services = []protocol.ServiceStatusView{}
			}
			if st.Replicas == nil {
				st.Replicas = []protocol.ReplicaStatusView{}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			if w := staleWarning(st, info); w != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			return writeStatus(cmd.OutOrStdout(), st, c.now())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as one JSON object (with the coordinator's Raft index and whether the answer may be stale)")
	cmd.Flags().BoolVar(&consistent, "consistent", false, "ask the leader, which confirms its leadership first: never stale, but fails without a quorum")
	return cmd
}

func (c *serveCLI) downCmd() *cobra.Command {
	var all, yes, wait bool
	cmd := &cobra.Command{
		Use:   "down NAME [NAME...]",
		Short: "Shut services down",
		Example: `  baton serve down http-server
  baton serve down --all -y`,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if all && len(args) > 0 {
				return errors.New("name services or pass --all, not both")
			}
			if !all && len(args) == 0 {
				return errors.New("name the services to shut down, or pass --all")
			}
			cl, err := c.addr.client()
			if err != nil {
				return err
			}
			names := args
			if all {
				st, _, err := cl.Status(contextOf(cmd), nil, false)
				if err != nil {
					return err
				}
				names = nil
				for _, s := range st.Services {
					names = append(names, s.Name)
				}
				if len(names) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), noServicesMessage)
					return nil
				}
			}
			ok, err := c.confirm(cmd, yes, fmt.Sprintf("Shutting down %s.", quoteList(names)))
			if err != nil || !ok {
				return err
			}
			var errs []error
			var stopping []string
			for _, n := range names {
				if _, err := cl.Down(contextOf(cmd), n); err != nil {
					if len(names) > 1 {
						err = fmt.Errorf("%s: %w", n, err)
					}
					errs = append(errs, err)
					continue
				}
				stopping = append(stopping, n)
				fmt.Fprintf(cmd.OutOrStdout(), "Service %q is shutting down.\n", n)
			}
			if wait && len(stopping) > 0 {
				ctx, stop := signal.NotifyContext(contextOf(cmd), os.Interrupt, syscall.SIGTERM)
				defer stop()
				if err := waitGone(ctx, cl, stopping, cmd.OutOrStdout()); err != nil {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "shut down every service")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait (up to "+downWaitTimeout.String()+") until the services are gone")
	return cmd
}

func (c *serveCLI) logsCmd() *cobra.Command {
	var follow, noFollow bool
	var tail tailLines
	cmd := &cobra.Command{
		Use:   "logs NAME REPLICA_ID",
		Short: "Print a replica's log, following it by default",
		Long: `Print a replica's log: its setup and run output and baton's notes, oldest
first, from the agent that runs (or ran) it. The agent keeps a bounded log per
replica, rotating it by size, so a chatty replica's oldest output may be gone.

By default the command then follows the log until the replica ends or you press
Ctrl-C; --no-follow prints what is there and exits. --tail N starts at the last
N lines (1 to ` + strconv.Itoa(agent.MaxLogTail) + `) instead of the oldest one kept.`,
		Example: `  baton serve logs http-server 1
  baton serve logs http-server 1 --no-follow
  baton serve logs http-server 1 --tail 100
  baton serve logs http-server 1 --tail 20 --no-follow`,
		Args:          cobra.ExactArgs(2),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.Atoi(args[1])
			if err != nil || id <= 0 {
				return fmt.Errorf("replica id %q: want a positive number, as in the ID column of baton serve status", args[1])
			}
			ctx, stop := signal.NotifyContext(contextOf(cmd), os.Interrupt, syscall.SIGTERM)
			defer stop()
			opts := logsOptions{Follow: follow && !noFollow, Tail: int(tail)}
			cl, err := c.addr.client()
			if err != nil {
				return err
			}
			return cl.Logs(ctx, args[0], id, opts, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", true, "keep streaming new lines (the default)")
	cmd.Flags().BoolVar(&noFollow, "no-follow", false, "print the log so far and exit")
	cmd.Flags().Var(&tail, "tail", "start at the last `N` lines, 1 to "+strconv.Itoa(agent.MaxLogTail)+" (default: the whole log)")
	return cmd
}

// tailLines is the value of `baton serve logs --tail`: a number of lines
// from 1 to agent.MaxLogTail, or 0 (the flag not given) for the whole log.
// Set checks it, so a bad value fails before any request.
type tailLines int

func (n *tailLines) String() string { return strconv.Itoa(int(*n)) }

func (n *tailLines) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 || v > agent.MaxLogTail {
		return fmt.Errorf("want a number of lines from 1 to %d, like --tail 100", agent.MaxLogTail)
	}
	*n = tailLines(v)
	return nil
}

func (n *tailLines) Type() string { return "int" }

// confirm asks "Proceed? [Y/n]" after summary when stdin is a terminal and
// -y was not given; otherwise it proceeds. A "no" answer prints "Aborted."
// and returns false with a nil error.
func (c *serveCLI) confirm(cmd *cobra.Command, yes bool, summary string) (bool, error) {
	if yes || !c.isTerminal() {
		return true, nil
	}
	w := cmd.ErrOrStderr()
	fmt.Fprintln(w, summary)
	fmt.Fprint(w, "Proceed? [Y/n] ")
	line, err := bufio.NewReader(c.stdin).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Aborted.")
		return false, nil
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "", "y", "yes":
		return true, nil
	}
	fmt.Fprintln(w, "Aborted.")
	return false, nil
}

// readTask reads and parses a task file locally, so a bad file fails before
// the cluster is contacted.
func readTask(file string, envs, secrets map[string]string) ([]byte, *protocol.TaskSpec, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("task file %s does not exist", file)
		}
		return nil, nil, fmt.Errorf("read task file: %w", err)
	}
	spec, err := protocol.ParseTaskWithOverrides(file, data, envs, secrets)
	if err != nil {
		return nil, nil, err
	}
	// The agents run setup and run in the workdir; like SkyPilot, check
	// here that it exists before anything changes in the cluster.
	if spec.Workdir != "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, nil, err
		}
		resolved := *spec
		resolved.ResolveWorkdir(wd)
		if fi, err := os.Stat(resolved.Workdir); err != nil || !fi.IsDir() {
			return nil, nil, fmt.Errorf("%s:%d: workdir: %s is not a directory (a relative workdir is resolved against the current directory, %s)",
				file, spec.Lines["workdir"], resolved.Workdir, wd)
		}
	}
	return data, spec, nil
}

// describeSpec summarises a spec for the confirmation prompt, like
// `2 replicas, cpus 2+, accelerators A100:1, readiness GET /health`.
func describeSpec(s *protocol.TaskSpec) string {
	var parts []string
	p := s.Service.ReplicaPolicy
	if p.MaxReplicas > p.MinReplicas {
		parts = append(parts, fmt.Sprintf("%d-%d replicas (autoscaling)", p.MinReplicas, p.MaxReplicas))
	} else {
		parts = append(parts, countNoun(p.MinReplicas, "replica", "replicas"))
	}
	if res := s.Resources.String(); res != "any resources" {
		parts = append(parts, res)
	}
	if path := s.Service.ReadinessProbe.Path; path != "" {
		method := "GET"
		if s.Service.ReadinessProbe.PostData != "" {
			method = "POST"
		}
		parts = append(parts, "readiness "+method+" "+path)
	}
	if s.Workdir != "" {
		parts = append(parts, "workdir "+s.Workdir)
	}
	return strings.Join(parts, ", ")
}

// countNoun renders `1 replica` or `n replicas`.
func countNoun(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// quoteList renders names as `service "a"` or `services "a", "b"`.
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	if len(q) == 1 {
		return "service " + q[0]
	}
	return "services " + strings.Join(q, ", ")
}

// printWarnings writes each warning to w as `warning: ...`.
func printWarnings(w io.Writer, warnings []string) {
	for _, s := range warnings {
		fmt.Fprintf(w, "warning: %s\n", s)
	}
}

// newWarnings returns the server's warnings that the local parse did not
// already print.
func newWarnings(server, local []string) []string {
	var out []string
	for _, s := range server {
		if !slices.Contains(local, s) {
			out = append(out, s)
		}
	}
	return out
}

// waitGone polls status until none of names is listed, or downWaitTimeout
// passes.
func waitGone(ctx context.Context, cl *apiClient, names []string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, downWaitTimeout)
	defer cancel()
	left := slices.Clone(names)
	tick := time.NewTicker(downPollInterval)
	defer tick.Stop()
	for {
		st, _, err := cl.Status(ctx, nil, false)
		if err == nil {
			var still []string
			for _, n := range left {
				if slices.ContainsFunc(st.Services, func(s protocol.ServiceStatusView) bool { return s.Name == n }) {
					still = append(still, n)
				} else {
					fmt.Fprintf(out, "Service %q is down.\n", n)
				}
			}
			left = still
			if len(left) == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.Canceled {
				return nil
			}
			if err != nil {
				return fmt.Errorf("waiting for %s to go: %w", quoteList(left), err)
			}
			return fmt.Errorf("%s still shutting down after %s", quoteList(left), downWaitTimeout)
		case <-tick.C:
		}
	}
}

// contextOf returns the command's context, or Background when it was run
// without one.
func contextOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
