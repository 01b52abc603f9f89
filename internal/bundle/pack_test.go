package bundle

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sampleTree makes a small workdir with an executable, a symlink and a
// nested directory.
func sampleTree(t *testing.T) string {
	t.Helper()
	wd := t.TempDir()
	write(t, wd, "app.py", "print('hi')\n")
	write(t, wd, "run.sh", "#!/bin/sh\nexec python app.py\n")
	chmod(t, wd, "run.sh", 0o755)
	write(t, wd, "pkg/mod/lib.py", "x = 1\n")
	symlink(t, wd, "pkg/current", "mod")
	return wd
}

func TestPackDeterministic(t *testing.T) {
	wd := sampleTree(t)
	first, _ := pack(t, wd, Options{})
	again, _ := pack(t, wd, Options{})
	if !bytes.Equal(first, again) {
		t.Fatal("packing the same tree twice gave different bytes")
	}
	want := digestOf(t, first)

	// Touching every file and directory changes nothing.
	later := time.Now().Add(time.Hour)
	for _, rel := range []string{"app.py", "run.sh", "pkg", "pkg/mod", "pkg/mod/lib.py", "."} {
		if err := os.Chtimes(filepath.Join(wd, rel), later, later); err != nil {
			t.Fatal(err)
		}
	}
	touched, _ := pack(t, wd, Options{})
	if got := digestOf(t, touched); got != want {
		t.Fatalf("touching the files changed the digest: %s, want %s", got, want)
	}

	// The same tree at another path, made in another order, packs the same.
	other := t.TempDir()
	symlink(t, other, "pkg/current", "mod")
	write(t, other, "pkg/mod/lib.py", "x = 1\n")
	write(t, other, "run.sh", "#!/bin/sh\nexec python app.py\n")
	chmod(t, other, "run.sh", 0o755)
	write(t, other, "app.py", "print('hi')\n")
	if got := digestOf(t, must(packBytes(other))); got != want {
		t.Fatalf("the same tree elsewhere has digest %s, want %s", got, want)
	}

	changes := []struct {
		name   string
		change func()
	}{
		{"one byte", func() { write(t, wd, "pkg/mod/lib.py", "x = 2\n") }},
		{"exec bit", func() { chmod(t, wd, "app.py", 0o755) }},
		{"symlink target", func() {
			os.Remove(filepath.Join(wd, "pkg/current"))
			symlink(t, wd, "pkg/current", "mod/lib.py")
		}},
		{"new empty dir", func() { os.Mkdir(filepath.Join(wd, "empty"), 0o755) }},
	}
	seen := map[string]string{want: "original"}
	for _, c := range changes {
		c.change()
		d := digestOf(t, must(packBytes(wd)))
		if prev, ok := seen[d]; ok {
			t.Fatalf("after %s the digest is the same as after %s", c.name, prev)
		}
		seen[d] = c.name
	}
}

func packBytes(workdir string) ([]byte, error) {
	var buf bytes.Buffer
	_, err := Pack(workdir, Options{}, &buf)
	return buf.Bytes(), err
}

func TestPackLayout(t *testing.T) {
	wd := sampleTree(t)
	data, m := pack(t, wd, Options{})
	want := []string{
		ManifestName, "workdir/", "workdir/app.py", "workdir/pkg/", "workdir/pkg/current",
		"workdir/pkg/mod/", "workdir/pkg/mod/lib.py", "workdir/run.sh",
	}
	if got := archiveNames(t, data); !slices.Equal(got, want) {
		t.Fatalf("entries:\n%q\nwant\n%q", got, want)
	}
	if m.Files != 4 || m.Bytes != int64(len("print('hi')\n")+len("#!/bin/sh\nexec python app.py\n")+len("x = 1\n")) {
		t.Fatalf("manifest %+v", m)
	}

	// No workdir: an empty workdir/.
	data, m = pack(t, "", Options{})
	if got := archiveNames(t, data); !slices.Equal(got, []string{ManifestName, "workdir/"}) {
		t.Fatalf("entries without a workdir: %q", got)
	}
	if m.Files != 0 {
		t.Fatalf("manifest without a workdir: %+v", m)
	}
}

