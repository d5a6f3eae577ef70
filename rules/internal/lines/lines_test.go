package lines

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestIndexLines(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want Index
	}{
		{
			name: "tricky",
			src: `# a comment with key = "value" and [table] and [[rule]]
name = "x = [y"   # '=' and '[' inside a string
description = """
[[rule]]
name = "inside a multi-line string"
"""
catalogs = [
  "a.toml", # a comment with ] in it
  "k = v.toml",
  "b[1].toml",
]
timezone = 'UTC' # [not a table]

[[rule]]
name = "first"
hosts = ["a.example.com",
  "b.example.com"]
reason = "has = and [ and an escaped \" quote ["
action = "block"

[[ rule ]] # second, spaced
name = "second"
reason = '''
literal [[rule]]
action = "x"
'''
action = "log"
[section]
key = 1
[[rule]]
"name" = "third"
categories = [ "a", "b" ] # ]]
action = "allow"
`,
			want: Index{
				"name": 2, "description": 3, "catalogs": 7, "timezone": 12,
				"rule[0]": 14, "rule[0].name": 15, "rule[0].hosts": 16, "rule[0].reason": 18, "rule[0].action": 19,
				"rule[1]": 21, "rule[1].name": 22, "rule[1].reason": 23, "rule[1].action": 27,
				"section": 28, "section.key": 29,
				"rule[2]": 30, "rule[2].name": 31, "rule[2].categories": 32, "rule[2].action": 33,
			},
		},
		{
			name: "multi-line strings closing mid-line",
			src: `a = """one
two"""
c = """x""" # [
d = [ """
]""", '''[''' ]
e = 2
f = 'C:\' # a literal string has no escapes [
g = 3
`,
			want: Index{"a": 1, "c": 3, "d": 4, "e": 6, "f": 7, "g": 8},
		},
		{
			name: "CRLF",
			src:  "name = \"x\"\r\n[[rule]]\r\nname = \"a\"\r\naction = \"log\"\r\n",
			want: Index{"name": 1, "rule[0]": 2, "rule[0].name": 3, "rule[0].action": 4},
		},
		{
			// A string that ends in an escaped backslash is closed by the
			// quote after it.
			name: "escaped backslash",
			src:  "paths = [\"C:\\\\\", \"D:\\\\\"]\n[[rule]]\nname = \"a\"\n",
			want: Index{"paths": 1, "rule[0]": 2, "rule[0].name": 3},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v map[string]any
			if _, err := toml.Decode(tc.src, &v); err != nil {
				t.Fatalf("test input is not valid TOML: %v", err)
			}
			got := Parse(tc.src)
			if !maps.Equal(got, tc.want) {
				t.Errorf("Parse:\ngot  %v\nwant %v", sortedLines(got), sortedLines(tc.want))
			}
		})
	}
}

func sortedLines(idx Index) string {
	keys := slices.Sorted(maps.Keys(idx))
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + ":" + strconv.Itoa(idx[k]) + " ")
	}
	return b.String()
}

func TestLineIndexLine(t *testing.T) {
	idx := Parse("timezone = \"UTC\"\n[[rule]]\nname = \"a\"\n[[rule]]\nname = \"b\"\nuntil = 2024-01-01\n")
	tests := []struct {
		key  string
		want int
	}{
		{"timezone", 1},
		{"rule[0]", 2},
		{"rule[0].name", 3},
		{"rule[1].until", 6},
		{"rule[1].from", 4},        // not written: the rule's own line
		{"rule[1].hosts.extra", 4}, // nearest enclosing table
		{"rule[7].name", 0},
		{"mode", 0},
		{"", 0},
	}
	for _, tc := range tests {
		if got := idx.Line(tc.key); got != tc.want {
			t.Errorf("Line(%q) = %d; want %d", tc.key, got, tc.want)
		}
	}
}

// TestQuotedTableNames: a quoted table name is indexed as the key the
// decoder reports it by, the empty one included, so that a problem in it
// has a line (found by FuzzLoad).
func TestQuotedTableNames(t *testing.T) {
	idx := Parse("name = \"x\"\n[\"\"]\na = 1\n[\"weird\"]\nb = 2\n[['rule']]\nc = 3\n")
	for key, want := range map[string]int{"": 2, ".a": 2, "weird": 4, "weird.b": 5, "rule[0]": 6, "rule[0].c": 7} {
		if got := idx.Line(key); got != want {
			t.Errorf("Line(%q) = %d; want %d", key, got, want)
		}
	}
}
