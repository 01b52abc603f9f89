package agent

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/baton-dev/baton/protocol"
)

// basePath is the PATH replicas get unless the agent passes its own with
// --replica-env PATH: the standard system directories.
const basePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// replicaUser is who replica processes run as.
type replicaUser struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32
	home   string
	// switchTo is set when the agent (root) runs replicas as another
	// user; otherwise they run as the agent's own user.
	switchTo bool
}

// defaultReplicaUser is who a root agent runs replicas as when no user is
// configured, as Nomad's exec driver does.
const defaultReplicaUser = "nobody"

// resolveReplicaUser decides who replicas run as: name (a user name or a
// numeric uid); empty means the default, which is defaultReplicaUser for an
// agent running as root and the agent's own user otherwise. Only a root
// agent can run replicas as another user.
func resolveReplicaUser(name string) (replicaUser, error) {
	self, err := user.Current()
	if err != nil {
		return replicaUser{}, fmt.Errorf("who is the agent running as: %w", err)
	}
	root := os.Geteuid() == 0
	if name == "" {
		name = self.Username
		if root {
			name = defaultReplicaUser
		}
	}
	u, err := lookupUser(name)
	if err != nil {
		return replicaUser{}, err
	}
	ru := replicaUser{name: u.Username, home: u.HomeDir}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return replicaUser{}, fmt.Errorf("replica user %q has a uid or gid that is not a number (%s, %s)", name, u.Uid, u.Gid)
	}
	ru.uid, ru.gid = uint32(uid), uint32(gid)
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				ru.groups = append(ru.groups, uint32(n))
			}
		}
	}
	switch {
	case int(ru.uid) == os.Geteuid():
		ru.switchTo = false
	case !root:
		return replicaUser{}, fmt.Errorf("replica user %q: an agent that is not root (it runs as %s) can only run replicas as itself; leave --replica-user unset or run the agent as root", name, self.Username)
	default:
		ru.switchTo = true
	}
	return ru, nil
}

func lookupUser(name string) (*user.User, error) {
	if _, err := strconv.Atoi(name); err == nil {
		if u, err := user.LookupId(name); err == nil {
			return u, nil
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("replica user %q does not exist on this machine (create it, or pick another with --replica-user): %w", name, err)
	}
	return u, nil
}

// credential is what the shim runs replica processes with; nil when they
// run as the agent's own user.
func (u replicaUser) credential() *syscall.Credential {
	if !u.switchTo {
		return nil
	}
	return &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}
}

