package replicalog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// writeFiles writes log files into a new directory: files[0] is
// replica.log, files[k] replica.log.k.
func writeFiles(t *testing.T, files ...string) string {
	t.Helper()
	dir := t.TempDir()
	for gen, content := range files {
		if err := os.WriteFile(path(dir, gen), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// readToEnd reads r until it has caught up with the writer.
func readToEnd(t *testing.T, r *Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func TestTail(t *testing.T) {
	long := func(c byte, n int) string { return strings.Repeat(string(c), n) }
	bigA, bigB, bigC := long('a', 3*tailBlock+17), long('b', tailBlock), long('c', 2*tailBlock-1)
	tests := []struct {
		name  string
		files []string // replica.log, replica.log.1, ...
		n     int
		want  string
	}{
		{name: "one file", files: []string{"l1\nl2\nl3\n"}, n: 2, want: "l2\nl3\n"},
		{name: "across files", files: []string{"l5\n", "l3\nl4\n", "l1\nl2\n"}, n: 4, want: "l2\nl3\nl4\nl5\n"},
		{name: "all of an older file", files: []string{"l3\n", "l1\nl2\n"}, n: 3, want: "l1\nl2\nl3\n"},
		{name: "more than there is", files: []string{"l3\n", "l1\nl2\n"}, n: 100, want: "l1\nl2\nl3\n"},
		{name: "last line without newline", files: []string{"l1\nl2\nl3"}, n: 1, want: "l3"},
		{name: "last line without newline, two", files: []string{"l1\nl2\nl3"}, n: 2, want: "l2\nl3"},
		{name: "line split across files", files: []string{"cd\nef\n", "ab"}, n: 2, want: "abcd\nef\n"},
		{name: "empty current file", files: []string{"", "l1\nl2\n"}, n: 1, want: "l2\n"},
		{name: "empty lines", files: []string{"\n\n\n"}, n: 2, want: "\n\n"},
		{name: "empty log", files: []string{""}, n: 5, want: ""},
		{name: "zero lines", files: []string{"l1\n"}, n: 0, want: ""},
		{name: "very long lines", files: []string{bigB + "\n" + bigC + "\n", bigA + "\n"}, n: 2,
			want: bigB + "\n" + bigC + "\n"},
		{name: "very long line across files", files: []string{bigB + "\nend\n", "x\n" + bigA}, n: 2,
			want: bigA + bigB + "\nend\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Tail(writeFiles(t, tt.files...), tt.n)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := readToEnd(t, r); got != tt.want {
				t.Errorf("Tail(%d) = %q, want %q", tt.n, abbrev(got), abbrev(tt.want))
			}
		})
	}
}

// abbrev shortens s for a failure message.
func abbrev(s string) string {
	if len(s) <= 80 {
		return s
	}
	return fmt.Sprintf("%s...(%d bytes)...%s", s[:30], len(s)-60, s[len(s)-30:])
}

// TestTailMemory checks that finding the last lines of a large log reads
// backwards instead of loading the log.
func TestTailMemory(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, 16<<20, 3)
	var buf bytes.Buffer
	for i := range 1_000_000 { // ~48 MiB in three files
		fmt.Fprintf(&buf, "line %07d of a log that is not small at all...\n", i)
		if buf.Len() > 1<<20 {
			write(t, w, buf.Bytes())
			buf.Reset()
		}
	}
	write(t, w, buf.Bytes())

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r, err := Tail(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	got := readToEnd(t, r)
	r.Close()
	runtime.ReadMemStats(&after)

	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 100 || lines[0] != "line 0999900 of a log that is not small at all..." ||
		lines[99] != "line 0999999 of a log that is not small at all..." {
		t.Fatalf("tail: %d lines, from %q to %q", len(lines), lines[0], lines[len(lines)-1])
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("Tail allocated %d bytes for 100 lines", alloc)
	}
}

func TestReadAll(t *testing.T) {
	dir := writeFiles(t, "l5\n", "l3\nl4\n", "l1\nl2\n")
	r, err := ReadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := readToEnd(t, r); got != "l1\nl2\nl3\nl4\nl5\n" {
		t.Errorf("ReadAll = %q", got)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := r.Read(make([]byte, 1)); err == nil {
		t.Error("Read after Close: no error")
	}
}

func TestReadNoLogs(t *testing.T) {
	tests := []struct {
		name string
		dir  string
	}{
		{name: "empty dir", dir: t.TempDir()},
		{name: "no dir", dir: filepath.Join(t.TempDir(), "absent")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ReadAll(tt.dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("ReadAll: %v, want fs.ErrNotExist", err)
			}
			if _, err := Tail(tt.dir, 10); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Tail: %v, want fs.ErrNotExist", err)
			}
		})
	}
	if _, err := Tail(t.TempDir(), -1); err == nil {
		t.Error("Tail(-1): no error")
	}
}
