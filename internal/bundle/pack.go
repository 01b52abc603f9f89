package bundle

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/klauspost/compress/gzip"
)

// openFile opens a file to pack; tests replace it to make a read fail
// even as root.
var openFile = os.Open

// epoch is every entry's mtime, so that the archive does not depend on
// when files were touched.
var epoch = time.Unix(0, 0)

// Pack writes the bundle of workdir and opts.Mounts to w: a gzip-compressed
// tar archive, the same bytes for the same trees. An empty workdir packs
// an empty workdir/ directory. It walks everything first, without reading
// files, so a tree over opts.Limit fails before a byte is written. On an
// error, what was written to w is not a bundle.
func Pack(workdir string, opts Options, w io.Writer) (Manifest, error) {
	if opts.Limit <= 0 {
		opts.Limit = DefaultLimit
	}
	if opts.MaxFiles <= 0 {
		opts.MaxFiles = DefaultMaxFiles
	}
	wk := &walker{limit: opts.Limit, maxFiles: opts.MaxFiles}
	err := wk.collect(workdir, opts.Mounts)
	if errors.Is(err, errStop) || (err == nil && wk.bytes > opts.Limit) {
		return Manifest{}, wk.overLimit(err != nil)
	} else if err != nil {
		return Manifest{}, err
	}

	m := Manifest{Files: wk.files, Bytes: wk.bytes, Skipped: wk.skipped}
	mj := manifestJSON{Version: manifestFormat, Files: wk.files, Bytes: wk.bytes}
	for i, mt := range opts.Mounts {
		m.Mounts = append(m.Mounts, mt.Target)
		mj.Mounts = append(mj.Mounts, mountJSON{Target: mt.Target, Path: MountDir(i)})
	}
	head, err := json.MarshalIndent(mj, "", "  ")
	if err != nil {
		return Manifest{}, err
	}
	head = append(head, '\n')

	zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return Manifest{}, err
	}
	tw := tar.NewWriter(zw)
	err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ManifestName, Mode: 0o644, Size: int64(len(head)), ModTime: epoch})
	if err == nil {
		_, err = tw.Write(head)
	}
	for i := 0; err == nil && i < len(wk.entries); i++ {
		err = writeEntry(tw, &wk.entries[i])
	}
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// collect walks the workdir and the mounts.
func (w *walker) collect(workdir string, mounts []Mount) error {
	seen := make(map[string]bool, len(mounts))
	for _, mt := range mounts {
		if err := checkTarget(mt.Target); err != nil {
			return fmt.Errorf("file_mounts: %w", err)
		}
		if seen[mt.Target] {
			return fmt.Errorf("file_mounts: target %s is mounted twice", mt.Target)
		}
		seen[mt.Target] = true
	}
	if workdir == "" {
		t := &tree{label: "workdir", prefix: WorkdirDir, hint: "a .skyignore"}
		w.trees = append(w.trees, t)
		if err := w.add(entry{name: WorkdirDir, mode: fs.ModeDir | 0o755, from: t}); err != nil {
			return err
		}
	} else {
		t := newTree("workdir "+workdir, workdir, WorkdirDir)
		w.trees = append(w.trees, t)
		info, err := os.Stat(workdir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("workdir %s does not exist", workdir)
		case err != nil:
			return t.readError("directory", "", err)
		case !info.IsDir():
			return fmt.Errorf("workdir %s is not a directory", workdir)
		}
		if err := w.walkRoot(t, info); err != nil {
			return err
		}
	}
	if len(mounts) == 0 {
		return nil
	}
	if err := w.add(entry{name: mountsDir, mode: fs.ModeDir | 0o755, from: w.trees[0]}); err != nil {
		return err
	}
	for i, mt := range mounts {
		if err := w.walkMount(mt, MountDir(i)); err != nil {
			return err
		}
	}
	return nil
}

// walkMount adds one mount's source, a file or a directory tree.
func (w *walker) walkMount(mt Mount, prefix string) error {
	if mt.Source == "" {
		return fmt.Errorf("file_mounts %s: source is empty", mt.Target)
	}
	info, err := os.Stat(mt.Source) // a symlink named here is followed
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("file_mounts %s: source %s does not exist", mt.Target, mt.Source)
	}
	t := newTree(fmt.Sprintf("file_mounts %s (source %s)", mt.Target, mt.Source), mt.Source, prefix)
	if err != nil {
		return t.readError("source", "", err)
	}
	w.trees = append(w.trees, t)
	switch mode := info.Mode(); {
	case mode.IsDir():
		return w.walkRoot(t, info)
	case mode.IsRegular():
		t.single = true
		return w.add(entry{name: prefix, src: mt.Source, mode: mode.Perm(), size: info.Size(), from: t})
	default:
		return fmt.Errorf("file_mounts %s: source %s is a %s; only files and directories can be mounted",
			mt.Target, mt.Source, kindOf(mode))
	}
}

// writeEntry writes one entry's header and, for a file, its content.
func writeEntry(tw *tar.Writer, e *entry) error {
	h := &tar.Header{Name: e.name, Mode: int64(e.mode.Perm()), ModTime: epoch}
	switch {
	case e.mode.IsDir():
		h.Typeflag, h.Name = tar.TypeDir, e.name+"/"
		return tw.WriteHeader(h)
	case e.mode&fs.ModeSymlink != 0:
		h.Typeflag, h.Linkname = tar.TypeSymlink, e.link
		return tw.WriteHeader(h)
	}
	h.Typeflag, h.Size = tar.TypeReg, e.size
	f, err := openFile(e.src)
	if err != nil {
		return e.from.fileError(e, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return e.from.fileError(e, err)
	}
	if !info.Mode().IsRegular() || info.Size() != e.size {
		return fmt.Errorf("%s: file %s changed while it was packed; pack again", e.from.label, e.rel())
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	r := &errReader{r: io.LimitReader(f, e.size)}
	n, err := io.Copy(tw, r)
	if r.err != nil {
		return e.from.fileError(e, r.err)
	} else if err != nil {
		return err
	}
	if n != e.size {
		return fmt.Errorf("%s: file %s changed while it was packed; pack again", e.from.label, e.rel())
	}
	return nil
}

// rel is the entry's path relative to its tree's root, for messages.
func (e *entry) rel() string {
	if len(e.name) > len(e.from.prefix) {
		return e.name[len(e.from.prefix)+1:]
	}
	return e.src
}

func (t *tree) fileError(e *entry, err error) error {
	return t.readError("file", e.rel(), err)
}

// errReader keeps its reader's error apart from the writer's in io.Copy.
type errReader struct {
	r   io.Reader
	err error
}

func (r *errReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}
