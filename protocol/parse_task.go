package protocol

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// The top level of a task file, its envs and secrets, and the --env and
// --secret overrides.

const runHint = "give the command that starts the server (e.g. run: python -m http.server $PORT)"

// topLevel is what parseFile gathers from the top-level keys before it
// reads resources and then service (which needs resources.ports).
type topLevel struct {
	haveRun, haveService, serviceOK bool
	serviceLine                     int
	service, resources              []entry
}

func (p *taskParser) parseFile(file *ast.File) *TaskSpec {
	body := p.document(file)
	if body == nil {
		return nil
	}
	r, _ := p.resolve(body)
	es, ok := p.entries("", r)
	if !ok {
		p.errorf(lineOf(body), "", "a task must be a mapping of keys like run: and service:, got %s", describe(r))
		return nil
	}
	spec := &TaskSpec{}
	var top topLevel
	for _, e := range es {
		p.mark(join("", e.key), e.line)
		p.topKey(e, spec, &top)
	}
	firstLine := lineOf(body)
	if !top.haveRun {
		p.errorf(firstLine, "run", "required: %s", runHint)
	}
	p.parseResources(top.resources, &spec.Resources)
	if !top.haveService {
		p.errorf(firstLine, "service", "required: add a service section (e.g. service: {readiness_probe: /health, replicas: 2})")
	} else if top.serviceOK {
		p.parseService(top.service, top.serviceLine, spec)
	}
	return spec
}

// document is the body of the file's one YAML document, or nil (reported)
// if there is none.
func (p *taskParser) document(file *ast.File) ast.Node {
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
	}
	return body
}

// noNUL reports a script with a NUL byte, which no shell command can hold.
func (p *taskParser) noNUL(field string, e entry, text string) {
	if strings.ContainsRune(text, 0) {
		p.errorf(lineAt(e.value, e.line), field, "contains a NUL byte, which a shell command cannot hold; remove it")
	}
}

// topKey reads one top-level key into spec, or into top for the sections
// read later.
func (p *taskParser) topKey(e entry, spec *TaskSpec, top *topLevel) {
	switch {
	case e.key == "name":
		if !p.isNull(e.value) {
			spec.Name, _ = p.scalarText("name", e.value, e.line, "a name")
		}
	case e.key == "workdir":
		if !p.isNull(e.value) {
			spec.Workdir, _ = p.str("workdir", e.value, e.line, "a directory path")
			if strings.ContainsRune(spec.Workdir, 0) || len(spec.Workdir) > 4096 {
				p.errorf(lineAt(e.value, e.line), "workdir", "must be a directory path of at most 4096 bytes without NUL bytes")
			}
		}
	case e.key == "setup":
		if !p.isNull(e.value) {
			spec.Setup, _ = p.str("setup", e.value, e.line, "a string of shell commands")
			p.noNUL("setup", e, spec.Setup)
		}
	case e.key == "run":
		top.haveRun = true
		spec.Run = p.parseRun(e)
		p.noNUL("run", e, spec.Run)
	case e.key == "envs":
		spec.Envs = p.parseEnvs(e, kindEnv)
	case e.key == "secrets":
		spec.Secrets = p.parseEnvs(e, kindSecret)
	case e.key == "file_mounts":
		spec.FileMounts = p.parseFileMounts(e)
	case e.key == "num_nodes":
		if n, ok := p.integer("num_nodes", e.value, e.line, wholeNumber(1, "1")); ok && n != 1 {
			p.errorf(lineAt(e.value, e.line), "num_nodes", "%d is not supported; baton runs each replica on one machine, so remove num_nodes or set it to 1", n)
		}
	case e.key == "service":
		if p.isNull(e.value) {
			return
		}
		top.haveService, top.serviceLine = true, e.line
		top.service, top.serviceOK = p.mapping("service", e.value, e.line, "service settings (readiness_probe, replicas, ...)")
	case e.key == "resources":
		if p.isNull(e.value) {
			return
		}
		top.resources, _ = p.mapping("resources", e.value, e.line, "resource requests (cpus, memory, accelerators, ports)")
	case cloudKeys[e.key]:
		p.cloudKey(e.key, e)
	default:
		p.unknownKey(e, "", taskKeys)
	}
}

// parseRun reads run, which must be a non-empty string.
func (p *taskParser) parseRun(e entry) string {
	if p.isNull(e.value) {
		p.errorf(e.line, "run", "is empty; %s", runHint)
		return ""
	}
	s, ok := p.str("run", e.value, e.line, "a string of shell commands (use run: | for several lines)")
	if ok && strings.TrimSpace(s) == "" {
		p.errorf(lineAt(e.value, e.line), "run", "is empty; %s", runHint)
	}
	return s
}

