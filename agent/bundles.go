package agent

// Bundles: a version's code, by digest (protocol.TaskSpec.Bundle). The
// agent fetches a bundle over NATS in chunks from the coordinators
// (protocol.BundleGetSubject), verifies it against its digest, unpacks it
// once into its data dir and gives each replica its own copy of the
// workdir, so setup writes there and never into a shared tree. Unpacked
// bundles are kept, least recently used out, up to Config.BundleCache; one
// a replica is starting from is never removed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/bundle"
	"github.com/baton-dev/baton/protocol"
)

// bundleFetchParallel is how many chunk requests are in flight at once.
const bundleFetchParallel = 4

// bundleFetchTries is how many times one chunk is asked for before the
// replica fails (and the leader replaces it, with a backoff).
const bundleFetchTries = 5

// bundleStore is the agent's cache of unpacked bundles.
type bundleStore struct {
	dir string
	max int

	// mu guards entries.
	mu      sync.Mutex
	entries map[string]*bundleEntry
}

// bundleEntry is one bundle being fetched or unpacked.
type bundleEntry struct {
	ready chan struct{} // closed once fetched (err set) or failed
	err   error
	path  string // the unpacked bundle's directory
	users int    // replicas copying from it now
	used  time.Time
}

func newBundleStore(dir string, max int) *bundleStore {
	return &bundleStore{dir: dir, max: max, entries: map[string]*bundleEntry{}}
}

// digestDir names a bundle's directory: sha256-<hex>.
func digestDir(digest string) string { return strings.Replace(digest, ":", "-", 1) }

// acquire returns the directory of the unpacked bundle digest, fetching
// it first if needed (one fetch however many replicas wait), and a
// function to call once done with it. An unpacked bundle left by an
// earlier run of the agent is used as it is.
func (s *bundleStore) acquire(ctx context.Context, digest string, fetch func(ctx context.Context, digest, archive string) error) (string, func(), error) {
	for {
		s.mu.Lock()
		e, ok := s.entries[digest]
		if !ok {
			e = &bundleEntry{ready: make(chan struct{}), path: filepath.Join(s.dir, digestDir(digest))}
			s.entries[digest] = e
			e.users++
			s.mu.Unlock()
			e.err = s.fill(ctx, e, digest, fetch)
			close(e.ready)
			s.mu.Lock()
			if e.err != nil {
				e.users--
				delete(s.entries, digest)
				s.mu.Unlock()
				return "", nil, e.err
			}
			e.used = time.Now()
			s.evictLocked()
			s.mu.Unlock()
			return e.path, s.releaser(e), nil
		}
		e.users++
		s.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			s.mu.Lock()
			e.users--
			s.mu.Unlock()
			return "", nil, ctx.Err()
		}
		if e.err != nil {
			s.mu.Lock()
			e.users--
			s.mu.Unlock()
			continue // the fetch that failed was another replica's: try again
		}
		s.mu.Lock()
		e.used = time.Now()
		s.mu.Unlock()
		return e.path, s.releaser(e), nil
	}
}

func (s *bundleStore) releaser(e *bundleEntry) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			e.users--
			e.used = time.Now()
			s.mu.Unlock()
		})
	}
}

// fill makes e.path hold the unpacked bundle: there already (verified when
// it was made), or fetched, verified and unpacked now.
func (s *bundleStore) fill(ctx context.Context, e *bundleEntry, digest string, fetch func(ctx context.Context, digest, archive string) error) error {
	if _, err := os.Stat(filepath.Join(e.path, bundle.ManifestName)); err == nil {
		return nil
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	_ = os.RemoveAll(e.path)
	archive := e.path + ".tar.gz"
	defer os.Remove(archive)
	if err := fetch(ctx, digest, archive); err != nil {
		return err
	}
	if err := bundle.Verify(archive, digest); err != nil {
		return fmt.Errorf("bundle %s: %w", digest, err)
	}
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tmp := e.path + ".unpacking"
	_ = os.RemoveAll(tmp)
	if _, err := bundle.Unpack(f, tmp, bundle.UnpackOptions{}); err != nil {
		return fmt.Errorf("unpack bundle %s: %w", digest, err)
	}
	if err := os.Rename(tmp, e.path); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	return nil
}

// evictLocked removes the least recently used unpacked bundles nobody
// uses beyond s.max. s.mu is held.
func (s *bundleStore) evictLocked() {
	if s.max <= 0 || len(s.entries) <= s.max {
		return
	}
	type cand struct {
		digest string
		used   time.Time
	}
	var idle []cand
	for d, e := range s.entries {
		if e.users == 0 {
			idle = append(idle, cand{d, e.used})
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].used.Before(idle[j].used) })
	for _, c := range idle {
		if len(s.entries) <= s.max {
			return
		}
		e := s.entries[c.digest]
		delete(s.entries, c.digest)
		go os.RemoveAll(e.path)
	}
}

