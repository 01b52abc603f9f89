package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/internal/tlsutil"
)

// deployDir is deploy/, from this package's directory.
var deployDir = filepath.Join("..", "..", "deploy")

// testHostName stands for %H, the host name systemd puts in a unit.
const testHostName = "Node-1.example.com"

// deployUnit is a systemd unit of deploy/, reduced to what the tests check
// and read the way systemd reads it.
type deployUnit struct {
	name string
	// env holds the Environment= defaults, specifiers expanded.
	env map[string]string
	// envFiles are the EnvironmentFile= lines, a leading '-' kept.
	envFiles []string
	// credentials maps each LoadCredential= id to its source path.
	credentials map[string]string
	// execStartPre and execStart are the command lines, continuation
	// lines joined and specifiers expanded; variables are expanded by
	// command, with the environment it is given.
	execStartPre []string
	execStart    string
}

// readUnit parses deploy/<name>.
func readUnit(t *testing.T, name string) deployUnit {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deployDir, name))
	if err != nil {
		t.Fatal(err)
	}
	u := deployUnit{name: name, env: map[string]string{}, credentials: map[string]string{}}
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		key, value, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		value = expandSpecifiers(t, name, value)
		switch key {
		case "Environment":
			k, v, _ := strings.Cut(value, "=")
			u.env[k] = v
		case "EnvironmentFile":
			u.envFiles = append(u.envFiles, value)
		case "LoadCredential":
			id, path, _ := strings.Cut(value, ":")
			u.credentials[id] = path
		case "ExecStartPre":
			u.execStartPre = append(u.execStartPre, value)
		case "ExecStart":
			u.execStart = value
		}
	}
	if u.execStart == "" {
		t.Fatalf("%s has no ExecStart", name)
	}
	return u
}

// expandSpecifiers replaces the specifiers the units use: %d (the
// credentials directory), %H (the host name) and %%.
func expandSpecifiers(t *testing.T, unit, s string) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			t.Fatalf("%s: a lone %% at the end of %q", unit, s)
		}
		i++
		switch s[i] {
		case 'd':
			b.WriteString("/run/credentials/" + unit)
		case 'H':
			b.WriteString(testHostName)
		case '%':
			b.WriteByte('%')
		default:
			t.Fatalf("%s: specifier %%%c in %q: teach expandSpecifiers what systemd makes of it", unit, s[i], s)
		}
	}
	return b.String()
}

// environment is the unit's environment when the env file sets set: the
// Environment= defaults, overridden.
func (u deployUnit) environment(set map[string]string) map[string]string {
	env := make(map[string]string, len(u.env)+len(set))
	for k, v := range u.env {
		env[k] = v
	}
	for k, v := range set {
		env[k] = v
	}
	return env
}

var unitVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// command returns the unit's ExecStart arguments after the binary, as
// systemd passes them with the environment env: a word that is only $VAR
// is split at whitespace (none when it is empty); ${VAR} inside a word, or
// as a word of its own, is replaced and the word stays one argument, even
// if empty.
func (u deployUnit) command(t *testing.T, env map[string]string) []string {
	t.Helper()
	var args []string
	for _, word := range strings.Fields(u.execStart) {
		if strings.ContainsAny(word, `"'\`) {
			t.Fatalf("%s: ExecStart word %q is quoted or escaped: teach command how systemd reads that", u.name, word)
		}
		if name, ok := strings.CutPrefix(word, "$"); ok && !strings.HasPrefix(name, "{") && !strings.HasPrefix(name, "$") {
			args = append(args, strings.Fields(env[name])...)
			continue
		}
		word = unitVar.ReplaceAllStringFunc(word, func(m string) string { return env[m[2:len(m)-1]] })
		args = append(args, strings.ReplaceAll(word, "$$", "$"))
	}
	if len(args) < 2 || args[0] != "/usr/local/bin/baton" {
		t.Fatalf("%s runs %v, want /usr/local/bin/baton <role>", u.name, args)
	}
	return args[1:]
}

// runStartPre runs the unit's ExecStartPre commands, all of the form
// `/bin/sh -c '<script>'`, with the environment env and nothing else of the
// test's; it returns the first failure's output, or ok.
func (u deployUnit) runStartPre(t *testing.T, env map[string]string) (out string, ok bool) {
	t.Helper()
	for _, line := range u.execStartPre {
		script, found := strings.CutPrefix(line, "/bin/sh -c '")
		if !found || !strings.HasSuffix(script, "'") || strings.Contains(script[:len(script)-1], "'") {
			t.Fatalf("%s: ExecStartPre=%s: want /bin/sh -c '<script without single quotes>'", u.name, line)
		}
		script = strings.TrimSuffix(script, "'")
		if stray := regexp.MustCompile(`\$[^$]`).FindString(strings.ReplaceAll(script, "$$", "")); stray != "" {
			t.Fatalf("%s: ExecStartPre has a single $ (%q), which systemd would expand itself: write $$ for the shell", u.name, stray)
		}
		cmd := exec.Command("/bin/sh", "-c", strings.ReplaceAll(script, "$$", "$"))
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		b, err := cmd.CombinedOutput()
		if err != nil {
			return string(b), false
		}
	}
	return "", true
}

// readEnvFile parses a deploy/*.env.example: the variables it sets, and
// those it documents in a commented-out VAR=value line.
func readEnvFile(t *testing.T, name string) (set, commented map[string]string) {
	t.Helper()
	f, err := os.Open(filepath.Join(deployDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	set, commented = map[string]string{}, map[string]string{}
	assignment := regexp.MustCompile(`^(#)?(BATON_[A-Z_]+)=(.*)$`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := assignment.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		switch {
		case m == nil:
		case m[1] == "#":
			commented[m[2]] = m[3]
		default:
			set[m[2]] = m[3]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return set, commented
}

// deployRoles lists each unit with its command, its example env file, the
// variables the env file must set (the unit refuses to start without
// them), and the flags it listens with: addrFlags take host:port,
// hostFlags a host.
var deployRoles = []struct {
	unit, example        string
	cmd                  func() *cobra.Command
	required             []string
	addrFlags, hostFlags []string
}{
	{"baton-coordinator.service", "coordinator.env.example", newCoordinatorCmd,
		[]string{"BATON_BIND_ADDR", "BATON_GOSSIP_KEY"},
		[]string{"http-addr", "raft-addr", "gossip-addr"}, []string{"nats-host"}},
	{"baton-agent.service", "agent.env.example", newAgentCmd,
		[]string{"BATON_BIND_ADDR", "BATON_JOIN", "BATON_GOSSIP_KEY"},
		[]string{"http-addr", "gossip-addr"}, []string{"host"}},
	{"baton-lb.service", "lb.env.example", newLBCmd,
		[]string{"BATON_LB_ID", "BATON_BIND_ADDR", "BATON_JOIN", "BATON_GOSSIP_KEY"},
		[]string{"admin-addr", "gossip-addr"}, []string{"bind-host"}},
}

// parseUnitFlags checks that the binary accepts the unit's command line
// with env and returns the command with its flags set.
func parseUnitFlags(t *testing.T, u deployUnit, newCmd func() *cobra.Command, env map[string]string) *cobra.Command {
	t.Helper()
	args := u.command(t, env)
	cmd := newCmd()
	if args[0] != cmd.Name() {
		t.Fatalf("%s runs `baton %s`, want %s", u.name, args[0], cmd.Name())
	}
	if err := cmd.ParseFlags(args[1:]); err != nil {
		t.Fatalf("%s: the binary refuses its flags %q: %v", u.name, args[1:], err)
	}
	return cmd
}

func flagValue(t *testing.T, cmd *cobra.Command, name string) string {
	t.Helper()
	f := cmd.Flags().Lookup(name)
	if f == nil {
		t.Fatalf("baton %s has no --%s", cmd.Name(), name)
	}
	return f.Value.String()
}

// TestDeployUnitsMatchTheFlags: each unit's command line, with its default
// environment and with its example env file, is one the binary accepts;
// the agent's leaves the id empty by default, which the agent derives from
// the host name (a systemd %H with dots or capitals is not a valid agent
// id).
func TestDeployUnitsMatchTheFlags(t *testing.T) {
	for _, role := range deployRoles {
		t.Run(role.unit, func(t *testing.T) {
			u := readUnit(t, role.unit)
			parseUnitFlags(t, u, role.cmd, u.environment(nil))
			example, _ := readEnvFile(t, role.example)
			cmd := parseUnitFlags(t, u, role.cmd, u.environment(example))
			if role.unit == "baton-agent.service" {
				if id := u.environment(nil)["BATON_AGENT_ID"]; id != "" {
					t.Errorf("the agent unit passes --id %q by default; leave it empty so the agent derives a valid id", id)
				}
				if strings.Contains(u.execStart, testHostName) {
					t.Error("the agent unit still uses %H")
				}
			}
			if role.unit != "baton-coordinator.service" {
				if join := flagValue(t, cmd, "join"); join == "[]" {
					t.Errorf("%s with %s joins no one: it would not find the coordinators", role.unit, role.example)
				}
			}
		})
	}
}

// TestDeployUnitsBindTheMachineAddress: no unit listens on every interface
// by default. Until the env file names the machine's address (and the
// other settings the unit cannot guess), the unit refuses to start, saying
// what to set; once it does, every listener is on that address, and
// BATON_*_ARGS can still move the LB's service ports.
func TestDeployUnitsBindTheMachineAddress(t *testing.T) {
	const addr = "10.0.0.11"
	for _, role := range deployRoles {
		t.Run(role.unit, func(t *testing.T) {
			u := readUnit(t, role.unit)
			example, _ := readEnvFile(t, role.example)
			if out, ok := u.runStartPre(t, u.environment(nil)); ok {
				t.Fatalf("%s starts without an env file; it must refuse until BATON_BIND_ADDR is set", role.unit)
			} else if !regexp.MustCompile(`/etc/baton/\w+\.env must set .*\bBATON_BIND_ADDR\b`).MatchString(out) {
				t.Errorf("%s refuses to start with %q; say which variable to set where", role.unit, out)
			}
			env := u.environment(example)
			env["BATON_BIND_ADDR"] = addr
			if out, ok := u.runStartPre(t, env); !ok {
				t.Fatalf("%s refuses to start with %s: %s", role.unit, role.example, out)
			}
			for _, k := range role.required {
				if u.env[k] != "" {
					t.Errorf("%s: Environment=%s=%s: a required variable must have no default (the env file sets it)", role.unit, k, u.env[k])
				}
				without := u.environment(example)
				delete(without, k)
				if out, ok := u.runStartPre(t, without); ok {
					t.Errorf("%s starts without %s", role.unit, k)
				} else if !regexp.MustCompile(`must set .*\b` + k + `\b`).MatchString(out) {
					t.Errorf("%s, without %s, says %q; name the variable", role.unit, k, out)
				}
			}

			cmd := parseUnitFlags(t, u, role.cmd, env)
			for _, name := range role.addrFlags {
				v := flagValue(t, cmd, name)
				host, _, err := net.SplitHostPort(v)
				if err != nil || host != addr {
					t.Errorf("%s: --%s %q, want %s:<port>", role.unit, name, v, addr)
				}
			}
			for _, name := range role.hostFlags {
				if v := flagValue(t, cmd, name); v != addr {
					t.Errorf("%s: --%s %q, want %s", role.unit, name, v, addr)
				}
			}
			for k, v := range u.env {
				host := strings.Trim(v, "[]")
				if h, _, err := net.SplitHostPort(v); err == nil {
					host = h
				}
				if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
					t.Errorf("%s: Environment=%s=%s listens on every interface", role.unit, k, v)
				}
			}
		})
	}

	t.Run("LB service ports elsewhere", func(t *testing.T) {
		u := readUnit(t, "baton-lb.service")
		example, _ := readEnvFile(t, "lb.env.example")
		env := u.environment(example)
		env["BATON_BIND_ADDR"] = addr
		env["BATON_LB_ARGS"] = "--bind-host 203.0.113.31"
		cmd := parseUnitFlags(t, u, newLBCmd, env)
		if v := flagValue(t, cmd, "bind-host"); v != "203.0.113.31" {
			t.Errorf("BATON_LB_ARGS=--bind-host 203.0.113.31 gives --bind-host %q", v)
		}
		if v := flagValue(t, cmd, "admin-addr"); v != addr+":7404" {
			t.Errorf("--admin-addr %q with the service ports moved, want it to stay on %s:7404", v, addr)
		}
	})
}

// TestDeployUnitsSecureByDefault: the coordinator unit passes the
// coordinator's own refusal to start open (TLS and ACLs, no --insecure, no
// --dev), whether its env file is the example or sets only what it must;
// every unit gives all three TLS flags, read from systemd's credentials
// directory, which systemd fills from /etc/baton/tls, and needs its env
// file.
func TestDeployUnitsSecureByDefault(t *testing.T) {
	for _, role := range deployRoles {
		t.Run(role.unit, func(t *testing.T) {
			u := readUnit(t, role.unit)
			envFile := "/etc/baton/" + strings.TrimSuffix(role.example, ".example")
			if !slices.Equal(u.envFiles, []string{envFile}) {
				t.Errorf("%s: EnvironmentFile=%q, want %s alone, not optional ('-'): the unit cannot guess the machine's address", role.unit, u.envFiles, envFile)
			}
			example, _ := readEnvFile(t, role.example)
			minimal := map[string]string{}
			for _, k := range role.required {
				minimal[k] = example[k]
			}
			for _, env := range []struct {
				name string
				set  map[string]string
			}{{role.example, example}, {"only " + strings.Join(role.required, ", "), minimal}} {
				cmd := parseUnitFlags(t, u, role.cmd, u.environment(env.set))
				files := tlsutil.Files{CA: flagValue(t, cmd, "tls-ca"), Cert: flagValue(t, cmd, "tls-cert"), Key: flagValue(t, cmd, "tls-key")}
				if files.CA == "" || files.Cert == "" || files.Key == "" {
					t.Fatalf("%s with %s: --tls-ca %q --tls-cert %q --tls-key %q: give all three", role.unit, env.name, files.CA, files.Cert, files.Key)
				}
				if err := checkTLSFlags(files); err != nil {
					t.Errorf("%s with %s: %v", role.unit, env.name, err)
				}
				credDir := "/run/credentials/" + role.unit + "/"
				for _, p := range []string{files.CA, files.Cert, files.Key} {
					id, ok := strings.CutPrefix(p, credDir)
					if !ok {
						t.Errorf("%s reads %s; read it from the credentials directory (%%d/<id>) so that the file can stay root's", role.unit, p)
						continue
					}
					if src := u.credentials[id]; !strings.HasPrefix(src, "/etc/baton/tls/") {
						t.Errorf("%s: credential %s comes from %q, want LoadCredential=%s:/etc/baton/tls/...", role.unit, id, src, id)
					}
				}
				if role.unit != "baton-coordinator.service" {
					continue
				}
				acl := flagValue(t, cmd, "acl") == "true"
				dev := flagValue(t, cmd, "dev") == "true"
				insecure := flagValue(t, cmd, "insecure") == "true"
				if dev || insecure {
					t.Errorf("the coordinator unit with %s runs with --dev or --insecure", env.name)
				}
				if err := checkSecureDefaults(true, acl, dev, insecure); err != nil || !acl {
					t.Errorf("the coordinator unit with %s would start open or not at all: acl=%v, %v", env.name, acl, err)
				}
			}
		})
	}
}

// TestDeployEnvExamplesDocumentTheUnits: each example env file sets or
// documents every variable its unit reads, and nothing else, so that a
// typo in an env file has a model to be checked against.
func TestDeployEnvExamplesDocumentTheUnits(t *testing.T) {
	for _, role := range deployRoles {
		t.Run(role.example, func(t *testing.T) {
			u := readUnit(t, role.unit)
			set, commented := readEnvFile(t, role.example)
			for k := range u.env {
				_, isSet := set[k]
				_, isCommented := commented[k]
				if !isSet && !isCommented {
					t.Errorf("%s does not document %s, which %s reads", role.example, k, role.unit)
				}
			}
			for _, vars := range []map[string]string{set, commented} {
				for k := range vars {
					if _, ok := u.env[k]; !ok && k != "BATON_GOSSIP_KEY" {
						t.Errorf("%s sets %s, which %s does not read", role.example, k, role.unit)
					}
				}
			}
			if _, ok := set["BATON_GOSSIP_KEY"]; !ok {
				t.Errorf("%s does not set BATON_GOSSIP_KEY", role.example)
			}
		})
	}
}
