package protocol

import (
	"fmt"
	"regexp"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// YAML helpers: running the parser, following anchors and aliases, and
// reading mappings key by key with their lines.

var dupKeyRE = regexp.MustCompile(`already defined at \[([0-9]+):[0-9]+\]`)

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

// Visit implements ast.Visitor; it records anchors so aliases can be resolved.
func (p *taskParser) Visit(n ast.Node) ast.Visitor {
	if a, ok := n.(*ast.AnchorNode); ok && a.Name != nil && a.Name.GetToken() != nil {
		name := a.Name.GetToken().Value
		p.anchors[name] = append(p.anchors[name], a)
	}
	return p
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

// isNull reports whether a value is missing or null (after aliases).
func (p *taskParser) isNull(n ast.Node) bool {
	r, _ := p.resolve(n)
	return r == nil
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
		key, ok := p.keyText(mv.Key)
		if !ok {
			k, _ := p.resolve(mv.Key)
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

// keyText is the text of a mapping key that is a string, number or boolean.
func (p *taskParser) keyText(n ast.Node) (string, bool) {
	k, _ := p.resolve(n)
	switch kv := k.(type) {
	case *ast.StringNode:
		return kv.Value, true
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode:
		return kv.GetToken().Value, true
	}
	return "", false
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
