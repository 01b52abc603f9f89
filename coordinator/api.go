package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/baton-dev/baton/protocol"
)

// maxRequestBytes bounds API request bodies (a task YAML is a few KB).
const maxRequestBytes = 4 << 20

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	const (
		read, deploy, operator, management = protocol.PolicyRead, protocol.PolicyDeploy, protocol.PolicyOperator, protocol.PolicyManagement
	)
	mux.HandleFunc("POST /v1/services", s.write(s.authz(deploy, s.handleUp)))
	mux.HandleFunc("POST /v1/services/{name}/update", s.write(s.authz(deploy, s.handleUpdate)))
	mux.HandleFunc("DELETE /v1/services/{name}", s.write(s.authz(deploy, s.handleDown)))
	mux.HandleFunc("GET /v1/status", s.read(s.authz(read, s.handleStatus)))
	mux.HandleFunc("GET /v1/services/{name}/replicas/{id}/logs", s.authz(read, s.newAgentLogs().handle))
	mux.HandleFunc("GET /v1/agents", s.read(s.authz(read, s.handleAgents)))
	// The operator's peer list is also how a coordinator that waits to
	// bootstrap asks the others whether a cluster exists: it needs no
	// token.
	mux.HandleFunc("GET /v1/operator/raft/peers", s.read(s.handleRaftPeers))
	mux.HandleFunc("DELETE /v1/operator/raft/peers/{id}", s.write(s.authz(operator, s.handleRemovePeer)))
	mux.HandleFunc("GET /v1/operator/members", s.read(s.authz(operator, s.handleMembers)))
	mux.HandleFunc("POST /v1/acl/bootstrap", s.write(s.handleACLBootstrap))
	mux.HandleFunc("POST /v1/acl/tokens", s.write(s.authz(management, s.handleACLTokenCreate)))
	mux.HandleFunc("GET /v1/acl/tokens", s.read(s.authz(management, s.handleACLTokenList)))
	mux.HandleFunc("DELETE /v1/acl/tokens/{id}", s.write(s.authz(management, s.handleACLTokenRevoke)))
	s.bundleRoutes(mux)
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}))
	id := s.cfg.NodeID
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(protocol.HeaderServedBy, id)
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, code, protocol.APIError{Code: errCode, Message: msg})
}

// writeApplyError maps a command's error to an HTTP error.
func writeApplyError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrServiceNotFound):
		writeError(w, http.StatusNotFound, protocol.CodeNotFound, err.Error())
	case errors.Is(err, ErrServiceExists):
		writeError(w, http.StatusConflict, protocol.CodeAlreadyExists,
			err.Error()+"; use `baton serve update` to change it or `baton serve down` first")
	case errors.Is(err, ErrServiceDeleting):
		writeError(w, http.StatusConflict, protocol.CodeBadRequest, err.Error()+"; wait until it is gone")
	case errors.Is(err, ErrOutcomeUnknown):
		writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable,
			err.Error()+"; check `baton serve status` before retrying")
	case errors.Is(err, ErrBundleNotFound):
		writeError(w, http.StatusBadRequest, protocol.CodeInvalidSpec, err.Error())
	case errors.Is(err, ErrBundleInUse):
		writeError(w, http.StatusConflict, protocol.CodeBadRequest, err.Error())
	case errors.Is(err, ErrNotLeader):
		writeError(w, http.StatusServiceUnavailable, protocol.CodeNotLeader,
			"this coordinator is not the leader ("+err.Error()+"); retry shortly")
	default:
		writeError(w, http.StatusInternalServerError, protocol.CodeInternal, err.Error())
	}
}

// decodeBody decodes a request's JSON body into v: one JSON object of v's
// shape with no unknown fields and nothing after it, at most
// maxRequestBytes. On failure it writes a 400 naming the request and what
// was wrong.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	what := r.Method + " " + r.URL.Path
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		err = protocol.ExpectEOF(dec)
	}
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			err = fmt.Errorf("the body is over %d bytes", maxRequestBytes)
		}
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, what+": request body: "+err.Error())
		return false
	}
	return true
}

