package rules

import (
	"slices"
	"sort"
	"strings"
	"time"
)

// PatternKind says how a host pattern matches. rules/feeds turns each kind
// into other formats (firewall lists, DNS zones, PAC files).
type PatternKind uint8

const (
	// PatternExact matches the host itself: "activation-v2.kaspersky.com".
	PatternExact PatternKind = iota
	// PatternLabel has one '*' inside its leftmost label, which matches one
	// or more characters but never a dot: "dnl-*.geo.kaspersky.com".
	PatternLabel
	// PatternSuffix, "*.suffix", matches every host at any depth below
	// suffix, but not suffix itself: "*.upd.kaspersky.com".
	PatternSuffix
	// PatternDomain is a catalog domain: the name itself and every host at
	// any depth below it: "kaspersky.com".
	PatternDomain
)

func (k PatternKind) String() string {
	switch k {
	case PatternExact:
		return "exact"
	case PatternLabel:
		return "label"
	case PatternSuffix:
		return "suffix"
	case PatternDomain:
		return "domain"
	}
	return "invalid"
}

// HostPattern is a parsed host pattern: the one model of a pattern, which
// the matcher here compiles and the exports of rules/feeds reason about.
// Patterns are in canonical form (lower case, ASCII), as the policy's
// loader accepts them.
type HostPattern struct {
	Kind PatternKind
	// Key is the exact host, the domain, the suffix of "*.suffix", or the
	// parent of a label wildcard.
	Key string
	// Prefix and Suffix are the literal parts of a label wildcard's label:
	// "dnl-" and "" in "dnl-*.geo.kaspersky.com".
	Prefix, Suffix string
}

// String returns the pattern as written; a domain is written as its name.
func (p HostPattern) String() string {
	switch p.Kind {
	case PatternLabel:
		return p.Prefix + "*" + p.Suffix + "." + p.Key
	case PatternSuffix:
		return "*." + p.Key
	}
	return p.Key
}

// below reports whether name is strictly below parent.
func below(name, parent string) bool {
	return len(name) > len(parent) && strings.HasSuffix(name, parent) && name[len(name)-len(parent)-1] == '.'
}

func atOrBelow(name, parent string) bool { return name == parent || below(name, parent) }

// Matches reports whether host (canonical, see CanonicalHost) is one of
// p's names. It is the matcher's answer for one pattern alone, ignoring
// the catalog's ports and paths and the precedence between patterns.
func (p HostPattern) Matches(host string) bool {
	switch p.Kind {
	case PatternExact:
		return host == p.Key
	case PatternDomain:
		return atOrBelow(host, p.Key)
	case PatternSuffix:
		return below(host, p.Key)
	}
	if !below(host, p.Key) {
		return false
	}
	label := host[:len(host)-len(p.Key)-1]
	return strings.IndexByte(label, '.') < 0 && matchesLabel(&labelGlob{prefix: p.Prefix, suffix: p.Suffix}, label)
}

// Covers reports whether every name of q is a name of p. It may answer
// false for two label wildcards where one does cover the other in a way
// their literal parts do not show, never true when p does not cover q.
func (p HostPattern) Covers(q HostPattern) bool {
	switch p.Kind {
	case PatternExact:
		return q.Kind == PatternExact && q.Key == p.Key
	case PatternDomain:
		// Every kind's names are the key or names below it.
		return atOrBelow(q.Key, p.Key)
	case PatternSuffix:
		switch q.Kind {
		case PatternExact, PatternDomain:
			return below(q.Key, p.Key)
		}
		// q's names are strictly below q.Key.
		return atOrBelow(q.Key, p.Key)
	}
	switch q.Kind {
	case PatternExact:
		return p.Matches(q.Key)
	case PatternLabel:
		return q.Key == p.Key && strings.HasPrefix(q.Prefix, p.Prefix) && strings.HasSuffix(q.Suffix, p.Suffix)
	}
	// Names at any depth never fit in one label.
	return false
}

// HostPatterns returns the host patterns the rule selects, in file order;
// nil for a rule without hosts. A rule's host list has no domain kind:
// "example.com" in it is an exact host.
func (r *Rule) HostPatterns() []HostPattern {
	if len(r.hostList) == 0 {
		return nil
	}
	return slices.Clone(r.hostList)
}

// CatalogPattern is one catalog entry for one host pattern: a catalog
// domain (the fallback category), or a pattern of an [[entry]] with one of
// its port ranges and one of its path prefixes.
type CatalogPattern struct {
	// Pattern is the entry's host pattern: "*.upd.kaspersky.com", the
	// domain "kaspersky.com".
	Pattern HostPattern
	// Class is the index into Policy.Classes that the entry classifies
	// its hosts into.
	Class int
	// Ports is the entry's port range ("443", "27200-27299"), "" for any
	// port; Path its path prefix, "" for any path.
	Ports string
	Path  string
	// Refined is set when the entry has a port range or a path prefix. A
	// host name list (a firewall's domain list, a DNS zone) cannot express
	// it: the name alone does not say whether the entry applies. A request
	// whose port or path does not fit falls through to the next, less
	// specific pattern.
	Refined bool
}

// CatalogPatterns returns every entry of every loaded catalog, one row per
// pattern and port range and path prefix, sorted by pattern, then kind,
// class, ports and path. The catalog is immutable, so the rows are a copy
// that callers may keep.
func (p *Policy) CatalogPatterns() []CatalogPattern {
	var out []CatalogPattern
	add := func(hp HostPattern, list []target) {
		for _, t := range list {
			cp := CatalogPattern{Pattern: hp, Class: int(t.class), Path: t.path}
			if !t.ports.any() {
				cp.Ports = t.ports.String()
			}
			cp.Refined = cp.Ports != "" || cp.Path != ""
			out = append(out, cp)
		}
	}
	var walk func(n *node)
	walk = func(n *node) {
		add(HostPattern{Kind: PatternExact, Key: n.key}, n.exact)
		for _, g := range n.globs {
			add(HostPattern{Kind: PatternLabel, Key: n.key, Prefix: g.prefix, Suffix: g.suffix}, g.targets)
		}
		add(HostPattern{Kind: PatternSuffix, Key: n.key}, n.suffix)
		add(HostPattern{Kind: PatternDomain, Key: n.key}, n.domain)
		for _, c := range n.children {
			walk(c)
		}
	}
	walk(&p.catalog.root)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		switch {
		case a.Pattern.String() != b.Pattern.String():
			return a.Pattern.String() < b.Pattern.String()
		case a.Pattern.Kind != b.Pattern.Kind:
			return a.Pattern.Kind < b.Pattern.Kind
		case a.Class != b.Class:
			return a.Class < b.Class
		case a.Ports != b.Ports:
			return a.Ports < b.Ports
		}
		return a.Path < b.Path
	})
	return out
}

// ClassAction returns the answer for a class alone at t: the first active
// rule that selects the class by vendor or category (or selects
// everything), else the default action. class must be an index into
// p.Classes.
//
// Rules that select explicit hosts are not considered, because whether
// they apply depends on the host, not the class: a host that such a rule
// names may get another answer, which only Decide on that host gives. As
// for ClassTimeline, the answer is the one for a client in no client group:
// rules limited by clients are left out, rules with only not_clients
// count. In report mode a block is reported as Log, with Reported set, as
// Decide does.
func (p *Policy) ClassAction(class int, t time.Time) Decision {
	return p.classAt(class, t.UnixNano())
}
