package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-dev/baton/agent"
	"github.com/baton-dev/baton/protocol"
)

// defaultAddr is the coordinator address used when neither --addr nor
// $BATON_ADDR is set.
const defaultAddr = "http://127.0.0.1:7400"

// requestTimeout bounds every API call except a log stream.
const requestTimeout = 30 * time.Second

// apiClient is a small typed client for the coordinator's HTTP API (see
// protocol/api.go). It is safe for concurrent use.
type apiClient struct {
	base string
	http *http.Client
}

// requestError is an error answer from the coordinator. Its message is the
// APIError's message alone, so the CLI prints `error: <message>`; errors.As
// with a *protocol.APIError target reaches the code.
type requestError struct {
	status int
	api    protocol.APIError
}

func (e *requestError) Error() string {
	if e.api.Message != "" {
		return e.api.Message
	}
	if e.api.Code != "" {
		return e.api.Code
	}
	return fmt.Sprintf("the coordinator answered %d %s", e.status, http.StatusText(e.status))
}

func (e *requestError) Unwrap() error { return &e.api }

// resolveAddr picks the coordinator address: flag, else $BATON_ADDR, else
// defaultAddr. A bare host:port gets an http:// scheme.
func resolveAddr(flag string) string {
	addr := strings.TrimSpace(flag)
	if addr == "" {
		addr = strings.TrimSpace(os.Getenv("BATON_ADDR"))
	}
	if addr == "" {
		addr = defaultAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/")
}

// newAPIClient returns a client for the coordinator at addr (already
// resolved by resolveAddr). The HTTP client has no overall timeout because
// log streams last as long as the user wants; each call sets its own.
func newAPIClient(addr string) *apiClient {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: requestTimeout,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
	}
	return &apiClient{base: addr, http: &http.Client{Transport: tr}}
}

// Up creates a service (POST /v1/services).
func (c *apiClient) Up(ctx context.Context, req protocol.UpRequest) (*protocol.ServiceResponse, error) {
	var resp protocol.ServiceResponse
	if err := c.do(ctx, http.MethodPost, "/v1/services", nil, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Update adds a new version to service name (POST /v1/services/{name}/update).
func (c *apiClient) Update(ctx context.Context, name string, req protocol.UpdateRequest) (*protocol.ServiceResponse, error) {
	var resp protocol.ServiceResponse
	if err := c.do(ctx, http.MethodPost, "/v1/services/"+url.PathEscape(name)+"/update", nil, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Down shuts service name down (DELETE /v1/services/{name}).
func (c *apiClient) Down(ctx context.Context, name string) (*protocol.ServiceResponse, error) {
	var resp protocol.ServiceResponse
	if err := c.do(ctx, http.MethodDelete, "/v1/services/"+url.PathEscape(name), nil, nil, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Status returns the named services and their replicas, or all services
// when names is empty (GET /v1/status).
func (c *apiClient) Status(ctx context.Context, names []string) (*protocol.StatusResponse, error) {
	q := url.Values{}
	for _, n := range names {
		q.Add("service", n)
	}
	var resp protocol.StatusResponse
	if err := c.do(ctx, http.MethodGet, "/v1/status", q, nil, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// logsOptions says which part of a replica's log Logs asks for.
type logsOptions struct {
	// Follow keeps streaming what the replica writes after the log so far.
	Follow bool
	// Tail, from 1 to agent.MaxLogTail, starts at the last Tail lines;
	// 0 starts at the oldest line the agent kept.
	Tail int
}

// Logs copies replica id's log of service name to w. With opts.Follow it
// keeps streaming until the coordinator ends the stream or ctx is
// cancelled; a cancelled ctx is a clean end (nil error).
func (c *apiClient) Logs(ctx context.Context, name string, id int, opts logsOptions, w io.Writer) error {
	if opts.Tail < 0 || opts.Tail > agent.MaxLogTail {
		return fmt.Errorf("tail %d: want a number of lines from 1 to %d", opts.Tail, agent.MaxLogTail)
	}
	q := url.Values{}
	if opts.Follow {
		q.Set("follow", "1")
	} else {
		q.Set("follow", "0")
	}
	if opts.Tail > 0 {
		q.Set("tail", strconv.Itoa(opts.Tail))
	}
	path := "/v1/services/" + url.PathEscape(name) + "/replicas/" + strconv.Itoa(id) + "/logs"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return c.transportError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	_, err = io.Copy(w, resp.Body)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("log stream from %s broke: %w", c.base, err)
	}
	return nil
}

// notLeaderRetries and notLeaderBackoff bound the retries of a request
// that a coordinator refused with not_leader (during an election, or just
// after start) or catching_up (it is still replaying its log). Such a
// request was not applied, so retrying is safe.
const (
	notLeaderRetries = 20
	notLeaderBackoff = 250 * time.Millisecond
)

// do sends one JSON request and decodes a JSON answer into out, retrying
// while the coordinator answers not_leader.
func (c *apiClient) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	for attempt := 0; ; attempt++ {
		err := c.doOnce(ctx, method, path, q, in, out)
		var apiErr *protocol.APIError
		if attempt >= notLeaderRetries || !errors.As(err, &apiErr) ||
			(apiErr.Code != protocol.CodeNotLeader && apiErr.Code != protocol.CodeCatchingUp) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(notLeaderBackoff):
		}
	}
}

// doOnce sends one JSON request and decodes a JSON answer into out.
func (c *apiClient) doOnce(ctx context.Context, method, path string, q url.Values, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("bad coordinator address %q: %w", c.base, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return c.transportError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("unreadable answer from the coordinator at %s: %w", c.base, err)
	}
	return nil
}

// transportError turns a failed round trip into a message that says what
// to do.
func (c *apiClient) transportError(err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot reach the baton coordinator at %s (is it running? set $BATON_ADDR or --addr)", c.base)
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	if (errors.As(err, &opErr) && opErr.Op == "dial") || errors.As(err, &dnsErr) {
		return fmt.Errorf("cannot reach the baton coordinator at %s: %v (set $BATON_ADDR or --addr)", c.base, unwrapURLError(err))
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("the baton coordinator at %s did not answer within %s", c.base, requestTimeout)
	}
	return fmt.Errorf("request to the baton coordinator at %s failed: %v", c.base, unwrapURLError(err))
}

// unwrapURLError drops the `Get "http://...":` prefix that *url.Error adds.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// decodeError reads an APIError body; a body that is not one becomes a
// message with the HTTP status and the body's first line.
func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &requestError{status: resp.StatusCode}
	if err := json.Unmarshal(b, &e.api); err == nil && (e.api.Message != "" || e.api.Code != "") {
		return e
	}
	line, _, _ := bufio.NewReader(bytes.NewReader(b)).ReadLine()
	msg := strings.TrimSpace(string(line))
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e.api = protocol.APIError{
		Code:    codeForStatus(resp.StatusCode),
		Message: fmt.Sprintf("the coordinator answered %d: %s", resp.StatusCode, msg),
	}
	return e
}

// codeForStatus guesses an API error code for a response without a body.
func codeForStatus(status int) string {
	switch {
	case status == http.StatusNotFound:
		return protocol.CodeNotFound
	case status == http.StatusConflict:
		return protocol.CodeAlreadyExists
	case status == http.StatusServiceUnavailable:
		return protocol.CodeUnavailable
	case status >= 500:
		return protocol.CodeInternal
	default:
		return protocol.CodeBadRequest
	}
}
