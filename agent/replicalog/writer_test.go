package replicalog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// openWriter opens a Writer on dir and closes it at the end of the test.
func openWriter(t *testing.T, dir string, maxBytes int64, maxFiles int) *Writer {
	t.Helper()
	w, err := Open(dir, maxBytes, maxFiles)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// write writes p to w in one call and fails the test unless all of it went.
func write(t *testing.T, w *Writer, p []byte) {
	t.Helper()
	if n, err := w.Write(p); err != nil || n != len(p) {
		t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
	}
}

// logFiles returns the sizes of the files in dir by name.
func logFiles(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int64{}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		sizes[e.Name()] = info.Size()
	}
	return sizes
}

// readFile returns the content of dir/name.
func readFile(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// onDisk concatenates dir's log files oldest first, by name.
func onDisk(t *testing.T, dir string, maxFiles int) []byte {
	t.Helper()
	var all []byte
	for gen := maxFiles - 1; gen >= 0; gen-- {
		b, err := os.ReadFile(path(dir, gen))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// TestRotationBound writes 30 MiB in 64 KiB chunks with a 1 MiB limit and
// 3 files, and checks the bound and the names after every write, then that
// the files hold the end of what was written, in order.
func TestRotationBound(t *testing.T) {
	const (
		maxBytes = 1 << 20
		maxFiles = 3
		chunk    = 64 << 10
		total    = 30 << 20
	)
	dir := t.TempDir()
	w := openWriter(t, dir, maxBytes, maxFiles)
	data := make([]byte, total)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	allowed := map[string]bool{"replica.log": true, "replica.log.1": true, "replica.log.2": true}
	for off := 0; off < total; off += chunk {
		write(t, w, data[off:off+chunk])
		var sum int64
		for name, size := range logFiles(t, dir) {
			if !allowed[name] {
				t.Fatalf("after %d bytes: unexpected file %s", off+chunk, name)
			}
			if size > maxBytes {
				t.Fatalf("after %d bytes: %s has %d bytes, over %d", off+chunk, name, size, maxBytes)
			}
			sum += size
		}
		if sum > maxBytes*maxFiles {
			t.Fatalf("after %d bytes: %d bytes on disk, over %d", off+chunk, sum, maxBytes*maxFiles)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	sizes := logFiles(t, dir)
	if len(sizes) != 3 || sizes["replica.log.1"] != maxBytes || sizes["replica.log.2"] != maxBytes {
		t.Fatalf("files %v, want replica.log.1 and .2 full (%d bytes) and replica.log", sizes, maxBytes)
	}
	cur := readFile(t, dir, "replica.log")
	if !bytes.HasSuffix(data, cur) {
		t.Errorf("replica.log (%d bytes) is not the end of what was written", len(cur))
	}
	one := readFile(t, dir, "replica.log.1")
	if !bytes.Equal(one, data[total-len(cur)-maxBytes:total-len(cur)]) {
		t.Errorf("replica.log.1 is not the part just before replica.log")
	}
	all := onDisk(t, dir, maxFiles)
	if !bytes.HasSuffix(data, all) {
		t.Errorf("the files (%d bytes) are not the end of what was written", len(all))
	}
}

// TestWriteSplitsAndRotates checks where writes land: a write that does
// not fit goes whole to a new file, one over maxBytes is split.
func TestWriteSplitsAndRotates(t *testing.T) {
	tests := []struct {
		name     string
		maxBytes int64
		maxFiles int
		writes   []string
		want     map[string]string
	}{
		{
			name: "fits", maxBytes: 10, maxFiles: 3,
			writes: []string{"abc\n", "def\n"},
			want:   map[string]string{"replica.log": "abc\ndef\n"},
		},
		{
			name: "exactly full", maxBytes: 8, maxFiles: 3,
			writes: []string{"abc\n", "def\n", "g\n"},
			want:   map[string]string{"replica.log.1": "abc\ndef\n", "replica.log": "g\n"},
		},
		{
			name: "does not fit goes whole to a new file", maxBytes: 10, maxFiles: 3,
			writes: []string{"12345678\n", "abcd\n"},
			want:   map[string]string{"replica.log.1": "12345678\n", "replica.log": "abcd\n"},
		},
		{
			name: "larger than maxBytes is split", maxBytes: 4, maxFiles: 4,
			writes: []string{"x\n", "0123456789"},
			want: map[string]string{
				"replica.log.3": "x\n", "replica.log.2": "0123", "replica.log.1": "4567", "replica.log": "89",
			},
		},
		{
			name: "split drops the oldest", maxBytes: 4, maxFiles: 2,
			writes: []string{"0123456789ab"},
			want:   map[string]string{"replica.log.1": "4567", "replica.log": "89ab"},
		},
		{
			name: "one file", maxBytes: 5, maxFiles: 1,
			writes: []string{"aaaa\n", "bbbb\n", "cc\n"},
			want:   map[string]string{"replica.log": "cc\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			w := openWriter(t, dir, tt.maxBytes, tt.maxFiles)
			for _, s := range tt.writes {
				write(t, w, []byte(s))
			}
			got := map[string]string{}
			for name := range logFiles(t, dir) {
				got[name] = string(readFile(t, dir, name))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("files %q, want %q", got, tt.want)
			}
		})
	}
}

// TestOpenAppendsAndPrunes checks that Open appends to an existing
// replica.log, counts its size, and deletes files beyond maxFiles-1.
func TestOpenAppendsAndPrunes(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"replica.log": "old\n", "replica.log.1": "one\n", "replica.log.2": "two\n", "replica.log.7": "seven\n",
		"replica.log.x": "not a log\n", "pgid": "1 web 1\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w := openWriter(t, dir, 8, 3)
	write(t, w, []byte("new\n")) // fills replica.log to 8 bytes
	want := map[string]int64{"replica.log": 8, "replica.log.1": 4, "replica.log.2": 4, "replica.log.x": 10, "pgid": 8}
	if got := logFiles(t, dir); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	write(t, w, []byte("next\n"))
	if got := string(onDisk(t, dir, 3)); got != "one\nold\nnew\nnext\n" {
		t.Errorf("logs %q after a rotation", got)
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name     string
		dir      string
		maxBytes int64
		maxFiles int
	}{
		{name: "zero bytes", dir: t.TempDir(), maxBytes: 0, maxFiles: 3},
		{name: "zero files", dir: t.TempDir(), maxBytes: 10, maxFiles: 0},
		{name: "no dir", dir: filepath.Join(t.TempDir(), "absent"), maxBytes: 10, maxFiles: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if w, err := Open(tt.dir, tt.maxBytes, tt.maxFiles); err == nil {
				w.Close()
				t.Fatal("no error")
			}
		})
	}
}

func TestCloseIdempotent(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, 100, 2)
	write(t, w, []byte("a\n"))
	for i := range 2 {
		if err := w.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if n, err := w.Write([]byte("b\n")); n != 0 || !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %d, %v; want 0, ErrClosed", n, err)
	}
	if got := string(readFile(t, dir, "replica.log")); got != "a\n" {
		t.Errorf("replica.log %q", got)
	}
}

// TestConcurrentWriters has several goroutines write lines through one
// Writer (with enough files to keep everything) and checks that every line
// arrived whole, once, in each writer's order.
func TestConcurrentWriters(t *testing.T) {
	const (
		writers = 8
		lines   = 2000
	)
	dir := t.TempDir()
	w := openWriter(t, dir, 4096, 200)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				if _, err := fmt.Fprintf(w, "writer-%d line-%05d\n", g, i); err != nil {
					t.Errorf("writer %d: %v", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(logFiles(t, dir)); n < 10 {
		t.Fatalf("only %d files: the test did not rotate", n)
	}
	next := make([]int, writers)
	got := strings.Split(strings.TrimSuffix(string(onDisk(t, dir, 200)), "\n"), "\n")
	for _, line := range got {
		var g, i int
		if _, err := fmt.Sscanf(line, "writer-%d line-%05d", &g, &i); err != nil || g < 0 || g >= writers {
			t.Fatalf("torn line %q", line)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
	if len(got) != writers*lines {
		t.Errorf("%d lines, want %d", len(got), writers*lines)
	}
}

// TestGeneration checks which names are log files.
func TestGeneration(t *testing.T) {
	var gens []int
	for _, name := range []string{"replica.log", "replica.log.1", "replica.log.12", "replica.log.", "replica.log.01",
		"replica.log.-1", "replica.log.+1", "replica.log.1.gz", "replica.logx", "other.log.1"} {
		if gen, ok := generation(name); ok {
			gens = append(gens, gen)
		}
	}
	sort.Ints(gens)
	if fmt.Sprint(gens) != "[0 1 12]" {
		t.Errorf("generations %v, want [0 1 12]", gens)
	}
}
