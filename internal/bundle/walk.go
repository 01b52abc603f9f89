package bundle

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// entry is one thing to pack.
type entry struct {
	name string      // archive path: "workdir/src/main.go"
	src  string      // local path; "" for a directory Pack makes up
	mode fs.FileMode // type bits and permission bits
	size int64       // regular files only
	link string      // symlinks only
	from *tree       // where it came from, for messages
}

// maxIgnoreFile bounds the size of one .skyignore or .gitignore.
const maxIgnoreFile = 1 << 20

// tree is one root to pack: the workdir or a mount's source.
type tree struct {
	// label starts every message about it: "workdir ./app",
	// "file_mounts /data (source ./data)".
	label  string
	root   string // local path
	prefix string // archive path: "workdir", "mounts/0"
	// ignoreName is the ignore file read in every directory: .skyignore
	// if the root has one, else .gitignore.
	ignoreName string
	// hint names the file to add ignore lines to, in messages.
	hint string
	// single: the root is a file (a mount of one file).
	single bool
}

// walker collects the entries of the trees, checking the limits as it
// goes, so that a tree over them fails before any file is read.
type walker struct {
	limit    int64
	maxFiles int

	trees   []*tree // the workdir's first
	entries []entry
	bytes   int64
	files   int // regular files and symlinks
	skipped []string
}

// newTree decides which ignore files apply under root.
func newTree(label, root, prefix string) *tree {
	t := &tree{label: label, root: root, prefix: prefix, ignoreName: gitignoreName, hint: "a .skyignore"}
	if _, err := os.Lstat(filepath.Join(root, skyignoreName)); err == nil {
		t.ignoreName, t.hint = skyignoreName, skyignoreName
	} else if _, err := os.Lstat(filepath.Join(root, gitignoreName)); err == nil {
		t.hint = gitignoreName
	}
	return t
}

// after says which ignore file the root has, for messages: " after
// .gitignore", or nothing.
func (t *tree) after() string {
	if t.hint == skyignoreName || t.hint == gitignoreName {
		return " after " + t.ignoreName
	}
	return ""
}

// add records one entry and enforces the limits.
func (w *walker) add(e entry) error {
	if len(w.entries) >= w.maxFiles {
		return kindErrorf(ErrTooLarge, "%s: over %d files and directories%s; ignore what the service does not need in %s",
			e.from.label, w.maxFiles, e.from.after(), e.from.hint)
	}
	w.entries = append(w.entries, e)
	if !e.mode.IsDir() {
		w.files++
	}
	w.bytes += e.size
	if w.bytes > stopFactor*w.limit {
		return errStop
	}
	return nil
}

// stopFactor: the walk goes on past the limit, to tell how large the
// trees are, until they are this many times over it.
const stopFactor = 4

// errStop ends a walk that is far over the limit.
var errStop = errors.New("far over the limit")

// walkRoot adds a tree whose root is a directory (the workdir, or a mount
// of one), the root itself first under t.prefix.
func (w *walker) walkRoot(t *tree, info fs.FileInfo) error {
	if err := w.add(entry{name: t.prefix, src: t.root, mode: fs.ModeDir | info.Mode().Perm(), from: t}); err != nil {
		return err
	}
	return w.walkDir(t, "", nil)
}

// walkDir adds the contents of directory rel of t ("" for its root);
// rules are the ignore rules of rel's ancestors.
func (w *walker) walkDir(t *tree, rel string, rules []rule) error {
	dir := filepath.Join(t.root, filepath.FromSlash(rel))
	des, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return t.readError("directory", rel, err)
	}
	if i, ok := slices.BinarySearchFunc(des, t.ignoreName, func(de fs.DirEntry, name string) int {
		return strings.Compare(de.Name(), name)
	}); ok && !des[i].IsDir() {
		more, err := readRules(filepath.Join(dir, t.ignoreName), rel)
		if err != nil {
			return t.readError("file", path.Join(rel, t.ignoreName), err)
		}
		rules = append(rules[:len(rules):len(rules)], more...)
	}
	for _, de := range des {
		if de.Name() == ".git" {
			continue
		}
		child := path.Join(rel, de.Name())
		info, err := de.Info() // lstat
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since ReadDir
		} else if err != nil {
			return t.readError("file", child, err)
		}
		mode := info.Mode()
		if ignored(rules, child, mode.IsDir()) {
			continue
		}
		e := entry{
			name: t.prefix + "/" + child,
			src:  filepath.Join(t.root, filepath.FromSlash(child)),
			mode: mode.Type() | mode.Perm(),
			from: t,
		}
		switch {
		case mode.IsDir():
			if err := w.add(e); err != nil {
				return err
			}
			if err := w.walkDir(t, child, rules); err != nil {
				return err
			}
			continue
		case mode.IsRegular():
			e.size = info.Size()
		case mode&fs.ModeSymlink != 0:
			if e.link, err = os.Readlink(e.src); err != nil {
				return t.readError("symlink", child, err)
			}
		default:
			w.skipped = append(w.skipped, e.src+" ("+kindOf(mode)+")")
			continue
		}
		if err := w.add(e); err != nil {
			return err
		}
	}
	return nil
}

// readRules reads the ignore file at p, found in directory rel. A
// symlink is followed, but only to a regular file.
func readRules(p, rel string) ([]rule, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxIgnoreFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxIgnoreFile {
		return nil, fmt.Errorf("over %s; an ignore file should hold patterns, not a file list", HumanBytes(maxIgnoreFile))
	}
	return parseRules(data, rel), nil
}

// readError is an error reading something under t, naming it and what
// to do about it.
func (t *tree) readError(what, rel string, err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		err = pe.Err
	}
	fix := ""
	switch {
	case !errors.Is(err, fs.ErrPermission):
	case rel == "" || t.single:
		fix = "; fix its permissions"
	default:
		fix = "; fix its permissions or add it to " + t.hint
	}
	if rel == "" {
		return fmt.Errorf("%s: %w%s", t.label, err, fix)
	}
	return fmt.Errorf("%s: %s %s: %w%s", t.label, what, rel, err, fix)
}

// kindOf names a file type that Pack leaves out.
func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "irregular file"
}

// overLimit is the error for trees whose files add up to more than the
// limit, naming the largest files; stopped says the walk ended early.
func (w *walker) overLimit(stopped bool) error {
	files := make([]entry, 0, len(w.entries))
	for _, e := range w.entries {
		if e.mode.IsRegular() {
			files = append(files, e)
		}
	}
	slices.SortFunc(files, func(a, b entry) int { return cmp.Compare(b.size, a.size) })
	var largest []string
	for _, e := range files[:min(3, len(files))] {
		largest = append(largest, e.src+" "+HumanBytes(e.size))
	}
	first := w.trees[0]
	what := first.label
	if len(w.trees) > 1 {
		what += " with its file_mounts"
	}
	size := HumanBytes(w.bytes)
	if stopped {
		size = "over " + HumanBytes(stopFactor*w.limit)
	}
	return kindErrorf(ErrTooLarge,
		"%s is %s%s, over the %s limit (largest: %s); ignore large files in %s, or use --no-upload with a path the agents share",
		what, size, first.after(), HumanBytes(w.limit), strings.Join(largest, ", "), first.hint)
}
