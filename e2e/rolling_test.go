package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/loadgen"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// TestRollingUpdateUnderLoad: `serve update --mode rolling` replaces the
// replicas one by one with no failed request; both versions serve
// meanwhile, and the endpoint stays the same.
func TestRollingUpdateUnderLoad(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 4}, agentOpts{cpus: 4})
	dir := t.TempDir()
	v1 := strings.ReplaceAll(readFile(t, repoRoot+"/examples/http_server/task.yaml"), "workdir: examples/http_server", "workdir: "+repoRoot+"/examples/http_server")
	v2 := strings.Replace(v1, `VERSION: "1"`, `VERSION: "2"`, 1)
	if v2 == v1 {
		t.Fatal("could not derive version 2 from the example task")
	}
	f1, f2 := writeTask(t, dir, "v1.yaml", v1), writeTask(t, dir, "v2.yaml", v2)
	c.mustCLI("serve", "up", f1, "-n", "web", "-y")
	st := c.waitReady("web", 1, 2, 60*time.Second)
	endpoint := service(st, "web").Endpoint

	stop, served := startLoad("http://"+endpoint+"/", 6)
	waitServed(t, served, 30)
	out := c.mustCLI("serve", "update", "web", f2, "--mode", "rolling", "-y")
	if !strings.Contains(out, "rolling") {
		t.Errorf("update output does not mention the mode: %q", out)
	}
	testutil.WaitFor(t, 60*time.Second, func() error {
		st, err := c.statusAPI()
		if err != nil {
			return err
		}
		reps := replicas(st, "web")
		for _, r := range reps {
			if r.Version == 1 {
				return fmt.Errorf("old replica %d still %s", r.ID, r.Status)
			}
		}
		if n := service(st, "web").ReadyReplicas; n != 2 {
			return fmt.Errorf("%d READY", n)
		}
		return nil
	})
	waitServed(t, served, served.Load()+30)
	results := stop()
	sum := loadgen.Summarize(results)
	t.Logf("rolling update under load: %d requests, %d failed, by version %v", sum.Sent, sum.Failed, sum.ByVersion)
	if sum.Failed != 0 {
		t.Fatalf("%d requests failed: %v", sum.Failed, sum.FirstErrors)
	}
	if sum.ByVersion[1] == 0 || sum.ByVersion[2] == 0 {
		t.Fatalf("want both versions to serve, got %v", sum.ByVersion)
	}
	st = c.status("web")
	if s := service(st, "web"); s.Endpoint != endpoint || fmt.Sprint(s.ActiveVersions) != "[2]" || s.Status != protocol.ServiceReady {
		t.Fatalf("after rolling update: %+v", s)
	}
	if fmt.Sprint(ids(replicas(st, "web"))) != "[3 4]" {
		t.Fatalf("replicas %v, want [3 4]", ids(replicas(st, "web")))
	}
}
