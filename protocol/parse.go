package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// The task parser is split by concern:
//
//	parse.go            entry points, defaults, limits, the parser's state
//	parse_yaml.go       YAML nodes: parsing, anchors, lines, mappings
//	parse_keys.go       the keys each mapping accepts and unknown-key messages
//	parse_scalars.go    strings and the one number reader
//	parse_task.go       the top level, envs and --env overrides
//	parse_service.go    service, readiness_probe and replica_policy
//	parse_resources.go  resources: cpus, memory, accelerators, ports

// Defaults ParseTask fills in when the YAML leaves a field out. They are
// SkyServe's defaults.
const (
	// DefaultProbePath is the readiness probe's path when the service has
	// no readiness_probe.
	DefaultProbePath = "/"
	// DefaultInitialDelaySeconds is readiness_probe.initial_delay_seconds.
	DefaultInitialDelaySeconds = 1200
	// DefaultProbeTimeoutSeconds is readiness_probe.timeout_seconds.
	DefaultProbeTimeoutSeconds = 15
	// DefaultUpscaleDelaySeconds is replica_policy.upscale_delay_seconds.
	DefaultUpscaleDelaySeconds = 300
	// DefaultDownscaleDelaySeconds is replica_policy.downscale_delay_seconds.
	DefaultDownscaleDelaySeconds = 1200
	// DefaultLoadBalancingPolicy is service.load_balancing_policy.
	DefaultLoadBalancingPolicy = PolicyLeastLoad
)

// MaxTaskFileSize is the largest task YAML ParseTask accepts, in bytes.
// Real tasks are a few KiB; the bound keeps parsing fast, since the YAML
// parser's time grows with the square of the number of keys in a mapping.
const MaxTaskFileSize = 64 << 10

// Limits that keep a spec (and what downstream code does with it) sane.
// The limits shared with the rest of baton (MaxReplicas, MaxEnvs, ...) are
// in limits.go.
const (
	// maxNesting bounds how deeply lists and mappings nest. The YAML parser
	// slows down sharply on deep nesting, so ParseTask checks it first.
	maxNesting = 100
	// maxInt bounds every integer field, so seconds fit a time.Duration.
	maxInt = math.MaxInt32
	// maxPorts bounds resources.ports after ranges are expanded.
	maxPorts = 1024
	// maxPostData bounds the JSON text of a readiness probe's post_data.
	maxPostData = 64 << 10
	// maxJSONNodes and maxJSONDepth bound the walk that turns post_data into
	// JSON (aliases can make a small file describe a huge value).
	maxJSONNodes = 10000
	maxJSONDepth = 64
	// maxAliasHops bounds alias-to-alias chains.
	maxAliasHops = 64
)

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ParseTask parses and validates a SkyServe-compatible task YAML and returns
// it with every default filled in (readiness probe, one replica, the
// least_load policy, ...). filename is used only in messages ("<input>" if
// empty). It is ParseTaskWithEnvs with no overrides, so an env written
// without a value (`HF_TOKEN:`) is an error.
//
// On failure the error is a *SpecError (one problem) or SpecErrors (several),
// both matching ErrInvalidSpec, each formatted `file:line: field: message`.
// Malformed YAML gives the parser's line and message. Cloud-only fields
// (cloud, region, use_spot, ...) are not errors: they land in
// TaskSpec.Warnings, formatted the same way. An image_id naming a docker
// image (`docker:...`) is an error, since baton does not run containers.
//
// What ParseTask accepts is bounded: the file is at most MaxTaskFileSize
// bytes; service.replicas, replica_policy.min_replicas, max_replicas and
// num_overprovision are at most MaxReplicas; envs are bounded as
// ParseTaskWithEnvs says; and the spec encoded as JSON (as Raft stores it
// and agents receive it) is at most MaxSpecBytes, or the error is at line 1.
//
// Workdir is returned as written; call ResolveWorkdir to make it absolute.
// ParseTask is safe for concurrent use.
func ParseTask(filename string, data []byte) (*TaskSpec, error) {
	return ParseTaskWithEnvs(filename, data, nil)
}

// ParseTaskWithEnvs is ParseTask with env overrides, as the CLI's
// `--env KEY=VALUE` flags give them. Following SkyPilot, an override
// replaces the env of the same name in the YAML or adds a new one, and an
// env the YAML declares without a value (`HF_TOKEN:` or `HF_TOKEN: null`,
// meaning "required") must get one from overrides; otherwise it is an error
// at its line: `envs.HF_TOKEN: has no value; pass it with --env
// HF_TOKEN=VALUE`.
//
// The file's envs and the overrides together are at most MaxEnvs envs, each
// value at most MaxEnvValueBytes and all names and values at most
// MaxEnvsBytes. A problem with an env whose value is the file's is at its
// line (field envs.NAME).
//
// A problem with an override (a key that is not a valid env name, see
// ValidateEnvName, or a value past a limit) is a *SpecError with Line 0 and
// Field `--env KEY`, printed without a line as `file: --env KEY: message`.
// overrides is not modified.
func ParseTaskWithEnvs(filename string, data []byte, overrides map[string]string) (*TaskSpec, error) {
	return ParseTaskWithOverrides(filename, data, overrides, nil)
}

