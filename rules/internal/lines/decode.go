package lines

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// KeyPath turns a TOML key into our key path, numbering array-of-table
// elements in order of appearance ("rule.nmae" in the third [[rule]] becomes
// "rule[2].nmae"). The decoder does not say which element a key was in, so
// the element is found by the line index: the first element that has the
// key and was not claimed by an earlier report of the same key.
func KeyPath(k toml.Key, lines Index, claimed map[string]bool) string {
	if len(k) < 2 {
		return strings.Join(k, ".")
	}
	table, rest := k[0], strings.Join(k[1:], ".")
	if _, isArray := lines[table+"[0]"]; !isArray {
		return strings.Join(k, ".")
	}
	best := ""
	for i := 0; ; i++ {
		elem := table + "[" + strconv.Itoa(i) + "]"
		if _, ok := lines[elem]; !ok {
			break
		}
		if _, ok := lines[elem+"."+rest]; ok && !claimed[elem+"."+rest] {
			best = elem + "." + rest
			claimed[best] = true
			break
		}
	}
	if best == "" {
		return strings.Join(k, ".")
	}
	return best
}

var typeErrLine = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// DecodeError positions an error of toml.Decode of data: a syntax error at
// its line, a type error ("incompatible types") at the line its message
// names with the key it names; line is 0 when none is known.
func DecodeError(data string, err error) (line int, msg string) {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		line = pe.Position.Line
		if start := pe.Position.Start; start > 0 && start <= len(data) {
			// The byte offset, not the library's line count, which is
			// one short for an error at the end of the input (an escape
			// cut off by it: line 0 on the first line).
			line = 1 + strings.Count(data[:start], "\n")
		}
		return line, pe.Message
	}
	if m := typeErrLine.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n, fmt.Sprintf("%s: %s", m[2], m[3])
	}
	return 0, strings.TrimPrefix(err.Error(), "toml: ")
}
