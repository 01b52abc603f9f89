package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/loadgen"
	"github.com/baton-dev/baton/internal/procscan"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/protocol"
)

// TestRollingUpdateUnderLoad: `serve update --mode rolling` replaces the
// replicas one by one with no failed request; both versions serve
// meanwhile, and the endpoint stays the same.
func TestRollingUpdateUnderLoad(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 4}, agentOpts{cpus: 4})
	dir := testutil.OpenTempDir(t)
	v1 := strings.ReplaceAll(readFile(t, workRoot+"/examples/http_server/task.yaml"), "workdir: examples/http_server", "workdir: "+workRoot+"/examples/http_server")
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

// TestResourcesOnlyUpdateMovesReplicas: an update that changes nothing but
// resources (cpus 2+ -> 4+) is a new version whose replicas land on the
// agents that fit, with no failed request.
func TestResourcesOnlyUpdateMovesReplicas(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 2}, agentOpts{cpus: 2}, agentOpts{cpus: 4}, agentOpts{cpus: 4})
	dir := testutil.OpenTempDir(t)
	v1 := strings.ReplaceAll(readFile(t, workRoot+"/examples/http_server/task.yaml"), "workdir: examples/http_server", "workdir: "+workRoot+"/examples/http_server")
	v2 := strings.Replace(v1, "cpus: 2+", "cpus: 4+", 1)
	if v2 == v1 {
		t.Fatal("could not derive the resources-only change from the example task")
	}
	c.mustCLI("serve", "up", writeTask(t, dir, "v1.yaml", v1), "-n", "web", "-y")
	st := c.waitReady("web", 1, 2, 60*time.Second)
	for _, r := range replicas(st, "web") {
		if r.Agent != "agent-1" && r.Agent != "agent-2" {
			t.Errorf("v1 replica %d on %s, want a 2-CPU agent", r.ID, r.Agent)
		}
	}
	stop, served := startLoad("http://"+service(st, "web").Endpoint+"/", 4)
	waitServed(t, served, 20)
	c.mustCLI("serve", "update", "web", writeTask(t, dir, "v2.yaml", v2), "-y")
	testutil.WaitFor(t, 60*time.Second, func() error {
		st, err := c.statusAPI()
		if err != nil {
			return err
		}
		reps := replicas(st, "web")
		if fmt.Sprint(ids(reps)) != "[3 4]" || service(st, "web").ReadyReplicas != 2 {
			return fmt.Errorf("replicas %v", reps)
		}
		return nil
	})
	waitServed(t, served, served.Load()+20)
	sum := loadgen.Summarize(stop())
	if sum.Failed != 0 || sum.ByVersion[2] == 0 {
		t.Fatalf("load during the update: %+v", sum)
	}
	for _, r := range replicas(c.status("web"), "web") {
		if r.Agent != "agent-3" && r.Agent != "agent-4" {
			t.Errorf("v2 replica %d (cpus 4+) on %s, want a 4-CPU agent", r.ID, r.Agent)
		}
		if !strings.Contains(r.Resources, "vCPU=4") {
			t.Errorf("v2 replica %d resources %q, want vCPU=4", r.ID, r.Resources)
		}
	}
}

// TestAcceleratorPlacement: a task asking for A100:1 lands on the agent
// with (fake) A100s, gets its GPU as CUDA_VISIBLE_DEVICES, and a second
// replica that finds no free A100 stays PENDING with the reason.
func TestAcceleratorPlacement(t *testing.T) {
	c := newCluster(t, agentOpts{cpus: 4}, agentOpts{cpus: 4, accelerators: "A100:1"})
	c.mustCLI("serve", "up", "examples/http_server/task_gpu.yaml", "-n", "gpu", "-y")
	st := c.waitReady("gpu", 1, 1, 60*time.Second)
	var onGPU *protocol.ReplicaStatusView
	for _, r := range replicas(st, "gpu") {
		if r.Status == protocol.ReplicaReady {
			onGPU = &r
		}
	}
	if onGPU == nil || onGPU.Agent != "agent-2" || !strings.Contains(onGPU.Resources, "A100:1") {
		t.Fatalf("READY replica should be on agent-2 with A100:1: %+v", onGPU)
	}
	pids := c.replicaPIDs("gpu", onGPU.ID)
	if len(pids) == 0 {
		t.Fatal("no process for the GPU replica")
	}
	if !procscan.HasEnv(pids[0], "CUDA_VISIBLE_DEVICES=GPU-fake-agent-2-0") {
		t.Errorf("replica process lacks CUDA_VISIBLE_DEVICES=GPU-fake-agent-2-0")
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		st, err := c.statusAPI()
		if err != nil {
			return err
		}
		for _, r := range replicas(st, "gpu") {
			if r.Status == protocol.ReplicaPending && strings.Contains(r.Reason, "accelerators A100:1") {
				return nil
			}
		}
		return fmt.Errorf("no PENDING replica waiting for an A100: %+v", st.Replicas)
	})
}
