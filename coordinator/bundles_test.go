package coordinator_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/coordinator"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// testBundle returns n pseudo-random bytes (seeded: incompressible and
// the same on every run) and their digest.
func testBundle(n int, seed uint64) ([]byte, string) {
	data := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(data)
	return data, sha256Digest(data)
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// bundleCluster is a 3-node cluster whose coordinators repair bundles
// every 300 ms; edit may change more.
func bundleCluster(t *testing.T, edit func(i int, cfg *coordinator.Config)) *raftCluster {
	t.Helper()
	return newRaftClusterWith(t, 3, func(i int, cfg *coordinator.Config) {
		cfg.BundleRepairInterval = 300 * time.Millisecond
		if edit != nil {
			edit(i, cfg)
		}
	})
}

// bundlePath is where coordinator i stores bundle digest.
func (c *raftCluster) bundlePath(i int, digest string) string {
	return filepath.Join(c.cfgs[i].DataDir, "bundles", "sha256-"+strings.TrimPrefix(digest, "sha256:"))
}

// holds reports whether coordinator i has a file of digest with data's
// bytes.
func (c *raftCluster) holds(i int, digest string, data []byte) bool {
	got, err := os.ReadFile(c.bundlePath(i, digest))
	return err == nil && (data == nil || bytes.Equal(got, data))
}

// request sends one request with headers to coordinator i over plain
// HTTP.
func (c *raftCluster) request(i int, method, path string, body io.Reader, size int64, header http.Header) answer {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://"+c.nodes[i].HTTPAddr()+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if size >= 0 {
		req.ContentLength = size
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	cl := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	resp, err := cl.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

// upload PUTs data as digest to coordinator i, retrying while the cluster
// is forming (503), and returns the answer.
func (c *raftCluster) upload(i int, digest string, data []byte) answer {
	c.t.Helper()
	var a answer
	testutil.WaitFor(c.t, 20*time.Second, func() error {
		a = c.request(i, "PUT", "/v1/bundles/"+digest, bytes.NewReader(data), int64(len(data)), nil)
		if a.code == http.StatusServiceUnavailable {
			return fmt.Errorf("upload: %d %s", a.code, a.body)
		}
		return nil
	})
	return a
}

// apiMessage decodes an APIError body.
func apiMessage(b []byte) protocol.APIError {
	var e protocol.APIError
	_ = json.Unmarshal(b, &e)
	return e
}

// fakeAgent registers agent id with the cluster over NATS (status
// heartbeats, no replicas reported) until the test ends, and returns its
// connection.
func fakeAgent(t *testing.T, natsURL, id string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			st := protocol.AgentStatus{Agent: protocol.Agent{ID: id, Host: "127.0.0.1",
				Capacity: protocol.Capacity{CPUs: 8, MemoryGB: 16}, PortRange: protocol.PortRange{Min: 20000, Max: 21000}}, SentAt: time.Now()}
			b, _ := json.Marshal(st)
			_ = nc.Publish(protocol.AgentStatusSubject(id), b)
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; nc.Close() })
	return nc
}

// fetchBundle fetches a bundle in chunks as an agent does, and returns
// its bytes, or the first refusal.
func fetchBundle(nc *nats.Conn, agentID, digest string) ([]byte, error) {
	var out []byte
	for {
		req, _ := json.Marshal(protocol.BundleChunkRequest{Digest: digest, Offset: int64(len(out)), Length: protocol.MaxBundleChunk})
		m, err := nc.Request(protocol.BundleGetSubject(agentID), req, 30*time.Second)
		if err != nil {
			return nil, err
		}
		if e := m.Header.Get(protocol.HeaderBundleError); e != "" {
			return nil, fmt.Errorf("refused: %s", e)
		}
		size, err := strconv.ParseInt(m.Header.Get(protocol.HeaderBundleSize), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("size header %q", m.Header.Get(protocol.HeaderBundleSize))
		}
		out = append(out, m.Data...)
		if int64(len(out)) >= size || len(m.Data) == 0 {
			return out, nil
		}
	}
}

