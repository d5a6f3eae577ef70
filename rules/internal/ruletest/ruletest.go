// Package ruletest holds what the tests of the policy loader and of the
// configuration loader share: files that carry their expected problems in
// "# want:" lines, and the comparison of problem lists.
package ruletest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/rules"
)

// WantLines returns the text after "# want: " on each line of file that
// has it.
func WantLines(tb testing.TB, file string) []string {
	tb.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	var want []string
	for _, line := range strings.Split(string(data), "\n") {
		if s, ok := strings.CutPrefix(line, "# want: "); ok {
			want = append(want, s)
		}
	}
	return want
}

// DiffLines reports got and want, one per line, when they differ.
func DiffLines(tb testing.TB, what string, got, want []string) {
	tb.Helper()
	show := func(lines []string) string {
		if len(lines) == 0 {
			return "(none)"
		}
		return strings.Join(lines, "\n\t")
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		tb.Errorf("%s:\ngot:\n\t%s\nwant:\n\t%s", what, show(got), show(want))
	}
}

// Problems returns the String form of each problem in a *rules.ConfigError.
func Problems(tb testing.TB, err error) []string {
	tb.Helper()
	var ce *rules.ConfigError
	if !errors.As(err, &ce) {
		tb.Fatalf("error %v (%T) is not a *rules.ConfigError", err, err)
	}
	out := make([]string, len(ce.Problems))
	for i, p := range ce.Problems {
		out[i] = p.String()
	}
	return out
}

// CheckBadFiles runs load on every file of testdata/bad in the test's
// package, each of which breaks one validation rule, and checks that it
// fails with exactly the problems of the file's "# want:" lines, in order,
// and with nothing loaded.
func CheckBadFiles(t *testing.T, load func(file string) (loaded bool, err error)) {
	t.Helper()
	files, err := filepath.Glob("testdata/bad/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad files in testdata/bad: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			want := WantLines(t, file)
			if len(want) == 0 {
				t.Fatalf("%s has no # want: line", file)
			}
			loaded, err := load(filepath.ToSlash(file))
			if err == nil {
				t.Fatalf("Load(%s) error = nil; want %q", file, want)
			}
			if loaded {
				t.Errorf("Load(%s) loaded something; want nil with an error", file)
			}
			got := Problems(t, err)
			DiffLines(t, "problems", got, want)
			if msg := err.Error(); msg != strings.Join(got, "\n") {
				t.Errorf("Error() = %q; want the problems one per line", msg)
			}
		})
	}
}
