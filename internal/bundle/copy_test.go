package bundle

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCopy(t *testing.T) {
	src := t.TempDir()
	write(t, src, "run.sh", "#!/bin/sh\n")
	chmod(t, src, "run.sh", 0o755)
	write(t, src, "secret", "s")
	chmod(t, src, "secret", 0o600)
	write(t, src, "ro/data", "d")
	chmod(t, src, "ro/data", 0o444)
	chmod(t, src, "ro", 0o555)
	write(t, src, "empty", "")
	os.Mkdir(filepath.Join(src, "emptydir"), 0o750)
	symlink(t, src, "abs", "/etc/hostname")
	symlink(t, src, "dir-link", "ro")
	symlink(t, src, "dangling", "nowhere")
	t.Cleanup(func() { os.Chmod(filepath.Join(src, "ro"), 0o755) })

	dst := filepath.Join(t.TempDir(), "copy")
	if err := Copy(src, dst); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dst, "ro"), 0o755) })
	if got, want := describe(t, dst), describe(t, src); !slices.Equal(got, want) {
		t.Fatalf("copy:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The copy is the replica's own: writing it leaves the source alone.
	write(t, dst, "run.sh", "changed")
	if data, _ := os.ReadFile(filepath.Join(src, "run.sh")); string(data) != "#!/bin/sh\n" {
		t.Fatal("writing the copy changed the source")
	}

	if err := Copy(src, dst); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("copying onto an existing destination: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(dst, "run.sh")); string(data) != "changed" {
		t.Fatal("a refused copy changed the destination")
	}
}

func TestCopyFileAndErrors(t *testing.T) {
	src := t.TempDir()
	write(t, src, "one", "1")
	chmod(t, src, "one", 0o640)
	dst := filepath.Join(t.TempDir(), "one")
	if err := Copy(filepath.Join(src, "one"), dst); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(dst); err != nil || info.Mode() != 0o640 {
		t.Fatalf("copied file: %v %v", info, err)
	}

	if err := Copy(filepath.Join(src, "missing"), filepath.Join(t.TempDir(), "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("copying a missing source: %v", err)
	}

	// A socket inside stops the copy, and the partial copy is removed.
	l, err := net.Listen("unix", filepath.Join(src, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	dst = filepath.Join(t.TempDir(), "tree")
	err = Copy(src, dst)
	if err == nil || !strings.Contains(err.Error(), "s.sock is a socket; only files, directories and symlinks are copied") {
		t.Fatalf("copying a socket: %v", err)
	}
	if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a failed copy left %s behind", dst)
	}
}

// TestUnpackThenCopy is the agent's path: unpack once, copy per replica.
func TestUnpackThenCopy(t *testing.T) {
	wd := sampleTree(t)
	data, _ := pack(t, wd, Options{})
	s := newSandbox(t)
	if _, err := Unpack(strings.NewReader(string(data)), s.dest, UnpackOptions{}); err != nil {
		t.Fatal(err)
	}
	replica := filepath.Join(t.TempDir(), "r1")
	if err := Copy(filepath.Join(s.dest, WorkdirDir), replica); err != nil {
		t.Fatal(err)
	}
	if got, want := describe(t, replica), describe(t, wd); !slices.Equal(got, want) {
		t.Fatalf("replica copy:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
