package cgroups

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// mount is one line of /proc/self/mountinfo, reduced to what layout
// detection needs.
type mount struct {
	root      string   // the mount's root inside its filesystem ("/" unless a bind mount)
	point     string   // where it is mounted
	options   []string // per-mount options: "rw" or "ro", "nosuid", ...
	fsType    string   // "cgroup2", "cgroup", "tmpfs", ...
	superOpts []string // per-superblock options; for "cgroup" they name its controllers
}

// readOnly reports whether writes through this mount fail with EROFS.
func (m mount) readOnly() bool {
	return slices.Contains(m.options, "ro") || slices.Contains(m.superOpts, "ro")
}

// parseMountinfo parses the format of proc(5) /proc/[pid]/mountinfo:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// (ID, parent ID, major:minor, root, mount point, mount options, optional
// fields ended by "-", filesystem type, source, super options). Paths have
// space, tab, newline and backslash escaped as \040, \011, \012 and \134.
func parseMountinfo(data []byte) ([]mount, error) {
	var mounts []mount
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		// Six fixed fields before the optional ones, three after "-" (the
		// super options may be missing on very old kernels).
		if sep < 6 || len(f) < sep+3 {
			return nil, fmt.Errorf("mountinfo line %d: want at least 6 fields, \"-\" and 2 more, got %q", n, line)
		}
		m := mount{
			root:    unescapeMountPath(f[3]),
			point:   unescapeMountPath(f[4]),
			options: strings.Split(f[5], ","),
			fsType:  f[sep+1],
		}
		if len(f) > sep+3 {
			m.superOpts = strings.Split(f[sep+3], ",")
		}
		mounts = append(mounts, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return mounts, nil
}

// unescapeMountPath undoes the kernel's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
