package protocol

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// The top level of a task file, its envs, and the --env overrides.

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
		spec.Envs = p.parseEnvs(e)
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
		p.fileEnvs = append(p.fileEnvs, kv.key)
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
// invalid override names, required envs that no override fills, and envs
// past the limits.
func (p *taskParser) applyEnvOverrides(spec *TaskSpec, overrides map[string]string) {
	keys := make([]string, 0, len(overrides))
	for k := range overrides {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var applied []string // valid override names, sorted
	for _, k := range keys {
		if err := ValidateEnvName(k); err != nil {
			p.errs = append(p.errs, &SpecError{File: p.file, Line: 0, Field: overrideField(k),
				Message: err.Error() + "; write --env NAME=VALUE"})
			continue
		}
		if spec.Envs == nil {
			spec.Envs = make(map[string]string, len(overrides))
		}
		spec.Envs[k] = overrides[k]
		applied = append(applied, k)
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
	p.checkEnvLimits(spec.Envs, p.envSources(overrides, applied))
}

// overrideField is the Field of a problem with the override of name.
func overrideField(name string) string {
	if !plainKeyRE.MatchString(name) {
		name = strconv.Quote(name)
	}
	return "--env " + name
}

// envSource is one env and where its value came from: a line of the file,
// or 0 for an --env override.
type envSource struct {
	name string
	line int
}

// envSources lists the envs: the file's in document order (those no
// override replaced, with a value), then the applied overrides.
func (p *taskParser) envSources(overrides map[string]string, applied []string) []envSource {
	out := make([]envSource, 0, len(p.fileEnvs)+len(applied))
	for _, k := range p.fileEnvs {
		_, overridden := overrides[k]
		_, required := p.requiredEnvs[k]
		if !overridden && !required {
			out = append(out, envSource{name: k, line: p.lines[join("envs", k)]})
		}
	}
	for _, k := range applied {
		out = append(out, envSource{name: k})
	}
	return out
}

// envErrorf reports a problem with one env at its source.
func (p *taskParser) envErrorf(src envSource, format string, args ...any) {
	if src.line == 0 {
		p.errs = append(p.errs, &SpecError{File: p.file, Field: overrideField(src.name), Message: fmt.Sprintf(format, args...)})
		return
	}
	p.errorf(src.line, join("envs", src.name), format, args...)
}

// envAdvice ends the messages about env sizes.
const envAdvice = "keep large values in a file in workdir and read it in run"

// checkEnvLimits checks the envs of a task, the file's and the overrides
// together, against MaxEnvValueBytes, MaxEnvs and MaxEnvsBytes. A count or
// total over its limit is reported at the env that passes it.
func (p *taskParser) checkEnvLimits(envs map[string]string, srcs []envSource) {
	bad := false
	for _, src := range srcs {
		v, ok := envs[src.name]
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
		p.envErrorf(srcs[MaxEnvs], "is env %d of %d; a task has at most %d envs, the file's and --env's together (put the rest in a file in workdir and read it in run)",
			MaxEnvs+1, len(srcs), MaxEnvs)
		return
	}
	total, past := 0, -1
	for i, src := range srcs {
		if total += len(src.name) + len(envs[src.name]); total > MaxEnvsBytes && past < 0 {
			past = i
		}
	}
	if past >= 0 {
		p.envErrorf(srcs[past], "the envs' names and values come to %d bytes, the file's and --env's together, and pass the limit of %d here (%s)",
			total, MaxEnvsBytes, envAdvice)
	}
}
