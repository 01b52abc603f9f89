package coordinator

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testutil"
)

// A lone coordinator (dev: no gossip, no peers) is its own majority: an
// upload is committed at once, and nothing is pushed or pulled.
func TestBundleSingleCoordinator(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	waitHealthy(t, s)
	data := bytes.Repeat([]byte("code "), 100_000)
	d := digestOf(data)
	req, _ := http.NewRequest("PUT", s.url("/v1/bundles/"+d), bytes.NewReader(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %d", resp.StatusCode)
	}
	if rec, ok := s.bundleRecord(d); !ok || rec.Size != int64(len(data)) {
		t.Fatalf("record: %+v %v", rec, ok)
	}
	if size, ok := s.bundles.store.stat(d); !ok || size != int64(len(data)) {
		t.Fatalf("stored: %d %v", size, ok)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if v := testutil.CounterValue(t, s.cfg.Gatherer, "baton_coordinator_bundles_stored_bytes"); v != float64(len(data)) {
			return fmt.Errorf("stored bytes gauge %v", v)
		}
		return nil
	})
	if v := testutil.CounterValue(t, s.cfg.Gatherer, "baton_coordinator_bundle_transfers_total"); v != 0 {
		t.Fatalf("%v transfers with no peers", v)
	}
}
