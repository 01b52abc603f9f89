package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// Probe defaults, as SkyServe's.
const (
	defaultInitialDelaySeconds = 1200
	defaultProbeTimeoutSeconds = 15
)

// prober checks one replica's readiness: HTTP 200 from
// http://host:port<path> (GET, or POST with post_data as JSON).
type prober struct {
	url                 string
	method              string
	body                string
	headers             map[string]string
	timeout             time.Duration
	initialDelaySeconds int
	client              *http.Client
}

func newProber(host string, port int, rp protocol.ReadinessProbe) *prober {
	path := rp.Path
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	pr := &prober{
		url:                 "http://" + net.JoinHostPort(host, strconv.Itoa(port)) + path,
		method:              http.MethodGet,
		body:                rp.PostData,
		headers:             rp.Headers,
		timeout:             time.Duration(rp.TimeoutSeconds) * time.Second,
		initialDelaySeconds: rp.InitialDelaySeconds,
	}
	if rp.PostData != "" {
		pr.method = http.MethodPost
	}
	if pr.timeout <= 0 {
		pr.timeout = defaultProbeTimeoutSeconds * time.Second
	}
	// The parser fills in initial_delay_seconds (1200 when absent), so 0
	// here was asked for: a replica not ready one probe interval after its
	// start fails (see watch).
	if pr.initialDelaySeconds < 0 {
		pr.initialDelaySeconds = defaultInitialDelaySeconds
	}
	pr.client = &http.Client{
		// A fresh connection per probe: a probe must see a replica that
		// stopped accepting, not a kept-alive socket.
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		// Redirects are followed (up to 10), as SkyServe's probe does: a
		// framework answering /health with 307 to /health/ is ready when
		// the final answer is 200.
	}
	return pr
}

// probe sends one request; nil means HTTP 200. Closing cancel aborts it.
func (pr *prober) probe(cancel <-chan struct{}) error {
	ctx, stop := context.WithTimeout(context.Background(), pr.timeout)
	defer stop()
	go func() {
		select {
		case <-cancel:
			stop()
		case <-ctx.Done():
		}
	}()
	var body io.Reader
	if pr.method == http.MethodPost {
		body = strings.NewReader(pr.body)
	}
	req, err := http.NewRequestWithContext(ctx, pr.method, pr.url, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range pr.headers {
		req.Header.Set(k, v)
	}
	resp, err := pr.client.Do(req)
	if err != nil {
		return err // already names the method and URL
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe %s %s: HTTP %d", pr.method, pr.url, resp.StatusCode)
	}
	return nil
}
