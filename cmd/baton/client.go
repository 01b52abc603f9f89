package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/agent"
	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// defaultAddr is the coordinator address used when neither --addr nor
// $BATON_ADDR is set (https:// instead with a CA to trust).
const defaultAddr = "http://127.0.0.1:7400"

// requestTimeout bounds every API call except a log stream.
const requestTimeout = 30 * time.Second

// apiClient is a small typed client for the coordinator's HTTP API (see
// protocol/api.go), given one or more coordinators' addresses. It is safe
// for concurrent use.
//
// A request goes to the address that answered last (at first, the first
// one listed) and moves on to the next only where nothing was done:
// the address is down (the connection was never made), it answered that it
// cannot act now (not_leader, no_leader, catching_up, no_quorum), or what
// answered is not baton's API. A request that may have reached a
// coordinator with an unknown outcome (a timeout or a reset after it was
// sent, a 503 unavailable) is not sent again elsewhere, since a write could
// then be applied twice; reads (GET) are the exception, being harmless to
// repeat.
type apiClient struct {
	addrs []string
	// token is the ACL token's secret sent with every request ("" none).
	token   string
	http    *http.Client
	backoff time.Duration // wait between rounds of not_leader answers; notLeaderBackoff

	// mu guards last, the index in addrs of the address that answered
	// last: the first one tried next time.
	mu   sync.Mutex
	last int
}

// requestError is an error answer from the coordinator. Its message is the
// APIError's message alone, so the CLI prints `error: <message>`; errors.As
// with a *protocol.APIError target reaches the code.
type requestError struct {
	status int
	api    protocol.APIError
	// foreign is true when the body was not an APIError: something other
	// than baton's API answered (a proxy, or a server that is not a
	// coordinator).
	foreign bool
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

// resolveAddrs reads the coordinator addresses: flag, else $BATON_ADDR,
// else defaultAddr. Either is a comma-separated list of http://host:port,
// https://host:port or host:port (which gets an http:// scheme);
// duplicates are dropped.
func resolveAddrs(flag string) ([]string, error) {
	return resolveAddrsScheme(flag, "http")
}

// resolveAddrsScheme is resolveAddrs with scheme ("http" or "https") for
// host:port and the default address.
func resolveAddrsScheme(flag, scheme string) ([]string, error) {
	raw, from := strings.TrimSpace(flag), "--addr"
	if raw == "" {
		raw, from = strings.TrimSpace(os.Getenv("BATON_ADDR")), "$BATON_ADDR"
	}
	if raw == "" {
		raw = scheme + "://" + strings.TrimPrefix(defaultAddr, "http://")
	}
	var addrs []string
	for _, a := range strings.Split(raw, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if !strings.Contains(a, "://") {
			a = scheme + "://" + a
		}
		a = strings.TrimRight(a, "/")
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%s: %q is not a coordinator address; use http://host:port or host:port (https:// with TLS), several separated by commas", from, a)
		}
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s %q names no coordinator; use http://host:port or host:port, several separated by commas", from, raw)
	}
	return addrs, nil
}

// newAPIClient returns a client for the coordinators at addrs (already
// resolved by resolveAddrs), tried in that order. The HTTP client has no
// overall timeout because log streams last as long as the user wants; each
// call sets its own.
func newAPIClient(addrs ...string) *apiClient {
	return newAPIClientTLS(nil, addrs...)
}

// newAPIClientTLS is newAPIClient with tc (nil: Go's default) for https://
// addresses.
func newAPIClientTLS(tc *tls.Config, addrs ...string) *apiClient {
	tr := &http.Transport{
		TLSClientConfig:       tc,
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: requestTimeout,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
	}
	return &apiClient{addrs: addrs, http: &http.Client{Transport: tr}, backoff: notLeaderBackoff}
}

// dialTimeout bounds connecting to one coordinator; past it the next
// address is tried.
const dialTimeout = 5 * time.Second

