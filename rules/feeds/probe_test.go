package feeds

import (
	"testing"

	"github.com/feedgate/feedgate/rules"
)

// Patterns for the tables, as the rules package parses them.
func exact(host string) rules.HostPattern {
	return rules.HostPattern{Kind: rules.PatternExact, Key: host}
}

func domain(name string) rules.HostPattern {
	return rules.HostPattern{Kind: rules.PatternDomain, Key: name}
}

// below is "*.suffix".
func below(suffix string) rules.HostPattern {
	return rules.HostPattern{Kind: rules.PatternSuffix, Key: suffix}
}

// label is "prefix*suffix.parent".
func label(prefix, suffix, parent string) rules.HostPattern {
	return rules.HostPattern{Kind: rules.PatternLabel, Key: parent, Prefix: prefix, Suffix: suffix}
}

func pats(ps ...rules.HostPattern) []rules.HostPattern { return ps }

func TestProbe(t *testing.T) {
	tests := []struct {
		q      rules.HostPattern
		others []rules.HostPattern
		want   string
		ok     bool
	}{
		{exact("a.example.com"), pats(domain("example.com")), "a.example.com", true},
		{below("example.com"), nil, "0.example.com", true},
		// A taken name is skipped; a pattern that covers q is no obstacle.
		{below("example.com"), pats(exact("0.example.com"), domain("0.example.com"), domain("example.com")), "1.example.com", true},
		// Nothing below q can match a one-character label but an exact name
		// or domain.
		{below("example.com"), pats(below("0.example.com"), label("a", "", "example.com")), "0.example.com", true},
		{label("dnl-", "", "geo.example.com"), pats(exact("dnl-0.geo.example.com")), "dnl-1.geo.example.com", true},
		{label("dnl-", "", "geo.example.com"), pats(label("", "-0", "geo.example.com")), "dnl-1.geo.example.com", true},
	}
	for _, tt := range tests {
		got, ok := probe(tt.q, tt.others)
		if got != tt.want || ok != tt.ok {
			t.Errorf("probe(%s, %v) = %q, %v; want %q, %v", tt.q, tt.others, got, ok, tt.want, tt.ok)
		}
	}
	// Every candidate taken.
	var all []rules.HostPattern
	for _, c := range probeChars {
		all = append(all, exact(string(c)+".example.com"))
	}
	if h, ok := probe(below("example.com"), all); ok {
		t.Errorf("probe with every candidate taken = %q, true; want false", h)
	}
}
