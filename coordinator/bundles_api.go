package coordinator

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// The bundle API (see bundles.go):
//
//	HEAD /v1/bundles/{digest}                  deploy       200 with the size if committed, else 404
//	PUT  /v1/bundles/{digest}                  deploy       the archive -> 201 BundleInfo (200 if committed before)
//	GET  /v1/bundles/{digest}                  deploy, or a coordinator's certificate: the archive
//	GET  /v1/bundles                           read         []BundleInfo with the versions naming each
//	PUT  /v1/internal/bundles/{digest}         coordinators only: a push of an upload
//	GET  /v1/internal/bundles/{digest}         coordinators only: a pull (repair)
//	POST /v1/internal/bundles/{digest}/commit  coordinators only: commit bundle_add (on the leader)
//
// An upload is handled on the coordinator that receives it: its body
// never goes through the write forwarding (which holds a request in
// memory), only the small commit does.

func (s *Server) bundleRoutes(mux *http.ServeMux) {
	const read, deploy = protocol.PolicyRead, protocol.PolicyDeploy
	mux.HandleFunc("GET /v1/bundles", s.read(s.authz(read, s.handleBundleList)))
	mux.HandleFunc("HEAD /v1/bundles/{digest}", s.authz(deploy, s.handleBundleHead))
	mux.HandleFunc("PUT /v1/bundles/{digest}", s.authz(deploy, s.handleBundleUpload))
	mux.HandleFunc("GET /v1/bundles/{digest}", s.coordinatorOr(deploy, s.handleBundleGet))
	mux.HandleFunc("PUT /v1/internal/bundles/{digest}", s.coordinatorOnly(s.handleBundleReceive))
	mux.HandleFunc("GET /v1/internal/bundles/{digest}", s.coordinatorOnly(s.handleBundleSend))
	mux.HandleFunc("POST /v1/internal/bundles/{digest}/commit", s.coordinatorOnly(s.write(s.handleBundleCommit)))
}

// peerIsCoordinator reports whether the request came over TLS with a
// verified certificate of a coordinator.
func peerIsCoordinator(r *http.Request) bool {
	role, _, ok := tlsutil.PeerRole(r.TLS)
	return ok && role == tlsutil.RoleCoordinator
}

// coordinatorOnly wraps a handler only other coordinators may call: with
// TLS, the caller must present a coordinator's certificate (the peer
// client does). Without TLS (dev, --insecure) nothing can tell a
// coordinator from anyone else, and the handler is open like the rest
// of such a cluster.
func (s *Server) coordinatorOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.TLS.Enabled() && !peerIsCoordinator(r) {
			writeError(w, http.StatusForbidden, protocol.CodePermissionDenied, fmt.Sprintf(
				"%s %s: only a coordinator may call this (with a certificate of role coordinator from the cluster's CA)", r.Method, r.URL.Path))
			return
		}
		h(w, r)
	}
}

// coordinatorOr lets a coordinator (by its certificate) call h, and
// anyone else with a token of policy need.
func (s *Server) coordinatorOr(need string, h http.HandlerFunc) http.HandlerFunc {
	withToken := s.authz(need, h)
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.TLS.Enabled() && peerIsCoordinator(r) {
			h(w, r)
			return
		}
		withToken(w, r)
	}
}

// requestDigest reads and checks the {digest} of a bundle path, writing
// a 400 when it is not one.
func requestDigest(w http.ResponseWriter, r *http.Request) (string, bool) {
	d := r.PathValue("digest")
	if err := protocol.ValidateBundleDigest(d); err != nil {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, r.Method+" "+r.URL.Path+": "+err.Error())
		return "", false
	}
	return d, true
}

// bundleRecord returns the committed bundle digest.
func (s *Server) bundleRecord(digest string) (rec BundleRecord, ok bool) {
	s.fsm.Read(func(st *State) { rec, ok = st.Bundles[digest] })
	return rec, ok
}