// ParseTaskWithOverrides is ParseTaskWithEnvs with secret overrides too, as
// the CLI's `--secret KEY=VALUE` flags give them. A task's secrets
// (SkyPilot's `secrets:` section, NAME: value pairs) work as its envs do:
// an override replaces or adds one, and a secret written without a value
// must get one from secrets, or it is an error at its line:
// `secrets.HF_TOKEN: has no value; pass it with --secret HF_TOKEN=VALUE`.
// They land in TaskSpec.Secrets, not Envs.
//
// A name may not be both an env and a secret (in the file or among the
// overrides): that is an error at the secret. Envs and secrets count
// together against MaxEnvs and MaxEnvsBytes. A problem with a secret
// override has Field `--secret KEY`. No message quotes a secret's value.
// envs and secrets are not modified.
func ParseTaskWithOverrides(filename string, data []byte, envs, secrets map[string]string) (*TaskSpec, error) {
	if filename == "" {
		filename = "<input>"
	}
	// A UTF-8 byte order mark (some Windows editors write one) is not YAML.
	// It sits on line 1, so removing it leaves line numbers as they are.
	data = bytes.TrimPrefix(data, []byte("\xEF\xBB\xBF"))
	if len(data) > MaxTaskFileSize {
		return nil, &SpecError{File: filename, Line: 1, Message: fmt.Sprintf(
			"the file is %d bytes; task files are limited to %d (keep large scripts in workdir and call them from run)", len(data), MaxTaskFileSize)}
	}
	if line := tooDeep(data); line > 0 {
		return nil, &SpecError{File: filename, Line: line, Message: fmt.Sprintf(
			"invalid YAML: nested more than %d levels deep; a task needs only a few", maxNesting)}
	}
	file, err := parseYAML(data)
	if err != nil {
		return nil, yamlError(filename, err)
	}
	p := &taskParser{file: filename, anchors: map[string][]*ast.AnchorNode{}, lines: map[string]int{},
		fileEnvs: map[envKind][]string{}, required: map[envKind]map[string]int{}}
	for _, doc := range file.Docs {
		if doc != nil && doc.Body != nil {
			ast.Walk(p, doc.Body)
		}
	}
	spec := p.parseFile(file)
	target := spec
	if target == nil {
		target = &TaskSpec{} // only to report bad overrides
	}
	p.applyOverrides(target, envs, secrets)
	if len(p.errs) == 0 {
		sort.SliceStable(p.warns, func(i, j int) bool { return p.warns[i].Line < p.warns[j].Line })
		for _, w := range p.warns {
			spec.Warnings = append(spec.Warnings, w.Error())
		}
		p.checkSpecSize(spec)
	}
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		if len(p.errs) == 1 {
			return nil, p.errs[0]
		}
		return nil, p.errs
	}
	spec.Lines = p.lines
	return spec, nil
}

// checkSpecSize reports a spec whose JSON encoding, the form Raft stores
// and agents receive, is over MaxSpecBytes. A file under MaxTaskFileSize
// can get there with large --env values, or with text JSON escapes (<, >
// and & take six bytes each).
func (p *taskParser) checkSpecSize(spec *TaskSpec) {
	b, err := json.Marshal(spec)
	if err != nil {
		// Every value the parser stores encodes; this is a parser bug.
		p.errorf(1, "", "the task cannot be encoded as JSON: %v", err)
		return
	}
	if len(b) > MaxSpecBytes {
		p.errorf(1, "", "the task is %d bytes as JSON, with its envs; baton stores at most %d (keep large scripts and values in files in workdir and read them in run)",
			len(b), MaxSpecBytes)
	}
}

// ValidateEnvName returns nil if name can be an environment variable name
// in a task (letters, digits and _, not starting with a digit), else an
// error saying so. The CLI can use it to check `--env NAME=VALUE` flags.
func ValidateEnvName(name string) error {
	if envNameRE.MatchString(name) {
		return nil
	}
	return errors.New(envNameMessage(name))
}

func envNameMessage(name string) string {
	return fmt.Sprintf("%q is not a valid environment variable name; use letters, digits and _, not starting with a digit (e.g. MODEL_NAME)", name)
}

// ResolveWorkdir makes a relative Workdir absolute against baseDir (the
// directory the CLI runs in, as SkyPilot does) and expands a leading `~` to
// $HOME. An empty Workdir stays empty. It modifies t, so it must not run
// concurrently with readers of t.
func (t *TaskSpec) ResolveWorkdir(baseDir string) {
	w := t.Workdir
	if w == "" {
		return
	}
	if w == "~" || strings.HasPrefix(w, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			w = filepath.Join(home, w[1:])
		}
	}
	if !filepath.IsAbs(w) {
		w = filepath.Join(baseDir, w)
	}
	if abs, err := filepath.Abs(w); err == nil {
		w = abs
	}
	t.Workdir = filepath.Clean(w)
}

// taskParser walks the AST of one task file, collecting every problem.
type taskParser struct {
	file    string
	errs    SpecErrors
	warns   []*SpecError
	anchors map[string][]*ast.AnchorNode // by name, in document order
	lines   map[string]int               // TaskSpec.Lines
	// fileEnvs are the names of the file's envs and of its secrets (by
	// kind), in document order, for checkEnvLimits.
	fileEnvs map[envKind][]string
	// required are the envs and secrets written without a value, by kind
	// and name, with their lines; applyOverrides reports those no override
	// fills.
	required map[envKind]map[string]int
}

// mark records the line of a key for TaskSpec.Lines.
func (p *taskParser) mark(field string, line int) {
	if _, ok := p.lines[field]; !ok {
		p.lines[field] = line
	}
}

func (p *taskParser) errorf(line int, field, format string, args ...any) {
	p.errs = append(p.errs, &SpecError{File: p.file, Line: line, Field: field, Message: fmt.Sprintf(format, args...)})
}

func (p *taskParser) warnf(line int, field, format string, args ...any) {
	p.warns = append(p.warns, &SpecError{File: p.file, Line: line, Field: field, Message: fmt.Sprintf(format, args...)})
}
