package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/agent/replicalog"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// logServer is an agent that is not running, serving its HTTP routes, with
// a replica directory whose logs a test writes with a replicalog.Writer.
type logServer struct {
	agent *Agent
	url   string // the server's base URL
	dir   string // replica web/1's directory
}

func newLogServer(t *testing.T) *logServer {
	t.Helper()
	a, err := New(Config{
		ID:           "a1",
		DataDir:      t.TempDir(),
		CPUs:         1,
		MemoryGB:     1,
		Accelerators: "A100:1",
		ReplicaUser:  currentUser(t),
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.routes())
	t.Cleanup(srv.Close)
	dir := a.replicaDir("web", 1)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &logServer{agent: a, url: srv.URL, dir: dir}
}

// writer opens a Writer on the replica's directory.
func (s *logServer) writer(t *testing.T, maxBytes int64, maxFiles int) *replicalog.Writer {
	t.Helper()
	w, err := replicalog.Open(s.dir, maxBytes, maxFiles)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// running registers replica web/1 as running; closing the returned
// channel ends it, as its supervisor returning would.
func (s *logServer) running() chan struct{} {
	r := newReplica(protocol.ReplicaAssignment{Service: "web", ReplicaID: 1}, s.dir)
	s.agent.mu.Lock()
	s.agent.replicas[protocol.ReplicaKey("web", 1)] = r
	s.agent.mu.Unlock()
	return r.done
}

// logLines returns "line-<from>\n" ... "line-<to>\n".
func logLines(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "line-%02d\n", i)
	}
	return b.String()
}

// TestLogsTailAndRotation checks reads of rotated logs through the HTTP
// route: everything oldest first, the last lines with tail=N, and the
// errors for a bad tail.
func TestLogsTailAndRotation(t *testing.T) {
	t.Parallel()
	s := newLogServer(t)
	w := s.writer(t, 64, 3) // eight 8-byte lines a file
	if _, err := io.WriteString(w, logLines(1, 20)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"replica.log", "replica.log.1", "replica.log.2"} {
		if _, err := os.Stat(filepath.Join(s.dir, name)); err != nil {
			t.Fatalf("the test wants three log files: %v", err)
		}
	}
	const logs = "/v1/replicas/web/1/logs"
	tests := []struct {
		name     string
		path     string
		wantCode int
		want     string // body, for 200
		wantMsg  string // in the error message, otherwise
	}{
		{name: "all files oldest first", path: logs, wantCode: 200, want: logLines(1, 20)},
		{name: "all, no follow", path: logs + "?follow=0", wantCode: 200, want: logLines(1, 20)},
		{name: "tail in the current file", path: logs + "?tail=3", wantCode: 200, want: logLines(18, 20)},
		{name: "tail across files", path: logs + "?tail=10", wantCode: 200, want: logLines(11, 20)},
		{name: "tail of more than there is", path: logs + "?tail=100000", wantCode: 200, want: logLines(1, 20)},
		{name: "tail without follow", path: logs + "?tail=2&follow=false", wantCode: 200, want: logLines(19, 20)},
		{name: "tail and follow of an ended replica", path: logs + "?tail=1&follow=1", wantCode: 200, want: logLines(20, 20)},
		{name: "tail zero", path: logs + "?tail=0", wantCode: 400, wantMsg: `tail "0": use a number of lines from 1 to 100000`},
		{name: "tail negative", path: logs + "?tail=-5", wantCode: 400, wantMsg: `tail "-5": use a number of lines from 1 to 100000`},
		{name: "tail too large", path: logs + "?tail=100001", wantCode: 400, wantMsg: `tail "100001"`},
		{name: "tail not a number", path: logs + "?tail=ten", wantCode: 400, wantMsg: `tail "ten"`},
		{name: "tail fraction", path: logs + "?tail=1.5", wantCode: 400, wantMsg: `tail "1.5"`},
		{name: "tail empty", path: logs + "?tail=", wantCode: 400, wantMsg: `tail ""`},
		{name: "bad tail before not found", path: "/v1/replicas/web/9/logs?tail=x", wantCode: 400, wantMsg: `tail "x"`},
		{name: "not found with tail", path: "/v1/replicas/web/9/logs?tail=5", wantCode: 404, wantMsg: "replica web/9 has no logs on agent a1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := getText(t, s.url+tt.path)
			if code != tt.wantCode {
				t.Fatalf("got %d %q, want %d", code, body, tt.wantCode)
			}
			if code == http.StatusOK {
				if body != tt.want {
					t.Errorf("body %q, want %q", body, tt.want)
				}
				return
			}
			var apiErr protocol.APIError
			if err := json.Unmarshal([]byte(body), &apiErr); err != nil {
				t.Fatalf("error body %q: %v", body, err)
			}
			wantCode := protocol.CodeBadRequest
			if code == http.StatusNotFound {
				wantCode = protocol.CodeNotFound
			}
			if apiErr.Code != wantCode || !strings.Contains(apiErr.Message, tt.wantMsg) {
				t.Errorf("error %+v, want code %s and %q in the message", apiErr, wantCode, tt.wantMsg)
			}
		})
	}
}

// TestLogsFollowAcrossRotation follows a running replica's log with
// tail=2 while it rotates several times, and checks that the stream is
// the last two lines, then everything written after, byte for byte, and
// that it ends once the replica has ended.
func TestLogsFollowAcrossRotation(t *testing.T) {
	t.Parallel()
	s := newLogServer(t)
	w := s.writer(t, 64, 10)
	if _, err := io.WriteString(w, logLines(1, 5)); err != nil {
		t.Fatal(err)
	}
	done := s.running()

	resp, err := http.Get(s.url + "/v1/replicas/web/1/logs?tail=2&follow=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var got syncBuilder
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(&got, bufio.NewReader(resp.Body))
		copied <- err
	}()
	waitBody := func(want string) {
		t.Helper()
		testutil.WaitFor(t, 5*time.Second, func() error {
			if g := got.String(); g != want {
				return fmt.Errorf("stream so far %q, want %q", g, want)
			}
			return nil
		})
	}
	waitBody(logLines(4, 5))

	// Two rotations at once (lines 6-21 fill the rest of the first file,
	// all of a second, and start a third), then more in small steps.
	if _, err := io.WriteString(w, logLines(6, 21)); err != nil {
		t.Fatal(err)
	}
	waitBody(logLines(4, 21))
	for i := 22; i <= 50; i++ {
		if _, err := io.WriteString(w, logLines(i, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	close(done)
	select {
	case err := <-copied:
		if err != nil {
			t.Fatalf("stream ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end after the replica ended")
	}
	if g := got.String(); g != logLines(4, 50) {
		t.Errorf("stream %q, want lines 4 to 50", g)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "replica.log.5")); err != nil {
		t.Errorf("the test wants at least five rotations: %v", err)
	}
}

// consecutiveLines checks that lines are "line-<k>", "line-<k+1>", ...
func consecutiveLines(t *testing.T, lines []string) {
	t.Helper()
	first := -1
	for i, line := range lines {
		var k int
		if _, err := fmt.Sscanf(line, "line-%d", &k); err != nil || (first >= 0 && k != first+i) {
			t.Fatalf("line %d is %q in %q, want consecutive line-<k>", i, line, lines)
		}
		if first < 0 {
			first = k
		}
	}
}

// syncBuilder is a strings.Builder safe for one writer and one reader.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