func TestPackIgnore(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{
			name:  "nothing to ignore but .git",
			files: map[string]string{"a.py": "", ".git/HEAD": "ref", "sub/.git": "gitdir: x", "sub/b.py": ""},
			want:  []string{"a.py", "sub/b.py"},
		},
		{
			name: "gitignore with negation, dir pattern, anchor and **",
			files: map[string]string{
				".gitignore": "*.log\n!keep.log\nbuild/\n/top.txt\ndocs/**/*.pdf\n# comment\n\n",
				"a.log":      "", "keep.log": "", "sub/b.log": "", "sub/keep.log": "",
				"build/out": "", "sub/build/out": "", "src/build": "",
				"top.txt": "", "sub/top.txt": "",
				"docs/x.pdf": "", "docs/a/b/y.pdf": "", "docs/y.md": "",
			},
			want: []string{
				".gitignore", "docs/y.md", "keep.log", "src/build", "sub/keep.log", "sub/top.txt",
			},
		},
		{
			name: "nested gitignore adds and overrides",
			files: map[string]string{
				".gitignore":         "*.tmp\n",
				"a.tmp":              "",
				"sub/.gitignore":     "!*.tmp\n/local.txt\n",
				"sub/b.tmp":          "",
				"sub/local.txt":      "",
				"sub/deep/local.txt": "",
				"other/c.tmp":        "",
			},
			want: []string{".gitignore", "sub/.gitignore", "sub/b.tmp", "sub/deep/local.txt"},
		},
		{
			name: "an ignored directory cannot be re-included into",
			files: map[string]string{
				".gitignore": "out/\n!out/keep\n",
				"out/keep":   "", "out/drop": "",
			},
			want: []string{".gitignore"},
		},
		{
			name: "dir/** keeps the directory so a file in it can come back",
			files: map[string]string{
				".gitignore": "out/**\n!out/keep\n",
				"out/keep":   "", "out/drop": "",
			},
			want: []string{".gitignore", "out/keep"},
		},
		{
			name: "skyignore wins over gitignore, nested skyignore too",
			files: map[string]string{
				".skyignore":     "data/\n",
				".gitignore":     "*.py\n",
				"a.py":           "",
				"data/big.bin":   "",
				"sub/.skyignore": "*.ckpt\n",
				"sub/.gitignore": "*.txt\n",
				"sub/m.ckpt":     "", "sub/n.txt": "",
			},
			want: []string{".gitignore", ".skyignore", "a.py", "sub/.gitignore", "sub/.skyignore", "sub/n.txt"},
		},
		{
			name: "a .skyignore below the root does not switch from .gitignore",
			files: map[string]string{
				".gitignore":     "*.txt\n",
				"sub/.skyignore": "*.py\n",
				"sub/a.py":       "", "sub/b.txt": "",
			},
			want: []string{".gitignore", "sub/.skyignore", "sub/a.py"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wd := t.TempDir()
			for rel, content := range tt.files {
				write(t, wd, rel, content)
			}
			if got := packedFiles(t, wd); !slices.Equal(got, tt.want) {
				t.Fatalf("packed %q\nwant   %q", got, tt.want)
			}
		})
	}
}

