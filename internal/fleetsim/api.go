package fleetsim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/baton-dev/baton/protocol"
)

var httpClient = &http.Client{Timeout: 30 * time.Second}

func httpGet(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	return resp.StatusCode, body, err
}

// ServiceYAML is the task of sim service name at version v: 100 replicas
// (or replicas) of one CPU each, a trivial run command nothing runs.
func ServiceYAML(name string, replicas, v int) string {
	return fmt.Sprintf(`name: %s
service:
  readiness_probe: /health
  replicas: %d
resources:
  cpus: 1
envs:
  SIM_VERSION: "%d"
run: "true"
`, name, replicas, v)
}

// Client talks to the coordinator's HTTP API.
type Client struct{ Base string }

func (c Client) post(ctx context.Context, path string, body any) error {
	buf, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+path, bytes.NewReader(buf))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, strings.TrimSpace(string(out)))
	}
	return nil
}

// Up creates a service.
func (c Client) Up(ctx context.Context, name, yaml string) error {
	return c.post(ctx, "/v1/services", protocol.UpRequest{Name: name, YAML: yaml, Filename: name + ".yaml"})
}

// Update adds a version to a service, blue_green.
func (c Client) Update(ctx context.Context, name, yaml string) error {
	return c.post(ctx, "/v1/services/"+name+"/update",
		protocol.UpdateRequest{YAML: yaml, Filename: name + ".yaml", Mode: protocol.UpdateBlueGreen})
}

func (c Client) getJSON(ctx context.Context, path string, v any) error {
	code, body, err := httpGet(ctx, c.Base+path)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, code, abbrev(string(body)))
	}
	return json.Unmarshal(body, v)
}

// Status is GET /v1/status.
func (c Client) Status(ctx context.Context) (*protocol.StatusResponse, error) {
	var s protocol.StatusResponse
	return &s, c.getJSON(ctx, "/v1/status", &s)
}

// Agents is GET /v1/agents.
func (c Client) Agents(ctx context.Context) ([]protocol.Agent, error) {
	var a []protocol.Agent
	return a, c.getJSON(ctx, "/v1/agents", &a)
}

// Metrics is GET /metrics, parsed.
func (c Client) Metrics(ctx context.Context) (Metrics, error) {
	code, body, err := httpGet(ctx, c.Base+"/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d", code)
	}
	return ParseMetrics(body), nil
}

func abbrev(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// Sample is one series of the Prometheus text format.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Metrics holds samples by metric name (with its _bucket, _sum, _count
// suffix as exposed).
type Metrics map[string][]Sample

// ParseMetrics reads the Prometheus text exposition format (what
// promhttp serves without negotiation); lines it does not understand are
// skipped.
func ParseMetrics(body []byte) Metrics {
	m := Metrics{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		labels := map[string]string{}
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			name, rest = line[:i], line[j+1:]
			parseLabels(line[i+1:j], labels)
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		m[name] = append(m[name], Sample{Labels: labels, Value: v})
	}
	return m
}

func parseLabels(s string, into map[string]string) {
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return
		}
		key := strings.TrimSpace(strings.TrimPrefix(s[:eq], ","))
		var val strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(s[i])
				}
				continue
			}
			val.WriteByte(s[i])
		}
		into[key] = val.String()
		s = strings.TrimPrefix(s[min(i+1, len(s)):], ",")
	}
}

// Sum adds the values of name's series whose labels include match.
func (m Metrics) Sum(name string, match map[string]string) float64 {
	var t float64
	for _, s := range m[name] {
		if labelsMatch(s.Labels, match) {
			t += s.Value
		}
	}
	return t
}

func labelsMatch(l, match map[string]string) bool {
	for k, v := range match {
		if l[k] != v {
			return false
		}
	}
	return true
}

// Buckets returns the cumulative bucket counts of histogram name (summed
// over series whose labels include match), by upper bound; nil if absent.
func (m Metrics) Buckets(name string, match map[string]string) map[float64]float64 {
	ss, ok := m[name+"_bucket"]
	if !ok {
		return nil
	}
	out := map[float64]float64{}
	for _, s := range ss {
		if !labelsMatch(s.Labels, match) {
			continue
		}
		le, err := strconv.ParseFloat(s.Labels["le"], 64)
		if err != nil {
			continue
		}
		out[le] += s.Value
	}
	return out
}

// HistDelta is a histogram's bucket counts over a window: after minus
// before (before may be nil).
func HistDelta(after, before map[float64]float64) map[float64]float64 {
	if after == nil {
		return nil
	}
	out := make(map[float64]float64, len(after))
	for le, n := range after {
		out[le] = n - before[le]
	}
	return out
}

// Quantile is Prometheus' histogram_quantile over cumulative buckets:
// linear interpolation inside the bucket holding the q-th observation
// (the lowest bucket starts at 0; a quantile in the +Inf bucket is the
// highest finite bound). It returns NaN without observations.
func Quantile(q float64, buckets map[float64]float64) float64 {
	les := make([]float64, 0, len(buckets))
	for le := range buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	if len(les) == 0 || !math.IsInf(les[len(les)-1], 1) {
		return math.NaN()
	}
	total := buckets[les[len(les)-1]]
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	prevLE, prevN := 0.0, 0.0
	for i, le := range les {
		n := buckets[le]
		if n >= rank {
			if math.IsInf(le, 1) {
				if i == 0 {
					return math.NaN()
				}
				return les[i-1]
			}
			if n == prevN {
				return le
			}
			return prevLE + (le-prevLE)*(rank-prevN)/(n-prevN)
		}
		prevLE, prevN = le, n
	}
	return les[len(les)-1]
}

// MaxBucket is the upper bound of the highest bucket with an observation
// (+Inf when the +Inf bucket has some beyond the last finite bound), or
// NaN without observations.
func MaxBucket(buckets map[float64]float64) float64 {
	les := make([]float64, 0, len(buckets))
	for le := range buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	prev := 0.0
	out := math.NaN()
	for _, le := range les {
		if buckets[le] > prev {
			out = le
		}
		prev = max(prev, buckets[le])
	}
	return out
}