// cloudKey handles a key that only means something on a cloud (at the top
// level or in resources): a warning, since baton ignores it, except for an
// image_id naming a docker image, which a replica would need to run at all.
func (p *taskParser) cloudKey(field string, e entry) {
	if e.key == "image_id" {
		r, _ := p.resolve(e.value)
		if text, ok := textOf(r); ok && strings.HasPrefix(strings.TrimSpace(text), "docker:") {
			p.errorf(lineAt(e.value, e.line), field, "docker images are not supported yet: baton runs replicas directly on the agent's machine, not in containers; remove image_id and install what the image provides in setup")
			return
		}
	}
	p.warnf(e.line, field, "ignored: baton places replicas on its own agents")
}

// envKind is one of the two sections of environment variables a task
// has: envs, which baton shows, and secrets, whose values it never shows.
// Both reach the replica's environment.
type envKind struct {
	section string // "envs" or "secrets", the field names in messages
	flag    string // "--env" or "--secret"
	secret  bool
}

var (
	kindEnv    = envKind{section: "envs", flag: "--env"}
	kindSecret = envKind{section: "secrets", flag: "--secret", secret: true}
)

// parseEnvs reads envs or secrets (NAME: value pairs). A name with no
// value is required: it is left out of the map and recorded in
// p.required for applyOverrides. A secret's value is never quoted in a
// message.
func (p *taskParser) parseEnvs(e entry, kind envKind) map[string]string {
	if p.isNull(e.value) {
		return nil
	}
	r, _ := p.resolve(e.value)
	es, ok := p.entries(kind.section, r)
	if !ok {
		got := describe(r)
		if kind.secret {
			got = describeKind(r)
		}
		p.errorf(e.line, kind.section, "must be a mapping of NAME: value pairs, got %s", got)
		return nil
	}
	if len(es) == 0 {
		return nil
	}
	envs := make(map[string]string, len(es))
	for _, kv := range es {
		if !envNameRE.MatchString(kv.key) {
			if kind.secret {
				// NAME=value written as a key holds the value.
				p.errorf(kv.line, kind.section, "a name is not a valid environment variable name (not repeated here, in case it holds the value); write NAME: value, with letters, digits and _ in NAME, not starting with a digit")
			} else {
				p.errorf(kv.line, kind.section, "%s", envNameMessage(kv.key))
			}
			continue
		}
		field := join(kind.section, kv.key)
		p.mark(field, kv.line)
		p.fileEnvs[kind] = append(p.fileEnvs[kind], kv.key)
		if p.isNull(kv.value) {
			if p.required[kind] == nil {
				p.required[kind] = map[string]int{}
			}
			p.required[kind][kv.key] = lineAt(kv.value, kv.line)
			continue
		}
		if v, ok := p.envValue(field, kv, kind); ok {
			envs[kv.key] = v
		}
	}
	return envs
}

// envValue reads the value of one env or secret: a string, number or
// boolean, as written.
func (p *taskParser) envValue(field string, kv entry, kind envKind) (string, bool) {
	what := fmt.Sprintf("a string, number or boolean (e.g. %s: value)", kv.key)
	if !kind.secret {
		return p.scalarText(field, kv.value, kv.line, what)
	}
	r, _ := p.resolve(kv.value)
	switch r.(type) {
	case *ast.StringNode, *ast.LiteralNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return p.scalarText(field, kv.value, kv.line, what)
	}
	p.errorf(lineAt(kv.value, kv.line), field, "must be %s, got %s", what, describeKind(r))
	return "", false
}

// describeKind names a resolved node's kind without its value, for
// messages about secrets.
func describeKind(n ast.Node) string {
	switch n.(type) {
	case *ast.StringNode, *ast.LiteralNode:
		return "a string"
	case *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return "a number"
	case *ast.BoolNode:
		return "a boolean"
	}
	return describe(n) // nothing, a mapping, a list, ...: no value to hide
}

// applyOverrides puts the --env and --secret overrides into spec.Envs and
// spec.Secrets and reports invalid override names, a name that is both an
// env and a secret, required envs and secrets that no override fills, and
// envs and secrets past the limits (counted together).
func (p *taskParser) applyOverrides(spec *TaskSpec, envs, secrets map[string]string) {
	envApplied := p.applyKind(&spec.Envs, envs, kindEnv)
	secretApplied := p.applyKind(&spec.Secrets, secrets, kindSecret)
	clash := p.checkDisjoint(envs, secrets)
	p.reportMissing(envs, kindEnv, clash)
	p.reportMissing(secrets, kindSecret, clash)
	if len(clash) > 0 {
		return
	}
	srcs := p.envSources(envs, envApplied, kindEnv)
	srcs = append(srcs, p.envSources(secrets, secretApplied, kindSecret)...)
	p.checkEnvLimits(spec, srcs)
}