// checkRequestFile checks the filename and base_dir of an up or update
// request: the file name appears in every error message, and base_dir
// resolves a relative workdir.
func checkRequestFile(filename, baseDir string) error {
	if len(filename) > 1024 || strings.ContainsAny(filename, "\x00\r\n") {
		return errors.New("filename: must be a file name of at most 1024 bytes on one line")
	}
	if baseDir != "" && (!filepath.IsAbs(baseDir) || len(baseDir) > 4096 || strings.ContainsRune(baseDir, 0)) {
		return fmt.Errorf("base_dir: %q is not an absolute directory path (the CLI sends its working directory)", abbreviate(baseDir))
	}
	return nil
}

// abbreviate shortens s for an error message.
func abbreviate(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + fmt.Sprintf("...(%d bytes)", len(s))
}

// parseSpec parses a task YAML sent by the CLI, writing the error response
// itself on failure.
func parseSpec(w http.ResponseWriter, r *http.Request, filename, text, baseDir string, envs, secrets map[string]string) (*protocol.TaskSpec, bool) {
	if err := checkRequestFile(filename, baseDir); err != nil {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, r.Method+" "+r.URL.Path+": request body: "+err.Error())
		return nil, false
	}
	filename = taskFilename(filename)
	spec, err := protocol.ParseTaskWithOverrides(filename, []byte(text), envs, secrets)
	if err != nil {
		writeError(w, http.StatusBadRequest, protocol.CodeInvalidSpec, err.Error())
		return nil, false
	}
	if baseDir != "" {
		spec.ResolveWorkdir(baseDir)
	}
	// What Raft stores and agents receive: the parser bounded the file and
	// the envs, and base_dir was bounded above; check the whole anyway.
	if b, err := json.Marshal(spec); err != nil || len(b) > protocol.MaxSpecBytes {
		writeError(w, http.StatusBadRequest, protocol.CodeInvalidSpec, fmt.Sprintf(
			"%s: the task with its envs is %d bytes as stored; at most %d (keep large values in files in workdir)", filename, len(b), protocol.MaxSpecBytes))
		return nil, false
	}
	if err := spec.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, protocol.CodeInvalidSpec, filename+": "+err.Error())
		return nil, false
	}
	if p := spec.Service.ReplicaPolicy; p.MaxReplicas > p.MinReplicas {
		spec.Warnings = append(spec.Warnings, fmt.Sprintf(
			"%s: service.replica_policy: autoscaling is not implemented yet; baton runs min_replicas (%d) replicas",
			filename, p.MinReplicas))
	}
	return spec, true
}

// generateServiceName names a service the user did not name, as SkyServe
// does: service-xxxx, avoiding the names in use.
func (s *Server) generateServiceName() string {
	var name string
	for range 100 {
		name = fmt.Sprintf("service-%04x", rand.IntN(1<<16))
		taken := false
		s.fsm.Read(func(st *State) { _, taken = st.Services[name] })
		if !taken {
			break
		}
	}
	return name
}

// taskFilename is the name errors give a task file; the API accepts
// requests that send none.
func taskFilename(name string) string {
	if name == "" {
		return "task.yaml"
	}
	return name
}

func (s *Server) endpoint(port int) string {
	return fmt.Sprintf("%s:%d", s.cfg.LBHost, port)
}

