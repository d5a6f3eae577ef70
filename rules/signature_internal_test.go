package rules

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

type sigPatternCase struct {
	line          int
	pattern, path string
	want          bool
	refused       string // the expected error's words; "" if accepted
}

// readSigPatternCases parses testdata/sigpatterns.txt.
func readSigPatternCases(tb testing.TB) []sigPatternCase {
	tb.Helper()
	f, err := os.Open("testdata/sigpatterns.txt")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var cases []sigPatternCase
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		switch {
		case len(fields) >= 3 && fields[1] == "!":
			cases = append(cases, sigPatternCase{line: n, pattern: fields[0], refused: strings.Join(fields[2:], " ")})
		case len(fields) == 3 && (fields[2] == "yes" || fields[2] == "no"):
			cases = append(cases, sigPatternCase{line: n, pattern: fields[0], path: fields[1], want: fields[2] == "yes"})
		default:
			tb.Fatalf("sigpatterns.txt:%d: want \"pattern path yes|no\" or \"pattern ! error\"", n)
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return cases
}

// oneSignature compiles a matcher of one signature with one pattern.
func oneSignature(tb testing.TB, pattern string) (*sigMatcher, error) {
	toks, err := parseSigPattern(pattern)
	if err != nil {
		return nil, err
	}
	m := &sigMatcher{sigs: []compiledSig{{class: 1, name: "s"}}}
	m.add(0, pattern, toks)
	return m, nil
}

// matchPath is what Decide does with a request path: normalise it, scan
// it for anchors, and match the candidates.
func (m *sigMatcher) matchPath(tb testing.TB, raw string) (matched, candidate bool) {
	tb.Helper()
	p, err := NormalizePath(raw)
	if err != nil {
		tb.Fatalf("NormalizePath(%q): %v", raw, err)
	}
	hits := scanNormal(p, &m.idx)
	// The index may let through what no pattern matches, never the
	// other way round: the pattern is tried as if the path had every
	// literal, and then as scanPath found it.
	all := sigHits{^uint64(0), ^uint64(0), hits.end}
	return m.match(all, "GET", 80, p) != nil, m.match(hits, "GET", 80, p) != nil
}

func TestSignaturePatterns(t *testing.T) {
	for _, tc := range readSigPatternCases(t) {
		m, err := oneSignature(t, tc.pattern)
		if tc.refused != "" {
			if err == nil || !strings.Contains(err.Error(), tc.refused) {
				t.Errorf("sigpatterns.txt:%d: parse %q: error %v; want one saying %q", tc.line, tc.pattern, err, tc.refused)
			}
			continue
		}
		if err != nil {
			t.Errorf("sigpatterns.txt:%d: parse %q: %v", tc.line, tc.pattern, err)
			continue
		}
		got, cand := m.matchPath(t, tc.path)
		if got != tc.want {
			t.Errorf("sigpatterns.txt:%d: %q on %q: match %v; want %v", tc.line, tc.pattern, tc.path, got, tc.want)
		}
		if got && !cand {
			t.Errorf("sigpatterns.txt:%d: %q matches %q, but the index did not let it through", tc.line, tc.pattern, tc.path)
		}
	}
}
