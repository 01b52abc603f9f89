package bundle

import (
	"bytes"
	"path"
	"strings"
)

const (
	skyignoreName = ".skyignore"
	gitignoreName = ".gitignore"
)

// rule is one pattern line of a .skyignore or .gitignore file, parsed as
// git's parse_path_pattern does.
type rule struct {
	// base is the directory of the file the rule came from, relative to
	// the walked root with forward slashes; "" at the root.
	base string
	// pattern is the glob, without its "!", its trailing "/" and (when
	// anchored) its leading "/".
	pattern string
	negate  bool
	// dirOnly: the line ended in "/", so it matches directories only.
	dirOnly bool
	// basename: the line had no "/" other than a trailing one, so it
	// matches the last element of a path at any depth under base.
	// Otherwise it matches the whole path relative to base.
	basename bool
}

// parseRules parses an ignore file found in directory base.
func parseRules(data []byte, base string) []rule {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var rules []rule
	for _, line := range strings.Split(string(data), "\n") {
		// git keeps a '\r'; a .skyignore written on Windows would then
		// match nothing, so take it off.
		line = strings.TrimSuffix(line, "\r")
		line = trimTrailingSpaces(line)
		if line == "" || line[0] == '#' {
			continue
		}
		r := rule{base: base}
		if line[0] == '!' {
			r.negate = true
			line = line[1:]
		}
		if strings.HasSuffix(line, "/") {
			r.dirOnly = true
			line = line[:len(line)-1]
		}
		r.basename = !strings.Contains(line, "/")
		if !r.basename {
			line = strings.TrimPrefix(line, "/")
		}
		r.pattern = line
		rules = append(rules, r)
	}
	return rules
}

// trimTrailingSpaces drops the spaces at the end of s, except one quoted
// with a backslash (git's trim_trailing_spaces).
func trimTrailingSpaces(s string) string {
	lastSpace := -1
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ':
			if lastSpace < 0 {
				lastSpace = i
			}
		case '\\':
			i++
			if i == len(s) {
				return s
			}
			lastSpace = -1
		default:
			lastSpace = -1
		}
	}
	if lastSpace >= 0 {
		return s[:lastSpace]
	}
	return s
}

// ignored reports whether rel (relative to the walked root, forward
// slashes) is left out by rules, which hold the rules of rel's ancestors'
// ignore files, the root's first. The last rule that matches decides, so
// a deeper file overrides a shallower one and "!" re-includes. The walk
// never enters an ignored directory, so, as in git, nothing below one can
// be re-included.
func ignored(rules []rule, rel string, isDir bool) bool {
	for i := len(rules) - 1; i >= 0; i-- {
		if rules[i].match(rel, isDir) {
			return !rules[i].negate
		}
	}
	return false
}

func (r *rule) match(rel string, isDir bool) bool {
	if r.dirOnly && !isDir {
		return false
	}
	if r.basename {
		return wildmatch(r.pattern, path.Base(rel))
	}
	name := rel
	if r.base != "" {
		var ok bool
		name, ok = strings.CutPrefix(rel, r.base+"/")
		if !ok {
			return false
		}
	}
	return wildmatch(r.pattern, name)
}
