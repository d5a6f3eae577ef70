package rules_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/rules"
)

// sigCase is one line of a signature decision table: "method host port
// path vendor/category match signature", "-" for an empty field.
type sigCase struct {
	line                    int
	req                     rules.Request
	class, match, signature string
}

func readSigCases(tb testing.TB, file string) []sigCase {
	tb.Helper()
	var cases []sigCase
	dash := func(s string) string {
		if s == "-" {
			return ""
		}
		return s
	}
	for _, l := range readFields(tb, file, 7) {
		f := l.fields
		port, err := strconv.Atoi(f[2])
		if err != nil {
			tb.Fatalf("%s:%d: port %q: %v", file, l.line, f[2], err)
		}
		cases = append(cases, sigCase{
			line:  l.line,
			req:   rules.Request{Method: dash(f[0]), Host: f[1], Port: port, Path: dash(f[3])},
			class: f[4], match: dash(f[5]), signature: dash(f[6]),
		})
	}
	return cases
}

// checkSigCases decides every case of file under p, before and after at,
// and checks the class, what matched and the signature named, in Decide
// and Explain alike.
func checkSigCases(t *testing.T, p *rules.Policy, file string, at time.Time) {
	t.Helper()
	for _, tc := range readSigCases(t, file) {
		tc.req.Time = at
		d := p.Decide(tc.req)
		e := p.Explain(tc.req)
		for _, got := range []rules.Decision{d, e.Decision} {
			if class := got.Vendor + "/" + got.Category; class != tc.class || got.MatchedBy() != tc.match || got.Signature != tc.signature || got.Invalid {
				t.Errorf("%s:%d: %s %s:%d %q = %s matched by %q, signature %q (invalid %v); want %s, %q, %q",
					file, tc.line, tc.req.Method, tc.req.Host, tc.req.Port, tc.req.Path,
					class, got.MatchedBy(), got.Signature, got.Invalid, tc.class, tc.match, tc.signature)
			}
		}
		// explain names the pattern that matched.
		if pat := p.SignaturePattern(d, tc.req.Path); (pat != "") != (tc.signature != "") {
			t.Errorf("%s:%d: SignaturePattern(%s, %q) = %q", file, tc.line, d.Signature, tc.req.Path, pat)
		}
	}
}

func TestSignatureDecisions(t *testing.T) {
	p := loadFile(t, "testdata/signatures.toml")
	at := time.Date(2024, 9, 29, 0, 0, 0, 0, time.UTC)
	checkSigCases(t, p, "testdata/signatures.txt", at)

	// The rules select what a signature classified as they select a host
	// the catalog classified: by vendor and category, from the instant.
	req := rules.Request{Method: "GET", Host: "mirror.corp.example", Port: 80, Path: "/acme-index/a0001.xml"}
	for _, tc := range []struct {
		at   time.Time
		want rules.Action
	}{
		{at.Add(-time.Nanosecond), rules.Allow},
		{at, rules.Block},
	} {
		req.Time = tc.at
		if d := p.Decide(req); d.Action != tc.want || d.RuleName == "" {
			t.Errorf("Decide(%s) at %s = %s by rule %q; want %s", req.Path, tc.at, d.Action, d.RuleName, tc.want)
		}
	}
}

// TestSignatureOutcomes checks that Policy.Outcomes, from which the
// metrics make their series, has the outcomes that signatures give: a
// decision of every case of the table is one, and a host rule whose host
// no catalog entry names gets the signatures' classes.
func TestSignatureOutcomes(t *testing.T) {
	p := loadFile(t, "testdata/signatures.toml")
	outcomes := map[rules.Outcome]bool{}
	for _, o := range p.Outcomes() {
		outcomes[o] = true
	}
	at := time.Date(2024, 9, 29, 0, 0, 0, 0, time.UTC)
	cases := readSigCases(t, "testdata/signatures.txt")
	cases = append(cases, sigCase{req: rules.Request{Method: "GET", Host: "lab-mirror.corp.example", Port: 80, Path: "/acme-index/a0001.xml"}})
	for _, tc := range cases {
		for _, when := range []time.Time{at.Add(-time.Second), at} {
			tc.req.Time = when
			d := p.Decide(tc.req)
			if o := (rules.Outcome{Class: d.Class, Rule: d.Rule, Action: d.Action}); !outcomes[o] {
				t.Errorf("Decide(%s %s%s) at %s = %s; not in Outcomes()", tc.req.Method, tc.req.Host, tc.req.Path, when, outcomeString(p, o))
			}
		}
	}
	tc := cases[len(cases)-1]
	tc.req.Time = at
	if d := p.Decide(tc.req); d.RuleName != "lab-mirror" || d.Category != "update" || d.Action != rules.Log {
		t.Errorf("Decide(%s%s) = %s/%s by %q, %s; want acme/update by lab-mirror, log", tc.req.Host, tc.req.Path, d.Vendor, d.Category, d.RuleName, d.Action)
	}
}

