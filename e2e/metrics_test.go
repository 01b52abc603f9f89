package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/loadgen"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// scrape fetches a /metrics page.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s/metrics: %d", addr, resp.StatusCode)
	}
	return string(b)
}

// metricValue finds one sample by its exact name{labels} text.
func metricValue(page, series string) (float64, bool) {
	re := regexp.MustCompile("(?m)^" + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(page)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

func healthy(t *testing.T, addr string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET %s/healthz: %d", addr, resp.StatusCode)
	}
}

// TestDaemonsServeMetricsAndHealth: every daemon serves /healthz and
// /metrics with LB requests by service, version and code, replica counts
// by status and the Raft state.
func TestDaemonsServeMetricsAndHealth(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 2}, agentOpts{cpus: 2})
	c.mustCLI("serve", "up", "examples/http_server/task.yaml", "-n", "web", "-y")
	st := c.waitReady("web", 1, 2, 60*time.Second)
	endpoint := service(st, "web").Endpoint
	res := loadgen.Run(context.Background(), loadgen.Config{URL: "http://" + endpoint + "/", Workers: 2, MaxRequests: 40})
	if s := loadgen.Summarize(res); s.Failed != 0 {
		t.Fatalf("load: %+v", s)
	}
	lbAdmin := c.lbAdminAddr(t)
	var agents []protocol.Agent
	resp, err := http.Get("http://" + c.apiAddr + "/v1/agents")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&agents)
	resp.Body.Close()
	for _, addr := range []string{c.apiAddr, lbAdmin, agents[0].Address, agents[1].Address} {
		healthy(t, addr)
	}

	testutil.WaitFor(t, 10*time.Second, func() error {
		page := scrape(t, lbAdmin)
		if v, ok := metricValue(page, `baton_lb_requests_total{code="200",service="web",version="1"}`); !ok || v < 40 {
			return fmt.Errorf("LB request counter by service/version/code = %v (found %v)", v, ok)
		}
		return nil
	})
	// Gauges are set on the daemons' own ticks, so they may trail the API.
	testutil.WaitFor(t, 10*time.Second, func() error {
		coord := scrape(t, c.apiAddr)
		for series, want := range map[string]float64{
			`baton_coordinator_replicas{service="web",status="READY"}`: 2,
			`baton_coordinator_raft_state{state="Leader"}`:             1,
			`baton_coordinator_is_leader`:                              1,
		} {
			if v, ok := metricValue(coord, series); !ok || v != want {
				return fmt.Errorf("coordinator %s = %v (found %v), want %v", series, v, ok, want)
			}
		}
		return nil
	})
	testutil.WaitFor(t, 10*time.Second, func() error {
		total := 0.0
		for _, a := range agents {
			page := scrape(t, a.Address)
			v, _ := metricValue(page, fmt.Sprintf(`baton_agent_replicas{agent=%q,status="READY"}`, a.ID))
			total += v
		}
		if total != 2 {
			return fmt.Errorf("agents report %v READY replicas, want 2", total)
		}
		return nil
	})
}
