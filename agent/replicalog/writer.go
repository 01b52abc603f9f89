package replicalog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// FileName is the log file being written in a replica directory; the
// rotated ones are FileName.1 (newest) to FileName.<maxFiles-1> (oldest).
const FileName = "replica.log"

// ErrClosed is returned by a Write after Close.
var ErrClosed = errors.New("replicalog: write to a closed log")

// Writer appends to dir/replica.log and rotates it by size. Its methods are
// safe for concurrent use: the bytes of one Write stay together, never
// interleaved with another's, so the agent's own notes and the replica's
// output can share one Writer.
type Writer struct {
	dir      string
	maxBytes int64
	maxFiles int

	mu     sync.Mutex // guards the fields below
	f      *os.File   // dir/replica.log; nil after a failed rotation or Close
	size   int64      // bytes in f
	closed bool
}

// Open opens dir/replica.log for appending (creating it if needed; dir
// must exist) and returns a Writer that keeps it under maxBytes: a Write
// that would take it past maxBytes first rotates it (replica.log.<k>
// becomes replica.log.<k+1>, replica.log becomes replica.log.1, a new
// replica.log is started), and replica.log.<maxFiles-1> is deleted as it is
// replaced, so the files take at most maxBytes*maxFiles. A Write larger
// than maxBytes is split across files. Rotated files left beyond
// maxFiles-1 (by a larger maxFiles earlier) are deleted now.
func Open(dir string, maxBytes int64, maxFiles int) (*Writer, error) {
	if maxBytes <= 0 || maxFiles <= 0 {
		return nil, fmt.Errorf("replicalog: max bytes %d / max files %d: both must be positive", maxBytes, maxFiles)
	}
	w := &Writer{dir: dir, maxBytes: maxBytes, maxFiles: maxFiles}
	if err := w.pruneBeyond(); err != nil {
		return nil, err
	}
	if err := w.openCurrent(); err != nil {
		return nil, err
	}
	return w, nil
}

// path is the name of generation gen: 0 is replica.log, k > 0 replica.log.k.
func path(dir string, gen int) string {
	if gen == 0 {
		return filepath.Join(dir, FileName)
	}
	return filepath.Join(dir, FileName+"."+strconv.Itoa(gen))
}

// generation parses a directory entry's name: replica.log is 0,
// replica.log.<k> is k; ok is false for anything else.
func generation(name string) (gen int, ok bool) {
	if name == FileName {
		return 0, true
	}
	rest, found := strings.CutPrefix(name, FileName+".")
	if !found || rest == "" || rest[0] == '0' || rest[0] == '+' {
		return 0, false
	}
	k, err := strconv.Atoi(rest)
	return k, err == nil && k > 0
}

// pruneBeyond deletes rotated files numbered maxFiles or more.
func (w *Writer) pruneBeyond() error {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("replicalog: %w", err)
	}
	for _, e := range entries {
		if gen, ok := generation(e.Name()); ok && gen >= w.maxFiles {
			if err := os.Remove(filepath.Join(w.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("replicalog: %w", err)
			}
		}
	}
	return nil
}

// openCurrent opens replica.log for appending and records its size.
// w.mu must be held (or w not yet shared).
func (w *Writer) openCurrent() error {
	f, err := os.OpenFile(path(w.dir, 0), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("replicalog: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("replicalog: %w", err)
	}
	w.f, w.size = f, st.Size()
	return nil
}

// Write appends p. A p that does not fit in what is left of replica.log
// goes to a new one after a rotation; one larger than maxBytes fills
// files of maxBytes each. On an error, n says how much of p was written.
func (w *Writer) Write(p []byte) (n int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, ErrClosed
	}
	for len(p) > 0 {
		if w.f == nil { // a rotation failed halfway: try again
			if err := w.openCurrent(); err != nil {
				return n, err
			}
		}
		if w.size > 0 && w.size+int64(len(p)) > w.maxBytes {
			if err := w.rotate(); err != nil {
				return n, err
			}
			continue
		}
		chunk := p[:min(int64(len(p)), w.maxBytes-w.size)]
		m, err := w.f.Write(chunk)
		n += m
		w.size += int64(m)
		p = p[m:]
		if err != nil {
			return n, fmt.Errorf("replicalog: %w", err)
		}
	}
	return n, nil
}

// rotate closes replica.log, shifts every file one number up (deleting
// the one that would become replica.log.<maxFiles>) and opens a new
// replica.log. The current file is closed before it is renamed, so a
// reader that sees it renamed has seen its last write. w.mu must be held.
func (w *Writer) rotate() error {
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return fmt.Errorf("replicalog: %w", err)
	}
	// Oldest first, so that no rename has to replace a file and the disk
	// never holds more than maxFiles files.
	if err := os.Remove(path(w.dir, w.maxFiles-1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replicalog: %w", err)
	}
	for gen := w.maxFiles - 2; gen >= 0; gen-- {
		if err := os.Rename(path(w.dir, gen), path(w.dir, gen+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("replicalog: %w", err)
		}
	}
	return w.openCurrent()
}

// Close closes the current file. It is idempotent; later Writes return
// ErrClosed.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return fmt.Errorf("replicalog: %w", err)
	}
	return nil
}