func (s *Server) handleUp(w http.ResponseWriter, r *http.Request) {
	if !s.awaitCaughtUp(w, r) {
		return
	}
	var req protocol.UpRequest
	if !decodeBody(w, r, &req) {
		return
	}
	spec, ok := parseSpec(w, r, req.Filename, req.YAML, req.BaseDir, req.Envs, req.Secrets)
	if !ok || !s.useBundle(w, spec, req.Bundle, req.Filename) {
		return
	}
	fromTask := req.Name == "" && spec.Name != ""
	if req.Name == "" {
		req.Name = spec.Name
	}
	if req.Name == "" {
		req.Name = s.generateServiceName()
	}
	if err := protocol.ValidateServiceName(req.Name); err != nil {
		if fromTask {
			err = protocol.TaskNameError(taskFilename(req.Filename), spec, err)
		}
		writeError(w, http.StatusBadRequest, protocol.CodeInvalidName, err.Error())
		return
	}
	if !mayTouch(w, r, req.Name) {
		return
	}
	res, _, err := s.raftApply(CmdCreateService, CreateServiceCmd{
		Name: req.Name, Spec: *spec, YAML: req.YAML, FirstPort: s.cfg.FirstLBPort, At: time.Now(),
	})
	if err != nil {
		s.applyError(w, r, err)
		return
	}
	svc := res.(protocol.Service)
	s.log.Info("service created", "service", svc.Name, "port", svc.Port)
	writeJSON(w, http.StatusCreated, protocol.ServiceResponse{
		Name: svc.Name, Version: svc.LatestVersion, Endpoint: s.endpoint(svc.Port), Warnings: spec.Warnings,
	})
}

func (s *Server) handleUpdate(w http.ResponseWriter, r *http.Request) {
	if !s.awaitCaughtUp(w, r) {
		return
	}
	name := r.PathValue("name")
	if !mayTouch(w, r, name) {
		return
	}
	var req protocol.UpdateRequest
	if !decodeBody(w, r, &req) {
		return
	}
	mode := req.Mode
	if mode == "" {
		mode = protocol.UpdateBlueGreen
	}
	if mode != protocol.UpdateBlueGreen && mode != protocol.UpdateRolling {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest,
			fmt.Sprintf("update mode %q: use blue_green (the default) or rolling", mode))
		return
	}
	spec, ok := parseSpec(w, r, req.Filename, req.YAML, req.BaseDir, req.Envs, req.Secrets)
	if !ok || !s.useBundle(w, spec, req.Bundle, req.Filename) {
		return
	}
	// A replica may take its initial delay to become ready; the deadline
	// counts from there.
	progress := s.cfg.ProgressDeadline + time.Duration(spec.Service.ReadinessProbe.InitialDelaySeconds)*time.Second
	res, _, err := s.raftApply(CmdAddVersion, AddVersionCmd{
		Service: name, Spec: *spec, YAML: req.YAML, Mode: mode,
		ProgressSeconds: int(progress / time.Second), At: time.Now(),
	})
	if err != nil {
		s.applyError(w, r, err)
		return
	}
	svc := res.(protocol.Service)
	s.log.Info("service update started", "service", name, "version", svc.LatestVersion, "mode", mode)
	writeJSON(w, http.StatusOK, protocol.ServiceResponse{
		Name: name, Version: svc.LatestVersion, Endpoint: s.endpoint(svc.Port), Warnings: spec.Warnings,
	})
}

