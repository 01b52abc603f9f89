package bundle

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Copy makes dst a copy of src, a directory tree, a file or a symlink:
// a replica's private working copy of an unpacked workdir, which its setup
// may change. Regular files are copied (not linked), with their permission
// bits; symlinks are made again as they are and never followed. dst must
// not exist; its parent must. On an error, Copy removes what it made.
func Copy(src, dst string) error {
	info, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("copy %s: destination %s already exists", src, dst)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("copy: %w", err)
	}
	if err := copyEntry(src, dst, info); err != nil {
		// Everything is made with O_EXCL or Mkdir: "exists" can only
		// be dst itself, made by someone else meanwhile.
		if !errors.Is(err, fs.ErrExist) {
			os.RemoveAll(dst)
		}
		return err
	}
	return nil
}

func copyEntry(src, dst string, info fs.FileInfo) error {
	mode := info.Mode()
	switch {
	case mode.IsDir():
		return copyDir(src, dst, mode.Perm())
	case mode.IsRegular():
		return copyFile(src, dst, mode.Perm())
	case mode&fs.ModeSymlink != 0:
		link, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		if err := os.Symlink(link, dst); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		return nil
	}
	return fmt.Errorf("copy: %s is a %s; only files, directories and symlinks are copied", src, kindOf(mode))
}

// copyDir copies a tree; the directory gets its mode after its contents,
// so that a read-only directory can be filled.
func copyDir(src, dst string, perm fs.FileMode) error {
	if err := os.Mkdir(dst, 0o700); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	des, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	for _, de := range des {
		info, err := de.Info()
		if err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		if err := copyEntry(filepath.Join(src, de.Name()), filepath.Join(dst, de.Name()), info); err != nil {
			return err
		}
	}
	if err := os.Chmod(dst, perm); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	return nil
}

// copyFile copies one file; on Linux io.Copy between two files uses
// copy_file_range, so the kernel moves the bytes (or shares the blocks).
func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Chmod(perm); err != nil {
		out.Close()
		return fmt.Errorf("copy: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	return nil
}
