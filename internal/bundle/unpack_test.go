package bundle

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
)

// sandbox is a directory holding a sentinel file beside the destination
// that Unpack fills, to see that nothing escapes.
type sandbox struct {
	dir, dest, sentinel string
}

const sentinelContent = "outside dest"

func newSandbox(t testing.TB) *sandbox {
	t.Helper()
	s := &sandbox{dir: t.TempDir()}
	s.dest = filepath.Join(s.dir, "dest")
	s.sentinel = filepath.Join(s.dir, "sentinel")
	if err := os.WriteFile(s.sentinel, []byte(sentinelContent), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// check fails unless the sandbox holds only the sentinel, unchanged, and
// dest, which holds nothing if Unpack failed.
func (s *sandbox) check(t testing.TB, unpackErr error) {
	t.Helper()
	des, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		if de.Name() != "dest" && de.Name() != "sentinel" {
			t.Fatalf("Unpack made %s outside its destination", de.Name())
		}
	}
	info, err := os.Lstat(s.sentinel)
	if err != nil || !info.Mode().IsRegular() {
		t.Fatalf("the sentinel beside dest was replaced: %v %v", info, err)
	}
	if data, err := os.ReadFile(s.sentinel); err != nil || string(data) != sentinelContent {
		t.Fatalf("the sentinel beside dest was changed: %q %v", data, err)
	}
	if unpackErr != nil {
		if _, err := os.Lstat(s.dest); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Unpack failed (%v) but left %s behind", unpackErr, s.dest)
		}
		return
	}
	filepath.WalkDir(s.dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if info, err := d.Info(); err == nil && info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			t.Fatalf("%s has mode %v", p, info.Mode())
		}
		return nil
	})
}

func TestUnpackRefuses(t *testing.T) {
	m := manifestEntry
	tests := []struct {
		name    string
		entries []tarEntry
		want    string
		tooBig  bool
	}{
		{"dot dot", []tarEntry{m(1, 1), dir("workdir/"), file("workdir/../x", "x")}, `"workdir/../x" is not a clean relative path`, false},
		{"leading dot dot", []tarEntry{m(1, 1), dir("workdir/"), file("../x", "x")}, `"../x" is not a clean relative path`, false},
		{"absolute", []tarEntry{m(1, 1), dir("workdir/"), file("/etc/x", "x")}, `"/etc/x" is not a clean relative path`, false},
		{"dot", []tarEntry{m(1, 1), dir("workdir/"), file("workdir/./x", "x")}, `is not a clean relative path`, false},
		{"write through absolute symlink", []tarEntry{m(2, 1), dir("workdir/"), link("workdir/a", "/tmp"), file("workdir/a/x", "x")},
			`"workdir/a/x" is under the symlink "workdir/a"`, false},
		{"write through relative symlink", []tarEntry{m(2, 1), dir("workdir/"), link("workdir/a", "../.."), file("workdir/a/sentinel", "x")},
			`is under the symlink "workdir/a"`, false},
		{"dir through symlink", []tarEntry{m(1, 0), dir("workdir/"), link("workdir/a", "."), dir("workdir/a/b/")},
			`is under the symlink`, false},
		{"replace a symlink", []tarEntry{m(2, 1), dir("workdir/"), link("workdir/a", "/etc/passwd"), file("workdir/a", "x")},
			`"workdir/a" appears twice`, false},
		{"top-level symlink", []tarEntry{m(1, 0), link("workdir", "/")}, `"workdir" is not a directory`, false},
		{"hard link", []tarEntry{m(1, 0), dir("workdir/"), {h: tar.Header{Typeflag: tar.TypeLink, Name: "workdir/l", Linkname: "/etc/passwd"}}},
			`has type '1'`, false},
		{"device", []tarEntry{m(1, 0), dir("workdir/"), {h: tar.Header{Typeflag: tar.TypeChar, Name: "workdir/null", Devmajor: 1, Devminor: 3}}},
			`has type '3'`, false},
		{"fifo", []tarEntry{m(1, 0), dir("workdir/"), {h: tar.Header{Typeflag: tar.TypeFifo, Name: "workdir/p"}}}, `has type '6'`, false},
		{"outside the layout", []tarEntry{m(1, 1), dir("workdir/"), file("etc", "x")}, `"etc" is outside workdir/ and mounts/`, false},
		{"before its directory", []tarEntry{m(1, 1), file("workdir/x", "x"), dir("workdir/")}, `"workdir/x" comes before its directory`, false},
		{"under a file", []tarEntry{m(2, 2), dir("workdir/"), file("workdir/f", "x"), file("workdir/f/g", "x")}, `which is not a directory`, false},
		{"unknown mount", []tarEntry{m(1, 1, "/m"), dir("workdir/"), dir("mounts/"), file("mounts/1", "x")}, `not in one of the 1 mounts`, false},
		{"unclean mount index", []tarEntry{m(1, 1, "/m"), dir("workdir/"), dir("mounts/"), file("mounts/00", "x")}, `not in one of the 1 mounts`, false},
		{"missing mount", []tarEntry{m(0, 0, "/m"), dir("workdir/")}, `mount 0 (/m) is missing`, false},
		{"missing workdir", []tarEntry{m(0, 0)}, `no workdir/ directory`, false},
		{"no manifest", []tarEntry{dir("workdir/")}, `not a baton bundle: the first entry is "workdir/"`, false},
		{"newer format", []tarEntry{fileJSON(map[string]any{"version": 2}), dir("workdir/")}, `bundle format 2, this baton reads format 1`, false},
		{"bad mount target", []tarEntry{m(0, 0, "etc"), dir("workdir/")}, `mount 0: target "etc" is not an absolute path`, false},
		{"manifest lies", []tarEntry{m(1, 1), dir("workdir/"), file("workdir/x", "xx")}, `it holds 1 files of 2 B, its manifest says 1 files of 1 B`, false},
		{"too big declared", []tarEntry{m(1, 1<<40), dir("workdir/")}, `over the agent's limits`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			_, err := Unpack(bytes.NewReader(gz(t, makeTar(t, tt.entries...))), s.dest, UnpackOptions{})
			want := ErrUnsafeArchive
			if tt.tooBig {
				want = ErrTooLarge
			}
			if !errors.Is(err, want) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %v with %q", err, want, tt.want)
			}
			s.check(t, err)
		})
	}
}

