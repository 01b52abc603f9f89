package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton/protocol"
)

func TestRunAndSummarize(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		v := "1"
		if i > 50 {
			v = "2"
		}
		w.Header().Set(protocol.HeaderVersion, v)
		if i == 10 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	res := Run(context.Background(), Config{URL: srv.URL, Workers: 1, Pause: time.Millisecond, MaxRequests: 100})
	if len(res) != 100 {
		t.Fatalf("sent %d, want 100 (MaxRequests)", len(res))
	}
	s := Summarize(res)
	if s.Sent != 100 || s.Failed != 1 || s.ByVersion[1] != 49 || s.ByVersion[2] != 50 {
		t.Fatalf("summary %+v", s)
	}
	if s.StaleAfterFlip != 0 {
		t.Fatalf("stale = %d, want 0 with one sequential worker", s.StaleAfterFlip)
	}
	// A version-1 response to a request started after the first version-2
	// response must be counted.
	late := res[len(res)-1]
	late.Version = 1
	res = append(res, late)
	if got := Summarize(res).StaleAfterFlip; got != 1 {
		t.Fatalf("stale = %d, want 1", got)
	}
}

func TestRunStopsAtDuration(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	start := time.Now()
	Run(context.Background(), Config{URL: srv.URL, Workers: 2, MaxDuration: 200 * time.Millisecond})
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("run took %s, want about 200ms", d)
	}
}
