package rules

import (
	"sort"
	"time"
)

// PatternKind says how a host pattern matches, for code outside this
// package that turns patterns into other formats (firewall lists, DNS
// zones, PAC files).
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

func exportKind(k patternKind) PatternKind {
	switch k {
	case kindLabel:
		return PatternLabel
	case kindSuffix:
		return PatternSuffix
	case kindDomain:
		return PatternDomain
	}
	return PatternExact
}

// HostPattern is a host pattern as written, with its kind.
type HostPattern struct {
	Pattern string
	Kind    PatternKind
}

// HostPatterns returns the host patterns the rule selects, as written and
// in file order, with their kinds; nil for a rule without hosts. A rule's
// host list has no domain kind: "example.com" in it is an exact host.
func (r *Rule) HostPatterns() []HostPattern {
	if len(r.hostList) == 0 {
		return nil
	}
	out := make([]HostPattern, len(r.hostList))
	for i, p := range r.hostList {
		out[i] = HostPattern{Pattern: p.String(), Kind: exportKind(p.kind)}
	}
	return out
}

// CatalogPattern is one catalog entry for one host pattern: a catalog
// domain (the fallback category), or a pattern of an [[entry]] with one of
// its port ranges and one of its path prefixes.
type CatalogPattern struct {
	// Pattern is the host pattern as written: "*.upd.kaspersky.com",
	// "kaspersky.com".
	Pattern string
	Kind    PatternKind
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
	add := func(kind PatternKind, list []target) {
		for _, t := range list {
			cp := CatalogPattern{Pattern: t.pattern, Kind: kind, Class: int(t.class), Path: t.path}
			if !t.ports.any() {
				cp.Ports = t.ports.String()
			}
			cp.Refined = cp.Ports != "" || cp.Path != ""
			out = append(out, cp)
		}
	}
	var walk func(n *node)
	walk = func(n *node) {
		add(PatternExact, n.exact)
		for _, g := range n.globs {
			add(PatternLabel, g.targets)
		}
		add(PatternSuffix, n.suffix)
		add(PatternDomain, n.domain)
		for _, c := range n.children {
			walk(c)
		}
	}
	walk(&p.catalog.root)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		switch {
		case a.Pattern != b.Pattern:
			return a.Pattern < b.Pattern
		case a.Kind != b.Kind:
			return a.Kind < b.Kind
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
