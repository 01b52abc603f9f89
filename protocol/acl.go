package protocol

import (
	"fmt"
	"time"
)

// ACL policies, from least to most. A token has one.
const (
	// PolicyRead may read status, agents and logs.
	PolicyRead = "read"
	// PolicyDeploy may also up, update and down services: the token's
	// Services, or every service when it names none.
	PolicyDeploy = "deploy"
	// PolicyOperator may also run operator commands (raft peers, members).
	PolicyOperator = "operator"
	// PolicyManagement may do everything, ACL tokens included.
	PolicyManagement = "management"
)

// PolicyRank orders the policies (0 for an unknown one).
func PolicyRank(p string) int {
	switch p {
	case PolicyRead:
		return 1
	case PolicyDeploy:
		return 2
	case PolicyOperator:
		return 3
	case PolicyManagement:
		return 4
	}
	return 0
}

// ACLToken is a token as stored and listed: the secret itself is never
// stored, only its SHA-256.
type ACLToken struct {
	// AccessorID names the token in lists and revocations; it is not a
	// credential.
	AccessorID string `json:"accessor_id"`
	Name       string `json:"name,omitempty"`
	Policy     string `json:"policy"`
	// Services limits a read or deploy token to these services; empty
	// means all.
	Services []string `json:"services,omitempty"`
	// SecretHash is the hex SHA-256 of the secret (never sent by the API).
	SecretHash string    `json:"secret_hash,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// ACLTokenRequest creates a token (POST /v1/acl/tokens).
type ACLTokenRequest struct {
	Name     string   `json:"name,omitempty"`
	Policy   string   `json:"policy"`
	Services []string `json:"services,omitempty"`
}

// Validate checks a token request.
func (r *ACLTokenRequest) Validate() error {
	if PolicyRank(r.Policy) == 0 {
		return fmt.Errorf("policy %q: use read, deploy, operator or management", r.Policy)
	}
	if len(r.Name) > 256 {
		return fmt.Errorf("name: at most 256 bytes")
	}
	if len(r.Services) > 0 && PolicyRank(r.Policy) > PolicyRank(PolicyDeploy) {
		return fmt.Errorf("services: only read and deploy tokens are limited to services; a %s token covers all", r.Policy)
	}
	if len(r.Services) > 1000 {
		return fmt.Errorf("services: at most 1000")
	}
	for _, s := range r.Services {
		if err := ValidateServiceName(s); err != nil {
			return fmt.Errorf("services: %w", err)
		}
	}
	return nil
}

// ACLTokenResponse answers a token's creation (and the bootstrap): the
// only time its secret is shown.
type ACLTokenResponse struct {
	ACLToken
	SecretID string `json:"secret_id"`
}

// ACLTokensResponse lists tokens (GET /v1/acl/tokens), without secrets.
type ACLTokensResponse struct {
	Tokens []ACLToken `json:"tokens"`
}

// HeaderToken carries the ACL token's secret (or "Authorization: Bearer").
const HeaderToken = "X-Baton-Token"

// ACL error codes.
const (
	// CodeUnauthenticated: no token, or one that is unknown or revoked
	// (HTTP 401).
	CodeUnauthenticated = "unauthenticated"
	// CodePermissionDenied: the token's policy does not allow the request
	// (HTTP 403).
	CodePermissionDenied = "permission_denied"
)
