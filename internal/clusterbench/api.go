package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// benchTask is every service the benchmark creates: one replica, which
// stays PENDING where no agent runs.
const benchTask = "service:\n  replicas: 1\nrun: sleep 3600\n"

// client carries the benchmark's API calls, keeping connections to every
// coordinator open.
var client = &http.Client{
	Timeout: 15 * time.Second,
	Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	},
}

// serviceSeq numbers the services: every write takes a fresh name.
var serviceSeq atomic.Int64

func freshName() string { return fmt.Sprintf("bench-%d", serviceSeq.Add(1)) }

// up sends one POST /v1/services with a fresh name to api (host:port) and
// returns nil if it was accepted (201).
func up(ctx context.Context, api string) error {
	body, _ := json.Marshal(protocol.UpRequest{Name: freshName(), YAML: benchTask, Filename: "bench.yaml"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+api+"/v1/services", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusCreated {
		re := &refusedError{api: api, status: resp.StatusCode, msg: string(bytes.TrimSpace(msg))}
		var e protocol.APIError
		if json.Unmarshal(msg, &e) == nil && e.Code != "" {
			re.code, re.msg = e.Code, e.Message
		}
		return re
	}
	return nil
}

// refusedError is a write answered with another status than 201.
type refusedError struct {
	api, code, msg string
	status         int
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("POST /v1/services to %s: %d: %s", e.api, e.status, e.msg)
}

// getJSON decodes GET path from api (host:port), waiting at most timeout.
func getJSON(ctx context.Context, api, path string, timeout time.Duration, v any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+api+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s from %s: %s", path, api, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// stats are the median and max of a set of durations (and the
// percentiles the write figures use).
type stats struct {
	N      int      `json:"n"`
	Median Duration `json:"median"`
	P99    Duration `json:"p99"`
	Max    Duration `json:"max"`
	Min    Duration `json:"min"`
	// All are the samples, in the order taken.
	All []Duration `json:"all,omitempty"`
}

func summarize(ds []time.Duration, keepAll bool) stats {
	if len(ds) == 0 {
		return stats{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	st := stats{N: len(s), Median: Duration(percentile(s, 50)), P99: Duration(percentile(s, 99)),
		Max: Duration(s[len(s)-1]), Min: Duration(s[0])}
	if keepAll {
		for _, d := range ds {
			st.All = append(st.All, Duration(d))
		}
	}
	return st
}

// percentile of sorted samples, nearest rank (the median of an even count
// is the mean of the middle two).
func percentile(sorted []time.Duration, p int) time.Duration {
	n := len(sorted)
	if p == 50 && n%2 == 0 {
		return (sorted[n/2-1] + sorted[n/2]) / 2
	}
	rank := (p*n + 99) / 100 // ceil(p*n/100)
	return sorted[max(rank, 1)-1]
}

// Duration is a time.Duration that marshals as seconds (a JSON number).
type Duration time.Duration

// MarshalJSON writes the duration in seconds, to the microsecond.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf("%.6f", time.Duration(d).Seconds())), nil
}

// String rounds to the millisecond (or 10 µs under 10 ms).
func (d Duration) String() string {
	t := time.Duration(d)
	if t < 10*time.Millisecond {
		return t.Round(10 * time.Microsecond).String()
	}
	return t.Round(time.Millisecond).String()
}