// An upload to a follower is stored there and pushed to the others
// before it is acknowledged; HEAD answers 200 on every coordinator; a
// second upload is answered at once; a mismatched digest and an oversize
// upload are refused and leave nothing. Once the coordinator that took
// the upload is gone, an agent with a replica of a version naming the
// bundle fetches every chunk from the others (one of which first fetches
// it from the other), and the bytes hash to the digest; an agent without
// such a replica is refused.
func TestBundleUploadReplicatesAndServesAgents(t *testing.T) {
	c := bundleCluster(t, nil)
	l := c.leader()
	f := (l + 1) % 3
	data, digest := testBundle(9<<20+12345, 1)

	a := c.upload(f, digest, data)
	if a.code != http.StatusCreated {
		t.Fatalf("upload: %d %s", a.code, a.body)
	}
	var info protocol.BundleInfo
	if err := json.Unmarshal(a.body, &info); err != nil || info.Digest != digest || info.Size != int64(len(data)) || info.UploadedAt.IsZero() {
		t.Fatalf("upload answer: %s (%v)", a.body, err)
	}
	// Acknowledged: a majority holds it already, the upload's node among them.
	held := 0
	for i := range 3 {
		if c.holds(i, digest, data) {
			held++
		}
	}
	if held < 2 || !c.holds(f, digest, data) {
		t.Fatalf("acknowledged with %d copies (the uploading node's: %v)", held, c.holds(f, digest, data))
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		for i := range 3 {
			if !c.holds(i, digest, data) {
				return fmt.Errorf("c%d lacks the bundle", i+1)
			}
			a := c.request(i, "HEAD", "/v1/bundles/"+digest, nil, -1, nil)
			if a.code != http.StatusOK || a.header.Get("Content-Length") != strconv.Itoa(len(data)) || a.header.Get(protocol.HeaderBundleSize) != strconv.Itoa(len(data)) {
				return fmt.Errorf("HEAD on c%d: %d %v", i+1, a.code, a.header)
			}
		}
		return nil
	})
	if a := c.request(l, "HEAD", "/v1/bundles/"+sha256Digest([]byte("none")), nil, -1, nil); a.code != http.StatusNotFound {
		t.Fatalf("HEAD of an unknown bundle: %d", a.code)
	}
	if a := c.request(l, "PUT", "/v1/bundles/"+digest, bytes.NewReader(data), int64(len(data)), nil); a.code != http.StatusOK {
		t.Fatalf("second upload: %d %s", a.code, a.body)
	}

	// Refused uploads leave nothing anywhere.
	wrong := sha256Digest([]byte("something else"))
	a = c.request(f, "PUT", "/v1/bundles/"+wrong, bytes.NewReader(data), int64(len(data)), nil)
	if e := apiMessage(a.body); a.code != http.StatusBadRequest || !strings.Contains(e.Message, "the upload hashes to "+digest+", not "+wrong) {
		t.Fatalf("mismatched upload: %d %s", a.code, a.body)
	}
	a = c.request(f, "PUT", "/v1/bundles/"+wrong, strings.NewReader("never read"), protocol.MaxBundleUploadBytes+1,
		http.Header{"Expect": {"100-continue"}})
	if e := apiMessage(a.body); a.code != http.StatusRequestEntityTooLarge || !strings.Contains(e.Message, "at most") {
		t.Fatalf("oversize upload: %d %s", a.code, a.body)
	}
	if a := c.request(f, "PUT", "/v1/bundles/sha256:nothex", strings.NewReader("x"), 1, nil); a.code != http.StatusBadRequest {
		t.Fatalf("upload with a bad digest: %d %s", a.code, a.body)
	}
	for i := range 3 {
		es, _ := os.ReadDir(filepath.Join(c.cfgs[i].DataDir, "bundles"))
		if len(es) != 1 {
			t.Fatalf("c%d holds %d files, want only the bundle", i+1, len(es))
		}
	}

	// A version naming it, with a replica on agent a1.
	g, h := 3-l-f, l // the survivors once f is gone
	a1 := fakeAgent(t, c.nodes[g].NATSURL(), "a1")
	up := protocol.UpRequest{Name: "web", YAML: clusterTask, Bundle: digest}
	if a := c.do(g, "POST", "/v1/services", up); a.code != http.StatusCreated {
		t.Fatalf("up with the bundle: %d %s", a.code, a.body)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		st := c.nodes[g].FSM().State()
		for _, r := range st.AgentReplicas("a1") {
			if r.Service == "web" && st.Version("web", r.Version).Spec.Bundle == digest {
				return nil
			}
		}
		return fmt.Errorf("no replica of web on a1 in c%d's state", g+1)
	})

	// The uploading node goes; the survivor the agent asks first lacks the
	// bundle, fetches it from the other and serves it.
	c.stop(f)
	if err := os.Remove(c.bundlePath(g, digest)); err != nil {
		t.Fatal(err)
	}
	got, err := fetchBundle(a1, "a1", digest)
	if err != nil {
		t.Fatalf("agent fetch: %v", err)
	}
	if sha256Digest(got) != digest {
		t.Fatalf("fetched %d bytes hashing to %s, want %d bytes of %s", len(got), sha256Digest(got), len(data), digest)
	}
	if !c.holds(g, digest, data) || !c.holds(h, digest, data) {
		t.Fatal("the survivors do not both hold the bundle")
	}
	// An agent with no replica of it gets nothing.
	a2 := fakeAgent(t, c.nodes[g].NATSURL(), "a2")
	if _, err := fetchBundle(a2, "a2", digest); err == nil || !strings.Contains(err.Error(), `agent "a2" runs no replica of a version naming bundle`) {
		t.Fatalf("agent a2 asked for a bundle it does not run: %v", err)
	}
	// The public GET sends it too (no ACLs: open).
	a = c.request(h, "GET", "/v1/bundles/"+digest, nil, -1, nil)
	if a.code != http.StatusOK || sha256Digest(a.body) != digest {
		t.Fatalf("GET the bundle: %d, %d bytes", a.code, len(a.body))
	}
}

