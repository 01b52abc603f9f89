package replicalog

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"time"
)

// Reader reads a replica's log files as one stream, oldest first. It is
// also the follower: its Read returns io.EOF once it has caught up with the
// writer, and a later Read returns what was appended since, across
// rotations: when replica.log has been renamed to replica.log.1, the
// Reader finishes the file it had open, then goes on with the file written
// after it, from its start, so nothing is lost and nothing repeated (unless
// the reader fell so far behind that the files it still had to read were
// deleted; it then goes on with the oldest file left).
//
// It holds at most one open file per log file. A Reader is not safe for
// concurrent use.
type Reader struct {
	dir  string
	cur  *os.File   // the file being read; nil after Close
	next []*os.File // files after cur, oldest first, opened with it
}

// ReadAll returns a Reader of everything in dir's log files, oldest first.
// The error wraps fs.ErrNotExist when dir has no log file.
func ReadAll(dir string) (*Reader, error) {
	files, err := openChain(dir)
	if err != nil {
		return nil, err
	}
	return &Reader{dir: dir, cur: files[0], next: files[1:]}, nil
}

// Tail returns a Reader that starts at the last n lines of dir's log files
// (all of them if they have fewer; at the end if n is 0). A last line
// without a newline counts as a line. It finds them by reading backwards
// in blocks of tailBlock bytes, so memory does not grow with the logs or
// with the length of their lines. The error wraps fs.ErrNotExist when dir
// has no log file.
func Tail(dir string, n int) (*Reader, error) {
	if n < 0 {
		return nil, fmt.Errorf("replicalog: tail %d: want 0 or more lines", n)
	}
	files, err := openChain(dir)
	if err != nil {
		return nil, err
	}
	i, off, err := tailStart(files, n)
	if err == nil {
		_, err = files[i].Seek(off, io.SeekStart)
	}
	if err != nil {
		closeAll(files)
		return nil, fmt.Errorf("replicalog: tail: %w", err)
	}
	closeAll(files[:i])
	return &Reader{dir: dir, cur: files[i], next: files[i+1:]}, nil
}

// tailBlock is how much Tail reads at a time, backwards.
const tailBlock = 64 << 10

// tailStart returns the file and offset where the last n lines of files
// (one stream, oldest first) begin.
func tailStart(files []*os.File, n int) (int, int64, error) {
	last := len(files) - 1
	if n == 0 {
		st, err := files[last].Stat()
		if err != nil {
			return 0, 0, err
		}
		return last, st.Size(), nil
	}
	buf := make([]byte, tailBlock)
	atEnd := true // no byte seen yet: a final '\n' ends the last line
	for i := last; i >= 0; i-- {
		st, err := files[i].Stat()
		if err != nil {
			return 0, 0, err
		}
		for end := st.Size(); end > 0; {
			start := max(0, end-tailBlock)
			b := buf[:end-start]
			if _, err := files[i].ReadAt(b, start); err != nil {
				return 0, 0, err
			}
			for j := len(b) - 1; j >= 0; j-- {
				if b[j] == '\n' && !atEnd {
					if n--; n == 0 {
						return i, start + int64(j) + 1, nil
					}
				}
				atEnd = false
			}
			end = start
		}
	}
	return 0, 0, nil
}

// Read reads the log on from where the Reader is; io.EOF means it has
// caught up with the writer for now.
func (r *Reader) Read(p []byte) (int, error) {
	if r.cur == nil {
		return 0, os.ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := r.cur.Read(p)
		if n > 0 || (err != nil && err != io.EOF) {
			return n, err
		}
		if len(r.next) > 0 {
			r.cur.Close()
			r.cur, r.next = r.next[0], r.next[1:]
			continue
		}
		if testHookAtEnd != nil {
			testHookAtEnd()
		}
		moved, err := r.findNext()
		if err != nil {
			return 0, err
		}
		if !moved {
			return 0, io.EOF
		}
		// Read cur once more to its end (the writer closed it before
		// renaming it, so this end is final), then go on with r.next.
	}
}

// testHookAtEnd, when set by a test, runs when Read has reached the end of
// the newest file it holds, before it looks for a rotation.
var testHookAtEnd func()

