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

func TestCanonicalHost(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"s00.upd.kaspersky.com", "s00.upd.kaspersky.com", true},
		{"S00.UPD.Kaspersky.COM.", "s00.upd.kaspersky.com", true},
		{"[2a03:2480:8000::1]", "2a03:2480:8000::1", true},
		{"[::1]", "::1", true},
		{"bücher.kaspersky.com", "xn--bcher-kva.kaspersky.com", true},
		{"BÜCHER.kaspersky.com.", "xn--bcher-kva.kaspersky.com", true},
		{"кaspersky.com", "xn--aspersky-l9g.com", true},
		{"ｋａｓｐｅｒｓｋｙ.com", "kaspersky.com", true},
		{"kaspersky.com。", "kaspersky.com", true},
		{"", "", false},
		{".", "", false},
		{"[]", "", false},
		{strings.Repeat("a", 256), "", false},
	}
	for _, tc := range tests {
		got, err := rules.CanonicalHost(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("CanonicalHost(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