func bundleInfo(digest string, rec BundleRecord) protocol.BundleInfo {
	return protocol.BundleInfo{Digest: digest, Size: rec.Size, UploadedAt: rec.UploadedAt}
}

// handleBundleHead answers whether the cluster holds a bundle: 200 with
// its size (Content-Length and Baton-Bundle-Size) once committed, 404
// otherwise (then `serve up` uploads it).
func (s *Server) handleBundleHead(w http.ResponseWriter, r *http.Request) {
	digest, ok := requestDigest(w, r)
	if !ok || !s.awaitCaughtUp(w, r) {
		return
	}
	rec, ok := s.bundleRecord(digest)
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	size := strconv.FormatInt(rec.Size, 10)
	w.Header().Set("Content-Length", size)
	w.Header().Set(protocol.HeaderBundleSize, size)
	w.WriteHeader(http.StatusOK)
}

// uploadTooLarge is the 413 message of an upload past the limit.
func uploadTooLarge(size int64) string {
	what := "the upload is over"
	if size > 0 {
		what = fmt.Sprintf("the upload is %d bytes; at most", size)
	}
	return fmt.Sprintf("%s %d bytes (%d MiB) may be uploaded: keep data and models out of the workdir (list them in .skyignore) and fetch them in setup",
		what, int64(protocol.MaxBundleUploadBytes), int64(protocol.MaxBundleUploadBytes)>>20)
}

// storeUpload stores a request's body as bundle digest. On failure it
// writes the answer and returns a result label for the metrics.
func (s *Server) storeUpload(w http.ResponseWriter, r *http.Request, digest string) (int64, string) {
	if r.ContentLength > protocol.MaxBundleUploadBytes {
		writeError(w, http.StatusRequestEntityTooLarge, protocol.CodeBadRequest, uploadTooLarge(r.ContentLength))
		return 0, "too_large"
	}
	body := http.MaxBytesReader(w, r.Body, protocol.MaxBundleUploadBytes)
	n, err := s.bundles.store.write(digest, body, protocol.MaxBundleUploadBytes)
	var tooLarge *http.MaxBytesError
	var mismatch *digestMismatchError
	switch {
	case err == nil:
		return n, ""
	case errors.As(err, &tooLarge) || errors.Is(err, errBundleTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, protocol.CodeBadRequest, uploadTooLarge(0))
		return 0, "too_large"
	case errors.As(err, &mismatch):
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, mismatch.Error()+
			": the bytes changed on the way, or the digest was computed from other bytes; nothing was stored")
		return 0, "digest_mismatch"
	case errors.Is(err, errStoreFailed):
		s.log.Error("bundle not stored", "digest", digest, "error", err)
		writeError(w, http.StatusInternalServerError, protocol.CodeInternal, err.Error())
		return 0, "failed"
	}
	writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, fmt.Sprintf("reading the upload after %d bytes: %v", n, err))
	return 0, "failed"
}

