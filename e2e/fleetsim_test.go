package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/fleetsim"
	"github.com/baton-dev/baton/protocol"
)

// TestFleetSimSteadyState runs a coordinator process against 200 sim
// agents and 2 sim LBs with 20 services of 100 replicas: everything
// becomes READY, the LBs and agents agree with the coordinator, it stays
// that way, and a blue_green update completes. No timing is asserted.
func TestFleetSimSteadyState(t *testing.T) {
	const (
		agents   = 200
		services = 20
		total    = services * fleetsim.ReplicasPerService
	)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env, err := fleetsim.NewEnv(ctx, fleetsim.EnvConfig{
		Baton: batonBin, Dir: t.TempDir(), Agents: agents, LBs: 2, Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	if err := env.SubmitServices(ctx, services, fleetsim.ReplicasPerService); err != nil {
		t.Fatal(err)
	}
	if err := env.WaitAllReady(ctx, "every replica READY", total, 90*time.Second); err != nil {
		t.Fatal(err)
	}

	// The LBs and agents catch up with the coordinator.
	var st *protocol.StatusResponse
	var last error
	err = env.WaitFor(ctx, "LBs and agents agree with the coordinator", 30*time.Second, 250*time.Millisecond, func() (string, bool) {
		st, last = env.API.Status(ctx)
		if last == nil {
			last = checkFleet(env, st, total, nil)
		}
		return fmt.Sprint(last), last == nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := replicaStates(st)

	// ... and it stays that way.
	for i := range 5 {
		time.Sleep(time.Second)
		now, err := env.API.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkFleet(env, now, total, nil); err != nil {
			t.Fatalf("sample %d: %v", i+1, err)
		}
		if got := replicaStates(now); !maps.Equal(got, ids) {
			t.Fatalf("sample %d: replicas changed at rest:\n%s", i+1, diffStates(ids, got))
		}
		as, err := env.API.Agents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if !a.Alive {
				t.Fatalf("sample %d: agent %s lost at rest", i+1, a.ID)
			}
		}
		if len(as) != agents {
			t.Fatalf("sample %d: %d agents listed, want %d", i+1, len(as), agents)
		}
	}

	// A blue_green update of one service completes.
	name := fleetsim.ServiceName(1)
	if err := env.API.Update(ctx, name, fleetsim.ServiceYAML(name, fleetsim.ReplicasPerService, 2)); err != nil {
		t.Fatal(err)
	}
	err = env.WaitFor(ctx, "the update of "+name, 90*time.Second, 250*time.Millisecond, func() (string, bool) {
		st, last = env.API.Status(ctx)
		if last == nil {
			last = checkFleet(env, st, total, map[string]int{name: 2})
		}
		return fmt.Sprint(last), last == nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := env.Fleet.InvalidDesired.Load(); n != 0 {
		t.Errorf("%d desired sets were invalid", n)
	}
	if n := env.Fleet.Specs.Failures.Load(); n != 0 {
		t.Errorf("%d spec fetches failed", n)
	}
}

// checkFleet checks that every one of total replicas is READY in st; that
// each service has its 100 READY endpoints of the active version (the one
// in wantVersion, else 1) in its table at every sim LB, with distinct
// replica ids; and that every sim agent runs exactly the replicas st
// places on it.
func checkFleet(env *fleetsim.Env, st *protocol.StatusResponse, total int, wantVersion map[string]int) error {
	if len(st.Replicas) != total {
		return fmt.Errorf("%d replicas listed, want %d", len(st.Replicas), total)
	}
	byService := map[string]map[int]protocol.ReplicaStatusView{}
	byAgent := map[string]map[string]bool{}
	for _, r := range st.Replicas {
		if r.Status != protocol.ReplicaReady {
			return fmt.Errorf("replica %s/%d is %s", r.ServiceName, r.ID, r.Status)
		}
		if byService[r.ServiceName] == nil {
			byService[r.ServiceName] = map[int]protocol.ReplicaStatusView{}
		}
		byService[r.ServiceName][r.ID] = r
		if byAgent[r.Agent] == nil {
			byAgent[r.Agent] = map[string]bool{}
		}
		byAgent[r.Agent][protocol.ReplicaKey(r.ServiceName, r.ID)] = true
	}
	for _, s := range st.Services {
		v := 1
		if w, ok := wantVersion[s.Name]; ok {
			v = w
		}
		if !slices.Equal(s.ActiveVersions, []int{v}) {
			return fmt.Errorf("service %s: active versions %v, want [%d]", s.Name, s.ActiveVersions, v)
		}
		reps := byService[s.Name]
		if len(reps) != fleetsim.ReplicasPerService {
			return fmt.Errorf("service %s: %d replicas, want %d", s.Name, len(reps), fleetsim.ReplicasPerService)
		}
		for _, r := range reps {
			if r.Version != v {
				return fmt.Errorf("service %s: replica %d is of version %d, want %d", s.Name, r.ID, r.Version, v)
			}
		}
		for _, lb := range env.Fleet.LBs {
			tab, ok := lb.Table(s.Name)
			if !ok {
				return fmt.Errorf("%s: no table for %s", lb.ID(), s.Name)
			}
			if !slices.Equal(tab.ActiveVersions, []int{v}) {
				return fmt.Errorf("%s: table of %s routes to %v, want [%d]", lb.ID(), s.Name, tab.ActiveVersions, v)
			}
			if len(tab.Endpoints) != fleetsim.ReplicasPerService {
				return fmt.Errorf("%s: table of %s has %d endpoints, want %d", lb.ID(), s.Name, len(tab.Endpoints), fleetsim.ReplicasPerService)
			}
			seen := map[int]bool{}
			for _, ep := range tab.Endpoints {
				r, ok := reps[ep.ReplicaID]
				switch {
				case seen[ep.ReplicaID]:
					return fmt.Errorf("%s: table of %s lists replica %d twice", lb.ID(), s.Name, ep.ReplicaID)
				case !ok:
					return fmt.Errorf("%s: table of %s lists replica %d, which the coordinator does not", lb.ID(), s.Name, ep.ReplicaID)
				case ep.Version != v || ep.Address != r.Endpoint:
					return fmt.Errorf("%s: table of %s: replica %d version %d at %s, coordinator says version %d at %s",
						lb.ID(), s.Name, ep.ReplicaID, ep.Version, ep.Address, v, r.Endpoint)
				}
				seen[ep.ReplicaID] = true
			}
		}
	}
	if len(st.Services) != len(byService) {
		return fmt.Errorf("%d services listed, replicas of %d", len(st.Services), len(byService))
	}
	var errs []error
	for _, a := range env.Fleet.Agents {
		runs := a.Replicas()
		want := byAgent[a.ID()]
		for key := range runs {
			if !want[key] {
				errs = append(errs, fmt.Errorf("agent %s runs %s, which the coordinator places elsewhere or nowhere", a.ID(), key))
			}
		}
		for key := range want {
			if _, ok := runs[key]; !ok {
				errs = append(errs, fmt.Errorf("agent %s does not run %s", a.ID(), key))
			}
		}
		if len(errs) > 5 {
			break
		}
	}
	return errors.Join(errs...)
}

// replicaStates maps each replica (service/id) to its version, agent and
// status.
func replicaStates(st *protocol.StatusResponse) map[string]string {
	out := make(map[string]string, len(st.Replicas))
	for _, r := range st.Replicas {
		out[protocol.ReplicaKey(r.ServiceName, r.ID)] = fmt.Sprintf("v%d on %s %s", r.Version, r.Agent, r.Status)
	}
	return out
}

// diffStates lists (up to 10) differences between two replicaStates.
func diffStates(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			out = append(out, fmt.Sprintf("  %s: %s -> gone", k, v))
		} else if w != v {
			out = append(out, fmt.Sprintf("  %s: %s -> %s", k, v, w))
		}
	}
	for k, w := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("  %s: added, %s", k, w))
		}
	}
	slices.Sort(out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("  ... %d more", len(out)-10))
	}
	return fmt.Sprintf("%d differences:\n%s", len(out), strings.Join(out, "\n"))
}
