package protocol

import (
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// The resources section: cpus and memory (quantities, read by the number
// reader), accelerators (or gpus) and ports.

var accNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func (p *taskParser) parseResources(es []entry, res *Resources) {
	var acc *entry // the first of accelerators and gpus
	for i, e := range es {
		f := join("resources", e.key)
		p.mark(f, e.line)
		switch {
		case e.key == "cpus":
			res.CPUs, _ = p.quantity(f, e.value, e.line, cpusRule)
		case e.key == "memory":
			res.Memory, _ = p.quantity(f, e.value, e.line, memoryRule)
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
			p.cloudKey(f, e)
		default:
			p.unknownKey(e, "resources", resourcesKeys)
		}
	}
}

// accelForms lists the ways to write accelerators.
const accelForms = "use a name like A100, A100:2, a mapping {A100: 1, H100: 1} (any one) or a list [A100:1, H100:1] (in order of preference)"

// accelerators reads `A100`, `A100:2`, a mapping {A100: 1, H100: 1} (any one
// of them, sorted by name) or a list [A100:1, H100] (in order).
func (p *taskParser) accelerators(field string, n ast.Node, line int) AcceleratorRequest {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	var req AcceleratorRequest
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
		req.Options = p.accelList(field, v, line)
	default:
		p.errorf(line, field, "got %s; %s", describe(r), accelForms)
		return req
	}
	if len(req.Options) == 0 {
		if !p.hasErrorAt(field) {
			p.errorf(line, field, "lists no accelerators; %s, or remove it", accelForms)
		}
		return AcceleratorRequest{}
	}
	if len(req.Options) > maxAccelOptions {
		p.errorf(line, field, "lists %d accelerators; list at most %d alternatives", len(req.Options), maxAccelOptions)
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

// maxAccelOptions bounds the alternatives resources.accelerators lists.
const maxAccelOptions = 16

// accelList reads a list of accelerators, each `A100`, `A100:2` or a
// one-key mapping `A100: 2`.
func (p *taskParser) accelList(field string, v *ast.SequenceNode, line int) []AcceleratorOption {
	var out []AcceleratorOption
	for _, item := range v.Values {
		ir, _ := p.resolve(item)
		il := lineAt(item, line)
		switch iv := ir.(type) {
		case *ast.StringNode:
			if o, ok := p.accelString(field, iv.Value, il); ok {
				out = append(out, o)
			}
		case *ast.MappingNode:
			es, _ := p.entries(field, iv)
			if len(es) != 1 {
				p.errorf(il, field, "each list item must name one accelerator (e.g. - A100: 1), got %d", len(es))
				continue
			}
			if o, ok := p.accelEntry(field, es[0]); ok {
				out = append(out, o)
			}
		default:
			p.errorf(il, field, "list items must be like A100 or A100:2, got %s", describe(ir))
		}
	}
	return out
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
		if x, ok := intOf(v); ok && x >= 1 && x <= MaxGPUsPerAgent {
			return AcceleratorOption{Name: name, Count: int(x)}, true
		}
		p.errorf(line, field, "%s: %s is not a valid count; use a whole number from 1 to %d (e.g. %s: 1)", name, v.GetToken().Value, MaxGPUsPerAgent, name)
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
		if n, err := strconv.Atoi(count); err == nil && n >= 1 && n <= MaxGPUsPerAgent {
			return AcceleratorOption{Name: name, Count: n}, true
		}
		p.errorf(line, field, "%q has count %s; use a whole number from 1 to %d (use %s or %s:2)", s, count, MaxGPUsPerAgent, name, name)
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
	if !accNameRE.MatchString(name) || len(name) > 128 {
		p.errorf(line, field, "%q is not an accelerator name; use up to 128 letters, digits, '-', '_' and '.' (e.g. A100, H100-80GB)", abbreviate(name))
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