// addrFlag is the --addr flag of every command that talks to the
// coordinators (serve, operator), and the client it makes: one per CLI
// invocation, so that it remembers which address answered.
type addrFlag struct {
	value string
	token string
	tls   tlsFlags
	cl    *apiClient
}

// register adds --addr, --token and the TLS flags to cmd and its
// subcommands.
func (a *addrFlag) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&a.value, "addr", "",
		"coordinator addresses, comma-separated, tried in order (default $BATON_ADDR, else "+defaultAddr+", https with a CA)")
	cmd.PersistentFlags().StringVar(&a.token, "token", "",
		"ACL token secret sent with every request (default $BATON_TOKEN)")
	cmd.PersistentFlags().StringVar(&a.tls.caCert, "ca-cert", "",
		"CA certificate to trust for https:// coordinators, the cluster's baton-ca.pem (default $BATON_CACERT); with it, host:port means https")
	cmd.PersistentFlags().StringVar(&a.tls.clientCert, "client-cert", "",
		"client certificate to present over https (default $BATON_CLIENT_CERT; optional)")
	cmd.PersistentFlags().StringVar(&a.tls.clientKey, "client-key", "",
		"key of --client-cert (default $BATON_CLIENT_KEY)")
}

// client returns the client for --addr (else $BATON_ADDR, else
// defaultAddr), made on the first call.
func (a *addrFlag) client() (*apiClient, error) {
	if a.cl != nil {
		return a.cl, nil
	}
	files := a.tls.files()
	tc, err := a.tls.config(files)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if tc != nil {
		scheme = "https"
	}
	addrs, err := resolveAddrsScheme(a.value, scheme)
	if err != nil {
		return nil, err
	}
	a.cl = newAPIClientTLS(tc, addrs...)
	a.cl.token = strings.TrimSpace(a.token)
	if a.cl.token == "" {
		a.cl.token = strings.TrimSpace(os.Getenv("BATON_TOKEN"))
	}
	return a.cl, nil
}