// adopt lists unpacked bundles an earlier run left, so that they count
// toward the cache's size and are evicted in turn; leftovers of
// interrupted fetches go.
func (s *bundleStore) adopt() {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, de := range ents {
		name := de.Name()
		p := filepath.Join(s.dir, name)
		if !de.IsDir() || strings.HasSuffix(name, ".unpacking") {
			_ = os.RemoveAll(p)
			continue
		}
		digest := strings.Replace(name, "-", ":", 1)
		if protocol.ValidateBundleDigest(digest) != nil {
			continue
		}
		info, _ := de.Info()
		used := time.Time{}
		if info != nil {
			used = info.ModTime()
		}
		ready := make(chan struct{})
		close(ready)
		s.entries[digest] = &bundleEntry{ready: ready, path: p, used: used}
	}
	s.evictLocked()
}

// fetchBundle downloads a bundle into the file archive, asking the
// coordinators for chunks, several at once.
func (a *Agent) fetchBundle(ctx context.Context, digest, archive string) error {
	a.pubMu.Lock()
	nc := a.nc
	a.pubMu.Unlock()
	if nc == nil {
		return errNotConnected
	}
	f, err := os.OpenFile(archive, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	subject := protocol.BundleGetSubject(a.cfg.ID)
	ask := func(offset int64) (*nats.Msg, error) {
		body, _ := json.Marshal(protocol.BundleChunkRequest{Digest: digest, Offset: offset, Length: protocol.MaxBundleChunk})
		var msg *nats.Msg
		var err error
		// A coordinator that must first pull the bundle from a peer
		// answers "still fetching" after a while; one that has not yet
		// applied the placement answers an error: ask again, each try
		// with its own deadline, backing off.
		backoff := 200 * time.Millisecond
		for attempt := 0; attempt < bundleFetchTries; attempt++ {
			if attempt > 0 {
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 3*time.Second)
			}
			rctx, cancel := context.WithTimeout(ctx, a.cfg.SpecFetchTimeout+10*time.Second)
			msg, err = nc.Request(rctx, subject, body)
			cancel()
			if err == nil {
				why := msg.Header.Get(protocol.HeaderBundleError)
				if why == "" {
					return msg, nil
				}
				err = fmt.Errorf("bundle %s: %s", digest, why)
				continue
			}
			if errors.Is(err, nats.ErrNoResponders) {
				err = fmt.Errorf("no coordinator answers %s: %w", subject, err)
			}
			if ctx.Err() != nil {
				return nil, err
			}
		}
		return nil, err
	}
	first, err := ask(0)
	if err != nil {
		return err
	}
	size, err := strconv.ParseInt(first.Header.Get(protocol.HeaderBundleSize), 10, 64)
	if err != nil || size < 0 || size > protocol.MaxBundleUploadBytes {
		return fmt.Errorf("bundle %s: the coordinator gave no valid size (%q)", digest, first.Header.Get(protocol.HeaderBundleSize))
	}
	if _, err := f.WriteAt(first.Data, 0); err != nil {
		return err
	}
	got := int64(len(first.Data))
	if got == 0 && size > 0 {
		return fmt.Errorf("bundle %s: an empty first chunk of %d bytes", digest, size)
	}
	// The rest, bundleFetchParallel chunks at a time.
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	sem := make(chan struct{}, bundleFetchParallel)
	for off := got; off < size; off += protocol.MaxBundleChunk {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			msg, err := ask(off)
			if err == nil {
				want := min(int64(protocol.MaxBundleChunk), size-off)
				if int64(len(msg.Data)) != want {
					err = fmt.Errorf("bundle %s: chunk at %d has %d bytes, want %d", digest, off, len(msg.Data), want)
				} else {
					_, err = f.WriteAt(msg.Data, off)
				}
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if size < got {
		return fmt.Errorf("bundle %s: first chunk of %d bytes is longer than the bundle's %d", digest, got, size)
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	a.metrics.bundleFetches.Inc()
	return f.Sync()
}

// chownTree makes everything under dir owned by the replica user, so its
// setup may write there.
func (u replicaUser) chownTree(dir string) error {
	if !u.switchTo {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(u.uid), int(u.gid))
	})
}

// placeCode gives replica r its own copy of the version's code: the
// bundle fetched (PROVISIONING meanwhile) and unpacked once per agent,
// its workdir copied to <replica dir>/work and its file_mounts placed, all
// owned by the replica user. It returns the working directory, or a
// reason the replica fails; "" and "" when the replica was stopped first.
func (a *Agent) placeCode(r *replica, spec *protocol.TaskSpec, note func(string, ...any)) (string, string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	started := time.Now()
	note("fetching code: bundle %s", spec.Bundle)
	dir, release, err := a.bundles.acquire(ctx, spec.Bundle, a.fetchBundle)
	if err != nil {
		if r.stopping() {
			return "", ""
		}
		a.metrics.bundleFetchFailures.Inc()
		return "", fmt.Sprintf("cannot get the version's code (bundle %s) on agent %s: %v", spec.Bundle, a.cfg.ID, err)
	}
	defer release()
	work := filepath.Join(r.dir, "work")
	_ = os.RemoveAll(work)
	if err := bundle.Copy(filepath.Join(dir, bundle.WorkdirDir), work); err != nil {
		return "", fmt.Sprintf("copy the version's code into %s: %v", work, err)
	}
	if err := a.user.chownTree(work); err != nil {
		return "", fmt.Sprintf("give the code in %s to replica user %s: %v", work, a.user.name, err)
	}
	m, err := bundle.ReadManifest(dir)
	if err != nil {
		return "", fmt.Sprintf("read the bundle's manifest: %v", err)
	}
	r.binds = nil
	_ = os.RemoveAll(filepath.Join(r.dir, "mounts"))
	for i, target := range m.Mounts {
		if err := protocol.ValidateMountTarget(target); err != nil {
			return "", fmt.Sprintf("bundle %s: file_mounts: %v", spec.Bundle, err)
		}
		src := filepath.Join(dir, filepath.FromSlash(bundle.MountDir(i)))
		var dst string
		if strings.HasPrefix(target, "~/") {
			dst = filepath.Join(replicaHome(r.dir), filepath.FromSlash(target[2:]))
		} else {
			// An absolute target: the replica's own copy, bind-mounted
			// there in its own mount namespace.
			if os.Geteuid() != 0 {
				return "", fmt.Sprintf("file_mounts target %s: an absolute target is mounted in a mount namespace of the replica's own, which needs the agent to run as root (this one runs as uid %d); run it as root, or mount at ~/%s instead", target, os.Geteuid(), strings.TrimPrefix(target, "/"))
			}
			if err := mountPointAllowed(target, a.cfg.MountRoots); err != nil {
				return "", fmt.Sprintf("file_mounts target %s: %v", target, err)
			}
			dst = filepath.Join(r.dir, "mounts", strconv.Itoa(len(r.binds)))
			r.binds = append(r.binds, shimBind{Source: dst, Target: target})
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", fmt.Sprintf("file_mounts target %s: %v", target, err)
		}
		_ = os.RemoveAll(dst)
		if err := bundle.Copy(src, dst); err != nil {
			return "", fmt.Sprintf("file_mounts target %s: %v", target, err)
		}
	}
	// What was placed is the replica user's, as its working copy is.
	for _, owned := range []string{replicaHome(r.dir), filepath.Join(r.dir, "mounts")} {
		if _, err := os.Stat(owned); err != nil {
			continue
		}
		if err := a.user.chownTree(owned); err != nil {
			return "", fmt.Sprintf("give the file_mounts in %s to replica user %s: %v", owned, a.user.name, err)
		}
	}
	if r.stopping() {
		return "", ""
	}
	note("code in place in %s (%s)", work, time.Since(started).Round(time.Millisecond))
	return work, ""
}

// replicaHome is the HOME of a replica whose task mounts files under ~/:
// its own, so that replicas never share one.
func replicaHome(replicaDir string) string { return filepath.Join(replicaDir, "home") }

// hasHomeMounts reports whether a spec places files under ~/.
func hasHomeMounts(spec *protocol.TaskSpec) bool {
	for t := range spec.FileMounts {
		if strings.HasPrefix(t, "~/") {
			return true
		}
	}
	return false
}

// mountPointAllowed says whether the agent may mount at target, an
// absolute path: the mount is the replica's own, but a missing mount point
// (an empty directory or file) is created on the machine, as root. So one
// is created only as a new top-level directory (/data/...) or under one
// of roots, never in a system directory (/etc/nologin would lock users
// out). A target that exists needs nothing created.
func mountPointAllowed(target string, roots []string) error {
	if _, err := os.Lstat(target); err == nil {
		return nil
	}
	anc := filepath.Dir(target)
	for {
		if _, err := os.Lstat(anc); err == nil {
			break
		}
		anc = filepath.Dir(anc)
	}
	if anc == "/" {
		return nil
	}
	for _, r := range roots {
		if anc == r || strings.HasPrefix(anc, r+"/") {
			return nil
		}
	}
	return fmt.Errorf("it does not exist on this machine, and the agent creates mount points only as a new top-level directory or under %s (the agent's --mount-root); create %s on the machine, or mount somewhere under those", strings.Join(roots, ", "), target)
}
