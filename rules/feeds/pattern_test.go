package feeds

import (
	"testing"

	"github.com/feedgate/feedgate/rules"
)

func mustPat(t *testing.T, s string) pat {
	t.Helper()
	kind := rules.PatternExact
	switch {
	case len(s) > 2 && s[:2] == "*.":
		kind = rules.PatternSuffix
	case s[0] == '=':
		kind, s = rules.PatternDomain, s[1:]
	default:
		for _, c := range s {
			if c == '*' {
				kind = rules.PatternLabel
			}
		}
	}
	p, err := parsePat(s, kind)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPatMatches(t *testing.T) {
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
		if got := mustPat(t, tt.pat).matches(tt.host); got != tt.want {
			t.Errorf("%s matches %s = %v; want %v", tt.pat, tt.host, got, tt.want)
		}
	}
}

func TestPatCovers(t *testing.T) {
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
		if got := mustPat(t, tt.p).covers(mustPat(t, tt.q)); got != tt.want {
			t.Errorf("%s covers %s = %v; want %v", tt.p, tt.q, got, tt.want)
		}
	}
}

func TestProbe(t *testing.T) {
	tests := []struct {
		q      string
		others []string
		want   string
		ok     bool
	}{
		{"a.example.com", []string{"=example.com"}, "a.example.com", true},
		{"*.example.com", nil, "0.example.com", true},
		// A taken name is skipped; a pattern that covers q is no obstacle.
		{"*.example.com", []string{"0.example.com", "=0.example.com", "=example.com"}, "1.example.com", true},
		// Nothing below q can match a one-character label but an exact name
		// or domain.
		{"*.example.com", []string{"*.0.example.com", "a*.example.com"}, "0.example.com", true},
		{"dnl-*.geo.example.com", []string{"dnl-0.geo.example.com"}, "dnl-1.geo.example.com", true},
		{"dnl-*.geo.example.com", []string{"*-0.geo.example.com"}, "dnl-1.geo.example.com", true},
	}
	for _, tt := range tests {
		var others []pat
		for _, o := range tt.others {
			others = append(others, mustPat(t, o))
		}
		got, ok := probe(mustPat(t, tt.q), others)
		if got != tt.want || ok != tt.ok {
			t.Errorf("probe(%s, %v) = %q, %v; want %q, %v", tt.q, tt.others, got, ok, tt.want, tt.ok)
		}
	}
	// Every candidate taken.
	var all []pat
	for _, c := range probeChars {
		all = append(all, mustPat(t, string(c)+".example.com"))
	}
	if h, ok := probe(mustPat(t, "*.example.com"), all); ok {
		t.Errorf("probe with every candidate taken = %q, true; want false", h)
	}
}
