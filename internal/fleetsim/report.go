package fleetsim

import (
	"fmt"
	"io"
	"strings"
)

// row is one line of the table: a label, a goal and how to show a result.
type row struct {
	label string
	goal  string
	cell  func(r *Result) string
}

var rows = []row{
	{"coordinator CPU at rest (heartbeats only)", "< 10% of a core (at 1,000 agents)", func(r *Result) string {
		if r.RestCPUPercent == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.1f%% of a core", *r.RestCPUPercent)
	}},
	{"reconcile pass, p99", "< 50 ms (at 1,000 agents)", func(r *Result) string {
		if r.PassP99Seconds == nil {
			return "n/a"
		}
		if r.PassOverflow {
			return fmt.Sprintf("%s (max bucket +Inf)", fmtSeconds(r.PassP99Seconds))
		}
		return fmt.Sprintf("%s (max bucket %s)", fmtSeconds(r.PassP99Seconds), fmtSeconds(r.PassMaxBucketSeconds))
	}},
	{"all replicas READY after submitting", "< 3 s (at 1,000 agents)", func(r *Result) string { return fmtSeconds(r.AllReadySeconds) }},
	{"blue_green update -> flip (last READY -> flip)", "last READY -> flip ≤ probe interval + 50 ms", func(r *Result) string {
		if r.UpdateToFlipSeconds == nil {
			return "n/a"
		}
		return fmt.Sprintf("%s (%s)", fmtSeconds(r.UpdateToFlipSeconds), fmtSeconds(r.LastReadyToFlipSeconds))
	}},
	{"coordinator RSS (max / at end)", "< 300 MiB, flat", func(r *Result) string {
		if r.RSSMaxBytes == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%s / %s", mib(r.RSSMaxBytes), mib(r.RSSEndBytes))
	}},
	{"restart (kill -9) -> full status served", "< 2 s", func(r *Result) string { return fmtSeconds(r.RestartSeconds) }},
	{"agent failure detected (kill -> lost)", "a few seconds", func(r *Result) string {
		if r.FailureDetectedSeconds == nil {
			return "n/a"
		}
		return fmt.Sprintf("%s (replaced and READY %s)", fmtSeconds(r.FailureDetectedSeconds), fmtSeconds(r.FailureReplacedSeconds))
	}},
	{"spec fetches (failed)", "one per version", func(r *Result) string {
		return fmt.Sprintf("%d (%d)", r.SpecFetches, r.SpecFailures)
	}},
}

func mib(b int64) string { return fmt.Sprintf("%d MiB", b>>20) }

// WriteTable prints the results of full scenarios as a Markdown table and
// a line for each pass-only one.
func WriteTable(w io.Writer, results []*Result) {
	var full, pass []*Result
	for _, r := range results {
		if r.PassOnly {
			pass = append(pass, r)
		} else {
			full = append(full, r)
		}
	}
	if len(full) > 0 {
		head := []string{"at N agents / R replicas"}
		for _, r := range full {
			head = append(head, fmt.Sprintf("%d / %d", r.Agents, r.Replicas))
		}
		head = append(head, "goal")
		lines := [][]string{head}
		for _, rw := range rows {
			line := []string{rw.label}
			for _, r := range full {
				line = append(line, rw.cell(r))
			}
			lines = append(lines, append(line, rw.goal))
		}
		widths := make([]int, len(head))
		for _, l := range lines {
			for i, c := range l {
				widths[i] = max(widths[i], len([]rune(c)))
			}
		}
		for n, l := range lines {
			var b strings.Builder
			for i, c := range l {
				fmt.Fprintf(&b, "| %s%s ", c, strings.Repeat(" ", widths[i]-len([]rune(c))))
			}
			fmt.Fprintln(w, b.String()+"|")
			if n == 0 {
				b.Reset()
				for i := range l {
					fmt.Fprintf(&b, "|%s", strings.Repeat("-", widths[i]+2))
				}
				fmt.Fprintln(w, b.String()+"|")
			}
		}
	}
	for _, r := range pass {
		fmt.Fprintf(w, "at %d agents / %d replicas the pass p99 is %s (goal < 100 ms)", r.Agents, r.Replicas, fmtSeconds(r.PassP99Seconds))
		if r.AllReadySeconds != nil {
			fmt.Fprintf(w, "; all READY %s after submitting", fmtSeconds(r.AllReadySeconds))
		}
		if r.RestCPUPercent != nil {
			fmt.Fprintf(w, "; CPU at rest %.1f%% of a core", *r.RestCPUPercent)
		}
		fmt.Fprintf(w, "; RSS max %s\n", mib(r.RSSMaxBytes))
	}
	for _, r := range results {
		for _, e := range r.Errors {
			fmt.Fprintf(w, "at %d agents: FAILED: %s\n", r.Agents, e)
		}
	}
}
