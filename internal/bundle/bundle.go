// Package bundle packs a service's workdir and its local file_mounts into
// one deterministic, gzip-compressed tar archive named by its SHA-256, and
// unpacks such an archive safely on an agent.
//
// The archive holds, in this order:
//
//	.baton-bundle.json   the manifest: counts and the mount targets
//	workdir/...          the workdir tree (an empty workdir/ when there is none)
//	mounts/0 ...         each local file_mounts source, a file or a tree
//
// The same tree always gives the same bytes: entries are sorted, mtimes,
// owners and group names are zeroed, and only the permission bits of a
// mode are kept. So the digest names the content, and an unchanged tree is
// never uploaded twice.
//
// What is packed follows SkyPilot: if the root of a tree has a .skyignore,
// the .skyignore files (of the root and of its subdirectories) say what to
// leave out, and .gitignore files are not read; otherwise the .gitignore
// files do. Both use gitignore syntax, matched as git matches it (the
// tests compare with git itself); unlike git, a matching file is left out
// even if git tracks it, and a trailing '\r' is dropped from a line. A
// file or directory named .git is always left out. Symlinks are packed as
// symlinks and never followed; sockets, FIFOs and devices are left out
// and listed in Manifest.Skipped.
//
// The compression is klauspost/compress's gzip, about four times as fast
// as the standard library's at the same ratio. A new version of it (or of
// the tar writer) may change the bytes, and so the digest, of an unchanged
// tree: the bundle is then uploaded once more, nothing worse.
package bundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

const (
	// DefaultLimit is the most uncompressed bytes of regular files that
	// Pack accepts when Options.Limit is zero: 1 GiB.
	DefaultLimit int64 = 1 << 30
	// DefaultMaxFiles is the most entries (files, directories and
	// symlinks) that Pack accepts when Options.MaxFiles is zero.
	DefaultMaxFiles = 1 << 20

	// WorkdirDir is the archive's (and an unpacked bundle's) directory
	// holding the workdir.
	WorkdirDir = "workdir"
	// ManifestName is the archive's first entry: the manifest as JSON.
	ManifestName = ".baton-bundle.json"

	mountsDir      = "mounts"
	manifestFormat = 1
	// maxManifestSize bounds the manifest entry that Unpack reads.
	maxManifestSize = 1 << 20
)

// Sentinel errors. The errors returned wrap them; the messages of
// ErrTooLarge and ErrDigestMismatch do not repeat theirs.
var (
	// ErrTooLarge means a tree is over Options.Limit or Options.MaxFiles,
	// or an archive expands past UnpackOptions' bounds.
	ErrTooLarge = errors.New("bundle too large")
	// ErrUnsafeArchive means Unpack refused an entry that could write
	// outside its destination, or one it does not understand.
	ErrUnsafeArchive = errors.New("unsafe or malformed bundle")
	// ErrDigestMismatch means a file's SHA-256 is not the one expected.
	ErrDigestMismatch = errors.New("bundle digest mismatch")
)

// kindError is an error of a sentinel kind whose message does not repeat
// the sentinel's: errors.Is finds both the kind and what the message wraps.
type kindError struct {
	kind error
	err  error
}

func kindErrorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// Options say what Pack adds to the workdir and how much it accepts.
type Options struct {
	// Limit is the most uncompressed bytes of regular files, workdir and
	// mounts together. Default (zero) DefaultLimit, 1 GiB.
	Limit int64
	// MaxFiles is the most entries, workdir and mounts together. Default
	// (zero) DefaultMaxFiles.
	MaxFiles int
	// Mounts are the file_mounts whose sources are local. Default none.
	Mounts []Mount
}

// Mount is one file_mounts entry with a local source.
type Mount struct {
	// Target is where the agent places it on the replica's machine: an
	// absolute path such as /data/config, or one under the home
	// directory such as ~/config.
	Target string
	// Source is the local file or directory. A symlink given here is
	// followed; symlinks inside a directory are not.
	Source string
}

// Manifest tells what a bundle holds.
type Manifest struct {
	// Files counts the regular files and symlinks (not directories).
	Files int
	// Bytes is the uncompressed size of the regular files.
	Bytes int64
	// Mounts are the mount targets, in order: mount i is at MountDir(i)
	// in the archive and in an unpacked bundle.
	Mounts []string
	// Skipped lists, from Pack only, the local paths left out because
	// they are sockets, FIFOs or devices, each followed by its kind in
	// parentheses: "./app/run/db.sock (socket)".
	Skipped []string
}

// MountDir is the path of mount i inside the archive and inside a
// directory that Unpack filled, with forward slashes: "mounts/0".
func MountDir(i int) string {
	return mountsDir + "/" + strconv.Itoa(i)
}

// manifestJSON is the archive's first entry. Fields are only ever added.
type manifestJSON struct {
	Version int         `json:"version"`
	Files   int         `json:"files"`
	Bytes   int64       `json:"bytes"`
	Mounts  []mountJSON `json:"mounts,omitempty"`
}

type mountJSON struct {
	Target string `json:"target"`
	Path   string `json:"path"`
}

// checkTarget says whether t can be a mount target.
func checkTarget(t string) error {
	switch {
	case t == "":
		return errors.New("target is empty")
	case !path.IsAbs(t) && !strings.HasPrefix(t, "~/"):
		return fmt.Errorf("target %q is not an absolute path (write /data/x or ~/x)", t)
	case path.Clean(t) != t || t == "/" || t == "~/":
		return fmt.Errorf("target %q is not a clean path to a file or directory (write %s)", t, path.Clean(t))
	case strings.ContainsRune(t, 0):
		return fmt.Errorf("target %q holds a NUL byte", t)
	}
	return nil
}

// HumanBytes formats n as "512 B", "3.4 MiB", "1 GiB".
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, i := float64(n), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + [...]string{"KiB", "MiB", "GiB", "TiB", "PiB"}[i]
}

// ReadManifest reads the manifest of a directory that Unpack filled: its
// counts and mount targets (mount i is at MountDir(i) under dir). Unpack
// checked that the archive's mounts are where MountDir says.
func ReadManifest(dir string) (Manifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return Manifest{}, err
	}
	var mj manifestJSON
	if err := json.Unmarshal(data, &mj); err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", ManifestName, err)
	}
	m := Manifest{Files: mj.Files, Bytes: mj.Bytes}
	for i, mt := range mj.Mounts {
		if mt.Path != MountDir(i) {
			return Manifest{}, fmt.Errorf("%s: mount %d is at %q, not %s", ManifestName, i, mt.Path, MountDir(i))
		}
		m.Mounts = append(m.Mounts, mt.Target)
	}
	return m, nil
}
