package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/baton-dev/baton/protocol"
)

// logFollowPoll is how often a followed log is checked for new data.
const logFollowPoll = 100 * time.Millisecond

// routes is the agent's HTTP API:
//
//	GET /v1/replicas/{service}/{id}/logs[?follow=1]  text/plain log stream
//	GET /v1/status                                   AgentStatus (JSON)
//	GET /healthz                                     "ok"
//	GET /metrics                                     Prometheus
func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/replicas/{service}/{id}/logs", a.handleLogs)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.gather, promhttp.HandlerOpts{}))
	return mux
}

// writeError writes an APIError body.
func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(protocol.APIError{Code: code, Message: message})
}

// handleLogs streams a replica's log file. With follow=1 it keeps sending
// what is appended until the client goes away or the replica has ended.
// Replicas that ended (even forgotten ones) are served while their
// directory exists.
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
	key := protocol.ReplicaKey(service, id)
	f, err := os.Open(filepath.Join(a.replicaDir(service, id), logFileName))
	if errors.Is(err, fs.ErrNotExist) {
		writeError(w, http.StatusNotFound, protocol.CodeNotFound,
			fmt.Sprintf("replica %s has no logs on agent %s", key, a.cfg.ID))
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, protocol.CodeInternal, err.Error())
		return
	}
	defer f.Close()

	follow := req.URL.Query().Get("follow")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if follow == "" || follow == "0" || follow == "false" {
		_, _ = io.Copy(w, f)
		return
	}

	a.mu.Lock()
	r := a.replicas[key]
	a.mu.Unlock()
	var done <-chan struct{} = closedChan
	if r != nil {
		done = r.done
	}
	rc := http.NewResponseController(w)
	t := time.NewTicker(logFollowPoll)
	defer t.Stop()
	for {
		if _, err := io.Copy(w, f); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-done:
			_, _ = io.Copy(w, f) // what was written before the end
			return
		case <-req.Context().Done():
			return
		case <-t.C:
		}
	}
}
