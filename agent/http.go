package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/baton-dev/baton/agent/replicalog"
	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// logFollowPoll is how often a followed log is checked for new data.
const logFollowPoll = 100 * time.Millisecond

// routes is the agent's HTTP API (with TLS, the first two are for
// coordinators only; see http_tls.go):
//
//	GET /v1/replicas/{service}/{id}/logs[?tail=N&follow=1]  text/plain log stream
//	GET /v1/status                                          AgentStatus (JSON)
//	GET /healthz                                            "ok"
//	GET /metrics                                            Prometheus
func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/replicas/{service}/{id}/logs", a.coordinatorsOnly(a.handleLogs))
	mux.HandleFunc("GET /v1/status", a.coordinatorsOnly(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.Status())
	}))
	mux.HandleFunc("GET /healthz", a.handleHealth)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.gather, promhttp.HandlerOpts{}))
	return mux
}

// handleHealth answers 200 "ok" while the agent is connected to NATS (it
// can hear its desired set and report), else 503 "unhealthy"; the lines
// after the first say how NATS stands and how replicas are isolated.
func (a *Agent) handleHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	a.pubMu.Lock()
	nc := a.nc
	a.pubMu.Unlock()
	first, natsLine := "ok", "nats: not started"
	pool := a.pool.Load()
	if nc == nil && pool != nil && a.cfg.NATSURL == "" {
		first, natsLine = "unhealthy: no coordinator known", "nats: waiting for a coordinator over gossip"
	}
	if nc != nil {
		if err := nc.Health(); err != nil {
			first, natsLine = "unhealthy: nats down", "nats: "+err.Error()
		} else {
			natsLine = "nats: connected to " + nc.ConnectedURL()
		}
	}
	if first != "ok" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	gossipLine := ""
	if pool != nil {
		gossipLine = pool.Health() + "\n"
	}
	_, _ = io.WriteString(w, first+"\n"+natsLine+"\n"+gossipLine+"isolation: "+a.iso.describe()+"\nreplica user: "+a.user.name+"\n")
}

// writeError writes an APIError body.
func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(protocol.APIError{Code: code, Message: message})
}

// MaxLogTail is the most lines a logs request may ask for with tail=N.
const MaxLogTail = 100_000

// handleLogs streams a replica's log files, oldest first: all of them, or
// the last N lines with tail=N. With follow=1 it then keeps sending what
// is appended (across rotations) until the client goes away or the
// replica has ended. Replicas that ended (even forgotten ones) are served
// while their directory exists.
func (a *Agent) handleLogs(w http.ResponseWriter, req *http.Request) {
	service := req.PathValue("service")
	id, err := strconv.Atoi(req.PathValue("id"))
	if err := protocol.ValidateServiceName(service); err != nil {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	}
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest,
			fmt.Sprintf("replica id %q: use a positive integer", req.PathValue("id")))
		return
	}
	q := req.URL.Query()
	tail := 0 // all
	if q.Has("tail") {
		if tail, err = strconv.Atoi(q.Get("tail")); err != nil || tail < 1 || tail > MaxLogTail {
			writeError(w, http.StatusBadRequest, protocol.CodeBadRequest,
				fmt.Sprintf("tail %q: use a number of lines from 1 to %d, like tail=100", q.Get("tail"), MaxLogTail))
			return
		}
	}
	key := protocol.ReplicaKey(service, id)
	dir := a.replicaDir(service, id)
	var r *replicalog.Reader
	if tail > 0 {
		r, err = replicalog.Tail(dir, tail)
	} else {
		r, err = replicalog.ReadAll(dir)
	}
	if errors.Is(err, fs.ErrNotExist) {
		writeError(w, http.StatusNotFound, protocol.CodeNotFound,
			fmt.Sprintf("replica %s has no logs on agent %s", key, a.cfg.ID))
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, protocol.CodeInternal, err.Error())
		return
	}
	defer r.Close()

	follow := q.Get("follow")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if follow == "" || follow == "0" || follow == "false" {
		_, _ = io.Copy(w, r)
		return
	}

	a.mu.Lock()
	rep := a.replicas[key]
	a.mu.Unlock()
	var done <-chan struct{} = closedChan
	if rep != nil {
		done = rep.done
	}
	rc := http.NewResponseController(w)
	t := time.NewTicker(logFollowPoll)
	defer t.Stop()
	for {
		// r reads up to what is written now, then, on the next tick, what
		// was appended since, in replica.log or in the files rotation
		// started after it.
		if _, err := io.Copy(w, r); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-done:
			_, _ = io.Copy(w, r) // what was written before the end
			return
		case <-req.Context().Done():
			return
		case <-t.C:
		}
	}
}

// newHTTPServer returns the server for routes(): plain HTTP, or with
// Config.TLS a TLSConfig with the agent's certificate that verifies a
// client's certificate when one is sent (Run then serves it over TLS, and
// routes lets only coordinators read logs and status). A plain HTTP
// request to it is answered 400 by net/http; handshake failures are
// logged at warn.
func (a *Agent) newHTTPServer() (*http.Server, error) {
	srv := &http.Server{
		Handler:           a.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
	}
	if a.cfg.TLS.Enabled() {
		tc, err := tlsutil.ServerConfig(a.cfg.TLS, false)
		if err != nil {
			return nil, fmt.Errorf("agent https: %w", err)
		}
		srv.TLSConfig = tc
	}
	return srv, nil
}
