package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/internal/fleetsim"
)

// newSimCmd is `baton sim`: the fleet simulator that measures a real
// coordinator against N sim agents and K sim LBs (internal/fleetsim).
func newSimCmd() *cobra.Command {
	var (
		agents     []int
		passAgents int
		nice       int
		lbs        int
		readyDelay time.Duration
		heartbeat  time.Duration
		bin        string
		asJSON     bool
		keep       bool
		debug      bool
	)
	cmd := &cobra.Command{
		Use:    "sim",
		Short:  "Measure a coordinator process against a simulated fleet of agents and LBs",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if bin == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("--baton: %w", err)
				}
				bin = exe
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			fleetsim.LowerPriority(ctx, nice)
			logf := func(format string, args ...any) {
				fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
			}
			var results []*fleetsim.Result
			var failed error
			runOne := func(n int, passOnly bool) {
				if ctx.Err() != nil {
					return
				}
				r, err := fleetsim.Run(ctx, fleetsim.Options{
					Baton: bin, Agents: n, LBs: lbs, ReadyDelay: readyDelay, Heartbeat: heartbeat,
					PassOnly: passOnly, Debug: debug, Keep: keep, Logf: logf,
				})
				if err != nil && failed == nil {
					failed = fmt.Errorf("at %d agents: %w", n, err)
				}
				if r != nil {
					results = append(results, r)
				}
			}
			for _, n := range agents {
				if n <= 0 {
					continue // --agents 0: the pass-only run alone
				}
				runOne(n, false)
			}
			if passAgents > 0 {
				runOne(passAgents, true)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(results); err != nil {
					return err
				}
			} else {
				fleetsim.WriteTable(cmd.OutOrStdout(), results)
			}
			return failed
		},
	}
	f := cmd.Flags()
	f.IntSliceVar(&agents, "agents", []int{100, 300, 1000}, "fleet sizes to run the whole scenario at (10 replicas per agent); 0 runs none")
	f.IntVar(&passAgents, "pass-agents", 2000, "fleet size of the pass-only run (start, submit, at rest, pass p99); 0 skips it")
	f.IntVar(&lbs, "lbs", 2, "sim LBs")
	f.DurationVar(&readyDelay, "ready-delay", time.Second, "how long a sim replica takes to become READY")
	f.DurationVar(&heartbeat, "heartbeat", time.Second, "sim agents' heartbeat interval")
	f.IntVar(&nice, "nice", 10, "nice value of the simulator's own threads (the coordinator keeps the simulator's starting priority), so that simulated agents, which would run on machines of their own, do not inflate the coordinator's latencies; 0 runs both alike")
	f.StringVar(&bin, "baton", "", "baton binary to run as the coordinator (default: this one)")
	f.BoolVar(&asJSON, "json", false, "print the results as JSON instead of a table")
	f.BoolVar(&keep, "keep", false, "keep each run's directory (coordinator data and log)")
	f.BoolVar(&debug, "pprof", true, "pass --debug-addr (pprof) to the coordinator if it has the flag")
	return cmd
}
