package protocol

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// Specs travel by reference: a desired set names each version's spec by
// its digest, and an agent asks the coordinators for a spec it has not
// cached yet with a SpecRequest on SubjectSpecGet. Any coordinator answers
// from its replicated state, so the fetch works whichever one is up.

// specDigestPrefix starts every spec digest.
const specDigestPrefix = "sha256:"

// SpecDigestOf is the digest of a spec's JSON encoding: "sha256:" and the
// hex SHA-256 of the bytes.
func SpecDigestOf(specJSON []byte) string {
	sum := sha256.Sum256(specJSON)
	return specDigestPrefix + hex.EncodeToString(sum[:])
}

// EncodeSpec returns a spec's JSON encoding and its digest. The encoding
// is what a SpecReply carries, so the receiver can check the digest
// against the very bytes it decodes.
func EncodeSpec(spec *TaskSpec) ([]byte, string, error) {
	buf, err := json.Marshal(spec)
	if err != nil {
		return nil, "", fmt.Errorf("encode spec: %w", err)
	}
	return buf, SpecDigestOf(buf), nil
}

// ValidateSpecDigest checks the form of a spec digest.
func ValidateSpecDigest(d string) error {
	hexPart, ok := strings.CutPrefix(d, specDigestPrefix)
	if !ok || len(hexPart) != 2*sha256.Size {
		return fmt.Errorf("%q is not a spec digest (sha256: and 64 hex digits)", abbreviate(d))
	}
	for _, c := range hexPart {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%q is not a spec digest (sha256: and 64 lowercase hex digits)", abbreviate(d))
		}
	}
	return nil
}

// SpecRequest asks the coordinators for one version's spec (request and
// reply on SubjectSpecGet).
type SpecRequest struct {
	Service string `json:"service"`
	Version int    `json:"version"`
	// Digest is the digest the desired set named: the reply must match it.
	Digest string `json:"digest"`
}

// Validate checks a SpecRequest. The error matches ErrInvalidMessage.
func (r *SpecRequest) Validate() error {
	if err := ValidateServiceName(r.Service); err != nil {
		return invalid("service: %v", err)
	}
	if r.Version < 1 {
		return invalid("version: %d is not a version (1 or more)", r.Version)
	}
	if err := ValidateSpecDigest(r.Digest); err != nil {
		return invalid("digest: %v", err)
	}
	return nil
}

// SpecReply answers a SpecRequest: the spec's JSON encoding, whose
// SpecDigestOf equals Digest, or an error saying why there is none (the
// version is gone, or its spec has another digest).
type SpecReply struct {
	Digest string          `json:"digest,omitempty"`
	Spec   json.RawMessage `json:"spec,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// DecodeSpecReply decodes and checks a reply to req: an error reply, a
// digest other than req's, bytes that do not hash to it, or a spec that
// does not validate are all errors.
func DecodeSpecReply(data []byte, req SpecRequest) (TaskSpec, error) {
	var rep SpecReply
	if err := DecodeMessage(data, MaxSpecBytes+4<<10, &rep); err != nil {
		return TaskSpec{}, err
	}
	if rep.Error != "" {
		return TaskSpec{}, fmt.Errorf("spec of %s version %d: %s", req.Service, req.Version, abbreviate(rep.Error))
	}
	if rep.Digest != req.Digest {
		return TaskSpec{}, invalid("spec of %s version %d: reply digest %q, asked for %q", req.Service, req.Version, abbreviate(rep.Digest), req.Digest)
	}
	if got := SpecDigestOf(rep.Spec); got != req.Digest {
		return TaskSpec{}, invalid("spec of %s version %d: the bytes hash to %s, not %s", req.Service, req.Version, got, req.Digest)
	}
	var spec TaskSpec
	if err := DecodeMessage(rep.Spec, MaxSpecBytes, &spec); err != nil {
		return TaskSpec{}, err
	}
	if err := spec.Validate(); err != nil {
		return TaskSpec{}, invalid("spec of %s version %d: %v", req.Service, req.Version, err)
	}
	return spec, nil
}
