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
		// Invalid exactly when the host or the path has no canonical
		// form; a host without one is never a vendor's.
		_, herr := rules.CanonicalHost(host)
		_, perr := rules.NormalizePath(path)
		if d.Invalid != (herr != nil || perr != nil) {
			t.Fatalf("Decide(%q, path %q).Invalid = %v; CanonicalHost error %v, NormalizePath error %v", host, path, d.Invalid, herr, perr)
		}
		if herr != nil && d.Class != 0 {
			t.Fatalf("Decide(%q) = %s/%s for a host without a canonical form; want none", host, d.Vendor, d.Category)
		}
		variants := []string{asciiUpper(host)}
		// One trailing dot is ignored after IDNA mapping, so the
		// variant is the canonical name with a dot ("x。." has two);
		// IP literals take none.
		if c, err := rules.CanonicalHost(host); err == nil && !strings.Contains(c, ":") {
			variants = append(variants, c, c+".", asciiUpper(c)+".")
		}
		for _, v := range variants {
			req.Host = v
			if got := p.Decide(req); got != d {
				t.Fatalf("Decide(%q) = %+v; want the same as Decide(%q) = %+v", v, got, host, d)
			}
		}
		req.Host = host
		if n, err := rules.NormalizePath(path); err == nil {
			// Decide compares the normal form of the path, whatever its
			// case.
			for _, v := range []string{n, asciiUpper(path)} {
				req.Path = v
				if got := p.Decide(req); got != d {
					t.Fatalf("Decide(%q, path %q) = %+v; want the same as for path %q: %+v", host, v, got, path, d)
				}
			}
		}
	})
}
