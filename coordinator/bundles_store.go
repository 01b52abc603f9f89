package coordinator

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/baton-dev/baton/protocol"
)

// bundleStore is this coordinator's copies of bundles: one file per
// bundle, <DataDir>/bundles/sha256-<hex>, there whole or not at all. A
// file is written to a temporary name, hashed while written, synced and
// renamed into place only when its bytes hash to its name.
//
// Files change under two kinds of work: transfers (an upload, a push
// from another coordinator, a pull) and removals (a deleted bundle, an
// orphan). A transfer pins its digest for its whole length, and a pinned
// digest is never removed, so a removal decided from a slightly older
// state cannot take a file that a transfer has just put in place.
type bundleStore struct {
	dir string

	// mu guards pins: transfers in progress, by digest.
	mu   sync.Mutex
	pins map[string]int
}

// bundleTempPrefix starts the names of files being written.
const bundleTempPrefix = ".tmp-"

// copyBufferBytes is the buffer a bundle is copied through.
const copyBufferBytes = 1 << 20

var (
	// errBundleTooLarge means a bundle's bytes went past the limit given.
	errBundleTooLarge = errors.New("bundle too large")
	// errStoreFailed means this coordinator could not write a bundle (its
	// disk, not what it was sent).
	errStoreFailed = errors.New("store bundle")
)

// storeWriter marks the errors of writing a bundle's file.
type storeWriter struct{ f *os.File }

func (w storeWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		err = fmt.Errorf("%w: %v", errStoreFailed, err)
	}
	return n, err
}

// digestMismatchError says that an upload's bytes hash to another digest
// than the one it was sent as.
type digestMismatchError struct{ got, want string }

func (e *digestMismatchError) Error() string {
	return fmt.Sprintf("the upload hashes to %s, not %s", e.got, e.want)
}

// openBundleStore opens (creating it if needed) the store in dir and
// removes what writes cut short by a crash left there.
func openBundleStore(dir string) (*bundleStore, error) {
	// The data dir and its parents as Raft makes them (0755: an agent of
	// the same machine may keep its data beside it, and its replica user
	// must pass through); the store itself is the coordinators' only.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(dir), err)
	}
	if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), bundleTempPrefix) {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return &bundleStore{dir: dir, pins: map[string]int{}}, nil
}

// bundleFileName is the file a bundle is stored in: "sha256-<hex>" (no
// colon, which some file systems refuse). digest must be valid.
func bundleFileName(digest string) string {
	return "sha256-" + strings.TrimPrefix(digest, "sha256:")
}

// digestOfFile is bundleFileName's inverse; ok is false for any other name.
func digestOfFile(name string) (string, bool) {
	hexPart, found := strings.CutPrefix(name, "sha256-")
	if !found {
		return "", false
	}
	d := "sha256:" + hexPart
	return d, protocol.ValidateBundleDigest(d) == nil
}

func (b *bundleStore) path(digest string) string {
	return filepath.Join(b.dir, bundleFileName(digest))
}

// stat returns the size of the stored bundle; ok is false when this
// coordinator has none.
func (b *bundleStore) stat(digest string) (size int64, ok bool) {
	fi, err := os.Stat(b.path(digest))
	if err != nil || !fi.Mode().IsRegular() {
		return 0, false
	}
	return fi.Size(), true
}

// open opens the stored bundle for reading.
func (b *bundleStore) open(digest string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(b.path(digest))
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// pin marks a transfer of digest in progress until the returned function
// is called: remove leaves it alone meanwhile.
func (b *bundleStore) pin(digest string) (unpin func()) {
	b.mu.Lock()
	b.pins[digest]++
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.pins[digest]--; b.pins[digest] <= 0 {
				delete(b.pins, digest)
			}
		})
	}
}

// pinned reports whether a transfer of digest is in progress.
func (b *bundleStore) pinned(digest string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pins[digest] > 0
}

// write stores what r yields as bundle digest. It fails, keeping nothing,
// when r fails, yields more than limit bytes (errBundleTooLarge), bytes
// that hash to another digest (*digestMismatchError), or the file cannot
// be written (errStoreFailed). A bundle stored before is replaced by the
// same bytes.
func (b *bundleStore) write(digest string, r io.Reader, limit int64) (int64, error) {
	f, err := os.CreateTemp(b.dir, bundleTempPrefix+bundleFileName(digest)+"-*")
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errStoreFailed, err)
	}
	tmp := f.Name()
	stored := false
	defer func() {
		if !stored {
			f.Close()
			_ = os.Remove(tmp)
		}
	}()
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(storeWriter{f}, h), io.LimitReader(r, limit+1), make([]byte, copyBufferBytes))
	if err != nil {
		return n, err
	}
	if n > limit {
		return n, errBundleTooLarge
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return n, &digestMismatchError{got: got, want: digest}
	}
	if err := f.Sync(); err != nil {
		return n, fmt.Errorf("%w: %v", errStoreFailed, err)
	}
	if err := f.Close(); err != nil {
		return n, fmt.Errorf("%w: %v", errStoreFailed, err)
	}
	if err := os.Rename(tmp, b.path(digest)); err != nil {
		return n, fmt.Errorf("%w: %v", errStoreFailed, err)
	}
	stored = true
	// The rename is durable once the directory is synced.
	if d, err := os.Open(b.dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return n, nil
}

// touch marks a stored bundle as just written, so that an orphan about to
// be committed after all (pushed again by an upload) is not removed as
// old.
func (b *bundleStore) touch(digest string) {
	now := time.Now()
	_ = os.Chtimes(b.path(digest), now, now)
}

// remove deletes a stored bundle unless a transfer of it is in progress.
// It reports whether the file is gone.
func (b *bundleStore) remove(digest string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pins[digest] > 0 {
		return false
	}
	err := os.Remove(b.path(digest))
	return err == nil || errors.Is(err, os.ErrNotExist)
}

// storedBundle is one file of the store.
type storedBundle struct {
	digest  string
	size    int64
	modTime time.Time
}

// list returns the stored bundles (not the files being written).
func (b *bundleStore) list() ([]storedBundle, error) {
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		return nil, err
	}
	var out []storedBundle
	for _, e := range entries {
		d, ok := digestOfFile(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, storedBundle{digest: d, size: fi.Size(), modTime: fi.ModTime()})
	}
	return out, nil
}
