package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// freezeWait bounds how long one round of Kill waits for the group to
// report frozen. A member in uninterruptible sleep can hold it back; the
// round then kills what it sees anyway, and the next round catches the
// rest.
const freezeWait = 100 * time.Millisecond

// Kill SIGKILLs every member and waits until none is left, up to timeout.
// Nothing can escape by forking meanwhile:
//
//   - cgroup2 with cgroup.kill (Linux 5.14; ModeV2 and ModeHybrid): the
//     kernel kills the whole group, forks in flight included;
//   - else with a freezer (cgroup2 cgroup.freeze, or the v1 freezer in
//     ModeV1): each round freezes the group, SIGKILLs every member
//     while none can fork, and thaws it so that they die;
//   - else (v1 without a freezer) each round SIGKILLs every member it
//     sees, which a fork bomb can outrun only as long as PidsMax lets it.
//
// Rounds repeat until the group is empty. If members are left after
// timeout, the error matches ErrNotEmpty and lists them. A group that
// does not exist is empty.
func (g *Group) Kill(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	wait := 5 * time.Millisecond
	for {
		if err := g.killRound(); err != nil {
			return err
		}
		populated, err := g.Populated()
		if err != nil {
			return err
		}
		if !populated {
			return nil
		}
		if time.Now().After(deadline) {
			pids, _ := g.Procs()
			return fmt.Errorf("%w: group %q still has pids %v %s after SIGKILL (in uninterruptible sleep? see /proc/PID/stack)", ErrNotEmpty, g.name, pids, timeout)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// killRound SIGKILLs every member once, by the best means the group has.
func (g *Group) killRound() error {
	if g.unified != "" {
		err := g.fs.WriteFile(filepath.Join(g.unified, "cgroup.kill"), "1")
		switch {
		case err == nil:
			// The cgroup2 members are dying; a process in a v1
			// hierarchy only (one that failed to join them all) too.
			return g.signal(syscall.SIGKILL)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("cgroups: kill group %q: %w", g.name, err)
		}
		// No cgroup.kill (before Linux 5.14), or no group: freeze.
	}
	thaw, err := g.freeze()
	if err != nil {
		return err
	}
	err = g.signal(syscall.SIGKILL)
	if thaw != nil {
		// A frozen member dies only once thawed.
		if terr := thaw(); err == nil {
			err = terr
		}
	}
	return err
}

// freeze freezes the group with the best freezer it has and waits (up to
// freezeWait) until it is frozen. It returns the function that thaws it,
// or nil if there is no freezer.
func (g *Group) freeze() (thaw func() error, err error) {
	var file, on, off, state, frozen string
	switch {
	case g.unified != "" && exists(filepath.Join(g.unified, "cgroup.freeze")):
		file, on, off = filepath.Join(g.unified, "cgroup.freeze"), "1", "0"
		state, frozen = filepath.Join(g.unified, "cgroup.events"), "frozen 1"
	case g.freezer != "" && exists(filepath.Join(g.freezer, "freezer.state")):
		file, on, off = filepath.Join(g.freezer, "freezer.state"), "FROZEN", "THAWED"
		state, frozen = file, "FROZEN"
	default:
		return nil, nil
	}
	if err := g.fs.WriteFile(file, on); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil // removed meanwhile
		}
		return nil, fmt.Errorf("cgroups: freeze group %q: %w", g.name, err)
	}
	thaw = func() error {
		if err := g.fs.WriteFile(file, off); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cgroups: thaw group %q: %w", g.name, err)
		}
		return nil
	}
	deadline := time.Now().Add(freezeWait)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(state)
		if err != nil || strings.Contains(string(b), frozen) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	return thaw, nil
}
