package cgroups

import (
	"slices"
	"strings"
)

// v1Controllers are the v1 controllers a group may span: the three that
// carry limits, cpuacct for CPU usage and freezer for Kill (the last two
// only where there is no cgroup2 hierarchy to provide them).
var v1Controllers = []string{"memory", "cpu", "pids", "cpuacct", "freezer"}

// limitControllers are the controllers that carry Limits, in the order
// Enforced lists them.
var limitControllers = []string{"memory", "cpu", "pids"}

// hierarchy is one mounted cgroup hierarchy.
type hierarchy struct {
	point    string // mount point
	v2       bool
	readOnly bool
}

// layout is what the mount table offers: at most one cgroup2 hierarchy and
// the v1 hierarchies of the controllers in v1Controllers. Two controllers
// co-mounted (cpu,cpuacct) share one *hierarchy.
type layout struct {
	unified *hierarchy            // nil if no cgroup2 is mounted
	v1      map[string]*hierarchy // by controller; absent if not mounted
}

// empty reports whether no hierarchy baton could use is mounted.
func (l layout) empty() bool { return l.unified == nil && len(l.v1) == 0 }

// detectLayout picks the hierarchies from a parsed mount table. A
// hierarchy mounted twice (a bind mount, a container's view) is used
// through its best mount: one of its whole tree, under /sys/fs/cgroup,
// else the first.
func detectLayout(mounts []mount) layout {
	lay := layout{v1: map[string]*hierarchy{}}
	unifiedScore := -1
	v1Score := map[string]int{}
	byPoint := map[string]*hierarchy{}
	for _, m := range mounts {
		score := 0
		if m.root == "/" {
			score += 2
		}
		if m.point == "/sys/fs/cgroup" || strings.HasPrefix(m.point, "/sys/fs/cgroup/") {
			score++
		}
		switch m.fsType {
		case "cgroup2":
			if score > unifiedScore {
				lay.unified = &hierarchy{point: m.point, v2: true, readOnly: m.readOnly()}
				unifiedScore = score
			}
		case "cgroup":
			for _, c := range v1Controllers {
				if !slices.Contains(m.superOpts, c) {
					continue
				}
				if s, seen := v1Score[c]; seen && s >= score {
					continue
				}
				h := byPoint[m.point]
				if h == nil {
					h = &hierarchy{point: m.point, readOnly: m.readOnly()}
					byPoint[m.point] = h
				}
				lay.v1[c] = h
				v1Score[c] = score
			}
		}
	}
	return lay
}
