package rules_test

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/rules"
)

type classifyCase struct {
	line             int
	host             string
	port             int
	path             string
	vendor, category string
}

// readClassifyCases parses testdata/classify.txt: "target port path vendor
// category" per line, "-" for no path, # comments.
func readClassifyCases(tb testing.TB) []classifyCase {
	tb.Helper()
	f, err := os.Open("testdata/classify.txt")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var cases []classifyCase
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 5 {
			tb.Fatalf("classify.txt:%d: got %d fields; want 5 (target port path vendor category)", n, len(fields))
		}
		port, err := strconv.Atoi(fields[1])
		if err != nil {
			tb.Fatalf("classify.txt:%d: bad port: %v", n, err)
		}
		c := classifyCase{line: n, host: fields[0], port: port, path: fields[2], vendor: fields[3], category: fields[4]}
		if c.path == "-" {
			c.path = ""
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return cases
}

func TestClassify(t *testing.T) {
	p := loadDefault(t)
	seen := map[string]bool{}
	for _, tc := range readClassifyCases(t) {
		seen[tc.category] = true
		t.Run(strconv.Itoa(tc.line)+":"+tc.host, func(t *testing.T) {
			// Classification does not depend on the time; decide before the
			// first cut-off.
			req := rules.Request{Host: tc.host, Port: tc.port, Path: tc.path, Time: salesCutoff.Add(-time.Hour)}
			d := p.Decide(req)
			if d.Vendor != tc.vendor || d.Category != tc.category {
				t.Errorf("Decide(%q, port %d, path %q) = %s/%s (pattern %q); want %s/%s",
					tc.host, tc.port, tc.path, d.Vendor, d.Category, d.Pattern, tc.vendor, tc.category)
			}
			if c := p.Classes[d.Class]; c.Vendor != d.Vendor || c.Category != d.Category {
				t.Errorf("Classes[%d] = %v; want it to match the decision's %s/%s", d.Class, c, d.Vendor, d.Category)
			}
			if (d.Pattern == "") != (d.Vendor == rules.NoVendor) {
				t.Errorf("Pattern = %q for vendor %q; want a pattern exactly when classified", d.Pattern, d.Vendor)
			}
		})
	}
	for _, c := range append(p.Catalogs[0].Categories, rules.NoVendor) {
		if !seen[c] {
			t.Errorf("classify.txt has no case for category %q", c)
		}
	}
}

type hostCase struct {
	line    int
	in      string
	want    string // "" when CanonicalHost must fail
	invalid bool
}

// readHostCases parses testdata/hosts.txt: "host canonical" per line, where
// canonical is "error" for a host that has none, a field starting with '"'
// is a Go string literal, and # starts a comment line.
func readHostCases(tb testing.TB) []hostCase {
	tb.Helper()
	var cases []hostCase
	for _, l := range readFields(tb, "testdata/hosts.txt", 2) {
		c := hostCase{line: l.line, in: l.fields[0], want: l.fields[1]}
		if c.want == "error" {
			c.want, c.invalid = "", true
		}
		cases = append(cases, c)
	}
	return cases
}

type fieldLine struct {
	line   int
	fields []string
}

// readFields reads a testdata table of n fields per line, split at spaces;
// a field that starts with '"' is a Go string literal up to its closing
// quote, and lines that are empty or start with # are skipped.
func readFields(tb testing.TB, file string, n int) []fieldLine {
	tb.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	var out []fieldLine
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var fields []string
		for line != "" {
			var f string
			if line[0] == '"' {
				q, err := strconv.QuotedPrefix(line)
				if err != nil {
					tb.Fatalf("%s:%d: %v", file, i+1, err)
				}
				f, _ = strconv.Unquote(q)
				line = line[len(q):]
			} else {
				end := strings.IndexAny(line, " \t")
				if end < 0 {
					end = len(line)
				}
				f, line = line[:end], line[end:]
			}
			fields = append(fields, f)
			line = strings.TrimLeft(line, " \t")
		}
		if len(fields) != n {
			tb.Fatalf("%s:%d: got %d fields; want %d", file, i+1, len(fields), n)
		}
		out = append(out, fieldLine{line: i + 1, fields: fields})
	}
	return out
}

func TestCanonicalHost(t *testing.T) {
	p := loadDefault(t)
	for _, tc := range readHostCases(t) {
		got, err := rules.CanonicalHost(tc.in)
		if (err != nil) != tc.invalid || got != tc.want {
			t.Errorf("hosts.txt:%d: CanonicalHost(%q) = %q, %v; want %q (error: %v)", tc.line, tc.in, got, err, tc.want, tc.invalid)
		}
		if err != nil && !strings.Contains(err.Error(), strconv.Quote(tc.in)) {
			t.Errorf("hosts.txt:%d: CanonicalHost(%q) error %q does not name the host", tc.line, tc.in, err)
		}
		// The proxy relies on Decide to flag what it must refuse.
		for _, path := range []string{"", "/"} {
			d := p.Decide(rules.Request{Host: tc.in, Port: 443, Path: path, Time: updatesCutoff})
			if d.Invalid != tc.invalid {
				t.Errorf("hosts.txt:%d: Decide(%q, path %q).Invalid = %v; want %v", tc.line, tc.in, path, d.Invalid, tc.invalid)
			}
			if tc.invalid && d.Class != 0 {
				t.Errorf("hosts.txt:%d: Decide(%q) = %s/%s; want unclassified", tc.line, tc.in, d.Vendor, d.Category)
			}
		}
	}
}