func TestPackKeepsSymlinksAndModes(t *testing.T) {
	outside := t.TempDir()
	write(t, outside, "secret", "do not pack me")
	wd := t.TempDir()
	write(t, wd, "bin/tool", "#!/bin/sh\n")
	chmod(t, wd, "bin/tool", 0o750)
	write(t, wd, "private.key", "k")
	chmod(t, wd, "private.key", 0o600)
	write(t, wd, "ro/file", "r")
	chmod(t, wd, "ro", 0o555)
	symlink(t, wd, "rel", "bin/tool")
	symlink(t, wd, "escape", filepath.Join(outside, "secret"))
	symlink(t, wd, "escape-dir", outside)
	symlink(t, wd, "up", "../..")
	symlink(t, wd, "dangling", "no/such/file")
	// Names past the old tar header's 100 bytes, and not ASCII.
	long := strings.Repeat("long-name-", 12)
	write(t, wd, "ünï/ファイル.txt", "u")
	write(t, wd, long+"/"+long, "l")
	symlink(t, wd, "long-link", long+"/"+long)
	t.Cleanup(func() { os.Chmod(filepath.Join(wd, "ro"), 0o755) })

	data, m := pack(t, wd, Options{})
	if m.Bytes != int64(len("#!/bin/sh\n")+4) {
		t.Fatalf("packed %d bytes: something behind a symlink was read", m.Bytes)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := Unpack(bytes.NewReader(data), dest, UnpackOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dest, "workdir/ro"), 0o755) })
	got, want := describe(t, filepath.Join(dest, WorkdirDir)), describe(t, wd)
	if !slices.Equal(got, want) {
		t.Fatalf("unpacked tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestPackMounts(t *testing.T) {
	wd := sampleTree(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("a: 1\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	chmod(t, data, ".", 0o755)
	write(t, data, "train.csv", "1,2\n")
	write(t, data, ".gitignore", "*.cache\n")
	write(t, data, "x.cache", "junk")
	// A symlink given as the source is followed.
	cfgLink := filepath.Join(t.TempDir(), "link.yaml")
	if err := os.Symlink(cfg, cfgLink); err != nil {
		t.Fatal(err)
	}
	opts := Options{Mounts: []Mount{
		{Target: "/etc/app/config.yaml", Source: cfgLink},
		{Target: "~/data", Source: data},
	}}
	archive, m := pack(t, wd, opts)
	if want := []string{"/etc/app/config.yaml", "~/data"}; !slices.Equal(m.Mounts, want) {
		t.Fatalf("Pack's mounts %q, want %q", m.Mounts, want)
	}
	dest := filepath.Join(t.TempDir(), "out")
	um, err := Unpack(bytes.NewReader(archive), dest, UnpackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(um.Mounts, m.Mounts) || um.Files != m.Files || um.Bytes != m.Bytes {
		t.Fatalf("Unpack's manifest %+v, Pack's %+v", um, m)
	}
	if got := describe(t, filepath.Join(dest, MountDir(0))); !slices.Equal(got, []string{`.: file -rw-r----- "a: 1\n"`}) {
		t.Fatalf("mount 0: %q", got)
	}
	wantData := []string{`.: dir -rwxr-xr-x`, `.gitignore: file -rw-r--r-- "*.cache\n"`, `train.csv: file -rw-r--r-- "1,2\n"`}
	if got := describe(t, filepath.Join(dest, MountDir(1))); !slices.Equal(got, wantData) {
		t.Fatalf("mount 1:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantData, "\n"))
	}
	head, err := os.ReadFile(filepath.Join(dest, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"target": "/etc/app/config.yaml"`, `"path": "mounts/0"`, `"target": "~/data"`, `"path": "mounts/1"`} {
		if !strings.Contains(string(head), want) {
			t.Fatalf("%s lacks %s:\n%s", ManifestName, want, head)
		}
	}
}

func TestPackMountErrors(t *testing.T) {
	wd := t.TempDir()
	src := t.TempDir()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	tests := []struct {
		name   string
		mounts []Mount
		want   string
	}{
		{"missing source", []Mount{{Target: "/data", Source: "./no/such/dir"}}, "file_mounts /data: source ./no/such/dir does not exist"},
		{"empty source", []Mount{{Target: "/data"}}, "file_mounts /data: source is empty"},
		{"relative target", []Mount{{Target: "data", Source: src}}, `target "data" is not an absolute path`},
		{"unclean target", []Mount{{Target: "/data/../etc", Source: src}}, `not a clean path`},
		{"root target", []Mount{{Target: "/", Source: src}}, `not a clean path`},
		{"twice", []Mount{{Target: "/d", Source: src}, {Target: "/d", Source: src}}, "target /d is mounted twice"},
		{"socket", []Mount{{Target: "/s", Source: sock}}, "is a socket; only files and directories can be mounted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			_, err := Pack(wd, Options{Mounts: tt.mounts}, &buf)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one with %q", err, tt.want)
			}
			if buf.Len() != 0 {
				t.Fatalf("wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

func TestPackWorkdirErrors(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	write(t, filepath.Dir(f), "file", "")
	for _, tt := range []struct{ name, workdir, want string }{
		{"missing", "./no/such/workdir", "workdir ./no/such/workdir does not exist"},
		{"a file", f, "workdir " + f + " is not a directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Pack(tt.workdir, Options{}, &bytes.Buffer{})
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// countOpens replaces openFile for the test, counting the files read.
func countOpens(t *testing.T, fail string) *int {
	t.Helper()
	n := new(int)
	orig := openFile
	openFile = func(name string) (*os.File, error) {
		*n++
		if fail != "" && filepath.Base(name) == fail {
			return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EACCES}
		}
		return orig(name)
	}
	t.Cleanup(func() { openFile = orig })
	return n
}

func TestPackLimit(t *testing.T) {
	wd := t.TempDir()
	write(t, wd, ".gitignore", "*.tmp\n")
	write(t, wd, "small.txt", "hello")
	write(t, wd, "ignored.tmp", strings.Repeat("x", 4<<20))
	// A 3 GiB sparse file: reading it would take seconds, not microseconds.
	big := filepath.Join(wd, "model.bin")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 3<<30); err != nil {
		t.Fatal(err)
	}
	opens := countOpens(t, "")
	var buf bytes.Buffer
	_, err := Pack(wd, Options{Limit: 2 << 30}, &buf)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("error %v, want ErrTooLarge", err)
	}
	want := "workdir " + wd + " is 3 GiB after .gitignore, over the 2 GiB limit (largest: " + big + " 3 GiB, " +
		filepath.Join(wd, ".gitignore") + " 6 B, " + filepath.Join(wd, "small.txt") +
		" 5 B); ignore large files in .gitignore, or use --no-upload with a path the agents share"
	if got := err.Error(); got != want {
		t.Fatalf("error\n%s\nwant\n%s", got, want)
	}
	if *opens != 0 || buf.Len() != 0 {
		t.Fatalf("read %d files and wrote %d bytes before failing; want none", *opens, buf.Len())
	}

	// Far over the limit, the walk stops early.
	_, err = Pack(wd, Options{Limit: 1 << 20}, &buf)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), " is over 4 MiB after .gitignore, over the 1 MiB limit (largest: "+big) {
		t.Fatalf("error %v, want over 4 MiB", err)
	}

	// Under the limit once ignored, but mounts count too.
	write(t, wd, ".skyignore", "*.bin\n*.tmp\n")
	mount := t.TempDir()
	write(t, mount, "weights", strings.Repeat("w", 100))
	_, err = Pack(wd, Options{Limit: 100, Mounts: []Mount{{Target: "/w", Source: mount}}}, &buf)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "with its file_mounts is 123 B after .skyignore") ||
		!strings.Contains(err.Error(), "ignore large files in .skyignore") {
		t.Fatalf("error %v, want the workdir and mounts over 100 B", err)
	}

	// Too many entries fails as soon as it is counted.
	_, err = Pack(wd, Options{MaxFiles: 3}, &buf)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "over 3 files and directories") {
		t.Fatalf("error %v, want over 3 files", err)
	}
}

func TestPackUnreadable(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		// Root reads anything whatever its mode, so the open fails by
		// hand here; the next subtest makes the real case when not root.
		wd := sampleTree(t)
		write(t, wd, "secret.key", "k")
		countOpens(t, "secret.key")
		_, err := Pack(wd, Options{}, &bytes.Buffer{})
		want := "workdir " + wd + ": file secret.key: permission denied; fix its permissions or add it to a .skyignore"
		if err == nil || err.Error() != want {
			t.Fatalf("error %v\nwant %s", err, want)
		}
		if !errors.Is(err, fs.ErrPermission) {
			t.Fatal("the error does not wrap fs.ErrPermission")
		}
	})
	t.Run("chmod 000", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads files and directories whatever their modes; the subtest above covers the message")
		}
		wd := t.TempDir()
		write(t, wd, ".gitignore", "*.tmp\n")
		write(t, wd, "secret.key", "k")
		chmod(t, wd, "secret.key", 0)
		write(t, wd, "locked/x", "")
		chmod(t, wd, "locked", 0)
		t.Cleanup(func() { os.Chmod(filepath.Join(wd, "locked"), 0o755) })
		_, err := Pack(wd, Options{}, &bytes.Buffer{})
		want := "workdir " + wd + ": directory locked: permission denied; fix its permissions or add it to .gitignore"
		if err == nil || err.Error() != want {
			t.Fatalf("error %v\nwant %s", err, want)
		}
		chmod(t, wd, "locked", 0o755)
		_, err = Pack(wd, Options{}, &bytes.Buffer{})
		want = "workdir " + wd + ": file secret.key: permission denied; fix its permissions or add it to .gitignore"
		if err == nil || err.Error() != want {
			t.Fatalf("error %v\nwant %s", err, want)
		}
	})
}

func TestPackSkipsSocketsAndFIFOs(t *testing.T) {
	wd := sampleTree(t)
	sock := filepath.Join(wd, "run", "db.sock")
	os.MkdirAll(filepath.Dir(sock), 0o755)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	fifo := filepath.Join(wd, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	// Opening the FIFO would block: Pack must not try.
	_, m := pack(t, wd, Options{})
	want := []string{fifo + " (FIFO)", sock + " (socket)"}
	if !slices.Equal(m.Skipped, want) {
		t.Fatalf("skipped %q, want %q", m.Skipped, want)
	}
}

func TestPackFileChangedWhilePacked(t *testing.T) {
	wd := sampleTree(t)
	orig := openFile
	openFile = func(name string) (*os.File, error) {
		if filepath.Base(name) == "app.py" {
			os.WriteFile(name, []byte("grown since the walk"), 0o644)
		}
		return orig(name)
	}
	t.Cleanup(func() { openFile = orig })
	_, err := Pack(wd, Options{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "file app.py changed while it was packed; pack again") {
		t.Fatalf("error %v, want app.py changed", err)
	}
}

func TestPackFileAndVerify(t *testing.T) {
	wd := sampleTree(t)
	dir := t.TempDir()
	p, digest, size, m, err := PackFile(wd, Options{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := digestOf(t, data); digest != want || size != int64(len(data)) || m.Files != 4 {
		t.Fatalf("PackFile: digest %s size %d %+v; the file has %s, %d bytes", digest, size, m, want, len(data))
	}
	if err := CheckDigest(digest); err != nil {
		t.Fatal(err)
	}
	if err := Verify(p, digest); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Verify(p, digest); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Verify of a changed file: %v, want ErrDigestMismatch", err)
	}

	// A failed pack leaves no file behind.
	os.Remove(p)
	if _, _, _, _, err := PackFile(wd, Options{Limit: 1}, dir); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("PackFile over the limit: %v", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("PackFile left %d files behind", len(left))
	}
}

func TestCheckDigest(t *testing.T) {
	good := "sha256:" + strings.Repeat("ab", 32)
	for _, tt := range []struct {
		name, d string
		ok      bool
	}{
		{"good", good, true},
		{"upper", strings.ToUpper(good), false},
		{"short", good[:70], false},
		{"no algorithm", strings.Repeat("ab", 32), false},
		{"path", "sha256:../../" + strings.Repeat("a", 58), false},
		{"not hex", "sha256:" + strings.Repeat("zz", 32), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := CheckDigest(tt.d); (err == nil) != tt.ok {
				t.Fatalf("CheckDigest(%q) = %v", tt.d, err)
			}
		})
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB",
		1 << 30: "1 GiB", 1288490189: "1.2 GiB", 5 << 40: "5 TiB",
	} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