// TestKasperskySignatures checks the built-in catalog's signatures on real
// update paths on hosts that are not Kaspersky's, and on the look-alikes
// of other software, in testdata/kaspersky-signatures.txt.
func TestKasperskySignatures(t *testing.T) {
	checkSigCases(t, loadDefault(t), "testdata/kaspersky-signatures.txt", updatesCutoff)
}

// sigRegexp translates a signature path pattern, as written, into a
// regular expression over a normal-form path: an implementation of the
// syntax (docs/catalog.md#signatures) independent of the matcher's, with
// Go's (?i) for case folding. A segment may end in dots and spaces, which
// Windows servers drop.
func sigRegexp(tb testing.TB, pattern string) *regexp.Regexp {
	tb.Helper()
	const anySegs, oneSeg = `(?:/[^/]+)*`, `/[^/]+`
	var b strings.Builder
	b.WriteString(`(?i)^`)
	body := pattern
	switch {
	case !strings.Contains(pattern, "/"):
		b.WriteString(anySegs)
	case strings.HasPrefix(pattern, "*/"):
		b.WriteString(anySegs)
		body = pattern[2:]
	default:
		body = pattern[1:]
	}
	segs := strings.Split(body, "/")
	final := len(segs) > 1 && segs[len(segs)-1] == "*"
	if final {
		segs = segs[:len(segs)-1]
	}
	for _, seg := range segs {
		switch seg {
		case "**":
			b.WriteString(anySegs)
		case "*":
			b.WriteString(oneSeg)
		default:
			parts := strings.Split(seg, "*")
			for i := range parts {
				parts[i] = regexp.QuoteMeta(parts[i])
			}
			b.WriteString("/" + strings.Join(parts, `[^/]*`) + `[. ]*`)
		}
	}
	if final {
		b.WriteString(oneSeg + anySegs)
	}
	b.WriteString(`/?$`)
	return regexp.MustCompile(b.String())
}

// FuzzSignatures checks the built-in catalog's signatures against sigRegexp
// on any path, on a host that is not Kaspersky's: Decide names a signature
// exactly when one of its patterns matches the normal form of the path,
// and the first such signature in catalog order. So a signature never
// matches a path without the structure it names, the index that rules
// out most paths before any pattern is tried never rules out a match, and
// nothing panics.
func FuzzSignatures(f *testing.F) {
	p := loadDefault(f)
	type sigRe struct {
		name string
		res  []*regexp.Regexp
	}
	var sigs []sigRe
	for _, s := range p.Signatures {
		if len(s.Methods) > 0 || len(s.Ports) > 0 {
			f.Fatalf("signature %s is narrowed; this test decides GET requests on port 80 only", s.Name)
		}
		r := sigRe{name: s.Name}
		for _, pat := range s.Paths {
			r.res = append(r.res, sigRegexp(f, pat))
		}
		sigs = append(sigs, r)
	}
	for _, tc := range readSigCases(f, "testdata/kaspersky-signatures.txt") {
		f.Add(tc.req.Path)
	}
	patterns, err := os.ReadFile("testdata/sigpatterns.txt")
	if err != nil {
		f.Fatal(err)
	}
	for _, line := range strings.Split(string(patterns), "\n") {
		if fields := strings.Fields(line); len(fields) == 3 && (fields[2] == "yes" || fields[2] == "no") {
			f.Add(fields[1])
		}
	}
	f.Fuzz(func(t *testing.T, path string) {
		d := p.Decide(rules.Request{Method: "GET", Host: "fuzz.corp.example", Port: 80, Path: path, Time: updatesCutoff})
		n, err := rules.NormalizePath(path)
		if err != nil || path == "" {
			if d.Signature != "" {
				t.Fatalf("Decide(path %q) names signature %s for a path without a normal form", path, d.Signature)
			}
			return
		}
		if i := strings.IndexAny(n, "?#"); i >= 0 {
			n = n[:i]
		}
		want := ""
		for _, s := range sigs {
			for _, re := range s.res {
				if want == "" && re.MatchString(n) {
					want = s.name
				}
			}
		}
		if d.Signature != want {
			t.Fatalf("Decide(path %q, normal form %q) names signature %q; the patterns say %q", path, n, d.Signature, want)
		}
		if (want != "") != (d.Vendor == "kaspersky") {
			t.Fatalf("Decide(path %q) = %s/%s with signature %q", path, d.Vendor, d.Category, d.Signature)
		}
	})
}