// A coordinator that was down during an upload gets the bundle by repair
// once it is back; up naming an unknown bundle is refused; an update that
// changes only the bundle makes a new version.
func TestBundleRepairAndVersions(t *testing.T) {
	c := bundleCluster(t, nil)
	l := c.leader()
	down := (l + 1) % 3
	other := 3 - l - down
	c.stop(down)
	data, digest := testBundle(5<<20, 2)
	if a := c.upload(other, digest, data); a.code != http.StatusCreated {
		t.Fatalf("upload with one coordinator down: %d %s", a.code, a.body)
	}
	if c.holds(down, digest, nil) {
		t.Fatal("the stopped coordinator holds the bundle")
	}
	c.start(down)
	testutil.WaitFor(t, 15*time.Second, func() error {
		if !c.holds(down, digest, data) {
			return fmt.Errorf("c%d has not repaired the bundle", down+1)
		}
		return nil
	})

	// up with an unknown bundle: 400 naming it; with file_mounts and no
	// bundle: 400.
	unknown := sha256Digest([]byte("not uploaded"))
	a := c.do(l, "POST", "/v1/services", protocol.UpRequest{Name: "web", YAML: clusterTask, Bundle: unknown})
	if e := apiMessage(a.body); a.code != http.StatusBadRequest || e.Code != protocol.CodeInvalidSpec ||
		e.Message != "bundle "+unknown+" is not in the cluster; upload it first (baton serve up does)" {
		t.Fatalf("up with an unknown bundle: %d %s", a.code, a.body)
	}
	mounts := clusterTask + "file_mounts:\n  /etc/app.conf: ./app.conf\n"
	a = c.do(l, "POST", "/v1/services", protocol.UpRequest{Name: "web", YAML: mounts, BaseDir: "/tmp"})
	if e := apiMessage(a.body); a.code != http.StatusBadRequest || !strings.Contains(e.Message, "task.yaml:5: file_mounts travel in the version's bundle; drop --no-upload") {
		t.Fatalf("up with file_mounts and no bundle: %d %s", a.code, a.body)
	}

	if a := c.do(other, "POST", "/v1/services", protocol.UpRequest{Name: "web", YAML: clusterTask, Bundle: digest}); a.code != http.StatusCreated {
		t.Fatalf("up: %d %s", a.code, a.body)
	}
	data2, digest2 := testBundle(1<<20, 3)
	if a := c.upload(down, digest2, data2); a.code != http.StatusCreated {
		t.Fatalf("upload: %d %s", a.code, a.body)
	}
	a = c.do(down, "POST", "/v1/services/web/update", protocol.UpdateRequest{YAML: clusterTask, Bundle: digest2})
	var resp protocol.ServiceResponse
	if err := json.Unmarshal(a.body, &resp); a.code != http.StatusOK || err != nil || resp.Version != 2 {
		t.Fatalf("update with only another bundle: %d %s", a.code, a.body)
	}
	st := c.nodes[c.leader()].FSM().State()
	v1, v2 := st.Version("web", 1), st.Version("web", 2)
	if v1.Spec.Bundle != digest || v2.Spec.Bundle != digest2 || v1.SpecDigest == v2.SpecDigest || v1.YAML != v2.YAML {
		t.Fatalf("versions: v1 bundle %s spec %s, v2 bundle %s spec %s", v1.Spec.Bundle, v1.SpecDigest, v2.Spec.Bundle, v2.SpecDigest)
	}
	var list []protocol.BundleInfo
	a = c.do(l, "GET", "/v1/bundles?consistent", nil)
	if err := json.Unmarshal(a.body, &list); err != nil || len(list) != 2 {
		t.Fatalf("bundle list: %d %s", a.code, a.body)
	}
	for _, b := range list {
		want := map[string]string{digest: "web/1", digest2: "web/2"}[b.Digest]
		if len(b.Versions) != 1 || b.Versions[0] != want {
			t.Fatalf("bundle %s: versions %v, want [%s]", b.Digest, b.Versions, want)
		}
	}
}

