package protocol

import (
	"fmt"
	"strings"
	"time"
)

// Bundles: a version's code. `serve up` and `serve update` pack the
// workdir and the local sources of file_mounts into a compressed archive
// (internal/bundle), named by the SHA-256 of its bytes, and upload it to
// the cluster once (PUT /v1/bundles/{digest}); the version's spec names it
// (TaskSpec.Bundle). Agents fetch it by digest over NATS in chunks
// (BundleChunkRequest on BundleGetSubject), verify it, unpack it once per
// bundle and give each replica its own working copy.

// MaxBundleBytes is the default limit on a workdir (with its file_mounts)
// as packed, before compression: 1 GiB.
const MaxBundleBytes = 1 << 30

// MaxBundleUploadBytes bounds an upload's compressed bytes: a bundle
// within MaxBundleBytes compresses to less (gzip adds a little to
// incompressible data).
const MaxBundleUploadBytes = MaxBundleBytes + MaxBundleBytes/64 + 1<<20

// MaxBundleChunk is the most bytes one BundleChunkRequest may ask for;
// NATS messages are limited to 8 MiB.
const MaxBundleChunk = 4 << 20

// ValidateBundleDigest checks a bundle digest: "sha256:" and 64 lowercase
// hex digits, as ValidateSpecDigest.
func ValidateBundleDigest(d string) error {
	if err := ValidateSpecDigest(d); err != nil {
		return fmt.Errorf("bundle digest %q is not sha256:<64 lowercase hex digits>", abbreviate(d))
	}
	return nil
}

// BundleInfo is a bundle the cluster stores (GET /v1/bundles/{digest} with
// HEAD, and the list in GET /v1/bundles).
type BundleInfo struct {
	Digest string `json:"digest"`
	// Size is the archive's size in bytes.
	Size int64 `json:"size"`
	// UploadedAt is when the cluster first committed it.
	UploadedAt time.Time `json:"uploaded_at"`
	// Versions names the versions that use it, "service/version".
	Versions []string `json:"versions,omitempty"`
}

// BundleGetSubject is the subject an agent asks for bundle chunks on; any
// coordinator (queue group QueueCoordinators) answers an agent with a
// replica of a version that names the bundle.
func BundleGetSubject(agentID string) string { return "baton.bundles.get." + agentID }

// SubjectBundleGetAll subscribes to every agent's bundle requests.
const SubjectBundleGetAll = "baton.bundles.get.*"

// BundleChunkRequest asks for Length bytes of a bundle from Offset.
type BundleChunkRequest struct {
	Digest string `json:"digest"`
	Offset int64  `json:"offset"`
	Length int    `json:"length"`
}

// Validate checks a BundleChunkRequest. The error matches
// ErrInvalidMessage.
func (r *BundleChunkRequest) Validate() error {
	if err := ValidateBundleDigest(r.Digest); err != nil {
		return invalid("digest: %v", err)
	}
	if r.Offset < 0 || r.Offset > MaxBundleUploadBytes {
		return invalid("offset: %d is outside 0 to %d", r.Offset, int64(MaxBundleUploadBytes))
	}
	if r.Length < 1 || r.Length > MaxBundleChunk {
		return invalid("length: %d is outside 1 to %d", r.Length, MaxBundleChunk)
	}
	return nil
}

// Headers of a bundle chunk reply: the body is the chunk's bytes; a reply
// with HeaderBundleError carries no bytes and says why.
const (
	// HeaderBundleSize is the bundle's whole size in bytes.
	HeaderBundleSize = "Baton-Bundle-Size"
	// HeaderBundleError is set, with a message, on a refused request.
	HeaderBundleError = "Baton-Bundle-Error"
)

// ValidateMountTarget checks where a file_mounts entry goes, as SkyPilot
// writes it: an absolute path, or "~/..." (the replica's home); clean (no
// "..", no "." or empty elements), not "/" or "~/" alone, at most 1024
// bytes, no NUL.
func ValidateMountTarget(target string) error {
	const valid = "write an absolute path (/data/config) or ~/path, without .. or empty elements"
	if target == "" || len(target) > 1024 || strings.ContainsRune(target, 0) {
		return fmt.Errorf("target %q is not a path; %s", abbreviate(target), valid)
	}
	var rest string
	switch {
	case strings.HasPrefix(target, "~/"):
		rest = target[2:]
	case strings.HasPrefix(target, "/"):
		rest = target[1:]
	default:
		return fmt.Errorf("target %q is relative; %s", abbreviate(target), valid)
	}
	if rest == "" {
		return fmt.Errorf("target %q names a root, not a file or directory under it; %s", target, valid)
	}
	for _, el := range strings.Split(rest, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("target %q has a %q element; %s", abbreviate(target), el, valid)
		}
	}
	return nil
}