// Up creates a service (POST /v1/services).
func (c *apiClient) Up(ctx context.Context, req protocol.UpRequest) (*protocol.ServiceResponse, error) {
	var resp protocol.ServiceResponse
	if _, err := c.do(ctx, http.MethodPost, "/v1/services", nil, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Update adds a new version to service name (POST /v1/services/{name}/update).
func (c *apiClient) Update(ctx context.Context, name string, req protocol.UpdateRequest) (*protocol.ServiceResponse, error) {
	var resp protocol.ServiceResponse
	if _, err := c.do(ctx, http.MethodPost, "/v1/services/"+url.PathEscape(name)+"/update", nil, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Down shuts service name down (DELETE /v1/services/{name}).
func (c *apiClient) Down(ctx context.Context, name string) (*protocol.ServiceResponse, error) {
	var resp protocol.ServiceResponse
	if _, err := c.do(ctx, http.MethodDelete, "/v1/services/"+url.PathEscape(name), nil, nil, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Status returns the named services and their replicas, or all services
// when names is empty (GET /v1/status), with the answer's freshness
// headers. consistent asks the leader to confirm its leadership first, so
// that the answer holds every write acknowledged before it.
func (c *apiClient) Status(ctx context.Context, names []string, consistent bool) (*protocol.StatusResponse, *answerInfo, error) {
	q := url.Values{}
	for _, n := range names {
		q.Add("service", n)
	}
	if consistent {
		q.Set("consistent", "true")
	}
	var resp protocol.StatusResponse
	info, err := c.do(ctx, http.MethodGet, "/v1/status", q, nil, &resp)
	if err != nil {
		return nil, nil, err
	}
	return &resp, info, nil
}

// RaftPeers returns the Raft configuration as the server sent it (GET
// /v1/operator/raft/peers), checked to be a RaftPeersResponse.
func (c *apiClient) RaftPeers(ctx context.Context) (*protocol.RaftPeersResponse, json.RawMessage, error) {
	var raw json.RawMessage
	if _, err := c.do(ctx, http.MethodGet, "/v1/operator/raft/peers", nil, nil, &raw); err != nil {
		return nil, nil, err
	}
	var resp protocol.RaftPeersResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		return nil, nil, fmt.Errorf("unreadable list of Raft peers: %w", err)
	}
	return &resp, raw, nil
}

// RemovePeer removes server id from the Raft configuration (DELETE
// /v1/operator/raft/peers/{id}) and returns the id the server removed.
func (c *apiClient) RemovePeer(ctx context.Context, id string) (string, error) {
	var resp struct {
		Removed string `json:"removed"`
	}
	if _, err := c.do(ctx, http.MethodDelete, "/v1/operator/raft/peers/"+url.PathEscape(id), nil, nil, &resp); err != nil {
		return "", err
	}
	if resp.Removed == "" {
		resp.Removed = id
	}
	return resp.Removed, nil
}

// Members returns every node of the gossip pool as the server sent it (GET
// /v1/operator/members), checked to be a MembersResponse.
func (c *apiClient) Members(ctx context.Context) (*protocol.MembersResponse, json.RawMessage, error) {
	var raw json.RawMessage
	if _, err := c.do(ctx, http.MethodGet, "/v1/operator/members", nil, nil, &raw); err != nil {
		return nil, nil, err
	}
	var resp protocol.MembersResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		return nil, nil, fmt.Errorf("unreadable list of members: %w", err)
	}
	return &resp, raw, nil
}

// logsOptions says which part of a replica's log Logs asks for.
type logsOptions struct {
	// Follow keeps streaming what the replica writes after the log so far.
	Follow bool
	// Tail, from 1 to agent.MaxLogTail, starts at the last Tail lines;
	// 0 starts at the oldest line the agent kept.
	Tail int
}

// Logs copies replica id's log of service name to w, from the first
// coordinator that answers. With opts.Follow it keeps streaming until the
// coordinator ends the stream or ctx is cancelled; a cancelled ctx is a
// clean end (nil error).
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
	// No timeout: a followed stream lasts until the user stops it (the
	// transport still bounds the wait for the answer's headers).
	resp, addr, err := c.send(ctx, http.MethodGet, path, q, nil, 0)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("log stream from %s broke: %w", addr, err)
	}
	return nil
}

// notLeaderRetries and notLeaderBackoff bound the retries of a request
// that every coordinator refused, at least one with not_leader (during an
// election, or just after start) or catching_up (it is still replaying its
// log). Such a request was not applied, so retrying is safe. The wait is
// between rounds over all the addresses, not between addresses.
const (
	notLeaderRetries = 20
	notLeaderBackoff = 250 * time.Millisecond
)

// answerInfo is what an answer says about itself beside its body.
type answerInfo struct {
	// Addr is the address that answered.
	Addr   string
	Header http.Header
}

// do sends one JSON request and decodes a JSON answer into out (when not
// nil), trying the addresses as send does.
func (c *apiClient) do(ctx context.Context, method, path string, q url.Values, in, out any) (*answerInfo, error) {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = b
	}
	resp, addr, err := c.send(ctx, method, path, q, body, requestTimeout)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	info := &answerInfo{Addr: addr, Header: resp.Header}
	if out == nil {
		return info, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return nil, fmt.Errorf("unreadable answer from the coordinator at %s: %w", addr, err)
	}
	return info, nil
}

// send sends one request to the coordinators in turn and returns the first
// 2xx answer, with the address that gave it; the caller closes its body.
// timeout, when above 0, bounds each try, reading the body included; closing
// the body releases the try's timer.
//
// The rule for moving to the next address is in canMoveOn. Once every
// address refused, send tries them all again after c.backoff while any of
// them said not_leader or catching_up (up to notLeaderRetries rounds); then
// it reports every address's answer (allFailedError).
func (c *apiClient) send(ctx context.Context, method, path string, q url.Values, body []byte, timeout time.Duration) (*http.Response, string, error) {
	var tried []triedAddr
	for round := 0; ; round++ {
		tried = tried[:0]
		again := false
		for _, i := range c.order() {
			addr := c.addrs[i]
			resp, err := c.sendTo(ctx, addr, method, path, q, body, timeout)
			if err == nil {
				c.mu.Lock()
				c.last = i
				c.mu.Unlock()
				return resp, addr, nil
			}
			if ctx.Err() != nil || !canMoveOn(method, err) {
				return nil, addr, err
			}
			tried = append(tried, triedAddr{addr, err})
			again = again || hasCode(err, protocol.CodeNotLeader, protocol.CodeCatchingUp)
		}
		if !again || round >= notLeaderRetries {
			return nil, "", allFailedError(tried)
		}
		select {
		case <-ctx.Done():
			return nil, "", allFailedError(tried)
		case <-time.After(c.backoff):
		}
	}
}

// order returns the indexes of c.addrs in the order to try them: the one
// that answered last, then the others as listed.
func (c *apiClient) order() []int {
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	order := make([]int, 0, len(c.addrs))
	order = append(order, last)
	for i := range c.addrs {
		if i != last {
			order = append(order, i)
		}
	}
	return order
}

// sendTo sends one request to the coordinator at addr and returns its 2xx
// answer, or the error: an *unreachableError when no connection was made,
// a *requestError for a non-2xx answer (its body read and closed), a
// *transportError for anything else.
func (c *apiClient) sendTo(ctx context.Context, addr, method, path string, q url.Values, body []byte, timeout time.Duration) (*http.Response, error) {
	u := addr + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	cancel := context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("bad coordinator address %q: %w", addr, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set(protocol.HeaderToken, c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		cancel()
		if isDialError(err) {
			return nil, &unreachableError{addr: addr, err: unwrapURLError(err)}
		}
		if tlsutil.IsHandshakeError(err) || errors.Is(err, http.ErrSchemeMismatch) {
			return nil, &tlsError{addr: addr, err: err}
		}
		return nil, &transportError{addr: addr, err: err}
	}
	if resp.StatusCode/100 != 2 {
		defer cancel()
		defer resp.Body.Close()
		err := decodeError(resp)
		if isPlainToHTTPS(err) {
			return nil, &tlsError{addr: addr, err: fmt.Errorf("%w: %w", errPlainToHTTPS, err)}
		}
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelOnClose ends a try's context when its answer's body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// canMoveOn reports whether a request that failed with err at one address
// may be sent to the next: only when nothing was done where it went.
func canMoveOn(method string, err error) bool {
	var unreachable *unreachableError
	var tlsErr *tlsError
	if errors.As(err, &unreachable) || errors.As(err, &tlsErr) {
		// The connection was never made, or its TLS handshake failed
		// (or a plain request met an HTTPS port): the request reached
		// no handler.
		return true
	}
	var rerr *requestError
	if errors.As(err, &rerr) {
		if rerr.foreign {
			// A 404 or 502 that is not baton's API: a proxy with no
			// backend, or a server that is not (or no longer) a
			// coordinator. Other foreign answers may hide an outcome.
			return rerr.status == http.StatusNotFound || rerr.status == http.StatusBadGateway
		}
		// The coordinator refused before doing anything. (unavailable
		// is not among these: it says the outcome is unknown.)
		return hasCode(err, protocol.CodeNotLeader, protocol.CodeNoLeader, protocol.CodeCatchingUp, protocol.CodeNoQuorum)
	}
	// A timeout or a broken connection after the request was sent: a
	// write may have been applied, so only a read is repeated elsewhere.
	var terr *transportError
	return errors.As(err, &terr) && method == http.MethodGet
}

// hasCode reports whether err is a baton API error with one of codes.
func hasCode(err error, codes ...string) bool {
	var rerr *requestError
	return errors.As(err, &rerr) && !rerr.foreign && slices.Contains(codes, rerr.api.Code)
}

// isDialError reports whether err happened before the request went out:
// the address did not resolve, or no connection could be made (refused,
// no route, timed out).
func isDialError(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	return (errors.As(err, &opErr) && opErr.Op == "dial") || errors.As(err, &dnsErr)
}

// unreachableError: no connection could be made to a coordinator.
type unreachableError struct {
	addr string
	err  error
}

func (e *unreachableError) Error() string {
	if errors.Is(e.err, syscall.ECONNREFUSED) {
		return fmt.Sprintf("cannot reach the baton coordinator at %s (is it running? set $BATON_ADDR or --addr)", e.addr)
	}
	return fmt.Sprintf("cannot reach the baton coordinator at %s: %v (set $BATON_ADDR or --addr)", e.addr, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

// short says why, in a few words: "connection refused", "i/o timeout".
func (e *unreachableError) short() string {
	var errno syscall.Errno
	if errors.As(e.err, &errno) {
		return errno.Error()
	}
	var dnsErr *net.DNSError
	if errors.As(e.err, &dnsErr) {
		return dnsErr.Error()
	}
	var ne net.Error
	if errors.As(e.err, &ne) && ne.Timeout() {
		return "dial timeout"
	}
	return e.err.Error()
}

// transportError: a request failed after its connection was made, so it
// may have reached the coordinator.
type transportError struct {
	addr string
	err  error
}

func (e *transportError) Error() string {
	if errors.Is(e.err, context.DeadlineExceeded) {
		return fmt.Sprintf("the baton coordinator at %s did not answer within %s", e.addr, requestTimeout)
	}
	return fmt.Sprintf("request to the baton coordinator at %s failed: %v", e.addr, unwrapURLError(e.err))
}

func (e *transportError) Unwrap() error { return e.err }

// triedAddr is one address's failure in a round.
type triedAddr struct {
	addr string
	err  error
}

// allFailed is the error when every address failed: the most informative
// answer, then what each address did.
type allFailed struct {
	best  error
	tried []triedAddr
}

func (e *allFailed) Error() string {
	var b strings.Builder
	if rank(e.best) == 0 {
		b.WriteString("cannot reach any baton coordinator (are they running? set $BATON_ADDR or --addr)")
	} else {
		b.WriteString(e.best.Error())
	}
	b.WriteString(" [tried ")
	for i, t := range e.tried {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(t.addr + ": " + shortReason(t.err))
	}
	b.WriteString("]")
	return b.String()
}

func (e *allFailed) Unwrap() error { return e.best }

// allFailedError returns the error for a round in which every address
// failed. With one address it is that address's error alone.
func allFailedError(tried []triedAddr) error {
	if len(tried) == 1 {
		return tried[0].err
	}
	best := tried[0].err
	for _, t := range tried[1:] {
		if rank(t.err) > rank(best) {
			best = t.err
		}
	}
	return &allFailed{best: best, tried: slices.Clone(tried)}
}

// rank orders failures by how much they tell the user: a coordinator that
// says why it cannot act beats one that is not there.
func rank(err error) int {
	switch {
	case hasCode(err, protocol.CodeNoQuorum):
		return 5
	case hasCode(err, protocol.CodeNoLeader):
		return 4
	case hasCode(err, protocol.CodeNotLeader, protocol.CodeCatchingUp):
		return 3
	}
	var rerr *requestError
	var terr *transportError
	var tlsErr *tlsError
	switch {
	case errors.As(err, &rerr), errors.As(err, &tlsErr):
		return 2
	case errors.As(err, &terr):
		return 1
	}
	return 0
}

// shortReason says in a few words what one address did.
func shortReason(err error) string {
	var unreachable *unreachableError
	var rerr *requestError
	var terr *transportError
	var tlsErr *tlsError
	switch {
	case errors.As(err, &unreachable):
		return unreachable.short()
	case errors.As(err, &tlsErr):
		return tlsErr.short()
	case errors.As(err, &rerr) && rerr.foreign:
		return fmt.Sprintf("answered %d, not baton's API", rerr.status)
	case errors.As(err, &rerr):
		return rerr.api.Code
	case errors.As(err, &terr) && errors.Is(terr.err, context.DeadlineExceeded):
		return "no answer within " + requestTimeout.String()
	case errors.As(err, &terr):
		return unwrapURLError(terr.err).Error()
	}
	return err.Error()
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
	e.foreign = true
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
