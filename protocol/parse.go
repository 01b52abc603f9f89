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
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

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

// The keys each mapping accepts, listed in messages about unknown keys.
// cloudKeys are accepted in addition at the top level and in resources, and
// spotKeys in replica_policy, each with a warning.
var (
	taskKeys          = []string{"envs", "name", "num_nodes", "resources", "run", "service", "setup", "workdir"}
	serviceKeys       = []string{"load_balancing_policy", "ports", "readiness_probe", "replica_policy", "replicas"}
	probeKeys         = []string{"headers", "initial_delay_seconds", "path", "post_data", "timeout_seconds"}
	replicaPolicyKeys = []string{"downscale_delay_seconds", "max_replicas", "min_replicas", "num_overprovision", "target_qps_per_replica", "upscale_delay_seconds"}
	resourcesKeys     = []string{"accelerators", "cpus", "memory", "ports"}
)

// keyAliases are other names SkyPilot accepts for a key, by parent field.
// They are not listed among the valid keys, but a typo close to an alias is
// pointed at the key it stands for.
var keyAliases = map[string]map[string]string{
	"resources": {"gpus": "accelerators"},
}

// cloudKeys are SkyPilot fields that only mean something on a cloud. They
// are accepted at the top level and in resources, and ignored with a warning.
var cloudKeys = map[string]bool{
	"infra": true, "cloud": true, "region": true, "zone": true,
	"instance_type": true, "use_spot": true, "disk_size": true, "image_id": true,
}

// spotKeys are SkyServe replica_policy fields about spot instances, which
// baton does not have; ignored with a warning.
var spotKeys = map[string]bool{
	"base_ondemand_fallback_replicas": true, "dynamic_ondemand_fallback": true, "spot_placer": true,
}

// unsupportedHints explain SkyPilot keys baton knows but does not support.
// They are still errors, like any unknown key.
var unsupportedHints = map[string]string{
	"file_mounts": "baton does not copy files to agents; put them in workdir or fetch them in setup",
	"secrets":     "use envs",
	"any_of":      "list the alternatives in accelerators instead (a mapping means any one of them, a list means in order of preference)",
	"ordered":     "list the alternatives in accelerators instead (a list is tried in order)",
}

