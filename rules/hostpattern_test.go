package rules

import (
	"strings"
	"testing"
)

// mustPattern parses a host pattern as the loader does: "=name" is a
// catalog domain, anything else a pattern of a host list.
func mustPattern(t *testing.T, s string) HostPattern {
	t.Helper()
	parse := parseHostPattern
	if d, ok := strings.CutPrefix(s, "="); ok {
		parse, s = parseDomain, d
	}
	p, err := parse(s)
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != s {
		t.Fatalf("pattern %q reads back as %q", s, p.String())
	}
	return p
}

func TestHostPatternMatches(t *testing.T) {
	// "=name" is a domain in these tables.
	tests := []struct {
		pat, host string
		want      bool
	}{
		{"a.example.com", "a.example.com", true},
		{"a.example.com", "b.a.example.com", false},
		{"=example.com", "example.com", true},
		{"=example.com", "a.b.example.com", true},
		{"=example.com", "notexample.com", false},
		{"*.example.com", "example.com", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "aexample.com", false},
		{"dnl-*.geo.example.com", "dnl-01.geo.example.com", true},
		{"dnl-*.geo.example.com", "dnl-.geo.example.com", false}, // '*' matches one or more
		{"dnl-*.geo.example.com", "a.dnl-01.geo.example.com", false},
		{"dnl-*.geo.example.com", "edge.geo.example.com", false},
		{"ksn-*-geo.example.com", "ksn-file-geo.example.com", true},
		{"ksn-*-geo.example.com", "ksn--geo.example.com", false},
		{"ksn-*-geo.example.com", "ksn-geo.example.com", false},
	}
	for _, tt := range tests {
		if got := mustPattern(t, tt.pat).Matches(tt.host); got != tt.want {
			t.Errorf("%s matches %s = %v; want %v", tt.pat, tt.host, got, tt.want)
		}
	}
}

func TestHostPatternCovers(t *testing.T) {
	tests := []struct {
		p, q string
		want bool
	}{
		{"a.example.com", "a.example.com", true},
		{"a.example.com", "*.a.example.com", false},
		{"=example.com", "example.com", true},
		{"=example.com", "*.example.com", true},
		{"=example.com", "dnl-*.geo.example.com", true},
		{"=example.com", "=a.example.com", true},
		{"=a.example.com", "=example.com", false},
		{"*.example.com", "example.com", false},
		{"*.example.com", "=example.com", false},
		{"*.example.com", "=a.example.com", true},
		{"*.example.com", "*.example.com", true},
		{"*.example.com", "*.a.example.com", true},
		{"*.a.example.com", "*.example.com", false},
		{"*.geo.example.com", "dnl-*.geo.example.com", true},
		{"*.geo.example.com", "dnl-*.example.com", false},
		{"dnl-*.geo.example.com", "dnl-01.geo.example.com", true},
		{"dnl-*.geo.example.com", "dnl-0*.geo.example.com", true},
		{"dnl-0*.geo.example.com", "dnl-*.geo.example.com", false},
		{"dnl-*.geo.example.com", "*.geo.example.com", false},
		{"a*.example.com", "*b.example.com", false},
	}
	for _, tt := range tests {
		if got := mustPattern(t, tt.p).Covers(mustPattern(t, tt.q)); got != tt.want {
			t.Errorf("%s covers %s = %v; want %v", tt.p, tt.q, got, tt.want)
		}
	}
}

// TestHostPatternMatchesAgreesWithMatcher: Matches is the matcher's answer
// for one pattern alone.
func TestHostPatternMatchesAgreesWithMatcher(t *testing.T) {
	patterns := []string{"a.example.com", "=example.com", "*.example.com", "*.a.example.com",
		"dnl-*.geo.example.com", "ksn-*-geo.example.com", "*x.example.com"}
	hosts := []string{"example.com", "a.example.com", "b.a.example.com", "aexample.com", "example.org",
		"dnl-01.geo.example.com", "dnl-.geo.example.com", "a.dnl-01.geo.example.com", "ksn-file-geo.example.com",
		"ksn--geo.example.com", "ksn-geo.example.com", "x.example.com", "xx.example.com", "a.xx.example.com"}
	for _, s := range patterns {
		p := mustPattern(t, s)
		m := newHostMatcher()
		m.add(p, target{})
		m.freeze()
		for _, h := range hosts {
			hit, _ := match(m, h, 0, "")
			if got := p.Matches(h); got != (hit != nil) {
				t.Errorf("%s.Matches(%s) = %v; the matcher says %v", s, h, got, hit != nil)
			}
		}
	}
}
