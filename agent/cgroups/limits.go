package cgroups

import (
	"fmt"
	"math"
	"strconv"
)

// Limits are the resource limits of one group. The zero value limits
// nothing. A limit whose controller the host does not offer (see
// Manager.Enforced) is silently not applied.
type Limits struct {
	// MemoryMax is the most memory the group may use, in bytes; past it
	// the kernel reclaims and then OOM-kills a member. 0 (the default)
	// means no limit. When set, swap may not extend it: v2
	// memory.swap.max is 0 and v1 memory.memsw.limit_in_bytes equals it,
	// where the kernel has those files (swap accounting on).
	MemoryMax int64
	// MemoryLow is memory, in bytes, that the kernel tries not to reclaim
	// from the group (v2 memory.low; v1 memory.soft_limit_in_bytes, which
	// only makes the group the last one pushed back towards it under
	// pressure). For "at least" requests. 0 (the default) protects none.
	MemoryLow int64
	// CPUMax is the group's CPU quota in CPUs: 0.5 is 50 ms of CPU time
	// per 100 ms period (v2 cpu.max, v1 cpu.cfs_quota_us and
	// cpu.cfs_period_us). The kernel's least quota, 1 ms a period
	// (0.01 CPUs), is used for anything smaller. 0 (the default) means no
	// quota.
	CPUMax float64
	// CPUWeight is the group's share of contended CPU, in CPUs: a group
	// with 2 gets twice the time of one with 1 when both want more than
	// there is (v2 cpu.weight 100 per CPU, clamped to 1..10000; v1
	// cpu.shares 1024 per CPU, clamped to 2..262144). 0 (the default)
	// gives the kernel's default weight, that of 1 CPU.
	CPUWeight float64
	// PidsMax is the most processes and threads the group may hold at
	// once; a fork past it fails with EAGAIN. A trampoline counts from
	// the moment it joins, with all its threads (a Go program has 5 to
	// 10 until it execs, and dies if it cannot start one it needs): keep
	// PidsMax at 16 or more. 0 (the default) means no limit.
	PidsMax int64
}

// Validate reports a negative, NaN or infinite limit.
func (l Limits) Validate() error {
	switch {
	case l.MemoryMax < 0:
		return fmt.Errorf("cgroups: MemoryMax %d is negative (use 0 for no limit)", l.MemoryMax)
	case l.MemoryLow < 0:
		return fmt.Errorf("cgroups: MemoryLow %d is negative (use 0 for none)", l.MemoryLow)
	case l.CPUMax < 0 || math.IsNaN(l.CPUMax) || math.IsInf(l.CPUMax, 0):
		return fmt.Errorf("cgroups: CPUMax %v is not a number of CPUs (use 0 for no quota)", l.CPUMax)
	case l.CPUWeight < 0 || math.IsNaN(l.CPUWeight) || math.IsInf(l.CPUWeight, 0):
		return fmt.Errorf("cgroups: CPUWeight %v is not a number of CPUs (use 0 for the default)", l.CPUWeight)
	case l.PidsMax < 0:
		return fmt.Errorf("cgroups: PidsMax %d is negative (use 0 for no limit)", l.PidsMax)
	}
	return nil
}

const (
	cpuPeriodUS   = 100_000 // the CFS period baton uses, 100 ms
	cpuMinQuotaUS = 1_000   // the kernel's least quota, 1 ms
)

// cpuQuotaUS is the quota per cpuPeriodUS for cpus CPUs.
func cpuQuotaUS(cpus float64) int64 {
	return max(cpuMinQuotaUS, int64(math.Round(cpus*cpuPeriodUS)))
}

// cpuWeightV2 is cpu.weight for cpus CPUs: 100 per CPU, clamped.
func cpuWeightV2(cpus float64) int64 {
	if cpus == 0 {
		return 100
	}
	return min(10_000, max(1, int64(math.Round(cpus*100))))
}

// cpuSharesV1 is cpu.shares for cpus CPUs: 1024 per CPU, clamped.
func cpuSharesV1(cpus float64) int64 {
	if cpus == 0 {
		return 1024
	}
	return min(262_144, max(2, int64(math.Round(cpus*1024))))
}

// setting is one write to a control file in a group's directory.
type setting struct {
	file  string
	value string
}

// settings lists, in order, the writes that apply l's limits of
// controller ctl ("memory", "cpu" or "pids") in a v2 (v2 true) or v1
// group. has reports whether the group has an optional control file.
// Every limit is written, the defaults too, so the files say what was
// asked even on a group that an earlier agent left.
func settings(ctl string, v2 bool, l Limits, has func(file string) bool) []setting {
	if v2 {
		return settingsV2(ctl, l, has)
	}
	return settingsV1(ctl, l, has)
}

func settingsV2(ctl string, l Limits, has func(file string) bool) []setting {
	switch ctl {
	case "memory":
		s := []setting{{"memory.max", orUnlimited(l.MemoryMax, "max")}}
		if has("memory.swap.max") {
			swap := "max"
			if l.MemoryMax > 0 {
				swap = "0"
			}
			s = append(s, setting{"memory.swap.max", swap})
		}
		return append(s, setting{"memory.low", itoa(l.MemoryLow)})
	case "cpu":
		quota := "max"
		if l.CPUMax > 0 {
			quota = itoa(cpuQuotaUS(l.CPUMax))
		}
		return []setting{
			{"cpu.max", quota + " " + itoa(cpuPeriodUS)},
			{"cpu.weight", itoa(cpuWeightV2(l.CPUWeight))},
		}
	case "pids":
		return []setting{{"pids.max", orUnlimited(l.PidsMax, "max")}}
	}
	return nil
}

func settingsV1(ctl string, l Limits, has func(file string) bool) []setting {
	switch ctl {
	case "memory":
		// memory.memsw.limit_in_bytes (memory plus swap) may never be
		// below memory.limit_in_bytes: lower memory first, raise memsw
		// first.
		limit := setting{"memory.limit_in_bytes", orUnlimited(l.MemoryMax, "-1")}
		var s []setting
		switch memsw := (setting{"memory.memsw.limit_in_bytes", limit.value}); {
		case !has(memsw.file):
			s = []setting{limit}
		case l.MemoryMax > 0:
			s = []setting{limit, memsw}
		default:
			s = []setting{memsw, limit}
		}
		return append(s, setting{"memory.soft_limit_in_bytes", orUnlimited(l.MemoryLow, "-1")})
	case "cpu":
		quota := "-1"
		if l.CPUMax > 0 {
			quota = itoa(cpuQuotaUS(l.CPUMax))
		}
		return []setting{
			{"cpu.cfs_period_us", itoa(cpuPeriodUS)},
			{"cpu.cfs_quota_us", quota},
			{"cpu.shares", itoa(cpuSharesV1(l.CPUWeight))},
		}
	case "pids":
		return []setting{{"pids.max", orUnlimited(l.PidsMax, "max")}}
	}
	return nil
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// orUnlimited is v, or the file's word for no limit if v is 0.
func orUnlimited(v int64, unlimited string) string {
	if v == 0 {
		return unlimited
	}
	return itoa(v)
}