// The leader deletes a bundle that no version names once the grace has
// passed, and every coordinator removes its file; a bundle a version
// names stays until the service is gone.
func TestBundleGC(t *testing.T) {
	c := bundleCluster(t, func(i int, cfg *coordinator.Config) { cfg.BundleGrace = time.Second })
	l := c.leader()
	used, usedDigest := testBundle(1<<20, 4)
	unused, unusedDigest := testBundle(1<<20, 5)
	for _, b := range []struct {
		data   []byte
		digest string
	}{{used, usedDigest}, {unused, unusedDigest}} {
		if a := c.upload(l, b.digest, b.data); a.code != http.StatusCreated {
			t.Fatalf("upload: %d %s", a.code, a.body)
		}
	}
	if a := c.do(l, "POST", "/v1/services", protocol.UpRequest{Name: "web", YAML: clusterTask, Bundle: usedDigest}); a.code != http.StatusCreated {
		t.Fatalf("up: %d %s", a.code, a.body)
	}
	gone := func(digest string) error {
		for i := range 3 {
			if _, ok := c.nodes[i].FSM().State().Bundles[digest]; ok {
				return fmt.Errorf("c%d's state still has %s", i+1, digest)
			}
			if c.holds(i, digest, nil) {
				return fmt.Errorf("c%d still holds the file of %s", i+1, digest)
			}
		}
		return nil
	}
	testutil.WaitFor(t, 15*time.Second, func() error { return gone(unusedDigest) })
	for i := range 3 {
		if !c.holds(i, usedDigest, used) {
			t.Fatalf("c%d lost the bundle a version names", i+1)
		}
	}
	if a := c.do(l, "HEAD", "/v1/bundles/"+unusedDigest, nil); a.code != http.StatusNotFound {
		t.Fatalf("HEAD of a deleted bundle: %d", a.code)
	}
	if a := c.do(l, "DELETE", "/v1/services/web", nil); a.code != http.StatusOK {
		t.Fatalf("down: %d %s", a.code, a.body)
	}
	testutil.WaitFor(t, 20*time.Second, func() error { return gone(usedDigest) })
}

// Measures an upload to a 3-node cluster in this process (all on one
// machine: the three copies share its disk). Run with
// BATON_BUNDLE_MEASURE_MB=100.
func TestBundleUploadTiming(t *testing.T) {
	mb, _ := strconv.Atoi(os.Getenv("BATON_BUNDLE_MEASURE_MB"))
	if mb <= 0 {
		t.Skip("set BATON_BUNDLE_MEASURE_MB to measure an upload")
	}
	c := bundleCluster(t, nil)
	l := c.leader()
	f := (l + 1) % 3
	// Warm up: the cluster is formed and gossip complete.
	warm, warmDigest := testBundle(1024, 6)
	if a := c.upload(f, warmDigest, warm); a.code != http.StatusCreated {
		t.Fatalf("upload: %d %s", a.code, a.body)
	}
	data, digest := testBundle(mb<<20, 7)
	start := time.Now()
	a := c.request(f, "PUT", "/v1/bundles/"+digest, bytes.NewReader(data), int64(len(data)), nil)
	took := time.Since(start)
	if a.code != http.StatusCreated {
		t.Fatalf("upload: %d %s", a.code, a.body)
	}
	t.Logf("upload of %d MiB to a follower of 3 coordinators: %s (%.0f MiB/s), acknowledged with a majority", mb, took.Round(time.Millisecond), float64(mb)/took.Seconds())
	testutil.WaitFor(t, time.Minute, func() error {
		for i := range 3 {
			if !c.holds(i, digest, nil) {
				return fmt.Errorf("c%d lacks it", i+1)
			}
		}
		return nil
	})
	t.Logf("on all three after %s", time.Since(start).Round(time.Millisecond))
	g := (f + 1) % 3
	nc := fakeAgent(t, c.nodes[g].NATSURL(), "a1")
	if a := c.do(g, "POST", "/v1/services", protocol.UpRequest{Name: "web", YAML: clusterTask, Bundle: digest}); a.code != http.StatusCreated {
		t.Fatalf("up: %d %s", a.code, a.body)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if len(c.nodes[g].FSM().State().AgentReplicas("a1")) == 0 {
			return fmt.Errorf("no replica on a1")
		}
		return nil
	})
	start = time.Now()
	got, err := fetchBundle(nc, "a1", digest)
	took = time.Since(start)
	if err != nil || sha256Digest(got) != digest {
		t.Fatalf("fetch: %v", err)
	}
	t.Logf("agent fetch over NATS in %d chunks of %d MiB: %s (%.0f MiB/s)", (len(data)+protocol.MaxBundleChunk-1)/protocol.MaxBundleChunk,
		protocol.MaxBundleChunk>>20, took.Round(time.Millisecond), float64(mb)/took.Seconds())
}
