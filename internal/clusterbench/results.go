package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// results are every figure of a run (--json prints them as they are).
type results struct {
	Machine   string            `json:"machine"`
	Took      string            `json:"took"`
	Failover  []failoverResult  `json:"failover,omitempty"`
	Writes    []writeResult     `json:"writes,omitempty"`
	Detection []detectionResult `json:"agent_failure_detection,omitempty"`
}

// print writes the figures as a table.
func (r *results) print(out io.Writer) {
	fmt.Fprintf(out, "\n=== coordinator cluster figures (separate processes on loopback addresses; %s; run took %s) ===\n", r.Machine, r.Took)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	if len(r.Failover) > 0 {
		fmt.Fprintln(w, "\na. leader failover: kill -9 of the leader of 3 (restarted before each next kill)")
		fmt.Fprintln(w, "raft timeout\tkills\tnew leader: median\tmax\twrite accepted: median\tmax\twrites sent (refused)")
		for _, f := range r.Failover {
			name := "--raft-timeout " + f.RaftTimeout
			if f.RaftTimeout == "default" {
				name = "default (1s)"
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%d (%d)\n", name, f.Kills,
				f.Elected.Median, f.Elected.Max, f.Accepted.Median, f.Accepted.Max, f.Attempts, f.Refused)
		}
	}
	if len(r.Writes) > 0 {
		fmt.Fprintln(w, "\nb. API writes: POST /v1/services (a fresh 1-replica service each, left PENDING)")
		fmt.Fprintln(w, "cluster\traft timeout\tsequential: p50\tp99\tmax\tthroughput\tclients\twrites (errors)\telections")
		for _, x := range r.Writes {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%.0f writes/s\t%d\t%d (%d)\t%d\n", x.Cluster, x.RaftTimeout,
				x.Latency.Median, x.Latency.P99, x.Latency.Max, x.Throughput, x.Clients, x.Writes, x.Errors+x.SeqErrors, x.Elections)
		}
	}
	if len(r.Detection) > 0 {
		fmt.Fprintln(w, "\nc. agent failure detection: kill -9 of an agent -> GET /v1/agents (leader) shows alive: false")
		fmt.Fprintln(w, "agents\tkills\tmedian\tmax\tsamples")
		for _, d := range r.Detection {
			var all []string
			for _, s := range d.Detected.All {
				all = append(all, s.String())
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", d.Settings, d.Kills, d.Detected.Median, d.Detected.Max, strings.Join(all, " "))
		}
	}
	w.Flush()
	for _, f := range r.Failover {
		var e, a []string
		for i := range f.Elected.All {
			e = append(e, f.Elected.All[i].String())
			a = append(a, f.Accepted.All[i].String())
		}
		fmt.Fprintf(out, "failover %s, each kill: new leader %s; write accepted %s\n", f.RaftTimeout, strings.Join(e, " "), strings.Join(a, " "))
		if len(f.Refusals) > 0 {
			var why []string
			for _, k := range slices.Sorted(maps.Keys(f.Refusals)) {
				why = append(why, fmt.Sprintf("%s x%d (first: %s)", k, f.Refusals[k], f.RefusalSamples[k]))
			}
			fmt.Fprintf(out, "  writes refused meanwhile: %s\n", strings.Join(why, "; "))
		}
	}
}
