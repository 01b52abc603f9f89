package bundle

import "strings"

// wildmatch reports whether text matches the gitignore glob pattern, as
// git's wildmatch() with WM_PATHNAME does: '*' and '?' never match '/',
// "**" between slashes (or at either end) matches any number of
// directories, "[...]" is a class ("[!...]" or "[^...]" negated, with
// ranges and [:alpha:]-style names), and a backslash quotes the next
// character. It is a port of git's wildmatch.c (dowild), kept close to the
// original so that the two can be compared line by line; the tests compare
// the results with git itself.
func wildmatch(pattern, text string) bool {
	return dowild(pattern, 0, text, 0) == wmMatch
}

const (
	wmMatch = iota
	wmNoMatch
	wmAbortAll
	wmAbortToStarStar
)

// at is s[i], or 0 past its end (C's terminating NUL).
func at(s string, i int) byte {
	if i < len(s) {
		return s[i]
	}
	return 0
}

func isGlobSpecial(c byte) bool {
	return c == '*' || c == '?' || c == '[' || c == '\\'
}

// dowild matches p[pi:] against t[ti:]. The comments name the C code's
// variables: p_ch is pch, t_ch is tch.
func dowild(p string, pi int, t string, ti int) int {
	start := pi
	for ; pi < len(p); pi, ti = pi+1, ti+1 {
		pch := p[pi]
		tch := at(t, ti)
		if tch == 0 && pch != '*' {
			return wmAbortAll
		}
		switch pch {
		case '\\':
			// Literal match with the next character; a trailing
			// backslash matches nothing.
			pi++
			if at(p, pi) != tch {
				return wmNoMatch
			}
		case '?':
			if tch == '/' {
				return wmNoMatch
			}
		case '*':
			r, done, npi, nti := matchStar(p, pi, t, ti, start)
			if done {
				return r
			}
			// "*/": text now stands on its next slash, which the
			// loop consumes together with the pattern's.
			pi, ti = npi, nti
		case '[':
			r, npi := matchClass(p, pi, tch)
			if r != wmMatch {
				return r
			}
			pi = npi
		default:
			if tch != pch {
				return wmNoMatch
			}
		}
	}
	if ti < len(t) {
		return wmNoMatch
	}
	return wmMatch
}

// matchStar handles a '*' at p[pi]. It returns done with the result, or
// (for "*/") the positions from which dowild's loop goes on.
func matchStar(p string, pi int, t string, ti int, start int) (result int, done bool, npi, nti int) {
	matchSlash := false
	pi++
	if at(p, pi) == '*' {
		prev := pi - 2
		for pi++; at(p, pi) == '*'; pi++ {
		}
		next := at(p, pi)
		if (prev < start || p[prev] == '/') &&
			(next == 0 || next == '/' || (next == '\\' && at(p, pi+1) == '/')) {
			// "**/" matches nothing: try the rest of the pattern on
			// the text as it is, so that foo/**/bar matches foo/bar.
			if next == '/' && dowild(p, pi+1, t, ti) == wmMatch {
				return wmMatch, true, 0, 0
			}
			matchSlash = true
		}
	}
	if pi >= len(p) {
		// A trailing "**" matches everything; a trailing "*" only
		// what has no more slashes.
		if !matchSlash && strings.IndexByte(t[ti:], '/') >= 0 {
			return wmNoMatch, true, 0, 0
		}
		return wmMatch, true, 0, 0
	}
	if !matchSlash && p[pi] == '/' {
		// One '*' followed by a slash matches the rest of this
		// directory's name.
		slash := strings.IndexByte(t[ti:], '/')
		if slash < 0 {
			return wmNoMatch, true, 0, 0
		}
		return 0, false, pi, ti + slash
	}
	tch := at(t, ti)
	for tch != 0 {
		// Before a literal, skip the text that can only belong to
		// the star (not past a slash unless the star matches them).
		if !isGlobSpecial(p[pi]) {
			pch := p[pi]
			for ; ti < len(t) && (matchSlash || t[ti] != '/'); ti++ {
				if t[ti] == pch {
					break
				}
			}
			tch = at(t, ti)
			if tch != pch {
				return wmNoMatch, true, 0, 0
			}
		}
		if m := dowild(p, pi, t, ti); m != wmNoMatch {
			if !matchSlash || m != wmAbortToStarStar {
				return m, true, 0, 0
			}
		} else if !matchSlash && tch == '/' {
			return wmAbortToStarStar, true, 0, 0
		}
		ti++
		tch = at(t, ti)
	}
	return wmAbortAll, true, 0, 0
}

// matchClass matches the class starting with the '[' at p[pi] against
// tch. It returns wmMatch and the index of the closing ']', or the
// failure.
func matchClass(p string, pi int, tch byte) (int, int) {
	pi++
	pch := at(p, pi)
	if pch == '^' {
		pch = '!'
	}
	negated := pch == '!'
	if negated {
		pi++
		pch = at(p, pi)
	}
	var prev byte
	matched := false
	for {
		switch {
		case pch == 0:
			return wmAbortAll, 0
		case pch == '\\':
			pi++
			pch = at(p, pi)
			if pch == 0 {
				return wmAbortAll, 0
			}
			if tch == pch {
				matched = true
			}
		case pch == '-' && prev != 0 && at(p, pi+1) != 0 && at(p, pi+1) != ']':
			pi++
			pch = p[pi]
			if pch == '\\' {
				pi++
				pch = at(p, pi)
				if pch == 0 {
					return wmAbortAll, 0
				}
			}
			if tch <= pch && tch >= prev {
				matched = true
			}
			pch = 0 // so that prev becomes 0
		case pch == '[' && at(p, pi+1) == ':':
			s := pi + 2
			for pi = s; at(p, pi) != 0 && p[pi] != ']'; pi++ {
			}
			if at(p, pi) == 0 {
				return wmAbortAll, 0
			}
			if n := pi - s - 1; n < 0 || p[pi-1] != ':' {
				// No ":]": an ordinary '[' in the set.
				pi = s - 2
				pch = '['
				if tch == pch {
					matched = true
				}
			} else {
				in, ok := inClass(p[s:s+n], tch)
				if !ok {
					return wmAbortAll, 0 // malformed [:class:]
				}
				if in {
					matched = true
				}
				pch = 0
			}
		case tch == pch:
			matched = true
		}
		prev = pch
		pi++
		pch = at(p, pi)
		if pch == ']' {
			break
		}
	}
	if matched == negated || tch == '/' {
		return wmNoMatch, 0
	}
	return wmMatch, pi
}

// inClass reports whether c is in the named POSIX class (ASCII only, as
// git's). ok is false for an unknown name.
func inClass(name string, c byte) (in, ok bool) {
	upper := 'A' <= c && c <= 'Z'
	lower := 'a' <= c && c <= 'z'
	digit := '0' <= c && c <= '9'
	alpha := upper || lower
	graph := 0x21 <= c && c <= 0x7e
	switch name {
	case "alnum":
		return alpha || digit, true
	case "alpha":
		return alpha, true
	case "blank":
		return c == ' ' || c == '\t', true
	case "cntrl":
		return c < 0x20 || c == 0x7f, true
	case "digit":
		return digit, true
	case "graph":
		return graph, true
	case "lower":
		return lower, true
	case "print":
		return graph || c == ' ', true
	case "punct":
		return graph && !alpha && !digit, true
	case "space":
		return c == ' ' || ('\t' <= c && c <= '\r'), true
	case "upper":
		return upper, true
	case "xdigit":
		return digit || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F'), true
	}
	return false, false
}
