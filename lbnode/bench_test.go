package lbnode

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// BenchmarkProxy measures parallel GETs through a node to one local replica
// (compare with a direct GET to see the LB's cost):
//
//	go test -run '^$' -bench Proxy -benchmem ./lbnode/
func BenchmarkProxy(b *testing.B) {
	payload := []byte(`{"ok":true}`)
	backendSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(payload)
	}))
	b.Cleanup(backendSrv.Close)

	url := testutil.NATS(b)
	cfg := testConfig(b, url)
	cfg.Logger = slog.New(slog.DiscardHandler)
	n := startNode(b, cfg)
	nc := connectNATS(b, url)
	pushTable(b, n, nc, table("bench", 1, testutil.FreePort(b, "127.0.0.1"), protocol.PolicyLeastLoad,
		ep(1, 1, hostPort(backendSrv))))
	base := waitListening(b, n, "bench")

	for _, tc := range []struct{ name, url string }{
		{"direct", backendSrv.URL},
		{"via_lb", base},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, DisableCompression: true}}
			b.Cleanup(c.CloseIdleConnections)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get(tc.url)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
