// Package lines finds where keys are written in a TOML file, for messages
// that name FILE:LINE: the decoder keeps positions to itself.
package lines

import (
	"strconv"
	"strings"
)

// Index maps key paths such as "timezone", "rule[2]" or "rule[2].until"
// to the line where they are written. The TOML decoder keeps positions to
// itself (and shares one position between all elements of an array of
// tables), so semantic errors find their line here. Keys it cannot place
// (inline tables, dotted keys) are reported by key path instead.
type Index map[string]int

// Parse indexes the keys of a TOML document.
func Parse(src string) Index {
	idx := Index{}
	counts := map[string]int{}
	prefix := ""
	depth := 0    // open [ or { of a multi-line value
	inMulti := "" // closing delimiter of an open multi-line string
	for n, line := range strings.Split(src, "\n") {
		lineNo := n + 1
		if inMulti != "" {
			if i := closeString(line, inMulti); i >= 0 {
				line = line[i:]
				inMulti = ""
			} else {
				continue
			}
		} else if depth == 0 {
			t := strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(t, "[["):
				name := strings.Trim(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(stripComment(t[2:])), "]]")), `"'`)
				prefix = name + "[" + strconv.Itoa(counts[name]) + "]"
				counts[name]++
				idx.set(prefix, lineNo)
				continue
			case strings.HasPrefix(t, "["):
				// A quoted name is the key the decoder reports, as
				// for keys below: [""] is the table "".
				prefix = strings.Trim(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(stripComment(t[1:])), "]")), `"'`)
				idx.set(prefix, lineNo)
				continue
			}
			if key, _, ok := strings.Cut(t, "="); ok && t != "" && t[0] != '#' {
				key = strings.Trim(strings.TrimSpace(key), `"'`)
				if prefix != "" {
					key = prefix + "." + key
				}
				idx.set(key, lineNo)
				_, line, _ = strings.Cut(line, "=")
			}
		}
		// Track brackets and strings of the value so that the lines of a
		// multi-line array are not read as keys.
		for i := 0; i < len(line); i++ {
			switch c := line[i]; c {
			case '#':
				i = len(line)
			case '[', '{':
				depth++
			case ']', '}':
				if depth > 0 {
					depth--
				}
			case '"', '\'':
				delim := string(c)
				if strings.HasPrefix(line[i:], strings.Repeat(delim, 3)) {
					delim = strings.Repeat(delim, 3)
				}
				end := closeString(line[i+len(delim):], delim)
				if end < 0 {
					if len(delim) == 3 {
						inMulti = delim
					}
					i = len(line)
					break
				}
				i += len(delim) + end - 1
			}
		}
	}
	return idx
}

// closeString returns the index just past the delimiter that closes a
// string whose body starts at s, or -1 if it does not close on this line.
// Basic strings (double quotes) honour backslash escapes; literal strings
// (single quotes) have none.
func closeString(s, delim string) int {
	for i := 0; i < len(s); i++ {
		if delim[0] == '"' && s[i] == '\\' {
			i++
			continue
		}
		if strings.HasPrefix(s[i:], delim) {
			return i + len(delim)
		}
	}
	return -1
}

func (idx Index) set(key string, line int) {
	if _, ok := idx[key]; !ok {
		idx[key] = line
	}
}

// Line returns the line of key, or of the nearest enclosing table, or 0.
func (idx Index) Line(key string) int {
	for {
		if l, ok := idx[key]; ok {
			return l
		}
		i := strings.LastIndexAny(key, ".")
		if i < 0 {
			return 0
		}
		key = key[:i]
	}
}

func stripComment(s string) string {
	if i := strings.IndexByte(s, '#'); i >= 0 {
		return s[:i]
	}
	return s
}
