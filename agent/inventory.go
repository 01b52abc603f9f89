package agent

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// detectCPUs is the number of logical CPUs usable by this process.
func detectCPUs() float64 { return float64(runtime.NumCPU()) }

// detectMemoryGB reads MemTotal from /proc/meminfo, in GiB.
func detectMemoryGB() (float64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseMemTotal(f)
}

// parseMemTotal finds "MemTotal: N kB" and returns N in GiB.
func parseMemTotal(r interface{ Read([]byte) (int, error) }) (float64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "MemTotal:" {
			continue
		}
		kb, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			return 0, fmt.Errorf("meminfo: MemTotal %q: %w", fields[1], err)
		}
		return kb / (1024 * 1024), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("meminfo: no MemTotal line")
}
