package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/baton-dev/baton/agent/cgroups"
	"github.com/baton-dev/baton/protocol"
)

// replicaCgroup is what the agent needs of one replica's cgroup.
type replicaCgroup interface {
	Name() string
	ProcsFiles() []string
	Kill(timeout time.Duration) error
	OOMKills() (int64, error)
	Delete() error
}

var _ replicaCgroup = (*cgroups.Group)(nil)

// isolation is the agent's cgroup manager, or nothing where cgroups cannot
// be used (then mgr is nil and every replica is tracked by its shim's
// subreaper alone).
type isolation struct {
	mgr *cgroups.Manager
	// why says why cgroups are not used (mgr nil), for logs and /healthz.
	why string
	// pidsMax bounds each replica's processes and threads.
	pidsMax int64
}

// openIsolation sets up replica cgroups under Config.CgroupParent, in a
// group of this agent's own (see agentCgroup), or explains why it cannot.
func openIsolation(cfg Config) *isolation {
	iso := &isolation{pidsMax: cfg.ReplicaPidsMax}
	if cfg.CgroupParent == "-" {
		iso.why = "disabled (--cgroup-parent -)"
		return iso
	}
	m, err := cgroups.Open(cfg.CgroupParent + "/" + agentCgroup(cfg))
	if err != nil || m == nil || m.Mode() == cgroups.ModeNone {
		iso.why = fmt.Sprint(err)
		return iso
	}
	iso.mgr = m
	return iso
}

// weigh gives the agent's replicas together the CPU weight of the CPUs
// the agent offers (see cgroups.Manager.SetCPUWeight).
func (iso *isolation) weigh(cpus float64) error {
	if iso.mgr == nil {
		return nil
	}
	return iso.mgr.SetCPUWeight(cpus)
}

// agentCgroup names the group an agent's replica cgroups live in: its id
// and a digest of its data dir. An agent that starts again on its data dir
// finds what its earlier run left (and kills it); two agents that share an
// id on one machine (two `baton dev` clusters) never touch each other's.
func agentCgroup(cfg Config) string {
	sum := sha256.Sum256([]byte(cfg.DataDir))
	return cfg.ID + "-" + hex.EncodeToString(sum[:4])
}

// describe says how replicas are isolated, for logs and /healthz.
func (iso *isolation) describe() string {
	if iso.mgr == nil {
		return "none (" + iso.why + ")"
	}
	return fmt.Sprintf("cgroups %s under %s, limits: %s", iso.mgr.Mode(), iso.mgr.Parent(), strings.Join(iso.mgr.Enforced(), ", "))
}

// mode names the isolation mode for metrics: v2, hybrid, v1 or none.
func (iso *isolation) mode() string {
	if iso.mgr == nil {
		return string(cgroups.ModeNone)
	}
	return string(iso.mgr.Mode())
}

func (iso *isolation) parent() string {
	if iso.mgr == nil {
		return ""
	}
	return iso.mgr.Parent()
}

// create makes a replica's cgroup with limits from its resources; nil
// (and no error) without cgroups.
func (iso *isolation) create(name string, res protocol.Resources) (replicaCgroup, error) {
	if iso.mgr == nil {
		return nil, nil
	}
	g, err := iso.mgr.Create(name, limitsFor(res, iso.pidsMax))
	if err != nil {
		return nil, err
	}
	return g, nil
}

// limitsFor turns a replica's resources into cgroup limits. An exact
// request (`cpus: 2`, `memory: 0.5`) is a limit: the replica gets that
// much and no more. An at-least request (`cpus: 2+`, `memory: 16+`) is a
// share under contention and a protection, with no upper bound, since the
// replica may use more of an idle machine. pidsMax always applies.
func limitsFor(res protocol.Resources, pidsMax int64) cgroups.Limits {
	l := cgroups.Limits{PidsMax: pidsMax}
	if q := res.CPUs; q.IsSet() {
		if q.AtLeast {
			l.CPUWeight = q.Value
		} else {
			l.CPUMax = q.Value
			l.CPUWeight = q.Value
		}
	}
	if q := res.Memory; q.IsSet() {
		bytes := int64(math.Ceil(q.Value * (1 << 30)))
		if q.AtLeast {
			l.MemoryLow = bytes
		} else {
			l.MemoryMax = bytes
		}
	}
	return l
}

// leftovers kills and removes the cgroups an earlier run of this agent
// left (it died without stopping its replicas), returning their names.
func (iso *isolation) leftovers() ([]string, error) {
	if iso.mgr == nil {
		return nil, nil
	}
	groups, err := iso.mgr.Leftovers()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, g := range groups {
		names = append(names, g.Name())
		if err := g.Kill(killWait); err != nil {
			return names, fmt.Errorf("kill leftover cgroup %s: %w", g.Name(), err)
		}
		if err := g.Delete(); err != nil {
			return names, fmt.Errorf("remove leftover cgroup %s: %w", g.Name(), err)
		}
	}
	return names, nil
}

// close removes the agent's cgroup when no replica group is left in it
// (Run calls it after stopping every replica).
func (iso *isolation) close() error {
	if iso.mgr == nil {
		return nil
	}
	return iso.mgr.RemoveParent()
}

// openShimCgroup is how a shim finds its replica's cgroup.
func openShimCgroup(c *shimCgroup) (shimGroup, error) {
	m, err := cgroups.Open(c.Parent)
	if err != nil {
		return nil, err
	}
	return m.Group(c.Name), nil
}

// memoryText renders a memory limit for a reason: "512 MiB", "16 GiB".
func memoryText(gib float64) string {
	if gib < 1 {
		return fmt.Sprintf("%d MiB", int64(math.Round(gib*1024)))
	}
	return strings.TrimSuffix(fmt.Sprintf("%.2f", gib), ".00") + " GiB"
}