// canReach reports why user u cannot use dir as a working directory (nil
// when it can): every directory above it must let u search it, and dir
// itself must let u read and search it. A root agent checks this before
// starting a replica so that a replica user who cannot reach the workdir
// gets a clear reason instead of a shell error.
func (u replicaUser) canReach(dir string) error {
	if !u.switchTo {
		return nil
	}
	dir = filepath.Clean(dir)
	parts := []string{dir}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		parts = append(parts, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	for i := len(parts) - 1; i >= 0; i-- {
		want := uint32(1) // search
		if i == 0 {
			want = 5 // read and search
		}
		fi, err := os.Stat(parts[i])
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if !u.allowed(st, want) {
			return fmt.Errorf("%s is mode %04o, owned by uid %d gid %d: replica user %s (uid %d) cannot %s it",
				parts[i], fi.Mode().Perm(), st.Uid, st.Gid, u.name, u.uid, map[uint32]string{1: "enter", 5: "read"}[want])
		}
	}
	return nil
}

// cannotWrite reports whether u (switched to) lacks write permission on
// dir, for a hint when a replica's setup fails.
func (u replicaUser) cannotWrite(dir string) bool {
	if !u.switchTo {
		return false
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && !u.allowed(st, 3) // write and search
}

// allowed applies the permission bits of st for u (owner, then group,
// then others, as the kernel does).
func (u replicaUser) allowed(st *syscall.Stat_t, want uint32) bool {
	mode := uint32(st.Mode) & 0o777
	switch {
	case uint32(st.Uid) == u.uid:
		return (mode>>6)&want == want
	case uint32(st.Gid) == u.gid || containsGID(u.groups, uint32(st.Gid)):
		return (mode>>3)&want == want
	default:
		return mode&want == want
	}
}

func containsGID(gids []uint32, g uint32) bool {
	for _, x := range gids {
		if x == g {
			return true
		}
	}
	return false
}

// prepareDir makes dir owned by the replica user (its working directory,
// HOME fallback and TMPDIR live there).
func (u replicaUser) prepareDir(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return err
	}
	if !u.switchTo {
		return nil
	}
	for _, p := range []string{dir, filepath.Join(dir, "tmp")} {
		if err := os.Chown(p, int(u.uid), int(u.gid)); err != nil {
			return err
		}
	}
	return nil
}

// ParseReplicaEnv reads the agent's --replica-env settings (for
// Config.ReplicaEnv): KEY=VALUE, or KEY alone to pass the agent's own
// value of KEY (unset: an error).
func ParseReplicaEnv(settings []string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range settings {
		k, v, hasValue := strings.Cut(s, "=")
		if err := protocol.ValidateEnvName(k); err != nil {
			return nil, fmt.Errorf("replica env %q: %w", s, err)
		}
		if !hasValue {
			var ok bool
			if v, ok = os.LookupEnv(k); !ok {
				return nil, fmt.Errorf("replica env %q: %s is not set in the agent's environment; write %s=VALUE", s, k, k)
			}
		}
		out[k] = v
	}
	return out, nil
}

// replicaEnv is a replica's whole environment, later entries winning: the
// documented base (PATH, HOME, USER, LOGNAME, SHELL, LANG, TMPDIR), the
// agent's --replica-env settings, the task's envs and secrets, then what
// baton sets: PORT, CUDA_VISIBLE_DEVICES, the BATON_* variables and the
// SKYPILOT_* ones that SkyServe task YAMLs use, for a single-node
// replica. Nothing of the agent's own environment is passed unless
// --replica-env names it.
func (a *Agent) replicaEnv(r *replica, port int) []string {
	home := a.user.home
	if fi, err := os.Stat(home); home == "" || err != nil || !fi.IsDir() || a.user.canReach(home) != nil {
		home = r.dir // nobody's home is /nonexistent
	}
	if r.asg.SpecResolved() && hasHomeMounts(&r.asg.Spec) {
		home = replicaHome(r.dir) // where its ~/ file_mounts were placed
	}
	vars := map[string]string{
		"PATH":    basePath,
		"HOME":    home,
		"USER":    a.user.name,
		"LOGNAME": a.user.name,
		"SHELL":   "/bin/bash",
		"LANG":    "C.UTF-8",
		"TMPDIR":  filepath.Join(r.dir, "tmp"),
	}
	for k, v := range a.cfg.ReplicaEnv {
		vars[k] = v
	}
	for k, v := range r.asg.Spec.Envs {
		vars[k] = v
	}
	// A secret's name is never an env's (the parser and Validate refuse
	// that), so the order of these two does not matter.
	for k, v := range r.asg.Spec.Secrets {
		vars[k] = v
	}
	for k, v := range map[string]string{
		"PORT":                       strconv.Itoa(port),
		"CUDA_VISIBLE_DEVICES":       strings.Join(r.asg.GPUUUIDs, ","),
		"BATON_SERVICE":              r.asg.Service,
		"BATON_REPLICA_ID":           strconv.Itoa(r.asg.ReplicaID),
		"BATON_VERSION":              strconv.Itoa(r.asg.Version),
		"BATON_AGENT_ID":             a.cfg.ID,
		"SKYPILOT_SERVE_REPLICA_ID":  strconv.Itoa(r.asg.ReplicaID),
		"SKYPILOT_NUM_GPUS_PER_NODE": strconv.Itoa(len(r.asg.GPUUUIDs)),
		"SKYPILOT_NUM_NODES":         "1",
		"SKYPILOT_NODE_RANK":         "0",
		"SKYPILOT_NODE_IPS":          a.cfg.Host,
	} {
		vars[k] = v
	}
	env := make([]string, 0, len(vars))
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// errNoIsolation explains, once, what replicas lack when cgroups cannot be
// used.
var errNoIsolation = errors.New("replicas run without memory, CPU and process limits; each replica's process tree is tracked and stopped by its supervisor (a child subreaper) instead of a cgroup")
