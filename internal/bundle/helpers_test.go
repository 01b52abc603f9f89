package bundle

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
)

// write makes the file rel under root with content, and its parents.
func write(t testing.TB, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// symlink makes rel under root point to target.
func symlink(t testing.TB, root, rel, target string) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func chmod(t testing.TB, root, rel string, mode fs.FileMode) {
	t.Helper()
	if err := os.Chmod(filepath.Join(root, filepath.FromSlash(rel)), mode); err != nil {
		t.Fatal(err)
	}
}

// pack packs and returns the archive's bytes.
func pack(t testing.TB, workdir string, opts Options) ([]byte, Manifest) {
	t.Helper()
	var buf bytes.Buffer
	m, err := Pack(workdir, opts, &buf)
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return buf.Bytes(), m
}

func digestOf(t testing.TB, data []byte) string {
	t.Helper()
	d, err := Digest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// archiveNames lists the archive's entry names in order.
func archiveNames(t testing.TB, data []byte) []string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		} else if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

// packedFiles lists the non-directory entries under workdir/, relative
// to it, sorted.
func packedFiles(t testing.TB, workdir string) []string {
	t.Helper()
	data, _ := pack(t, workdir, Options{})
	var files []string
	for _, n := range archiveNames(t, data) {
		if rel, ok := strings.CutPrefix(n, WorkdirDir+"/"); ok && !strings.HasSuffix(n, "/") {
			files = append(files, rel)
		}
	}
	slices.Sort(files)
	return files
}

// describe lists a tree as "path: kind mode [content | -> target]" lines,
// sorted, for comparing two trees.
func describe(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode()
		switch {
		case mode.IsDir():
			out = append(out, fmt.Sprintf("%s: dir %v", rel, mode.Perm()))
		case mode&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, fmt.Sprintf("%s: link -> %s", rel, link))
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out = append(out, fmt.Sprintf("%s: file %v %q", rel, mode, data))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// tarEntry is one entry of a hand-made archive.
type tarEntry struct {
	h    tar.Header
	body string
}

func dir(name string) tarEntry {
	return tarEntry{h: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}
func file(name, body string) tarEntry {
	return tarEntry{h: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body: body}
}
func link(name, target string) tarEntry {
	return tarEntry{h: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target}}
}

// manifestEntry is the first entry of an archive holding files regular
// files (and symlinks) of size bytes and the mounts.
func manifestEntry(files int, size int64, mounts ...string) tarEntry {
	mj := manifestJSON{Version: manifestFormat, Files: files, Bytes: size}
	for i, m := range mounts {
		mj.Mounts = append(mj.Mounts, mountJSON{Target: m, Path: MountDir(i)})
	}
	return fileJSON(mj)
}

func fileJSON(v any) tarEntry {
	return file(ManifestName, string(must(json.Marshal(v))))
}

// makeTar writes entries as a tar stream, without compressing it.
func makeTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.h
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t testing.TB, data []byte) []byte {
	t.Helper()
	return gzLevel(t, data, gzip.DefaultCompression)
}

func gzLevel(t testing.TB, data []byte, level int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func gzipDecode(data []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}