func (s *Server) handleDown(w http.ResponseWriter, r *http.Request) {
	if !s.awaitCaughtUp(w, r) {
		return
	}
	name := r.PathValue("name")
	if !mayTouch(w, r, name) {
		return
	}
	res, _, err := s.raftApply(CmdDeleteService, DeleteServiceCmd{Service: name, At: time.Now()})
	if err != nil {
		s.applyError(w, r, err)
		return
	}
	svc := res.(protocol.Service)
	s.log.Info("service shutting down", "service", name)
	writeJSON(w, http.StatusOK, protocol.ServiceResponse{
		Name: name, Version: svc.LatestVersion, Endpoint: s.endpoint(svc.Port),
	})
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	if !s.awaitCaughtUp(w, r) {
		return
	}
	names := r.URL.Query()["service"]
	var resp protocol.StatusResponse
	index, stale, _, _ := s.freshness(r)
	var missing []string
	s.fsm.Read(func(st *State) {
		resp = statusView(st.Indexed(), names, s.cfg.LBHost, s.cfg.MaxConsecutiveFailures, time.Now())
		for _, n := range names {
			if _, ok := st.Services[n]; !ok {
				missing = append(missing, n)
			}
		}
	})
	if len(missing) > 0 && len(resp.Services) == 0 {
		writeError(w, http.StatusNotFound, protocol.CodeNotFound, fmt.Sprintf("service %q not found", missing[0]))
		return
	}
	resp.Index, resp.Stale = index, stale
	if t := requestToken(r); t != nil && len(t.Services) > 0 {
		// A token limited to some services sees only those.
		resp.Services = slices.DeleteFunc(resp.Services, func(v protocol.ServiceStatusView) bool { return !tokenCovers(r, v.Name) })
		resp.Replicas = slices.DeleteFunc(resp.Replicas, func(v protocol.ReplicaStatusView) bool { return !tokenCovers(r, v.ServiceName) })
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleAgents(w http.ResponseWriter, r *http.Request) {
	if !s.awaitCaughtUp(w, r) {
		return
	}
	agents := []protocol.Agent{}
	s.fsm.Read(func(st *State) {
		for _, id := range st.AgentIDs() {
			agents = append(agents, *st.Agents[id])
		}
	})
	writeJSON(w, http.StatusOK, agents)
}

// handleHealth answers 200 "ok" when this coordinator can do its job: Raft
// has a leader, the FSM has replayed the log it started with, and the NATS
// connection is up; otherwise 503 "unhealthy" with the failing checks. The
// lines after the first say how each check stands.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	var problems, lines []string
	state := s.raft.raft.State()
	leaderAddr, leaderID := s.raft.raft.LeaderWithID()
	if leaderAddr == "" {
		problems = append(problems, "no raft leader")
		lines = append(lines, fmt.Sprintf("raft: %s, no leader known", state))
	} else {
		lines = append(lines, fmt.Sprintf("raft: %s, leader %s at %s", state, leaderID, leaderAddr))
	}
	if ok, applied, want := s.raft.caughtUp(); ok {
		lines = append(lines, fmt.Sprintf("state: caught up, applied index %d", applied))
	} else {
		problems = append(problems, "catching up")
		lines = append(lines, fmt.Sprintf("state: catching up, applied %d of %d log entries", applied, want))
	}
	if err := s.nc.Health(); err != nil {
		problems = append(problems, "nats down")
		lines = append(lines, "nats: "+err.Error())
	} else {
		lines = append(lines, "nats: connected to "+s.nc.ConnectedURL())
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	first := "ok"
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		first = "unhealthy: " + strings.Join(problems, ", ")
	}
	_, _ = io.WriteString(w, first+"\n"+strings.Join(lines, "\n")+"\n")
}

// catchUpWait is how long a read waits for a coordinator that just
// started to replay its log before answering 503 catching_up.
const catchUpWait = 3 * time.Second

// awaitCaughtUp returns true once the FSM has replayed the log this node
// started with, waiting up to catchUpWait. Otherwise it writes 503
// catching_up: a read must never answer with a state that looks real but
// is missing what was committed (zero services right after a restart).
func (s *Server) awaitCaughtUp(w http.ResponseWriter, r *http.Request) bool {
	deadline := time.Now().Add(catchUpWait)
	for {
		ok, applied, want := s.raft.caughtUp()
		if ok {
			return true
		}
		if time.Now().After(deadline) || r.Context().Err() != nil {
			writeError(w, http.StatusServiceUnavailable, protocol.CodeCatchingUp, fmt.Sprintf(
				"the coordinator is catching up: it has applied %d of the %d Raft log entries it started with; retry shortly", applied, want))
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
