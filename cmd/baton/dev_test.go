package main

import (
	"bytes"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/baton-dev/baton/coordinator"
)

func defaultLayout(n int) devLayout {
	return devLayout{coordinators: n, httpAddr: "127.0.0.1:7400", raftAddr: "127.0.0.1:7401",
		gossipPort: 7402, natsPort: 4222, natsClusterPort: 6222, dataDir: "/d"}
}

// TestDevLayoutOne checks that one coordinator is the single-node dev
// coordinator it always was: bootstrapped alone, no gossip.
func TestDevLayoutOne(t *testing.T) {
	cfgs, err := defaultLayout(1).configs()
	if err != nil {
		t.Fatal(err)
	}
	want := coordinator.DevConfig()
	want.DataDir = filepath.Join("/d", "coordinator")
	want.HTTPAddr, want.RaftAddr, want.NATSPort = "127.0.0.1:7400", "127.0.0.1:7401", 4222
	if len(cfgs) != 1 || !reflect.DeepEqual(cfgs[0], want) {
		t.Fatalf("configs %+v, want [%+v]", cfgs, want)
	}
	if !cfgs[0].Bootstrap || cfgs[0].Clustered() {
		t.Errorf("one coordinator: Bootstrap %t, Clustered %t; want a lone bootstrapped node", cfgs[0].Bootstrap, cfgs[0].Clustered())
	}
}

// TestDevLayoutCluster checks that several coordinators each take their
// own loopback IP with the same ports, and find each other.
func TestDevLayoutCluster(t *testing.T) {
	l := defaultLayout(3)
	l.httpAddr, l.raftAddr = "127.0.0.11:17400", "127.0.0.11:17401"
	l.gossipPort, l.natsPort, l.natsClusterPort = 17402, 14222, 16222
	cfgs, err := l.configs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 3 {
		t.Fatalf("%d configs, want 3", len(cfgs))
	}
	type node struct {
		id, dir, http, raft, gossip, natsHost string
		join                                  []string
	}
	want := []node{
		{"c1", "/d/c1", "127.0.0.11:17400", "127.0.0.11:17401", "127.0.0.11:17402", "127.0.0.11", []string{"127.0.0.12:17402", "127.0.0.13:17402"}},
		{"c2", "/d/c2", "127.0.0.12:17400", "127.0.0.12:17401", "127.0.0.12:17402", "127.0.0.12", []string{"127.0.0.11:17402", "127.0.0.13:17402"}},
		{"c3", "/d/c3", "127.0.0.13:17400", "127.0.0.13:17401", "127.0.0.13:17402", "127.0.0.13", []string{"127.0.0.11:17402", "127.0.0.12:17402"}},
	}
	for i, c := range cfgs {
		got := node{c.NodeID, c.DataDir, c.HTTPAddr, c.RaftAddr, c.GossipAddr, c.NATSHost, c.Join}
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("coordinator %d: %+v, want %+v", i+1, got, want[i])
		}
		if c.Bootstrap || c.BootstrapExpect != 3 || c.NATSPort != 14222 || c.NATSClusterPort != 16222 {
			t.Errorf("coordinator %d: Bootstrap %t, BootstrapExpect %d, NATS port %d, cluster port %d; want false, 3, 14222, 16222",
				i+1, c.Bootstrap, c.BootstrapExpect, c.NATSPort, c.NATSClusterPort)
		}
		if c.ReconcileInterval != coordinator.DevConfig().ReconcileInterval {
			t.Errorf("coordinator %d does not have the dev timings", i+1)
		}
	}
}

func TestDevLayoutErrors(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*devLayout)
		wantErr string
	}{
		{"zero", func(l *devLayout) { l.coordinators = 0 }, "--coordinators 0: run at least 1"},
		{"negative", func(l *devLayout) { l.coordinators = -3 }, "--coordinators -3: run at least 1"},
		{"host name", func(l *devLayout) { l.httpAddr = "localhost:7400" },
			`--http-addr "localhost:7400": with 3 coordinators give an IPv4 loopback address, like 127.0.0.1:7400`},
		{"not loopback", func(l *devLayout) { l.raftAddr = "10.0.0.1:7401" }, `--raft-addr "10.0.0.1:7401": with 3 coordinators give an IPv4 loopback address`},
		{"no port", func(l *devLayout) { l.httpAddr = "127.0.0.1" }, `--http-addr "127.0.0.1":`},
		{"past the loopback range", func(l *devLayout) { l.httpAddr = "127.255.255.254:7400" }, "3 coordinators do not fit in 127.0.0.0/8"},
		{"gossip port 0", func(l *devLayout) { l.gossipPort = 0 }, "--gossip-port 0: give a port from 1 to 65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := defaultLayout(3)
			tt.edit(&l)
			_, err := l.configs()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q in it", err, tt.wantErr)
			}
		})
	}
}

func TestDevLayoutWarning(t *testing.T) {
	for n, want := range map[int]string{
		1: "", 3: "", 5: "",
		2: "--coordinators 2: an even number adds no fault tolerance (a majority of 2 is 2, so it survives losing 0, as 1 does); use 3",
		4: "--coordinators 4: an even number adds no fault tolerance (a majority of 4 is 3, so it survives losing 1, as 3 does); use 5",
	} {
		if got := defaultLayout(n).warning(); got != want {
			t.Errorf("%d coordinators: warning %q, want %q", n, got, want)
		}
	}
}

// TestDevRefusesZeroCoordinators checks the command's own error, before
// anything starts.
func TestDevRefusesZeroCoordinators(t *testing.T) {
	for _, n := range []string{"0", "-1"} {
		cmd := newDevCmd()
		var errOut bytes.Buffer
		cmd.SetOut(&errOut)
		cmd.SetErr(&errOut)
		cmd.SetArgs([]string{"--coordinators", n, "--data-dir", t.TempDir()})
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), "--coordinators "+n+": run at least 1") {
			t.Errorf("--coordinators %s: error %v", n, err)
		}
	}
}

// TestDevMemberGossip checks that with several coordinators agents and
// the LB join the coordinators' gossip on a port of their own host the OS
// picks, and that the single-node dev cluster has no gossip.
func TestDevMemberGossip(t *testing.T) {
	one, err := defaultLayout(1).configs()
	if err != nil {
		t.Fatal(err)
	}
	if join := gossipJoin(one); join != nil || memberGossipAddr(join, "127.0.0.1") != "" {
		t.Errorf("one coordinator: join %v, member gossip %q; want none", join, memberGossipAddr(join, "127.0.0.1"))
	}
	three, err := defaultLayout(3).configs()
	if err != nil {
		t.Fatal(err)
	}
	join := gossipJoin(three)
	if want := []string{"127.0.0.1:7402", "127.0.0.2:7402", "127.0.0.3:7402"}; !reflect.DeepEqual(join, want) {
		t.Errorf("join %v, want %v", join, want)
	}
	if got := memberGossipAddr(join, "127.0.0.1"); got != "127.0.0.1:0" {
		t.Errorf("member gossip %q, want 127.0.0.1:0", got)
	}
}
