package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// noServicesMessage is printed by `baton serve status` when there is
// nothing to show.
const noServicesMessage = "No existing services."

// writeStatus prints st as the two tables of `baton serve status`
// (Services, then Service Replicas), followed by a Reasons section when a
// service or a waiting or failed replica carries a reason. now is the
// reference time for the LAUNCHED column.
func writeStatus(w io.Writer, st *protocol.StatusResponse, now time.Time) error {
	if len(st.Services) == 0 {
		_, err := fmt.Fprintln(w, noServicesMessage)
		return err
	}
	var b strings.Builder
	b.WriteString("Services\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tUPTIME\tSTATUS\tREPLICAS\tENDPOINT")
	for _, s := range st.Services {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d/%d\t%s\n",
			s.Name, s.Version, formatUptime(s.UptimeSeconds), orDash(string(s.Status)),
			s.ReadyReplicas, s.TotalReplicas, orDash(s.Endpoint))
	}
	tw.Flush()

	b.WriteString("\nService Replicas\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE_NAME\tID\tVERSION\tIP\tLAUNCHED\tRESOURCES\tSTATUS\tREGION")
	for _, r := range st.Replicas {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n",
			r.ServiceName, r.ID, r.Version, orDash(r.Endpoint), formatLaunched(r.LaunchedAt, now),
			orDash(r.Resources), orDash(string(r.Status)), orDash(r.Region))
	}
	tw.Flush()

	var reasons []string
	for _, s := range st.Services {
		if s.Reason != "" {
			reasons = append(reasons, fmt.Sprintf("  %s (%s): %s", s.Name, s.Status, oneLine(s.Reason)))
		}
	}
	for _, r := range st.Replicas {
		if r.Reason != "" && showReplicaReason(r.Status) {
			reasons = append(reasons, fmt.Sprintf("  %s replica %d (%s): %s", r.ServiceName, r.ID, r.Status, oneLine(r.Reason)))
		}
	}
	if len(reasons) > 0 {
		b.WriteString("\nReasons\n")
		b.WriteString(strings.Join(reasons, "\n"))
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// staleWarning returns the warning for a status answer that may miss
// recent writes (its stale field or header set), saying who answered and
// why from the freshness headers, like `this answer may be stale:
// coordinator c3 knows no leader (index 1234)`; "" for a fresh answer.
func staleWarning(st *protocol.StatusResponse, info *answerInfo) string {
	var h http.Header
	addr := ""
	if info != nil {
		h, addr = info.Header, info.Addr
	}
	if !st.Stale && !strings.EqualFold(h.Get(protocol.HeaderStale), "true") {
		return ""
	}
	who := "the coordinator at " + addr
	if id := h.Get(protocol.HeaderServedBy); id != "" {
		who = "coordinator " + id
	} else if addr == "" {
		who = "the coordinator"
	}
	index := st.Index
	if index == 0 {
		index, _ = strconv.ParseUint(h.Get(protocol.HeaderIndex), 10, 64)
	}
	var why string
	knowsLeader := !strings.EqualFold(h.Get(protocol.HeaderKnownLeader), "false")
	ms, err := strconv.ParseInt(h.Get(protocol.HeaderLastContact), 10, 64)
	switch {
	case !knowsLeader:
		why = who + " knows no leader"
	case err == nil && ms >= 0:
		why = fmt.Sprintf("%s last heard from the leader %s ago", who, formatContact(time.Duration(ms)*time.Millisecond))
	default:
		why = who + " has not heard from the leader lately"
	}
	msg := fmt.Sprintf("this answer may be stale: %s (index %d)", why, index)
	if knowsLeader {
		msg += "; --consistent asks the leader"
	}
	return msg
}

// formatContact renders a time since the leader's last contact: `850ms`,
// `12.3s`, `4m10s`.
func formatContact(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

// writePeers prints the Raft configuration as the table of `baton operator
// raft list-peers`.
func writePeers(w io.Writer, peers []protocol.RaftPeer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tSTATE\tVOTER")
	for _, p := range peers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\n", orDash(p.ID), orDash(p.Address), orDash(p.State), p.Voter)
	}
	return tw.Flush()
}

// writeMembers prints the gossip pool as the table of `baton operator
// members`.
func writeMembers(w io.Writer, members []protocol.Member) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tID\tADDRESS\tSTATUS\tAPI")
	for _, m := range members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n",
			orDash(m.Name), orDash(m.Role), orDash(m.ID), orDash(m.Address), orDash(m.Status), orDash(m.API))
	}
	return tw.Flush()
}

// showReplicaReason reports whether a replica's last reason is worth
// showing in its current state: it waits for an agent, is unhealthy or has
// failed. (A READY replica's old reason is stale.)
func showReplicaReason(s protocol.ReplicaStatus) bool {
	return s == protocol.ReplicaPending || s == protocol.ReplicaNotReady || s.IsFailed()
}

// formatUptime renders seconds like `41s`, `1m 41s`, `2h 3m 5s` or
// `1d 0h 0m 9s`; zero or less is `-`.
func formatUptime(secs int64) string {
	if secs <= 0 {
		return "-"
	}
	d, h, m, s := secs/86400, secs/3600%24, secs/60%60, secs%60
	switch {
	case d > 0:
		return fmt.Sprintf("%dd %dh %dm %ds", d, h, m, s)
	case h > 0:
		return fmt.Sprintf("%dh %dm %ds", h, m, s)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, s)
	default:
		return fmt.Sprintf("%ds", s)
	}
}

// formatLaunched renders how long before now t was, like `1 sec ago`,
// `12 secs ago`, `2 mins ago`, `1 hr ago` or `3 days ago`. A zero t is `-`;
// a t after now (clock skew) counts as now.
func formatLaunched(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return plural(int64(d/time.Second), "sec") + " ago"
	case d < time.Hour:
		return plural(int64(d/time.Minute), "min") + " ago"
	case d < 24*time.Hour:
		return plural(int64(d/time.Hour), "hr") + " ago"
	default:
		return plural(int64(d/(24*time.Hour)), "day") + " ago"
	}
}

// plural renders `1 sec` or `n secs`.
func plural(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.FormatInt(n, 10) + " " + unit + "s"
}

// orDash returns s, or `-` when s is empty, so no table cell is blank.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine joins a multi-line reason into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
