package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// ACL tokens, as Nomad and Consul have them: each request carries a
// token's secret (X-Baton-Token, or Authorization: Bearer); the token's
// policy says what it may do. Tokens live in the Raft state with only the
// SHA-256 of their secret. With Config.ACLs off every request is allowed.

// tokenKey carries the request's resolved token in its context.
type tokenKey struct{}

// hashSecret is how a secret is stored and looked up.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// newSecret returns a random secret and accessor id (UUID-shaped, 122
// random bits each).
func newSecret() (secret, accessor string) {
	return randomUUID(), randomUUID()
}

func randomUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// requestSecret reads the token's secret from a request.
func requestSecret(r *http.Request) string {
	if s := strings.TrimSpace(r.Header.Get(protocol.HeaderToken)); s != "" {
		return s
	}
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	return ""
}

// authz wraps a handler that needs a policy of at least need. It runs
// where the handler runs (on the leader for a forwarded write), so a
// token created a moment ago is known there.
func (s *Server) authz(need string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.cfg.ACLs {
			h(w, r)
			return
		}
		what := r.Method + " " + r.URL.Path
		secret := requestSecret(r)
		bootstrapped, tok := s.lookupToken(secret)
		// A token just made on the leader may not have reached this
		// follower yet: give it a moment before calling it unknown.
		if secret != "" && tok == nil && !s.IsLeader() {
			deadline := time.Now().Add(tokenCatchUp)
			for tok == nil && time.Now().Before(deadline) && r.Context().Err() == nil {
				time.Sleep(50 * time.Millisecond)
				bootstrapped, tok = s.lookupToken(secret)
			}
		}
		switch {
		case !bootstrapped:
			writeError(w, http.StatusUnauthorized, protocol.CodeUnauthenticated, what+
				": ACLs are on but not bootstrapped yet: run `baton acl bootstrap` once to get a management token")
			return
		case secret == "":
			writeError(w, http.StatusUnauthorized, protocol.CodeUnauthenticated, what+
				": no ACL token: set $BATON_TOKEN or --token (ACLs are on)")
			return
		case tok == nil:
			writeError(w, http.StatusUnauthorized, protocol.CodeUnauthenticated, what+
				": ACL token not found: it was revoked or never created")
			return
		case protocol.PolicyRank(tok.Policy) < protocol.PolicyRank(need):
			writeError(w, http.StatusForbidden, protocol.CodePermissionDenied, fmt.Sprintf(
				"%s: token %s (policy %s) may not do this: it needs a %s token", what, shortID(tok.AccessorID), tok.Policy, need))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), tokenKey{}, tok)))
	}
}

// tokenCatchUp bounds how long a follower waits for a token it does not
// know to arrive through Raft before answering 401.
const tokenCatchUp = 2 * time.Second

// lookupToken reads whether ACLs were bootstrapped and the token whose
// secret is secret (nil if none) from this node's state.
func (s *Server) lookupToken(secret string) (bootstrapped bool, tok *protocol.ACLToken) {
	s.fsm.Read(func(st *State) {
		bootstrapped = st.ACL.Bootstrapped
		if secret != "" {
			if t := st.ACL.TokenBySecretHash(hashSecret(secret)); t != nil {
				c := *t
				tok = &c
			}
		}
	})
	return bootstrapped, tok
}

// shortID shortens an accessor id for messages.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// requestToken is the request's resolved token (nil with ACLs off).
func requestToken(r *http.Request) *protocol.ACLToken {
	t, _ := r.Context().Value(tokenKey{}).(*protocol.ACLToken)
	return t
}

// tokenCovers says whether the request's token may act on service name:
// it names no services, or names this one.
func tokenCovers(r *http.Request, name string) bool {
	t := requestToken(r)
	return t == nil || len(t.Services) == 0 || slices.Contains(t.Services, name)
}