// handleBundleUpload takes an upload: it stores the bundle here,
// replicates it to a majority of the voters and commits it (see
// bundles.go). A bundle committed before is answered 200 at once; a
// client that sends "Expect: 100-continue" then sends none of its bytes.
func (s *Server) handleBundleUpload(w http.ResponseWriter, r *http.Request) {
	digest, ok := requestDigest(w, r)
	if !ok || !s.awaitCaughtUp(w, r) {
		return
	}
	uploads := s.metrics.bundleUploads
	if rec, ok := s.bundleRecord(digest); ok {
		uploads.WithLabelValues("exists").Inc()
		writeJSON(w, http.StatusOK, bundleInfo(digest, rec))
		return
	}
	if msg := s.noQuorum(); msg != "" {
		uploads.WithLabelValues("no_majority").Inc()
		writeError(w, http.StatusServiceUnavailable, protocol.CodeNoQuorum, msg)
		return
	}
	start := time.Now()
	b := s.bundles
	unpin := b.store.pin(digest)
	defer unpin()
	size, failed := s.storeUpload(w, r, digest)
	if failed != "" {
		uploads.WithLabelValues(failed).Inc()
		return
	}
	stored := time.Since(start)
	rep := b.replicate(digest, size)
	if !rep.ok() {
		uploads.WithLabelValues("no_majority").Inc()
		msg := fmt.Sprintf("bundle %s is on %d of %d coordinators (%s); %d must hold it before it is committed",
			digest, len(rep.held), rep.voters, strings.Join(rep.held, ", "), rep.need)
		if rep.voters == 0 {
			msg = fmt.Sprintf("coordinator %s is not in a Raft cluster yet; retry shortly", s.cfg.NodeID)
		}
		if len(rep.problems) > 0 {
			msg += ": " + strings.Join(rep.problems, "; ")
		}
		writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, msg+"; retry once more coordinators are up")
		return
	}
	rec, err := b.commit(r.Context(), digest, size)
	if err != nil {
		uploads.WithLabelValues("failed").Inc()
		writeApplyError(w, err)
		return
	}
	uploads.WithLabelValues("created").Inc()
	s.log.Info("bundle uploaded", "digest", digest, "bytes", size, "held_by", strings.Join(rep.held, ","),
		"stored_in", stored.Round(time.Millisecond).String(), "took", time.Since(start).Round(time.Millisecond).String())
	writeJSON(w, http.StatusCreated, bundleInfo(digest, rec))
}

// handleBundleReceive stores a bundle another coordinator pushes (it took
// the upload). One held already is answered at once: with "Expect:
// 100-continue" (the pusher sends it) its bytes are never sent.
func (s *Server) handleBundleReceive(w http.ResponseWriter, r *http.Request) {
	digest, ok := requestDigest(w, r)
	if !ok {
		return
	}
	b := s.bundles
	unpin := b.store.pin(digest)
	defer unpin()
	if size, ok := b.store.stat(digest); ok {
		// Perhaps an orphan of an upload that failed before: the new
		// upload is about to commit it, and it must not be removed as old.
		b.store.touch(digest)
		writeJSON(w, http.StatusOK, protocol.BundleInfo{Digest: digest, Size: size})
		return
	}
	size, failed := s.storeUpload(w, r, digest)
	if failed != "" {
		s.metrics.bundleTransfers.WithLabelValues("receive", "error").Inc()
		return
	}
	s.metrics.bundleTransfers.WithLabelValues("receive", "ok").Inc()
	writeJSON(w, http.StatusCreated, protocol.BundleInfo{Digest: digest, Size: size})
}

// handleBundleCommit commits bundle_add for the coordinator that took an
// upload and replicated it (on the leader: the route forwards it there).
func (s *Server) handleBundleCommit(w http.ResponseWriter, r *http.Request) {
	digest, ok := requestDigest(w, r)
	if !ok {
		return
	}
	var req bundleCommitRequest
	if !decodeBody(w, r, &req) {
		return
	}
	res, _, err := s.raftApply(CmdBundleAdd, BundleAddCmd{Digest: digest, Size: req.Size, At: time.Now()})
	if err != nil {
		s.applyError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, bundleInfo(digest, res.(BundleRecord)))
}

// handleBundleGet sends a committed bundle, fetching it from another
// coordinator first if this one lacks it.
func (s *Server) handleBundleGet(w http.ResponseWriter, r *http.Request) {
	digest, ok := requestDigest(w, r)
	if !ok || !s.awaitCaughtUp(w, r) {
		return
	}
	if _, ok := s.bundleRecord(digest); !ok {
		writeError(w, http.StatusNotFound, protocol.CodeNotFound, (&bundleMissingError{digest: digest}).Error())
		return
	}
	if !s.mayReadBundle(w, r, digest) {
		return
	}
	if err := s.bundles.ensure(r.Context(), digest); err != nil {
		writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, fmt.Sprintf(
			"coordinator %s lacks bundle %s and could not fetch it: %v; retry shortly", s.cfg.NodeID, digest, err))
		return
	}
	s.sendBundle(w, r, digest)
}

