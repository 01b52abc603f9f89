package cgroups

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	data := "60 28 0:45 / /mnt/my\\040disk rw,relatime shared:33 master:2 - ext4 /dev/sdb1 rw\n" +
		"\n" +
		"32 22 0:27 /sub /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
	mounts, err := parseMountinfo([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 2 {
		t.Fatalf("got %d mounts, want 2: %+v", len(mounts), mounts)
	}
	if m := mounts[0]; m.point != "/mnt/my disk" || m.fsType != "ext4" || m.readOnly() {
		t.Errorf("first mount = %+v, want ext4 rw at \"/mnt/my disk\"", m)
	}
	if m := mounts[1]; m.root != "/sub" || m.point != "/sys/fs/cgroup" || m.fsType != "cgroup2" || !m.readOnly() ||
		!slices.Equal(m.superOpts, []string{"rw", "nsdelegate"}) {
		t.Errorf("second mount = %+v, want read-only cgroup2 of /sub at /sys/fs/cgroup", m)
	}
	if _, err := parseMountinfo([]byte("1 2 3:4 / /x rw\n")); err == nil {
		t.Error("a line without \" - \" parsed without error")
	}
}

func TestDetectLayout(t *testing.T) {
	const cg = "/sys/fs/cgroup"
	tests := []struct {
		name      string
		file      string
		unified   string            // cgroup2 mount point; "" for none
		v1        map[string]string // controller → v1 mount point
		readOnly  bool              // every cgroup mount is read-only
		rootCtls  string            // what the fake's cgroup2 root offers
		rootOn    string            // and has enabled
		wantMode  Mode
		wantLimit []string
	}{
		{
			name: "pure v2 systemd host", file: "v2-systemd.mountinfo",
			unified: cg, v1: map[string]string{},
			rootCtls: "cpuset cpu io memory hugetlb pids rdma misc", rootOn: "cpuset cpu io memory pids",
			wantMode: ModeV2, wantLimit: []string{"memory", "cpu", "pids"},
		},
		{
			name: "hybrid, this test machine's layout", file: "hybrid-vm.mountinfo",
			unified: cg + "/unified",
			v1: map[string]string{"memory": cg + "/memory", "cpu": cg + "/cpu", "cpuacct": cg + "/cpuacct",
				"pids": cg + "/pids", "freezer": cg + "/freezer"},
			wantMode: ModeHybrid, wantLimit: []string{"memory", "cpu", "pids"},
		},
		{
			name: "hybrid systemd, cpu and cpuacct co-mounted", file: "hybrid-systemd.mountinfo",
			unified: cg + "/unified",
			v1: map[string]string{"memory": cg + "/memory", "cpu": cg + "/cpu,cpuacct", "cpuacct": cg + "/cpu,cpuacct",
				"pids": cg + "/pids", "freezer": cg + "/freezer"},
			wantMode: ModeHybrid, wantLimit: []string{"memory", "cpu", "pids"},
		},
		{
			name: "legacy v1, cpu and cpuacct co-mounted", file: "v1-centos7.mountinfo",
			v1: map[string]string{"memory": cg + "/memory", "cpu": cg + "/cpu,cpuacct", "cpuacct": cg + "/cpu,cpuacct",
				"pids": cg + "/pids", "freezer": cg + "/freezer"},
			wantMode: ModeV1, wantLimit: []string{"memory", "cpu", "pids"},
		},
		{
			name: "container with read-only cgroup2", file: "container-v2-ro.mountinfo",
			unified: cg, v1: map[string]string{}, readOnly: true, wantMode: ModeNone,
		},
		{
			name: "container with read-only v1 bind mounts", file: "container-v1-ro.mountinfo",
			unified: cg + "/unified",
			v1: map[string]string{"memory": cg + "/memory", "cpu": cg + "/cpu,cpuacct", "cpuacct": cg + "/cpu,cpuacct",
				"pids": cg + "/pids", "freezer": cg + "/freezer"},
			readOnly: true, wantMode: ModeNone,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			mounts, err := parseMountinfo(data)
			if err != nil {
				t.Fatal(err)
			}
			lay := detectLayout(mounts)

			gotUnified := ""
			if lay.unified != nil {
				gotUnified = lay.unified.point
				if lay.unified.readOnly != tt.readOnly {
					t.Errorf("cgroup2 read-only = %v, want %v", lay.unified.readOnly, tt.readOnly)
				}
			}
			if gotUnified != tt.unified {
				t.Errorf("cgroup2 at %q, want %q", gotUnified, tt.unified)
			}
			got := map[string]string{}
			for c, h := range lay.v1 {
				got[c] = h.point
				if h.readOnly != tt.readOnly {
					t.Errorf("v1 %s read-only = %v, want %v", c, h.readOnly, tt.readOnly)
				}
			}
			if !maps.Equal(got, tt.v1) {
				t.Errorf("v1 hierarchies = %v, want %v", got, tt.v1)
			}
			if c, ok := lay.v1["cpu"]; ok && tt.v1["cpu"] == tt.v1["cpuacct"] && c != lay.v1["cpuacct"] {
				t.Error("co-mounted cpu and cpuacct are two hierarchies, want one")
			}

			// Open on a fake kernel with the same mounts.
			m, err := openOnFake(t, lay, tt.rootCtls, tt.rootOn)
			if m.Mode() != tt.wantMode {
				t.Errorf("Open: mode %q, want %q (error: %v)", m.Mode(), tt.wantMode, err)
			}
			if !slices.Equal(m.Enforced(), tt.wantLimit) {
				t.Errorf("Enforced() = %v, want %v (notes: %v)", m.Enforced(), tt.wantLimit, m.Notes())
			}
			if tt.wantMode == ModeNone {
				if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "read-only") {
					t.Errorf("Open error = %v, want ErrUnavailable saying read-only", err)
				}
			} else if err != nil {
				t.Errorf("Open: %v", err)
			}
		})
	}
}

// openOnFake mounts the hierarchies of lay on a fake kernel, at the same
// paths under its root, and opens "baton.slice/agent-1" there.
func openOnFake(t *testing.T, lay layout, rootCtls, rootOn string) (*Manager, error) {
	t.Helper()
	k := newFakeKernel(t)
	if lay.unified != nil {
		k.mountV2(lay.unified.point, rootCtls, rootOn)
	}
	ctls := map[*hierarchy][]string{}
	for _, c := range v1Controllers {
		if h := lay.v1[c]; h != nil {
			ctls[h] = append(ctls[h], c)
		}
	}
	for h, cs := range ctls {
		k.mountV1(h.point, cs...)
	}
	fake := k.layout()
	// Keep what the sample says about read-only mounts.
	if lay.unified != nil && fake.unified != nil {
		fake.unified.readOnly = lay.unified.readOnly
	}
	for c, h := range fake.v1 {
		h.readOnly = lay.v1[c].readOnly
	}
	return open(fake, "baton.slice/agent-1", k)
}
