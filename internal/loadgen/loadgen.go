// Package loadgen puts a bounded load of concurrent requests on an endpoint
// and records, for each request, when it started and ended and which
// version and replica served it (from the LB's X-Baton-* headers). The
// end-to-end tests and the demo use it to prove that no request failed and
// that the flip was clean.
package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// Config bounds a load run. Every field has a default.
type Config struct {
	// URL is requested with GET.
	URL string
	// Workers is the number of concurrent clients. Default 8.
	Workers int
	// Pause is each worker's wait between requests. Default 5ms.
	Pause time.Duration
	// MaxRequests stops the run after this many requests. Default 500000.
	MaxRequests int
	// MaxDuration stops the run after this long. Default 10m.
	MaxDuration time.Duration
	// Timeout bounds one request. Default 10s.
	Timeout time.Duration
	// Served, if set, counts successful requests as they happen, so a
	// caller can wait for traffic without sleeping.
	Served *atomic.Int64
}

// Result is one request's outcome.
type Result struct {
	Start, End time.Time
	Status     int    // HTTP status; 0 on a transport error
	Version    int    // serving version, 0 if unknown
	Replica    int    // serving replica id, 0 if unknown
	Err        string // transport error or unexpected status
}

// Failed reports whether the request did not get a 200.
func (r Result) Failed() bool { return r.Err != "" || r.Status != http.StatusOK }

// Run sends requests until ctx ends or a bound is reached and returns every
// result, ordered by start time.
func Run(ctx context.Context, cfg Config) []Result {
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Pause <= 0 {
		cfg.Pause = 5 * time.Millisecond
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = 500000
	}
	if cfg.MaxDuration <= 0 {
		cfg.MaxDuration = 10 * time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxDuration)
	defer cancel()
	client := &http.Client{
		Timeout:   cfg.Timeout,
		Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Workers, DisableCompression: true},
	}
	defer client.CloseIdleConnections()

	var (
		mu      sync.Mutex
		results []Result
		wg      sync.WaitGroup
	)
	budget := make(chan struct{}, cfg.MaxRequests)
	for i := 0; i < cfg.MaxRequests; i++ {
		budget <- struct{}{}
	}
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []Result
			defer func() {
				mu.Lock()
				results = append(results, mine...)
				mu.Unlock()
			}()
			for {
				select {
				case <-ctx.Done():
					return
				case <-budget:
				default:
					return
				}
				r := once(ctx, client, cfg.URL)
				mine = append(mine, r)
				if cfg.Served != nil && !r.Failed() {
					cfg.Served.Add(1)
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(cfg.Pause):
				}
			}
		}()
	}
	wg.Wait()
	sort.Slice(results, func(i, j int) bool { return results[i].Start.Before(results[j].Start) })
	return results
}

func once(ctx context.Context, client *http.Client, url string) Result {
	r := Result{Start: time.Now()}
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, url, nil)
	if err != nil {
		r.Err = err.Error()
		r.End = time.Now()
		return r
	}
	resp, err := client.Do(req)
	if err != nil {
		r.Err = err.Error()
		r.End = time.Now()
		return r
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	r.End = time.Now()
	r.Status = resp.StatusCode
	r.Version, _ = strconv.Atoi(resp.Header.Get(protocol.HeaderVersion))
	r.Replica, _ = strconv.Atoi(resp.Header.Get(protocol.HeaderReplica))
	switch {
	case err != nil:
		r.Err = "reading body: " + err.Error()
	case resp.StatusCode != http.StatusOK:
		r.Err = fmt.Sprintf("status %d", resp.StatusCode)
	}
	return r
}

// Summary is what a run shows about an update.
type Summary struct {
	Sent, Failed int
	// ByVersion counts successful requests per serving version.
	ByVersion map[int]int
	// FirstServed is when the first response from each version ended.
	FirstServed map[int]time.Time
	// LastServed is when the last response from each version ended.
	LastServed map[int]time.Time
	// StaleAfterFlip counts requests that started after the first response
	// from a version and were served by an older version.
	StaleAfterFlip int
	// FirstErrors holds up to five failures, for the report.
	FirstErrors []string
}

// Summarize computes a Summary from results ordered by start.
func Summarize(results []Result) Summary {
	s := Summary{ByVersion: map[int]int{}, FirstServed: map[int]time.Time{}, LastServed: map[int]time.Time{}}
	for _, r := range results {
		s.Sent++
		if r.Failed() {
			s.Failed++
			if len(s.FirstErrors) < 5 {
				s.FirstErrors = append(s.FirstErrors, fmt.Sprintf("%s: %s", r.Start.Format("15:04:05.000"), r.Err))
			}
			continue
		}
		s.ByVersion[r.Version]++
		if f, ok := s.FirstServed[r.Version]; !ok || r.End.Before(f) {
			s.FirstServed[r.Version] = r.End
		}
		if r.End.After(s.LastServed[r.Version]) {
			s.LastServed[r.Version] = r.End
		}
	}
	for _, r := range results {
		if r.Failed() {
			continue
		}
		for v, first := range s.FirstServed {
			if v > r.Version && r.Start.After(first) {
				s.StaleAfterFlip++
				break
			}
		}
	}
	return s
}
