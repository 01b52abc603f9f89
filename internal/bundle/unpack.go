package bundle

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"
)

// UnpackOptions bound what Unpack accepts, so that a damaged or hostile
// archive (a gzip bomb) fails instead of filling the disk.
type UnpackOptions struct {
	// MaxBytes is the most uncompressed bytes of regular files. Default
	// (zero) DefaultLimit plus a quarter: 1.25 GiB.
	MaxBytes int64
	// MaxFiles is the most entries: files, directories and symlinks.
	// Default (zero) DefaultMaxFiles plus a quarter.
	MaxFiles int
}

// Unpack extracts the bundle that r yields into dest, which must be an
// empty directory or not exist (its parent must). The workdir lands in
// dest/workdir, mount i in dest/mounts/<i> (MountDir), and the manifest
// in dest/.baton-bundle.json. dest is created with mode 0700; inside it,
// permission bits are kept (setuid, setgid and sticky never are).
//
// Unpack refuses, wrapping ErrUnsafeArchive, entries with absolute paths,
// ".." or unclean paths, entries whose parent is a symlink or comes later
// in the archive, duplicates, and types other than files, directories and
// symlinks; symlinks are made as they are, wherever they point, but
// nothing is ever written through one. Past opts' bounds it fails with
// ErrTooLarge. On an error it removes what it made.
func Unpack(r io.Reader, dest string, opts UnpackOptions) (m Manifest, err error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultLimit + DefaultLimit/4
	}
	if opts.MaxFiles <= 0 {
		opts.MaxFiles = DefaultMaxFiles + DefaultMaxFiles/4
	}
	created, err := prepareDest(dest)
	if err != nil {
		return Manifest{}, err
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return Manifest{}, err
	}
	defer root.Close()
	u := &unpacker{root: root, opts: opts, kinds: make(map[string]fs.FileMode)}
	defer func() {
		if err != nil {
			u.cleanup(dest, created)
		}
	}()
	zr, err := gzip.NewReader(r)
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: not a gzip stream: %v", ErrUnsafeArchive, err)
	}
	tr := tar.NewReader(zr)
	if err := u.readManifest(tr); err != nil {
		return Manifest{}, err
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			return Manifest{}, fmt.Errorf("%w: %v", ErrUnsafeArchive, err)
		}
		if err := u.extract(h, tr); err != nil {
			return Manifest{}, err
		}
	}
	// Read the gzip trailer too, so that its checksum is checked.
	if _, err := io.Copy(io.Discard, io.LimitReader(zr, 1<<20)); err != nil {
		return Manifest{}, fmt.Errorf("%w: %v", ErrUnsafeArchive, err)
	}
	if err := u.finish(); err != nil {
		return Manifest{}, err
	}
	for _, mt := range u.manifest.Mounts {
		m.Mounts = append(m.Mounts, mt.Target)
	}
	m.Files, m.Bytes = u.files, u.bytes
	return m, nil
}

// prepareDest makes dest, or checks that it is an empty directory.
func prepareDest(dest string) (created bool, err error) {
	info, err := os.Lstat(dest)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(dest, 0o700); err != nil {
			return false, fmt.Errorf("unpack: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("unpack: %w", err)
	case !info.IsDir():
		return false, fmt.Errorf("unpack: %s is not a directory", dest)
	}
	f, err := os.Open(dest)
	if err != nil {
		return false, fmt.Errorf("unpack: %w", err)
	}
	defer f.Close()
	if names, _ := f.Readdirnames(1); len(names) > 0 {
		return false, fmt.Errorf("unpack: %s is not empty", dest)
	}
	return false, nil
}

// unpacker is one Unpack's state.
type unpacker struct {
	root     *os.Root
	opts     UnpackOptions
	manifest manifestJSON
	// kinds holds what each path made so far is (type bits only).
	kinds   map[string]fs.FileMode
	dirs    []dirMode // made with 0700, to get their modes at the end
	entries int
	files   int
	bytes   int64
}

type dirMode struct {
	name string
	perm fs.FileMode
}

func unsafe(name, format string, args ...any) error {
	return fmt.Errorf("%w: entry %q %s", ErrUnsafeArchive, name, fmt.Sprintf(format, args...))
}

// readManifest reads and checks the first entry, and writes it to dest.
func (u *unpacker) readManifest(tr *tar.Reader) error {
	h, err := tr.Next()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnsafeArchive, err)
	}
	if h.Name != ManifestName || h.Typeflag != tar.TypeReg || h.Size > maxManifestSize {
		return fmt.Errorf("%w: not a baton bundle: the first entry is %q, not %s", ErrUnsafeArchive, h.Name, ManifestName)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnsafeArchive, ManifestName, err)
	}
	mj := &u.manifest
	if err := json.Unmarshal(data, mj); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnsafeArchive, ManifestName, err)
	}
	switch {
	case mj.Version != manifestFormat:
		return fmt.Errorf("%w: bundle format %d, this baton reads format %d; use the same baton version to pack and run",
			ErrUnsafeArchive, mj.Version, manifestFormat)
	case mj.Bytes > u.opts.MaxBytes || mj.Files > u.opts.MaxFiles:
		return kindErrorf(ErrTooLarge, "the bundle holds %d files of %s, over the agent's limits (%d entries, %s)",
			mj.Files, HumanBytes(mj.Bytes), u.opts.MaxFiles, HumanBytes(u.opts.MaxBytes))
	}
	seen := make(map[string]bool, len(mj.Mounts))
	for i, mt := range mj.Mounts {
		if err := checkTarget(mt.Target); err != nil {
			return fmt.Errorf("%w: %s: mount %d: %v", ErrUnsafeArchive, ManifestName, i, err)
		}
		if mt.Path != MountDir(i) || seen[mt.Target] {
			return fmt.Errorf("%w: %s: mount %d (%s) is at %q or repeated", ErrUnsafeArchive, ManifestName, i, mt.Target, mt.Path)
		}
		seen[mt.Target] = true
	}
	if err := u.root.WriteFile(ManifestName, data, 0o644); err != nil {
		return err
	}
	u.kinds[ManifestName] = 0
	return nil
}

