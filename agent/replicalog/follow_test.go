package replicalog

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFollowAcrossRotations follows a log through single rotations and
// through two rotations between reads, and compares what was read with
// everything written, byte for byte.
func TestFollowAcrossRotations(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, 1000, 3)
	var written, read strings.Builder
	put := func(s string) {
		t.Helper()
		write(t, w, []byte(s))
		written.WriteString(s)
	}
	line := func(i int) string { return fmt.Sprintf("line %03d %s\n", i, strings.Repeat("x", 90)) } // 100 bytes

	put(line(0))
	r, err := ReadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	read.WriteString(readToEnd(t, r))

	i := 1
	steps := []struct {
		name    string
		lines   int
		current int // lines in replica.log after the step, which says how it rotated
	}{
		{name: "fill the first file", lines: 9, current: 10},
		{name: "one rotation", lines: 3, current: 3},
		{name: "two rotations between reads", lines: 18, current: 1},
		{name: "nothing new", lines: 0, current: 1},
		{name: "exactly to the limit", lines: 9, current: 10},
		{name: "one more rotation", lines: 1, current: 1},
	}
	for _, st := range steps {
		for range st.lines {
			put(line(i))
			i++
		}
		if got := len(readFile(t, dir, "replica.log")); got != 100*st.current {
			t.Fatalf("%s: replica.log has %d bytes, want %d: the step did not rotate as planned", st.name, got, 100*st.current)
		}
		read.WriteString(readToEnd(t, r))
		if read.String() != written.String() {
			t.Fatalf("%s: read %d bytes, want the %d written:\n%s", st.name, read.Len(), written.Len(),
				firstDiff(read.String(), written.String()))
		}
	}
}

// firstDiff describes where got and want part.
func firstDiff(got, want string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("first difference at byte %d: got %q, want %q", i, abbrev(got[i:]), abbrev(want[i:]))
}

// TestFollowConcurrent follows a log while another goroutine writes it in
// random pieces through many rotations (with enough files that none is
// deleted before it is read), and compares everything.
func TestFollowConcurrent(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, 4096, 100)
	write(t, w, []byte("start\n"))
	r, err := Tail(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	const total = 200 << 10 // about 50 rotations
	var written bytes.Buffer
	written.WriteString("start\n")
	var wg sync.WaitGroup
	writing := make(chan struct{})
	wg.Go(func() {
		defer close(writing)
		rng := rand.New(rand.NewPCG(3, 4))
		for written.Len() < total {
			p := make([]byte, 1+rng.IntN(3000))
			for j := range p {
				p[j] = 'a' + byte(rng.IntN(26))
			}
			p[len(p)-1] = '\n'
			if _, err := w.Write(p); err != nil {
				t.Errorf("write: %v", err)
				return
			}
			written.Write(p)
			if rng.IntN(4) == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	var read bytes.Buffer
	buf := make([]byte, 1000)
	done := false
	for !done {
		select {
		case <-writing:
			done = true // read what is left once more below
		default:
		}
		for {
			n, err := r.Read(buf)
			read.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	wg.Wait()
	if !bytes.Equal(read.Bytes(), written.Bytes()) {
		t.Fatalf("read %d bytes, want the %d written: %s", read.Len(), written.Len(),
			firstDiff(read.String(), written.String()))
	}
	if n := len(logFiles(t, dir)); n < 40 {
		t.Errorf("%d files: fewer rotations than planned", n)
	}
}

// TestFollowOneFile follows a log kept in a single file, which rotation
// deletes and starts again.
func TestFollowOneFile(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, 10, 1)
	write(t, w, []byte("aaaa\n"))
	r, err := ReadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := readToEnd(t, r)
	write(t, w, []byte("bbbb\n"))
	write(t, w, []byte("cccc\n")) // rotates: aaaa and bbbb are gone from disk
	got += readToEnd(t, r)
	if got != "aaaa\nbbbb\ncccc\n" {
		t.Errorf("followed %q", got)
	}
}

// TestFollowFallenBehind checks that a reader whose next files were
// deleted goes on with the oldest file left.
func TestFollowFallenBehind(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, 5, 2)
	write(t, w, []byte("aaaa\n"))
	r, err := ReadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := readToEnd(t, r)
	for _, s := range []string{"bbbb\n", "cccc\n", "dddd\n"} {
		write(t, w, []byte(s))
	}
	got += readToEnd(t, r)
	if got != "aaaa\ncccc\ndddd\n" {
		t.Errorf("followed %q, want aaaa then what is left on disk", got)
	}
}

// TestFollowDrainsRenamedFile has the writer append to the file a Reader
// is at the end of and rotate it just before the Reader looks for a
// rotation: the Reader must read that last write before going on.
func TestFollowDrainsRenamedFile(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, 10, 3)
	write(t, w, []byte("aaaa\n"))
	r, err := ReadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := readToEnd(t, r)
	once := false
	testHookAtEnd = func() {
		if !once {
			once = true
			write(t, w, []byte("bbbb\n")) // fills the file the Reader is at the end of
			write(t, w, []byte("cccc\n")) // rotates it
		}
	}
	t.Cleanup(func() { testHookAtEnd = nil })
	got += readToEnd(t, r)
	if !once {
		t.Fatal("the hook did not run")
	}
	if got != "aaaa\nbbbb\ncccc\n" {
		t.Errorf("followed %q", got)
	}
}
