package rules_test

import (
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/rules"
)

// asciiUpper upper-cases ASCII letters only: Unicode case mappings (ß → SS)
// change a name, ASCII ones never do.
func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func FuzzDecide(f *testing.F) {
	p := loadDefault(f)
	for i, tc := range readClassifyCases(f) {
		f.Add(tc.host, uint16(tc.port), tc.path, int64(i)*7*24*3600)
	}
	f.Add("", uint16(0), "", int64(0))
	f.Add("[kaspersky.com]", uint16(443), "", int64(0))
	// Times range over 2024 and 2025, both cut-offs included.
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	const span = 2 * 365 * 24 * 3600
	f.Fuzz(func(t *testing.T, host string, port uint16, path string, sec int64) {
		at := base.Add(time.Duration(((sec%span)+span)%span) * time.Second)
		req := rules.Request{Host: host, Port: int(port), Path: path, Time: at}
		d := p.Decide(req)
		if again := p.Decide(req); again != d {
			t.Fatalf("Decide(%q) not deterministic: %+v then %+v", host, d, again)
		}
		if (d.Vendor == rules.NoVendor) != (d.Category == rules.NoVendor) || (d.Class == 0) != (d.Vendor == rules.NoVendor) {
			t.Fatalf("Decide(%q) = class %d %s/%s; want vendor none iff category none iff class 0", host, d.Class, d.Vendor, d.Category)
		}
		if e := p.Explain(req); e.Decision != d {
			t.Fatalf("Explain(%q).Decision = %+v; want Decide's %+v", host, e.Decision, d)
		}
		variants := []string{asciiUpper(host)}
		// Brackets are removed before the trailing dot, so "[x]." is not
		// a variant of "[x]"; and "x.." is not one of "x.".
		if !strings.HasPrefix(host, "[") && !strings.HasSuffix(host, ".") {
			variants = append(variants, host+".", asciiUpper(host)+".")
		}
		for _, v := range variants {
			req.Host = v
			if got := p.Decide(req); got != d {
				t.Fatalf("Decide(%q) = %+v; want the same as Decide(%q) = %+v", v, got, host, d)
			}
		}
	})
}