// mayTouch writes 403 and returns false when the request's token is
// limited to other services than name.
func mayTouch(w http.ResponseWriter, r *http.Request, name string) bool {
	if tokenCovers(r, name) {
		return true
	}
	t := requestToken(r)
	writeError(w, http.StatusForbidden, protocol.CodePermissionDenied, fmt.Sprintf(
		"%s %s: token %s may only act on services %s, not %q", r.Method, r.URL.Path, shortID(t.AccessorID), strings.Join(t.Services, ", "), name))
	return false
}

// handleACLBootstrap makes the first management token (POST
// /v1/acl/bootstrap); it works once per cluster.
func (s *Server) handleACLBootstrap(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.ACLs {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest,
			"ACLs are off on this coordinator: start the coordinators with --acl to use tokens")
		return
	}
	secret, accessor := newSecret()
	tok := protocol.ACLToken{AccessorID: accessor, Name: "bootstrap token", Policy: protocol.PolicyManagement,
		SecretHash: hashSecret(secret), CreatedAt: time.Now().UTC()}
	if _, _, err := s.raftApply(CmdACLBootstrap, ACLBootstrapCmd{Token: tok}); err != nil {
		if errors.Is(err, ErrACLBootstrapped) {
			writeError(w, http.StatusConflict, protocol.CodeAlreadyExists,
				"ACLs were already bootstrapped; a management token creates more (`baton acl token create`)")
			return
		}
		s.applyError(w, r, err)
		return
	}
	s.log.Info("acl bootstrapped", "accessor_id", accessor)
	tok.SecretHash = ""
	writeJSON(w, http.StatusOK, protocol.ACLTokenResponse{ACLToken: tok, SecretID: secret})
}

// handleACLTokenCreate makes a token (POST /v1/acl/tokens).
func (s *Server) handleACLTokenCreate(w http.ResponseWriter, r *http.Request) {
	var req protocol.ACLTokenRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if err := req.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, r.Method+" "+r.URL.Path+": "+err.Error())
		return
	}
	secret, accessor := newSecret()
	tok := protocol.ACLToken{AccessorID: accessor, Name: req.Name, Policy: req.Policy, Services: req.Services,
		SecretHash: hashSecret(secret), CreatedAt: time.Now().UTC()}
	if _, _, err := s.raftApply(CmdACLTokenCreate, ACLTokenCreateCmd{Token: tok}); err != nil {
		s.applyError(w, r, err)
		return
	}
	s.log.Info("acl token created", "accessor_id", accessor, "policy", req.Policy)
	tok.SecretHash = ""
	writeJSON(w, http.StatusOK, protocol.ACLTokenResponse{ACLToken: tok, SecretID: secret})
}

// handleACLTokenList lists tokens without secrets (GET /v1/acl/tokens).
func (s *Server) handleACLTokenList(w http.ResponseWriter, r *http.Request) {
	resp := protocol.ACLTokensResponse{Tokens: []protocol.ACLToken{}}
	s.fsm.Read(func(st *State) {
		for _, t := range st.ACL.Tokens {
			c := *t
			c.SecretHash = ""
			resp.Tokens = append(resp.Tokens, c)
		}
	})
	slices.SortFunc(resp.Tokens, func(a, b protocol.ACLToken) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.AccessorID, b.AccessorID)
	})
	writeJSON(w, http.StatusOK, resp)
}

// handleACLTokenRevoke deletes a token (DELETE /v1/acl/tokens/{id}).
func (s *Server) handleACLTokenRevoke(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, _, err := s.raftApply(CmdACLTokenRevoke, ACLTokenRevokeCmd{AccessorID: id}); err != nil {
		if errors.Is(err, ErrTokenNotFound) {
			writeError(w, http.StatusNotFound, protocol.CodeNotFound, fmt.Sprintf(
				"no ACL token has accessor id %q; `baton acl token list` lists them", id))
			return
		}
		s.applyError(w, r, err)
		return
	}
	s.log.Info("acl token revoked", "accessor_id", id)
	writeJSON(w, http.StatusOK, map[string]string{"revoked": id})
}