// mayReadBundle writes 403 and returns false when the request's token is
// limited to services of which no version names the bundle: a bundle is
// code, and a token for one service does not read another's.
func (s *Server) mayReadBundle(w http.ResponseWriter, r *http.Request, digest string) bool {
	t := requestToken(r)
	if t == nil || len(t.Services) == 0 {
		return true
	}
	var users []string
	s.fsm.Read(func(st *State) { users = st.BundleVersions()[digest] })
	for _, v := range users {
		if service, _, _ := strings.Cut(v, "/"); tokenCovers(r, service) {
			return true
		}
	}
	writeError(w, http.StatusForbidden, protocol.CodePermissionDenied, fmt.Sprintf(
		"%s %s: token %s may only act on services %s, and no version of them names this bundle", r.Method, r.URL.Path, shortID(t.AccessorID), strings.Join(t.Services, ", ")))
	return false
}

// handleBundleSend sends a bundle this coordinator holds, committed or
// not, to another coordinator (it checks the bytes against the digest).
func (s *Server) handleBundleSend(w http.ResponseWriter, r *http.Request) {
	digest, ok := requestDigest(w, r)
	if !ok {
		return
	}
	s.sendBundle(w, r, digest)
}

// sendBundle sends the stored bundle, with ranges if asked.
func (s *Server) sendBundle(w http.ResponseWriter, r *http.Request, digest string) {
	f, fi, err := s.bundles.store.open(digest)
	if err != nil {
		writeError(w, http.StatusNotFound, protocol.CodeNotFound, fmt.Sprintf("coordinator %s holds no copy of bundle %s", s.cfg.NodeID, digest))
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+digest+`"`)
	h.Set(protocol.HeaderBundleSize, strconv.FormatInt(fi.Size(), 10))
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

// handleBundleList lists the committed bundles with the versions that
// name each. A token limited to some services sees their bundles only.
func (s *Server) handleBundleList(w http.ResponseWriter, r *http.Request) {
	if !s.awaitCaughtUp(w, r) {
		return
	}
	limited := false
	if t := requestToken(r); t != nil && len(t.Services) > 0 {
		limited = true
	}
	out := []protocol.BundleInfo{}
	s.fsm.Read(func(st *State) {
		users := st.BundleVersions()
		for _, d := range slices.Sorted(maps.Keys(st.Bundles)) {
			info := bundleInfo(d, st.Bundles[d])
			for _, v := range users[d] {
				service, _, _ := strings.Cut(v, "/")
				if tokenCovers(r, service) {
					info.Versions = append(info.Versions, v)
				}
			}
			if limited && len(info.Versions) == 0 {
				continue
			}
			out = append(out, info)
		}
	})
	writeJSON(w, http.StatusOK, out)
}

// useBundle makes an up or update request's bundle the spec's, writing a
// 400 when the request names an invalid or unknown bundle, or none while
// the task has file_mounts (their sources travel only in a bundle). A
// version that differs from the last only by its bundle is a new version.
func (s *Server) useBundle(w http.ResponseWriter, spec *protocol.TaskSpec, digest, filename string) bool {
	file := taskFilename(filename)
	if digest == "" {
		if len(spec.FileMounts) > 0 {
			writeError(w, http.StatusBadRequest, protocol.CodeInvalidSpec, (&protocol.SpecError{
				File: file, Line: spec.Lines["file_mounts"], Message: "file_mounts travel in the version's bundle; drop --no-upload",
			}).Error())
			return false
		}
		return true
	}
	if err := protocol.ValidateBundleDigest(digest); err != nil {
		writeError(w, http.StatusBadRequest, protocol.CodeInvalidSpec, "bundle: "+err.Error())
		return false
	}
	if _, ok := s.bundleRecord(digest); !ok {
		writeError(w, http.StatusBadRequest, protocol.CodeInvalidSpec, (&bundleMissingError{digest: digest}).Error())
		return false
	}
	spec.Bundle = digest
	return true
}