// applyKind puts the overrides of one kind into *dst and returns the valid
// names, sorted.
func (p *taskParser) applyKind(dst *map[string]string, overrides map[string]string, kind envKind) []string {
	keys := make([]string, 0, len(overrides))
	for k := range overrides {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var applied []string
	badSecret := false
	for _, k := range keys {
		if err := ValidateEnvName(k); err != nil {
			if kind.secret {
				// A value sent as a name must not be repeated either, so
				// the names are not told apart: one message for all.
				if !badSecret {
					p.errs = append(p.errs, &SpecError{File: p.file, Line: 0, Field: kind.flag,
						Message: "a name is not a valid environment variable name (not repeated here, in case it holds the value); write --secret NAME=VALUE, with letters, digits and _ in NAME, not starting with a digit"})
				}
				badSecret = true
				continue
			}
			p.errs = append(p.errs, &SpecError{File: p.file, Line: 0, Field: overrideField(kind, k),
				Message: err.Error() + "; write " + kind.flag + " NAME=VALUE"})
			continue
		}
		if *dst == nil {
			*dst = make(map[string]string, len(overrides))
		}
		(*dst)[k] = overrides[k]
		applied = append(applied, k)
	}
	return applied
}

// checkDisjoint reports each name that is both an env and a secret (in
// the file or on the command line), at the secret, and returns them.
func (p *taskParser) checkDisjoint(envs, secrets map[string]string) map[string]bool {
	envAt := map[string]string{} // name -> where the env is, for the message
	for _, k := range p.fileEnvs[kindEnv] {
		envAt[k] = fmt.Sprintf("envs.%s on line %d", k, p.lines[join("envs", k)])
	}
	for k := range envs {
		if _, ok := envAt[k]; !ok {
			envAt[k] = "--env " + k
		}
	}
	secretLine := map[string]int{}
	for _, k := range p.fileSecrets() {
		secretLine[k] = p.lines[join("secrets", k)]
	}
	for k := range secrets {
		if _, ok := secretLine[k]; !ok {
			secretLine[k] = 0
		}
	}
	names := make([]string, 0, len(secretLine))
	for k := range secretLine {
		if _, ok := envAt[k]; ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	clash := make(map[string]bool, len(names))
	for _, k := range names {
		clash[k] = true
		_, fromFlag := secrets[k]
		src := envSource{name: k, kind: kindSecret, line: secretLine[k]}
		if fromFlag {
			src.line = 0
		}
		p.envErrorf(src, "is also an env (%s); a name can be an env or a secret, not both: remove one of them", envAt[k])
	}
	return clash
}

// fileSecrets are the names of the file's secrets, in document order.
func (p *taskParser) fileSecrets() []string { return p.fileEnvs[kindSecret] }

// reportMissing reports the required envs or secrets of kind that no
// override fills, except names already reported as a clash.
func (p *taskParser) reportMissing(overrides map[string]string, kind envKind, clash map[string]bool) {
	var missing []string
	for k := range p.required[kind] {
		if _, ok := overrides[k]; !ok && !clash[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	for _, k := range missing {
		p.errorf(p.required[kind][k], join(kind.section, k), "has no value; pass it with %s %s=VALUE", kind.flag, k)
	}
}

// overrideField is the Field of a problem with the override of name.
func overrideField(kind envKind, name string) string {
	if !plainKeyRE.MatchString(name) {
		name = strconv.Quote(name)
	}
	return kind.flag + " " + name
}

// envSource is one env or secret and where its value came from: a line of
// the file, or 0 for an --env or --secret override.
type envSource struct {
	name string
	kind envKind
	line int
}

// envSources lists the envs or secrets of kind: the file's in document
// order (those no override replaced, with a value), then the applied
// overrides.
func (p *taskParser) envSources(overrides map[string]string, applied []string, kind envKind) []envSource {
	out := make([]envSource, 0, len(p.fileEnvs[kind])+len(applied))
	for _, k := range p.fileEnvs[kind] {
		_, overridden := overrides[k]
		_, required := p.required[kind][k]
		if !overridden && !required {
			out = append(out, envSource{name: k, kind: kind, line: p.lines[join(kind.section, k)]})
		}
	}
	for _, k := range applied {
		out = append(out, envSource{name: k, kind: kind})
	}
	return out
}

// envErrorf reports a problem with one env at its source.
func (p *taskParser) envErrorf(src envSource, format string, args ...any) {
	if src.line == 0 {
		p.errs = append(p.errs, &SpecError{File: p.file, Field: overrideField(src.kind, src.name), Message: fmt.Sprintf(format, args...)})
		return
	}
	p.errorf(src.line, join(src.kind.section, src.name), format, args...)
}

// envAdvice ends the messages about env sizes.
const envAdvice = "keep large values in a file in workdir and read it in run"

// checkEnvLimits checks the envs and secrets of a task, the file's and the
// overrides together, against MaxEnvValueBytes, MaxEnvs and MaxEnvsBytes.
// A count or total over its limit is reported at the one that passes it.
// No message quotes a value.
func (p *taskParser) checkEnvLimits(spec *TaskSpec, srcs []envSource) {
	value := func(src envSource) (string, bool) {
		m := spec.Envs
		if src.kind.secret {
			m = spec.Secrets
		}
		v, ok := m[src.name]
		return v, ok
	}
	bad := false
	for _, src := range srcs {
		v, ok := value(src)
		switch {
		case !ok:
		case len(v) > MaxEnvValueBytes:
			p.envErrorf(src, "the value is %d bytes; an env's value is limited to %d (%s)", len(v), MaxEnvValueBytes, envAdvice)
			bad = true
		case strings.ContainsRune(v, 0):
			p.envErrorf(src, "the value contains a NUL byte, which an environment variable cannot hold; remove it")
			bad = true
		}
	}
	if bad {
		return // the checks below would only add noise
	}
	if len(srcs) > MaxEnvs {
		p.envErrorf(srcs[MaxEnvs], "is env %d of %d; a task has at most %d envs and secrets, the file's and the command line's together (put the rest in a file in workdir and read it in run)",
			MaxEnvs+1, len(srcs), MaxEnvs)
		return
	}
	total, past := 0, -1
	for i, src := range srcs {
		v, _ := value(src)
		if total += len(src.name) + len(v); total > MaxEnvsBytes && past < 0 {
			past = i
		}
	}
	if past >= 0 {
		p.envErrorf(srcs[past], "the names and values of the envs and secrets come to %d bytes, the file's and the command line's together, and pass the limit of %d here (%s)",
			total, MaxEnvsBytes, envAdvice)
	}
}

// MaxFileMounts bounds a task's file_mounts.
const MaxFileMounts = 64

// remoteSchemeRE matches a source that names a remote store (s3://,
// gs://, https://, ...), which baton does not fetch.
var remoteSchemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)

// parseFileMounts reads file_mounts: a mapping of where a file or
// directory goes for each replica to its local source. Remote sources
// (s3://, gs://, ...) and SkyPilot's storage form ({source, mode}) are
// refused, saying what is supported.
func (p *taskParser) parseFileMounts(e entry) map[string]string {
	if p.isNull(e.value) {
		return nil
	}
	r, _ := p.resolve(e.value)
	es, ok := p.entries("file_mounts", r)
	if !ok {
		p.errorf(e.line, "file_mounts", "must be a mapping of /path/on/replica: ./local/source pairs, got %s", describe(r))
		return nil
	}
	if len(es) == 0 {
		return nil
	}
	if len(es) > MaxFileMounts {
		p.errorf(e.line, "file_mounts", "has %d entries; at most %d (put the rest in one directory)", len(es), MaxFileMounts)
		return nil
	}
	mounts := make(map[string]string, len(es))
	for _, kv := range es {
		field := join("file_mounts", kv.key)
		p.mark(field, kv.line)
		if err := ValidateMountTarget(kv.key); err != nil {
			p.errorf(kv.line, field, "%v", err)
			continue
		}
		if rv, _ := p.resolve(kv.value); rv != nil {
			if _, isMap := p.entries(field, rv); isMap {
				p.errorf(kv.line, field, "SkyPilot's storage form ({source, mode}) is not supported: baton copies a local file or directory into the version's bundle; write %s: ./local/path", kv.key)
				continue
			}
		}
		src, ok := p.str(field, kv.value, kv.line, "a local file or directory path")
		if !ok {
			continue
		}
		switch {
		case src == "":
			p.errorf(lineAt(kv.value, kv.line), field, "source is empty; give a local file or directory path")
		case remoteSchemeRE.MatchString(src):
			p.errorf(lineAt(kv.value, kv.line), field, "source %q is remote: baton copies only local files and directories (./data, /home/me/model) into the version's bundle; fetch remote data in setup instead", abbreviate(src))
		case strings.ContainsRune(src, 0) || len(src) > 4096:
			p.errorf(lineAt(kv.value, kv.line), field, "source must be a path of at most 4096 bytes without NUL bytes")
		default:
			mounts[kv.key] = src
		}
	}
	return mounts
}