// findNext reports whether the writer has moved past cur, the newest file
// the Reader holds, and if so opens the files written after it into r.next.
func (r *Reader) findNext() (bool, error) {
	curInfo, err := r.cur.Stat()
	if err != nil {
		return false, err
	}
	st, err := os.Stat(path(r.dir, 0))
	if err != nil || os.SameFile(st, curInfo) {
		// Still the current file, or between the rename and the new
		// file's creation: nothing more for now.
		return false, nil
	}
	files, err := openChain(r.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // the directory was removed
	}
	if err != nil {
		return false, err
	}
	after := 0 // cur is gone: go on with the oldest file left
	for i, f := range files {
		if fi, err := f.Stat(); err == nil && os.SameFile(fi, curInfo) {
			after = i + 1
			break
		}
	}
	closeAll(files[:after])
	r.next = files[after:]
	return len(r.next) > 0, nil
}

// Close closes the Reader's files. It is idempotent.
func (r *Reader) Close() error {
	if r.cur == nil {
		return nil
	}
	err := r.cur.Close()
	closeAll(r.next)
	r.cur, r.next = nil, nil
	return err
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// chainAttempts bounds openChain's tries while a rotation is under way.
const chainAttempts = 20

// errRotating means the log files changed while they were being opened.
var errRotating = errors.New("log files changed while opening them")

// openChain opens dir's log files, oldest first, ending with replica.log,
// as a set that was consistent at one moment: while a rotation renames
// files under it, it tries again. After chainAttempts tries it takes the
// files it finds (a rotation that failed halfway can leave a gap). The
// error wraps fs.ErrNotExist when there are none.
func openChain(dir string) ([]*os.File, error) {
	for attempt := 1; ; attempt++ {
		files, err := tryOpenChain(dir, attempt < chainAttempts)
		if !errors.Is(err, errRotating) {
			return files, err
		}
		time.Sleep(time.Millisecond)
	}
}

// generations lists the generations of dir's log files, oldest (highest)
// first.
func generations(dir string) ([]int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("replicalog: %w", err)
	}
	var gens []int
	for _, e := range entries {
		if gen, ok := generation(e.Name()); ok {
			gens = append(gens, gen)
		}
	}
	slices.Sort(gens)
	slices.Reverse(gens)
	return gens, nil
}

// tryOpenChain opens dir's log files once. Strict, it returns errRotating
// unless the set is consistent:
//
//   - the names are replica.log.<k> down to replica.log without a gap (a
//     rotation renames from the oldest name down, each rename leaving a gap
//     that the next one fills; replica.log is missing last, until the new
//     one is created);
//   - each name is still the file opened under it once all are open, and
//     the names are still the same: a set opened partly before and partly
//     after a rotation has a name that changed after it was opened, since
//     the opens, too, go from the oldest name down.
func tryOpenChain(dir string, strict bool) ([]*os.File, error) {
	gens, err := generations(dir)
	if err != nil {
		return nil, err
	}
	notExist := &fs.PathError{Op: "open", Path: path(dir, 0), Err: fs.ErrNotExist}
	if len(gens) == 0 {
		return nil, notExist
	}
	if strict && (gens[0] != len(gens)-1 || gens[len(gens)-1] != 0) {
		return nil, errRotating
	}
	files := make([]*os.File, 0, len(gens))
	opened := make([]int, 0, len(gens))
	for _, gen := range gens {
		f, err := os.Open(path(dir, gen))
		switch {
		case errors.Is(err, fs.ErrNotExist) && strict:
			closeAll(files)
			return nil, errRotating
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			closeAll(files)
			return nil, fmt.Errorf("replicalog: %w", err)
		}
		files = append(files, f)
		opened = append(opened, gen)
	}
	if len(files) == 0 {
		return nil, notExist
	}
	if !strict {
		return files, nil
	}
	for i, gen := range opened {
		fi, err1 := files[i].Stat()
		st, err2 := os.Stat(path(dir, gen))
		if err1 != nil || err2 != nil || !os.SameFile(fi, st) {
			closeAll(files)
			return nil, errRotating
		}
	}
	if again, err := generations(dir); err != nil || !slices.Equal(again, gens) {
		closeAll(files)
		return nil, errRotating
	}
	return files, nil
}