func TestUnpackModes(t *testing.T) {
	exe := file("workdir/run", "#!/bin/sh\n")
	exe.h.Mode = 0o6755 // setuid and setgid: dropped
	ro := dir("workdir/ro/")
	ro.h.Mode = 0o1555 // sticky: dropped
	s := newSandbox(t)
	data := gz(t, makeTar(t, manifestEntry(3, 11), dir("workdir/"), exe, ro, file("workdir/ro/f", "x"), link("workdir/up", "../../..")))
	m, err := Unpack(bytes.NewReader(data), s.dest, UnpackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(s.dest, "workdir/ro"), 0o755) })
	s.check(t, nil)
	if m.Files != 3 || m.Bytes != 11 {
		t.Fatalf("manifest %+v", m)
	}
	want := []string{
		`.: dir -rwxr-xr-x`,
		`ro/f: file -rw-r--r-- "x"`,
		`ro: dir -r-xr-xr-x`,
		`run: file -rwxr-xr-x "#!/bin/sh\n"`,
		`up: link -> ../../..`,
	}
	if got := describe(t, filepath.Join(s.dest, WorkdirDir)); !slices.Equal(got, want) {
		t.Fatalf("unpacked:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if info, err := os.Stat(s.dest); err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("dest: %v %v, want mode 0700", info, err)
	}
}

func TestUnpackDestination(t *testing.T) {
	data, _ := pack(t, sampleTree(t), Options{})
	t.Run("not empty", func(t *testing.T) {
		dest := t.TempDir()
		write(t, dest, "old", "keep me")
		_, err := Unpack(bytes.NewReader(data), dest, UnpackOptions{})
		if err == nil || !strings.Contains(err.Error(), "is not empty") {
			t.Fatalf("error %v, want not empty", err)
		}
		if got, _ := os.ReadFile(filepath.Join(dest, "old")); string(got) != "keep me" {
			t.Fatal("Unpack changed a destination that was not empty")
		}
	})
	t.Run("empty, and failing", func(t *testing.T) {
		dest := t.TempDir()
		bad := gz(t, makeTar(t, manifestEntry(2, 1), dir("workdir/"), file("workdir/a", "x"), file("/etc/x", "")))
		if _, err := Unpack(bytes.NewReader(bad), dest, UnpackOptions{}); !errors.Is(err, ErrUnsafeArchive) {
			t.Fatalf("error %v", err)
		}
		if des, err := os.ReadDir(dest); err != nil || len(des) != 0 {
			t.Fatalf("after the failure dest holds %v (%v); want it empty", des, err)
		}
		if _, err := Unpack(bytes.NewReader(data), dest, UnpackOptions{}); err != nil {
			t.Fatalf("unpacking into the emptied dest: %v", err)
		}
	})
	t.Run("a file", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "f")
		write(t, filepath.Dir(dest), "f", "")
		if _, err := Unpack(bytes.NewReader(data), dest, UnpackOptions{}); err == nil || !strings.Contains(err.Error(), "is not a directory") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("not gzip", func(t *testing.T) {
		s := newSandbox(t)
		_, err := Unpack(strings.NewReader("hello"), s.dest, UnpackOptions{})
		if !errors.Is(err, ErrUnsafeArchive) || !strings.Contains(err.Error(), "not a gzip stream") {
			t.Fatalf("error %v", err)
		}
		s.check(t, err)
	})
	t.Run("truncated", func(t *testing.T) {
		s := newSandbox(t)
		_, err := Unpack(bytes.NewReader(data[:len(data)-20]), s.dest, UnpackOptions{})
		if !errors.Is(err, ErrUnsafeArchive) {
			t.Fatalf("error %v", err)
		}
		s.check(t, err)
	})
}