var (
	envNameRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	quantityRE = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?|\.[0-9]+)(\+?)$`)
	memoryRE   = regexp.MustCompile(`^(?i)([0-9]+(?:\.[0-9]+)?|\.[0-9]+) *([kmgtp]b?)? *(\+?)$`)
	digitsRE   = regexp.MustCompile(`^[0-9]+$`)
	accNameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	dupKeyRE   = regexp.MustCompile(`already defined at \[([0-9]+):[0-9]+\]`)
	plainKeyRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	headerRE   = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

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
// TaskSpec.Warnings, formatted the same way.
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
// An override whose key is not a valid env name (see ValidateEnvName) is a
// *SpecError with Line 0 and Field `--env KEY`, printed without a line as
// `file: --env KEY: message`. overrides is not modified.
func ParseTaskWithEnvs(filename string, data []byte, overrides map[string]string) (*TaskSpec, error) {
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
	p := &taskParser{file: filename, anchors: map[string][]*ast.AnchorNode{}, lines: map[string]int{}}
	for _, doc := range file.Docs {
		if doc != nil && doc.Body != nil {
			ast.Walk(p, doc.Body)
		}
	}
	spec := p.parseFile(file)
	if spec != nil {
		p.applyEnvOverrides(spec, overrides)
	} else {
		p.applyEnvOverrides(&TaskSpec{}, overrides) // only to report bad names
	}
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		if len(p.errs) == 1 {
			return nil, p.errs[0]
		}
		return nil, p.errs
	}
	sort.SliceStable(p.warns, func(i, j int) bool { return p.warns[i].Line < p.warns[j].Line })
	for _, w := range p.warns {
		spec.Warnings = append(spec.Warnings, w.Error())
	}
	spec.Lines = p.lines
	return spec, nil
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

// parseYAML runs the YAML parser, turning a panic inside it into an error so
// that no input can crash the caller.
func parseYAML(data []byte) (file *ast.File, err error) {
	defer func() {
		if r := recover(); r != nil {
			file, err = nil, fmt.Errorf("the YAML parser failed: %v", r)
		}
	}()
	return parser.ParseBytes(data, 0)
}

// tooDeep returns the line on which data nests lists or mappings more than
// maxNesting levels deep, or 0. It over-counts brackets inside strings,
// which only matters for implausible files.
func tooDeep(data []byte) int {
	line, flow := 1, 0
	atLineStart, dashes := true, 0
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c == '\n' {
			line, atLineStart, dashes = line+1, true, 0
			continue
		}
		if atLineStart {
			switch {
			case c == ' ':
				continue
			case c == '-' && (i+1 == len(data) || data[i+1] == ' ' || data[i+1] == '\n'):
				if dashes++; dashes > maxNesting {
					return line
				}
				continue
			default:
				atLineStart = false
			}
		}
		switch c {
		case '[', '{':
			if flow++; flow > maxNesting {
				return line
			}
		case ']', '}':
			if flow > 0 {
				flow--
			}
		}
	}
	return 0
}

// yamlError turns a parser error into a *SpecError with the parser's line.
func yamlError(filename string, err error) error {
	line, msg := 1, err.Error()
	if te, ok := err.(interface {
		GetMessage() string
		GetToken() *token.Token
	}); ok {
		msg = te.GetMessage()
		if tk := te.GetToken(); tk != nil && tk.Position != nil && tk.Position.Line > 0 {
			line = tk.Position.Line
		}
	}
	msg = dupKeyRE.ReplaceAllString(msg, "already defined on line $1; keep one")
	return &SpecError{File: filename, Line: line, Message: "invalid YAML: " + msg}
}

// taskParser walks the AST of one task file, collecting every problem.
type taskParser struct {
	file    string
	errs    SpecErrors
	warns   []*SpecError
	anchors map[string][]*ast.AnchorNode // by name, in document order
	lines   map[string]int               // TaskSpec.Lines
	// requiredEnvs are the envs written without a value, by name, with
	// their lines; applyEnvOverrides reports those no override fills.
	requiredEnvs map[string]int
}

// mark records the line of a key for TaskSpec.Lines.
func (p *taskParser) mark(field string, line int) {
	if _, ok := p.lines[field]; !ok {
		p.lines[field] = line
	}
}

// Visit implements ast.Visitor; it records anchors so aliases can be resolved.
func (p *taskParser) Visit(n ast.Node) ast.Visitor {
	if a, ok := n.(*ast.AnchorNode); ok && a.Name != nil && a.Name.GetToken() != nil {
		name := a.Name.GetToken().Value
		p.anchors[name] = append(p.anchors[name], a)
	}
	return p
}

func (p *taskParser) errorf(line int, field, format string, args ...any) {
	p.errs = append(p.errs, &SpecError{File: p.file, Line: line, Field: field, Message: fmt.Sprintf(format, args...)})
}

func (p *taskParser) warnf(line int, field, format string, args ...any) {
	p.warns = append(p.warns, &SpecError{File: p.file, Line: line, Field: field, Message: fmt.Sprintf(format, args...)})
}

// lineOf is the line a node starts on (1 if unknown).
func lineOf(n ast.Node) int {
	if n == nil {
		return 1
	}
	if tk := n.GetToken(); tk != nil && tk.Position != nil && tk.Position.Line > 0 {
		return tk.Position.Line
	}
	return 1
}

// resolve follows anchors, aliases and tags to the node that holds the value.
// It returns nil for a missing or null value, and the last tag seen (such as
// "!!str").
func (p *taskParser) resolve(n ast.Node) (ast.Node, string) {
	tag := ""
	for hops := 0; n != nil && hops < maxAliasHops; hops++ {
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
		case *ast.TagNode:
			if v.Start != nil {
				tag = v.Start.Value
			}
			n = v.Value
		case *ast.AliasNode:
			n = p.anchorFor(v)
		case *ast.NullNode:
			return nil, tag
		default:
			return n, tag
		}
	}
	return nil, tag
}

// anchorFor finds the value of the latest anchor with the alias's name that
// precedes the alias.
func (p *taskParser) anchorFor(a *ast.AliasNode) ast.Node {
	if a.Value == nil || a.Value.GetToken() == nil {
		return nil
	}
	off := -1
	if a.Start != nil && a.Start.Position != nil {
		off = a.Start.Position.Offset
	}
	var found ast.Node
	for _, cand := range p.anchors[a.Value.GetToken().Value] {
		if cand.Start != nil && cand.Start.Position != nil && off >= 0 && cand.Start.Position.Offset > off {
			break
		}
		found = cand.Value
	}
	return found
}

// describe names a resolved node's kind for messages.
func describe(n ast.Node) string {
	switch v := n.(type) {
	case nil:
		return "nothing"
	case *ast.MappingNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode:
		return fmt.Sprintf("the string %q", v.Value)
	case *ast.LiteralNode:
		return "a block of text"
	case *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return "the number " + v.GetToken().Value
	case *ast.BoolNode:
		return "the boolean " + v.GetToken().Value
	}
	return "a " + n.Type().YAMLName()
}

// entry is one key of a mapping.
type entry struct {
	key   string
	line  int      // the key's line
	value ast.Node // unresolved; nil when the value is empty
}

// entries returns the keys of a mapping in document order, reporting keys
// that are not plain scalars. ok is false when n is not a mapping.
func (p *taskParser) entries(field string, n ast.Node) ([]entry, bool) {
	m, ok := n.(*ast.MappingNode)
	if !ok {
		return nil, false
	}
	var out []entry
	seen := map[string]bool{}
	for _, mv := range m.Values {
		if mv == nil || mv.Key == nil {
			continue
		}
		line := lineOf(mv.Key)
		if _, isMerge := mv.Key.(*ast.MergeKeyNode); isMerge {
			p.errorf(line, field, "merge keys (<<) are not supported; write the keys out")
			continue
		}
		k, _ := p.resolve(mv.Key)
		var key string
		switch kv := k.(type) {
		case *ast.StringNode:
			key = kv.Value
		case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode:
			key = kv.GetToken().Value
		default:
			p.errorf(line, field, "keys must be plain names, got %s", describe(k))
			continue
		}
		if seen[key] {
			p.errorf(line, join(field, key), "the key appears twice; keep one")
			continue
		}
		seen[key] = true
		out = append(out, entry{key: key, line: line, value: mv.Value})
	}
	return out, true
}

// mapping is entries for a field that must be a mapping: it reports any
// other kind of value.
func (p *taskParser) mapping(field string, n ast.Node, line int, what string) ([]entry, bool) {
	r, _ := p.resolve(n)
	es, ok := p.entries(field, r)
	if !ok {
		p.errorf(line, field, "must be a mapping of %s, got %s", what, describe(r))
	}
	return es, ok
}

// unknownKey reports a key that is not valid at this level, listing the
// valid ones and the closest match.
func (p *taskParser) unknownKey(e entry, parent string, valid []string) {
	msg := "unknown key"
	if hint, ok := unsupportedHints[e.key]; ok {
		msg = "not supported: " + hint
	} else if s := p.suggest(e.key, parent, valid); s != "" {
		msg += fmt.Sprintf("; did you mean %s?", s)
	}
	p.errorf(e.line, join(parent, e.key), "%s (valid keys here: %s)", msg, strings.Join(valid, ", "))
}

// suggest is the key the user probably meant: the closest valid key or
// alias (an alias suggests the key it stands for), or, at the top level, a
// resources key written outside resources.
func (p *taskParser) suggest(key, parent string, valid []string) string {
	aliases := keyAliases[parent]
	cands := valid
	for a := range aliases {
		cands = append(cands[:len(cands):len(cands)], a)
	}
	if s := closest(key, cands); s != "" {
		if to, ok := aliases[s]; ok {
			return to
		}
		return s
	}
	if parent == "" {
		k := strings.ToLower(key)
		if to, ok := keyAliases["resources"][k]; ok {
			k = to
		}
		for _, r := range resourcesKeys {
			if k == r {
				return "resources." + r
			}
		}
	}
	return ""
}

// join builds a dotted field path. A key with characters other than
// letters, digits, '_', '-' and '.' is quoted, so a message stays one line.
func join(parent, key string) string {
	if !plainKeyRE.MatchString(key) {
		key = strconv.Quote(key)
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// closest returns the valid key within edit distance 2 of key, if any.
func closest(key string, valid []string) string {
	best, bestD := "", 3
	for _, v := range valid {
		if d := editDistance(strings.ToLower(key), v); d < bestD {
			best, bestD = v, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// --- scalar helpers. Each takes the unresolved value node and the key's line
// (used when the value is empty), reports problems and returns ok=false.

// textOf is the text of a string or a block (| or >) value.
func textOf(n ast.Node) (string, bool) {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value, true
	case *ast.LiteralNode:
		if v.Value != nil {
			return v.Value.Value, true
		}
		return "", true
	}
	return "", false
}

// str reads a string value. A `!!str` tag turns any scalar into its text.
func (p *taskParser) str(field string, n ast.Node, line int, what string) (string, bool) {
	r, tag := p.resolve(n)
	if text, ok := textOf(r); ok {
		return text, true
	}
	if v, ok := r.(ast.ScalarNode); ok && tag == "!!str" {
		return v.GetToken().Value, true
	}
	p.errorf(lineAt(n, line), field, "must be %s, got %s", what, describe(r))
	return "", false
}

// scalarText reads a string, number or boolean as the text written in the
// file (`1.10` stays "1.10", `true` stays "true").
func (p *taskParser) scalarText(field string, n ast.Node, line int, what string) (string, bool) {
	r, _ := p.resolve(n)
	if text, ok := textOf(r); ok {
		return text, true
	}
	switch v := r.(type) {
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return v.GetToken().Value, true
	case nil:
		p.errorf(lineAt(n, line), field, "has no value; give it %s", what)
	default:
		p.errorf(lineAt(n, line), field, "must be %s, got %s", what, describe(r))
	}
	return "", false
}

// integer reads a whole number in [lo, maxInt].
func (p *taskParser) integer(field string, n ast.Node, line, lo int, example string) (int, bool) {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	want := fmt.Sprintf("a whole number >= %d (e.g. %s)", lo, example)
	switch v := r.(type) {
	case *ast.IntegerNode:
		i, fits := intOf(v)
		if !fits {
			i = maxInt + 1
		}
		if i < int64(lo) {
			p.errorf(line, field, "%d is too small; use %s", i, want)
			return 0, false
		}
		if i > maxInt {
			p.errorf(line, field, "%s is too large; use %s up to %d", v.GetToken().Value, want, maxInt)
			return 0, false
		}
		return int(i), true
	case *ast.FloatNode:
		p.errorf(line, field, "%s is not a whole number; use %s", v.GetToken().Value, want)
	case *ast.StringNode:
		switch {
		case digitsRE.MatchString(v.Value) && v.Token != nil && v.Token.Type == token.StringType:
			p.errorf(line, field, "%s is too large; use %s up to %d", v.Value, want, maxInt)
		case looksNumeric(v.Value):
			p.errorf(line, field, "%q is a string; use %s without quotes", v.Value, want)
		default:
			p.errorf(line, field, "%q is not a number; use %s", v.Value, want)
		}
	case nil:
		p.errorf(line, field, "has no value; use %s", want)
	default:
		p.errorf(line, field, "must be %s, got %s", want, describe(r))
	}
	return 0, false
}

// seconds reads a number of seconds: >= 0 if zeroOK, else > 0. Fractions
// are rounded up to the next whole second (SkyServe's schema allows any
// number; baton keeps whole seconds).
func (p *taskParser) seconds(field string, n ast.Node, line int, zeroOK bool, example string) (int, bool) {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	want := "a number of seconds > 0 (e.g. " + example + ")"
	if zeroOK {
		want = "a number of seconds >= 0 (e.g. " + example + ")"
	}
	var f float64
	switch v := r.(type) {
	case *ast.IntegerNode:
		f = math.Inf(1)
		if i, fits := intOf(v); fits {
			f = float64(i)
		}
	case *ast.FloatNode:
		f = v.Value
	case *ast.StringNode:
		quoted := v.Token != nil && (v.Token.Type == token.SingleQuoteType || v.Token.Type == token.DoubleQuoteType)
		switch {
		case looksNumeric(v.Value) && quoted:
			p.errorf(line, field, "%q is a string; use %s without quotes", v.Value, want)
		case looksNumeric(v.Value):
			p.errorf(line, field, "%s is not a number in YAML (write an exponent like 1.0e+3); use %s", v.Value, want)
		default:
			p.errorf(line, field, "%q is not a number; use %s", v.Value, want)
		}
		return 0, false
	case nil:
		p.errorf(line, field, "has no value; use %s", want)
		return 0, false
	default:
		p.errorf(line, field, "must be %s, got %s", want, describe(r))
		return 0, false
	}
	switch {
	case math.IsNaN(f):
		p.errorf(line, field, "%s is not a number; use %s", r.GetToken().Value, want)
	case f < 0 || (f == 0 && !zeroOK):
		p.errorf(line, field, "%s is too small; use %s", r.GetToken().Value, want)
	case math.Ceil(f) > maxInt:
		p.errorf(line, field, "%s is too large; use %s up to %d", r.GetToken().Value, want, maxInt)
	default:
		return int(math.Ceil(f)), true
	}
	return 0, false
}

// positiveNumber reads a finite number > 0.
func (p *taskParser) positiveNumber(field string, n ast.Node, line int, example string) (float64, bool) {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	want := "a number > 0 (e.g. " + example + ")"
	var f float64
	switch v := r.(type) {
	case *ast.IntegerNode:
		f = floatOf(v)
	case *ast.FloatNode:
		f = v.Value
	case *ast.StringNode:
		if looksNumeric(v.Value) {
			p.errorf(line, field, "%q is a string; use %s without quotes", v.Value, want)
		} else {
			p.errorf(line, field, "%q is not a number; use %s", v.Value, want)
		}
		return 0, false
	case nil:
		p.errorf(line, field, "has no value; use %s", want)
		return 0, false
	default:
		p.errorf(line, field, "must be %s, got %s", want, describe(r))
		return 0, false
	}
	if !(f > 0) || math.IsInf(f, 0) {
		p.errorf(line, field, "%s is not allowed; use %s", r.GetToken().Value, want)
		return 0, false
	}
	return f, true
}

// looksNumeric reports whether s is a plain decimal number.
func looksNumeric(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil && strings.Trim(s, "0123456789.-+eE") == ""
}

// intOf is an integer node's value; ok is false if it does not fit an int64.
func intOf(v *ast.IntegerNode) (int64, bool) {
	switch x := v.Value.(type) {
	case int64:
		return x, true
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true
		}
	}
	return 0, false
}

// floatOf is an integer node's value as a float64.
func floatOf(v *ast.IntegerNode) float64 {
	switch x := v.Value.(type) {
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	}
	return 0
}

// lineAt is n's line, or fallback when n is missing or empty.
func lineAt(n ast.Node, fallback int) int {
	if n == nil {
		return fallback
	}
	if _, isNull := n.(*ast.NullNode); isNull {
		return fallback
	}
	return lineOf(n)
}

// isNull reports whether a value is missing or null (after aliases).
func (p *taskParser) isNull(n ast.Node) bool {
	r, _ := p.resolve(n)
	return r == nil
}

// --- the task file.

func (p *taskParser) parseFile(file *ast.File) *TaskSpec {
	var body ast.Node
	for _, doc := range file.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if body != nil {
			p.errorf(lineOf(doc.Body), "", "found a second YAML document; put the whole task in one document (no '---' between parts)")
			break
		}
		body = doc.Body
	}
	if body == nil {
		p.errorf(1, "", "the file is empty; a task needs at least run and service (e.g. service: {readiness_probe: /health})")
		return nil
	}
	r, _ := p.resolve(body)
	es, ok := p.entries("", r)
	if !ok {
		p.errorf(lineOf(body), "", "a task must be a mapping of keys like run: and service:, got %s", describe(r))
		return nil
	}
	spec := &TaskSpec{}
	firstLine := lineOf(body)
	var haveRun, haveService, serviceOK bool
	var serviceLine int
	var svc, res []entry
	for _, e := range es {
		p.mark(join("", e.key), e.line)
		switch {
		case e.key == "name":
			if !p.isNull(e.value) {
				spec.Name, _ = p.scalarText("name", e.value, e.line, "a name")
			}
		case e.key == "workdir":
			if !p.isNull(e.value) {
				spec.Workdir, _ = p.str("workdir", e.value, e.line, "a directory path")
			}
		case e.key == "setup":
			if !p.isNull(e.value) {
				spec.Setup, _ = p.str("setup", e.value, e.line, "a string of shell commands")
			}
		case e.key == "run":
			haveRun = true
			if p.isNull(e.value) {
				p.errorf(e.line, "run", "is empty; give the command that starts the server (e.g. run: python -m http.server $PORT)")
				continue
			}
			if s, ok := p.str("run", e.value, e.line, "a string of shell commands (use run: | for several lines)"); ok {
				if strings.TrimSpace(s) == "" {
					p.errorf(lineAt(e.value, e.line), "run", "is empty; give the command that starts the server (e.g. run: python -m http.server $PORT)")
				}
				spec.Run = s
			}
		case e.key == "envs":
			spec.Envs = p.parseEnvs(e)
		case e.key == "num_nodes":
			if n, ok := p.integer("num_nodes", e.value, e.line, 1, "1"); ok && n != 1 {
				p.errorf(lineAt(e.value, e.line), "num_nodes", "%d is not supported; baton runs each replica on one machine, so remove num_nodes or set it to 1", n)
			}
		case e.key == "service":
			if p.isNull(e.value) {
				continue
			}
			haveService, serviceLine = true, e.line
			svc, serviceOK = p.mapping("service", e.value, e.line, "service settings (readiness_probe, replicas, ...)")
		case e.key == "resources":
			if p.isNull(e.value) {
				continue
			}
			res, _ = p.mapping("resources", e.value, e.line, "resource requests (cpus, memory, accelerators, ports)")
		case cloudKeys[e.key]:
			p.warnf(e.line, e.key, "ignored: baton places replicas on its own agents")
		default:
			p.unknownKey(e, "", taskKeys)
		}
	}
	if !haveRun {
		p.errorf(firstLine, "run", "required: give the command that starts the server (e.g. run: python -m http.server $PORT)")
	}
	p.parseResources(res, &spec.Resources)
	if !haveService {
		p.errorf(firstLine, "service", "required: add a service section (e.g. service: {readiness_probe: /health, replicas: 2})")
	} else if serviceOK {
		p.parseService(svc, serviceLine, spec)
	}
	return spec
}

// parseEnvs reads envs. An env with no value is required: it is left out
// of the map and recorded in p.requiredEnvs for applyEnvOverrides.
func (p *taskParser) parseEnvs(e entry) map[string]string {
	if p.isNull(e.value) {
		return nil
	}
	es, ok := p.mapping("envs", e.value, e.line, "NAME: value pairs")
	if !ok || len(es) == 0 {
		return nil
	}
	envs := make(map[string]string, len(es))
	for _, kv := range es {
		if !envNameRE.MatchString(kv.key) {
			p.errorf(kv.line, "envs", "%s", envNameMessage(kv.key))
			continue
		}
		p.mark(join("envs", kv.key), kv.line)
		if p.isNull(kv.value) {
			if p.requiredEnvs == nil {
				p.requiredEnvs = map[string]int{}
			}
			p.requiredEnvs[kv.key] = lineAt(kv.value, kv.line)
			continue
		}
		if v, ok := p.scalarText(join("envs", kv.key), kv.value, kv.line, fmt.Sprintf("a string, number or boolean (e.g. %s: value)", kv.key)); ok {
			envs[kv.key] = v
		}
	}
	return envs
}

// applyEnvOverrides puts the --env overrides into spec.Envs and reports
// invalid override names and required envs that no override fills.
func (p *taskParser) applyEnvOverrides(spec *TaskSpec, overrides map[string]string) {
	keys := make([]string, 0, len(overrides))
	for k := range overrides {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := ValidateEnvName(k); err != nil {
			name := k
			if !plainKeyRE.MatchString(name) {
				name = strconv.Quote(name)
			}
			p.errs = append(p.errs, &SpecError{File: p.file, Line: 0, Field: "--env " + name,
				Message: err.Error() + "; write --env NAME=VALUE"})
			continue
		}
		if spec.Envs == nil {
			spec.Envs = make(map[string]string, len(overrides))
		}
		spec.Envs[k] = overrides[k]
	}
	var missing []string
	for k := range p.requiredEnvs {
		if _, ok := overrides[k]; !ok {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	for _, k := range missing {
		p.errorf(p.requiredEnvs[k], join("envs", k), "has no value; pass it with --env %s=VALUE", k)
	}
}

// --- service.

func (p *taskParser) parseService(es []entry, serviceLine int, spec *TaskSpec) {
	s := &spec.Service
	s.LoadBalancingPolicy = DefaultLoadBalancingPolicy
	var probe, replicas, policy, ports *entry
	for i := range es {
		e := &es[i]
		p.mark(join("service", e.key), e.line)
		switch e.key {
		case "readiness_probe":
			probe = e
		case "replicas":
			replicas = e
		case "replica_policy":
			policy = e
		case "ports":
			ports = e
		case "load_balancing_policy":
			if v, ok := p.str("service.load_balancing_policy", e.value, e.line, "round_robin or least_load"); ok {
				if v != PolicyRoundRobin && v != PolicyLeastLoad {
					p.errorf(lineAt(e.value, e.line), "service.load_balancing_policy", "%q is not a policy; use round_robin or least_load (the default)", v)
				} else {
					s.LoadBalancingPolicy = v
				}
			}
		default:
			p.unknownKey(*e, "service", serviceKeys)
		}
	}

	switch {
	case probe == nil:
		// SkyServe's default: probe / with the default delays.
		s.ReadinessProbe = ReadinessProbe{Path: DefaultProbePath, InitialDelaySeconds: DefaultInitialDelaySeconds, TimeoutSeconds: DefaultProbeTimeoutSeconds}
	case p.isNull(probe.value):
		p.errorf(probe.line, "service.readiness_probe", "is empty; give the path that answers HTTP 200 once a replica is ready (e.g. readiness_probe: /health), or remove the key to probe %s", DefaultProbePath)
	default:
		p.parseProbe(*probe, &s.ReadinessProbe)
	}

	rp := &s.ReplicaPolicy
	rp.UpscaleDelaySeconds = DefaultUpscaleDelaySeconds
	rp.DownscaleDelaySeconds = DefaultDownscaleDelaySeconds
	switch {
	case replicas != nil && policy != nil:
		second := replicas
		if policy.line > replicas.line {
			second = policy
		}
		p.errorf(second.line, "service", "replicas and replica_policy are both set; use replicas: N for a fixed count or replica_policy for autoscaling, not both")
	case replicas != nil:
		if n, ok := p.integer("service.replicas", replicas.value, replicas.line, 1, "2"); ok {
			rp.MinReplicas, rp.MaxReplicas = n, n
		}
	case policy != nil:
		p.parseReplicaPolicy(*policy, rp)
	default:
		rp.MinReplicas, rp.MaxReplicas = 1, 1
	}

	if ports != nil {
		if port, ok := p.port("service.ports", ports.value, ports.line); ok {
			s.Port = port
		}
	} else {
		switch ps := spec.Resources.Ports; {
		case len(ps) == 1:
			s.Port = ps[0]
		case len(ps) > 1:
			p.errorf(serviceLine, "service.ports", "required when resources.ports lists %d ports: say which one replicas serve on (e.g. ports: %d)", len(ps), ps[0])
		}
	}
}

func (p *taskParser) parseProbe(e entry, probe *ReadinessProbe) {
	const field = "service.readiness_probe"
	probe.InitialDelaySeconds = DefaultInitialDelaySeconds
	probe.TimeoutSeconds = DefaultProbeTimeoutSeconds
	r, _ := p.resolve(e.value)
	switch r.(type) {
	case *ast.StringNode, *ast.LiteralNode:
		if path, ok := p.str(field, e.value, e.line, "a path"); ok {
			probe.Path, _ = p.probePath(field, path, lineAt(e.value, e.line))
		}
		return
	case *ast.MappingNode:
	default:
		p.errorf(lineAt(e.value, e.line), field, "must be a path like /health or a mapping with path (and optionally initial_delay_seconds, timeout_seconds, post_data, headers), got %s", describe(r))
		return
	}
	es, _ := p.entries(field, r)
	havePath := false
	for _, kv := range es {
		f := join(field, kv.key)
		p.mark(f, kv.line)
		switch kv.key {
		case "path":
			havePath = true
			if path, ok := p.str(f, kv.value, kv.line, "a path like /health"); ok {
				probe.Path, _ = p.probePath(f, path, lineAt(kv.value, kv.line))
			}
		case "initial_delay_seconds":
			if n, ok := p.seconds(f, kv.value, kv.line, true, "1200"); ok {
				probe.InitialDelaySeconds = n
			}
		case "timeout_seconds":
			if n, ok := p.seconds(f, kv.value, kv.line, false, "15"); ok {
				probe.TimeoutSeconds = n
			}
		case "post_data":
			probe.PostData, _ = p.postData(f, kv.value, kv.line)
		case "headers":
			probe.Headers = p.headers(f, kv)
		default:
			p.unknownKey(kv, field, probeKeys)
		}
	}
	if !havePath {
		p.errorf(e.line, join(field, "path"), "required: give the path that answers HTTP 200 once a replica is ready (e.g. path: /health)")
	}
}

// probePath checks a readiness probe path.
func (p *taskParser) probePath(field, path string, line int) (string, bool) {
	if !strings.HasPrefix(path, "/") {
		p.errorf(line, field, "%q must start with '/' (e.g. /%s)", path, strings.TrimLeft(strings.TrimSpace(path), "/"))
		return "", false
	}
	for _, c := range path {
		if c <= ' ' || c == 0x7f {
			p.errorf(line, field, "%q contains a space or control character; percent-encode it (e.g. %%20)", path)
			return "", false
		}
	}
	return path, true
}

// postData reads post_data: a JSON string, or a mapping or list stored as
// its JSON text (keys in file order).
func (p *taskParser) postData(field string, n ast.Node, line int) (string, bool) {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	switch r.(type) {
	case nil:
		return "", true
	case *ast.StringNode, *ast.LiteralNode:
		s, ok := p.str(field, n, line, "a JSON string")
		if !ok {
			return "", false
		}
		if !json.Valid([]byte(s)) {
			p.errorf(line, field, "is not valid JSON; write a mapping (e.g. post_data: {model: my-model}) or a JSON string like '{\"model\": \"my-model\"}'")
			return "", false
		}
		return s, true
	case *ast.MappingNode, *ast.SequenceNode:
		var buf bytes.Buffer
		budget := maxJSONNodes
		if err := p.toJSON(&buf, r, 0, &budget); err != "" {
			p.errorf(line, field, "%s", err)
			return "", false
		}
		if buf.Len() > maxPostData {
			p.errorf(line, field, "is %d bytes as JSON; keep it under %d", buf.Len(), maxPostData)
			return "", false
		}
		return buf.String(), true
	}
	p.errorf(line, field, "must be a mapping (sent as JSON) or a JSON string, got %s", describe(r))
	return "", false
}

// toJSON writes a resolved node as JSON. It returns a message on failure.
func (p *taskParser) toJSON(buf *bytes.Buffer, n ast.Node, depth int, budget *int) string {
	*budget--
	if *budget < 0 || depth > maxJSONDepth || buf.Len() > maxPostData {
		return fmt.Sprintf("is too large or too deeply nested; keep it under %d bytes of JSON", maxPostData)
	}
	switch v := n.(type) {
	case nil:
		buf.WriteString("null")
	case *ast.MappingNode:
		buf.WriteByte('{')
		for i, mv := range v.Values {
			if i > 0 {
				buf.WriteByte(',')
			}
			if _, isMerge := mv.Key.(*ast.MergeKeyNode); isMerge {
				return "merge keys (<<) are not supported; write the keys out"
			}
			k, _ := p.resolve(mv.Key)
			var key string
			switch kv := k.(type) {
			case *ast.StringNode:
				key = kv.Value
			case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode:
				key = kv.GetToken().Value
			default:
				return fmt.Sprintf("has a key that is %s; JSON keys must be strings", describe(k))
			}
			writeJSONString(buf, key)
			buf.WriteByte(':')
			r, _ := p.resolve(mv.Value)
			if msg := p.toJSON(buf, r, depth+1, budget); msg != "" {
				return msg
			}
		}
		buf.WriteByte('}')
	case *ast.SequenceNode:
		buf.WriteByte('[')
		for i, e := range v.Values {
			if i > 0 {
				buf.WriteByte(',')
			}
			r, _ := p.resolve(e)
			if msg := p.toJSON(buf, r, depth+1, budget); msg != "" {
				return msg
			}
		}
		buf.WriteByte(']')
	case *ast.StringNode, *ast.LiteralNode:
		text, _ := textOf(v)
		writeJSONString(buf, text)
	case *ast.IntegerNode:
		fmt.Fprint(buf, v.Value)
	case *ast.FloatNode:
		buf.WriteString(strconv.FormatFloat(v.Value, 'g', -1, 64))
	case *ast.BoolNode:
		buf.WriteString(strconv.FormatBool(v.Value))
	default:
		return fmt.Sprintf("contains %s, which JSON cannot represent", describe(n))
	}
	return ""
}

func writeJSONString(buf *bytes.Buffer, s string) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)           // encoding a string cannot fail
	buf.Truncate(buf.Len() - 1) // Encode appends a newline
}

func (p *taskParser) headers(field string, e entry) map[string]string {
	if p.isNull(e.value) {
		return nil
	}
	es, ok := p.mapping(field, e.value, e.line, "Header-Name: value pairs")
	if !ok || len(es) == 0 {
		return nil
	}
	h := make(map[string]string, len(es))
	for _, kv := range es {
		if !headerRE.MatchString(kv.key) {
			p.errorf(kv.line, field, "%q is not a valid HTTP header name; use letters, digits and - (e.g. Authorization)", kv.key)
			continue
		}
		v, ok := p.scalarText(join(field, kv.key), kv.value, kv.line, "a string (e.g. Bearer my-token)")
		if !ok {
			continue
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			p.errorf(lineAt(kv.value, kv.line), join(field, kv.key), "contains a line break; a header value must be one line")
			continue
		}
		h[kv.key] = v
	}
	return h
}

func (p *taskParser) parseReplicaPolicy(e entry, rp *ReplicaPolicy) {
	const field = "service.replica_policy"
	es, ok := p.mapping(field, e.value, e.line, "min_replicas, max_replicas, target_qps_per_replica, ...")
	if !ok {
		return
	}
	var haveMin, haveMax, haveQPS, bad bool
	var maxLine, qpsLine int
	for _, kv := range es {
		f := join(field, kv.key)
		p.mark(f, kv.line)
		var ok bool
		switch kv.key {
		case "min_replicas":
			haveMin = true
			rp.MinReplicas, ok = p.integer(f, kv.value, kv.line, 1, "1")
			bad = bad || !ok
		case "max_replicas":
			haveMax, maxLine = true, lineAt(kv.value, kv.line)
			rp.MaxReplicas, ok = p.integer(f, kv.value, kv.line, 1, "4")
			bad = bad || !ok
		case "target_qps_per_replica":
			haveQPS, qpsLine = true, lineAt(kv.value, kv.line)
			rp.TargetQPSPerReplica, ok = p.positiveNumber(f, kv.value, kv.line, "2.5")
			bad = bad || !ok
		case "upscale_delay_seconds":
			if n, ok := p.seconds(f, kv.value, kv.line, true, "300"); ok {
				rp.UpscaleDelaySeconds = n
			}
		case "downscale_delay_seconds":
			if n, ok := p.seconds(f, kv.value, kv.line, true, "1200"); ok {
				rp.DownscaleDelaySeconds = n
			}
		case "num_overprovision":
			if n, ok := p.integer(f, kv.value, kv.line, 0, "1"); ok {
				rp.NumOverprovision = n
			}
		default:
			if spotKeys[kv.key] {
				p.warnf(kv.line, f, "ignored: baton places replicas on its own agents (no spot instances)")
				continue
			}
			p.unknownKey(kv, field, replicaPolicyKeys)
		}
	}
	switch {
	case !haveMin:
		p.errorf(e.line, join(field, "min_replicas"), "required: the number of replicas to keep running (e.g. min_replicas: 1)")
	case bad:
		// Already reported; the checks below would only add noise.
	case !haveMax && haveQPS:
		p.errorf(qpsLine, join(field, "target_qps_per_replica"), "needs max_replicas: autoscaling scales between min_replicas and max_replicas (e.g. max_replicas: %d)", rp.MinReplicas+2)
	case !haveMax:
		rp.MaxReplicas = rp.MinReplicas
	case rp.MaxReplicas < rp.MinReplicas:
		p.errorf(maxLine, join(field, "max_replicas"), "%d is less than min_replicas (%d); use a number >= %d", rp.MaxReplicas, rp.MinReplicas, rp.MinReplicas)
	case rp.MaxReplicas > rp.MinReplicas && !haveQPS:
		p.errorf(maxLine, join(field, "target_qps_per_replica"), "required when max_replicas (%d) is more than min_replicas (%d): the requests per second one replica should take (e.g. target_qps_per_replica: 2.5)", rp.MaxReplicas, rp.MinReplicas)
	}
}

// --- resources.

func (p *taskParser) parseResources(es []entry, res *Resources) {
	var acc *entry // the first of accelerators and gpus
	for i, e := range es {
		f := join("resources", e.key)
		p.mark(f, e.line)
		switch {
		case e.key == "cpus":
			res.CPUs, _ = p.quantity(f, e.value, e.line, "4")
		case e.key == "memory":
			res.Memory, _ = p.memory(f, e.value, e.line)
		case e.key == "accelerators" || e.key == "gpus":
			// gpus is SkyPilot's other name for accelerators.
			if acc != nil {
				p.errorf(e.line, f, "%s (line %d) and %s (line %d) are both set; gpus is another name for accelerators, so keep one",
					acc.key, acc.line, e.key, e.line)
				continue
			}
			acc = &es[i]
			res.Accelerators = p.accelerators(f, e.value, e.line)
		case e.key == "ports":
			res.Ports = p.ports(f, e.value, e.line)
		case cloudKeys[e.key]:
			p.warnf(e.line, f, "ignored: baton places replicas on its own agents")
		default:
			p.unknownKey(e, "resources", resourcesKeys)
		}
	}
}

// quantity reads `4`, `4+`, `0.5` or `2.5+`.
func (p *taskParser) quantity(field string, n ast.Node, line int, example string) (Quantity, bool) {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	hint := fmt.Sprintf("use %s or %s+", example, example)
	var q Quantity
	switch v := r.(type) {
	case nil:
		return q, true
	case *ast.IntegerNode:
		q.Value = floatOf(v)
	case *ast.FloatNode:
		q.Value = v.Value
	case *ast.StringNode:
		s := strings.TrimSpace(v.Value)
		m := quantityRE.FindStringSubmatch(s)
		if m == nil {
			p.errorf(line, field, "%q is not a number (%s)", v.Value, hint)
			return Quantity{}, false
		}
		f, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			p.errorf(line, field, "%q is not a number (%s)", v.Value, hint)
			return Quantity{}, false
		}
		q.Value, q.AtLeast = f, m[3] == "+"
	default:
		p.errorf(line, field, "must be a number, got %s (%s)", describe(r), hint)
		return Quantity{}, false
	}
	if !(q.Value > 0) || math.IsInf(q.Value, 0) {
		p.errorf(line, field, "%s is not allowed; it must be more than 0 (%s)", r.GetToken().Value, hint)
		return Quantity{}, false
	}
	return q, true
}

// memoryHint lists the forms resources.memory takes.
const memoryHint = "use a size like 16, 16+, 16GB, 512MB or 1TB+; units are KB, MB, GB, TB and PB or K, M, G, T and P (GB meaning GiB), and a bare number is GB"

// memoryUnits are the memory units in GiB. As in SkyPilot, GB is GiB and
// the others are powers of 1024 from it.
var memoryUnits = map[string]float64{
	"":   1,
	"kb": 1.0 / (1 << 20),
	"mb": 1.0 / (1 << 10),
	"gb": 1,
	"tb": 1 << 10,
	"pb": 1 << 20,
}

// memory reads resources.memory: a quantity in GiB, or one with a unit such
// as `16GB`, `512mb` or `1TB+`.
func (p *taskParser) memory(field string, n ast.Node, line int) (Quantity, bool) {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	var q Quantity
	switch v := r.(type) {
	case nil:
		return q, true
	case *ast.IntegerNode:
		q.Value = floatOf(v)
	case *ast.FloatNode:
		q.Value = v.Value
	case *ast.StringNode:
		m := memoryRE.FindStringSubmatch(strings.TrimSpace(v.Value))
		var f float64
		var err error
		if m != nil {
			f, err = strconv.ParseFloat(m[1], 64)
		}
		if m == nil || err != nil {
			p.errorf(line, field, "%q is not a memory size (%s)", v.Value, memoryHint)
			return Quantity{}, false
		}
		unit := strings.ToLower(m[2])
		if len(unit) == 1 {
			unit += "b" // 16G is 16GB
		}
		q.Value, q.AtLeast = f*memoryUnits[unit], m[3] == "+"
	default:
		p.errorf(line, field, "must be a memory size, got %s (%s)", describe(r), memoryHint)
		return Quantity{}, false
	}
	if !(q.Value > 0) || math.IsInf(q.Value, 0) {
		p.errorf(line, field, "%s is not allowed; it must be more than 0 (%s)", r.GetToken().Value, memoryHint)
		return Quantity{}, false
	}
	return q, true
}

// accelerators reads `A100`, `A100:2`, a mapping {A100: 1, H100: 1} (any one
// of them, sorted by name) or a list [A100:1, H100] (in order).
func (p *taskParser) accelerators(field string, n ast.Node, line int) AcceleratorRequest {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	var req AcceleratorRequest
	const forms = "use a name like A100, A100:2, a mapping {A100: 1, H100: 1} (any one) or a list [A100:1, H100:1] (in order of preference)"
	switch v := r.(type) {
	case nil:
		return req
	case *ast.StringNode:
		if o, ok := p.accelString(field, v.Value, line); ok {
			req.Options = []AcceleratorOption{o}
		}
		return req
	case *ast.MappingNode:
		es, _ := p.entries(field, v)
		for _, e := range es {
			if o, ok := p.accelEntry(field, e); ok {
				req.Options = append(req.Options, o)
			}
		}
		sort.SliceStable(req.Options, func(i, j int) bool {
			a, b := req.Options[i].Name, req.Options[j].Name
			if la, lb := strings.ToLower(a), strings.ToLower(b); la != lb {
				return la < lb
			}
			return a < b
		})
	case *ast.SequenceNode:
		req.Ordered = true
		for _, item := range v.Values {
			ir, _ := p.resolve(item)
			il := lineAt(item, line)
			switch iv := ir.(type) {
			case *ast.StringNode:
				if o, ok := p.accelString(field, iv.Value, il); ok {
					req.Options = append(req.Options, o)
				}
			case *ast.MappingNode:
				es, _ := p.entries(field, iv)
				if len(es) != 1 {
					p.errorf(il, field, "each list item must name one accelerator (e.g. - A100: 1), got %d", len(es))
					continue
				}
				if o, ok := p.accelEntry(field, es[0]); ok {
					req.Options = append(req.Options, o)
				}
			default:
				p.errorf(il, field, "list items must be like A100 or A100:2, got %s", describe(ir))
			}
		}
	default:
		p.errorf(line, field, "got %s; %s", describe(r), forms)
		return req
	}
	if len(req.Options) == 0 {
		if !p.hasErrorAt(field) {
			p.errorf(line, field, "lists no accelerators; %s, or remove it", forms)
		}
		return AcceleratorRequest{}
	}
	seen := map[string]bool{}
	for _, o := range req.Options {
		k := strings.ToLower(o.Name)
		if seen[k] {
			p.errorf(line, field, "%s is listed twice; list each accelerator once", o.Name)
			return AcceleratorRequest{}
		}
		seen[k] = true
	}
	return req
}

// hasErrorAt reports whether a problem was already reported for field.
func (p *taskParser) hasErrorAt(field string) bool {
	for _, e := range p.errs {
		if e.Field == field {
			return true
		}
	}
	return false
}

// accelEntry reads one `NAME: count` pair; `NAME:count` with no value is
// accepted too (YAML reads {A100:2} that way in flow style).
func (p *taskParser) accelEntry(field string, e entry) (AcceleratorOption, bool) {
	if p.isNull(e.value) {
		return p.accelString(field, e.key, e.line)
	}
	if strings.Contains(e.key, ":") {
		p.errorf(e.line, field, "%q has a count twice; write %s: N or just %s", e.key+": ...", strings.SplitN(e.key, ":", 2)[0], e.key)
		return AcceleratorOption{}, false
	}
	name, ok := p.accelName(field, e.key, e.line)
	if !ok {
		return AcceleratorOption{}, false
	}
	r, _ := p.resolve(e.value)
	line := lineAt(e.value, e.line)
	switch v := r.(type) {
	case *ast.IntegerNode:
		if x, ok := intOf(v); ok && x >= 1 && x <= maxInt {
			return AcceleratorOption{Name: name, Count: int(x)}, true
		}
		p.errorf(line, field, "%s: %s is not a valid count; use a whole number >= 1 (e.g. %s: 1)", name, v.GetToken().Value, name)
	case *ast.FloatNode:
		p.errorf(line, field, "%s: %s is fractional; baton assigns whole accelerators, so use a whole number >= 1 (e.g. %s: 1)", name, v.GetToken().Value, name)
	default:
		p.errorf(line, field, "%s: the count must be a whole number >= 1 (e.g. %s: 1), got %s", name, name, describe(r))
	}
	return AcceleratorOption{}, false
}

// accelString reads `A100` or `A100:2`.
func (p *taskParser) accelString(field, s string, line int) (AcceleratorOption, bool) {
	name, count, hasCount := strings.Cut(s, ":")
	name, count = strings.TrimSpace(name), strings.TrimSpace(count)
	name, ok := p.accelName(field, name, line)
	if !ok {
		return AcceleratorOption{}, false
	}
	if !hasCount {
		return AcceleratorOption{Name: name, Count: 1}, true
	}
	if digitsRE.MatchString(count) {
		if n, err := strconv.Atoi(count); err == nil && n >= 1 && n <= maxInt {
			return AcceleratorOption{Name: name, Count: n}, true
		}
		p.errorf(line, field, "%q has count %s; use a whole number >= 1 (use %s or %s:2)", s, count, name, name)
		return AcceleratorOption{}, false
	}
	if _, err := strconv.ParseFloat(count, 64); err == nil && !strings.ContainsAny(count, "xXpPnN_") {
		p.errorf(line, field, "%q has a fractional count; baton assigns whole accelerators (use %s or %s:2)", s, name, name)
		return AcceleratorOption{}, false
	}
	p.errorf(line, field, "%q has a count %q that is not a whole number (use %s or %s:2)", s, count, name, name)
	return AcceleratorOption{}, false
}

// accelName checks an accelerator name such as A100, H100-80GB or tpu-v4.
func (p *taskParser) accelName(field, name string, line int) (string, bool) {
	if !accNameRE.MatchString(name) {
		p.errorf(line, field, "%q is not an accelerator name; use letters, digits, '-', '_' and '.' (e.g. A100, H100-80GB)", name)
		return "", false
	}
	return name, true
}

// ports reads resources.ports: 8080, "8080", "8000-8010" or a list of those.
// The result keeps file order without duplicates.
func (p *taskParser) ports(field string, n ast.Node, line int) []int {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	var items []ast.Node
	switch v := r.(type) {
	case nil:
		return nil
	case *ast.SequenceNode:
		items = v.Values
		if len(items) == 0 {
			p.errorf(line, field, "the list is empty; give a port like 8080 or a range like 8000-8010, or remove it")
			return nil
		}
	default:
		items = []ast.Node{n}
	}
	var out []int
	seen := map[int]bool{}
	for _, item := range items {
		lo, hi, ok := p.portRange(field, item, line)
		if !ok {
			continue
		}
		if len(out)+hi-lo+1 > maxPorts {
			p.errorf(lineAt(item, line), field, "opens more than %d ports; list only the ports the replica serves on", maxPorts)
			return nil
		}
		for port := lo; port <= hi; port++ {
			if !seen[port] {
				seen[port] = true
				out = append(out, port)
			}
		}
	}
	return out
}

const portHint = "use a port from 1 to 65535 like 8080, or a range like 8000-8010"

// portRange reads one port or range.
func (p *taskParser) portRange(field string, n ast.Node, line int) (lo, hi int, ok bool) {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	switch v := r.(type) {
	case *ast.IntegerNode:
		port, ok := p.port(field, n, line)
		return port, port, ok
	case *ast.StringNode:
		a, b, isRange := strings.Cut(strings.TrimSpace(v.Value), "-")
		lo, okA := parsePort(strings.TrimSpace(a))
		hi, okB := lo, okA
		if isRange {
			hi, okB = parsePort(strings.TrimSpace(b))
		}
		switch {
		case !okA || !okB:
			p.errorf(line, field, "%q is not a port; %s", v.Value, portHint)
		case lo > hi:
			p.errorf(line, field, "%q is an empty range; write the lower port first (e.g. %d-%d)", v.Value, hi, lo)
		default:
			return lo, hi, true
		}
	default:
		p.errorf(line, field, "got %s; %s", describe(r), portHint)
	}
	return 0, 0, false
}

// port reads one port number (an integer or a string of digits).
func (p *taskParser) port(field string, n ast.Node, line int) (int, bool) {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	switch v := r.(type) {
	case *ast.IntegerNode:
		if x, ok := intOf(v); ok && x >= 1 && x <= 65535 {
			return int(x), true
		}
		p.errorf(line, field, "%s is not a port; use a number from 1 to 65535 (e.g. 8080)", v.GetToken().Value)
	case *ast.StringNode:
		if port, ok := parsePort(strings.TrimSpace(v.Value)); ok {
			return port, true
		}
		p.errorf(line, field, "%q is not a port; use a number from 1 to 65535 (e.g. 8080)", v.Value)
	default:
		p.errorf(line, field, "must be a port from 1 to 65535 (e.g. 8080), got %s", describe(r))
	}
	return 0, false
}

func parsePort(s string) (int, bool) {
	if !digitsRE.MatchString(s) || len(s) > 5 {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 1 && n <= 65535
}
