package coordinator

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// statusView builds `serve status` from the state. names filters services
// (all when empty); lbHost is the host shown in endpoints; a service whose
// active version has maxFailures failures in a row shows FAILED.
func statusView(st *State, names []string, lbHost string, maxFailures int, now time.Time) protocol.StatusResponse {
	out := protocol.StatusResponse{Services: []protocol.ServiceStatusView{}, Replicas: []protocol.ReplicaStatusView{}}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for _, name := range st.ServiceNames() {
		if len(want) > 0 && !want[name] {
			continue
		}
		svc := st.Services[name]
		reps := st.ServiceReplicas(name)
		ready, total := 0, 0
		for _, r := range reps {
			if r.Status == protocol.ReplicaReady {
				ready++
			}
			if !r.Status.IsFailed() {
				total++
			}
		}
		status, reason := serviceStatus(st, svc, reps, maxFailures)
		uptime := int64(0)
		if !svc.CreatedAt.IsZero() {
			uptime = int64(now.Sub(svc.CreatedAt) / time.Second)
		}
		out.Services = append(out.Services, protocol.ServiceStatusView{
			Name:           name,
			Version:        svc.LatestVersion,
			ActiveVersions: sortedInts(svc.ActiveVersions),
			UptimeSeconds:  uptime,
			Status:         status,
			ReadyReplicas:  ready,
			TotalReplicas:  total,
			Endpoint:       net.JoinHostPort(lbHost, strconv.Itoa(svc.Port)),
			Reason:         reason,
		})
		for _, r := range reps {
			region := "-"
			if a := st.Agents[r.AgentID]; a != nil && a.Region != "" {
				region = a.Region
			}
			out.Replicas = append(out.Replicas, protocol.ReplicaStatusView{
				ServiceName: name,
				ID:          r.ID,
				Version:     r.Version,
				Endpoint:    r.Endpoint,
				Agent:       r.AgentID,
				LaunchedAt:  r.LaunchedAt,
				Resources:   displayAllocation(st, r).Describe(r.AgentID),
				Status:      r.Status,
				Region:      region,
				Reason:      r.Reason,
			})
		}
	}
	return out
}

// serviceStatus derives a service's status from its replicas, as SkyServe
// names it: READY while an active version has a READY replica.
func serviceStatus(st *State, svc *protocol.Service, reps []*protocol.Replica, maxFailures int) (protocol.ServiceStatus, string) {
	if svc.Deleting {
		return protocol.ServiceShuttingDown, ""
	}
	var reason string
	if v := st.Version(svc.Name, svc.LatestVersion); v != nil && v.State == protocol.VersionFailed {
		reason = "version " + strconv.Itoa(v.Number) + " " + v.Reason
	}
	live := 0
	for _, r := range reps {
		if !svc.IsActive(r.Version) {
			continue
		}
		switch {
		case r.Status == protocol.ReplicaReady:
			return protocol.ServiceReady, reason
		case !r.Status.IsTerminal():
			live++
		}
	}
	for _, vn := range svc.ActiveVersions {
		if v := st.Version(svc.Name, vn); v != nil && v.Failures >= maxFailures {
			return protocol.ServiceFailed, fmt.Sprintf("%d replicas of version %d in a row failed before becoming ready; "+
				"baton keeps retrying with backoff (see `baton serve logs`)", v.Failures, vn)
		}
	}
	switch {
	case len(reps) == 0:
		return protocol.ServiceControllerInit, reason
	case live > 0:
		return protocol.ServiceReplicaInit, reason
	}
	return protocol.ServiceNoReplica, reason
}

// displayAllocation is what status shows for a replica's resources: what
// it reserved, with the whole machine's vCPUs when it asked for no CPUs (as
// SkyServe shows an instance's).
func displayAllocation(st *State, r *protocol.Replica) protocol.Allocation {
	a := r.Resources
	if a.CPUs == 0 {
		if agent := st.Agents[r.AgentID]; agent != nil {
			a.CPUs = agent.Capacity.CPUs
		}
	}
	return a
}