// extract makes one entry.
func (u *unpacker) extract(h *tar.Header, r io.Reader) error {
	name, err := u.checkName(h)
	if err != nil {
		return err
	}
	u.entries++
	if u.entries > u.opts.MaxFiles {
		return kindErrorf(ErrTooLarge, "the bundle has over %d entries", u.opts.MaxFiles)
	}
	perm := fs.FileMode(h.Mode) & fs.ModePerm
	switch h.Typeflag {
	case tar.TypeDir:
		if err := u.root.Mkdir(name, 0o700); err != nil {
			return err
		}
		u.kinds[name] = fs.ModeDir
		u.dirs = append(u.dirs, dirMode{name, perm})
	case tar.TypeSymlink:
		if h.Linkname == "" || strings.ContainsRune(h.Linkname, 0) {
			return unsafe(name, "is a symlink to %q", h.Linkname)
		}
		if err := u.root.Symlink(h.Linkname, name); err != nil {
			return err
		}
		u.kinds[name] = fs.ModeSymlink
		u.files++
	case tar.TypeReg:
		if h.Size < 0 || h.Size > u.opts.MaxBytes-u.bytes {
			return kindErrorf(ErrTooLarge, "entry %q (%s) takes the bundle past the agent's limit of %s",
				name, HumanBytes(h.Size), HumanBytes(u.opts.MaxBytes))
		}
		u.kinds[name] = 0 // before creating it, so that cleanup sees it
		if err := u.writeFile(name, r, h.Size, perm); err != nil {
			return err
		}
		u.files++
		u.bytes += h.Size
	default:
		return unsafe(name, "has type %q; bundles hold only files, directories and symlinks", h.Typeflag)
	}
	return nil
}

func (u *unpacker) writeFile(name string, r io.Reader, size int64, perm fs.FileMode) error {
	f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, r) // the tar reader stops at the entry's size
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("%w: entry %q: %v", ErrUnsafeArchive, name, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkName returns the entry's path without a directory's trailing
// slash, if it is clean, under workdir/ or a mount, and inside a
// directory made before.
func (u *unpacker) checkName(h *tar.Header) (string, error) {
	name := h.Name
	if h.Typeflag == tar.TypeDir {
		name = strings.TrimSuffix(name, "/")
	}
	if !fs.ValidPath(name) || name == "." {
		return "", unsafe(h.Name, "is not a clean relative path")
	}
	top, rest, nested := strings.Cut(name, "/")
	switch {
	case top == WorkdirDir || top == mountsDir:
		if !nested && h.Typeflag != tar.TypeDir {
			return "", unsafe(name, "is not a directory")
		}
	default:
		return "", unsafe(name, "is outside %s/ and %s/", WorkdirDir, mountsDir)
	}
	if top == mountsDir && nested {
		idx, _, deeper := strings.Cut(rest, "/")
		n, err := strconv.Atoi(idx)
		if err != nil || strconv.Itoa(n) != idx || n >= len(u.manifest.Mounts) {
			return "", unsafe(name, "is not in one of the %d mounts of the manifest", len(u.manifest.Mounts))
		}
		if !deeper && h.Typeflag != tar.TypeDir && h.Typeflag != tar.TypeReg {
			return "", unsafe(name, "is a mount but not a file or a directory")
		}
	}
	if _, dup := u.kinds[name]; dup {
		return "", unsafe(name, "appears twice")
	}
	if parent := path.Dir(name); parent != "." {
		switch k, ok := u.kinds[parent]; {
		case !ok:
			return "", unsafe(name, "comes before its directory")
		case k == fs.ModeSymlink:
			return "", unsafe(name, "is under the symlink %q; nothing is written through a symlink", parent)
		case k != fs.ModeDir:
			return "", unsafe(name, "is under %q, which is not a directory", parent)
		}
	}
	return name, nil
}

// finish checks the archive against its manifest and gives directories
// their modes, the deepest first.
func (u *unpacker) finish() error {
	if u.kinds[WorkdirDir] != fs.ModeDir {
		return fmt.Errorf("%w: no %s/ directory", ErrUnsafeArchive, WorkdirDir)
	}
	for i := range u.manifest.Mounts {
		if _, ok := u.kinds[MountDir(i)]; !ok {
			return fmt.Errorf("%w: mount %d (%s) is missing", ErrUnsafeArchive, i, u.manifest.Mounts[i].Target)
		}
	}
	if u.files != u.manifest.Files || u.bytes != u.manifest.Bytes {
		return fmt.Errorf("%w: it holds %d files of %s, its manifest says %d files of %s",
			ErrUnsafeArchive, u.files, HumanBytes(u.bytes), u.manifest.Files, HumanBytes(u.manifest.Bytes))
	}
	for i := len(u.dirs) - 1; i >= 0; i-- {
		if err := u.root.Chmod(u.dirs[i].name, u.dirs[i].perm); err != nil {
			return err
		}
	}
	return nil
}

// cleanup removes what Unpack made: dest if it made it, else the entries
// at its top.
func (u *unpacker) cleanup(dest string, created bool) {
	if created {
		os.RemoveAll(dest)
		return
	}
	for name := range u.kinds {
		if !strings.Contains(name, "/") {
			os.RemoveAll(filepath.Join(dest, name))
		}
	}
}