// zeros yields n zero bytes without holding them.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), z.n)
	clear(p[:k])
	z.n -= k
	return int(k), nil
}

func TestUnpackBomb(t *testing.T) {
	t.Run("bytes", func(t *testing.T) {
		// 16 MiB of zeros compresses to about 16 KiB; the
		// manifest lies about it.
		var data bytes.Buffer
		zw := gzip.NewWriter(&data)
		tw := tar.NewWriter(zw)
		head := manifestEntry(1, 1)
		tw.WriteHeader(&head.h)
		tw.Write([]byte(head.body))
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "workdir/", Mode: 0o755})
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "workdir/bomb", Mode: 0o644, Size: 16 << 20})
		if _, err := io.Copy(tw, &zeros{16 << 20}); err != nil {
			t.Fatal(err)
		}
		tw.Close()
		zw.Close()
		if data.Len() > 1<<20 {
			t.Fatalf("the bomb is %d bytes compressed", data.Len())
		}
		s := newSandbox(t)
		_, err := Unpack(&data, s.dest, UnpackOptions{MaxBytes: 1 << 20})
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), `"workdir/bomb" (16 MiB) takes the bundle past the agent's limit of 1 MiB`) {
			t.Fatalf("error %v", err)
		}
		s.check(t, err)
	})
	t.Run("bytes over many files", func(t *testing.T) {
		entries := []tarEntry{manifestEntry(0, 0), dir("workdir/")}
		for i := range 20 {
			entries = append(entries, file("workdir/f"+strings.Repeat("x", i), strings.Repeat("z", 100<<10)))
		}
		s := newSandbox(t)
		_, err := Unpack(bytes.NewReader(gz(t, makeTar(t, entries...))), s.dest, UnpackOptions{MaxBytes: 1 << 20})
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), `"workdir/fxxxxxxxxxx" (100 KiB) takes the bundle past`) {
			t.Fatalf("error %v", err)
		}
		s.check(t, err)
	})
	t.Run("entries", func(t *testing.T) {
		entries := []tarEntry{manifestEntry(0, 0), dir("workdir/")}
		for i := range 200 {
			entries = append(entries, dir("workdir/"+strings.Repeat("d", i+1)+"/"))
		}
		s := newSandbox(t)
		_, err := Unpack(bytes.NewReader(gz(t, makeTar(t, entries...))), s.dest, UnpackOptions{MaxFiles: 100})
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "over 100 entries") {
			t.Fatalf("error %v", err)
		}
		s.check(t, err)
	})
}

// FuzzUnpack unpacks gzip-compressed tar streams and checks that nothing
// is ever made outside the destination, no setuid bit survives, and a
// failure leaves nothing behind. The seeds are tar streams (the fuzzer
// wraps them in gzip), with PAX records so that the names can be mutated
// without breaking a header checksum.
func FuzzUnpack(f *testing.F) {
	pax := func(e tarEntry) tarEntry {
		e.h.Format = tar.FormatPAX
		e.h.PAXRecords = map[string]string{"comment": "x"}
		return e
	}
	seeds := [][]tarEntry{
		{manifestEntry(2, 2, "/m"), dir("workdir/"), pax(file("workdir/a", "x")), dir("mounts/"), pax(file("mounts/0", "y"))},
		{manifestEntry(1, 1), dir("workdir/"), pax(file("workdir/../sentinel", "x"))},
		{manifestEntry(1, 1), dir("workdir/"), pax(file("/tmp/baton-fuzz-escape", "x"))},
		{manifestEntry(2, 1), dir("workdir/"), pax(link("workdir/a", "..")), pax(file("workdir/a/x", "x"))},
		{manifestEntry(2, 1), dir("workdir/"), pax(link("workdir/a", "/tmp")), pax(file("workdir/a/x", "x"))},
		{manifestEntry(2, 1), dir("workdir/"), pax(link("workdir/a", "../../sentinel")), pax(file("workdir/a", "x"))},
		{manifestEntry(1, 1), dir("workdir/"), pax(tarEntry{h: tar.Header{Typeflag: tar.TypeLink, Name: "workdir/h", Linkname: "../sentinel"}})},
	}
	for _, s := range seeds {
		f.Add(makeTar(f, s...))
	}
	wd := f.TempDir()
	write(f, wd, "a/b.txt", "b")
	symlink(f, wd, "a/link", "../../x")
	var real bytes.Buffer
	if _, err := Pack(wd, Options{}, &real); err != nil {
		f.Fatal(err)
	}
	f.Add(must(gzipDecode(real.Bytes())))
	f.Fuzz(func(t *testing.T, tarData []byte) {
		s := newSandbox(t)
		// Stored, not compressed: the harness spends its time in Unpack.
		data := gzLevel(t, tarData, gzip.NoCompression)
		_, err := Unpack(bytes.NewReader(data), s.dest, UnpackOptions{MaxBytes: 1 << 20, MaxFiles: 1000})
		s.check(t, err)
		if _, err := os.Lstat("/tmp/baton-fuzz-escape"); err == nil {
			t.Fatal("Unpack wrote /tmp/baton-fuzz-escape")
		}
	})
}
